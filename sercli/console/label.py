"""``sercli label`` at the terminal: choose the clips, serve the page, print the fine-tuning command."""

from __future__ import annotations

from pathlib import Path


from . import err, fail

__all__ = ["run_label"]


def run_label(*, source, labels, classes, per_class, by, strategy, limit, not_in, model, jobs, port,
              open_browser) -> int:
    """``sercli label``: choose the clips, serve the page until Finish or Ctrl-C, print the
    fine-tuning command."""
    import threading
    import webbrowser

    from ..audio import DecodeError
    from ..label_server import LabelServer, LabelSession
    from ..labeling import LabelBook, emotion_table, queue, train_command
    from ..models import ModelNotFound
    from ..output import OutputError
    from ..reports import classes_of
    from ..training import MIN_CLIPS_PER_CLASS

    try:
        with err.status(f"reading {source}" if Path(source).is_file() else f"annotating {source}"):
            table = emotion_table(source, model=model, jobs=jobs)
        book = LabelBook(labels, classes or classes_of(table))
        taken = set()
        for other in not_in:
            if not Path(other).is_file():
                raise ValueError(f"The label file {other} (--not-in) does not exist.")
            taken |= LabelBook(other, []).done()
        clips = queue(table, strategy=strategy, by=by, limit=limit, exclude=taken)
    except (ValueError, OSError, OutputError, ModelNotFound, DecodeError) as exc:
        return fail(str(exc).rstrip(".") + ".")
    if not clips:
        return fail(f"{source} has no clip to label (no file was classified).")
    command = train_command(table, labels)
    session = LabelSession(clips, book, target=per_class, minimum=MIN_CLIPS_PER_CLASS, command=command)
    try:
        server = LabelServer(session, port=port)
    except OSError as exc:
        return fail(f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}.")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pending = len(session.pending())
    err.print(f"{len(clips)} clips chosen, {pending} not labelled yet; labels go to {labels}.\n"
              f"Open [bold]{server.url}[/] (Ctrl-C or Finish on the page to stop).", highlight=False)
    if open_browser:
        webbrowser.open(server.url)
    try:
        session.finished.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    counts = book.counts()
    err.print("labels: " + ", ".join(f"{c} {n}" for c, n in counts.items()), highlight=False)
    short = [c for c, n in counts.items() if n < MIN_CLIPS_PER_CLASS]
    if short:
        err.print(f"Fine-tuning needs {MIN_CLIPS_PER_CLASS} clips per class; {', '.join(short)} "
                  f"{'has' if len(short) == 1 else 'have'} fewer. Run the same command again to go on.", highlight=False)
    else:
        err.print("Fine-tune with:", highlight=False)
        print(command)
    return 0
