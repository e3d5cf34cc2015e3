"""Evaluating a trained model on its whole data set: ELBO, MIG (both variants), the KL decomposition."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tcvae import metrics
from tcvae.data import Dataset
from tcvae.models import VAE
from tcvae.objectives import kl_normal, log_bernoulli
from tcvae.progress import progress
from tcvae.train import autocast, matmul_precision


@torch.no_grad()
def encode(model: VAE, data: Dataset, batch_size: int = 2048, device: str | torch.device = "cpu",
           seed: int = 0, decode: bool = True, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Posterior parameters of every image, mu and logvar (N, D) on the CPU, and log p(x|z) (N,) in nats
    for one posterior sample per image (drawn from a generator seeded with `seed`); None without `decode`.
    `precision`: the one the model was trained with (its record's `precision`; see tcvae.train)."""
    model.eval()
    device = torch.device(device)
    n, data = len(data), data.to(device)    # on CUDA the data set moves to the GPU once
    mu, logvar, log_px = torch.empty(n, model.latents), torch.empty(n, model.latents), torch.empty(n)
    gen = torch.Generator(device).manual_seed(seed)
    with progress(n, "encode", "img") as advance:
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(start + batch_size, n))
            x = data.batch(idx, device)
            with matmul_precision(precision, device), autocast(precision, device):
                m, lv = model.encode(x)
                m, lv = m.float(), lv.float()
                if decode:
                    log_px[idx] = log_bernoulli(model.decode(model.sample(m, lv, gen)).float(), x).cpu()
            mu[idx], logvar[idx] = m.cpu(), lv.cpu()
            advance(len(idx))
    return mu, logvar, log_px if decode else None


def evaluate(model: VAE, data: Dataset, *, n_samples: int = 10_000, batch_size: int = 2048, n_bins: int = 20,
             active_threshold: float = 0.01, seed: int = 0, device: str | torch.device = "cpu",
             precision: str = "fp32") -> dict[str, Any]:
    """Everything `eval.json` holds: the full-data ELBO = E log p(x|z) − KL (nats per image, KL analytic),
    the KL decomposition, active units and, where the data set has factors, MIG on its metric factors."""
    mu, logvar, log_px = encode(model, data, batch_size, device, seed, precision=precision)
    kl_per_latent = kl_normal(mu, logvar)
    kl = kl_per_latent.sum(1)
    out: dict[str, Any] = {
        "n_images": len(data), "elbo": float((log_px - kl).mean()), "log_px": float(log_px.mean()),
        "kl": float(kl.mean()), "kl_per_latent": kl_per_latent.mean(0).tolist(),
        "active_units": metrics.active_units(mu, active_threshold),
        "decomposition": metrics.kl_decomposition(mu, logvar, n_samples=n_samples, seed=seed).as_dict(),
    }
    if data.factors is not None:
        cols = [data.factor_names.index(name) for name in data.metric_factors]
        factors = data.factors[:, cols]
        out["metric_factors"] = list(data.metric_factors)
        out["mig"] = metrics.mig(mu, logvar, factors, n_samples=n_samples, seed=seed).as_dict()
        out["mig_discrete"] = metrics.mig_discrete(mu.numpy(), factors, n_bins=n_bins).as_dict()
    return out
