"""What one run's figures draw, computed by `evaluate` (which has the model and the data set at hand) and
kept in one small HDF5 file per run, `figures.h5`, so that drawing needs no model, no data set and no torch.

The file (images uint8 0–255, shaped like the data set's (C, H, W); D latents):
  traversals       uint8 (D, S, C, H, W)  z_j swept by `offsets` around the posterior mean of image `image`
  offsets          float (S,)             prior standard deviations (±`traversal_range`)
  originals        uint8 (R, C, H, W)     images spread evenly over the data set …
  reconstructions  uint8 (R, C, H, W)     … and the decoded posterior means of them
  factors/<name>/means   float (D, G, V)  data sets with factors: each latent's mean posterior mean for each of
                                          the factor's V values, per group (dSprites: G = 3 shapes; else 1)
  factors/<name>/values  float (V,)       the factor's values, in the unit of its `unit` attribute
  position         float (D, Y, X)        dSprites: each latent's mean posterior mean per (posY, posX) cell
  attributes/…     data sets with attributes (CelebA): `traversals` uint8 (T, S, C, H, W) of the T latents with
                   the largest KL (±`attribute_range`), `latents` int (T,), `names` and `correlations` (T,): the
                   attribute each latent's posterior mean correlates with most (Pearson r over the data set)
  estimator_bias/… the minibatch estimators against the full-data values on this run's posteriors
                   (tcvae.estimator_bias; fixed shapes, ESTIMATOR_BIAS below), nats per sample
The file is a function of its inputs (no timestamps), so DVC sees the same bytes for the same run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tcvae.errors import UserError
from tcvae.io import atomic_path, read_bounded
from tcvae.resultfiles import ESTIMATOR_QUANTITIES, LIMITS, check_figures

# The estimator_bias group: E estimators, K = len(BATCHES), Q = len(QUANTITIES); attrs dataset_size (N) and
# batch_size (the run's own training batch). Every run's group has the same shapes.
ESTIMATOR_BIAS = {
    "estimators": "str (E,)        mss, mws, esmaeili",
    "quantities": "str (Q,)        log_qz, log_prod_qzj, mi, tc, dimwise_kl",
    "batches": "int (K,)           the batch sizes B studied, 64 … 4096",
    "repeats": "int (K,)           minibatches drawn at each B (0 where B > N)",
    "mean": "float (E, K, Q)       mean over those minibatches of each minibatch's average; NaN where B > N",
    "std": "float (E, K, Q)        their standard deviation",
    "full": "float (Q,)            the full-data values (every sample against all N posteriors)",
}

BATCHES = (64, 128, 256, 512, 1024, 2048, 4096)    # the batch sizes studied (those above N are NaN)
QUANTITIES = ESTIMATOR_QUANTITIES     # the study's quantities, in the order of the arrays' last axis


@dataclass
class BiasStudy:
    """The estimator_bias group in RAM (tcvae.estimator_bias.study computes it; ESTIMATOR_BIAS), nats per sample.

    mean, std: (E, K, Q) mean and standard deviation over repeats[k] minibatches of each minibatch's average;
    NaN where B > N. full: (Q,) the full-data values. batch_size: the run's own training batch (0: none)."""
    estimators: tuple[str, ...]
    batches: np.ndarray
    repeats: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    full: np.ndarray
    dataset_size: int
    batch_size: int = 0

    def at(self, estimator: str, batch: int, quantity: str) -> tuple[float, float]:
        """(mean, std) of one estimator's `quantity` at batch size `batch`."""
        e, k = self.estimators.index(estimator), list(self.batches).index(batch)
        q = QUANTITIES.index(quantity)
        return float(self.mean[e, k, q]), float(self.std[e, k, q])


# Factor values for display: angles are stored in radians, drawn in degrees.
DEGREES = ("orientation", "azimuth", "elevation", "lighting")
UNITS = {"posX": "fraction of the image width", "posY": "fraction of the image height", "scale": "relative size"}


@dataclass
class FigureData:
    """The arrays of `figures.h5` (see the module docstring), in RAM."""

    traversals: np.ndarray
    offsets: np.ndarray
    image: int
    originals: np.ndarray
    reconstructions: np.ndarray
    factors: dict[str, dict[str, Any]] = field(default_factory=dict)    # name → {means, values, unit}
    groups: tuple[str, ...] = ()                                        # names of the G groups (dSprites: shapes)
    position: np.ndarray | None = None
    attributes: dict[str, Any] | None = None                            # traversals, latents, names, correlations, range
    estimator_bias: BiasStudy | None = None


def factor_tables(mu: np.ndarray, factors: np.ndarray, factor_names: tuple[str, ...],
                  factor_values: np.ndarray) -> tuple[dict[str, dict[str, Any]], tuple[str, ...], np.ndarray | None]:
    """Each latent's mean posterior mean per value of each factor (identity excluded), grouped by shape when the
    data set has one, and per position cell for dSprites. mu (N, D), factors int (N, K), factor_values (N, K)."""
    names = list(factor_names)
    group = factors[:, names.index("shape")] if "shape" in names else np.zeros(len(mu), int)
    n_groups = int(group.max()) + 1
    groups = ()
    if "shape" in names:   # named by the shape's value (dSprites: 1 square, 2 ellipse, 3 heart): a sub-grid may skip one
        first = np.unique(group, return_index=True)[1]            # a row of each group, groups in order
        groups = tuple(("square", "ellipse", "heart")[v - 1] if 1 <= v <= 3 else f"shape {v}"
                       for v in factor_values[first, names.index("shape")].astype(int))
    tables = {}
    for k, name in enumerate(names):
        if name in ("identity", "shape"):
            continue
        classes, index = np.unique(factors[:, k], return_inverse=True)
        cell = group * len(classes) + index
        means = _cell_means(mu, cell, n_groups * len(classes)).reshape(mu.shape[1], n_groups, len(classes))
        values = np.array([factor_values[index == i, k][0] for i in range(len(classes))])
        if name in DEGREES:
            values, unit = np.rad2deg(values), "degrees"
        else:
            unit = UNITS.get(name, "value")
        tables[name] = {"means": means, "values": values, "unit": unit}
    position = None
    if {"posX", "posY"} <= set(names):
        _, px = np.unique(factors[:, names.index("posX")], return_inverse=True)
        _, py = np.unique(factors[:, names.index("posY")], return_inverse=True)
        nx, ny = px.max() + 1, py.max() + 1
        position = _cell_means(mu, py * nx + px, ny * nx).reshape(mu.shape[1], ny, nx)
    return tables, groups, position


def _cell_means(mu: np.ndarray, cell: np.ndarray, cells: int) -> np.ndarray:
    """Mean of mu (N, D) over the rows of each cell index (N,) in [0, cells): (D, cells); NaN where empty."""
    counts = np.bincount(cell, minlength=cells).astype(np.float64)
    sums = np.stack([np.bincount(cell, weights=mu[:, j], minlength=cells) for j in range(mu.shape[1])])
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def attribute_labels(mu: np.ndarray, attributes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each latent, the attribute its posterior mean correlates with most: indices (D,) and Pearson r (D,)
    over mu (N, D) and attributes (N, A) of ±1."""
    a = (attributes - attributes.mean(0)) / np.maximum(attributes.std(0), 1e-8)
    m = (mu - mu.mean(0)) / np.maximum(mu.std(0), 1e-8)
    corr = m.T @ a / len(mu)                                                     # (D, A)
    best = np.abs(corr).argmax(1)
    return best, corr[np.arange(len(best)), best]


def to_uint8(probabilities: Any) -> np.ndarray:
    """Pixel probabilities in [0, 1] (any array) → uint8 0–255."""
    return np.round(np.asarray(probabilities, dtype=np.float64) * 255).astype(np.uint8)


def write(path: Path, d: FigureData) -> None:
    """Write `d` atomically; gzip-compressed, without timestamps, so equal data give equal bytes."""
    def put(group: h5py.Group, name: str, array: Any) -> None:
        array = np.asarray(array)
        if array.dtype.kind == "U":
            array = array.astype(h5py.string_dtype())
        kw = dict(compression="gzip", compression_opts=9, shuffle=True) if array.size > 64 else {}
        group.create_dataset(name, data=array, track_times=False, **kw)

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["image"] = d.image
            f.attrs["groups"] = list(d.groups)
            for name in ("traversals", "offsets", "originals", "reconstructions"):
                put(f, name, getattr(d, name))
            if d.position is not None:
                put(f, "position", d.position)
            for name, table in d.factors.items():
                g = f.require_group(f"factors/{name}")
                put(g, "means", table["means"])
                put(g, "values", table["values"])
                g.attrs["unit"] = table["unit"]
            if d.attributes is not None:
                g = f.require_group("attributes")
                for key in ("traversals", "latents", "correlations", "names"):
                    put(g, key, d.attributes[key])
                g.attrs["range"] = d.attributes["range"]
            if d.estimator_bias is not None:
                b, g = d.estimator_bias, f.require_group("estimator_bias")
                for key, value in (("estimators", list(b.estimators)), ("quantities", list(QUANTITIES)),
                                   ("batches", b.batches), ("repeats", b.repeats), ("mean", b.mean), ("std", b.std),
                                   ("full", b.full)):
                    put(g, key, value)
                g.attrs["dataset_size"], g.attrs["batch_size"] = b.dataset_size, b.batch_size


def read(path: Path, latents: int, root: Path | None = None) -> FigureData:
    """The arrays of a `figures.h5` of a run with `latents` latents, checked (tcvae.resultfiles.check_figures)
    before any is read; the file is read whole first (a bounded, plain file: see tcvae.io.read_bounded). A file
    that is not such a figures.h5 is a UserError naming it."""
    data = read_bounded(path, LIMITS["figures.h5"], root)
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            check_figures(f, latents, path)
            return _arrays(f)
    except UserError:
        raise
    except Exception as e:       # not HDF5, a damaged chunk or header: h5py raises OSError, KeyError, ValueError …
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UserError(f"{path}: not a readable figures.h5 ({first}); evaluate the run again") from None


def _arrays(f: h5py.File) -> FigureData:
    factors = {name: {"means": g["means"][()], "values": g["values"][()], "unit": str(g.attrs["unit"])}
               for name, g in f["factors"].items()} if "factors" in f else {}
    attributes = None
    if "attributes" in f:
        g = f["attributes"]
        attributes = {"traversals": g["traversals"][()], "latents": g["latents"][()],
                      "correlations": g["correlations"][()], "range": float(g.attrs["range"]),
                      "names": [s.decode(errors="replace") if isinstance(s, bytes) else str(s) for s in g["names"][()]]}
    bias = None
    if "estimator_bias" in f:
        g = f["estimator_bias"]
        bias = BiasStudy(tuple(s.decode(errors="replace") if isinstance(s, bytes) else str(s) for s in g["estimators"][()]),
                         g["batches"][()], g["repeats"][()], g["mean"][()], g["std"][()], g["full"][()],
                         int(g.attrs["dataset_size"]), int(g.attrs["batch_size"]))
    return FigureData(traversals=f["traversals"][()], offsets=f["offsets"][()], image=int(f.attrs["image"]),
                      originals=f["originals"][()], reconstructions=f["reconstructions"][()], factors=factors,
                      groups=tuple(s.decode(errors="replace") if isinstance(s, bytes) else str(s) for s in f.attrs.get("groups", [])),
                      position=f["position"][()] if "position" in f else None, attributes=attributes,
                      estimator_bias=bias)
