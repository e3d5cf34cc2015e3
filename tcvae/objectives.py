"""The objectives: β-VAE, β-TCVAE (with the minibatch estimators of log q(z)), FactorVAE.

All quantities are per-sample log-densities or KLs in nats. Notation follows Chen et al. (2018): n indexes
data points, q(z) = (1/N) Σ_n q(z|n) is the aggregate posterior, q(z_j) its marginals, p(z) = N(0, I).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tcvae.estimators import LOG_2PI, MAX_SQ, Estimator, importance_weights, weight_matrix


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar)) in nats (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


ROWS = 512   # rows of a (ROWS, B) slice processed together: 4 MiB at B = 2048, so it stays in cache


class _LogMixtures(torch.autograd.Function):
    """log Σ_j w_ij q(z_i | n_j) jointly and per dimension, in (ROWS, B) slices.

    Per dimension d, with s_j = sqrt(exp(−logvar_jd)/2) and t_ij = (z_id − mu_jd)·s_j, the density is
    q(z_id | n_j) = exp(a_j)·exp(−t_ij²), a_j = −(log 2π + logvar_jd)/2. Rows are summed in that
    exp-space by BLAS (a column shift keeps exp(a_j − max a) ≤ 1; the own term keeps sums away from 0)
    with weight `rest`; the two entries of each row with other weights (own, next) are zeroed there and
    added exactly, computed for all rows at once. Backward forms the slices again, so autograd holds the
    (B, B) joint softmax but never a (B, B, D) tensor."""

    @staticmethod
    def forward(ctx, z, mu, logvar, weights):
        own, nxt, rest = weights
        b, dims = z.shape
        sp = _Special(z, mu, logvar, weights)
        marginals, log_qz = torch.empty_like(z), torch.empty(b, dtype=z.dtype, device=z.device)
        p_joint = torch.empty(b, b, dtype=z.dtype, device=z.device)
        e = torch.empty(min(ROWS, b), b, dtype=z.dtype, device=z.device)
        for rows, i, j in _row_blocks(b, z.device):
            sq_sum, eb = p_joint[rows].zero_(), e[:len(i)]
            k = torch.arange(len(i), device=z.device)
            for d in range(dims):
                torch.addcmul(sp.offset_t[d], z[rows, d, None], sp.s_t[d], out=eb).square_()  # t²
                sq_sum += eb
                eb.clamp_(max=MAX_SQ).neg_().exp_()
                eb[k, i] = 0
                eb[k, j] = 0
                marginals[rows, d] = rest * (eb @ sp.c_t[d])
            joint = sq_sum.neg_().add_(sp.a.sum(1)[None, :] + math.log(rest))    # log w + log q(z_i | n_j)
            joint[k, i] += math.log(own / rest)
            joint[k, j] += math.log(nxt / rest)
            log_qz[rows] = torch.logsumexp(joint, dim=1)
            joint.sub_(log_qz[rows, None]).clamp_(min=-MAX_SQ).exp_()              # softmax over j
        marginals.add_(sp.own_part + sp.next_part).log_().add_(sp.shift)
        ctx.save_for_backward(z, mu, logvar, p_joint, marginals)
        ctx.weights = weights
        return log_qz, marginals

    @staticmethod
    def backward(ctx, g_joint, g_marginals):
        # ∂ log q(z_id|n_j) / ∂(z_id, mu_jd, logvar_jd) = (−2 s_j t_ij, 2 s_j t_ij, t_ij² − 1/2)
        z, mu, logvar, p_joint, marginals = ctx.saved_tensors
        own, nxt, rest = ctx.weights
        b, dims = z.shape
        sp = _Special(z, mu, logvar, ctx.weights)
        # joint term, G = softmax_j · g: Σ_j G_ij (z_i − mu_j)·p_j etc. as float64 matmuls (no cancellation)
        g = (p_joint * g_joint[:, None]).double()
        z64, mu64, p = z.double(), mu.double(), torch.exp(-logvar.double())
        colsum, gtz = g.sum(0)[:, None], g.T @ z64
        gz = -(z64 * (g @ p) - g @ (mu64 * p))
        gmu = p * (gtz - mu64 * colsum)
        glogvar = -0.5 * colsum + 0.5 * p * (g.T @ z64 ** 2 - 2 * mu64 * gtz + mu64 ** 2 * colsum)
        gz, gmu, glogvar = gz.to(z.dtype), gmu.to(z.dtype), glogvar.to(z.dtype)
        del g
        # per-dimension terms: G_ij = r_i · w_ij · c_j · exp(−t_ij²), r = upstream gradient / the row's sum
        rr = g_marginals * torch.exp(sp.shift - marginals)                          # (B, D)
        for part, t, cols in ((sp.own_part, sp.t_own, slice(None)), (sp.next_part, sp.t_next, sp.next)):
            g_special = rr * part                                                   # G at (i, i) and (i, i+1)
            gz -= 2 * g_special * sp.s[cols] * t
            gmu.index_add_(0, torch.arange(b, device=z.device)[cols], 2 * g_special * sp.s[cols] * t)
            glogvar.index_add_(0, torch.arange(b, device=z.device)[cols], g_special * (t ** 2 - 0.5))
        t = torch.empty(min(ROWS, b), b, dtype=z.dtype, device=z.device)
        e, rr_t = torch.empty_like(t), rr.T.contiguous()
        for rows, i, j in _row_blocks(b, z.device):
            k = torch.arange(len(i), device=z.device)
            tb, eb = t[:len(i)], e[:len(i)]
            for d in range(dims):
                sd, cd, r = sp.s_t[d], sp.c_t[d], rr_t[d, rows]
                torch.addcmul(sp.offset_t[d], z[rows, d, None], sd, out=tb)
                torch.mul(tb, tb, out=eb).clamp_(max=MAX_SQ).neg_().exp_()
                eb[k, i] = 0
                eb[k, j] = 0
                e_sum = r @ eb
                u = eb.mul_(tb)                                                     # E ⊙ t
                gz[rows, d] -= 2 * rest * r * (u @ (cd * sd))
                gmu[:, d] += 2 * rest * cd * sd * (r @ u)
                glogvar[:, d] += rest * cd * (r @ u.mul_(tb) - 0.5 * e_sum)         # u is now E ⊙ t²
        return gz, gmu, glogvar, None


class _Special:
    """Per-sample quantities of `_LogMixtures`, all (B, D): scales s, log-normalisers a, column factors
    c = exp(a − shift), offsets −mu·s (so that t = z·s + offset), and the exact own / next terms."""

    def __init__(self, z, mu, logvar, weights):
        own, nxt, _ = weights
        self.s, self.a = _scales(logvar)
        self.shift = self.a.max(0).values                                           # (D,)
        self.c = torch.exp(self.a - self.shift)
        self.offset = -mu * self.s
        # per-dimension rows, contiguous: slicing a (B, D) column would make the (ROWS, B) passes strided
        self.s_t, self.c_t, self.offset_t = self.s.T.contiguous(), self.c.T.contiguous(), self.offset.T.contiguous()
        self.next = (torch.arange(len(z), device=z.device) + 1) % len(z)
        self.t_own = (z - mu) * self.s
        self.t_next = (z - mu[self.next]) * self.s[self.next]
        self.own_part = own * self.c * torch.exp(-self.t_own.square().clamp(max=MAX_SQ))
        self.next_part = nxt * self.c[self.next] * torch.exp(-self.t_next.square().clamp(max=MAX_SQ))


def _scales(logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """s = sqrt(exp(−logvar)/2) and a = −(log 2π + logvar)/2, both (B, D)."""
    return torch.exp(-0.5 * logvar).mul_(math.sqrt(0.5)), -0.5 * (LOG_2PI + logvar)


def _row_blocks(b: int, device: torch.device):
    """Yield (row slice, own column i, next column j = i + 1 mod B) for each block of ROWS rows."""
    for start in range(0, b, ROWS):
        i = torch.arange(start, min(start + ROWS, b), device=device)
        yield slice(start, start + len(i)), i, (i + 1) % b


def log_qz(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
           estimator: Estimator = "mss") -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch estimates of log q(z_i) and log ∏_j q(z_ij) for the batch's own samples (Chen et al. §4.1).

    z, mu, logvar: (B, D), z_i drawn from q(z | n_i); dataset_size: N of the training set. Returns two
    (B,) tensors in nats. Rows of the weight matrix sum to 1, so if every posterior is the same Gaussian
    both are exactly that Gaussian's log-density. On the CPU, blocked: memory O(B²), never O(B²·D). On CUDA
    the fused Triton kernel of `tcvae.fused` (memory O(B·D)); without Triton there, the materialised way,
    whose few large kernels beat the blocked loops' many small ones on a GPU (2.4× at B = 2048 on an H100).
    Always float32 or wider: under bf16 autocast the estimator runs in the inputs' own precision."""
    with torch.autocast(z.device.type, enabled=False):
        if z.is_cuda:
            from tcvae import fused
            if fused.available(z.device):
                return fused.log_qz_fused(z, mu, logvar, dataset_size, estimator)
            return log_qz_materialised(z, mu, logvar, dataset_size, estimator)
        return log_qz_blocked(z, mu, logvar, dataset_size, estimator)


def log_qz_blocked(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                   estimator: Estimator = "mss") -> tuple[torch.Tensor, torch.Tensor]:
    """`log_qz` by the (B, B) slices of `_LogMixtures`, on any device."""
    weights = importance_weights(z.shape[0], dataset_size, estimator)
    joint, marginals = _LogMixtures.apply(z, mu, logvar, weights)
    if not torch.isfinite(marginals).all():     # only for z far outside every posterior: take the safe path
        return log_qz_materialised(z, mu, logvar, dataset_size, estimator)
    return joint, marginals.sum(1)


def log_qz_materialised(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                        estimator: Estimator = "mss") -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward way, holding the (B, B, D) log-density tensor for autograd: the reference that
    `log_qz` is tested and benchmarked against."""
    logw = weight_matrix(z.shape[0], dataset_size, estimator).log().to(z.device, z.dtype)
    ld = log_normal(z[:, None, :], mu[None], logvar[None])                         # (B, B, D)
    joint = torch.logsumexp(ld.sum(2) + logw, dim=1)
    marginals = torch.logsumexp(ld + logw[:, :, None], dim=1)
    return joint, marginals.sum(1)


# ---- the ELBO and its decomposition (Chen et al. 2018, eq. 2) ----

def log_bernoulli(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) (B,) in nats for Bernoulli pixels, summed over C·H·W."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, σ²) ‖ N(0, 1)) per latent, analytic: (B, D) nats."""
    return 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)


def elbo_terms(model, x: torch.Tensor, dataset_size: int, estimator: Estimator = "mss", *,
               generator: torch.Generator | None = None, with_qz: bool = True) -> dict[str, torch.Tensor]:
    """One reparameterised sample per image → per-sample (B,) terms in nats: log_px, log_qz_x
    (log q(z|x)), log_pz and, with `with_qz`, the minibatch log_qz and log_prod_qzj; plus z, mu, logvar (B, D)."""
    mu, logvar = model.encode(x)
    mu, logvar = mu.float(), logvar.float()     # the model may run under bf16 autocast; the objective never does
    z = model.sample(mu, logvar, generator)
    terms = {"log_px": log_bernoulli(model.decode(z).float(), x), "log_qz_x": log_normal(z, mu, logvar).sum(1),
             "log_pz": log_normal(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1), "z": z, "mu": mu, "logvar": logvar}
    if with_qz:
        terms["log_qz"], terms["log_prod_qzj"] = log_qz(z, mu, logvar, dataset_size, estimator)
    return terms


def decomposition(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """KL = index-code MI + total correlation + dimension-wise KL (Chen et al. eq. 2), per sample (B,)."""
    return {"mi": terms["log_qz_x"] - terms["log_qz"], "tc": terms["log_qz"] - terms["log_prod_qzj"],
            "dimwise_kl": terms["log_prod_qzj"] - terms["log_pz"]}


def _recon_and_kl(terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch means of −log p(x|z) and of the sampled KL log q(z|x) − log p(z) (the original code's), nats."""
    return -terms["log_px"].mean(), (terms["log_qz_x"] - terms["log_pz"]).mean()


def betavae_loss(terms: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
    """−(E log p(x|z) − β·KL)  (Higgins et al. 2017; β = 1: the VAE)."""
    recon, kl = _recon_and_kl(terms)
    return recon + beta * kl


def capacity(step: int, c_max: float, steps: int) -> float:
    """AnnealedVAE's target KL C at optimisation step `step` (0-based; nats): 0 at step 0, linear to `c_max` at
    `steps`, then held there (Burgess et al. 2018, sec. 4: "increased linearly from 0 to C_max")."""
    return c_max * min(1.0, step / steps) if steps else c_max


def annealedvae_loss(terms: dict[str, torch.Tensor], gamma: float, c: float) -> torch.Tensor:
    """−E log p(x|z) + γ·|KL(q(z|x) ‖ p(z)) − C|  (Burgess et al. 2018, eq. 8), the batch's KL as betavae_loss's:
    with C = 0 (and the KL positive) it is betavae_loss at β = γ, to the bit."""
    recon, kl = _recon_and_kl(terms)
    return recon + gamma * (kl - c).abs()


def tcvae_loss(terms: dict[str, torch.Tensor], alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """−(E log p(x|z) − α·MI − β·TC − γ·dim-wise KL)  (Chen et al. eq. 4)."""
    parts = decomposition(terms)
    return -(terms["log_px"] - alpha * parts["mi"] - beta * parts["tc"] - gamma * parts["dimwise_kl"]).mean()


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle each latent dimension independently across the batch: samples of ∏_j q(z_j) (Kim & Mnih)."""
    index = torch.argsort(torch.rand(z.shape, generator=generator, device=z.device), dim=0)
    return torch.gather(z, 0, index)


def factorvae_tc(discriminator, z: torch.Tensor) -> torch.Tensor:
    """The density-ratio estimate of TC: E[log D(z) − log(1 − D(z))] (Kim & Mnih 2018, eq. 3), nats."""
    logits = discriminator(z)
    return (logits[:, 0] - logits[:, 1]).mean()


def discriminator_loss(discriminator, z: torch.Tensor, z_perm: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of telling q(z) samples (class 0) from permuted ones (class 1)."""
    ones = torch.ones(len(z), dtype=torch.long, device=z.device)
    return 0.5 * (F.cross_entropy(discriminator(z), 0 * ones) + F.cross_entropy(discriminator(z_perm), ones))
