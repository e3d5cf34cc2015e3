"""Shapes3D (Burgess & Kim 2018): 480,000 RGB 64×64 renders of a shape in a room, on a full grid of six factors.

The official `3dshapes.h5` holds `images` uint8 (480000, 64, 64, 3) and `labels` float (480000, 6), the factor
values in the order floor hue (10), wall hue (10), object hue (10), scale (8), shape (4), orientation (15).
There is no offline stand-in: the file must be downloaded (268 MB) or given.

Preprocessing reads the labels (23 MB), turns each value into its class on the official value grid, and
streams the images in blocks into the processed layout (channels first), so peak memory stays at one block.
A file holding a sub-grid (every combination of the values it contains, once each) is accepted too: its
factors get the classes of the values present, as dSprites sub-grids do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tcvae.errors import UserError

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
METRIC_FACTORS = FACTOR_NAMES        # all six are scored (as disentanglement_lib does)
FILE_NAME = "3dshapes.h5"
URL = "https://storage.googleapis.com/3d-shapes/3dshapes.h5"
MD5 = "099a2078d58cec4daad0702c55d06868"
BLOCK = 2048                          # images per block: 24 MiB of uint8


def factor_values() -> list[np.ndarray]:
    """The official value of each class index, one array per factor."""
    return [np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10),
            np.linspace(0.75, 1.25, 8), np.arange(4, dtype=np.float64), np.linspace(-30, 30, 15)]


def label_classes(labels: np.ndarray, path: Path | str = "labels") -> np.ndarray:
    """Float labels (N, 6) → int class indices (N, 6) on the official value grid; a UserError naming the factor
    if a value is not one of its official values."""
    classes = np.empty(labels.shape, np.int64)
    for k, values in enumerate(factor_values()):
        nearest = np.abs(labels[:, k, None] - values[None, :]).argmin(1)
        off = np.abs(labels[:, k] - values[nearest])
        if off.max(initial=0) > 1e-3 * max(1.0, float(np.abs(values).max())):
            bad = float(labels[off.argmax(), k])
            raise UserError(f"{path}: label {FACTOR_NAMES[k]} = {bad:g} is not one of the 3dshapes values "
                            f"{np.round(values, 3).tolist()}: not the official 3dshapes.h5 layout")
        classes[:, k] = nearest
    return classes


def _open(h5_path: Path):
    """The file's images and labels datasets, checked against the official layout."""
    import h5py

    try:
        f = h5py.File(h5_path, "r")
    except OSError as e:
        raise UserError(f"{h5_path}: not a readable HDF5 file ({e}); expected the official {FILE_NAME}") from None
    found = set(f.keys())
    if {"images", "labels"} - found:
        f.close()
        raise UserError(f"{h5_path}: not a 3dshapes file (missing datasets {sorted({'images', 'labels'} - found)}; "
                        f"found {sorted(found)})")
    images, labels = f["images"], f["labels"]
    if images.dtype != np.uint8 or images.shape[1:] != (64, 64, 3) or labels.shape != (len(images), 6):
        f.close()
        raise UserError(f"{h5_path}: expected images uint8 (N, 64, 64, 3) and labels (N, 6); found "
                        f"{images.dtype} {images.shape} and {labels.shape}")
    return f, images, labels


def _grid_order(classes: np.ndarray, path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The values present per factor (class indices kept) and, for each row of the kept grid in canonical
    (row-major) order, the file row that holds it. UserError unless every combination occurs exactly once."""
    keep = [np.unique(column) for column in classes.T]
    rank = np.stack([np.searchsorted(kept, column) for kept, column in zip(keep, classes.T)], 1)
    sizes = [len(k) for k in keep]
    n = int(np.prod(sizes))
    code = np.ravel_multi_index(rank.T, sizes)
    if len(classes) != n or np.bincount(code, minlength=n).max() != 1:
        raise UserError(f"{path}: does not hold every combination of its factor values exactly once "
                        f"({len(classes):,} images for {n:,} combinations of sizes {sizes})")
    order = np.empty(n, np.int64)
    order[code] = np.arange(n)
    return keep, order


def _blocks(images, order: np.ndarray, block: int = BLOCK):
    """(start, uint8 (b, 3, 64, 64)) in canonical order. Contiguous runs (the official file's own order) are
    read as slices; otherwise the block's rows are read in increasing order and put back in place."""
    for start in range(0, len(order), block):
        rows = order[start:start + block]
        if (np.diff(rows) == 1).all():
            chunk = images[int(rows[0]):int(rows[-1]) + 1]
        else:
            sort = np.argsort(rows)
            chunk = np.empty((len(rows), 64, 64, 3), np.uint8)
            chunk[sort] = images[rows[sort]]
        yield start, np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))


def preprocess(path: Path, h5_path: Path, source: str = "download", source_md5: str = "",
               made_from: dict | None = None) -> None:
    """Convert the official 3dshapes.h5 (or a sub-grid in its layout) to the processed HDF5 at `path`."""
    from tcvae import data

    f, images, labels = _open(Path(h5_path))
    with f:
        classes = label_classes(labels[()], h5_path)
        keep, order = _grid_order(classes, Path(h5_path))
        values = factor_values()
        index = data.grid([len(k) for k in keep])
        data.write(path, _blocks(images, order), n=len(order), image_shape=(3, 64, 64), factors=index,
                   factor_values=np.stack([values[k][keep[k][index[:, k]]] for k in range(6)], 1),
                   factor_names=FACTOR_NAMES, factor_sizes=[len(k) for k in keep], metric_factors=METRIC_FACTORS,
                   source=source, source_md5=source_md5, made_from=made_from)
