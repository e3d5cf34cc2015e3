"""Disentanglement metrics and the KL decomposition, estimated the way Chen et al. (2018) did.

Every density is a mixture of the data set's Gaussian posteriors q(z|n), so every entropy is estimated
from posterior samples against such a mixture. In one dimension only components within ±WINDOW
standard deviations can matter; sorting components by mean makes those a contiguous slice, which
`log_mixture_1d` evaluates instead of all N (the result agrees with `log_mixture_1d_brute`, tested).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from tcvae.estimators import LOG_2PI, MAX_SQ
from tcvae.objectives import kl_normal, log_normal

WINDOW = 14.0            # neglected components lie beyond 14 σ: each weighs < e^-98 of its peak
ROWS, COLS = 128, 8192   # a (samples × components) block: 4 MiB, stays in cache


def _as_tensor(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dtype)


def log_mixture_1d_brute(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """log (1/N) Σ_n N(z_s; mu_n, exp(logvar_n)) for samples z (S,) and components (N,): (S,) nats.
    The straightforward way: every sample against every component, `chunk` samples at a time."""
    out = torch.empty(len(z), dtype=z.dtype)
    for start in range(0, len(z), chunk):
        ld = log_normal(z[start:start + chunk, None], mu[None], logvar[None])
        out[start:start + chunk] = torch.logsumexp(ld, dim=1)
    return out - math.log(len(mu))


def log_mixture_1d(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Same as `log_mixture_1d_brute`, fast: in exp-space, in cache-sized blocks summed by BLAS, visiting
    only components within WINDOW σ of each block of sorted samples.

    With s_n = sqrt(exp(−logvar_n)/2), t = (z − mu_n)·s_n and a_n = −(log 2π + logvar_n)/2, each density is
    exp(a_n)·exp(−t²); exp(a_n − max a) ≤ 1 is a column factor, so nothing overflows. Components are grouped
    by σ (powers of 2) and sorted by mean within a group; for samples in [lo, hi] the group's components
    with means in [lo − WINDOW·σmax, hi + WINDOW·σmax] are a contiguous slice. Samples whose sum stays
    below 1e-20 (far outside the data) are recomputed exactly in log-space."""
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    order = torch.argsort(z)
    zs = z[order]
    scale, a = torch.exp(-0.5 * logvar) * math.sqrt(0.5), -0.5 * (LOG_2PI + logvar)
    shift = a.max()
    factor, sigma = torch.exp(a - shift), torch.exp(0.5 * logvar)
    group = torch.floor(torch.log2(sigma)).long()
    total = torch.zeros_like(zs)
    buffer = torch.empty(ROWS * COLS)
    for g in torch.unique(group):
        members = torch.nonzero(group == g).squeeze(1)
        m_sorted, idx = torch.sort(mu[members])
        s_g, c_g = scale[members][idx], factor[members][idx]
        offset, reach = -m_sorted * s_g, WINDOW * float(sigma[members].max())
        for r0 in range(0, len(zs), ROWS):
            zr = zs[r0:r0 + ROWS]
            lo = int(torch.searchsorted(m_sorted, zr[:1] - reach))
            hi = int(torch.searchsorted(m_sorted, zr[-1:] + reach, right=True))
            for c0 in range(lo, hi, COLS):
                c1 = min(c0 + COLS, hi)
                block = buffer[:len(zr) * (c1 - c0)].view(len(zr), c1 - c0)
                torch.addcmul(offset[c0:c1], zr[:, None], s_g[None, c0:c1], out=block)        # t
                block.square_().clamp_(max=MAX_SQ).neg_().exp_()                             # exp(−t²)
                total[r0:r0 + ROWS].addmv_(block, c_g[c0:c1])
    far = torch.nonzero(total < 1e-20).squeeze(1)     # far from every component (no posterior sample is):
    result = total.log() + shift - math.log(len(mu))
    if len(far):                                        # recompute exactly in log-space
        result[far] = log_mixture_1d_brute(zs[far], mu, logvar)
    out = torch.empty_like(result)
    out[order] = result
    return out


def _sample(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n_samples data points drawn uniformly without replacement (all if fewer), one posterior sample each.
    Returns (indices (S,), z (S, D))."""
    g = torch.Generator().manual_seed(seed)
    n = len(mu)
    idx = torch.randperm(n, generator=g)[:n_samples] if n > n_samples else torch.arange(n)
    eps = torch.randn(len(idx), mu.shape[1], generator=g)
    return idx, mu[idx] + torch.exp(0.5 * logvar[idx]) * eps


@dataclass
class MIGResult:
    """The paper's MIG. score: mean over factors of the normalised gap; per_factor (K,); mutual_info
    (K, D) nats; factor_entropy (K,) nats; marginal_entropy (D,) nats."""
    score: float
    per_factor: list[float]
    mutual_info: list[list[float]]
    factor_entropy: list[float]
    marginal_entropy: list[float]
    n_samples: int
    variant: str = "mig (Chen et al. 2018: posterior samples, mixtures of all N posteriors)"

    def as_dict(self) -> dict:
        return asdict(self)


def factor_entropy(factors: np.ndarray) -> np.ndarray:
    """Empirical entropy of each factor column (nats): log |V_k| on a full grid."""
    out = []
    for column in np.asarray(factors).T:
        p = np.unique(column, return_counts=True)[1] / len(column)
        out.append(float(-(p * np.log(p)).sum()))
    return np.array(out)


def mig(mu, logvar, factors, *, n_samples: int = 10_000, seed: int = 0, brute: bool = False) -> MIGResult:
    """Mutual information gap (Chen et al. 2018, eq. 6) of posteriors mu, logvar (N, D) against factors
    int (N, K), one column per scored factor.

    One posterior sample for each of `n_samples` random data points; H(z_j) against the mixture of all N
    posteriors, H(z_j | v_k) against the posteriors sharing the sample's value of v_k; I = H(z_j) − H(z_j|v_k)
    clamped at 0, sorted, top-1 minus top-2, divided by H(v_k), averaged over factors. `brute` evaluates
    every mixture component (the reference the fast path is tested against)."""
    mu, logvar = _as_tensor(mu), _as_tensor(logvar)
    factors = np.asarray(factors)
    mix = log_mixture_1d_brute if brute else log_mixture_1d
    idx, z = _sample(mu, logvar, n_samples, seed)
    dims, k = mu.shape[1], factors.shape[1]
    marginal = torch.stack([mix(z[:, j], mu[:, j], logvar[:, j]) for j in range(dims)], 1)   # (S, D)
    h_z = -marginal.mean(0)
    mi = torch.zeros(k, dims)
    sample_values = factors[idx.numpy()]
    for f in range(k):
        conditional = torch.empty_like(marginal)
        for v in np.unique(factors[:, f]):
            members = torch.from_numpy(np.flatnonzero(factors[:, f] == v))
            rows = torch.from_numpy(np.flatnonzero(sample_values[:, f] == v))
            if len(rows) == 0:
                continue
            for j in range(dims):
                conditional[rows, j] = mix(z[rows, j], mu[members, j], logvar[members, j])
        mi[f] = (h_z + conditional.mean(0)).clamp(min=0)          # H(z_j) − H(z_j | v_k)
    h_v = torch.from_numpy(factor_entropy(factors)).float()
    top = mi.sort(dim=1, descending=True).values
    gaps = (top[:, 0] - (top[:, 1] if dims > 1 else 0)) / h_v
    return MIGResult(float(gaps.mean()), gaps.tolist(), mi.tolist(), h_v.tolist(), h_z.tolist(), len(idx))


CAPTURED_THRESHOLD = 0.2   # normalised MI I(z_j; v_k) / H(v_k) a factor's own latent must reach


def factors_captured(mutual_info, factor_entropy, threshold: float = CAPTURED_THRESHOLD) -> list[int | None]:
    """Which factors have a latent of their own: for each factor k, its most informative latent j (mutual_info
    (K, D) nats, factor_entropy (K,) nats, as MIGResult holds them), provided I(z_j; v_k) / H(v_k) ≥ `threshold`
    and j is not also the most informative latent of another factor; else None. MIG scores a factor's gap
    between its two best latents, so one latent serving two factors can score well: this says it did not."""
    mi = np.asarray(mutual_info, dtype=np.float64)
    best = mi.argmax(1)
    own = []
    for k, j in enumerate(best):
        shared = np.count_nonzero(best == j) > 1
        own.append(None if shared or mi[k, j] < threshold * factor_entropy[k] else int(j))
    return own


@dataclass
class DiscreteMIGResult:
    """disentanglement_lib's MIG: codes binned per dimension, plug-in MI, normalised by H(v_k)."""
    score: float
    per_factor: list[float]
    mutual_info: list[list[float]]
    n_bins: int
    variant: str = "mig_discrete (disentanglement_lib: means in equal-width bins, plug-in MI)"

    def as_dict(self) -> dict:
        return asdict(self)


def mig_discrete(codes, factors, *, n_bins: int = 20) -> DiscreteMIGResult:
    """MIG of codes (N, D) (e.g. posterior means), each dimension cut into `n_bins` equal-width bins,
    against factors int (N, K); plug-in mutual information in nats, normalised by each factor's entropy."""
    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    binned = []
    for column in codes.T:
        edges = np.histogram_bin_edges(column, n_bins)
        binned.append(np.digitize(column, edges[1:-1]))
    mi = np.array([[_plugin_mi(c, f) for c in binned] for f in factors.T])           # (K, D)
    h_v = factor_entropy(factors)
    top = -np.sort(-mi, axis=1)
    gaps = (top[:, 0] - (top[:, 1] if mi.shape[1] > 1 else 0)) / h_v
    return DiscreteMIGResult(float(gaps.mean()), gaps.tolist(), mi.tolist(), n_bins)


def _plugin_mi(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats from the empirical joint of two integer arrays."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def log_mixture_joint(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log (1/N) Σ_n N(z_s; mu_n, diag exp(logvar_n)) for samples z (S, D) and components (N, D): (S,) nats.

    The quadratic form Σ_d (z_d − mu_nd)²·p_nd = z²·p − 2 z·(mu p) + mu²·p is two float64 matmuls per
    (ROWS × COLS) tile, so no (S, N, D) array is formed; tiles are combined by a running log-sum-exp."""
    prec = torch.exp(-logvar.double())
    weighted, const = mu.double() * prec, (LOG_2PI + logvar.double() + mu.double() ** 2 * prec).sum(1)
    out = torch.full((len(z),), -math.inf, dtype=torch.float64)
    for r0 in range(0, len(z), ROWS):
        zr = z[r0:r0 + ROWS].double()
        for c0 in range(0, len(mu), COLS):
            quad = torch.addmm(const[None, c0:c0 + COLS], zr ** 2, prec[c0:c0 + COLS].T)
            quad.addmm_(zr, weighted[c0:c0 + COLS].T, alpha=-2)
            out[r0:r0 + ROWS] = torch.logaddexp(out[r0:r0 + ROWS], torch.logsumexp(quad.mul_(-0.5), dim=1))
    return (out - math.log(len(mu))).float()


@dataclass
class KLDecomposition:
    """E_n KL(q(z|n) ‖ p(z)) = index-code MI + total correlation + dimension-wise KL (Chen et al. eq. 2), nats.
    `kl` is analytic; the three terms are Monte Carlo estimates over the aggregate posterior."""
    mutual_info: float
    total_correlation: float
    dimwise_kl: float
    kl: float
    n_samples: int

    def as_dict(self) -> dict:
        return asdict(self)


def kl_decomposition(mu, logvar, *, n_samples: int = 10_000, seed: int = 0) -> KLDecomposition:
    """The decomposition for posteriors mu, logvar (N, D) over the whole data set: one posterior sample for
    each of `n_samples` random data points; log q(z) against the joint mixture of all N posteriors,
    log q(z_j) against each dimension's mixture."""
    mu, logvar = _as_tensor(mu), _as_tensor(logvar)
    t = full_data_terms(mu, logvar, n_samples=n_samples, seed=seed)
    kl = kl_normal(mu, logvar).sum(1).mean()
    return KLDecomposition(float((t["log_qz_x"] - t["log_qz"]).mean()), float((t["log_qz"] - t["log_prod_qzj"]).mean()),
                           float((t["log_prod_qzj"] - t["log_pz"]).mean()), float(kl), len(t["log_qz"]))


def full_data_terms(mu, logvar, *, n_samples: int = 10_000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-sample (S,) log q(z|n), log q(z), log ∏_j q(z_j), log p(z) in nats for one posterior sample of each
    of S = min(n_samples, N) random data points, every density against all N posteriors of mu, logvar (N, D);
    and those samples, z (S, D)."""
    mu, logvar = _as_tensor(mu), _as_tensor(logvar)
    idx, z = _sample(mu, logvar, n_samples, seed)
    log_qzj = torch.stack([log_mixture_1d(z[:, j], mu[:, j], logvar[:, j]) for j in range(mu.shape[1])], 1)
    return {"log_qz_x": log_normal(z, mu[idx], logvar[idx]).sum(1), "log_qz": log_mixture_joint(z, mu, logvar),
            "log_prod_qzj": log_qzj.sum(1), "log_pz": log_normal(z, torch.zeros(()), torch.zeros(())).sum(1), "z": z}


def active_units(mu, threshold: float = 0.01) -> int:
    """Latents whose posterior mean varies across the data: Var_n(mu_nj) > threshold (Burda et al. 2016)."""
    return int((_as_tensor(mu).var(0) > threshold).sum())
