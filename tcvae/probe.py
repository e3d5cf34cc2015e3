"""The GPU job's probe (stages.gpu_job): what this device does at one run's shape, measured in well under 60 s
before any run is planned from it.

- the fused log q(z) kernel (CUDA with Triton only): forward and forward + backward at a few tile choices (and
  warp counts, where tcvae.fused has them), each checked against the materialised (B, B, D) way first;
- training steps per second of the VAE (β-VAE's loss) and of β-TCVAE in fp32, tf32 and bf16, stepped as `fit`
  steps them (deterministic mode on, batches gathered on the device, no sync but the last);
- whether two runs at once on the one device train faster together than one after the other.

Times are wall seconds (ms where named so); on the CPU the fused kernel is skipped with its reason.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

CHOICES = [(8, 8, 4), (8, 8, 2), (16, 16, 4), (16, 16, 8), (8, 16, 4), (16, 32, 8)]   # fused.Tiles (rows, cols, warps);
                                                                                      # 32×32 tiles spill


@dataclass(frozen=True)
class Shape:
    """One run's shape: batch B, latents D, MLP width, images per epoch N, one channel of 64×64."""
    batch: int
    latents: int
    width: int
    n: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def fused_kernel(shape: Shape, device: torch.device) -> dict[str, Any]:
    """Fused log q(z) forward and forward + backward (ms) per tile choice, each first checked against the
    materialised way (largest relative difference of values and gradients); the fastest correct choice."""
    from tcvae import fused
    from tcvae import objectives as obj

    if not (device.type == "cuda" and fused.available(device)):
        return {"skipped": "needs CUDA and Triton" if device.type != "cuda" else "Triton is missing"}
    g = torch.Generator(device=device).manual_seed(0)
    b, d = shape.batch, shape.latents
    mu = torch.randn(b, d, device=device, generator=g)
    lv = torch.randn(b, d, device=device, generator=g) - 2
    z = mu + (0.5 * lv).exp() * torch.randn(b, d, device=device, generator=g)

    def both(fn):
        inputs = [t.clone().requires_grad_() for t in (z, mu, lv)]
        joint, marg = fn(*inputs, shape.n, "mss")
        (joint.sum() - 0.5 * marg.sum()).backward()
        return [joint.detach(), marg.detach(), *(t.grad for t in inputs)]

    reference = both(obj.log_qz_materialised)
    out: dict[str, Any] = {"batch": b, "latents": d,
                           "materialised_fwd_bwd_ms": 1e3 * _median_seconds(lambda: both(obj.log_qz_materialised), device, 5),
                           "choices": []}
    for rows, cols, warps in CHOICES:
        tiles = fused.Tiles(rows, cols, warps)
        row: dict[str, Any] = {"block_i": rows, "block_j": cols, "warps": warps}
        run = lambda *a: fused.log_qz_fused(*a, tiles=tiles)      # noqa: E731
        try:
            got = both(run)
            row["max_rel_diff"] = max(float(((a - r).abs() / (r.abs() + 1e-6)).max()) for a, r in zip(got, reference))
            row["fwd_ms"] = 1e3 * _median_seconds(lambda: run(z, mu, lv, shape.n), device, 20)
            row["fwd_bwd_ms"] = 1e3 * _median_seconds(lambda: both(run), device, 20)
        except Exception as e:      # a choice that does not compile or run is a finding, not a failure
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        out["choices"].append(row)
    good = [c for c in out["choices"] if c.get("max_rel_diff", math.inf) < 1e-3]
    out["best"] = min(good, key=lambda c: c["fwd_bwd_ms"]) if good else None
    return out


def _fit_like_steps(method: str, precision: str, shape: Shape, device: torch.device, steps: int) -> float:
    """Seconds per training step of `method` ("vae": β-VAE's loss, or "tcvae"), stepped by `fit`'s own step
    (tcvae.bench's timing of tcvae.train.Trainer: deterministic mode, batches served on the device, one sync per
    call), after a warm-up."""
    from tcvae.bench import _step_fn

    run, per_call = _step_fn("tcvae" if method == "tcvae" else "betavae", "mss", shape.latents, shape.batch, shape.n,
                             device, precision, width=shape.width)
    run()                       # warm-up: kernels compiled, allocator filled
    calls = max(1, steps // per_call)
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / (calls * per_call)


def step_rates(shape: Shape, device: torch.device, steps: int) -> dict[str, dict[str, float]]:
    """{method: {precision: seconds per step}} for the VAE and β-TCVAE; on the CPU fp32 alone (its runs' precision:
    tf32 is fp32 there, and bf16 is no CPU speed-up)."""
    precisions = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32"]
    return {method: {p: _fit_like_steps(method, p, shape, device, steps) for p in precisions}
            for method in ("vae", "tcvae")}


def concurrency(shape: Shape, device: torch.device, precision: str, seconds_per_step: float,
                seconds: float = 6.0) -> dict[str, Any]:
    """Steps per second of two β-TCVAE runs at once (two processes on the one device), against one alone
    (`seconds_per_step`): 2 runs at a time if together they are ≥ 15 % faster, else 1. CUDA only: on the CPU
    the runs share its cores, so one at a time."""
    if device.type != "cuda":
        return {"parallel": 1, "why": "CPU: runs share its cores"}
    steps = max(5, int(seconds / max(seconds_per_step, 1e-4) / 2))
    code = (f"import torch, tcvae.probe as p; s = p.Shape({shape.batch}, {shape.latents}, {shape.width}, {shape.n}); "
            f"print(p._fit_like_steps('tcvae', '{precision}', s, torch.device('cuda'), {steps}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        per_step = [float(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in procs]
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        for p in procs:
            p.kill()
        return {"parallel": 1, "why": f"the two-run check failed ({type(e).__name__})"}
    together = sum(1 / s for s in per_step)           # steps per second of both runs together
    speedup = together * seconds_per_step
    return {"parallel": 2 if speedup >= 1.15 else 1, "two_at_once_speedup": round(speedup, 3),
            "seconds_per_step_each": per_step}


def probe(shape: Shape, device: torch.device, precision: str, steps: int = 20,
          save: Callable[[dict[str, Any]], None] = lambda result: None) -> dict[str, Any]:
    """Everything above, as one JSON-able dict (probe.json); `precision` is the runs' resolved one. `save` is
    called with the result so far after each part, so that a probe stopped at its time limit still tells."""
    start = time.perf_counter()
    out: dict[str, Any] = {"device": device.type, "precision": precision, "torch": torch.__version__,
                           "cuda": torch.version.cuda, "shape": shape.__dict__}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
        out["capability"] = list(torch.cuda.get_device_capability(device))
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    out["seconds_per_step"] = rates = step_rates(shape, device, steps)     # first: what the estimates need
    base = rates["vae"].get(precision, rates["vae"]["fp32"])
    tc = rates["tcvae"].get(precision, rates["tcvae"]["fp32"])
    out["tcvae_over_vae"] = round(tc / base, 3)
    out["seconds"] = round(time.perf_counter() - start, 2)
    save(out)
    out["concurrency"] = concurrency(shape, device, precision, tc)
    out["seconds"] = round(time.perf_counter() - start, 2)
    save(out)
    out["fused_log_qz"] = fused_kernel(shape, device)
    out["seconds"] = round(time.perf_counter() - start, 2)
    save(out)
    return out
