"""Training: a network from scratch (``sercli train``), a head on a pretrained encoder
(``sercli train --arch whisper-base``), or a new head for a user's own labels (``--init``).

- :mod:`.options`: what defines a run (:class:`TrainOptions`) and which rows train and validate;
- :mod:`.cache`: log-mel features of every file, extracted once;
- :mod:`.augment`: augmentation of cached features, one epoch at a time;
- :mod:`.loop`: the checkpointed training loop of a network (:func:`train`);
- :mod:`.calibration`: temperature scaling on validation files;
- :mod:`.export`: LiteRT export, the adaptation reference, library versions;
- :mod:`.encoder_model`: encoder models (:func:`train_encoder_model`);
- :mod:`.finetune`: a head anchored to an encoder model's, on a user's few labels (:func:`fine_tune_head`).

Networks need Keras/TensorFlow (the ``train`` extra); encoder heads do not.
"""

from __future__ import annotations

from .cache import default_cache_dir, load_features
from .encoder_model import EncoderOptions, train_encoder_model
from .finetune import fine_tune_head
from .loop import train
from .options import FINE_TUNING, MIN_CLIPS_PER_CLASS, TrainOptions, manifest_hash

__all__ = ["FINE_TUNING", "MIN_CLIPS_PER_CLASS", "EncoderOptions", "TrainOptions", "default_cache_dir",
           "fine_tune_head", "load_features", "manifest_hash", "train", "train_encoder_model"]
