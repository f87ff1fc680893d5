"""``sercli label`` at the terminal: choose the clips, serve the page, print the fine-tuning command."""

from __future__ import annotations

import os
from pathlib import Path

from . import err, fail, holding_lock

__all__ = ["run_label"]


def run_label(*, source, labels, classes, per_class, by, strategy, limit, not_in, test, model, jobs, port,
              open_browser) -> int:
    """``sercli label``: choose the clips, serve the page until Finish or Ctrl-C, print the
    fine-tuning command. Holds a lock on the label file (:class:`~sercli.output.OutputLock`),
    so a second session on it is refused."""
    from ..output import OutputError, check_writable

    labels = Path(labels)
    try:
        check_writable(labels)
    except OutputError as exc:
        return fail(str(exc))

    def session(lock) -> int:
        lock.claim()  # this session's pid in the lock file, also over one left by a killed session
        return _label(source=source, labels=labels, classes=classes, per_class=per_class, by=by, strategy=strategy,
                      limit=limit, not_in=not_in, test=test, model=model, jobs=jobs, port=port,
                      open_browser=open_browser)

    return holding_lock(labels, session)


def _label(*, source, labels, classes, per_class, by, strategy, limit, not_in, test, model, jobs, port,
           open_browser) -> int:
    import threading

    from ..audio import DecodeError
    from ..label_server import LabelServer, LabelSession
    from ..labeling import (LabelBook, Taken, annotation_cache, choose, corpus_table, emotion_table, is_table,
                            score_command, train_command, without_long_files)
    from ..models import ModelNotFound
    from ..output import OutputError
    from ..reports import classes_of
    from ..training import MIN_CLIPS_PER_CLASS

    cache = annotation_cache(labels, source)  # where a folder's annotation is kept
    try:
        with err.status(f"reading {source}" if is_table(source) else f"annotating {source}"):
            table = emotion_table(source, model=model, jobs=jobs, cache=cache)
        table, n_long = without_long_files(table)
        book = LabelBook(labels, classes or classes_of(table))
        taken = Taken.of(not_in) if not_in else None
        clips, n_taken = choose(table, book, strategy=strategy, by=by, limit=limit, taken=taken)
    except (ValueError, OSError, OutputError, ModelNotFound, DecodeError) as exc:
        return fail(str(exc).rstrip(".") + ".")
    if taken is not None:
        err.print(f"{n_taken} clips left out: their recordings" + (f" or their --by groups ({len(taken.groups)})"
                  if by else "") + f" are in {', '.join(map(str, not_in))}, so the test set is unseen"
                  + ("" if by or not taken.groups else "; pass the same --by as the training session to leave "
                     "out its speakers too") + ".", highlight=False)
    if n_long:
        err.print(f"{n_long} files of 30 s or more left out: label their speech regions instead (annotate "
                  "--segments FILE, then sercli label FILE).", highlight=False)
    if not clips:
        return fail(f"{source} has no clip left to label (none was classified, or all are labelled or left out).")
    purpose = "test" if test else "train"
    corpus = corpus_table(source, cache)
    command = score_command(source, labels, table=cache) if purpose == "test" else \
        train_command(table, labels, corpus=corpus)
    session = LabelSession(clips, book, target=per_class, minimum=MIN_CLIPS_PER_CLASS, command=command,
                           purpose=purpose)
    try:
        server = LabelServer(session, port=port)
    except OSError as exc:
        return fail(f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}.")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    err.print(f"{len(clips)} clips chosen, {len(session.pending())} not labelled yet; labels go to {labels}.",
              highlight=False)
    err.print(f"Open [bold]{server.url}[/] (Ctrl-C or Finish on the page to stop).", highlight=False,
              soft_wrap=True)  # the address on one line, whatever the terminal's width
    redirect = _open_browser(server.url, labels) if open_browser and _has_display() else None
    try:
        session.finished.wait()
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        server.shutdown()
        server.server_close()
        if redirect is not None:
            redirect.unlink(missing_ok=True)
    counts = book.counts()
    err.print("labels: " + ", ".join(f"{c} {n}" for c, n in counts.items()), highlight=False)
    short = [c for c, n in counts.items() if n < MIN_CLIPS_PER_CLASS]
    if purpose == "test":
        err.print("Score an emotion table of these files with (the fine-tuned model's too):", highlight=False)
        print(command)
    elif short:
        err.print(f"Fine-tuning needs {MIN_CLIPS_PER_CLASS} clips per class; {', '.join(short)} "
                  f"{'has' if len(short) == 1 else 'have'} fewer. Run the same command again to go on.", highlight=False)
    else:
        _compare(table, labels, corpus, jobs)
        err.print("Fine-tune with:", highlight=False)
        print(command)
    return 0


def _compare(table, labels: Path, corpus: Path | None, jobs: int) -> None:
    """Print what fine-tuning on these labels would give against the base model (cross-validated on
    the labels), as ``sercli train --init`` will; a base that cannot be fine-tuned prints nothing."""
    from ..models import DEFAULT_MODEL, load_model
    from ..training.finetune import Labelled, check_base

    name = str(table["model"].dropna().iloc[0]) if "model" in table and table["model"].notna().any() else DEFAULT_MODEL
    try:
        model = load_model(name)
        check_base(model)
        with err.status("comparing the base model and a fine-tuned one on your labels"):
            line = Labelled.read(model, labels, corpus=corpus, jobs=jobs).compare(model).line()
    except ValueError as exc:
        err.print(f"No comparison: {exc}", highlight=False)
        return
    err.print(line, highlight=False)


def _open_browser(url: str, labels: Path) -> Path:
    """Open ``url`` in the browser through a redirect file only this user can read (as Jupyter
    does), so the token is not on the browser's command line, where other users of the machine
    could read it. The file lies next to the label file, where a sandboxed (snap) browser can
    read it too, unlike a private ``/tmp``; it is returned, to delete when the session ends."""
    import html
    import webbrowser

    page = labels.with_name(f"{labels.stem}.open.html")
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if hasattr(os, "fchmod"):
        os.fchmod(fd, 0o600)  # also if a killed session left the file
    address = html.escape(url, quote=True)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f'<!DOCTYPE html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url={address}">'
                 f'<title>sercli label</title><a href="{address}">sercli label</a>')
    webbrowser.open(page.resolve().as_uri())
    return page


def _has_display() -> bool:
    """Whether a graphical browser can open here (not on a headless server, where Python's
    ``webbrowser`` would start a text browser in this terminal)."""
    import sys

    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
