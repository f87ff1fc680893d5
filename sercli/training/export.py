"""Export of a trained network (LiteRT), its corpus-adaptation reference, and the runtime
versions a card records."""

from __future__ import annotations

import contextlib
import io
import json
import platform
from pathlib import Path


from .. import features as F
from ..adaptation import CARD_KEY, reference_entry
from .corpora import read_manifest, split_labels
from ..models import KERAS_FILE, MODEL_FILE, PARAMS_FILE, load_model, write_card
from .cache import default_cache_dir, load_features

__all__ = ["add_reference", "export", "runtime_versions"]


def export(model, params: F.FeatureParams, card: dict, out: Path) -> None:
    """Write ``model.keras`` (source of truth), ``model.tflite`` (inference) and ``params.json``."""
    import tensorflow as tf

    model.save(out / KERAS_FILE)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its saved signatures
        (out / MODEL_FILE).write_bytes(converter.convert())
    (out / PARAMS_FILE).write_text(json.dumps(params.to_dict(), indent=1))
    card_path = out / "card.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    card = {**card, "evaluation": old.get("evaluation", {})}
    write_card(out, card)


def add_reference(model_dir: str | Path, manifest: str | Path, *, split_column: str = "split",
                  cache_dir: str | Path | None = None, jobs: int = -1, command: str = "") -> dict:
    """Store the envelope of the manifest's ``train`` rows (those a model was trained on) in the
    card of a model trained before training stored it; returns the card entry."""
    model = load_model(model_dir)
    df = read_manifest(manifest)
    paths = list(df.loc[split_labels(df, split_column).eq("train"), "path"])
    feats = load_features(paths, model.params, cache_dir=Path(cache_dir or default_cache_dir()), jobs=jobs)
    entry = {**reference_entry((feats[p][0] for p in paths if p in feats), model.params.n_mels),
             "command": command}
    card = {**model.card, CARD_KEY: entry}
    write_card(model.path, card)
    return entry


#: The libraries a network's training uses.
NETWORK_PACKAGES = ("sercli", "keras", "tensorflow-cpu", "tensorflow", "librosa", "numpy", "soundfile", "soxr",
                    "scipy", "ai-edge-litert")


def runtime_versions(packages: tuple[str, ...] = NETWORK_PACKAGES) -> dict[str, str]:
    """Versions of Python and ``packages`` (those installed), and the sercli commit when run from a git checkout."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / ".git").exists():  # an installed wheel has no checkout and records no commit
        try:  # "<sha>" or "<sha>-dirty"
            git = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty", "--abbrev=40"],
                                 capture_output=True, text=True, timeout=10)
            if git.returncode == 0:
                out["sercli_commit"] = git.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
