"""Processed data sets: one HDF5 file each, a fast in-RAM batch server, and one on the GPU.

File layout (see DESIGN.md): `images` uint8 (N, C, H, W) in canonical factor order — or, for binary
images, bit-packed rows (N, C·H·W/8) with attribute `packed` = 1 — plus `factors` int (N, K) class
indices and `factor_values` float (N, K); attributes `factor_names`, `factor_sizes`, `metric_factors`,
`source` (procedural / download / file) and `source_md5` where a file was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np
import torch

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
          packed: bool = False, attrs: dict | None = None, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write a processed data set atomically, streaming image blocks (start, uint8 (b, C, H, W) or (b, H, W)).

    With `packed`, images must be 0/1 and are stored 8 pixels to a byte. `extra` arrays (e.g. CelebA's
    attributes) are stored as datasets of their own."""
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


def load(path: str | Path) -> Dataset:
    """Read a processed data set (HDF5) into RAM. Raises FileNotFoundError if it is missing."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        a = f.attrs
        has_factors = "factors" in f
        return Dataset(
            name=path.stem, stored=f["images"][()], image_shape=tuple(int(s) for s in a["image_shape"]),
            packed=bool(a["packed"]),
            factors=f["factors"][()] if has_factors else None,
            factor_values=f["factor_values"][()] if has_factors else None,
            factor_names=tuple(str(s) for s in a["factor_names"]), factor_sizes=tuple(int(s) for s in a["factor_sizes"]),
            metric_factors=tuple(str(s) for s in a["metric_factors"]), source=str(a["source"]),
            attributes=f["attributes"][()] if "attributes" in f else None,
            attribute_names=tuple(str(s) for s in a.get("attribute_names", ())))


def grid(sizes: Sequence[int]) -> np.ndarray:
    """All class-index combinations of a full factor grid in canonical (row-major) order: int (N, K)."""
    return np.indices(sizes).reshape(len(sizes), -1).T
