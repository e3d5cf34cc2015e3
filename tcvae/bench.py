"""`tcvae bench …`: speed measured in one process, each against a straightforward baseline."""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console()


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def data(batch: int = 2048, seconds: float = 3.0) -> None:
    """Render the full dSprites grid and 5 faces identities; serve random dSprites batches for `seconds`."""
    import torch

    from tcvae.data import Dataset, dsprites, faces, grid

    keep = [np.arange(s) for s in dsprites.FACTOR_SIZES]
    packed = np.empty((737280, 512), dtype=np.uint8)

    def render_all():
        for start, imgs in dsprites.render_grid(keep):
            packed[start:start + len(imgs)] = np.packbits(imgs.reshape(len(imgs), -1), axis=1)

    _, t_dsprites = _timed(render_all)
    ids = 5
    gen = faces.render_grid()
    _, t_faces = _timed(lambda: [next(gen) for _ in range(ids)])
    ds = Dataset("dsprites", packed, (1, 64, 64), True, grid(dsprites.FACTOR_SIZES), None, dsprites.FACTOR_NAMES,
                 dsprites.FACTOR_SIZES, dsprites.METRIC_FACTORS, "procedural")
    rng = np.random.default_rng(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x = ds.batch(rng.integers(0, len(ds), batch))
        n += len(x)
    rate = n / (time.perf_counter() - start)
    # baseline: the original code's way, a float32 copy of the whole set indexed per batch (on a 1/16 slice)
    floats = torch.from_numpy(np.unpackbits(packed[: len(packed) // 16], axis=1)).float()
    m, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x = floats[torch.from_numpy(rng.integers(0, len(floats), batch))]
        m += len(x)
    base = m / (time.perf_counter() - start)
    table = Table(title=f"tcvae bench data ({torch.get_num_threads()} threads)")
    for c in ("what", "measured", "note"):
        table.add_column(c)
    table.add_row("render dSprites, 737,280 images", f"{t_dsprites:.1f} s", f"{737280 / t_dsprites:,.0f} img/s")
    table.add_row("render faces-procedural, 127,050 images", f"{t_faces * 50 / ids:.1f} s",
                  f"extrapolated from {ids} of 50 identities ({t_faces / ids / 2541 * 1e3:.2f} ms/img)")
    table.add_row(f"serve dSprites batches of {batch} (bit-packed uint8 → float)", f"{rate:,.0f} img/s",
                  f"RAM {packed.nbytes / 2**20:.0f} MiB")
    table.add_row("baseline: index a float32 copy of the set", f"{base:,.0f} img/s",
                  f"ratio {rate / base:.2f}×; the copy would take {737280 * 4096 * 4 / 2**30:.1f} GiB")
    console.print(table)
