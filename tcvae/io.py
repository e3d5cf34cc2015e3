"""Atomic writes: a result (file or folder) appears under its name complete, or not at all; several results of
one stage appear together. And bounded reads of files that are someone else's data (a result set): regular
files only, reached through no symbolic link, no larger than a cap."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import pickle
import shutil
import signal
import stat
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
    with atomic_outputs(dirs=[path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_outputs(files: list[str | Path] = (), dirs: list[str | Path] = ()) -> Iterator[list[Path]]:
    """Temporary paths beside each of `files` (to be written) and `dirs` (created empty), in that order; if the
    block succeeds they all replace their targets in one step that Ctrl-C or SIGTERM cannot split (the old
    outputs are moved aside, then deleted), else all are deleted: a stage's outputs change together or not at
    all. A target that is a symbolic link is replaced, never followed."""
    targets = [Path(p) for p in [*files, *dirs]]
    tmps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in targets]
    olds = [p.with_name(f".{p.name}.{os.getpid()}.old") for p in targets]
    for path in targets[:len(files)]:           # a folder where a file goes is the user's: found before any work
        if os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    for path, tmp in zip(targets, tmps):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
    for tmp in tmps[len(files):]:
        tmp.mkdir()
    moved: list[int] = []
    try:
        yield tmps
        with _no_interrupt():                   # all renames happen or none: no output goes missing or stale
            try:
                for i, (path, tmp, old) in enumerate(zip(targets, tmps, olds)):
                    if os.path.lexists(path):
                        os.replace(path, old)
                    moved.append(i)
                    os.replace(tmp, path)
            except OSError:
                for i in reversed(moved):       # put back what was there
                    if not os.path.lexists(tmps[i]):         # the new output went in: take it out again
                        _remove(targets[i])
                    if os.path.lexists(olds[i]):
                        os.replace(olds[i], targets[i])
                raise
    finally:
        for tmp in tmps:
            _remove(tmp)
        for path, old in zip(targets, olds):
            if os.path.lexists(path):           # the old output, once the new one is in place
                _remove(old)


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree if it is there (a link is deleted, never followed)."""
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (Ctrl-C, or DVC stopping a stage) until the block is done; they are delivered
    right after."""
    if threading.current_thread() is not threading.main_thread():     # only the main thread handles signals
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)


def write_json(path: str | Path, obj: Any) -> None:
    """`obj` as strict JSON, atomically: NaN and ±Infinity (which strict JSON readers refuse) written as null."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def finite(obj: Any) -> Any:
    """`obj` (JSON-able: dicts, lists, numbers, strings) with every non-finite float replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def refuse_links(path: str | Path, root: str | Path) -> None:
    """A UserError naming the first symbolic link among `root` and the folders and file between it and `path`
    (`path` lies under `root`): someone else's folder is read only through plain files and folders."""
    root, path = Path(root), Path(path)
    for part in [root, *[root / p for p in itertools.accumulate(path.relative_to(root).parts, lambda a, b: f"{a}/{b}")]]:
        try:
            if stat.S_ISLNK(os.lstat(part).st_mode):
                raise UserError(f"{part}: a symbolic link; it is not followed (a result set holds plain files and "
                                f"folders only): replace it with the file it points to, or remove it")
        except FileNotFoundError:
            return


def read_bounded(path: str | Path, limit: int, root: str | Path | None = None) -> bytes:
    """The bytes of `path`: a regular file (not a FIFO, a device or a folder) of at most `limit` bytes, reached
    through no symbolic link (from `root` on, when given, else the file itself); else a UserError naming it and
    the rule. Opened so that a FIFO cannot block and a link swapped in after the check is not followed."""
    path = Path(path)
    if root is not None:
        refuse_links(path, root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path}: a symbolic link; it is not followed: replace it with the file it points to") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: not a regular file (a folder, FIFO, device or socket); it is not read")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path}: larger than {limit / 2**20:g} MiB, the most such a file may hold; it is not read")
    return data


def read_json(path: str | Path, limit: int, root: str | Path | None = None) -> Any:
    """A JSON file read with `read_bounded`, strictly: UTF-8, numbers finite (no NaN or Infinity), nesting
    bounded. Anything else is a UserError naming the file."""
    text = read_bounded(path, limit, root)

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a JSON number (write null)")
    try:
        return json.loads(text.decode("utf-8"), parse_constant=refuse)
    except (ValueError, RecursionError) as e:      # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UserError(f"{path}: not valid JSON ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:120]


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
