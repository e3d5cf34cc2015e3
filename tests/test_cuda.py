"""The CUDA paths, where a GPU is present (skipped elsewhere): the estimator and evaluation give what the
CPU gives (training resumed on CUDA: tests/test_train.py)."""

import pytest
import torch

from tcvae import objectives as obj
from tests.conftest import tcvae, tiny_params
from tests.test_train import RUN, RUN_DIR, prepared  # noqa: F401

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("estimator", ["mss", "mws"])
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
    tcvae("stage", "train", *RUN, cwd=folder, check=True)
    results = {}
    for device in ("cpu", "cuda"):
        write_params(tiny_params(compute={"device": device}))
        tcvae("stage", "evaluate", *RUN, cwd=folder, check=True)
        results[device] = json.loads((folder / RUN_DIR / "eval.json").read_text())
    cpu, cuda = results["cpu"], results["cuda"]
    assert cuda["kl"] == pytest.approx(cpu["kl"], rel=1e-4)                 # analytic: same posteriors
    assert cuda["elbo"] == pytest.approx(cpu["elbo"], rel=0.05)             # one posterior sample each, other noise
    assert cuda["mig"]["score"] == pytest.approx(cpu["mig"]["score"], abs=1e-3)
