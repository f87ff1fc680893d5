"""What ``sercli train`` asks for, settled into the options of one kind of training: a network,
an encoder model, or a head anchored to an encoder model's (``--init``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .options import FINE_TUNING, TrainOptions

if TYPE_CHECKING:
    from .encoder_model import EncoderOptions

__all__ = ["train_options"]


def train_options(*, arch: str, init: str | None = None, corpus=None, layers: int = 3, head: str = "linear",
                  norm: str = "corpus", quantize: bool = True, C: float | None = None, weighting: str = "clips",
                  mask_padding: bool = False, split_column: str = "split", seed: int = 0, epochs: int | None = None,
                  freeze_epochs: int | None = None, select_by: str | None = None,
                  **network) -> "TrainOptions | EncoderOptions":
    """What ``sercli train`` asks for, settled: :class:`~sercli.training.encoder_model.EncoderOptions` for an
    encoder model (``arch`` ``whisper-*``, or ``init`` naming one: an anchored head), else
    :class:`TrainOptions` (with ``init``: the :data:`FINE_TUNING` defaults under what is given).
    ``network``: the remaining :class:`TrainOptions` fields. Raises ``ValueError`` (one sentence) for an
    unusable combination and :class:`~sercli.models.ModelNotFound` for an unknown ``init``."""
    from ..models import load_model
    from .architectures import ARCHITECTURES
    from .encoder import SOURCES
    from .encoder_model import EncoderOptions
    from .finetune import check_base

    encoders = [f"whisper-{size}" for size in SOURCES]
    if arch not in ARCHITECTURES and arch not in encoders:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join([*ARCHITECTURES, *encoders])}.")
    base = load_model(init) if init is not None else None
    if base is None and corpus is not None:
        raise ValueError("--corpus goes with --init (the corpus a fine-tuned model is standardised for).")
    if base is not None:  # anchored fine-tuning of an encoder model's linear head; a network is refused
        check_base(base)
    if (base is not None and base.head is not None) or (base is None and arch in encoders):
        if head not in ("linear", "mlp") or norm not in ("corpus", "none"):
            raise ValueError("--head must be linear or mlp, and --norm corpus or none.")
        return EncoderOptions(size=arch.removeprefix("whisper-"), layers=layers, head=head, norm=norm,
                              quantize=quantize, split_column=split_column, seed=seed, C=C, weighting=weighting,
                              mask_padding=mask_padding)
    if select_by not in (None, "macro_f1", "nll"):
        raise ValueError(f"--select-by must be macro_f1 or nll, not {select_by!r}.")
    given = {k: v for k, v in {"epochs": epochs, "freeze_epochs": freeze_epochs, "select_by": select_by}.items()
             if v is not None}
    defaults = {**FINE_TUNING, "init": init} if init else {}
    return TrainOptions(**{**defaults, **given, **network, "arch": arch, "split_column": split_column, "seed": seed})
