"""Keras architectures (training only; imports Keras/TensorFlow).

Every model maps ``(batch, n_features, frames)`` to ``(batch, 7)`` *logits*; the
softmax (with the calibrated temperature) is applied at inference. Only built-in
layers are used, so the saved ``.keras`` files load with ``safe_mode=True``.
"""

from __future__ import annotations

from ..features import FeatureParams

__all__ = ["ARCHITECTURES", "build"]

#: Architecture name -> feature kind it reads.
ARCHITECTURES = {"mel-cnn": "mel", "mfcc-cnn": "mfcc", "mfcc-crnn": "mfcc"}


def _conv_block(x, filters: int, pool: tuple[int, int]):
    from keras import layers

    # Conv -> ReLU -> BatchNorm (momentum 0.9: its running statistics settle within an epoch,
    # so validation scores are stable early) -> MaxPool.
    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.MaxPooling2D(pool)(x)


def _time_sequence(x):
    """``(batch, freq', time', ch)`` -> ``(batch, time', freq' * ch)``: one vector per time step."""
    from keras import layers

    x = layers.Permute((2, 1, 3))(x)
    return layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]))(x)


def build(arch: str, params: FeatureParams, *, n_classes: int = 7):
    """A fresh, uncompiled Keras model for ``arch`` on ``params``' input shape."""
    import keras
    from keras import layers

    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    inputs = keras.Input((params.n_features, params.window_frames), name="features")
    x = layers.Reshape((params.n_features, params.window_frames, 1))(inputs)
    if arch in ("mel-cnn", "mfcc-cnn"):
        # The study's 4 conv blocks, at half its width.
        for filters in (16, 32, 64, 128):
            x = _conv_block(x, filters, (2, 2))
        if arch == "mel-cnn":
            x = layers.GlobalAveragePooling2D()(x)
        else:
            # MFCC coefficients are not shift-invariant like mel bands: average over time
            # only and keep each coefficient band's own features.
            x = layers.GlobalAveragePooling1D()(_time_sequence(x))
    else:
        # CRNN: conv front end pools frequency, then two BiGRU layers run over the time axis.
        for filters, pool in ((16, (2, 2)), (32, (2, 2)), (64, (2, 1))):
            x = _conv_block(x, filters, pool)
        x = _time_sequence(x)
        for _ in range(2):
            x = layers.Bidirectional(layers.GRU(64, return_sequences=True, unroll=True))(x)
        x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.3)(x)
    outputs = layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=arch.replace("-", "_"))
