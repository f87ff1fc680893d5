"""What the CLI shows (``rich``, all on stderr except what a command is asked to print): one
module per command, each a ``run_*`` function that :mod:`sercli.cli` calls with the parsed
arguments and that returns the exit status."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.console import Console

if TYPE_CHECKING:
    from ..output import OutputLock

__all__ = ["err", "fail", "holding_lock"]

#: Where progress, summaries and messages go.
err = Console(stderr=True)


def fail(message: str) -> int:
    """Print ``sercli: message`` on stderr; returns the exit status of unusable arguments, 2."""
    print(f"sercli: {message}", file=sys.stderr)
    return 2


def holding_lock(path: Path, run: Callable[["OutputLock"], int]) -> int:
    """``run(lock)`` while this process holds ``path``'s :class:`~sercli.output.OutputLock`; a
    lock held by another run is refused in one sentence (exit status 2)."""
    from ..output import OutputError, OutputLock

    lock = OutputLock(path)
    try:
        lock.acquire()
    except OutputError as exc:
        return fail(str(exc))
    try:
        return run(lock)
    finally:
        lock.release()
