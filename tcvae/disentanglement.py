"""The field's other disentanglement metrics, as functions of arrays: DCI, SAP, the FactorVAE score and the
β-VAE score, with disentanglement_lib's protocol numbers (Locatello et al. 2019, its metric configs).

Inputs are the codes an evaluation already has, posterior means (N, D), and the data set's factor classes
int (N, K). The FactorVAE and β-VAE scores need images drawn with one factor fixed; on a full grid that is
drawing rows with that factor's class, so they need the whole grid (`check_full_grid`); CelebA has no
factors and cannot be scored. Every function takes a seed and repeats exactly.

DCI's predictors are gradient-boosted trees like disentanglement_lib's (sklearn's GradientBoostingClassifier
defaults: 100 stages, depth 3, learning rate 0.1, softmax loss, impurity importances). sklearn's exact
trees take minutes here (~40 ms a tree on this CPU; a factor with 16 classes needs 1,600), so `_boosted_trees`
grows the same trees on codes cut into 64 bins, every class's tree of a stage at once from histograms (one
sparse product per tree level): the splits can fall only between bins, the rest is the same arithmetic.
On identical inputs the two agree to ~0.005 in D, C and test accuracy (README), at ~20× the speed on the
same threads (`tcvae bench metrics`); the factors' classifiers are independent and run one per thread.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from tcvae.errors import UserError


def _as_codes(codes) -> np.ndarray:
    codes = np.asarray(codes.detach().cpu() if hasattr(codes, "detach") else codes, dtype=np.float64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (N, D), got shape {codes.shape}")
    return codes


def _as_factors(factors, n: int) -> np.ndarray:
    if factors is None:
        raise UserError("this data set has no ground-truth factors (e.g. CelebA): supervised disentanglement "
                        "metrics (DCI, SAP, FactorVAE, β-VAE scores) cannot be computed on it")
    factors = np.asarray(factors)
    if factors.ndim != 2 or len(factors) != n:
        raise ValueError(f"factors must be (N, K) with N = {n} rows, got shape {factors.shape}")
    return factors.astype(np.int64)


def _split(n: int, n_train: int, n_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random train and test rows (disentanglement_lib draws both independently, with replacement;
    disjoint is the cleaner test split and the same thing when N ≫ n_train + n_test)."""
    if n < n_train + n_test:               # a small data set: keep the protocol's 2 : 1 ratio
        n_train = round(n * n_train / (n_train + n_test))
        n_test = n - n_train
    order = rng.permutation(n)
    return order[:n_train], order[n_train:n_train + n_test]


# ---------------------------------------------------------------- DCI (Eastwood & Williams 2018)

@dataclass(frozen=True)
class DCIResult:
    """DCI from the (D, K) importance matrix R of per-factor gradient-boosted trees (disentanglement_lib).
    disentanglement: Σ_d ρ_d (1 − H_K(P_d·)), ρ_d = R_d· / ΣR; completeness: Σ_k ρ_k (1 − H_D(P_·k));
    informativeness: the trees' mean test accuracy over factors (`informativeness_train` on the train rows)."""
    disentanglement: float
    completeness: float
    informativeness: float
    informativeness_train: float
    per_code: list[float]            # (D,) 1 − H_K of each code's importance over factors
    per_factor: list[float]          # (K,) 1 − H_D of each factor's importance over codes
    importance: list[list[float]]    # (D, K), each factor's column sums to 1 (0 if no split was found)
    n_train: int
    n_test: int
    variant: str = "dci (disentanglement_lib: boosted trees, 100 × depth 3, lr 0.1; splits on 64 quantile bins)"

    def as_dict(self) -> dict:
        return asdict(self)


def _quantile_bins(train: np.ndarray, test: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Each column cut into ≤ n_bins bins: int (n, D) bin indices for train and test. A column with at most
    n_bins distinct train values keeps them all apart (cuts at midpoints); otherwise each of n_bins − 1 equal-count
    ranges of the sorted train values gets one cut, at its widest gap, so that clusters (a factor's classes
    in a good code) are never split across a bin."""
    out_train, out_test = np.empty(train.shape, np.int64), np.empty(test.shape, np.int64)
    for d in range(train.shape[1]):
        values = np.unique(train[:, d])
        if len(values) <= n_bins:
            edges = (values[1:] + values[:-1]) / 2
        else:
            s = np.sort(train[:, d])
            gaps, bounds = np.diff(s), np.linspace(0, len(s) - 1, n_bins).astype(int)   # n_bins − 1 cuts
            cut = [lo + int(np.argmax(gaps[lo:hi])) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
            edges = np.unique([(s[i] + s[i + 1]) / 2 for i in cut if gaps[i] > 0])
        out_train[:, d] = np.searchsorted(edges, train[:, d], side="right")
        out_test[:, d] = np.searchsorted(edges, test[:, d], side="right")
    return out_train, out_test


def _boosted_trees(xb: np.ndarray, y: np.ndarray, xb_test: np.ndarray, y_test: np.ndarray, *, n_bins: int,
                   n_estimators: int = 100, learning_rate: float = 0.1, depth: int = 3):
    """Friedman's multiclass gradient boosting (sklearn's GradientBoostingClassifier, log-loss) on binned
    features xb int (n, D) in [0, n_bins), labels y int (n,). Each stage grows one depth-`depth` regression
    tree per class on the residuals Y − softmax(F); a split's gain is the squared-error decrease
    S_L²/n_L + S_R²/n_R − S²/n (sklearn's friedman_mse improvement × n); leaves take Friedman's Newton step
    (C−1)/C · Σr / Σ|r|(1−|r|). Returns (importance (D,) summing to 1, train accuracy, test accuracy)."""
    from scipy.sparse import csr_matrix

    classes, y = np.unique(y, return_inverse=True)
    n, dims = xb.shape
    c = len(classes)
    importance = np.zeros(dims)
    if c < 2:
        return importance, 1.0, float(np.mean(y_test == classes[0]))
    onehot = np.eye(c)[y]
    prior = np.bincount(y, minlength=c) / n
    f, f_test = np.tile(np.log(prior), (n, 1)), np.tile(np.log(prior), (len(xb_test), 1))
    # one-hot of every (row, feature bin), transposed: (D·B, n) @ (n, q) sums q weight columns per bin in one
    # sparse product (n·D·q multiply-adds), every class's (and node's) histogram at once
    offset = xb + np.arange(dims) * n_bins
    binned_t = csr_matrix((np.ones(n * dims), offset.ravel(), np.arange(0, n * dims + 1, dims)),
                          shape=(n, dims * n_bins)).T.tocsr()
    rows, cls = np.arange(n)[:, None], np.arange(c)[None, :]
    flat, flat_t = xb.ravel(), xb_test.ravel()                  # routing reads bins by flat index: row·D + feature
    row_start, row_start_t = rows * dims, np.arange(len(xb_test))[:, None] * dims
    root_count = np.bincount(offset.ravel(), minlength=dims * n_bins).reshape(dims, n_bins)
    for _ in range(n_estimators):
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        r = onehot - p                                          # negative gradient of the log-loss
        node, node_t = np.zeros((n, c), np.int64), np.zeros((len(xb_test), c), np.int64)
        for level in range(depth):
            m = 2 ** level
            if level == 0:                                      # the root holds every row: counts are shared
                s = (binned_t @ r).T.reshape(c, 1, dims, n_bins)
                k = np.broadcast_to(root_count, (c, 1, dims, n_bins)).astype(np.float64)
            else:       # histograms of left children only; right child = parent − left (the subtraction trick)
                q = c * m // 2
                # columns (class, left child): a row's residual, and 1 for its count, where it is in that child
                member = node[:, :, None] == np.arange(0, m, 2)         # left children are the even nodes
                w = np.empty((n, 2, c, m // 2))
                w[:, 1] = member
                np.multiply(r[:, :, None], w[:, 1], out=w[:, 0])
                h = (binned_t @ w.reshape(n, 2 * q)).T          # (2q, D·B)
                s, k = np.empty((c, m, dims, n_bins)), np.empty((c, m, dims, n_bins))
                s[:, 0::2], k[:, 0::2] = h[:q].reshape(c, m // 2, dims, n_bins), h[q:].reshape(c, m // 2, dims, n_bins)
                s[:, 1::2], k[:, 1::2] = s_parent - s[:, 0::2], k_parent - k[:, 0::2]
            s_parent, k_parent = s, k
            s_left, k_left = np.cumsum(s, -1)[..., :-1], np.cumsum(k, -1)[..., :-1]
            s_all, k_all = s.sum(-1, keepdims=True), k.sum(-1, keepdims=True)
            s_right, k_right = s_all - s_left, k_all - k_left
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = s_left ** 2 / k_left + s_right ** 2 / k_right - s_all ** 2 / k_all
            gain = np.where((k_left > 0) & (k_right > 0), gain, -np.inf).reshape(c, m, -1)
            best = gain.argmax(-1)                                              # (c, m)
            best_gain = np.take_along_axis(gain, best[..., None], -1)[..., 0]
            split = best_gain > 1e-12 * n                       # nothing to gain (a pure node): no split
            feature, threshold = best // (n_bins - 1), np.where(split, best % (n_bins - 1), n_bins)
            np.add.at(importance, feature[split], best_gain[split])
            feature, threshold = feature.ravel(), threshold.ravel()           # (class, node) → split, flat
            for nd, xf, start in ((node, flat, row_start), (node_t, flat_t, row_start_t)):
                at = nd + cls * m                                   # (row, class) → its (class, node) split
                right = np.take(xf, np.take(feature, at) + start) > np.take(threshold, at)
                nd *= 2
                nd += right
        leaf, leaf_t = cls * 2 ** depth + node, cls * 2 ** depth + node_t
        num = np.bincount(leaf.ravel(), r.ravel(), minlength=c * 2 ** depth)
        den = np.bincount(leaf.ravel(), (np.abs(r) * (1 - np.abs(r))).ravel(), minlength=c * 2 ** depth)
        gamma = np.where(den > 1e-150, (c - 1) / c * num / np.maximum(den, 1e-150), 0.0)
        f += learning_rate * gamma[leaf]
        f_test += learning_rate * gamma[leaf_t]
    total = importance.sum()
    importance = importance / total if total > 0 else importance
    return (importance, float(np.mean(classes[f.argmax(1)] == classes[y])),
            float(np.mean(classes[f_test.argmax(1)] == y_test)))


def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """1 − H(p)/log(base) for each row of nonnegative weights p (normalised per row; +1e-11 like
    disentanglement_lib, so an all-zero row counts as uniform)."""
    p = p + 1e-11
    p = p / p.sum(1, keepdims=True)
    return 1 + (p * np.log(p)).sum(1) / math.log(max(base, 2))


def dci(codes, factors, *, n_train: int = 10_000, n_test: int = 5_000, seed: int = 0, n_estimators: int = 100,
        n_bins: int = 64) -> DCIResult:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018, sec. 2) of codes (N, D)
    against factor classes int (N, K): one boosted-tree classifier per factor trained on `n_train` random rows,
    tested on `n_test` others; the importance matrix R (D, K) holds each classifier's feature importances."""
    codes = _as_codes(codes)
    factors = _as_factors(factors, len(codes))
    rng = np.random.default_rng(seed)
    train, test = _split(len(codes), n_train, n_test, rng)
    xb, xb_test = _quantile_bins(codes[train], codes[test], n_bins)
    dims, k = codes.shape[1], factors.shape[1]
    # one classifier per factor, each on its own thread (numpy and scipy's sparse product release the GIL)
    with ThreadPoolExecutor(min(k, os.cpu_count() or 1)) as pool:
        fits = list(pool.map(lambda j: _boosted_trees(xb, factors[train, j], xb_test, factors[test, j],
                                                      n_bins=n_bins, n_estimators=n_estimators), range(k)))
    importance = np.stack([fit[0] for fit in fits], 1)          # (D, K)
    acc_train, acc_test = [fit[1] for fit in fits], [fit[2] for fit in fits]
    per_code = _one_minus_entropy(importance, k)                # E&W eq. 1–2: 1 − H_K(P_d·)
    per_factor = _one_minus_entropy(importance.T, dims)         # E&W eq. 3: 1 − H_D(P_·k)
    total = importance.sum()
    rho_code = importance.sum(1) / total if total > 0 else np.full(dims, 1 / dims)
    rho_factor = importance.sum(0) / total if total > 0 else np.full(k, 1 / k)
    return DCIResult(float(per_code @ rho_code), float(per_factor @ rho_factor), float(np.mean(acc_test)),
                     float(np.mean(acc_train)), per_code.tolist(), per_factor.tolist(), importance.tolist(),
                     len(train), len(test))


# ---------------------------------------------------------------- SAP (Kumar et al. 2018)

@dataclass(frozen=True)
class SAPResult:
    """Separated attribute predictability: score matrix S (D, K) of test accuracies predicting factor k from
    latent d alone; per factor the gap between its two best latents; score = their mean."""
    score: float
    per_factor: list[float]          # (K,)
    score_matrix: list[list[float]]  # (D, K)
    n_train: int
    n_test: int
    variant: str = "sap (disentanglement_lib, discrete factors: LinearSVC(C=0.01, balanced) accuracy on one latent)"

    def as_dict(self) -> dict:
        return asdict(self)


def sap(codes, factors, *, n_train: int = 10_000, n_test: int = 5_000, seed: int = 0) -> SAPResult:
    """SAP (Kumar et al. 2018, sec. 3) of codes (N, D) against factor classes int (N, K), discrete-factor variant
    as disentanglement_lib computes it: S_dk = test accuracy of a linear SVM (C = 0.01, balanced class weights)
    trained on latent d alone; score = mean over k of the top-1 minus top-2 of S_·k. A latent that carries
    nothing about a factor scores about chance (1/|V_k| on a full grid), so even a perfect code scores
    about mean_k(1 − 1/|V_k|), and a linear SVM on one latent cannot separate a factor's middle classes."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    codes = _as_codes(codes)
    factors = _as_factors(factors, len(codes))
    rng = np.random.default_rng(seed)
    train, test = _split(len(codes), n_train, n_test, rng)
    dims, k = codes.shape[1], factors.shape[1]
    matrix = np.zeros((dims, k))
    for j in range(k):
        y, y_test = factors[train, j], factors[test, j]
        if len(np.unique(y)) < 2:
            continue
        for d in range(dims):
            svm = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                svm.fit(codes[train, d, None], y)
            matrix[d, j] = np.mean(svm.predict(codes[test, d, None]) == y_test)
    top = -np.sort(-matrix, axis=0)
    gaps = top[0] - (top[1] if dims > 1 else 0)              # Kumar et al. sec. 3: top-1 minus top-2
    return SAPResult(float(gaps.mean()), gaps.tolist(), matrix.tolist(), len(train), len(test))


# ---------------------------------------------------------------- scores that fix a factor

def check_full_grid(factors, factor_sizes: Sequence[int]) -> np.ndarray:
    """`factors` int (N, K) as an array if they form a full grid: N = Π factor_sizes and every combination
    occurs (once). Otherwise a UserError: rows sharing a factor's value are then not a sample of images with
    that factor fixed, which the FactorVAE and β-VAE scores need."""
    if factors is None:
        raise UserError("this data set has no ground-truth factors (e.g. CelebA): the FactorVAE and β-VAE scores "
                        "need images drawn with one factor fixed, which only a data set with known factors on a "
                        "full grid (dSprites, 3D faces, Shapes3D) can provide")
    factors = np.asarray(factors).astype(np.int64)
    sizes = [int(s) for s in factor_sizes]
    n = math.prod(sizes)
    if factors.ndim != 2 or factors.shape[1] != len(sizes):
        raise UserError(f"factors have shape {factors.shape}, expected (N, {len(sizes)}) for factor sizes {sizes}")
    if len(factors) != n or ((factors < 0) | (factors >= np.array(sizes))).any() or \
            np.bincount(np.ravel_multi_index(factors.T, sizes), minlength=n).max() != 1:
        raise UserError(f"the factors are not a full grid ({len(factors):,} rows for the {n:,} combinations of "
                        f"sizes {sizes}, each needed once): the FactorVAE and β-VAE scores need images drawn with "
                        f"one factor fixed and the others uniform, which only the whole grid provides")
    return factors


class _FixedFactorSampler:
    """Rows of a full grid sharing one factor's value: `draw(k, v)` gives, for every element of the int arrays
    k and v (same shape), a uniformly random row whose factor k has class v — on a full grid, an image drawn
    with factor k fixed to v and every other factor uniform."""

    def __init__(self, factors: np.ndarray, rng: np.random.Generator):
        self.rng = rng
        self.order, self.start, self.count = [], [], []
        for column in factors.T:
            count = np.bincount(column)
            self.order.append(np.argsort(column, kind="stable"))
            self.count.append(count)
            self.start.append(np.cumsum(count) - count)

    def draw(self, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.empty(k.shape, np.int64)
        for j in np.unique(k):
            at = k == j
            values = v[at]
            out[at] = self.order[j][self.start[j][values] + self.rng.integers(0, self.count[j][values])]
        return out


def _grid_inputs(codes, factors, factor_sizes: Sequence[int], scored: Sequence[int] | None, seed: int):
    """The inputs the two fixed-factor scores share: codes (N, D) float, factors checked to be a full grid,
    the scored factor indices (default all) and a generator seeded with `seed`."""
    codes = _as_codes(codes)
    factors = check_full_grid(factors, factor_sizes)
    if len(codes) != len(factors):
        raise ValueError(f"codes have {len(codes)} rows, factors {len(factors)}")
    scored = np.arange(factors.shape[1]) if scored is None else np.asarray(scored)
    return codes, factors, scored, np.random.default_rng(seed)


@dataclass(frozen=True)
class FactorVAEResult:
    """FactorVAE score: majority-vote accuracy of "which factor was fixed" from the latent of least normalised
    variance. score = eval_accuracy; votes (K, D): train votes of each fixed factor for each latent."""
    score: float
    train_accuracy: float
    eval_accuracy: float
    active_dims: int
    votes: list[list[int]]
    variant: str = "factorvae_score (disentanglement_lib: batch 64, 10,000 train / 5,000 eval votes, prune σ < 0.05)"

    def as_dict(self) -> dict:
        return asdict(self)


def factorvae_score(codes, factors, factor_sizes: Sequence[int], *, batch_size: int = 64, n_train: int = 10_000,
                    n_eval: int = 5_000, n_variance: int = 10_000, prune: float = 0.05, seed: int = 0,
                    scored: Sequence[int] | None = None) -> FactorVAEResult:
    """The FactorVAE disentanglement metric (Kim & Mnih 2018, sec. 4) of codes (N, D) on a full grid of factor
    classes int (N, K) with sizes (K,). Each vote: pick a factor k (uniformly among `scored`, default all),
    draw `batch_size` rows sharing one random value of it, divide each latent's variance in the batch by its
    global variance (from `n_variance` random rows), vote (k, argmin). Latents with global σ < `prune` are
    dropped (collapsed). The classifier maps each latent to the factor with most train votes; accuracy =
    the share of votes it gets right, on `n_train` train votes and `n_eval` fresh eval votes."""
    codes, factors, scored, rng = _grid_inputs(codes, factors, factor_sizes, scored, seed)
    global_var = codes[rng.integers(0, len(codes), n_variance)].var(0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_var) >= prune)     # Kim & Mnih sec. 4: prune collapsed latents
    k, dims = factors.shape[1], codes.shape[1]
    if len(active) == 0:
        return FactorVAEResult(0.0, 0.0, 0.0, 0, np.zeros((k, dims), int).tolist())
    sampler = _FixedFactorSampler(factors, rng)

    def votes(n: int, chunk: int = 1000) -> np.ndarray:
        out = np.zeros((k, dims), np.int64)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            fixed = scored[rng.integers(0, len(scored), m)]
            value = factors[rng.integers(0, len(codes), m), fixed]                # the batch's shared class
            rows = sampler.draw(np.repeat(fixed[:, None], batch_size, 1), np.repeat(value[:, None], batch_size, 1))
            local = codes[rows][:, :, active].var(1, ddof=1)                         # (m, A)
            winner = active[np.argmin(local / global_var[active], axis=1)]           # least normalised variance
            np.add.at(out, (fixed, winner), 1)
        return out

    train = votes(n_train)
    classifier = train.argmax(0)                               # each latent → the factor it most often names
    train_acc = train[classifier, np.arange(dims)].sum() / train.sum()
    eval_votes = votes(n_eval)
    eval_acc = eval_votes[classifier, np.arange(dims)].sum() / eval_votes.sum()
    return FactorVAEResult(float(eval_acc), float(train_acc), float(eval_acc), len(active), train.tolist())


@dataclass(frozen=True)
class BetaVAEResult:
    """β-VAE score: accuracy of a linear classifier naming the factor two batches share from the mean absolute
    difference of their codes. score = eval_accuracy."""
    score: float
    train_accuracy: float
    eval_accuracy: float
    variant: str = "betavae_score (disentanglement_lib: batch 64, 10,000 train / 5,000 eval, logistic regression)"

    def as_dict(self) -> dict:
        return asdict(self)


def betavae_score(codes, factors, factor_sizes: Sequence[int], *, batch_size: int = 64, n_train: int = 10_000,
                  n_eval: int = 5_000, seed: int = 0, scored: Sequence[int] | None = None) -> BetaVAEResult:
    """The β-VAE disentanglement metric (Higgins et al. 2017, sec. 3) of codes (N, D) on a full grid of factor
    classes int (N, K) with sizes (K,). Each point: pick a factor k (uniformly among `scored`, default all),
    draw `batch_size` pairs of rows that share factor k's class (everything else independent); the feature is
    mean_b |z_b − z'_b| (D,), the label k. Logistic regression (sklearn defaults) trained on `n_train` points,
    accuracy on `n_eval` fresh ones."""
    from sklearn.linear_model import LogisticRegression

    codes, factors, scored, rng = _grid_inputs(codes, factors, factor_sizes, scored, seed)
    sampler = _FixedFactorSampler(factors, rng)

    def points(n: int, chunk: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.empty((n, codes.shape[1])), np.empty(n, np.int64)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            fixed = scored[rng.integers(0, len(scored), m)]
            first = rng.integers(0, len(codes), (m, batch_size))
            k = np.repeat(fixed[:, None], batch_size, 1)
            second = sampler.draw(k, factors[first, k])                  # same class of factor k, rest random
            x[start:start + m] = np.abs(codes[first] - codes[second]).mean(1)   # Higgins et al. sec. 3: z_diff
            y[start:start + m] = fixed
        return x, y

    x, y = points(n_train)
    x_eval, y_eval = points(n_eval)
    model = LogisticRegression(random_state=seed).fit(x, y)
    return BetaVAEResult(float(model.score(x_eval, y_eval)), float(model.score(x, y)), float(model.score(x_eval, y_eval)))


METRICS = ("dci", "sap", "factorvae", "betavae")


def scores(codes, dataset, *, seed: int = 0, which: Sequence[str] = METRICS) -> dict[str, dict]:
    """All four metrics of codes (N, D) (posterior means of the whole `dataset`, a `tcvae.data.Dataset`, in its
    row order), scoring its `metric_factors` as MIG does: {"dci": …, "sap": …, "factorvae": …, "betavae": …},
    each a result's `as_dict()`, or {"skipped": reason} where the data set cannot support the metric (no
    factors, as CelebA; not a full grid, for the two scores that fix a factor)."""
    if dataset.factors is None:
        reason = f"{dataset.name} has no ground-truth factors"
        return {name: {"skipped": reason} for name in which}
    scored = [dataset.factor_names.index(name) for name in dataset.metric_factors]
    out = {name: fn(codes, dataset.factors[:, scored], seed=seed).as_dict()
           for name, fn in (("dci", dci), ("sap", sap)) if name in which}
    for name, fn in (("factorvae", factorvae_score), ("betavae", betavae_score)):
        if name not in which:
            continue
        try:
            out[name] = fn(codes, dataset.factors, dataset.factor_sizes, seed=seed, scored=scored).as_dict()
        except UserError as e:
            out[name] = {"skipped": str(e)}
    return out
