"""dSprites (Matthey et al. 2017), drawn procedurally on the canonical grid.

The geometry was measured on the real frames: pixel centres (x+0.5, y+0.5),
sprite centre c = 16 + 32·pos, rotation about c, shapes tested at (u, v) / scale in pixels at scale 1.
The result is bit-identical in layout to the real npz: index = classes · [245760, 40960, 1024, 32, 1].
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
METRIC_FACTORS = ("scale", "orientation", "posX", "posY")
SHAPES = ("square", "ellipse", "heart")
FILE_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


def factor_values() -> list[np.ndarray]:
    """The real data set's value of each class index, one array per factor (shape is 1, 2, 3)."""
    return [
        np.arange(1, 4, dtype=np.float64),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * math.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ]


def _heart_cone(u: torch.Tensor, v: torch.Tensor, cx: float) -> torch.Tensor:
    """Convex hull of the lobe disc centred at (cx, -4.05), radius 5.1, and the tip (0, 8.8)."""
    r, tip = 5.1, (0.0, 8.8)
    ax, ay = cx - tip[0], -4.05 - tip[1]
    d = math.hypot(ax, ay)
    ax, ay = ax / d, ay / d
    wx, wy = u - tip[0], v - tip[1]
    s = wx * ax + wy * ay                      # distance along the tip→centre axis
    q = (wx * ay - wy * ax).abs()              # distance from that axis
    tan_half = r / math.sqrt(d * d - r * r)
    in_triangle = (s >= 0) & (q <= s * tan_half) & (s <= d - r * r / d)
    in_disc = (u - cx) ** 2 + (v + 4.05) ** 2 <= r * r
    return in_triangle | in_disc


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Is the canonical shape (scale 1, unrotated, lengths in pixels) present at (u, v)?"""
    if shape == 0:
        return (u.abs() <= 9.6) & (v.abs() <= 9.6)
    if shape == 1:
        return (u / 12.75) ** 2 + (v / 7.25) ** 2 <= 1.0
    return _heart_cone(u, v, -4.7) | _heart_cone(u, v, 4.7)


WINDOW = 31  # every sprite lies within 14 px of its centre (square corner 9.6·√2 = 13.6), so test 31×31 px


def _render_block(shape: int, scale: float, theta: float, pos_x: np.ndarray, pos_y: np.ndarray) -> torch.Tensor:
    """All images of one (shape, scale, orientation) on the grid pos_x × pos_y: bool (X, Y, 64, 64)."""
    def window(pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        centre = 16 + 32 * torch.as_tensor(pos, dtype=torch.float64)
        first = centre.floor().long() - WINDOW // 2                      # first pixel of the window
        pixels = first[:, None] + torch.arange(WINDOW)                   # (P, WINDOW)
        return pixels, pixels + 0.5 - centre[:, None]                    # indices, offsets from centre
    cols, dx = window(pos_x)
    rows, dy = window(pos_y)
    c, s = math.cos(theta) / scale, math.sin(theta) / scale
    # u, v are sums of a column term and a row term: (X, 1, 1, W) + (1, Y, W, 1) → (X, Y, W rows, W cols)
    u = (c * dx).float()[:, None, None, :] - (s * dy).float()[None, :, :, None]
    v = (s * dx).float()[:, None, None, :] + (c * dy).float()[None, :, :, None]
    out = torch.zeros(len(pos_x), len(pos_y), 64, 64, dtype=torch.bool)
    X, Y = len(pos_x), len(pos_y)
    out[torch.arange(X)[:, None, None, None], torch.arange(Y)[None, :, None, None],
        rows[None, :, :, None], cols[:, None, None, :]] = _inside(shape, u, v)
    return out


def render(factors: np.ndarray | torch.Tensor) -> np.ndarray:
    """Draw dSprites images for any factor combinations.

    factors: int (M, 5) class indices of shape, scale, orientation, posX, posY on the canonical grid.
    Returns uint8 (M, 64, 64), 1 where the sprite is (white), 0 elsewhere.
    """
    f = np.asarray(factors, dtype=np.int64).reshape(-1, 5)
    if ((f < 0) | (f >= np.array(FACTOR_SIZES))).any():
        raise ValueError(f"factor indices out of range; sizes are {FACTOR_SIZES}")
    values = factor_values()
    out = np.zeros((len(f), 64, 64), dtype=np.uint8)
    for i, (sh, sc, ori, px, py) in enumerate(f):
        img = _render_block(int(sh), values[1][sc], values[2][ori], values[3][px : px + 1], values[4][py : py + 1])
        out[i] = img[0, 0].numpy()
    return out


def render_grid(keep: list[np.ndarray]):
    """Yield (start, images uint8 (n, 64, 64)) for the sub-grid keeping class indices `keep[k]` of
    each factor, in canonical (row-major, posY fastest) order, one (shape, scale, orientation) block
    at a time so memory stays at one block."""
    values = factor_values()
    px, py = values[3][keep[3]], values[4][keep[4]]
    block = len(px) * len(py)
    start = 0
    for sh in keep[0]:
        for sc in keep[1]:
            for ori in keep[2]:
                imgs = _render_block(int(sh), values[1][sc], values[2][ori], px, py)
                yield start, imgs.reshape(block, 64, 64).numpy().view(np.uint8)
                start += block


def subgrid(step: dict[str, int], keep: dict[str, list[int]] | None = None) -> list[np.ndarray]:
    """Class indices kept per factor: the listed ones (`keep[name]`, sorted), every `step[name]`-th, or all."""
    keep = keep or {}
    return [np.array(sorted(keep[name])) if name in keep else np.arange(0, size, step.get(name, 1))
            for name, size in zip(FACTOR_NAMES, FACTOR_SIZES)]


def _npz_blocks(npz_path: Path, keep: list[np.ndarray], block: int = 16384):
    """Rows of the real npz in the kept sub-grid's canonical order, placed by their latents_classes."""
    from tcvae.errors import UserError

    try:
        with np.load(npz_path) as npz:     # allow_pickle stays False: arrays only
            missing = {"imgs", "latents_classes"} - set(npz.files)
            if missing:
                raise UserError(f"{npz_path}: not a dSprites npz (missing keys {sorted(missing)})")
            imgs, classes = npz["imgs"], npz["latents_classes"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:   # random bytes, truncated, pickled objects
        raise UserError(f"{npz_path}: not a readable dSprites npz ({str(e)[:120]}); point `file:` at "
                        f"dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz") from None
    if imgs.dtype != np.uint8 or imgs.shape[1:] != (64, 64) or classes.shape != (len(imgs), 6):
        raise UserError(f"{npz_path}: expected imgs uint8 (N, 64, 64) and latents_classes (N, 6); "
                        f"found {imgs.dtype} {imgs.shape} and {classes.shape}")
    rank = []
    for k, kept in enumerate(keep):       # class index → position in the sub-grid, -1 if dropped
        r = np.full(FACTOR_SIZES[k], -1)
        r[kept] = np.arange(len(kept))
        rank.append(r[np.clip(classes[:, k + 1], 0, FACTOR_SIZES[k] - 1)])
    rank = np.stack(rank, 1)
    rows = np.flatnonzero((rank >= 0).all(1))
    n = int(np.prod([len(k) for k in keep]))
    code = np.ravel_multi_index(rank[rows].T, [len(k) for k in keep])
    if len(rows) != n or np.bincount(code, minlength=n).max() != 1:
        raise UserError(f"{npz_path}: does not hold every combination of the chosen grid exactly once "
                        f"({len(rows)} matching rows for {n} combinations)")
    order = np.empty(n, dtype=np.int64)
    order[code] = rows
    for start in range(0, n, block):
        images = imgs[order[start:start + block]]
        if images.max(initial=0) > 1:
            raise UserError(f"{npz_path}: imgs must hold 0/1 values, found {images.max()}")
        yield start, images


def preprocess(path: Path, step: dict[str, int], npz_path: Path | None = None, source: str = "procedural",
               source_md5: str = "", made_from: dict | None = None, keep: dict[str, list[int]] | None = None) -> None:
    """Write the dSprites (sub-)grid to a processed HDF5 at `path`, rendered or converted from the npz
    (`made_from`: the params recorded in it). A factor left with one value is not scored (it has no entropy)."""
    from tcvae import data

    keep = subgrid(step, keep)
    index = data.grid([len(k) for k in keep])
    values = factor_values()
    blocks = render_grid(keep) if npz_path is None else _npz_blocks(npz_path, keep)
    data.write(path, blocks, n=len(index), image_shape=(1, 64, 64), factors=index,
               factor_values=np.stack([values[k][keep[k][index[:, k]]] for k in range(5)], 1),
               factor_names=FACTOR_NAMES, factor_sizes=[len(k) for k in keep],
               metric_factors=[f for f in METRIC_FACTORS if len(keep[FACTOR_NAMES.index(f)]) > 1],
               source=source, source_md5=source_md5, packed=True, made_from=made_from)
