"""log q(z) and log ∏_j q(z_j) on CUDA, fused: a Triton kernel in which the (B, B, D) tensor never exists.

Shapes and units: z, mu, logvar (B, D) float32, z_i drawn from q(z | n_i); returns log_qz (B,) and the
per-dimension log q(z_ij) (B, D), in nats. With ℓ_ijd = log N(z_id; mu_jd, exp(logvar_jd)) and the
estimator's importance weights w_ij (`estimators.importance_weights`, the same three numbers as the CPU
path, one each for the own index, the next and the rest: MSS, MWS and Esmaeili et al.'s estimator differ only
in them):

    log q(z_i)   = logsumexp_j (log w_ij + Σ_d ℓ_ijd)
    log q(z_id)  = logsumexp_j (log w_ij + ℓ_ijd)

Forward: one program per block of rows i walks the columns j in tiles, computes the (rows, cols, D) tile
of ℓ in registers and folds it into running (max, sum) pairs, one per row for the joint and one per
(row, d) for the marginals (the online log-sum-exp of flash attention). Backward recomputes the tiles:
with P_ij = exp(joint_ij − log q(z_i)) and Q_ijd = exp(log w_ij + ℓ_ijd − log q(z_id)), the gradient
reaching ℓ_ijd is G_ijd = g_i·P_ij + h_id·Q_ijd (g, h: upstream gradients), and ∂ℓ/∂(z, mu, logvar) =
(−δ/σ², δ/σ², δ²/(2σ²) − 1/2) with δ = z_id − mu_jd. One kernel sums over j for z (row blocks), another
over i for mu and logvar (column blocks): no atomics, so the result is repeatable. Memory: O(B·D).

Why Triton, of the three candidates (chosen before any GPU measurement; `tcvae bench train --device cuda`
times it against the materialised way and against torch.compile of that formula):
- torch.compile of the straightforward formula can fuse the forward, but we expect its backward to save
  or recompute (B, B, D) tensors through memory unless the compiler finds this recomputation itself,
  and what it generates is not ours to read or test; on the CPU it needs a C++ compiler and tens of
  seconds of compilation per shape, against the blocked path's BLAS passes (which stay the CPU's path).
- KeOps does exactly this reduction, but it is one more package and compiler tool chain (it builds its
  kernels at run time, with its own cache; its CPU mode compiles C++ too) that the GPU image lacks.
- Triton ships with every CUDA build of torch, the kernels are a page we can read, and their tests run
  on the CPU under TRITON_INTERPRET=1 (tests/test_fused.py) against the float64 reference.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from tcvae.errors import UserError
from tcvae.estimators import LOG_2PI, Estimator, importance_weights

try:
    import triton
    import triton.language as tl
except ImportError:        # CPU-only installs without Triton: `available()` is False, log_qz takes other paths
    triton = None



@dataclass(frozen=True)
class Tiles:
    """A launch shape: `rows` × `cols` of the (B, B) pairs per tile (powers of two, 4–64; D is padded to a power
    of two as well, 16 for D = 10) and `warps` per program (1–16). Each kernel runs ⌈B / rows⌉ (forward, backward
    over rows) or ⌈B / cols⌉ programs. The GPU job's probe times a few and sets `TILES`; the default, 8 × 8 with 4
    warps, is 256 programs at B = 2048 (an H200 has 132 SMs; 16 × 16 would be 128) without register spills in
    the sm_90 compile (docs: the GPU review), not yet timed on a GPU."""
    rows: int = 8
    cols: int = 8
    warps: int = 4

    def __post_init__(self):
        for name, value, allowed in (("rows", self.rows, (4, 8, 16, 32, 64)), ("cols", self.cols, (4, 8, 16, 32, 64)),
                                     ("warps", self.warps, (1, 2, 4, 8, 16))):
            if value not in allowed:
                raise ValueError(f"fused.Tiles.{name} = {value!r}: must be one of {', '.join(map(str, allowed))}")


def _tiles_from_env() -> Tiles:
    """TCVAE_FUSED_TILES="rows,cols,warps" (the GPU job sets it to its probe's fastest correct choice), else
    the default."""
    spec = os.environ.get("TCVAE_FUSED_TILES")
    if not spec:
        return Tiles()
    try:
        return Tiles(*(int(v) for v in spec.split(",")))
    except (TypeError, ValueError) as e:
        raise UserError(f"TCVAE_FUSED_TILES={spec!r}: give rows,cols,warps, e.g. 8,8,4 ({e})") from None


TILES = _tiles_from_env()   # what log_qz_fused launches unless given another


def available(device: torch.device) -> bool:
    """Whether the fused kernel can run on `device`: CUDA with Triton, or anywhere under TRITON_INTERPRET=1."""
    if triton is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def log_qz_fused(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                 estimator: Estimator = "mss", tiles: Tiles | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`objectives.log_qz` by the fused kernel: (log q(z_i), log ∏_d q(z_id)), each (B,) float32, nats.
    `tiles`: the launch shape of the forward and backward kernels (default: `TILES`)."""
    weights = importance_weights(z.shape[0], dataset_size, estimator)
    joint, marginals = _FusedLogQz.apply(z.float(), mu.float(), logvar.float(), weights, tiles or TILES)
    return joint, marginals.sum(1)


class _FusedLogQz(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, mu, logvar, weights, tiles):
        z, mu, logvar = z.contiguous(), mu.contiguous(), logvar.contiguous()
        b, d = z.shape
        logw = [math.log(w) for w in weights]
        joint, marginals = torch.empty(b, device=z.device), torch.empty(b, d, device=z.device)
        _forward[(triton.cdiv(b, tiles.rows),)](z, mu, logvar, joint, marginals, b, d, *logw, LOG_2PI,
                                               BI=tiles.rows, BJ=tiles.cols, DP=triton.next_power_of_2(d),
                                               num_warps=tiles.warps)
        ctx.save_for_backward(z, mu, logvar, joint, marginals)
        ctx.logw, ctx.tiles = logw, tiles
        return joint, marginals

    @staticmethod
    def backward(ctx, g_joint, g_marginals):
        z, mu, logvar, joint, marginals = ctx.saved_tensors
        b, d = z.shape
        g_joint = torch.zeros_like(joint) if g_joint is None else g_joint.contiguous().float()
        g_marg = torch.zeros_like(marginals) if g_marginals is None else g_marginals.contiguous().float()
        gz, gmu, glogvar = torch.empty_like(z), torch.empty_like(mu), torch.empty_like(logvar)
        args = (z, mu, logvar, joint, marginals, g_joint, g_marg, gz, gmu, glogvar, b, d, *ctx.logw, LOG_2PI)
        t = ctx.tiles
        meta = dict(BI=t.rows, BJ=t.cols, DP=triton.next_power_of_2(d), num_warps=t.warps)
        _backward[(triton.cdiv(b, t.rows),)](*args, ROWS=True, BA=t.rows, STEP=t.cols, **meta)   # gz: sum over j
        _backward[(triton.cdiv(b, t.cols),)](*args, ROWS=False, BA=t.cols, STEP=t.rows, **meta)  # gmu, glogvar: over i
        return gz, gmu, glogvar, None, None


if triton is not None:
    @triton.jit
    def _tile(z, mu, logvar, i, j, b, D, log_own, log_next, log_rest, log_2pi, DP: tl.constexpr):
        """ℓ (BI, BJ, DP) with padded d set to 0, δ/σ² and δ (BI, BJ, DP), log w (BI, BJ) with −inf
        for columns past B."""
        d = tl.arange(0, DP)
        mi, mj, md = i < b, j < b, d < D
        zi = tl.load(z + i[:, None] * D + d[None, :], mask=mi[:, None] & md[None, :], other=0.0)
        muj = tl.load(mu + j[:, None] * D + d[None, :], mask=mj[:, None] & md[None, :], other=0.0)
        lvj = tl.load(logvar + j[:, None] * D + d[None, :], mask=mj[:, None] & md[None, :], other=0.0)
        delta = zi[:, None, :] - muj[None, :, :]
        scaled = delta * tl.exp(-lvj)[None, :, :]
        ld = -0.5 * (log_2pi + lvj[None, :, :] + delta * scaled)
        ld = tl.where(md[None, None, :], ld, 0.0)
        own = j[None, :] == i[:, None]
        nxt = j[None, :] == (i[:, None] + 1) % b
        logw = tl.where(own, log_own, tl.where(nxt, log_next, log_rest))
        logw = tl.where(mj[None, :], logw, float("-inf"))
        return ld, scaled, delta, logw

    @triton.jit
    def _forward(z, mu, logvar, out_joint, out_marg, b, D, log_own, log_next, log_rest, log_2pi,
                 BI: tl.constexpr, BJ: tl.constexpr, DP: tl.constexpr):
        i = tl.program_id(0) * BI + tl.arange(0, BI)
        d = tl.arange(0, DP)
        m_joint = tl.full((BI,), float("-inf"), tl.float32)
        s_joint = tl.zeros((BI,), tl.float32)
        m_marg = tl.full((BI, DP), float("-inf"), tl.float32)
        s_marg = tl.zeros((BI, DP), tl.float32)
        for start in range(0, b, BJ):
            j = start + tl.arange(0, BJ)
            ld, _, _, logw = _tile(z, mu, logvar, i, j, b, D, log_own, log_next, log_rest, log_2pi, DP)
            joint = tl.sum(ld, axis=2) + logw                                       # (BI, BJ)
            m_new = tl.maximum(m_joint, tl.max(joint, axis=1))
            s_joint = s_joint * tl.exp(m_joint - m_new) + tl.sum(tl.exp(joint - m_new[:, None]), axis=1)
            m_joint = m_new
            per_dim = ld + logw[:, :, None]                                         # (BI, BJ, DP)
            mm_new = tl.maximum(m_marg, tl.max(per_dim, axis=1))
            s_marg = s_marg * tl.exp(m_marg - mm_new) + tl.sum(tl.exp(per_dim - mm_new[:, None, :]), axis=1)
            m_marg = mm_new
        mi = i < b
        tl.store(out_joint + i, m_joint + tl.log(s_joint), mask=mi)
        tl.store(out_marg + i[:, None] * D + d[None, :], m_marg + tl.log(s_marg), mask=mi[:, None] & (d < D)[None, :])

    @triton.jit
    def _backward(z, mu, logvar, joint, marg, g_joint, g_marg, gz, gmu, glogvar, b, D, log_own, log_next, log_rest,
                  log_2pi, ROWS: tl.constexpr, BA: tl.constexpr, STEP: tl.constexpr, BI: tl.constexpr,
                  BJ: tl.constexpr, DP: tl.constexpr):
        """ROWS: this program's rows i (BA = BI), walking the columns j in steps of STEP = BJ; else the
        other way round."""
        d = tl.arange(0, DP)
        md = d < D
        acc = tl.zeros((BA, DP), tl.float32)        # ∂/∂z (rows) or ∂/∂mu (columns)
        acc_lv = tl.zeros((BA, DP), tl.float32)     # ∂/∂logvar (columns)
        for start in range(0, b, STEP):
            if ROWS:
                i = tl.program_id(0) * BI + tl.arange(0, BI)
                j = start + tl.arange(0, BJ)
            else:
                i = start + tl.arange(0, BI)
                j = tl.program_id(0) * BJ + tl.arange(0, BJ)
            mi = i < b
            ld, scaled, delta, logw = _tile(z, mu, logvar, i, j, b, D, log_own, log_next, log_rest, log_2pi, DP)
            lq = tl.load(joint + i, mask=mi, other=0.0)
            lqd = tl.load(marg + i[:, None] * D + d[None, :], mask=mi[:, None] & md[None, :], other=0.0)
            gj = tl.load(g_joint + i, mask=mi, other=0.0)
            gm = tl.load(g_marg + i[:, None] * D + d[None, :], mask=mi[:, None] & md[None, :], other=0.0)
            p = tl.exp(tl.sum(ld, axis=2) + logw - lq[:, None])                    # softmax over j, (BI, BJ)
            q = tl.exp(ld + logw[:, :, None] - lqd[:, None, :])                    # per dimension
            g = gj[:, None, None] * p[:, :, None] + gm[:, None, :] * q
            g = tl.where(mi[:, None, None] & md[None, None, :], g, 0.0)
            if ROWS:
                acc -= tl.sum(g * scaled, axis=1)
            else:
                acc += tl.sum(g * scaled, axis=0)
                acc_lv += tl.sum(g * (0.5 * delta * scaled - 0.5), axis=0)
        if ROWS:
            i = tl.program_id(0) * BI + tl.arange(0, BI)
            tl.store(gz + i[:, None] * D + d[None, :], acc, mask=(i < b)[:, None] & md[None, :])
        else:
            j = tl.program_id(0) * BJ + tl.arange(0, BJ)
            mask = (j < b)[:, None] & md[None, :]
            tl.store(gmu + j[:, None] * D + d[None, :], acc, mask=mask)
            tl.store(glogvar + j[:, None] * D + d[None, :], acc_lv, mask=mask)
