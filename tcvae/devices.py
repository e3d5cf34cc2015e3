"""One GPU per job: parallel workers on an N-GPU machine each hold an exclusive lock on a different device.

A worker calls `claim_gpu()` before CUDA starts; it takes the first free `gpu<i>.lock` (an flock, so the
kernel releases it when the process ends, even after kill -9) and sets CUDA_VISIBLE_DEVICES=i.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

_held: list = []   # open lock files of this process: the locks live as long as they do


def claim_gpu(count: int, lock_dir: Path = Path(".dvc/tmp/gpu-locks"), poll: float = 1.0,
              timeout: float | None = None) -> int:
    """Block until one of `count` devices is free, lock it for the rest of this process, set
    CUDA_VISIBLE_DEVICES to it and return its index. With one device or none, nothing to share: return 0."""
    if count <= 1:
        return 0
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for i in range(count):
            f = open(lock_dir / f"gpu{i}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.seek(0), f.truncate(), f.write(f"{os.getpid()}\n"), f.flush()
            _held.append(f)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(i)
            return i
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {count} after {timeout} s")
        time.sleep(poll)


def visible_gpus() -> int:
    """How many GPUs this process may use (honouring an inherited CUDA_VISIBLE_DEVICES). Counted through
    NVML, so CUDA is not started and a claim can still narrow what it sees (is_available() would start it)."""
    import torch
    return torch.cuda.device_count()
