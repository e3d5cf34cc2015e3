"""The CUDA paths, where a GPU is present (skipped elsewhere): the estimator and evaluation give what the
CPU gives (training resumed on CUDA: tests/test_train.py)."""

import pytest
import torch

from tcvae import objectives as obj
from tests.conftest import TINY_TRAIN, tcvae, tiny_params
from tests.test_train import RUN, RUN_DIR, SWEEP, prepared  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("estimator", ["mss", "mws", "esmaeili"])
def test_log_qz_on_cuda_matches_float64_on_cpu(estimator):
    g = torch.Generator().manual_seed(0)
    b, d, n = 700, 10, 737_280                      # more rows than one block (objectives.ROWS)
    mu, logvar = torch.randn(b, d, generator=g, dtype=torch.float64), 2 * torch.randn(b, d, generator=g, dtype=torch.float64) - 3
    z = mu + (0.5 * logvar).exp() * torch.randn(b, d, generator=g, dtype=torch.float64)
    upstream = torch.randn(2, b, generator=g, dtype=torch.float64)

    def values_and_grads(fn, device, dtype):
        leaves = [t.to(device, dtype, copy=True).requires_grad_() for t in (z, mu, logvar)]
        joint, marginals = fn(*leaves, n, estimator)
        (joint * upstream[0].to(device, dtype) + marginals * upstream[1].to(device, dtype)).sum().backward()
        return [t.detach().cpu().double() for t in (joint, marginals, *(leaf.grad for leaf in leaves))]

    reference = values_and_grads(obj.log_qz_materialised, "cpu", torch.float64)
    for got, want in zip(values_and_grads(obj.log_qz, "cuda", torch.float32), reference):
        assert torch.isfinite(got).all()
        assert (got - want).norm() / want.norm() < 1e-4


def test_evaluation_on_cuda_matches_the_cpu(prepared):   # noqa: F811
    import json
    folder, write_params = prepared
    fp32 = {**TINY_TRAIN, "precision": "fp32"}     # CUDA's default, tf32, rounds products to 10 bits: not the CPU's
    write_params(tiny_params(train=fp32, sweep=SWEEP))
    tcvae("stage", "train", *RUN, cwd=folder, check=True)
    results = {}
    for device in ("cpu", "cuda"):
        write_params(tiny_params(train=fp32, compute={"device": device}, sweep=SWEEP))
        tcvae("stage", "evaluate", *RUN, cwd=folder, check=True)
        results[device] = json.loads((folder / RUN_DIR / "eval.json").read_text())
    cpu, cuda = results["cpu"], results["cuda"]
    assert cuda["kl"] == pytest.approx(cpu["kl"], rel=1e-4)                 # analytic: same posteriors
    assert cuda["elbo"] == pytest.approx(cpu["elbo"], rel=0.05)             # one posterior sample each, other noise
    assert cuda["mig"]["score"] == pytest.approx(cpu["mig"]["score"], abs=1e-3)


def test_log_qz_on_cuda_is_the_fused_kernel():
    from tcvae import fused
    assert fused.available(torch.device("cuda"))      # Triton ships with CUDA builds of torch
    z = torch.randn(64, 10, device="cuda", requires_grad=True)
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        obj.log_qz(z, z.detach() * 0.9, torch.zeros_like(z), 1000)
    assert max(sizes) <= 64 * 10                    # nothing (B, B) or (B, B, D) is kept for backward


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_each_precision_trains_on_cuda(precision):
    import types

    import numpy as np

    from tcvae.data import Dataset
    from tcvae.train import Trainer, matmul_precision

    cfg = types.SimpleNamespace(batch_size=512, latents=10, mlp_width=256, lr=1e-3, estimator="mss", alpha=1.0,
                                gamma=1.0, precision=precision,
                                anneal=types.SimpleNamespace(beta_warmup_steps=0, dimwise_kl_steps=0))
    images = (np.random.default_rng(0).random((2048, 4096)) < 0.1).astype(np.uint8)
    data = Dataset("t", np.packbits(images, axis=1), (1, 64, 64), True, None, None, (), (), (), "procedural")
    trainer = Trainer(data, cfg, method="tcvae", beta=4.0, seed=0, arch="mlp", device="cuda", dataset_size=10_000)
    before = torch.get_float32_matmul_precision()
    with matmul_precision(precision, trainer.device):
        losses = [float(trainer.step(s, True)["loss"]) for s in range(20)]
    assert torch.get_float32_matmul_precision() == before           # the switch is undone
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0]
