"""The rich console every command prints its tables and lines through: a terminal's own width, and `PIPED`
columns when the output goes to a file or a pipe (rich's 80 there would wrap tables mid-value)."""

from __future__ import annotations

import os

from rich.console import Console

PIPED = 160


def console(stderr: bool = False, **options) -> Console:
    """A rich Console on stdout (or stderr); COLUMNS, when set, still decides the width."""
    out = Console(stderr=stderr, **options)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPED
    return out


def count(n: int, noun: str) -> str:
    """'1 run', '2 runs', '0 active units': a count with its noun in the right number (English plurals in -s)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
