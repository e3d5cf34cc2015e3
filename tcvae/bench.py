"""`tcvae bench …`: speed measured in one process, each against a straightforward baseline."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from rich.table import Table

from tcvae.console import console as make_console

console = make_console()


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
                  f"extrapolated from {ids} of 50 identities ({t_faces / ids / faces.PER_IDENTITY * 1e3:.2f} ms/img)")
    table.add_row(f"serve dSprites batches of {batch} (bit-packed uint8 → float)", f"{rate:,.0f} img/s",
                  f"RAM {packed.nbytes / 2**20:.0f} MiB")
    table.add_row("baseline: index a float32 copy of the set", f"{base:,.0f} img/s",
                  f"ratio {rate / base:.2f}×; the copy would take {737280 * 4096 * 4 / 2**30:.1f} GiB")
    n_jpeg, t_jpeg = _celeba_decode()
    table.add_row(f"CelebA preprocess: {n_jpeg:,} synthetic 178×218 JPEGs → 64×64", f"{n_jpeg / t_jpeg:,.0f} img/s",
                  f"202,599 images ≈ {202599 / (n_jpeg / t_jpeg) / 60:.1f} min")
    console.print(table)


def _celeba_decode(n: int = 2000) -> tuple[int, float]:
    """Decode n CelebA-sized JPEGs (smooth shapes plus noise, quality 90) with the preprocess's worker pool."""
    import io
    import tempfile
    from pathlib import Path

    from PIL import Image

    from tcvae.data import celeba

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:218, 0:178]
    with tempfile.TemporaryDirectory() as folder:
        for i in range(1, n + 1):
            base = 128 + 80 * np.sin(x[..., None] / (10 + i % 7) + np.arange(3)) * np.cos(y[..., None] / 13)
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=90)
            (Path(folder) / f"{i:06d}.jpg").write_bytes(buf.getvalue())
        names = celeba.image_names(Path(folder))
        start = time.perf_counter()
        for _ in celeba.images(Path(folder), names):
            pass
        return n, time.perf_counter() - start


def _interleaved(fns, reps: int) -> list[float]:
    """Median seconds of each function, timed in turn so that drifts in machine load hit all alike."""
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [float(np.median(ts)) for ts in times]


def _step_fn(method: str, estimator: str, latents: int, batch: int, dataset_size: int, dev, precision: str, *,
             materialised: bool = False, arch: str = "mlp", width: int = 1200, channels: int = 1):
    """`fit`'s own step (tcvae.train.Trainer: batches served as training serves them, deterministic mode as
    `fit` sets it) of `method` on random images of this shape, as a function to time, and the steps each call
    runs: 10 on CUDA, synchronised once after the last (as `fit`, which reads back only on logging steps), 1 on
    the CPU. dataset_size: N in the estimators' weights."""
    import itertools
    import types
    from unittest import mock

    import torch

    from tcvae import objectives as obj
    from tcvae.data import Dataset
    from tcvae.train import Trainer, matmul_precision

    cfg = types.SimpleNamespace(batch_size=batch, latents=latents, mlp_width=width, lr=1e-4, estimator=estimator,
                                alpha=1.0, gamma=1.0, precision=precision,
                                anneal=types.SimpleNamespace(beta_warmup_steps=0, dimwise_kl_steps=0),
                                discriminator=types.SimpleNamespace(lr=1e-4, betas=(0.5, 0.9)),
                                capacity=types.SimpleNamespace(max=25.0, steps=100_000))
    stored = np.random.default_rng(0).integers(0, 2, (4 * batch, channels * 4096), dtype=np.uint8)
    data = Dataset("bench", np.packbits(stored, axis=1), (channels, 64, 64), True, None, None, (), (), (),
                   "procedural")
    trainer = Trainer(data, cfg, method=method, beta=4.0, seed=0, arch=arch, device=dev, dataset_size=dataset_size)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    per_call, k = (10 if trainer.device.type == "cuda" else 1), itertools.count(10)

    def steps():
        with mock.patch.object(obj, "log_qz", obj.log_qz_materialised) if materialised else contextlib.nullcontext(), \
                matmul_precision(trainer.precision, trainer.device):
            for _ in range(per_call):
                trainer.step(next(k), False)
        sync()
    return steps, per_call


def train(batch: int = 2048, latents: int = 10, reps: int = 3, device: str = "auto") -> None:
    """log_qz forward+backward by each way this device has, one MLP training step of each method (per
    precision on CUDA), serving a batch from host RAM against from the device, and what one paper-setting
    dSprites run would take: medians of `reps` interleaved repetitions after a warm-up, one process."""
    import torch

    from tcvae import fused
    from tcvae import objectives as obj
    from tcvae.data import Dataset
    from tcvae.train import pick_device, resolve_precision

    dev = pick_device(device, key="--device")
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n = 737_280
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(batch, latents, generator=gen).to(dev).requires_grad_()
    logvar = (torch.randn(batch, latents, generator=gen) - 2).to(dev).requires_grad_()
    z = (mu + (0.5 * logvar).exp() * torch.randn(batch, latents, generator=gen).to(dev)).detach().requires_grad_()

    def estimator(fn):
        def run():
            a, b = fn(z, mu, logvar, n, "mss")
            (a.sum() - b.sum()).backward()
            sync()
        return run

    title = torch.cuda.get_device_name() if cuda else f"cpu, {torch.get_num_threads()} threads"
    table = Table(title=f"tcvae bench train — {title}, B = {batch}, D = {latents}")
    for c in ("what", "time", "ratio"):
        table.add_column(c)
    ways = {"(B, B) slices (the CPU's path)": obj.log_qz_blocked}
    if fused.available(dev):
        ways["fused Triton kernel (CUDA's path)"] = fused.log_qz_fused
    if cuda:
        ways["torch.compile of the materialised formula"] = torch.compile(obj.log_qz_materialised, dynamic=False)
    ways["materialised (B, B, D)"] = obj.log_qz_materialised
    runs = {}
    for name, fn in ways.items():
        try:
            estimator(fn)()                     # warm-up (and compilation)
            runs[name] = estimator(fn)
        except Exception as e:                  # a candidate that fails here is reported, not fatal
            table.add_row(f"log_qz fwd+bwd, {name}", "failed", f"{type(e).__name__}: {str(e)[:60]}")
    t_ways = dict(zip(runs, _interleaved(list(runs.values()), 2 * reps + 1)))
    base = t_ways["materialised (B, B, D)"]
    for name, t in t_ways.items():
        table.add_row(f"log_qz fwd+bwd, {name}", f"{t * 1e3:.2f} ms",
                      "baseline" if name.startswith("materialised") else f"{base / t:.1f}× faster")

    default = resolve_precision("auto", dev)
    variants = {"VAE (β-VAE, β = 1)": ("betavae", "mss", False), "β-TCVAE, MSS": ("tcvae", "mss", False),
                "β-TCVAE, MWS": ("tcvae", "mws", False), "FactorVAE": ("factorvae", "mss", False),
                "β-TCVAE, MSS, materialised log_qz": ("tcvae", "mss", True)}
    steps = {}
    for precision in (["fp32", "tf32", "bf16"] if cuda else [default]):
        for name, (method, est, materialised) in variants.items():
            if precision != default and name in ("β-TCVAE, MWS", "β-TCVAE, MSS, materialised log_qz"):
                continue
            steps[precision, name] = _step_fn(method, est, latents, batch, n, dev, precision, materialised=materialised)
            steps[precision, name][0]()
    per_call = {key: calls for key, (_, calls) in steps.items()}
    times = {key: t / per_call[key] for key, t in zip(steps, _interleaved([fn for fn, _ in steps.values()], reps))}
    for (precision, name), t in times.items():
        vae = times[precision, "VAE (β-VAE, β = 1)"]
        table.add_row(f"train step (MLP 1200, fit's own, batch served), {precision}: {name}", f"{t * 1e3:.1f} ms ({1 / t:.2f}/s)",
                      f"{t / vae:.2f}× a VAE step")

    # serving: full-dSprites-sized bit-packed bytes (random: the gather does not care), batches in the
    # order training uses, from host RAM (unpacked on the CPU, then copied) and from the device
    from tcvae.train import batch_indices
    data = Dataset("bench", np.random.default_rng(0).integers(0, 256, (n, 512), dtype=np.uint8), (1, 64, 64),
                   True, None, None, (), (), (), "procedural")
    serve = {"host RAM": lambda i: data.batch(i, dev)}
    if cuda:
        on_device = data.to(dev)
        serve["device-resident"] = on_device.batch
    k = iter(range(10**9))
    served = {name: (lambda fn=fn: (fn(batch_indices(next(k), n, batch, 0)), sync())) for name, fn in serve.items()}
    for fn in served.values():
        fn()
    t_serve = dict(zip(served, _interleaved(list(served.values()), 5 * reps)))
    for name, t in t_serve.items():
        table.add_row(f"serve a batch of {batch} from {name}", f"{t * 1e3:.2f} ms",
                      f"{t / times[default, 'VAE (β-VAE, β = 1)']:.3f}× a VAE step")
    paper_steps = 50 * (n // batch)     # the paper's 50 epochs of full dSprites (18,000 steps at B = 2048)
    for name in ("VAE (β-VAE, β = 1)", "β-TCVAE, MSS", "FactorVAE"):
        table.add_row(f"paper dSprites run, 50 epochs = {paper_steps:,} steps, {default}: {name}",
                      f"{paper_steps * times[default, name] / 60:.1f} min", "projected: fit's step, serving included")
    console.print(table)


def synthetic_posteriors(factors: np.ndarray, latents: int = 10, seed: int = 0):
    """Posteriors shaped like a trained model's on dSprites: one latent per factor column (means spread
    over ±1.5, σ 0.03–0.13), one mixing two factors, the rest unused (σ ≈ 1)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    n, k = factors.shape
    mu, logvar = torch.randn(n, latents, generator=g) * 0.05, torch.randn(n, latents, generator=g) * 0.05
    f = torch.from_numpy(factors / np.maximum(factors.max(0), 1) * 3 - 1.5).float()
    mu[:, :k] = f + 0.1 * torch.randn(n, k, generator=g)
    logvar[:, :k] = 2 * torch.log(0.03 + 0.1 * torch.rand(n, k, generator=g))
    mu[:, k] = 0.5 * (f[:, 0] + f[:, -1])
    logvar[:, k] = -4.0
    return mu, logvar


def mig(n_samples: int = 10_000, subset: int = 46_080) -> None:
    """MIG at full dSprites size (N = 737,280, D = 10, 4 factors), and fast against brute force on a subset."""
    import torch

    from tcvae.data import dsprites, grid
    from tcvae.metrics import mig as mig_fn

    factors = grid(dsprites.FACTOR_SIZES)[:, 1:]
    mu, logvar = synthetic_posteriors(factors)
    pick = torch.randperm(len(mu), generator=torch.Generator().manual_seed(1))[:subset]
    sub = (mu[pick], logvar[pick], factors[pick.numpy()])
    fast, brute = _interleaved([lambda: mig_fn(*sub, n_samples=n_samples),
                                lambda: mig_fn(*sub, n_samples=n_samples, device="cpu")], 1)
    start = time.perf_counter()
    full = mig_fn(mu, logvar, factors, n_samples=n_samples)
    t_full = time.perf_counter() - start
    table = Table(title=f"tcvae bench mig — cpu, {torch.get_num_threads()} threads, {n_samples:,} samples, D = 10, 4 factors")
    for c in ("what", "time", "note"):
        table.add_column(c)
    table.add_row(f"MIG, full dSprites (N = {len(mu):,})", f"{t_full:.1f} s", f"score {full.score:.3f} (synthetic posteriors)")
    table.add_row(f"MIG, subset N = {subset:,}: windowed exp-space", f"{fast:.1f} s", f"{brute / fast:.1f}× faster")
    table.add_row(f"MIG, subset N = {subset:,}: straightforward chunked", f"{brute:.1f} s", "baseline (device='cpu': every component)")
    console.print(table)


def step_seconds(method: str, arch: str, latents: int, width: int, channels: int, batch: int, device: str = "auto",
                 steps: int = 3, precision: str = "auto") -> float:
    """Median seconds of one training step of `method` on random images of this shape, after a warm-up, in
    the run's precision and with a batch served the way training serves it (from the device on CUDA, from
    RAM on the CPU): what `tcvae sweep plan` multiplies by each run's steps."""
    from tcvae.train import pick_device, resolve_precision

    dev = pick_device(device)
    run, per_call = _step_fn(method, "mss", latents, batch, 10 * batch, dev, resolve_precision(precision, dev),
                             arch=arch, width=width, channels=channels)
    run()
    return _interleaved([run], steps)[0] / per_call


def metrics(seed: int = 0) -> None:
    """DCI, SAP, FactorVAE and β-VAE scores on synthetic posterior means (D = 10) of the default dSprites sub-grid
    (46,080) and of full dSprites (737,280), scoring the 4 factors MIG scores (not shape)."""
    from tcvae import disentanglement as d
    from tcvae.data import dsprites, grid

    table = Table(title="tcvae bench metrics — cpu, synthetic posterior means, D = 10, 4 factors scored (wall, CPU time: score)")
    for c in ("metric", "N = 46,080 (default sub-grid)", "N = 737,280 (full dSprites)"):
        table.add_column(c)
    rows: dict[str, list[str]] = {}
    for sizes in ((3, 6, 10, 16, 16), dsprites.FACTOR_SIZES):
        factors = grid(sizes)
        codes = synthetic_posteriors(factors[:, 1:])[0].numpy()
        runs = {
            "DCI (disentanglement / completeness / informativeness)": (lambda: d.dci(codes, factors[:, 1:], seed=seed),
                                                                     lambda r: f"{r.disentanglement:.3f} / {r.completeness:.3f} / {r.informativeness:.3f}"),
            "SAP": (lambda: d.sap(codes, factors[:, 1:], seed=seed), lambda r: f"{r.score:.3f}"),
            "FactorVAE score": (lambda: d.factorvae_score(codes, factors, sizes, seed=seed, scored=[1, 2, 3, 4]),
                                lambda r: f"{r.score:.3f}"),
            "β-VAE score": (lambda: d.betavae_score(codes, factors, sizes, seed=seed, scored=[1, 2, 3, 4]),
                            lambda r: f"{r.score:.3f}"),
        }
        for name, (run, show) in runs.items():
            cpu = time.process_time()
            result, seconds = _timed(run)
            cpu = time.process_time() - cpu          # on a shared machine, wall time also counts others' load
            rows.setdefault(name, []).append(f"{seconds:.1f} s (CPU {cpu:.1f} s): {show(result)}")
            console.print(f"{name}, N = {len(codes):,}: {seconds:.1f} s wall, {cpu:.1f} s CPU")
            if sizes != dsprites.FACTOR_SIZES and name.startswith("DCI"):
                dci_seconds, dci_inputs = seconds, (codes, factors[:, 1:])
    for name, cells in rows.items():
        table.add_row(name, *cells)
    console.print(table)
    # baseline: the same protocol with sklearn's exact trees (disentanglement_lib's), on the same threads; its time
    # per stage is flat, so a few stages give its time for all 100
    from sklearn.ensemble import GradientBoostingClassifier

    codes, factors = dci_inputs
    train, _ = d._split(len(codes), 10_000, 5_000, np.random.default_rng(seed))
    stages = 3
    fit = lambda j: GradientBoostingClassifier(n_estimators=stages, random_state=0).fit(codes[train], factors[train, j])
    with ThreadPoolExecutor(min(factors.shape[1], os.cpu_count() or 1)) as pool:
        _, baseline = _timed(lambda: list(pool.map(fit, range(factors.shape[1]))))
    baseline *= 100 / stages
    console.print(f"DCI at N = 46,080: {dci_seconds:.1f} s against ≈ {baseline:.0f} s with sklearn's exact trees "
                  f"({stages} of 100 stages timed, same threads): {baseline / dci_seconds:.0f}× faster")


def estimator_cases() -> dict[str, tuple]:
    """The synthetic posteriors of `tcvae bench estimators`, name → (mu, logvar), with what is known of each."""
    import math

    import torch
    from tcvae.data import grid

    n = 20_000
    one = (torch.tensor([0.3, -0.2, 0.1, 0.0] * 2 + [0.5, -0.5]).expand(n, 10).clone(),
           torch.full((n, 10), 2 * math.log(0.5)))
    a = torch.cartesian_prod(*[torch.arange(12) * 0.5] * 4).float()
    factorial = (a, torch.full_like(a, 2 * math.log(0.3)))
    angle = torch.rand(n, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    ring = torch.zeros(n, 10)
    ring[:, 0], ring[:, 1] = torch.cos(angle), torch.sin(angle)
    logvar = torch.full((n, 10), 2 * math.log(0.1))
    logvar[:, 2:] = 0.0                                                   # 8 unused latents, σ = 1 about 0
    return {"identical: 20,000 × one Gaussian, D = 10 (MI = TC = 0)": one,
            "factorial: 12⁴ grid of σ 0.3, D = 4 (TC = 0)": factorial,
            "ring: 20,000 of σ 0.1 on a circle, D = 10 (correlated)": (ring, logvar),
            "dSprites-like: default sub-grid, 46,080, D = 10": synthetic_posteriors(grid((3, 6, 10, 16, 16))[:, 1:])}


def estimators(seed: int = 0) -> None:
    """Each minibatch estimator's TC against the full-data value on the synthetic cases (tcvae.estimator_bias),
    with the study's time per case and one log_qz call's per estimator at B = 1024."""
    import torch
    from tcvae.estimator_bias import study
    from tcvae.figure_data import QUANTITIES
    from tcvae.estimators import ESTIMATORS
    from tcvae.objectives import log_qz

    shown = (64, 256, 1024, 4096)
    table = Table(title="tcvae bench estimators — cpu: TC (nats), minibatch mean ± sd against the full-data value")
    for c in ("case", "estimator", "full data", *(f"B = {b}" for b in shown), "log_qz, B = 1024", "study (wall, CPU)"):
        table.add_column(c)
    for name, (mu, logvar) in estimator_cases().items():
        cpu = time.process_time()
        s, seconds = _timed(lambda: study(mu, logvar, seed=seed))
        cpu = time.process_time() - cpu
        idx = torch.randperm(len(mu), generator=torch.Generator().manual_seed(seed))[:1024]
        z = mu[idx] + torch.exp(0.5 * logvar[idx]) * torch.randn(len(idx), mu.shape[1])
        for e in ESTIMATORS:
            with torch.no_grad():
                call = min(_timed(lambda: log_qz(z, mu[idx], logvar[idx], len(mu), e))[1] for _ in range(3))
            cells = [f"{m:+.3f} ± {sd:.3f}" for m, sd in (s.at(e, b, "tc") for b in shown)]
            table.add_row(name if e == ESTIMATORS[0] else "", e, f"{s.full[QUANTITIES.index('tc')]:+.3f}", *cells, f"{call * 1e3:.0f} ms",
                          f"{seconds:.0f} s ({cpu:.0f} s)" if e == ESTIMATORS[0] else "")
        console.print(f"{name}: {seconds:.1f} s wall, {cpu:.1f} s CPU")
    console.print(table)
