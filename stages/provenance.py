"""Which code made a result: the working tree's git commit, and a digest of the sources that holds where the tree
travelled without its .git (a GPU job's machine). Standard library only: the GPU job imports it before anything."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """(HEAD, whether tracked files differ from it) of the repository at `root`; (None, None) outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    try:
        return git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no") != ""
    except (OSError, subprocess.SubprocessError):
        return None, None


def code_digest(root: Path = ROOT) -> str:
    """sha256 of the package's sources (tcvae/ and stages/, *.py), each with its path below `root`."""
    h = hashlib.sha256()
    for f in sorted([*root.glob("tcvae/**/*.py"), *root.glob("stages/**/*.py")]):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
