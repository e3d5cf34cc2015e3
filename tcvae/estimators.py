"""The minibatch estimators of log q(z): their importance weights and the constants both log q(z) paths share.

The CPU's blocked path (`tcvae.objectives`) and CUDA's fused kernel (`tcvae.fused`) both import this module and
nothing of each other, so the weights are written once. Notation as in Chen et al. (2018): N data points, a
minibatch of B, M = B − 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

LOG_2PI = math.log(2 * math.pi)
Estimator = Literal["mss", "mws", "esmaeili"]
ESTIMATORS: tuple[Estimator, ...] = ("mss", "mws", "esmaeili")
# Exponents are clamped at −87 (exp(−87) ≈ 1.6e-38, near the smallest normal float32): arithmetic on
# denormals is 10× slower, and what changes (< 1e-38 per pair) is nothing beside a row's own term.
MAX_SQ = 87.0


def importance_weights(batch: int, dataset_size: int, estimator: Estimator) -> tuple[float, float, float]:
    """Weights (own, next, rest) with which row i of a minibatch weighs q(z_i | n_j) to estimate q(z_i):
    `own` for j = i, `next` for j = i + 1 (cyclically), `rest` for every other j; each row sums to 1.

    mws: all 1/B (the paper's minibatch weighted sampling without its constant −log N offset).
    mss (minibatch stratified sampling, Chen et al. App. C.2), M = B − 1: 1/N, (N − M)/(N·M), 1/M.
    esmaeili (Esmaeili et al. 2019, "Structured Disentangled Representations", their minibatch estimate of
    q(z) in the HFVAE objective's batch approximation): q(z_i) ≈ (1/N)·q(z_i|n_i) + (N − 1)/(N·M)·Σ_{j≠i} q(z_i|n_j), i.e.
    1/N, (N − 1)/(N·M), (N − 1)/(N·M): the own component at its true weight, the other M standing in for the
    other N − 1 data points, unbiased for q(z_i) when the batch is drawn without replacement, exact at B = N."""
    if estimator == "mws":
        return 1 / batch, 1 / batch, 1 / batch
    n, m = dataset_size, batch - 1
    if n < batch:
        raise ValueError(f"dataset_size {n} is smaller than the batch {batch}")
    if estimator == "esmaeili":
        return 1 / n, (n - 1) / (n * m), (n - 1) / (n * m)
    return 1 / n, (n - m) / (n * m), 1 / m


def weight_matrix(batch: int, dataset_size: int, estimator: Estimator) -> torch.Tensor:
    """The (B, B) matrix of `importance_weights`, float64."""
    own, nxt, rest = importance_weights(batch, dataset_size, estimator)
    w = torch.full((batch, batch), rest, dtype=torch.float64)
    i = torch.arange(batch)
    w[i, (i + 1) % batch] = nxt
    w[i, i] = own
    return w
