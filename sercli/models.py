"""Shipped models: find, describe and run them (LiteRT; TensorFlow is never imported).

A model directory holds ``model.keras`` (the Keras source of truth), ``model.tflite``
(the same network exported for inference), ``params.json`` (the
:class:`~sercli.features.FeatureParams` it was trained on) and ``card.json`` / ``CARD.md``.
An *encoder model* instead holds ``model.tflite`` mapping windows to embeddings (a pretrained
encoder, rebuilt from its published weights by :mod:`sercli.training.encoder`) and ``head.npz``, the
emotion head run with NumPy (:class:`~sercli.heads.Head`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from . import DEFAULT_MODEL, EMOTIONS
from .features import FeatureParams
from .heads import HEAD_FILE, Head

__all__ = ["CALIBRATIONS", "Model", "ModelMismatch", "ModelNotFound", "available_models", "load_model", "models_dir", "softmax"]

#: Card key of what ``--adapt corpus`` needs from the training data (:mod:`sercli.adaptation`).
ADAPTATION_KEY = "adaptation"

KERAS_FILE = "model.keras"
MODEL_FILE = "model.tflite"
PARAMS_FILE = "params.json"
CARD_FILE = "card.json"
#: How probabilities are calibrated: "off-domain" (for recordings unlike the training corpora:
#: the temperature times the card's ``off_domain_scale``, fitted leave-one-corpus-out) or
#: "in-domain" (the temperature fitted on the training corpora's validation speakers).
CALIBRATIONS = ("off-domain", "in-domain")


class ModelNotFound(Exception):
    """``--model`` names neither a shipped model nor a model directory."""


class ModelMismatch(Exception):
    """A worker loaded another model than the run's (e.g. another install on a Dask worker)."""


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C/C++ libraries' own logging) for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, classes)`` logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def models_dir() -> Path:
    """Where shipped models live: ``sercli/_models`` when installed, ``models/`` in a checkout."""
    from importlib.resources import files

    try:
        installed = Path(str(files("sercli._models")))
        if installed.is_dir():
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "models"


def available_models() -> list[str]:
    """Names of the shipped models (directories with a model file), sorted."""
    root = models_dir()
    return sorted(p.name for p in root.iterdir() if (p / MODEL_FILE).is_file()) if root.is_dir() else []


@dataclass(frozen=True)
class Model:
    """A loaded model directory. :meth:`predict` maps windows to calibrated probabilities."""

    path: Path
    name: str
    params: FeatureParams
    card: dict
    calibration: str = CALIBRATIONS[0]
    #: an encoder model's corpus statistics (``--adapt corpus``): embedding means, then scales
    corpus_stats: tuple[float, ...] | None = None
    #: the classes it answers among (``--classes``): the others' probabilities are dropped and these
    #: renormalised; ``None``: all of them
    only: tuple[str, ...] | None = None

    @property
    def temperature(self) -> float:
        """The softmax temperature of :attr:`calibration`; a model without an off-domain scale
        (e.g. one fine-tuned on the user's own labels, calibrated on them) has one temperature."""
        scale = self.card.get("calibration", {}).get("off_domain_scale", 1.0)
        return float(self.card.get("temperature", 1.0)) * (scale if self.calibration == "off-domain" else 1.0)

    @property
    def all_classes(self) -> tuple[str, ...]:
        """Every class the network knows, in order (the card's, else the shipped seven)."""
        return tuple(self.card.get("classes", EMOTIONS))

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes of the model's outputs, in order: :attr:`all_classes`, or those it is restricted to."""
        return self.only or self.all_classes

    def restricted(self, classes: Sequence[str] | None) -> "Model":
        """This model answering among ``classes`` only (named as ``summarize --map`` reads them:
        ``angry`` is ``anger``); ``None`` or every class: unrestricted. Raises ``ValueError`` (one
        sentence) for a class the model does not have."""
        from .classes import restrict_classes

        if not classes:
            return replace(self, only=None)
        only = restrict_classes(classes, self.all_classes, model=self.name)
        return replace(self, only=None if only == self.all_classes else only)

    @cached_property
    def identity(self) -> str:
        """What defines the model's outputs, hashed (sha256, 16 hex digits): its LiteRT file, head,
        feature parameters, classes and temperatures. A rewritten card (a new evaluation recorded)
        keeps it; replaced weights or a changed calibration change it."""
        digest = hashlib.sha256()
        for name in (MODEL_FILE, HEAD_FILE):
            if (self.path / name).is_file():
                digest.update(name.encode() + (self.path / name).read_bytes())
        scale = self.card.get("calibration", {}).get("off_domain_scale", 1.0)
        digest.update(json.dumps({"params": self.params.to_dict(), "classes": list(self.all_classes),
                                  "temperature": self.card.get("temperature", 1.0), "off_domain_scale": scale},
                                 sort_keys=True).encode())
        return digest.hexdigest()[:16]

    def check_identity(self, expected: str) -> None:
        """Raise :class:`ModelMismatch` unless this is the model ``expected`` (:attr:`identity`) names."""
        if expected and expected != self.identity:
            raise ModelMismatch(f"The model {self.name!r} at {self.path} is not the one this run started with "
                                f"(its weights, classes or calibration differ: {self.identity}, not {expected}); "
                                "install the same model everywhere the run's workers load it.")

    @cached_property
    def head(self) -> Head | None:
        """The NumPy head of an encoder model (``head.npz``), ``None`` for a network that gives logits."""
        return Head.load(self.path / HEAD_FILE) if (self.path / HEAD_FILE).is_file() else None

    @property
    def adapt_size(self) -> int:
        """Values of a ``--adapt corpus`` shift: a mean and a scale per embedding dimension for an
        encoder model, one dB value per mel band otherwise."""
        return 2 * len(self.head.mean) if self.head is not None else self.params.n_mels

    @cached_property
    def _interpreter(self):
        from ai_edge_litert.interpreter import Interpreter

        with _quiet_stderr():  # the runtime announces its CPU delegate on stderr
            interp = Interpreter(model_path=str(self.path / MODEL_FILE), num_threads=1)
            interp.allocate_tensors()
        return interp

    def logits(self, x: np.ndarray, *, stats: np.ndarray | None = None) -> np.ndarray:
        """Raw logits ``(n, classes)`` (of :attr:`classes`) for model inputs ``x`` of shape ``(n, n_features, frames)``.

        ``stats``: for an encoder model, the corpus's embedding mean and scale, concatenated
        (``--adapt corpus``); the head's own training statistics otherwise.
        """
        return self.logits_of(self.run(x), stats=stats)

    def logits_of(self, out: np.ndarray, *, stats: np.ndarray | None = None) -> np.ndarray:
        """Logits ``(n, classes)`` from the network's output (:meth:`run`): an encoder model's head
        applied to its embeddings, standardised by ``stats`` (as :meth:`logits`); restricted to :attr:`classes`."""
        if self.head is not None:
            stats = self.corpus_stats if stats is None else stats
            out = self.head.logits(out, stats=None if stats is None else np.split(np.asarray(stats, np.float64), 2))
        if self.only is not None:  # a softmax over some logits: those classes' probabilities, renormalised
            out = out[:, [self.all_classes.index(c) for c in self.only]]
        return out

    def run(self, x: np.ndarray) -> np.ndarray:
        """The LiteRT network's output for inputs ``(n, n_features, frames)``: logits, or an
        encoder model's embeddings ``(n, dim)``."""
        interp = self._interpreter
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.head is not None and len(x) != 1:  # an encoder runs window by window (its memory stays small)
            return np.concatenate([self.run(x[i:i + 1]) for i in range(len(x))]) if len(x) else \
                np.zeros((0, len(self.head.mean)), np.float32)
        if inp["shape"][0] != len(x):
            interp.resize_tensor_input(inp["index"], [len(x), *x.shape[1:]])
            interp.allocate_tensors()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(out["index"]).copy()

    def predict(self, x: np.ndarray, *, stats: np.ndarray | None = None) -> np.ndarray:
        """Calibrated class probabilities ``(n, classes)`` for inputs ``(n, n_features, frames)``."""
        return self.probabilities(self.run(x), stats=stats)

    def probabilities(self, out: np.ndarray, *, stats: np.ndarray | None = None) -> np.ndarray:
        """Calibrated class probabilities from the network's output (:meth:`run`)."""
        return softmax(self.logits_of(out, stats=stats).astype(np.float64) / self.temperature)


def load_model(name_or_path: str | Path = DEFAULT_MODEL, *, calibration: str = CALIBRATIONS[0]) -> Model:
    """Load a shipped model by name (``mfcc-cnn``) or a model directory by path, with its
    probabilities calibrated for ``calibration`` (:data:`CALIBRATIONS`).

    Raises :class:`ModelNotFound` (no such model) and ``ValueError`` (unknown calibration),
    each with a one-sentence message.
    """
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be {' or '.join(CALIBRATIONS)}, not {calibration!r}.")
    path = Path(name_or_path)
    if not (path / MODEL_FILE).is_file():
        path = models_dir() / str(name_or_path)
    if not (path / MODEL_FILE).is_file():
        names = ", ".join(available_models()) or "none installed"
        raise ModelNotFound(f"No model named {str(name_or_path)!r} (shipped models: {names}).")
    params = FeatureParams.from_dict(json.loads((path / PARAMS_FILE).read_text()))
    card = json.loads((path / CARD_FILE).read_text()) if (path / CARD_FILE).exists() else {}
    return Model(path=path.resolve(), name=card.get("name", path.name), params=params, card=card,
                 calibration=calibration)


@lru_cache(maxsize=4)
def worker_model(model_dir: str) -> Model:
    """A model loaded once per worker process (a local pool's worker runs one task at a time, so
    its LiteRT interpreter is never shared between threads)."""
    return load_model(model_dir)


def write_card(model_dir: str | Path, card: dict) -> None:
    """Write ``card.json`` and its rendering ``CARD.md`` into ``model_dir``."""
    model_dir = Path(model_dir)
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=1))
    (model_dir / "CARD.md").write_text(render_card(card))


def _encoder_lines(enc: dict) -> list[str]:
    """Card lines of an encoder model: the pretrained weights it was built from, and their licence."""
    lines = [f"- encoder: Whisper {enc['size']}, its first {enc['layers']} blocks, frozen"
             + (" (int8 dynamic-range weights)" if enc.get("quantized") else "") + "; weights read from:"]
    lines += [f"  - `{s['package']}` {s['version']}, `{s['file']}` (sha256 `{s['sha256']}`)" for s in enc["source"]]
    return lines + [f"- licence of the encoder weights: {enc.get('licence', '')}. {enc.get('notice', '')}"]


def _adapt_line(card: dict) -> list[str]:
    if card.get("adapt_default") != "corpus":
        return []
    return ["- `--adapt auto` (the default) standardises the embeddings with the statistics of the corpus being "
            "annotated (as each training corpus was), when it has enough files"]


def render_card(card: dict) -> str:
    """The Markdown model card (``CARD.md``) for a ``card.json`` dict."""
    tr = card.get("training", {})
    classes = card.get("classes", [])
    base = tr.get("base_model")
    lines = [f"# {card.get('name')} ({card.get('arch')})", "",
             f"{len(classes)}-class speech emotion classifier ({', '.join(classes)}); "
             f"{card.get('params', '?')} parameters; temperature {card.get('temperature', 1.0):.3f} "
             + ("(the base model's)" if base and "comparison" in tr else "(fitted on the validation split)")
             + (f"; off-domain calibration multiplies it by {cal['off_domain_scale']:.2f} ({cal.get('how', '')})"
                if (cal := card.get("calibration", {})).get("off_domain_scale") else "") + ".",
             "", "## Training", "",
             *([f"- fine-tuned from `{base['name']}` (model sha256 `{base.get('sha256') or base.get('card_sha256')}`, "
                f"classes "
                f"{', '.join(base['classes'])})"] if base else []),
             *([f"- labelled clips per class: {', '.join(f'{c} {n}' for c, n in tr['clips_per_class'].items())}"]
               if tr.get("clips_per_class") else []),
             *([f"- your labels read as the base model's classes: "
                f"{', '.join(f'{k} → {v}' for k, v in tr['class_mapping'].items() if k != v) or 'as they are'}"
                + (f"; new classes: {', '.join(tr['new_classes'])}" if tr.get("new_classes") else "")]
               if "class_mapping" in tr else []),
             *([f"- method: {tr['method']}; inputs standardised by {tr['standardised_by']}"] if "method" in tr else []),
             *([f"- {tr['comparison_line']}"] if tr.get("comparison_line") else []),
             *([f"- training corpora: " + "; ".join(f"{c['corpus']} ({c['clips']} clips, {c['speakers']} speakers, "
                                                    f"licence {c['licence']})" for c in tr["corpora"])
                + (". Some of these licences are non-commercial (NC): so is this model's use."
                   if any("NC" in c["licence"] for c in tr["corpora"]) else "")] if tr.get("corpora") else []),
             f"- command: `{tr.get('command', '')}`",
             f"- manifest: `{tr.get('manifest', '')}` (sha256 `{tr.get('manifest_sha256', '')}`)",
             (f"- validation clips: {tr['validation']}" if tr.get("validation") else
              f"- split column: `{tr.get('split_column', '')}`") + f"; train {tr.get('n_train')} files, "
             f"val {tr.get('n_val')} files" if "n_val" in tr else f"- {tr.get('n_train')} labelled clips",
             *([f"- validation: macro-F1 {tr['val_macro_f1']:.3f}" + (
                 f" at the best epoch (selected by {tr.get('options', {}).get('select_by', 'macro_f1')})"
                 if "best_epoch" in tr else "")] if "val_macro_f1" in tr else []),
             f"- seed {tr.get('options', {}).get('seed')}; "
             + (f"best epoch {tr.get('best_epoch')} of {tr.get('epochs_run')}; " if "best_epoch" in tr else "")
             + f"training time {tr.get('train_seconds', 0) / 60:.1f} min on {tr.get('machine', '')}",
             f"- options: `{json.dumps(tr.get('options', {}))}`",
             f"- versions: `{json.dumps(tr.get('versions', {}))}`",
             *(_encoder_lines(enc) if (enc := card.get("encoder")) else []), *_adapt_line(card),
             *([f"- `--adapt corpus` reference: the mean speech envelope of {ad.get('files', '?')} training files"
                + (f" (stored by `{ad['command']}`)" if ad.get("command") else "")]
               if (ad := card.get(ADAPTATION_KEY)) else []), ""]
    titles = {"speaker_independent": "Speaker-independent test split (`split`)",
              "study_protocol": "Study protocol (`split_random`; a model trained on its train part)"}
    for key, ev in card.get("evaluation", {}).items():
        protocol, _, adapt = key.partition("+")
        trained = " (the model trained on the other corpora by the command below)" if ev.get("trained_by") else ""
        if protocol.startswith("loco_skewed_"):
            title = (f"Leave-one-corpus-out, speaker-skewed: {protocol[12:]} held out, each speaker keeping two "
                     f"emotions{trained}")
        elif protocol.startswith("loco_"):
            title = f"Leave-one-corpus-out: {protocol[5:]} held out{trained}"
        else:
            title = titles.get(protocol, protocol)
        if adapt:
            title += f", with --adapt {adapt.removeprefix('adapt_')}"
        lines += [f"## {title}", "", f"Command: `{ev.get('command', '')}`", "",
                  f"accuracy **{ev['accuracy']:.3f}**, "
                  + (f"UAR **{ev['uar']:.3f}**, " if "uar" in ev else "")
                  + (f"UAR restricted to the classes present {ev['uar_restricted']:.3f}, "
                     if "uar_restricted" in ev else "")
                  + f"macro-F1 **{ev['macro_f1']:.3f}**, "
                  + ("ECE " + ", ".join(f"{v:.3f} ({k} calibration)" for k, v in ev["ece_by_calibration"].items())
                     if ev.get("ece_by_calibration") else f"ECE {ev.get('ece', float('nan')):.3f}")
                  + f", n = {ev['n']}"
                  + (f" ({ev['not_ok']} files not classified)" if ev.get("not_ok") else ""), ""]
        if ev.get("trained_by"):
            lines += [f"Model trained by: `{ev['trained_by']}`", ""]
        lines += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for cls, m in ev.get("per_class", {}).items():
            lines.append(f"| {cls} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {int(m['support'])} |")
        if ev.get("per_corpus"):
            lines += ["", "| corpus | n | accuracy | UAR | macro-F1 |", "|---|---|---|---|---|"]
            for corpus, m in ev["per_corpus"].items():
                uar = f"{m['uar']:.3f}" if "uar" in m else "—"
                lines.append(f"| {corpus} | {m['n']} | {m['accuracy']:.3f} | {uar} | {m['macro_f1']:.3f} |")
        lines.append("")
    return "\n".join(lines)
