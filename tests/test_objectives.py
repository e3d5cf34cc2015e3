"""The β-TCVAE objective against answers known in closed form or by quadrature."""

import math

import pytest
import torch

from tcvae import objectives as obj
from tcvae.estimators import weight_matrix
from tcvae.models import VAE


@pytest.mark.parametrize("batch,n", [(4, 10), (64, 1000), (256, 737280)])
def test_mss_weights(batch, n):
    w = weight_matrix(batch, n, "mss")
    m = batch - 1
    assert torch.allclose(w.sum(1), torch.ones(batch, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(w.diagonal(), torch.full((batch,), 1 / n, dtype=torch.float64))   # own index: 1/N
    nxt = w[torch.arange(batch), (torch.arange(batch) + 1) % batch]
    assert torch.allclose(nxt, torch.full((batch,), (n - m) / (n * m), dtype=torch.float64))
    assert (w == 1 / m).sum() == batch * (batch - 2)                                      # the rest: 1/M
    assert not torch.allclose(w[:, 0], w[0, 0].expand(batch))   # the published mis-indexing fills column 0


@pytest.mark.parametrize("batch,n", [(4, 10), (64, 1000), (256, 737280), (10, 10)])
def test_esmaeili_weights(batch, n):
    """Esmaeili et al. (2019): own sample 1/N, every other (N − 1)/(N·(B − 1)); rows sum to 1."""
    w = weight_matrix(batch, n, "esmaeili")
    assert torch.allclose(w.sum(1), torch.ones(batch, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(w.diagonal(), torch.full((batch,), 1 / n, dtype=torch.float64))
    off = w[~torch.eye(batch, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, (n - 1) / (n * (batch - 1))))


def test_esmaeili_and_mws_are_exact_when_the_batch_is_the_data_set():
    """At B = N the batch is the whole mixture: both estimators equal the brute-force float64 log q(z)."""
    g = torch.Generator().manual_seed(2)
    n, d = 40, 3
    mu, logvar = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64) - 1
    z = mu + (0.5 * logvar).exp() * torch.randn(n, d, generator=g, dtype=torch.float64)
    ld = obj.log_normal(z[:, None, :], mu[None], logvar[None])                     # (N, N, D)
    exact_joint = torch.logsumexp(ld.sum(2), 1) - math.log(n)
    exact_prod = (torch.logsumexp(ld, 1) - math.log(n)).sum(1)
    for estimator in ("esmaeili", "mws"):
        log_qz, log_prod = obj.log_qz(z, mu, logvar, n, estimator)
        assert torch.allclose(log_qz, exact_joint, atol=1e-10)
        assert torch.allclose(log_prod, exact_prod, atol=1e-10)


@pytest.mark.parametrize("estimator", ["mss", "mws", "esmaeili"])
def test_identical_posteriors_give_the_exact_density(estimator):
    b, d = 32, 4
    mu, logvar = torch.tensor([0.3, -1.0, 2.0, 0.0]).expand(b, d), torch.tensor([0.1, -2.0, 0.5, 0.0]).expand(b, d)
    z = mu + (0.5 * logvar).exp() * torch.randn(b, d, generator=torch.Generator().manual_seed(0))
    exact = obj.log_normal(z, mu, logvar)
    log_qz, log_prod = obj.log_qz(z, mu, logvar, 1000, estimator)
    assert torch.allclose(log_qz, exact.sum(1), atol=1e-5)
    assert torch.allclose(log_prod, exact.sum(1), atol=1e-5)


@pytest.mark.parametrize("estimator", ["mss", "mws", "esmaeili"])
def test_fast_estimator_matches_the_materialised_one(estimator):
    g = torch.Generator().manual_seed(1)
    b, d = 48, 5
    mu = torch.randn(b, d, generator=g, dtype=torch.float64).requires_grad_()
    logvar = (2 * torch.randn(b, d, generator=g, dtype=torch.float64) - 2).requires_grad_()   # σ from 0.01 to 3
    z = (mu + (0.5 * logvar).exp() * torch.randn(b, d, generator=g, dtype=torch.float64)).detach().requires_grad_()
    for fast, slow in zip(obj.log_qz(z, mu, logvar, 500, estimator), obj.log_qz_materialised(z, mu, logvar, 500, estimator)):
        assert torch.allclose(fast, slow, atol=1e-10)
    small = tuple(t[:12, :3].detach().requires_grad_() for t in (z, mu, logvar))    # gradcheck: 2 evaluations an element
    assert torch.autograd.gradcheck(lambda *t: obj.log_qz(*t, 500, estimator), small)
    assert torch.autograd.gradcheck(lambda *t: obj.log_qz(*t, 500, estimator)[1].sum(), small)


def test_autograd_never_holds_a_b_b_d_tensor():
    b, d = 128, 10
    mu, logvar = torch.randn(b, d, requires_grad=True), torch.randn(b, d, requires_grad=True)
    z = (mu + logvar.exp()).detach().requires_grad_()
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        a, c = obj.log_qz(z, mu, logvar, 1000)
    (a.sum() + c.sum()).backward()
    assert max(sizes) <= b * b < b * b * d
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        obj.log_qz_materialised(z, mu, logvar, 1000)
    assert max(sizes) >= b * b * d                   # …which the straightforward way does


def mixture_tc(centres, sigma, grid=1601, half_width=6.0):
    """TC of an equal-weight 2-D Gaussian mixture, by quadrature: ∫ q log q/(q1 q2)."""
    x = torch.linspace(-half_width, half_width, grid, dtype=torch.float64)
    dx = x[1] - x[0]
    comp = lambda v, c: torch.exp(-0.5 * ((v - c) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    q1 = sum(comp(x, c[0]) for c in centres) / len(centres)
    q2 = sum(comp(x, c[1]) for c in centres) / len(centres)
    q = sum(comp(x[:, None], c[0]) * comp(x[None, :], c[1]) for c in centres) / len(centres)
    integrand = torch.where(q > 0, q * (q.log() - q1.log()[:, None] - q2.log()[None, :]), torch.zeros(()))
    return float(integrand.sum() * dx * dx)


@pytest.mark.parametrize("estimator,tolerance", [("mss", 0.05), ("mws", 0.08), ("esmaeili", 0.05)])
def test_minibatch_tc_matches_a_mixture_with_known_tc(estimator, tolerance):
    """N = 2,000 posteriors in two clusters: q(z) is a 2-component mixture whose TC we integrate."""
    centres, sigma, n, b = [(1.0, 1.0), (-1.0, -1.0)], 0.6, 2000, 200
    exact = mixture_tc(centres, sigma)
    assert 0.2 < exact < 0.5                      # a clearly non-zero TC
    mu = torch.tensor(centres, dtype=torch.float64).repeat(n // 2, 1)
    logvar = torch.full_like(mu, 2 * math.log(sigma))
    g = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(300):
        idx = torch.randperm(n, generator=g)[:b]                  # a minibatch without replacement
        z = mu[idx] + sigma * torch.randn(b, 2, generator=g, dtype=torch.float64)
        log_qz, log_prod = obj.log_qz(z, mu[idx], logvar[idx], n, estimator)
        estimates.append((log_qz - log_prod).mean())
    estimate = float(torch.stack(estimates).mean())
    assert estimate == pytest.approx(exact, abs=tolerance * exact + 0.005)


def test_tcvae_with_unit_weights_is_the_elbo():
    torch.manual_seed(0)
    model = VAE("mlp", 6)
    x = (torch.rand(64, 1, 64, 64) < 0.2).float()
    terms = obj.elbo_terms(model, x, 10_000, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(obj.tcvae_loss(terms, 1.0, 1.0, 1.0), obj.betavae_loss(terms, 1.0), rtol=1e-6)
    parts = obj.decomposition(terms)
    extra = obj.tcvae_loss(terms, 1.0, 6.0, 1.0) - obj.tcvae_loss(terms, 1.0, 1.0, 1.0)
    assert torch.allclose(extra, 5 * parts["tc"].mean(), atol=1e-3)      # β weighs exactly the TC term
    kl = terms["log_qz_x"] - terms["log_pz"]
    assert torch.allclose(parts["mi"] + parts["tc"] + parts["dimwise_kl"], kl, atol=1e-4)


def test_permute_dims_shuffles_each_dimension():
    z = torch.arange(40.0).view(10, 4)
    p = obj.permute_dims(z, torch.Generator().manual_seed(0))
    assert all(torch.equal(p[:, j].sort().values, z[:, j]) for j in range(4))
    assert not torch.equal(p, z)


def test_models_shapes():
    for arch, channels in [("mlp", 1), ("conv", 1), ("conv", 3)]:
        model = VAE(arch, 7, channels)
        mu, logvar = model.encode(torch.rand(3, channels, 64, 64))
        assert mu.shape == logvar.shape == (3, 7)
        assert model.decode(mu).shape == (3, channels, 64, 64)
