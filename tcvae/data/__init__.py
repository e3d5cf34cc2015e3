"""Processed data sets: one HDF5 file each, a fast in-RAM batch server, and one on the GPU.

File layout (see DESIGN.md): `images` uint8 (N, C, H, W) in canonical factor order — or, for binary
images, bit-packed rows (N, C·H·W/8) with attribute `packed` = 1 — plus `factors` int (N, K) class
indices and `factor_values` float (N, K); attributes `factor_names`, `factor_sizes`, `metric_factors`,
`source` (procedural / download / file) and `source_md5` where a file was read; `made_from` (JSON), the
data set's params that made the file, so that a stage can refuse a file its params no longer describe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
import torch

from tcvae.errors import UserError
from tcvae.io import atomic_path
from tcvae.progress import progress


@dataclass
class Dataset:
    """A processed data set held in RAM as uint8 (bit-packed when binary)."""

    name: str
    stored: np.ndarray                  # uint8 (N, C, H, W), or (N, C·H·W/8) when packed
    image_shape: tuple[int, int, int]   # (C, H, W)
    packed: bool
    factors: np.ndarray | None          # int (N, K) class indices, None when there are no factors
    factor_values: np.ndarray | None    # float (N, K)
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    metric_factors: tuple[str, ...]
    source: str
    attributes: np.ndarray | None = None      # int8 (N, A) of ±1 (CelebA), None elsewhere
    attribute_names: tuple[str, ...] = ()
    made_from: dict | None = None             # the params that made the file (None: not recorded)

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def images(self) -> np.ndarray:
        """All images, uint8 (N, C, H, W) with values 0–255 (binary sets unpack to 0/255): large."""
        return self.uint8(np.arange(len(self)))

    def uint8(self, index: np.ndarray) -> np.ndarray:
        """Images at `index` as uint8 (B, C, H, W), 0–255."""
        rows = self.stored[index]
        if self.packed:
            rows = np.unpackbits(rows, axis=1, count=int(np.prod(self.image_shape))) * np.uint8(255)
        return rows.reshape(len(index), *self.image_shape)

    def batch(self, index: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """Images at `index` as float32 (B, C, H, W) in [0, 1] on `device`."""
        index = np.asarray(index)
        if self.packed:   # unpack straight to 0/1 bytes; no 0–255 detour
            bits = np.unpackbits(self.stored[index], axis=1, count=int(np.prod(self.image_shape)))
            return torch.from_numpy(bits).to(device).view(len(index), *self.image_shape).float()
        return torch.from_numpy(self.stored[index]).to(device).float().div_(255)

    def to(self, device: str | torch.device) -> "Dataset | DeviceBatches":
        """Where batches come from on `device`: this data set itself on the CPU, else a `DeviceBatches`."""
        device = torch.device(device)
        return self if device.type == "cpu" else DeviceBatches(self, device)


class DeviceBatches:
    """A data set's stored bytes held on a device (a GPU), batches gathered and unpacked there: the same
    batches as `Dataset.batch` for the same indices, without a host round trip per step. Full dSprites
    bit-packed is 377 MB."""

    def __init__(self, data: Dataset, device: str | torch.device):
        self.device = torch.device(device)
        self.image_shape, self.packed = data.image_shape, data.packed
        self.stored = torch.from_numpy(data.stored).to(self.device)
        self.bit = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=self.device)  # np.unpackbits' order

    def __len__(self) -> int:
        return len(self.stored)

    def batch(self, index: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
        """Images at `index` as float32 (B, C, H, W) in [0, 1] on this device (`device` must be it, if given)."""
        if device is not None and torch.device(device).type != self.device.type:
            raise ValueError(f"batches live on {self.device}, not {device}")
        index = torch.as_tensor(index).to(self.device, non_blocking=True)
        rows = self.stored.index_select(0, index)
        if self.packed:
            bits = (rows[:, :, None] & self.bit).ne(0).view(len(index), -1)[:, :int(np.prod(self.image_shape))]
            return bits.float().reshape(len(index), *self.image_shape)
        return rows.float().div_(255)


def write(path: str | Path, blocks: Iterable[tuple[int, np.ndarray]], *, n: int, image_shape: Sequence[int],
          factors: np.ndarray | None, factor_values: np.ndarray | None, factor_names: Sequence[str],
          factor_sizes: Sequence[int], metric_factors: Sequence[str], source: str, source_md5: str = "",
          packed: bool = False, attrs: dict | None = None, extra: dict[str, np.ndarray] | None = None,
          made_from: dict | None = None) -> None:
    """Write a processed data set atomically, streaming image blocks (start, uint8 (b, C, H, W) or (b, H, W)).

    With `packed`, images must be 0/1 and are stored 8 pixels to a byte. `extra` arrays (e.g. CelebA's
    attributes) are stored as datasets of their own. `made_from`: the params that made it (JSON-able)."""
    size = int(np.prod(image_shape))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f, progress(n, f"write {Path(path).name}", "img") as advance:
        if packed:
            images = f.create_dataset("images", (n, size // 8), np.uint8, chunks=(min(n, 4096), size // 8))
        else:
            images = f.create_dataset("images", (n, *image_shape), np.uint8,
                                      chunks=(min(n, 256), *image_shape), compression="lzf")
        written = 0
        for start, block in blocks:
            block = block.reshape(len(block), *image_shape)
            images[start:start + len(block)] = np.packbits(block.reshape(len(block), -1), axis=1) if packed else block
            written += len(block)
            advance(len(block))
        if written != n:
            raise RuntimeError(f"wrote {written} images, expected {n}")
        for name, array in (extra or {}).items():
            f[name] = array
        if factors is not None:
            f["factors"] = factors.astype(np.int64)
            f["factor_values"] = factor_values.astype(np.float64)
        f.attrs.update(dict(packed=int(packed), image_shape=list(image_shape), factor_names=list(factor_names),
                            factor_sizes=list(factor_sizes), metric_factors=list(metric_factors),
                            source=source, source_md5=source_md5, **(attrs or {})))
        if made_from is not None:
            f.attrs["made_from"] = json.dumps(made_from, sort_keys=True)


IMAGE_SIZE = 64      # the models' input: 64×64, 1 or 3 channels


def load(path: str | Path) -> Dataset:
    """Read a processed data set (HDF5) into RAM, checking that it is what `write` makes: images of the
    recorded shape and dtype (packed rows of the right length), factors one row per image within their
    sizes. Raises FileNotFoundError if it is missing, UserError if it is damaged or not such a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise _damaged(path, f"not a readable HDF5 file ({_reason(e)})") from None
    try:
        with f:
            return _read(f, path)
    except UserError:
        raise
    except (KeyError, OSError, ValueError, TypeError, IndexError) as e:   # truncated data, odd attributes
        raise _damaged(path, f"cannot be read ({_reason(e)})") from None


def made_from(path: str | Path) -> dict | None:
    """The params recorded in a processed file (None for a file that records none)."""
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get("made_from")
        return None if text is None else json.loads(text)
    except (OSError, ValueError, TypeError) as e:
        raise _damaged(Path(path), f"not a readable HDF5 file ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _damaged(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what}; it is damaged or not a processed data set. Delete it and rerun the "
                     f"preprocess stage (`dvc repro preprocess`, or `tcvae stage preprocess --dataset {path.stem}`)")


def _read(f: h5py.File, path: Path) -> Dataset:
    a = f.attrs
    missing = [k for k in ("images", ) if k not in f] + \
        [f"attribute {k}" for k in ("packed", "image_shape", "factor_names", "factor_sizes", "metric_factors", "source")
         if k not in a]
    if missing:
        raise _damaged(path, f"missing {', '.join(missing)}")
    images = f["images"]
    if not isinstance(images, h5py.Dataset) or images.dtype != np.uint8:
        raise _damaged(path, f"`images` must be uint8, found {getattr(images, 'dtype', 'a group')}")
    shape = tuple(int(s) for s in np.ravel(a["image_shape"]))
    if len(shape) != 3 or shape[0] not in (1, 3) or shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise _damaged(path, f"image_shape {shape}: tcvae's models take (1 or 3, {IMAGE_SIZE}, {IMAGE_SIZE})")
    packed = int(np.ravel(a["packed"])[0]) if np.size(a["packed"]) == 1 else -1
    if packed not in (0, 1):
        raise _damaged(path, f"attribute packed = {a['packed']!r}: must be 0 or 1")
    row = (int(np.prod(shape)) + 7) // 8 if packed else None
    want = (row,) if packed else shape
    if images.ndim != 1 + len(want) or tuple(images.shape[1:]) != want or images.shape[0] < 1:
        raise _damaged(path, f"`images` is {tuple(images.shape)}, expected (N ≥ 1, {', '.join(map(str, want))}) "
                             f"for {'bit-packed ' if packed else ''}images {shape}")
    n = images.shape[0]
    names = tuple(str(s) for s in np.ravel(a["factor_names"]))
    sizes = tuple(int(s) for s in np.ravel(a["factor_sizes"]))
    metric = tuple(str(s) for s in np.ravel(a["metric_factors"]))
    factors = values = None
    if "factors" in f:
        factors = f["factors"][()]
        values = f["factor_values"][()] if "factor_values" in f else None
        k = len(names)
        if factors.dtype.kind not in "iu" or factors.shape != (n, k) or len(sizes) != k:
            raise _damaged(path, f"`factors` is {factors.dtype} {factors.shape}, expected integer ({n}, {k}): one row "
                                 f"per image, one column per factor name ({len(sizes)} sizes recorded)")
        if k and ((factors < 0).any() or (factors >= np.array(sizes)).any()):
            raise _damaged(path, "`factors` holds class indices outside the recorded factor_sizes")
        if values is None or values.shape != (n, k) or values.dtype.kind != "f":
            raise _damaged(path, f"`factor_values` must be float ({n}, {k}), found "
                                 f"{'none' if values is None else f'{values.dtype} {values.shape}'}")
        if set(metric) - set(names):
            raise _damaged(path, f"metric_factors {sorted(set(metric) - set(names))} are not factor names")
    attribute_names = tuple(str(s) for s in np.ravel(a.get("attribute_names", ())))
    attributes = f["attributes"][()] if "attributes" in f else None
    if attributes is not None and attributes.shape != (n, len(attribute_names)):
        raise _damaged(path, f"`attributes` is {attributes.shape}, expected ({n}, {len(attribute_names)})")
    recorded = a.get("made_from")
    return Dataset(
        name=path.stem, stored=images[()], image_shape=shape, packed=bool(packed), factors=factors,
        factor_values=values, factor_names=names, factor_sizes=sizes, metric_factors=metric,
        source=str(a["source"]), attributes=attributes, attribute_names=attribute_names,
        made_from=None if recorded is None else json.loads(recorded))


def grid(sizes: Sequence[int]) -> np.ndarray:
    """All class-index combinations of a full factor grid in canonical (row-major) order: int (N, K)."""
    return np.indices(sizes).reshape(len(sizes), -1).T
