"""The fused log q(z) kernel (tcvae/fused.py) against the float64 reference: on CUDA where there is a GPU,
else on the CPU under Triton's interpreter (TRITON_INTERPRET=1; small batches, seconds)."""

import importlib
import os
import sys

import numpy as np
import pytest
import torch

from tcvae import objectives as obj

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":     # before Triton's first import: its own library functions take the mode they are defined in
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton")


def _interpreter_broken() -> bool:
    """Triton before 3.9 with numpy ≥ 2.4 (the GPU machine's Triton 3.6 and numpy 2.5)."""
    version = lambda v: tuple(int(p) for p in v.split("+")[0].split(".")[:2])
    return version(triton.__version__) < (3, 9) and version(np.__version__) >= (2, 4)


@pytest.fixture(scope="module")
def fused():
    """tcvae.fused, its kernels compiled for the GPU or interpreted on the CPU."""
    if DEVICE == "cpu" and _interpreter_broken():
        pytest.skip(f"Triton {triton.__version__}'s interpreter fails with numpy {np.__version__} (≥ 2.4: 'only "
                    f"0-dimensional arrays can be converted to Python scalars' at range(0, b, BJ)); Triton 3.9 "
                    f"fixed it. On a GPU these tests run the compiled kernels instead")
    if DEVICE == "cpu" and not type(triton.language.zeros).__name__.startswith("Interpreted"):
        pytest.fail("Triton was imported before TRITON_INTERPRET=1 was set: run with TRITON_INTERPRET=1")
    module = sys.modules.get("tcvae.fused")
    from tcvae import fused
    return importlib.reload(fused) if module is not None and DEVICE == "cpu" else fused


def values_and_grads(fn, z, mu, logvar, upstream, n, estimator, device, dtype):
    leaves = [t.to(device, dtype, copy=True).requires_grad_() for t in (z, mu, logvar)]
    joint, log_prod = fn(*leaves, n, estimator)
    (joint * upstream[0].to(device, dtype) + log_prod * upstream[1].to(device, dtype)).sum().backward()
    return [t.detach().cpu().double() for t in (joint, log_prod, *(leaf.grad for leaf in leaves))]


# sizes that are not multiples of the tile (16), one smaller than a tile, and the smallest batch
@pytest.mark.parametrize("batch,dims,estimator", [(37, 10, "mss"), (40, 3, "mws"), (5, 1, "mss"), (2, 4, "mss"), (33, 10, "esmaeili")])
def test_fused_matches_float64_reference(fused, batch, dims, estimator):
    g = torch.Generator().manual_seed(batch)
    n = 737_280
    mu = torch.randn(batch, dims, generator=g, dtype=torch.float64)
    logvar = 2 * torch.randn(batch, dims, generator=g, dtype=torch.float64) - 3      # σ from 0.01 to 3
    z = mu + (0.5 * logvar).exp() * torch.randn(batch, dims, generator=g, dtype=torch.float64)
    upstream = torch.randn(2, batch, generator=g, dtype=torch.float64)
    got = values_and_grads(fused.log_qz_fused, z, mu, logvar, upstream, n, estimator, DEVICE, torch.float32)
    want = values_and_grads(obj.log_qz_materialised, z, mu, logvar, upstream, n, estimator, "cpu", torch.float64)
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        assert (a - b).norm() / b.norm() < 1e-4        # the tolerance tests/test_cuda.py holds the CPU path to


@pytest.mark.parametrize("rows,cols,warps", [(16, 16, 4), (4, 8, 2), (32, 16, 8)])
def test_every_launch_shape_gives_the_same_answer(fused, rows, cols, warps):
    """The probe's candidates (tile rows × columns, warps) against the default's numbers, B not a multiple of any."""
    g = torch.Generator().manual_seed(7)
    b, d = 45, 10
    mu, logvar = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g) - 1
    z = mu + (0.5 * logvar).exp() * torch.randn(b, d, generator=g)
    upstream = torch.randn(2, b, generator=g)
    shaped = lambda *a: fused.log_qz_fused(*a, tiles=fused.Tiles(rows, cols, warps))
    got = values_and_grads(shaped, z, mu, logvar, upstream, 1000, "mss", DEVICE, torch.float32)
    want = values_and_grads(fused.log_qz_fused, z, mu, logvar, upstream, 1000, "mss", DEVICE, torch.float32)
    for a, b_ in zip(got, want):
        assert torch.allclose(a, b_, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Tiles.rows = 12"):
        fused.Tiles(12, 8, 4)


def test_fused_gives_the_exact_density_for_identical_posteriors(fused):
    """Rows of the MSS weights sum to 1: identical posteriors give that Gaussian's density, no offset."""
    b, d = 20, 3
    mu = torch.tensor([0.3, -1.0, 2.0]).expand(b, d).contiguous()
    logvar = torch.tensor([0.1, -2.0, 0.5]).expand(b, d).contiguous()
    z = mu + (0.5 * logvar).exp() * torch.randn(b, d, generator=torch.Generator().manual_seed(0))
    exact = obj.log_normal(z, mu, logvar).sum(1)
    log_qz, log_prod = fused.log_qz_fused(*(t.to(DEVICE) for t in (z, mu, logvar)), 1000, "mss")
    assert torch.allclose(log_qz.cpu(), exact, atol=1e-5) and torch.allclose(log_prod.cpu(), exact, atol=1e-5)


COMPILE_FOR_HOPPER = """
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import triton
from tcvae import fused
ptr, f32, i32, c = "*fp32", "fp32", "i32", "constexpr"
common = dict(b=i32, D=i32, log_own=f32, log_next=f32, log_rest=f32, log_2pi=f32)
fwd = dict(z=ptr, mu=ptr, logvar=ptr, out_joint=ptr, out_marg=ptr, **common, BI=c, BJ=c, DP=c)
bwd = dict({k: ptr for k in "z mu logvar joint marg g_joint g_marg gz gmu glogvar".split()}, **common,
           ROWS=c, BA=c, STEP=c, BI=c, BJ=c, DP=c)
t = fused.TILES                                         # the default launch shape
opts = {"num_warps": t.warps}
triton.compile(ASTSource(fused._forward, fwd, {"BI": t.rows, "BJ": t.cols, "DP": 16}), target=GPUTarget("cuda", 90, 32),
               options=opts)
for rows in (True, False):
    consts = {"ROWS": rows, "BA": t.rows if rows else t.cols, "STEP": t.cols if rows else t.rows, "BI": t.rows,
              "BJ": t.cols, "DP": 16}
    triton.compile(ASTSource(fused._backward, bwd, consts), target=GPUTarget("cuda", 90, 32), options=opts)
"""


@pytest.mark.skipif(DEVICE == "cuda", reason="on a GPU the kernels are compiled and run by the tests above")
def test_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter runs the kernels' Python; this compiles them to sm_90 machine code (Triton carries
    its own ptxas), which catches what only the compiler refuses. In a fresh process: compiled mode."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], env=env, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
