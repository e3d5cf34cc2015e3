"""Training: one method on one data set, checkpointed so that an interrupted run resumes bit-for-bit.

Batches are a function of (seed, step) alone — each epoch is a permutation seeded by (seed, epoch) — and
the reparameterisation noise has its own generator whose state travels in the checkpoint with the model,
the optimiser(s) and the history. Rerunning after Ctrl-C or kill -9 therefore ends with the same weights
as a run that was never stopped (on CPU; CUDA kernels need not be bitwise repeatable).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from tcvae import objectives as obj
from tcvae.data import Dataset
from tcvae.errors import UserError
from tcvae.io import atomic_path
from tcvae.models import VAE, Discriminator
from tcvae.progress import progress

HISTORY_FIELDS = ["step", "epoch", "loss", "elbo", "log_px", "kl", "mi", "tc", "dimwise_kl", "disc_loss", "seconds"]


class Diverged(UserError):
    """A loss term became NaN or infinite."""


def pick_device(name: str) -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cpu' / 'cuda' force one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """The arithmetic of the model's matmuls and convolutions: 'fp32', 'tf32' (CUDA's TensorFloat-32
    matrix units: float32 storage, 10-bit mantissa products; on the CPU the same as fp32) or 'bf16'
    (autocast: bfloat16 operands, float32 accumulation; the objective, log q(z) included, stays float32).
    'auto' is fp32 on the CPU (bit-for-bit the results the README reports) and tf32 on CUDA: the usual
    safe pick for training, not yet measured against fp32 and bf16 here (`tcvae bench train --device cuda`)."""
    if name == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    return name


@contextlib.contextmanager
def matmul_precision(name: str, device: torch.device):
    """Within: CUDA float32 matmuls and convolutions in TF32 when `name` is 'tf32', in full float32 otherwise
    (cuDNN's own default is TF32). Nothing changes on the CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
    torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def autocast(name: str, device: torch.device):
    """bf16 autocast for the forward pass when `name` is 'bf16'; otherwise nothing."""
    return torch.autocast(device.type, torch.bfloat16) if name == "bf16" else contextlib.nullcontext()


def batch_indices(step: int, n: int, batch: int, seed: int) -> torch.Tensor:
    """The data indices of optimisation step `step`: epochs are seeded permutations, the tail dropped."""
    epoch, k = divmod(step, n // batch)
    return _permutation(n, seed, epoch)[k * batch:(k + 1) * batch]


@functools.lru_cache(maxsize=1)     # one permutation per epoch, not per step (737,280 indices: ~20 ms on 2 cores)
def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def total_steps(cfg: Any, n: int) -> int:
    return cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * (n // cfg.batch_size))


def fit(data: Dataset, cfg: Any, *, method: str, beta: float, seed: int, arch: str, out: Path,
        record: dict[str, Any], device: str = "auto", checkpoint_minutes: float = 2.0,
        checkpoint_every_steps: int | None = None) -> dict[str, float]:
    """Train and write out/model.pt and out/history.csv; return the last history row. While it runs,
    out/checkpoint.pt holds the latest state (deleted at the end; not a DVC output, since DVC keeps
    stages with persistent outputs out of its run-cache).

    cfg: the validated `train` params (stages.train.TrainParams). record: JSON-able facts stored in
    model.pt beside the weights (the params that made it); a checkpoint made under a different record
    is ignored, not resumed. Checkpoints are written every `checkpoint_minutes` (and every
    `checkpoint_every_steps`, if given) and on Ctrl-C."""
    device = pick_device(device)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    n, b = len(data), cfg.batch_size
    if n < b:
        raise UserError(f"train.batch_size = {b}: larger than the data set ({n} images)")
    steps = total_steps(cfg, n)
    torch.manual_seed(seed)
    precision = resolve_precision(cfg.precision, device)
    batches = data.to(device)           # on CUDA the whole data set moves to the GPU once; batches gather there
    fused = {"fused": True} if device.type == "cuda" else {}    # one kernel for all of Adam's updates
    model = VAE(arch, cfg.latents, data.image_shape[0], cfg.mlp_width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, **fused)
    disc = disc_opt = None
    if method == "factorvae":
        disc = Discriminator(cfg.latents).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.discriminator.lr, betas=tuple(cfg.discriminator.betas),
                                    **fused)
    noise = torch.Generator(device).manual_seed(seed)
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    ckpt_path, history = out / "checkpoint.pt", []
    start = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        if state["key"] == key:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if disc is not None:
                disc.load_state_dict(state["disc"])
                disc_opt.load_state_dict(state["disc_optimizer"])
            noise.set_state(state["noise"].cpu())   # generator states are CPU byte tensors, also for CUDA
            start, history = state["step"], state["history"]

    def save_checkpoint(step: int) -> None:
        state = {"key": key, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "noise": noise.get_state(), "history": history}
        if disc is not None:
            state |= {"disc": disc.state_dict(), "disc_optimizer": disc_opt.state_dict()}
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)

    # Divergence is detected without a host sync per step: a device-side flag (all terms finite since the
    # last check) is read on logging steps and before every checkpoint, so no checkpoint holds a NaN.
    finite, checked = torch.ones((), dtype=torch.bool, device=device), start

    def check(done: int, row: dict[str, torch.Tensor]) -> None:
        nonlocal checked
        if not bool(finite):
            bad = [(k, float(v)) for k, v in row.items() if not math.isfinite(float(v))] or [("a loss term", math.nan)]
            where = f"at step {done}" if done == checked + 1 else f"between steps {checked + 1} and {done}"
            raise Diverged(f"training diverged {where}: {bad[0][0]} = {bad[0][1]}; the last good checkpoint "
                           f"is kept. Lower train.lr or check the data.")
        checked = done

    interrupted = []
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    last_save, t0 = time.monotonic(), time.monotonic()
    try:
        with progress(steps, f"train {method} β={beta:g} seed {seed}", "step") as advance, \
                matmul_precision(precision, device):
            advance(start)
            for step in range(start, steps):
                x = batches.batch(batch_indices(step, n, b, seed), device)
                done = step + 1
                log = done % cfg.log_every == 0 or done == steps
                terms = _step(model, opt, disc, disc_opt, x, n, cfg, method, beta, step, noise, log, precision)
                finite &= torch.isfinite(torch.stack(list(terms.values()))).all()
                every = checkpoint_every_steps
                save = interrupted or (every and done % every == 0) or time.monotonic() - last_save > 60 * checkpoint_minutes
                if log or save:
                    check(done, terms)
                if log:
                    row = dict(zip(terms, torch.stack(list(terms.values())).tolist()))    # one read-back
                    row |= {"elbo": row["log_px"] - row["kl"], "step": done, "epoch": done / (n // b),
                            "seconds": time.monotonic() - t0}
                    history.append({k: row.get(k, float("nan")) for k in HISTORY_FIELDS})
                    advance(1, elbo=row["elbo"], mi=row["mi"], tc=row["tc"], dimwise_kl=row["dimwise_kl"])
                else:
                    advance(1)
                if save:
                    save_checkpoint(done)
                    last_save = time.monotonic()
                    if interrupted:
                        raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": model.state_dict(), "arch": arch, "latents": cfg.latents,
                    "channels": data.image_shape[0], "width": cfg.mlp_width, "precision": precision, **record}, tmp)
    write_history(out / "history.csv", history)
    ckpt_path.unlink(missing_ok=True)   # the run is complete: model.pt is the result, the checkpoint only a means
    return history[-1]


def _step(model, opt, disc, disc_opt, x, n, cfg, method, beta, step, noise, log: bool,
          precision: str = "fp32") -> dict[str, torch.Tensor]:
    """One optimisation step; returns the batch's loss terms as 0-d tensors on the device (nats, means over
    the batch; reading them is the caller's sync), with the MI / TC / dim-wise KL decomposition when `log`
    (always for tcvae, whose loss needs it). `precision`: a resolved one (`resolve_precision`); its
    autocast covers the forward pass, the TF32 switch is the caller's (`matmul_precision`)."""
    warm = min(1.0, (step + 1) / cfg.anneal.beta_warmup_steps) if cfg.anneal.beta_warmup_steps else 1.0
    ramp = min(1.0, (step + 1) / cfg.anneal.dimwise_kl_steps) if cfg.anneal.dimwise_kl_steps else 1.0
    with autocast(precision, x.device):
        terms = obj.elbo_terms(model, x, n, cfg.estimator, generator=noise, with_qz=method == "tcvae")
        if method == "betavae":
            loss = obj.betavae_loss(terms, beta * warm)
        elif method == "tcvae":
            loss = obj.tcvae_loss(terms, cfg.alpha, beta * warm, cfg.gamma * ramp)
        else:
            tc_estimate = obj.factorvae_tc(disc, terms["z"])
            loss = obj.betavae_loss(terms, 1.0) + beta * warm * tc_estimate
    row = {"loss": loss.detach(), "log_px": terms["log_px"].detach().mean(),
           "kl": (terms["log_qz_x"] - terms["log_pz"]).detach().mean()}
    if log and method != "tcvae":   # logged for every method, outside the gradient
        with torch.no_grad():
            terms["log_qz"], terms["log_prod_qzj"] = obj.log_qz(terms["z"], terms["mu"], terms["logvar"], n, cfg.estimator)
    if "log_qz" in terms:
        row |= {k: v.detach().mean() for k, v in obj.decomposition(terms).items()}
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if disc is not None:
        z = terms["z"].detach()
        with autocast(precision, x.device):
            d_loss = obj.discriminator_loss(disc, z, obj.permute_dims(z, noise))
        disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        disc_opt.step()
        row["disc_loss"] = d_loss.detach()
    return row


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" for k, v in r.items()} for r in rows)


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[VAE, dict[str, Any]]:
    """A trained VAE (eval mode) and the record saved with it, loaded with weights_only=True."""
    saved = torch.load(path, map_location=device, weights_only=True)
    model = VAE(saved["arch"], saved["latents"], saved["channels"], saved["width"]).to(device)
    model.load_state_dict(saved.pop("state_dict"))
    return model.eval(), saved
