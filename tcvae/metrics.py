"""Disentanglement metrics and the KL decomposition, estimated the way Chen et al. (2018) did.

Every density is a mixture of the data set's Gaussian posteriors q(z|n), so every entropy is estimated
from posterior samples against such a mixture. In one dimension only components within ±WINDOW
standard deviations can matter; sorting components by mean makes those a contiguous slice, which
`log_mixture_1d` evaluates instead of all N: the CPU's path. On a GPU (any `device` given) every component
is evaluated, `log_mixture_dense`, in blocks of at most BLOCK_ELEMENTS: the many small searches of the windowed
path would each be a host sync there, and the dense work is cheap. On the CPU the dense path is the reference
the windowed one is tested against (`device="cpu"`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from tcvae.estimators import LOG_2PI, MAX_SQ
from tcvae.objectives import decomposition, kl_normal, log_normal

WINDOW = 14.0            # neglected components lie beyond 14 σ: each weighs < e^-98 of its peak
ROWS, COLS = 128, 8192   # a (samples × components) block: 4 MiB, stays in cache
BLOCK_ELEMENTS = 2**24   # a block of the device path: 64 MiB of float32 (a few such temporaries at once)


def _as_tensor(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dtype)


def log_mixture_dense(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                      block_elements: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """log (1/N) Σ_n N(z_s; mu_n, exp(logvar_n)) for samples z (S,) and components (N,): (S,) nats, on their
    device and in their dtype. The straightforward way: every sample against every component, in (rows × cols)
    blocks of at most `block_elements`, combined by a running log-sum-exp."""
    cols = min(len(mu), block_elements)
    rows = max(1, block_elements // cols)
    out = torch.full_like(z, -math.inf)
    for r0 in range(0, len(z), rows):
        zr = z[r0:r0 + rows, None]
        for c0 in range(0, len(mu), cols):
            ld = log_normal(zr, mu[None, c0:c0 + cols], logvar[None, c0:c0 + cols])
            out[r0:r0 + rows] = torch.logaddexp(out[r0:r0 + rows], torch.logsumexp(ld, dim=1))
    return out - math.log(len(mu))


def log_mixture_1d(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Same as `log_mixture_dense`, fast on the CPU (CPU tensors only): in exp-space, in cache-sized blocks summed by BLAS, visiting
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
        result[far] = log_mixture_dense(zs[far], mu, logvar)
    out = torch.empty_like(result)
    out[order] = result
    return out


def _sample(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n_samples data points drawn uniformly without replacement (all if fewer), one posterior sample each.
    Returns (indices (S,), z (S, D)) on mu's device; drawn by a CPU generator, so the same on every device."""
    g = torch.Generator().manual_seed(seed)
    n = len(mu)
    idx = torch.randperm(n, generator=g)[:n_samples] if n > n_samples else torch.arange(n)
    eps = torch.randn(len(idx), mu.shape[1], generator=g).to(mu.device)
    idx = idx.to(mu.device)
    return idx, mu[idx] + torch.exp(0.5 * logvar[idx]) * eps


def _inputs(mu, logvar, device: str | torch.device | None):
    """mu, logvar as float32 tensors on `device` (the CPU when None) and the 1-D mixture of that path."""
    dev = torch.device("cpu" if device is None else device)
    mix = log_mixture_1d if device is None else log_mixture_dense
    return _as_tensor(mu).to(dev), _as_tensor(logvar).to(dev), mix


@dataclass
class MIGResult:
    """The paper's MIG. score: mean over factors of the normalised gap; per_factor (K,); mutual_info
    (K, D) nats; factor_entropy (K,) nats; marginal_entropy (D,) nats; captured (K,): each factor's own latent
    or None (`factors_captured`)."""
    score: float
    per_factor: list[float]
    mutual_info: list[list[float]]
    factor_entropy: list[float]
    marginal_entropy: list[float]
    n_samples: int
    captured: list[int | None]
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


def mig(mu, logvar, factors, *, n_samples: int = 10_000, seed: int = 0,
        device: str | torch.device | None = None) -> MIGResult:
    """Mutual information gap (Chen et al. 2018, eq. 6) of posteriors mu, logvar (N, D) against factors
    int (N, K), one column per scored factor.

    One posterior sample for each of `n_samples` random data points; H(z_j) against the mixture of all N
    posteriors, H(z_j | v_k) against the posteriors sharing the sample's value of v_k; I = H(z_j) − H(z_j|v_k)
    clamped at 0, sorted, top-1 minus top-2, divided by H(v_k), averaged over factors. `device`: None → the
    CPU's windowed mixtures; a device → every mixture component, in blocks, on that device (see the module)."""
    mu, logvar, mix = _inputs(mu, logvar, device)
    factors = np.asarray(factors)
    idx, z = _sample(mu, logvar, n_samples, seed)
    dims, k = mu.shape[1], factors.shape[1]
    marginal = torch.stack([mix(z[:, j], mu[:, j], logvar[:, j]) for j in range(dims)], 1)   # (S, D)
    h_z = -marginal.mean(0)
    mi = torch.zeros(k, dims)
    sample_values = factors[idx.cpu().numpy()]
    for f in range(k):
        conditional = torch.empty_like(marginal)
        for v in np.unique(factors[:, f]):
            members = torch.from_numpy(np.flatnonzero(factors[:, f] == v)).to(mu.device)
            rows = torch.from_numpy(np.flatnonzero(sample_values[:, f] == v)).to(mu.device)
            if len(rows) == 0:
                continue
            for j in range(dims):
                conditional[rows, j] = mix(z[rows, j], mu[members, j], logvar[members, j])
        mi[f] = (h_z + conditional.mean(0)).clamp(min=0).cpu()    # H(z_j) − H(z_j | v_k)
    h_v = torch.from_numpy(factor_entropy(factors)).float()
    top = mi.sort(dim=1, descending=True).values
    gaps = (top[:, 0] - (top[:, 1] if dims > 1 else 0)) / h_v
    return MIGResult(float(gaps.mean()), gaps.tolist(), mi.tolist(), h_v.tolist(), h_z.cpu().tolist(), len(idx),
                     factors_captured(mi.numpy(), h_v.numpy()))


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


def mig_discrete(codes, factors, *, n_bins: int = 20, device: str | torch.device = "cpu") -> DiscreteMIGResult:
    """MIG of codes (N, D) (e.g. posterior means), each dimension cut into `n_bins` equal-width bins,
    against factors int (N, K); plug-in mutual information in nats, normalised by each factor's entropy.
    Counted in float64 on `device` (bins as numpy's histogram_bin_edges + digitize would make them)."""
    dev = torch.device(device)
    codes = _as_tensor(codes, torch.float64).to(dev)
    lo, hi = codes.min(0).values, codes.max(0).values
    same = hi == lo                                       # a constant code: numpy's edges are value ± 0.5
    lo, hi = torch.where(same, lo - 0.5, lo), torch.where(same, hi + 0.5, hi)
    inner = torch.arange(1, n_bins, dtype=torch.float64, device=dev)            # the n_bins − 1 inner edges
    binned = torch.stack([torch.bucketize(column, lo[j] + (hi[j] - lo[j]) / n_bins * inner, right=True)
                          for j, column in enumerate(codes.T.contiguous())], 1)   # (N, D) bin of each code
    factors = np.asarray(factors)
    mi = torch.stack([_plugin_mi(binned, torch.from_numpy(np.unique(f, return_inverse=True)[1].reshape(-1)).to(dev),
                                 n_bins) for f in factors.T]).cpu().numpy()    # (K, D)
    h_v = factor_entropy(factors)
    top = -np.sort(-mi, axis=1)
    gaps = (top[:, 0] - (top[:, 1] if mi.shape[1] > 1 else 0)) / h_v
    return DiscreteMIGResult(float(gaps.mean()), gaps.tolist(), mi.tolist(), n_bins)


def _plugin_mi(binned: torch.Tensor, values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """I(a_j; v) in nats for each column j of binned (N, D) ints in [0, n_bins) against values (N,) ints in
    [0, V), from the empirical joints: (D,) float64."""
    n, dims = binned.shape
    n_values = int(values.max()) + 1
    cell = (torch.arange(dims, device=binned.device) * n_bins + binned) * n_values + values[:, None]
    joint = torch.bincount(cell.reshape(-1), minlength=dims * n_bins * n_values).double()
    joint = joint.view(dims, n_bins, n_values) / n
    pa, pb = joint.sum(2, keepdim=True), joint.sum(1, keepdim=True)
    terms = joint * torch.log(joint / (pa * pb))
    return torch.where(joint > 0, terms, 0.0).sum((1, 2))


def log_mixture_joint(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                      block: tuple[int, int] = (ROWS, COLS)) -> torch.Tensor:
    """log (1/N) Σ_n N(z_s; mu_n, diag exp(logvar_n)) for samples z (S, D) and components (N, D): (S,) nats.

    The quadratic form Σ_d (z_d − mu_nd)²·p_nd = z²·p − 2 z·(mu p) + mu²·p is two float64 matmuls per
    (rows × cols) tile, `block`, so no (S, N, D) array is formed; tiles are combined by a running log-sum-exp.
    On the device of z, mu and logvar."""
    rows, cols = block
    prec = torch.exp(-logvar.double())
    weighted, const = mu.double() * prec, (LOG_2PI + logvar.double() + mu.double() ** 2 * prec).sum(1)
    out = torch.full((len(z),), -math.inf, dtype=torch.float64, device=z.device)
    for r0 in range(0, len(z), rows):
        zr = z[r0:r0 + rows].double()
        for c0 in range(0, len(mu), cols):
            quad = torch.addmm(const[None, c0:c0 + cols], zr ** 2, prec[c0:c0 + cols].T)
            quad.addmm_(zr, weighted[c0:c0 + cols].T, alpha=-2)
            out[r0:r0 + rows] = torch.logaddexp(out[r0:r0 + rows], torch.logsumexp(quad.mul_(-0.5), dim=1))
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

    @classmethod
    def of(cls, t: dict[str, torch.Tensor], kl: float) -> "KLDecomposition":
        """The decomposition from `full_data_terms` t and the analytic mean KL `kl` (nats)."""
        d = decomposition(t)
        return cls(float(d["mi"].mean()), float(d["tc"].mean()), float(d["dimwise_kl"].mean()), float(kl), len(t["log_qz"]))


def kl_decomposition(mu, logvar, *, n_samples: int = 10_000, seed: int = 0,
                     device: str | torch.device | None = None) -> KLDecomposition:
    """The decomposition for posteriors mu, logvar (N, D) over the whole data set: one posterior sample for
    each of `n_samples` random data points; log q(z) against the joint mixture of all N posteriors,
    log q(z_j) against each dimension's mixture. `device`: as for `mig`."""
    mu, logvar, _ = _inputs(mu, logvar, device)
    t = full_data_terms(mu, logvar, n_samples=n_samples, seed=seed, device=device)
    return KLDecomposition.of(t, kl_normal(mu, logvar).sum(1).mean())


def full_data_terms(mu, logvar, *, n_samples: int = 10_000, seed: int = 0,
                    device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Per-sample (S,) log q(z|n), log q(z), log ∏_j q(z_j), log p(z) in nats for one posterior sample of each
    of S = min(n_samples, N) random data points, every density against all N posteriors of mu, logvar (N, D);
    and those samples, z (S, D). `device`: as for `mig` (None: the CPU's windowed path)."""
    mu, logvar, mix = _inputs(mu, logvar, device)
    idx, z = _sample(mu, logvar, n_samples, seed)
    block = (ROWS, COLS) if device is None else (len(z), max(1, BLOCK_ELEMENTS // len(z)))   # float64 (S, cols)
    log_qzj = torch.stack([mix(z[:, j], mu[:, j], logvar[:, j]) for j in range(mu.shape[1])], 1)
    zero = torch.zeros((), device=z.device)
    return {"log_qz_x": log_normal(z, mu[idx], logvar[idx]).sum(1), "log_qz": log_mixture_joint(z, mu, logvar, block),
            "log_prod_qzj": log_qzj.sum(1), "log_pz": log_normal(z, zero, zero).sum(1), "z": z}


def active_units(mu, threshold: float = 0.01) -> int:
    """Latents whose posterior mean varies across the data: Var_n(mu_nj) > threshold (Burda et al. 2016)."""
    return int((_as_tensor(mu).var(0) > threshold).sum())
