"""The ``sercli`` command (and ``python -m sercli``): the typer app in :mod:`sercli.cli`,
with Ctrl-C handled at both ends of it."""

from __future__ import annotations

import signal
import sys

__all__ = ["main"]


def main() -> None:
    """Run the command line.

    - A Ctrl-C while Python still loads the command ends it with status 130 and one line,
      not a traceback (nothing has started).
    - Once a command has returned, its tables are written and its exit status is known; a
      Ctrl-C while the interpreter then stops the worker pools is ignored, so it neither
      prints a traceback nor turns that status into "killed by SIGINT". (So call it only as
      the process's entry point.)
    """
    try:
        from .cli import app
    except KeyboardInterrupt:
        sys.stderr.write("sercli: interrupted before the command started; nothing was done.\n")
        sys.exit(130)
    try:
        app(prog_name="sercli")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    main()
