"""The estimator study against known answers: identical posteriors, a factorial aggregate posterior, a
correlated mixture computed brute force in float64, and bias that must vanish as the batch grows to N."""

import math

import numpy as np
import pytest
import torch

from tcvae import estimator_bias as eb
from tcvae.estimators import ESTIMATORS
from tcvae.metrics import full_data_terms
from tcvae.objectives import kl_normal, log_normal


def ring(n, sigma=0.1, dims=2):
    """n Gaussians of σ `sigma` with means on the unit circle in the first two of `dims` dimensions: a strongly
    correlated aggregate posterior (TC > 0)."""
    angle = torch.linspace(0, 2 * math.pi, n + 1, dtype=torch.float64)[:-1]
    mu = torch.zeros(n, dims, dtype=torch.float64)
    mu[:, 0], mu[:, 1] = torch.cos(angle), torch.sin(angle)
    return mu, torch.full_like(mu, 2 * math.log(sigma))


def test_identical_posteriors_every_estimator_is_exact():
    """One Gaussian for every data point: q(z) = q(z|n), so MI = TC = 0 for every minibatch, and the dim-wise
    KL is the closed-form KL(q(z|n) ‖ p(z))."""
    n = 500
    mu = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64).expand(n, 3)
    logvar = torch.tensor([-0.4, 0.2, -0.1], dtype=torch.float64).expand(n, 3)
    s = eb.study(mu, logvar, batches=(16, 64, n), repeats=4, n_samples=4000)
    for q in ("mi", "tc"):
        i = eb.QUANTITIES.index(q)
        assert np.abs(s.mean[..., i]).max() < 1e-5 and np.abs(s.std[..., i]).max() < 1e-5
        assert abs(s.full[i]) < 1e-4
    kl = float(kl_normal(mu[:1], logvar[:1]).sum())
    assert s.full[eb.QUANTITIES.index("dimwise_kl")] == pytest.approx(kl, abs=0.03)
    assert np.abs(s.mean[..., eb.QUANTITIES.index("dimwise_kl")] - kl).max() < 0.3   # a few minibatches, B ≥ 16


def test_factorial_aggregate_posterior_has_zero_tc():
    """Means on a full 20 × 20 grid with equal σ: q(z) = q(z_1)·q(z_2) sample by sample, so the full-data TC is 0,
    and the estimators that are exact at B = N (esmaeili, mws) give 0 there too."""
    k = 20
    a, b = torch.meshgrid(torch.arange(k) * 0.5, torch.arange(k) * 0.5, indexing="ij")
    mu = torch.stack([a.flatten(), b.flatten()], 1).double()
    logvar = torch.full_like(mu, 2 * math.log(0.3))
    s = eb.study(mu, logvar, batches=(32, k * k), repeats=4)
    tc = eb.QUANTITIES.index("tc")
    assert abs(s.full[tc]) < 1e-4
    for estimator in ("esmaeili", "mws"):
        assert abs(s.at(estimator, k * k, "tc")[0]) < 1e-8
    assert s.at("mss", 32, "tc")[0] < -0.05     # a small batch is far from it, below 0: the "negative TC" users see


def test_full_data_values_match_brute_force_float64():
    mu, logvar = ring(300)
    t = full_data_terms(mu, logvar, n_samples=1000, seed=3)
    z = t["z"].double()
    ld = log_normal(z[:, None, :], mu[None], logvar[None])                    # (S, N, D), float64
    log_qz = torch.logsumexp(ld.sum(2), 1) - math.log(len(mu))
    log_prod = (torch.logsumexp(ld, 1) - math.log(len(mu))).sum(1)
    assert torch.allclose(t["log_qz"].double(), log_qz, atol=1e-4)
    assert torch.allclose(t["log_prod_qzj"].double(), log_prod, atol=1e-4)
    tc = float((log_qz - log_prod).mean())
    assert tc > 0.5                                                           # strongly correlated
    s = eb.study(mu, logvar, batches=(64,), repeats=2, n_samples=1000, seed=3)
    assert s.full[eb.QUANTITIES.index("tc")] == pytest.approx(tc, abs=1e-4)


@pytest.mark.parametrize("estimator", ["mss", "mws", "esmaeili"])
def test_tc_bias_shrinks_as_the_batch_grows_to_n(estimator):
    """Every estimator's mean TC approaches the full-data TC as B → N; at small B the bias is large. (Not
    monotone in |bias|: MSS and esmaeili start below the truth and cross it; the full-data value is itself a
    Monte Carlo estimate over N samples, ±0.02 nats here.)"""
    n = 1024
    mu, logvar = ring(n)
    s = eb.study(mu, logvar, batches=(16, 64, 256, n), repeats=8, n_samples=n, seed=1)
    tc = eb.QUANTITIES.index("tc")
    bias = np.abs(s.mean[s.estimators.index(estimator), :, tc] - s.full[tc])
    assert bias[0] > 0.2
    assert bias[-1] < min(0.1, bias[0] / 4)


def test_batches_beyond_the_data_set_are_nan_and_shapes_are_fixed():
    mu, logvar = ring(100)
    s = eb.study(mu, logvar, repeats=2, n_samples=100)
    assert s.mean.shape == s.std.shape == (len(ESTIMATORS), len(eb.BATCHES), len(eb.QUANTITIES))
    assert np.isnan(s.mean[:, 1:]).all() and np.isfinite(s.mean[:, 0]).all()     # only B = 64 ≤ N = 100


def test_the_study_round_trips_through_figures_h5_with_fixed_shapes(tmp_path):
    from tcvae import figure_data as fd
    mu, logvar = ring(200)
    s = eb.study(mu, logvar, repeats=2, n_samples=200, batch_size=64)
    d = fd.FigureData(traversals=np.zeros((1, 3, 1, 8, 8), np.uint8), offsets=np.zeros(3), image=0,
                      originals=np.zeros((1, 1, 8, 8), np.uint8), reconstructions=np.zeros((1, 1, 8, 8), np.uint8),
                      estimator_bias=s)
    fd.write(tmp_path / "f.h5", d)
    back = fd.read(tmp_path / "f.h5", 1).estimator_bias        # read as any figures.h5 is: checked, 1 latent
    assert back.estimators == s.estimators and back.batch_size == 64 and back.dataset_size == 200
    for key in ("batches", "repeats", "mean", "std", "full"):
        np.testing.assert_array_equal(getattr(back, key), getattr(s, key))
    assert back.mean.shape == (3, len(fd.BATCHES), len(fd.QUANTITIES))


def test_an_esmaeili_run_trains_and_evaluates_through_the_stage_commands(project, monkeypatch):
    """train.estimator: esmaeili through download → preprocess → train → evaluate; its figures.h5 holds the study
    with the run's batch size marked."""
    from stages import download, evaluate, preprocess, train
    from tcvae import figure_data as fd
    from tests.conftest import TINY_TRAIN, tiny_params

    folder, write_params = project
    write_params(tiny_params(train={**TINY_TRAIN, "estimator": "esmaeili"},
                             sweep={"datasets": ["tiny"], "betas": {"betavae": [], "tcvae": [2], "factorvae": [], "annealedvae": []}, "seeds": [0]}))
    monkeypatch.chdir(folder)
    download.command(folder / "params.yaml", None)
    preprocess.command(folder / "params.yaml", None)
    train.command("tiny", "tcvae", "2", 0, params=folder / "params.yaml")
    evaluate.command("tiny", "tcvae", "2", 0, params=folder / "params.yaml")
    run = folder / "data/runs/tiny/tcvae/beta2/seed0"
    import csv
    with open(run / "history.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["step"]) == TINY_TRAIN["steps"]
    assert all(math.isfinite(float(last[k])) for k in ("loss", "mi", "tc", "dimwise_kl"))   # disc_loss: FactorVAE only
    study = fd.read(run / "figures.h5", TINY_TRAIN["latents"]).estimator_bias
    assert study.batch_size == TINY_TRAIN["batch_size"] and study.dataset_size == 192
    assert np.isfinite(study.mean[:, :2]).all() and np.isnan(study.mean[:, 2:]).all()   # B = 64, 128 ≤ N = 192
