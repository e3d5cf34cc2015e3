"""MIG and the KL decomposition on representations whose answers are known by construction."""

import math

import numpy as np
import pytest
import torch

from tcvae import metrics
from tcvae.data import grid

FACTORS = grid((8, 6))                 # two factors on a full grid, 48 data points
N = len(FACTORS)
TIGHT = 2 * math.log(0.01)             # logvar of σ = 0.01: posteriors far narrower than their spacing


def representation(columns):
    """Posteriors with the given means (one column per latent) and σ = 0.01; a None column is an unused
    latent: mean 0, σ = 1, the same for every data point."""
    mu, logvar = [], []
    for c in columns:
        mu.append(np.zeros(N) if c is None else np.asarray(c, dtype=float))
        logvar.append(np.zeros(N) if c is None else np.full(N, TIGHT))
    return torch.tensor(np.stack(mu, 1), dtype=torch.float32), torch.tensor(np.stack(logvar, 1), dtype=torch.float32)


def test_mig_is_one_for_latents_that_copy_the_factors():
    mu, logvar = representation([FACTORS[:, 0], None, FACTORS[:, 1]])
    r = metrics.mig(mu, logvar, FACTORS, n_samples=N)
    mi = np.array(r.mutual_info)
    assert mi[0, 0] == pytest.approx(math.log(8), abs=1e-4) and mi[1, 2] == pytest.approx(math.log(6), abs=1e-4)
    assert np.abs(mi[:, 1]).max() < 1e-4 and mi[0, 2] < 1e-4            # the unused latent knows nothing
    assert r.factor_entropy == pytest.approx([math.log(8), math.log(6)])
    assert r.score == pytest.approx(1.0, abs=1e-4)


def test_a_latent_merging_pairs_of_values_carries_log_3_of_log_6():
    mu, logvar = representation([FACTORS[:, 1] // 2, None])
    r = metrics.mig(mu, logvar, FACTORS, n_samples=N)
    assert r.mutual_info[1][0] == pytest.approx(math.log(3), abs=1e-4)
    assert r.per_factor == pytest.approx([0.0, math.log(3) / math.log(6)], abs=1e-4)


def test_a_latent_mixing_two_factors_leaves_no_gap():
    """One latent encodes both factors (it determines each); a second copies factor 0. For factor 0 two
    latents carry all of H(v0): gap 0. For factor 1 only the mixed one does: gap 1."""
    mu, logvar = representation([FACTORS[:, 0] + 8 * FACTORS[:, 1], FACTORS[:, 0]])
    r = metrics.mig(mu, logvar, FACTORS, n_samples=N)
    assert r.mutual_info[0] == pytest.approx([math.log(8), math.log(8)], abs=1e-4)
    assert r.per_factor == pytest.approx([0.0, 1.0], abs=1e-4)


def test_mig_on_overlapping_posteriors_matches_quadrature():
    """A binary factor, one latent with posteriors N(±1, 1): I(z; v) = H(½N(−1,1) + ½N(1,1)) − H(N(0,1))."""
    n = 4000
    v = np.arange(n) % 2
    mu, logvar = torch.tensor(2.0 * v - 1).float()[:, None], torch.zeros(n, 1)
    x = np.linspace(-12, 12, 200_001)
    q = 0.5 * (np.exp(-0.5 * (x - 1) ** 2) + np.exp(-0.5 * (x + 1) ** 2)) / math.sqrt(2 * math.pi)
    exact = -(q * np.log(q)).sum() * (x[1] - x[0]) - 0.5 * math.log(2 * math.pi * math.e)
    r = metrics.mig(mu, logvar, v[:, None], n_samples=n)
    assert r.mutual_info[0][0] == pytest.approx(exact, abs=0.02)


def test_fast_mixture_agrees_with_brute_force():
    g = torch.Generator().manual_seed(0)
    n, s = 30_000, 700
    for mu, logvar in [(torch.randn(n, generator=g) * 2, 2 * torch.log(0.01 + 0.5 * torch.rand(n, generator=g))),
                       (torch.randn(n, generator=g) * 0.05, 0.05 * torch.randn(n, generator=g))]:
        idx = torch.randint(0, n, (s,), generator=g)
        z = mu[idx] + torch.exp(0.5 * logvar[idx]) * torch.randn(s, generator=g)
        z[:5] = torch.tensor([-30.0, 30.0, 0.0, 1e-3, 5.0])           # also far outside the data
        assert torch.allclose(metrics.log_mixture_1d(z, mu, logvar),
                              metrics.log_mixture_dense(z.double(), mu.double(), logvar.double()).float(), atol=2e-5)


def test_fast_mig_equals_brute_mig():
    g = torch.Generator().manual_seed(1)
    f = grid((3, 5, 4))
    mu = torch.tensor(f, dtype=torch.float32) @ torch.randn(3, 4, generator=g) + 0.3 * torch.randn(len(f), 4, generator=g)
    logvar = torch.log(0.05 + torch.rand(len(f), 4, generator=g))
    fast, brute = metrics.mig(mu, logvar, f, n_samples=50), metrics.mig(mu, logvar, f, n_samples=50, device="cpu")
    assert np.allclose(fast.mutual_info, brute.mutual_info, atol=1e-4)
    assert fast.score == pytest.approx(brute.score, abs=1e-4)


def test_mig_discrete_by_construction():
    codes = np.stack([FACTORS[:, 0], np.zeros(N), FACTORS[:, 1] // 2], 1).astype(float)
    r = metrics.mig_discrete(codes, FACTORS, n_bins=20)
    assert r.mutual_info[0][0] == pytest.approx(math.log(8)) and r.mutual_info[1][2] == pytest.approx(math.log(3))
    assert r.per_factor == pytest.approx([1.0, math.log(3) / math.log(6)])
    assert "disentanglement_lib" in r.variant and "Chen" in metrics.mig(*representation([None]), FACTORS).variant


def test_kl_decomposition_of_two_correlated_clusters():
    """Posteriors at (a, a) or (−a, −a), σ tiny: z reveals only the cluster (index-code MI = log 2) and its
    two coordinates agree (TC = log 2); the three terms add up to the analytic KL."""
    n, a = 1000, 3.0
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    mu = torch.tensor(np.stack([a * sign, a * sign], 1), dtype=torch.float32)
    logvar = torch.full((n, 2), TIGHT)
    d = metrics.kl_decomposition(mu, logvar, n_samples=n)
    assert d.mutual_info == pytest.approx(math.log(2), abs=1e-4)
    assert d.total_correlation == pytest.approx(math.log(2), abs=1e-4)
    assert d.kl == pytest.approx(float(0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).mean()))
    assert d.mutual_info + d.total_correlation + d.dimwise_kl == pytest.approx(d.kl, rel=0.01)


def test_identical_posteriors_have_no_mi_and_no_tc():
    mu, logvar = torch.tensor([[0.5, -1.0, 0.0]]).repeat(500, 1), torch.tensor([[-1.0, 0.0, 0.5]]).repeat(500, 1)
    d = metrics.kl_decomposition(mu, logvar, n_samples=500)
    assert abs(d.mutual_info) < 1e-4 and abs(d.total_correlation) < 1e-4
    assert d.dimwise_kl == pytest.approx(d.kl, abs=0.05)            # Monte Carlo estimate of the analytic KL


def test_active_units():
    mu, _ = representation([FACTORS[:, 0], None, 0.01 * FACTORS[:, 1]])
    assert metrics.active_units(mu) == 1 + 0                         # Var of 0.01·v1 ≈ 3e-4 < 0.01


def test_factors_captured_needs_a_latent_of_its_own():
    """A factor is captured when its best latent carries enough of it and serves no other factor: one latent holding
    two factors (the short default's β-TCVAE run: z4 with posX and posY) captures neither, however large its MIG."""
    from tcvae.metrics import factors_captured

    h = [np.log(6), np.log(16), np.log(16)]                      # scale, posX, posY
    own = [[1.0, 0.0, 0.1], [0.0, 2.0, 0.0], [0.0, 0.0, 1.5]]    # one latent per factor
    assert factors_captured(own, h) == [0, 1, 2]
    shared = [[0.0, 0.0, 0.1], [1.34, 0.0, 0.0], [1.12, 0.0, 0.0]]   # z0 holds posX and posY; scale has nothing
    assert factors_captured(shared, h) == [None, None, None]
    weak = [[0.2, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.5]]   # 0.2 / log 6 = 0.11 < 0.2: too little of scale
    assert factors_captured(weak, h) == [None, 1, 2]
    assert factors_captured(weak, h, threshold=0.1) == [0, 1, 2]


def test_the_results_table_counts_factors_captured_and_names_collapsed_runs():
    """The table a researcher reads beside MIG: factors captured as a range over seeds, collapsed runs counted."""
    from rich.console import Console

    from tcvae.results import table
    base = {"dataset": "d", "method": "tcvae", "beta": 6.0, "mig": 0.2, "tc": 0.1, "elbo": -50.0, "factors_scored": 4}
    rows = [{**base, "seed": 0, "factors_captured": 1, "active_units": 3},
            {**base, "seed": 1, "factors_captured": 2, "active_units": 2},
            {**base, "seed": 2, "factors_captured": 0, "active_units": 0}]
    console = Console(width=200, record=True)
    console.print(table(rows, "t"))
    text = console.export_text()
    assert "0–2 of 4" in text and "3 (1 collapsed)" in text


def _posteriors(seed: int, sizes=(3, 5, 4), dims: int = 4):
    g = torch.Generator().manual_seed(seed)
    f = grid(sizes)
    mu = torch.tensor(f, dtype=torch.float32) @ torch.randn(len(sizes), dims, generator=g)
    mu += 0.3 * torch.randn(len(f), dims, generator=g)
    return f, mu, torch.log(0.05 + torch.rand(len(f), dims, generator=g))


def test_device_path_equals_cpu_path(monkeypatch):
    """The GPU's code (device given: dense mixtures in blocks) run on the CPU gives the CPU path's numbers within
    1e-3, also with blocks so small that every sample row and component column is split."""
    f, mu, logvar = _posteriors(2)
    cpu_mig, cpu_kl = metrics.mig(mu, logvar, f, n_samples=120), metrics.kl_decomposition(mu, logvar, n_samples=120)
    for block in (metrics.BLOCK_ELEMENTS, 7):
        monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", block)
        monkeypatch.setattr(metrics.log_mixture_dense, "__defaults__", (block,))
        dev_mig = metrics.mig(mu, logvar, f, n_samples=120, device="cpu")
        dev_kl = metrics.kl_decomposition(mu, logvar, n_samples=120, device="cpu")
        assert np.allclose(dev_mig.mutual_info, cpu_mig.mutual_info, atol=1e-3)
        assert dev_mig.score == pytest.approx(cpu_mig.score, abs=1e-3)
        assert np.allclose(dev_mig.marginal_entropy, cpu_mig.marginal_entropy, atol=1e-3)
        for term in ("mutual_info", "total_correlation", "dimwise_kl", "kl"):
            assert getattr(dev_kl, term) == pytest.approx(getattr(cpu_kl, term), abs=1e-3)


def _mig_discrete_numpy(codes, factors, n_bins):
    """The earlier CPU implementation (numpy histogram edges, digitize, plug-in MI): the reference."""
    def plugin(a, b):
        _, ai = np.unique(a, return_inverse=True)
        _, bi = np.unique(b, return_inverse=True)
        joint = np.zeros((ai.max() + 1, bi.max() + 1))
        np.add.at(joint, (ai, bi), 1)
        joint /= joint.sum()
        pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
        nz = joint > 0
        return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())
    binned = [np.digitize(c, np.histogram_bin_edges(c, n_bins)[1:-1]) for c in np.asarray(codes, dtype=np.float64).T]
    return np.array([[plugin(c, v) for c in binned] for v in np.asarray(factors).T])


def test_discrete_mig_equals_the_numpy_reference():
    f, mu, _ = _posteriors(3, sizes=(4, 7, 5), dims=5)
    mu[:, 4] = 0.25                                      # a constant code: one bin
    for n_bins in (2, 20):
        r = metrics.mig_discrete(mu, f, n_bins=n_bins)
        assert np.allclose(r.mutual_info, _mig_discrete_numpy(mu.numpy(), f, n_bins), atol=1e-9)
