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
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tcvae import objectives as obj
from tcvae.data import Dataset
from tcvae.errors import UserError
from tcvae.io import atomic_path, load_weights_only
from tcvae.models import VAE, Discriminator
from tcvae.progress import progress
from tcvae.resultfiles import beta_name

# No wall-clock column: history.csv is a DVC output, so it must be a function of the run's inputs (the stage
# records timings apart, in data/timings/).
HISTORY_FIELDS = ["step", "epoch", "loss", "elbo", "log_px", "kl", "mi", "tc", "dimwise_kl", "disc_loss"]


class Diverged(UserError):
    """A loss term became NaN or infinite."""


def pick_device(name: str, key: str = "compute.device") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cpu' / 'cuda' force one. `key` is where the user wrote `name`
    (the params key, or a command's option), for the error when CUDA is asked for and missing."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}: 'cuda', but no CUDA device is available here (use 'auto' or 'cpu')")
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
        checkpoint_every_steps: int | None = None, checkpoint_dir: Path | None = None) -> dict[str, float]:
    """Train and write out/model.pt and out/history.csv; return the last history row. While it runs,
    out/checkpoint.pt holds the latest state (deleted at the end; not a DVC output, since DVC keeps
    stages with persistent outputs out of its run-cache).

    cfg: the validated `train` params (stages.train.TrainParams). record: JSON-able facts stored in
    model.pt beside the weights (the params that made it); a checkpoint made under a different record
    is ignored, not resumed. Checkpoints are written every `checkpoint_minutes` (and every
    `checkpoint_every_steps`, if given) and on Ctrl-C or SIGTERM (what SLURM sends before it kills a cancelled,
    pre-empted or timed-out task), which then end the process as Ctrl-C does. With `checkpoint_dir` the
    checkpoint lives there (a folder a cluster's workers share), named by the run and a hash of `record`."""
    n, b = len(data), cfg.batch_size
    if n < b:
        raise UserError(f"train.batch_size = {b}: larger than the data set ({n} images)")
    steps = total_steps(cfg, n)
    trainer = Trainer(data, cfg, method=method, beta=beta, seed=seed, arch=arch, device=device)
    device, model, opt, disc, disc_opt, noise = (trainer.device, trainer.model, trainer.opt, trainer.disc,
                                                 trainer.disc_opt, trainer.noise)
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    history, ckpt_path = [], out / "checkpoint.pt"
    if checkpoint_dir:      # shared by many runs (and sweeps): the name says whose, the hash which training record
        ckpt_path = Path(checkpoint_dir) / f"{record.get('dataset', 'run')}-{method}-beta{beta_name(beta)}-seed{seed}-{key[:16]}.pt"
        check_writable(ckpt_path.parent, 0)
    start = 0
    check_writable(out, 7 * _bytes(model, disc))  # model.pt, and a checkpoint (weights + Adam's 2) written beside the last
    if ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location=device, weights_only=True)
            if state["key"] == key:
                if not 0 < state["step"] <= steps or not isinstance(state["history"], list):
                    raise ValueError(f"step {state['step']!r} of {steps}")
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                if disc is not None:
                    disc.load_state_dict(state["disc"])
                    disc_opt.load_state_dict(state["disc_optimizer"])
                noise.set_state(state["noise"].cpu())   # generator states are CPU byte tensors, also for CUDA
                start, history = state["step"], state["history"]
                print(f"resuming at step {start:,} of {steps:,} (from {ckpt_path})", file=sys.stderr, flush=True)
        except (torch.OutOfMemoryError, PermissionError):
            raise
        except Exception as e:    # damaged or truncated (any unpickling or loading error): never block reruns
            aside = ckpt_path.with_name(ckpt_path.name + ".damaged")
            os.replace(ckpt_path, aside)
            print(f"warning: {ckpt_path} is damaged ({_first_line(e)}); moved aside to {aside.name}, "
                  f"training starts over", file=sys.stderr, flush=True)
            return fit(data, cfg, method=method, beta=beta, seed=seed, arch=arch, out=out, record=record,
                       device=str(device), checkpoint_minutes=checkpoint_minutes,
                       checkpoint_every_steps=checkpoint_every_steps, checkpoint_dir=checkpoint_dir)   # afresh: the half-loaded model is dropped

    def save_checkpoint(step: int) -> None:
        state = {"key": key, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "noise": noise.get_state(), "history": history}
        if disc is not None:
            state |= {"disc": disc.state_dict(), "disc_optimizer": disc_opt.state_dict()}
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)

    # Divergence is detected without a host sync per step: a device-side flag (all terms finite since the
    # last check, `trainer.finite`) is read on logging steps and before every checkpoint, so no checkpoint
    # holds a NaN.
    checked = start

    def check(done: int, row: dict[str, torch.Tensor]) -> None:
        nonlocal checked
        if not bool(trainer.finite):
            bad = [(k, float(v)) for k, v in row.items() if not math.isfinite(float(v))] or [("a loss term", math.nan)]
            where = f"at step {done}" if done == checked + 1 else f"between steps {checked + 1} and {done}"
            raise Diverged(f"training diverged {where}: {bad[0][0]} = {bad[0][1]}; the last good checkpoint "
                           f"is kept. Lower train.lr or check the data.")
        checked = done

    interrupted = []
    previous = {sig: signal.signal(sig, lambda *_: interrupted.append(True)) for sig in (signal.SIGINT, signal.SIGTERM)}
    last_save = time.monotonic()
    try:
        with progress(steps, f"train {method} β={beta:g} seed {seed}", "step", start=start) as advance, \
                matmul_precision(trainer.precision, device):
            for step in range(start, steps):
                done = step + 1
                log = done % cfg.log_every == 0 or done == steps
                terms = trainer.step(step, log)
                every = checkpoint_every_steps
                save = interrupted or (every and done % every == 0) or time.monotonic() - last_save > 60 * checkpoint_minutes
                if log or save:
                    check(done, terms)
                if log:
                    row = dict(zip(terms, torch.stack(list(terms.values())).tolist()))    # one read-back
                    row |= {"elbo": row["log_px"] - row["kl"], "step": done, "epoch": done / (n // b)}
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    with atomic_path(out / "model.pt") as tmp, open(tmp, "wb") as f:   # a file object: the zip's root is
        torch.save({"state_dict": model.state_dict(), "arch": arch, "latents": cfg.latents,
                    "channels": data.image_shape[0], "width": cfg.mlp_width, "precision": trainer.precision, **record},
                   f)  # a file object: the zip's root is "archive", not the tmp name
    write_history(out / "history.csv", history)
    ckpt_path.unlink(missing_ok=True)   # the run is complete: model.pt is the result, the checkpoint only a means
    return history[-1]


class Trainer:
    """One run's moving parts on one device — the model and its Adam, FactorVAE's discriminator and its Adam,
    the objective's settings, the data's batches and the noise generator — and `step`: the one optimisation
    step that `fit`, `tcvae bench train` and `tcvae sweep plan` all run.

    data: the training set (batches are gathered on the device on CUDA). cfg: the validated `train` params (the
    fields `step` reads: batch_size, latents, mlp_width, lr, estimator, alpha, gamma, anneal, precision,
    discriminator, capacity). dataset_size: N in the estimators' weights, len(data) unless given (the benchmark's
    stand-in data is smaller than the set it stands for)."""

    def __init__(self, data: Dataset, cfg: Any, *, method: str, beta: float, seed: int, arch: str,
                 device: str | torch.device = "auto", dataset_size: int | None = None):
        self.device = pick_device(str(device))
        deterministic()
        torch.manual_seed(seed)
        self.cfg, self.method, self.beta, self.seed = cfg, method, beta, seed
        self.n, self.dataset_size = len(data), dataset_size or len(data)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.batches = data.to(self.device)   # on CUDA the whole data set moves to the GPU once; batches gather there
        fused = {"fused": True} if self.device.type == "cuda" else {}    # one kernel for all of Adam's updates
        self.model = VAE(arch, cfg.latents, data.image_shape[0], cfg.mlp_width).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, **fused)
        self.disc = self.disc_opt = None
        if method == "factorvae":
            self.disc = Discriminator(cfg.latents).to(self.device)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.discriminator.lr,
                                             betas=tuple(cfg.discriminator.betas), **fused)
        self.noise = torch.Generator(self.device).manual_seed(seed)
        self.finite = torch.ones((), dtype=torch.bool, device=self.device)   # every term finite so far
        self._epoch, self._order = None, None

    def indices(self, step: int) -> torch.Tensor:
        """`batch_indices(step, …)` on the device, without a host copy per step: the epoch's permutation is
        drawn on the CPU (the same batches on every device) and copied once an epoch, from pinned memory."""
        b = self.cfg.batch_size
        epoch, k = divmod(step, self.n // b)
        if epoch != self._epoch:
            order = _permutation(self.n, self.seed, epoch)
            self._order = order if self.device.type == "cpu" else order.pin_memory().to(self.device, non_blocking=True)
            self._epoch = epoch
        return self._order[k * b:(k + 1) * b]

    def step(self, step: int, log: bool) -> dict[str, torch.Tensor]:
        """Optimisation step `step` (0-based) on its batch; returns the batch's loss terms as 0-d tensors on the
        device (nats, means over the batch; reading them is the caller's sync), with the MI / TC / dim-wise KL
        decomposition when `log` (always for tcvae, whose loss needs it), and folds their finiteness into
        `self.finite`. The TF32 switch is the caller's (`matmul_precision`); bf16 autocast covers the forward."""
        cfg, method, model, noise, precision = self.cfg, self.method, self.model, self.noise, self.precision
        x, n = self.batches.batch(self.indices(step), self.device), self.dataset_size
        warm = min(1.0, (step + 1) / cfg.anneal.beta_warmup_steps) if cfg.anneal.beta_warmup_steps else 1.0
        ramp = min(1.0, (step + 1) / cfg.anneal.dimwise_kl_steps) if cfg.anneal.dimwise_kl_steps else 1.0
        with autocast(precision, x.device):
            terms = obj.elbo_terms(model, x, n, cfg.estimator, generator=noise, with_qz=method == "tcvae")
            if method == "betavae":
                loss = obj.betavae_loss(terms, self.beta * warm)
            elif method == "tcvae":
                loss = obj.tcvae_loss(terms, cfg.alpha, self.beta * warm, cfg.gamma * ramp)
            elif method == "annealedvae":
                c = obj.capacity(step, cfg.capacity.max, cfg.capacity.steps)
                loss = obj.annealedvae_loss(terms, self.beta * warm, c)
            else:
                tc_estimate = obj.factorvae_tc(self.disc, terms["z"])
                loss = obj.betavae_loss(terms, 1.0) + self.beta * warm * tc_estimate
        row = {"loss": loss.detach(), "log_px": terms["log_px"].detach().mean(),
               "kl": (terms["log_qz_x"] - terms["log_pz"]).detach().mean()}
        if log and method != "tcvae":   # logged for every method, outside the gradient
            with torch.no_grad():
                terms["log_qz"], terms["log_prod_qzj"] = obj.log_qz(terms["z"], terms["mu"], terms["logvar"], n,
                                                                    cfg.estimator)
        if "log_qz" in terms:
            row |= {k: v.detach().mean() for k, v in obj.decomposition(terms).items()}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.disc is not None:
            z = terms["z"].detach()
            with autocast(precision, x.device):
                d_loss = obj.discriminator_loss(self.disc, z, obj.permute_dims(z, noise))
            self.disc_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.disc_opt.step()
            row["disc_loss"] = d_loss.detach()
        self.finite &= torch.isfinite(torch.stack(list(row.values()))).all()
        return row


def deterministic() -> None:
    """Deterministic algorithms (bit-for-bit repeatable runs on the CPU; on CUDA as far as its kernels allow),
    without their NaN fill of every uninitialised allocation (a kernel each on CUDA): every buffer training
    allocates is written before it is read, so the fill changes no result (tests/test_train.py: same weights)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms(True, warn_only=True) less its one other line, which imports
    # torch._inductor (1.7 s of every training process) to set a torch.compile option; nothing here compiles
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" for k, v in r.items()} for r in rows)


def check_writable(out: Path, need: int) -> None:
    """Before step 1, not after hours of training: `out` can be written and has room for `need` bytes."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{out}: cannot write there ({e.strerror or e}); nothing was trained. Fix its permissions "
                        f"or move the data/ folder somewhere writable") from None
    free = shutil.disk_usage(out).free
    if free < need:
        raise UserError(f"{out}: {free / 2**20:,.0f} MiB free, but the model and its checkpoints need about "
                        f"{need / 2**20:,.0f} MiB; nothing was trained. Free some disk space")


def _bytes(*modules: torch.nn.Module | None) -> int:
    return sum(t.numel() * t.element_size() for m in modules if m is not None for t in m.state_dict().values())


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


RECORD_LIMITS = {"latents": (1, 512), "channels": (1, 3), "width": (8, 8192)}    # as TrainParams allows


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[VAE, dict[str, Any]]:
    """A trained VAE (eval mode) and the record saved with it, loaded with weights_only=True. A file that is
    not such a model (damaged, another kind of file, weights that do not fit the recorded architecture) is a
    UserError, checked before any large allocation."""
    saved = load_weights_only(path, device, remedy="delete it and rerun the train stage")
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise _not_a_model(path, f"it holds {type(saved).__name__}, not a dict with a state_dict")
    problems = [] if saved.get("arch") in ("mlp", "conv") else [f"arch {saved.get('arch')!r} (must be mlp or conv)"]
    for name, (lo, hi) in RECORD_LIMITS.items():
        value = saved.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            problems.append(f"{name} {value!r} (must be {lo}–{hi})")
    if problems:
        raise _not_a_model(path, "its record has " + ", ".join(problems))
    weights = saved["state_dict"]
    with torch.device("meta"):      # the shapes the record implies, without allocating them
        expected = {k: tuple(v.shape) for k, v in
                    VAE(saved["arch"], saved["latents"], saved["channels"], saved["width"]).state_dict().items()}
    found = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in weights.items()}
    if found != expected:
        diff = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
        k = diff[0]
        raise _not_a_model(path, f"its weights do not fit its record ({saved['arch']}, {saved['latents']} latents): "
                                 f"{k} is {found.get(k, 'missing')}, expected {expected.get(k, 'no such weight')}")
    model = VAE(saved["arch"], saved["latents"], saved["channels"], saved["width"]).to(device)
    model.load_state_dict(saved.pop("state_dict"))
    return model.eval(), saved


def _not_a_model(path: Path, what: str) -> UserError:
    return UserError(f"{path}: {what}. It is damaged or not a tcvae model: delete it and rerun the train stage")
