"""Evaluating a trained model on its whole data set: ELBO, MIG (both variants), the KL decomposition, and the
arrays its figures draw (tcvae.figure_data)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from tcvae import disentanglement, estimator_bias, metrics
from tcvae.disentanglement import METRICS
from tcvae.data import Dataset
from tcvae.figure_data import FigureData, attribute_labels, factor_tables, to_uint8
from tcvae.models import VAE
from tcvae.objectives import kl_normal, log_bernoulli
from tcvae.progress import progress
from tcvae.train import autocast, matmul_precision


@torch.no_grad()
def encode(model: VAE, data: Dataset, batch_size: int = 2048, device: str | torch.device = "cpu",
           seed: int = 0, decode: bool = True, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Posterior parameters of every image, mu and logvar (N, D) on `device`, and log p(x|z) (N,) in nats
    for one posterior sample per image (drawn from a generator seeded with `seed`); None without `decode`.
    `precision`: the one the model was trained with (its record's `precision`; see tcvae.train)."""
    model.eval()
    device = torch.device(device)
    n, data = len(data), data.to(device)    # on CUDA the data set moves to the GPU once
    mu, logvar = torch.empty(n, model.latents, device=device), torch.empty(n, model.latents, device=device)
    log_px = torch.empty(n, device=device)
    gen = torch.Generator(device).manual_seed(seed)
    with progress(n, "encode", "img") as advance:
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(start + batch_size, n))
            x = data.batch(idx, device)
            rows = slice(start, start + len(idx))
            with matmul_precision(precision, device), autocast(precision, device):
                m, lv = model.encode(x)
                m, lv = m.float(), lv.float()
                if decode:
                    log_px[rows] = log_bernoulli(model.decode(model.sample(m, lv, gen)).float(), x)
            mu[rows], logvar[rows] = m, lv
            advance(len(idx))
    return mu, logvar, log_px if decode else None


def evaluate(model: VAE, data: Dataset, *, n_samples: int = 10_000, batch_size: int = 2048, n_bins: int = 20,
             active_threshold: float = 0.01, seed: int = 0, device: str | torch.device = "cpu",
             scores: Sequence[str] = METRICS, figures: Any = None,
             precision: str = "fp32", train_batch: int = 0) -> tuple[dict[str, Any], FigureData | None]:
    """Everything `eval.json` holds (`measure`, then `add_cpu_scores`) and, given `figures` (the validated
    `figures` params), what the run's figures draw, with the estimator study (tcvae.estimator_bias) on the run's
    posteriors, `train_batch` marking its training batch size."""
    out, codes, logvar, terms = measure(model, data, n_samples=n_samples, batch_size=batch_size, n_bins=n_bins,
                                        active_threshold=active_threshold, seed=seed, device=device,
                                        precision=precision)
    drawn = None
    if figures is not None:
        drawn = figure_data(model, data, codes, out["kl_per_latent"], figures, device)
        drawn.estimator_bias = estimator_bias.study(codes, logvar, seed=seed, batch_size=train_batch, full=terms)
    return add_cpu_scores(out, codes, data, seed=seed, scores=scores), drawn


def measure(model: VAE, data: Dataset, *, n_samples: int = 10_000, batch_size: int = 2048, n_bins: int = 20,
            active_threshold: float = 0.01, seed: int = 0, device: str | torch.device = "cpu",
            precision: str = "fp32") -> tuple[dict[str, Any], np.ndarray, np.ndarray, dict[str, torch.Tensor]]:
    """The part of `eval.json` computed on the run's device: the full-data ELBO = E log p(x|z) − KL (nats per
    image, KL analytic), the KL decomposition, active units and, where the data set has factors, MIG and
    discrete MIG on its metric factors. On CUDA the posteriors stay on the GPU and the mixtures are evaluated
    there in blocks (tcvae.metrics); on the CPU by the CPU's windowed path. Returns (that dict, the posterior
    means and log-variances (N, D) float32 on the CPU: what `add_cpu_scores`, `figure_data` and the estimator
    study take, and the decomposition's `metrics.full_data_terms` on the CPU: the study's reference)."""
    device = torch.device(device)
    on = None if device.type == "cpu" else device     # tcvae.metrics: None is the CPU's own (windowed) path
    mu, logvar, log_px = encode(model, data, batch_size, device, seed, precision=precision)
    kl_per_latent = kl_normal(mu, logvar)
    kl = kl_per_latent.sum(1)
    out: dict[str, Any] = {
        "n_images": len(data), "elbo": float((log_px - kl).mean()), "log_px": float(log_px.mean()),
        "kl": float(kl.mean()), "kl_per_latent": kl_per_latent.mean(0).tolist(),
        "active_units": metrics.active_units(mu, active_threshold),
    }
    terms = metrics.full_data_terms(mu, logvar, n_samples=n_samples, seed=seed, device=on)
    out["decomposition"] = metrics.KLDecomposition.of(terms, kl.mean()).as_dict()
    if data.factors is not None:
        cols = [data.factor_names.index(name) for name in data.metric_factors]
        factors = data.factors[:, cols]
        out["metric_factors"] = list(data.metric_factors)
        out["mig"] = metrics.mig(mu, logvar, factors, n_samples=n_samples, seed=seed, device=on).as_dict()
        out["mig_discrete"] = metrics.mig_discrete(mu, factors, n_bins=n_bins, device=device).as_dict()
    return out, mu.cpu().numpy(), logvar.cpu().numpy(), {k: v.cpu() for k, v in terms.items()}


def add_cpu_scores(out: dict[str, Any], codes: np.ndarray, data: Dataset, *, seed: int = 0,
                   scores: Sequence[str] = METRICS) -> dict[str, Any]:
    """`out` (from `measure`) with, where the data set has factors, out["scores"]: the `scores` of
    tcvae.disentanglement (DCI, SAP, FactorVAE and β-VAE scores) of the posterior means `codes` (N, D), on the
    CPU. Needs no model and no GPU, so a GPU job runs it beside the next run's training.
    Which protocols could instead run later from a small saved sample: DCI and SAP fit on n_train + n_test
    (10,000 + 5,000) random data points, so those points' codes and factors suffice (the same protocol on
    another random draw: close, not identical numbers); the FactorVAE and β-VAE scores draw their batches by
    factor value from all N images and need every code (full dSprites: 29 MB of float32)."""
    if data.factors is not None:
        out["scores"] = disentanglement.scores(codes, data, seed=seed, which=scores)
    return out


@torch.no_grad()
def figure_data(model: VAE, data: Dataset, mu: np.ndarray, kl_per_latent: list[float], cfg: Any,
                device: str | torch.device = "cpu") -> FigureData:
    """The arrays every figure of this run draws (tcvae.figure_data): traversals of each latent around the
    posterior mean of image `cfg.image`, reconstructions of `cfg.reconstructions` images spread over the data set,
    the latents-against-factors tables and, for data sets with attributes, attribute-named traversals.
    mu: the posterior means (N, D) of the whole data set."""
    model.eval()
    image = min(cfg.image, len(data) - 1)
    offsets = np.linspace(-cfg.traversal_range, cfg.traversal_range, cfg.traversal_steps)
    shown = data.batch(np.linspace(0, len(data) - 1, cfg.reconstructions).astype(int), device)
    recon = torch.sigmoid(model.decode(model.encode(shown)[0]))
    d = FigureData(traversals=_traverse(model, mu[image], range(mu.shape[1]), offsets, device), offsets=offsets,
                   image=image, originals=to_uint8(shown.cpu()), reconstructions=to_uint8(recon.cpu()))
    if data.factors is not None:
        d.factors, d.groups, d.position = factor_tables(mu, data.factors, data.factor_names, data.factor_values)
    if data.attributes is not None:
        best, corr = attribute_labels(mu, data.attributes)
        top = np.argsort(kl_per_latent)[::-1][:cfg.attribute_latents]
        wide = np.linspace(-cfg.attribute_range, cfg.attribute_range, cfg.traversal_steps)
        d.attributes = {"traversals": _traverse(model, mu[image], top, wide, device), "latents": top,
                        "names": [data.attribute_names[best[j]] for j in top], "correlations": corr[top],
                        "range": cfg.attribute_range}
    return d


def _traverse(model: VAE, mu: np.ndarray, latents: Any, offsets: np.ndarray, device: str | torch.device) -> np.ndarray:
    """Decoded images uint8 (len(latents), S, C, H, W): latent j of `mu` (D,) moved by each offset, the rest held."""
    rows = []
    for j in latents:
        z = torch.as_tensor(mu, dtype=torch.float32, device=device).repeat(len(offsets), 1)
        z[:, j] += torch.as_tensor(offsets, dtype=torch.float32, device=device)
        rows.append(to_uint8(torch.sigmoid(model.decode(z)).cpu()))
    return np.stack(rows)
