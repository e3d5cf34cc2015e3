"""DCI, SAP, the FactorVAE and β-VAE scores on representations whose answers are known by construction."""

import math

import numpy as np
import pytest

from tcvae import disentanglement as d
from tcvae.data import grid
from tcvae.errors import UserError

SIZES = (8, 8, 8)
FACTORS = grid(SIZES)                         # a full grid, 512 data points, K = 3
N = len(FACTORS)
NOISE = np.random.default_rng(1).normal(size=(N, 4))
PERFECT = np.concatenate([FACTORS, np.zeros((N, 1))], 1).astype(float)      # each factor copied, one latent unused
# one latent sums factors 0 and 1 (symmetric: fixing either leaves the same spread), one copies factor 2
SUMMED = np.stack([FACTORS[:, 0] + FACTORS[:, 1], FACTORS[:, 2], NOISE[:, 0]], 1).astype(float)


@pytest.mark.parametrize("score", [d.factorvae_score, d.betavae_score])
def test_fixed_factor_scores(score):
    """A code copying the factors names the fixed factor every time (1); noise names it by chance (1/K); a
    latent that sums two factors cannot tell which of them was fixed, so one of the three is lost (2/3)."""
    assert score(PERFECT, FACTORS, SIZES).score == 1.0
    assert score(NOISE, FACTORS, SIZES).score == pytest.approx(1 / 3, abs=0.04)
    assert score(SUMMED, FACTORS, SIZES).score == pytest.approx(2 / 3, abs=0.02)


def test_factorvae_votes_and_pruning():
    r = d.factorvae_score(PERFECT, FACTORS, SIZES)
    votes = np.array(r.votes)
    assert r.active_dims == 3                                  # the constant latent is pruned (σ < 0.05)
    assert (votes[:, 3] == 0).all() and (votes[:, :3] == np.diag(votes.diagonal())).all()
    assert d.factorvae_score(np.zeros((N, 2)), FACTORS, SIZES).score == 0.0      # all collapsed


def test_dci_known_answers():
    """Codes = factors: D = C = I = 1. Noise: importance spread evenly, D and C ≈ 0, I ≈ chance (1/8).
    One latent encoding factors 0 and 1 (bijectively), one copying factor 2: that latent's importance is split
    ½, ½, 0 over three factors, so D = ⅔·(1 − log₃ 2) + ⅓·1 (E&W eq. 1–2); every factor has one latent: C = 1."""
    r = d.dci(PERFECT, FACTORS)
    assert (r.disentanglement, r.completeness, r.informativeness) == pytest.approx((1, 1, 1), abs=1e-6)
    r = d.dci(NOISE, FACTORS)
    assert r.disentanglement < 0.02 and r.completeness < 0.02 and r.informativeness == pytest.approx(1 / 8, abs=0.05)
    mixed = np.stack([FACTORS[:, 0] + 8 * FACTORS[:, 1], FACTORS[:, 2]], 1).astype(float)
    r = d.dci(mixed, FACTORS)
    assert r.disentanglement == pytest.approx(2 / 3 * (1 - math.log(2) / math.log(3)) + 1 / 3, abs=0.005)
    assert r.completeness == pytest.approx(1, abs=0.005) and r.informativeness == 1.0


def test_boosted_trees_agree_with_sklearn():
    """The histogram trees find sklearn's GradientBoostingClassifier's importances (exact splits) to ~0.01."""
    from sklearn.ensemble import GradientBoostingClassifier

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    x = np.stack([y + rng.normal(0, 0.3, 600), rng.normal(size=600), 0.5 * y + rng.normal(0, 0.5, 600)], 1)
    xb, xb_test = d._quantile_bins(x[:400], x[400:], 64)
    importance, _, acc = d._boosted_trees(xb, y[:400], xb_test, y[400:], n_bins=64, n_estimators=30)
    exact = GradientBoostingClassifier(n_estimators=30, random_state=0).fit(x[:400], y[:400])
    assert importance == pytest.approx(exact.feature_importances_, abs=0.02)
    assert acc == pytest.approx(exact.score(x[400:], y[400:]), abs=0.03)


def test_sap_known_answers():
    """Binary factors (3,000 random rows): the copying latent predicts its factor perfectly, the others at
    chance (½), so SAP = 1 − ½. Noise: ≈ 0. A latent summing factors 0 and 1 predicts each at ¾ (the middle
    value is a coin flip): gaps ¼, ¼ and ½ for the copied factor 2, SAP = ⅓."""
    rng = np.random.default_rng(2)
    b = rng.integers(0, 2, (3000, 3))
    assert d.sap(b.astype(float), b).score == pytest.approx(0.5, abs=0.03)
    assert d.sap(rng.normal(size=(3000, 3)), b).score < 0.03
    summed = np.stack([b[:, 0] + b[:, 1], b[:, 2], rng.normal(size=3000)], 1).astype(float)
    r = d.sap(summed, b)
    assert r.score == pytest.approx(1 / 3, abs=0.03) and r.per_factor == pytest.approx([0.25, 0.25, 0.5], abs=0.04)


@pytest.mark.parametrize("metric", [
    lambda c, seed: d.dci(c, FACTORS, seed=seed, n_estimators=10),
    lambda c, seed: d.sap(c, FACTORS, seed=seed),
    lambda c, seed: d.factorvae_score(c, FACTORS, SIZES, seed=seed),
    lambda c, seed: d.betavae_score(c, FACTORS, SIZES, seed=seed),
])
def test_seeded_and_exactly_repeatable(metric):
    codes = NOISE + 0.5 * PERFECT[:, :4]
    a, b = metric(codes, 0).as_dict(), metric(codes, 0).as_dict()
    assert a == b and metric(codes, 1).as_dict() != a


def test_scores_that_fix_a_factor_need_a_full_grid():
    with pytest.raises(UserError, match="no ground-truth factors.*CelebA"):
        d.factorvae_score(NOISE, None, SIZES)
    with pytest.raises(UserError, match="not a full grid"):
        d.betavae_score(NOISE[:-1], FACTORS[:-1], SIZES)           # a row missing
    twice = FACTORS.copy()
    twice[1] = twice[0]                                           # a combination twice, another missing
    with pytest.raises(UserError, match="not a full grid"):
        d.factorvae_score(NOISE, twice, SIZES)
    with pytest.raises(UserError, match="no ground-truth factors"):
        d.dci(NOISE, None)


def test_scored_factors_on_the_whole_grid():
    """Scoring a subset of factors (as MIG skips dSprites' shape) still draws the others from the whole grid."""
    r = d.factorvae_score(PERFECT, FACTORS, SIZES, scored=[1, 2])
    assert r.score == 1.0 and np.array(r.votes)[0].sum() == 0


def test_scores_of_a_data_set_use_its_metric_factors_and_skip_what_it_cannot_support():
    from tcvae.data import Dataset

    def dataset(factors, sizes=SIZES):
        return Dataset("toy", np.zeros((N, 1), np.uint8), (1, 1, 1), False, factors, None, ("a", "b", "c"), sizes,
                       ("b", "c"), "procedural")

    r = d.scores(PERFECT, dataset(FACTORS), seed=0)
    assert r["factorvae"]["score"] == 1.0 and r["betavae"]["score"] == 1.0
    assert np.array(r["factorvae"]["votes"])[0].sum() == 0                  # factor a is not scored
    assert r["dci"]["disentanglement"] == pytest.approx(1.0) and len(r["sap"]["per_factor"]) == 2
    sub = d.scores(PERFECT, dataset(FACTORS, sizes=(8, 8, 9)))               # rows do not fill the grid
    assert "not a full grid" in sub["factorvae"]["skipped"] and "score" in sub["sap"]
    none = d.scores(PERFECT, dataset(None))
    assert all("no ground-truth factors" in v["skipped"] for v in none.values())
