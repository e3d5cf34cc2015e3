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
