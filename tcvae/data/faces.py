"""3D faces on the paper's grid: 50 identities × 21 azimuths × 11 elevations × 11 lightings.

`render` draws `faces-procedural`, an honest stand-in for the Basel Face Model renders the paper used
(which are not public): a parametric head made of ellipsoids (cranium, nose, brows, cheeks, lips, chin,
ears) with two spherical eye sockets carved out, identities drawn from a seeded coefficient draw, posed by
azimuth/elevation, ray-cast orthographically (z-buffer) to 64×64, and lit by ambient + Lambertian light
from a moving direction. `load_basel` reads the authors' `basel_face_renders.pth` when a user has it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

FACTOR_NAMES = ("identity", "azimuth", "elevation", "lighting")
FACTOR_SIZES = (50, 21, 11, 11)
PER_IDENTITY = 21 * 11 * 11     # images of one identity: 2,541
METRIC_FACTORS = ("azimuth", "elevation", "lighting")
BASEL_FILE = "basel_face_renders.pth"

# Head coordinates: x to the head's left→right, y up, z out of the face; the head is about 2 units tall.
# Each part: centre (x, y, z), radii (x, y, z), albedo.  Parts with x ≠ 0 come in mirrored pairs.
PARTS = np.array([
    # cx     cy     cz     rx    ry    rz    albedo
    [0.00,  0.10,  0.00, 0.75, 0.95, 0.85, 0.80],   # cranium and face
    [0.00, -0.05,  0.80, 0.11, 0.26, 0.22, 0.85],   # nose
    [0.30,  0.32,  0.70, 0.22, 0.06, 0.10, 0.35],   # brow
    [-0.30, 0.32,  0.70, 0.22, 0.06, 0.10, 0.35],
    [0.36, -0.20,  0.50, 0.20, 0.17, 0.20, 0.80],   # cheek
    [-0.36, -0.20, 0.50, 0.20, 0.17, 0.20, 0.80],
    [0.00, -0.47,  0.62, 0.19, 0.06, 0.09, 0.50],   # lips
    [0.00, -0.66,  0.30, 0.30, 0.22, 0.30, 0.80],   # chin
    [0.76,  0.05,  0.00, 0.08, 0.22, 0.14, 0.75],   # ear
    [-0.76, 0.05,  0.00, 0.08, 0.22, 0.14, 0.75],
])
SOCKETS = np.array([[0.28, 0.14, 0.86, 0.15], [-0.28, 0.14, 0.86, 0.15]])  # eye sockets: centre, radius
HALF_WIDTH = 1.3          # the image spans [-1.3, 1.3] head units on both axes
AMBIENT = 0.25


def factor_values() -> list[np.ndarray]:
    """Identity index, azimuth (rad, ±90°), elevation (rad, ±30°), light azimuth (rad, ±90°)."""
    return [np.arange(50, dtype=np.float64), np.deg2rad(np.linspace(-90, 90, 21)),
            np.deg2rad(np.linspace(-30, 30, 11)), np.deg2rad(np.linspace(-90, 90, 11))]


def identities(n: int = 50, seed: int = 0) -> np.ndarray:
    """Per identity, a jittered copy of PARTS (n, parts, 7) and SOCKETS (n, 2, 4), mirror-symmetric."""
    rng = np.random.default_rng(seed)
    parts = np.repeat(PARTS[None], n, axis=0)
    sockets = np.repeat(SOCKETS[None], n, axis=0)
    pair_of = [0, 1, 2, 2, 4, 4, 6, 7, 8, 8]      # mirrored parts share one draw
    for i in range(n):
        draw = rng.normal(size=(10, 7))
        for p, q in enumerate(pair_of):
            scale = 1 + 0.12 * np.clip(draw[q, 3:6], -2, 2)
            parts[i, p, 3:6] *= scale
            parts[i, p, 1] += 0.04 * np.clip(draw[q, 1], -2, 2)
            parts[i, p, 6] = np.clip(parts[i, p, 6] + 0.08 * draw[q, 6], 0.2, 1.0)
        sockets[i, :, 3] *= 1 + 0.1 * np.clip(draw[0, 0], -2, 2)
    return parts, sockets


def _rotation(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """(P, 3, 3) head→world rotations: turn by azimuth about y, then tilt by elevation about x."""
    ca, sa, ce, se = azimuth.cos(), azimuth.sin(), elevation.cos(), elevation.sin()
    one, zero = torch.ones_like(ca), torch.zeros_like(ca)
    ry = torch.stack([ca, zero, sa, zero, one, zero, -sa, zero, ca], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, ce, -se, zero, se, ce], -1).view(-1, 3, 3)
    return rx @ ry


def _hits(o: torch.Tensor, d: torch.Tensor, centre: torch.Tensor, radii: torch.Tensor):
    """Ray o + t·d against an axis-aligned ellipsoid (head coordinates). o: (P, S, 3), d: (P, 1, 3).
    Returns near and far t (P, S), +inf/-inf where the ray misses."""
    oc, dd = (o - centre) / radii, d / radii
    a = (dd * dd).sum(-1)
    b = (oc * dd).sum(-1)
    c = (oc * oc).sum(-1) - 1
    disc = b * b - a * c
    root = disc.clamp_min(0).sqrt()
    miss = disc < 0
    far = torch.where(miss, -math.inf, (-b + root) / a)    # the viewer is at +z: larger t is in front
    near = torch.where(miss, math.inf, (-b - root) / a)
    return far, near


def _geometry(parts: np.ndarray, sockets: np.ndarray, azimuth: torch.Tensor, elevation: torch.Tensor):
    """Depth, unit world normals and albedo of one identity in P poses: (P, S), (P, S, 3), (P, S)."""
    side = torch.linspace(-HALF_WIDTH, HALF_WIDTH, 65)[:-1] + HALF_WIDTH / 64   # pixel centres
    y, x = torch.meshgrid(-side, side, indexing="ij")                            # row 0 is the top
    world = torch.stack([x, y, torch.zeros_like(x)], -1).view(1, -1, 3)
    rot = _rotation(azimuth, elevation)                                          # head → world
    o = world @ rot                      # world → head is rotᵀ; for row vectors p·rot = rotᵀ p
    d = rot[:, 2:3, :]                   # the world z axis in head coordinates, (P, 1, 3)
    parts_t = torch.as_tensor(parts, dtype=torch.float32)
    best = torch.full(o.shape[:2], -math.inf)
    part = torch.zeros(o.shape[:2], dtype=torch.long)
    for k, p in enumerate(parts_t):
        far, _ = _hits(o, d, p[:3], p[3:6])
        closer = far > best
        best = torch.where(closer, far, best)
        part = torch.where(closer, k, part)
    point = o + best[..., None] * d
    normal = (point - parts_t[part, :3]) / parts_t[part, 3:6] ** 2           # ellipsoid gradient
    albedo = parts_t[part, 6]
    for s in torch.as_tensor(sockets, dtype=torch.float32):                  # carve the eye sockets
        inside = ((point - s[:3]) ** 2).sum(-1) < s[3] ** 2
        _, wall = _hits(o, d, s[:3], s[3:].expand(3))                        # the socket's far wall
        carve = inside & torch.isfinite(best)
        best = torch.where(carve, wall, best)
        point = o + best[..., None] * d
        normal = torch.where(carve[..., None], s[:3] - point, normal)
        albedo = torch.where(carve, albedo * 0.8, albedo)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    return best, normal @ rot.transpose(1, 2), albedo


def render(identity: int, azimuth: np.ndarray, elevation: np.ndarray, light: np.ndarray, seed: int = 0) -> np.ndarray:
    """Render one identity: azimuth, elevation (P,) in radians; light azimuths (L,) in radians.
    Returns uint8 (P, L, 64, 64) grey levels, background 0."""
    parts, sockets = identities(seed=seed)
    depth, normal, albedo = _geometry(parts[identity], sockets[identity],
                                      torch.as_tensor(azimuth, dtype=torch.float32),
                                      torch.as_tensor(elevation, dtype=torch.float32))
    lam = torch.as_tensor(light, dtype=torch.float32)
    lights = torch.stack([lam.sin(), torch.full_like(lam, 0.3), lam.cos()], -1)
    lights = lights / lights.norm(dim=-1, keepdim=True)                           # (L, 3) toward the light
    diffuse = (normal[:, None] * lights[None, :, None, :]).sum(-1).clamp_min(0)   # (P, L, S)
    grey = albedo[:, None] * (AMBIENT + (1 - AMBIENT) * diffuse)
    grey = torch.where(torch.isfinite(depth)[:, None], grey, torch.zeros(()))
    return (grey * 255).round().clamp(0, 255).to(torch.uint8).view(len(depth), len(lam), 64, 64).numpy()


def render_grid(identities: int = 50, seed: int = 0):
    """Yield (start, images uint8 (21·11·11, 64, 64)) one identity at a time for the first `identities`,
    canonical order (identity, azimuth, elevation, lighting) row-major."""
    _, az, el, light = factor_values()
    a, e = np.meshgrid(az, el, indexing="ij")
    for i in range(identities):
        yield i * PER_IDENTITY, render(i, a.ravel(), e.ravel(), light, seed).reshape(PER_IDENTITY, 64, 64)


def load_basel(path: Path) -> np.ndarray:
    """The authors' renders as uint8 (127050, 64, 64), loaded without unpickling arbitrary objects."""
    from tcvae.errors import UserError
    from tcvae.io import load_weights_only

    data = load_weights_only(path, remedy="point `file:` at the authors' basel_face_renders.pth")
    if not isinstance(data, torch.Tensor) or tuple(data.shape) != (50, 21, 11, 11, 64, 64):
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise UserError(f"{path}: expected a uint8 tensor (50, 21, 11, 11, 64, 64), found {shape}")
    if data.dtype != torch.uint8:
        raise UserError(f"{path}: expected dtype uint8, found {data.dtype}")
    return data.reshape(-1, 64, 64).numpy()


def preprocess(path: Path, pth_path: Path | None = None, source: str = "procedural", source_md5: str = "",
               identities: int = 50, made_from: dict | None = None) -> None:
    """Write the faces grid of the first `identities` identities to a processed HDF5 at `path`:
    procedural, or the authors' renders."""
    from tcvae import data

    sizes = (identities, *FACTOR_SIZES[1:])
    index = data.grid(sizes)
    values = factor_values()
    if pth_path is None:
        blocks = render_grid(identities)
    else:
        images = load_basel(pth_path)[:len(index)]
        blocks = ((s, images[s:s + PER_IDENTITY]) for s in range(0, len(images), PER_IDENTITY))
    data.write(path, blocks, n=len(index), image_shape=(1, 64, 64), factors=index,
               factor_values=np.stack([values[k][index[:, k]] for k in range(4)], 1),
               factor_names=FACTOR_NAMES, factor_sizes=sizes, metric_factors=METRIC_FACTORS,
               source=source, source_md5=source_md5, made_from=made_from)
