"""Atomic writes: a result (file or folder) appears under its name complete, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

from tcvae.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place if the block succeeds, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):      # e.g. a read-only folder: keep the error that got us here
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; if the block succeeds it replaces `path` whole (the old
    folder is moved aside, then deleted), else it is deleted. The folder counterpart of `atomic_path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (path.with_name(f".{path.name}.{os.getpid()}.{end}") for end in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        with _no_interrupt():                   # the two renames happen both or neither: `path` never goes missing
            if path.exists():
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                if old.exists():
                    os.replace(old, path)
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if path.exists():                       # the old folder, once the new one is in place
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C, or DVC stopping a stage) until the block is done; it is delivered right after."""
    if threading.current_thread() is not threading.main_thread():     # only the main thread handles signals
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_weights_only(path: str | Path, device: Any = "cpu", *, remedy: str) -> Any:
    """torch.load(weights_only=True) with its failures as one-line UserErrors ending in `remedy`. The refusal
    of a file holding Python objects stays a refusal, and never repeats torch's advice to turn the check off."""
    import torch

    try:
        with warnings.catch_warnings():    # e.g. "pickle protocol 4 … please file an issue": noise beside our message
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except (torch.OutOfMemoryError, PermissionError, FileNotFoundError):
        raise
    except pickle.UnpicklingError as e:
        # torch's message is a page that ends in advice to turn the check off: keep only the reason
        reason = next((line.strip() for line in str(e).splitlines() if line.strip() and not any(
            w in line for w in ("eights only", "weights_only", "Please file", "Check the documentation"))), "")
        if "GLOBAL" in reason or "global" in reason:
            raise UserError(f"{path}: refused — it holds Python objects, not only tensors and plain data, and "
                            f"loading them could run code ({reason[:100]}). tcvae never writes such a file; "
                            f"{remedy}") from None
        raise UserError(f"{path}: not a readable torch file ({reason[:100] or type(e).__name__}); {remedy}") from None
    except Exception as e:      # random bytes, a truncated zip, …: torch raises many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UserError(f"{path}: not a readable torch file ({first}); {remedy}") from None
