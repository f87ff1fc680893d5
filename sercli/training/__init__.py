"""Training: a network from scratch (``sercli train``), a head on a pretrained encoder
(``sercli train --arch whisper-base``), or a head anchored to an encoder model's, on a user's own
labels (``--init``). Nothing here runs when annotating.

- :mod:`.corpora`: manifests of labelled clips, corpora in their own layouts, the protocols' splits;
- :mod:`.options`: what defines a run (:class:`TrainOptions`) and which rows train and validate;
- :mod:`.cache`: log-mel features of every file, extracted once;
- :mod:`.augment`: augmentation of cached features, one epoch at a time;
- :mod:`.architectures`: the CNNs;
- :mod:`.loop`: the checkpointed training loop of a network (:func:`train`);
- :mod:`.calibration`: temperature scaling on validation files;
- :mod:`.export`: LiteRT export, the adaptation reference, library versions;
- :mod:`.encoder`: OpenAI's Whisper encoder rebuilt in Keras from its published weights;
- :mod:`.embeddings`: per-block encoder embeddings of a corpus, cached (screening);
- :mod:`.encoder_model`: encoder models (:func:`train_encoder_model`);
- :mod:`.finetune`: a head anchored to an encoder model's, on a user's few labels (:func:`fine_tune_head`).

Networks need Keras/TensorFlow (the ``train`` extra); encoder heads do not. Submodules load on
first use, so importing one (``sercli.training.corpora``) does not load the others.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__all__ = ["FINE_TUNING", "MIN_CLIPS_PER_CLASS", "EncoderOptions", "TrainOptions", "default_cache_dir",
           "fine_tune_head", "load_features", "manifest_hash", "train", "train_encoder_model"]

_LAZY = {"FINE_TUNING": "options", "MIN_CLIPS_PER_CLASS": "options", "TrainOptions": "options",
         "manifest_hash": "options", "EncoderOptions": "encoder_model", "train_encoder_model": "encoder_model",
         "default_cache_dir": "cache", "load_features": "cache", "fine_tune_head": "finetune", "train": "loop"}

if TYPE_CHECKING:
    from .cache import default_cache_dir, load_features
    from .encoder_model import EncoderOptions, train_encoder_model
    from .finetune import fine_tune_head
    from .loop import train
    from .options import FINE_TUNING, MIN_CLIPS_PER_CLASS, TrainOptions, manifest_hash


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sercli.training' has no attribute {name!r}")
