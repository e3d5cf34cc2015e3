"""How wrong is the minibatch TC? Each estimator of log q(z) measured against the full-data values.

β-TCVAE trains on minibatch estimates of log q(z) and log ∏_j q(z_j) (`tcvae.estimators`), and through them of
the index-code MI, the total correlation and the dimension-wise KL (Chen et al. 2018, eq. 2). For posteriors
mu, logvar (N, D) this module draws minibatches of each size B (uniform, without replacement, as
training does), one posterior sample per member, and records the mean and the spread over minibatches of each
batch-averaged quantity, for every estimator on the same minibatches. The reference is the full-data value:
every sample against all N posteriors (`tcvae.metrics.full_data_terms`, what `kl_decomposition` reports).
A log of an unbiased estimate of q(z) is biased low (Jensen), so every estimator's TC is biased at small B; the
study shows by how much, and how large B must be on these posteriors. All values are nats per sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from tcvae.estimators import ESTIMATORS
from tcvae.figure_data import BATCHES, QUANTITIES, BiasStudy
from tcvae.metrics import full_data_terms
from tcvae.objectives import decomposition, log_normal, log_qz

REPEATS = 16    # minibatches per batch size up to B = 256; fewer above (cost ∝ B²: `repeats_at`), never under 2


def repeats_at(batch: int, repeats: int = REPEATS) -> int:
    """Minibatches drawn at batch size `batch`: `repeats` up to B = 256, then ∝ 1/B² (each costs B²·D), at least 2."""
    return max(2, min(repeats, round(repeats * (256 / batch) ** 2)))


def _quantities(terms: dict[str, torch.Tensor]) -> np.ndarray:
    """The (Q,) batch means of QUANTITIES from per-sample terms (log_qz_x, log_qz, log_prod_qzj, log_pz)."""
    parts = decomposition(terms)
    return np.array([float(terms["log_qz"].double().mean()), float(terms["log_prod_qzj"].double().mean()),
                     *(float(parts[k].double().mean()) for k in ("mi", "tc", "dimwise_kl"))])


@torch.no_grad()
def study(mu, logvar, *, batches: Sequence[int] = BATCHES, estimators: Sequence[str] = ESTIMATORS,
          repeats: int = REPEATS, n_samples: int = 10_000, seed: int = 0, batch_size: int = 0,
          full: dict[str, torch.Tensor] | None = None) -> BiasStudy:
    """The study for posteriors mu, logvar (N, D) (tensors or arrays; float64 stays float64), `repeats_at(B,
    repeats)` minibatches at each B. Minibatches are shared by all estimators, so their differences are not
    sampling noise; `seed` fixes everything. `batch_size`: the run's training batch, recorded for the figure.
    `full`: the reference, `full_data_terms(mu, logvar, n_samples=…, seed=…)` where the caller has it already
    (evaluate's KL decomposition: the costliest part, computed once); computed here when None."""
    mu, logvar = torch.as_tensor(np.asarray(mu)), torch.as_tensor(np.asarray(logvar))
    if not mu.is_floating_point():
        mu, logvar = mu.float(), logvar.float()
    n = len(mu)
    g = torch.Generator().manual_seed(seed)
    shape = (len(estimators), len(batches), len(QUANTITIES))
    mean, std = np.full(shape, np.nan), np.full(shape, np.nan)
    counts = np.zeros(len(batches), dtype=np.int64)
    for k, b in enumerate(batches):
        if not 2 <= b <= n:
            continue
        counts[k] = repeats_at(b, repeats)
        values = np.empty((len(estimators), counts[k], len(QUANTITIES)))
        for r in range(counts[k]):
            idx = torch.randperm(n, generator=g)[:b]
            m, lv = mu[idx], logvar[idx]
            z = m + torch.exp(0.5 * lv) * torch.randn(m.shape, generator=g, dtype=m.dtype)
            terms = {"log_qz_x": log_normal(z, m, lv).sum(1), "log_pz": log_normal(z, torch.zeros(()), torch.zeros(())).sum(1)}
            for e, estimator in enumerate(estimators):
                terms["log_qz"], terms["log_prod_qzj"] = log_qz(z, m, lv, n, estimator)
                values[e, r] = _quantities(terms)
        mean[:, k], std[:, k] = values.mean(1), values.std(1, ddof=1)
    if full is None:
        full = full_data_terms(mu, logvar, n_samples=n_samples, seed=seed)
    return BiasStudy(tuple(estimators), np.asarray(batches, dtype=np.int64), counts, mean, std, _quantities(full), n,
                     batch_size)
