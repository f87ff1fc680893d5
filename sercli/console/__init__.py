"""What the CLI shows (``rich``, all on stderr except what a command is asked to print): one
module per command, each a ``run_*`` function that :mod:`sercli.cli` calls with the parsed
arguments and that returns the exit status."""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["err", "fail"]

#: Where progress, summaries and messages go.
err = Console(stderr=True)


def fail(message: str) -> int:
    """Print ``sercli: message`` on stderr; returns the exit status of unusable arguments, 2."""
    print(f"sercli: {message}", file=sys.stderr)
    return 2
