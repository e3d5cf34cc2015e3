"""What the files of a result folder must be, checked on every read: a result set (data/results/<name>/) is
someone else's data, arriving with `git pull`, and `dvc repro` reads and draws it.

One declarative table per file (`EVAL`, `RUNS_CSV`, `HISTORY`, `FIGURES`, `LIMITS`): a field or dataset read
anywhere is listed here with its kind; fields not listed are kept but never read, so a newer tcvae's extras
pass (add a field here to read it). Every file is a regular file reached through no symbolic link and no
larger than its cap (tcvae.io.read_bounded); HDF5 datasets' declared shapes and dtypes are checked before any
is read; JSON numbers are finite. A run's coordinates come from its folder path and must match its eval.json.
Anything else is a UserError naming the file and the rule.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tcvae.errors import UserError
from tcvae.io import read_bounded, read_json

MiB = 2**20
LIMITS = {"eval.json": 4 * MiB, "history.csv": 16 * MiB, "figures.h5": 64 * MiB, "runs.csv": 16 * MiB,
          "provenance.json": 4 * MiB, "sets.yaml": 1 * MiB, "timing": 1 * MiB, "params": 1 * MiB}
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")     # set and data set names (params' `Name`): a folder, shell-safe
NAME_RULE = "lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64 (it names a folder)"
LABEL = re.compile(r"[A-Za-z0-9_ .,()'-]{1,64}")     # text a figure prints: factor, unit, attribute, estimator names
LABEL_RULE = "1 to 64 letters, digits, spaces and _ . , ( ) ' - (it is printed on a figure)"
METHODS = ("betavae", "tcvae", "factorvae", "annealedvae")   # the methods (stages.schema.Method is this list)
RUN_FILES = ("eval.json", "history.csv", "figures.h5")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000


# kind → (test of a JSON value, the rule in words). A kind ending in "?" may also be missing or null.
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and NAME.fullmatch(v) is not None, NAME_RULE),
    "method": (lambda v: v in METHODS, f"one of {', '.join(METHODS)}"),
    "weight": (lambda v: _number(v) and 0 <= v <= 1e6, "a number from 0 to 1e6"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32, "an integer from 0 to 2³²−1"),
    "number": (_number, "a finite number"),
    "count": (_count, "an integer from 0 to 100,000"),
    "numbers": (lambda v: isinstance(v, list) and 1 <= len(v) <= 4096 and all(map(_number, v)),
                "a list of 1 to 4,096 finite numbers"),
    "latents": (lambda v: isinstance(v, list) and len(v) <= 64 and all(j is None or _count(j) for j in v),
                "a list of latent indices or nulls"),
}

# eval.json: every field that is read (dotted path → kind). `run` must match the folder it sits in.
EVAL = {"run.dataset": "name", "run.method": "method", "run.beta": "weight", "run.seed": "seed",
        "elbo": "number", "log_px": "number", "kl": "number", "active_units": "count", "kl_per_latent": "numbers",
        "decomposition.mutual_info": "number", "decomposition.total_correlation": "number",
        "decomposition.dimwise_kl": "number",
        "mig.score": "number?", "mig.captured": "latents?", "mig_discrete.score": "number?",
        "scores.dci.disentanglement": "number?", "scores.sap.score": "number?", "scores.factorvae.score": "number?",
        "scores.betavae.score": "number?"}

# runs.csv: column → kind (tcvae.results writes them in this order; a column marked "?" may be absent, as in a
# set an older tcvae made, and its cells empty). Other columns are ignored.
RUNS_CSV = {"dataset": "name", "method": "method", "beta": "weight", "seed": "seed", "mig": "number?",
            "mig_discrete": "number?", "dci": "number?", "sap": "number?", "factorvae_score": "number?",
            "betavae_score": "number?", "factors_captured": "count?", "factors_scored": "count?", "elbo": "number",
            "log_px": "number", "kl": "number", "mi": "number", "tc": "number", "dimwise_kl": "number",
            "active_units": "count"}
OPTIONAL_COLUMNS = ("factors_captured", "factors_scored")    # absent in sets made before they existed

# history.csv: columns the learning curves draw; cells are numbers, NaN allowed (a loss not computed).
HISTORY = ("step", "elbo", "mi", "tc", "dimwise_kl")

# figures.h5 (tcvae.figure_data): dataset → (dtype kinds, dimensions). A dimension letter has one size in a file
# (V: per factor); `BOUNDS` caps each, so that no read allocates more than a few MB. "?": may be absent.
FIGURES = {"traversals": ("u", "DSCHW"), "offsets": ("f", "S"), "originals": ("u", "RCHW"),
           "reconstructions": ("u", "RCHW"), "position?": ("f", "DYX"),
           "factors/*/means": ("f", "DGV"), "factors/*/values": ("fiu", "V"),
           "attributes/traversals": ("u", "TSCHW"), "attributes/latents": ("iu", "T"),
           "attributes/correlations": ("f", "T"), "attributes/names": ("SO", "T"),
           "estimator_bias/estimators": ("SO", "E"), "estimator_bias/quantities": ("SO", "Q"),
           "estimator_bias/batches": ("iu", "K"), "estimator_bias/repeats": ("iu", "K"),
           "estimator_bias/mean": ("f", "EKQ"), "estimator_bias/std": ("f", "EKQ"), "estimator_bias/full": ("f", "Q")}
ESTIMATOR_QUANTITIES = ("log_qz", "log_prod_qzj", "mi", "tc", "dimwise_kl")   # estimator_bias/quantities
BOUNDS = {"S": (3, 21), "C": (1, 3), "H": (8, 128), "W": (8, 128), "R": (1, 32), "G": (1, 8), "V": (1, 256),
          "Y": (1, 64), "X": (1, 64), "T": (1, 64),
          "E": (1, 8), "K": (1, 16), "Q": (5, 5)}   # D: the run's latents (eval.json's kl_per_latent)


def beta_name(beta: float) -> str:
    """β as run folders and DVC's stage names spell it: 6, 0.5 (Python's str of the number, 6.0 as 6)."""
    return str(int(beta)) if float(beta).is_integer() else str(float(beta))


def check_name(name: Any, where: str) -> str:
    """`name` if it follows the name rule (set names, data set names), else a UserError naming `where`."""
    if not KINDS["name"][0](name):
        raise UserError(f"{where}: {str(name)[:80]!r} is not a valid name: use {NAME_RULE}")
    return name


def field(obj: dict, path: str) -> Any:
    """The value at a dotted path of nested objects; None where it (or an object above it) is missing. An object
    on the way that is present but not an object (null, a list, …) is a TypeError naming it."""
    keys = path.split(".")
    for i, key in enumerate(keys):
        if key not in obj:
            return None
        obj = obj[key]
        if i < len(keys) - 1 and not isinstance(obj, dict):
            raise TypeError(".".join(keys[:i + 1]))
    return obj


def check_fields(obj: Any, table: dict[str, str], path: Path) -> None:
    """A UserError naming `path`, the field and its rule unless `obj` has every field of `table` of its kind."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: must hold a JSON object, not {type(obj).__name__}")
    for key, kind in table.items():
        try:
            value = field(obj, key)
        except TypeError as e:
            raise UserError(f"{path}: `{e}` must be an object") from None
        if value is None and kind.endswith("?"):
            continue
        test, rule = KINDS[kind.rstrip("?")]
        if not test(value):
            shown = "missing" if value is None else f"{str(value)[:40]!r}"
            raise UserError(f"{path}: `{key}` is {shown}; it must be {rule}")


def shown(path: Path | str) -> str:
    """A path from someone else's folder as a message shows it: every character that is not printable (a line
    break too) escaped, so that a name cannot split the one-line error."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


def run_coordinates(rel: tuple[str, ...], where: Path) -> tuple[str, str, float, int]:
    """(dataset, method, β, seed) from a run folder's path below runs/ (`<dataset>/<method>/beta<β>/seed<s>`),
    each part spelt as tcvae spells it; else a UserError naming `where`."""
    dataset, method, beta, seed = rel
    check_name(dataset, shown(where))
    if method not in METHODS:
        raise UserError(f"{shown(where)}: {method!r} is not a method folder ({', '.join(METHODS)})")
    try:
        value = float(beta.removeprefix("beta")) if beta.startswith("beta") else None
        ok = value is not None and KINDS["weight"][0](value) and beta == f"beta{beta_name(value)}"
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"{shown(where)}: {beta!r} is not a β folder (beta<β>, β as tcvae spells it: beta6, beta0.5)")
    digits = seed.removeprefix("seed")
    if not (seed.startswith("seed") and digits.isdigit() and digits == str(int(digits)) and int(digits) < 2**32):
        raise UserError(f"{shown(where)}: {seed!r} is not a seed folder (seed<integer>: seed0)")
    return dataset, method, value, int(digits)


def run_folders(runs: Path) -> list[tuple[Path, tuple[str, str, float, int]]]:
    """Every run folder under `runs` (a result folder's runs/) with its coordinates, sorted; the tree holds
    only folders <dataset>/<method>/beta<β>/seed<s>/ and in them only a run's files, all plain (no symbolic
    link, FIFO or device, named by the path)."""
    import stat

    found = []

    def walk(folder: Path, depth: int) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise UserError(f"{shown(path)}: a symbolic link; it is not followed (a result set holds plain files and "
                                f"folders only)")
            if depth < 4:
                if not stat.S_ISDIR(mode):
                    raise UserError(f"{shown(path)}: not a folder; runs/ holds <dataset>/<method>/beta<β>/seed<s>/ folders")
                walk(path, depth + 1)
            elif entry.name not in RUN_FILES or not stat.S_ISREG(mode):
                raise UserError(f"{shown(path)}: not a file of a run (a run folder holds the files {', '.join(RUN_FILES)})")
        if depth == 4:
            found.append((folder, run_coordinates(folder.relative_to(runs).parts, folder)))

    if os.path.islink(runs):
        raise UserError(f"{shown(runs)}: a symbolic link; it is not followed (a result set holds plain files and folders only)")
    walk(runs, 0)
    return found


def read_eval(path: Path, coordinates: tuple[str, str, float, int] | None = None,
              root: Path | None = None) -> dict[str, Any]:
    """An eval.json, checked against `EVAL` and, given its folder's `coordinates`, against them."""
    ev = read_json(path, LIMITS["eval.json"], root)
    check_fields(ev, EVAL, path)
    if coordinates is not None:
        run = ev["run"]
        if (run["dataset"], run["method"], float(run["beta"]), run["seed"]) != coordinates:
            d, m, b, s = coordinates
            raise UserError(f"{path}: its `run` ({run['dataset']} {run['method']} β={run['beta']} seed {run['seed']}) "
                            f"is not the run of the folder it is in ({d} {m} β={b:g} seed {s}); it was copied or "
                            f"moved: evaluate that run again")
    latents = len(ev["kl_per_latent"])
    if ev["active_units"] > latents:
        raise UserError(f"{path}: `active_units` ({ev['active_units']}) exceeds the latents ({latents})")
    if any(j is not None and j >= latents for j in field(ev, "mig.captured") or ()):
        raise UserError(f"{path}: `mig.captured` must hold latent indices below the run's {latents} latents, or nulls")
    return ev


def read_csv(path: Path, limit: int, root: Path | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV file's header and rows (UTF-8, a BOM allowed); every row as long as the header."""
    try:
        text = read_bounded(path, limit, root).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); a CSV file was expected") from None
    if "\0" in text:
        raise UserError(f"{path}: holds a NUL byte; a CSV file was expected")
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise UserError(f"{path}: not a readable CSV file ({e})") from None
    if not lines:
        raise UserError(f"{path}: empty; a header line was expected")
    header, rows = lines[0], []
    for i, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            raise UserError(f"{path}: line {i} has {len(cells)} cells, the header {len(header)} (cut or damaged)")
        rows.append(dict(zip(header, cells)))
    return header, rows


def parse_cell(value: str, kind: str, path: Path, line: int, column: str) -> Any:
    """One runs.csv cell of a `KINDS` kind ("" → None where optional)."""
    optional, kind = kind.endswith("?"), kind.rstrip("?")
    if value == "" and optional:
        return None
    parsed: Any = value
    if kind not in ("name", "method"):
        try:
            parsed = int(value) if kind in ("seed", "count") else float(value)
        except ValueError:
            parsed = None
    test, rule = KINDS[kind]
    if parsed is None or not test(parsed):
        raise UserError(f"{path}: line {line}, column {column}: {value[:40]!r} is not {rule}")
    return parsed


def read_runs_csv(path: Path, root: Path | None = None) -> list[dict[str, Any]]:
    """runs.csv as rows of `RUNS_CSV` columns, parsed (empty → None)."""
    header, rows = read_csv(path, LIMITS["runs.csv"], root)
    missing = [c for c in RUNS_CSV if c not in header and c not in OPTIONAL_COLUMNS]
    if missing:
        raise UserError(f"{path}: no column {missing[0]!r} (the columns are {', '.join(RUNS_CSV)})")
    out, seen = [], set()
    for line, r in enumerate(rows, start=2):
        parsed = {c: parse_cell(r.get(c, ""), kind, path, line, c) for c, kind in RUNS_CSV.items()}
        key = (parsed["dataset"], parsed["method"], parsed["beta"], parsed["seed"])
        if key in seen:
            raise UserError(f"{path}: line {line} repeats the run {key[0]} {key[1]} β={key[2]:g} seed {key[3]}")
        seen.add(key)
        if (parsed["factors_captured"] is None) != (parsed["factors_scored"] is None) or (
                parsed["factors_captured"] or 0) > (parsed["factors_scored"] or 0):
            raise UserError(f"{path}: line {line}: factors_captured must be empty with factors_scored, or at most it")
        out.append(parsed)
    return out


def read_history(path: Path, root: Path | None = None) -> list[dict[str, float]]:
    """history.csv's rows: the `HISTORY` columns as numbers (NaN allowed: a loss not computed at a step)."""
    header, rows = read_csv(path, LIMITS["history.csv"], root)
    missing = [c for c in HISTORY if c not in header]
    if missing:
        raise UserError(f"{path}: no column {missing[0]!r} (a training history has {', '.join(HISTORY)})")
    out = []
    for line, r in enumerate(rows, start=2):
        values = {}
        for c in HISTORY:
            try:
                values[c] = float(r[c])
            except ValueError:
                raise UserError(f"{path}: line {line}, column {c}: {r[c][:40]!r} is not a number") from None
            if math.isinf(values[c]):
                raise UserError(f"{path}: line {line}, column {c}: {r[c]!r} is not a finite number")
        out.append(values)
    return out


def check_figures(f: Any, latents: int, path: Path) -> None:
    """Check an open figures.h5 against `FIGURES` before anything is read: every dataset read is a plain HDF5
    dataset (no soft, external or virtual link to elsewhere) of the declared dtype and a shape within `BOUNDS`,
    `latents` (D) from the run's eval.json."""
    import h5py

    bounds = {**BOUNDS, "D": (latents, latents)}

    def member(group: Any, name: str, where: str) -> Any:
        link = group.get(name, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise UserError(f"{path}: `{where}` is a {type(link).__name__}; only data inside the file is read")
        return group[name]

    def dataset(group: Any, name: str, where: str, spec: tuple[str, str], sizes: dict[str, int]) -> None:
        kinds, dims = spec
        d = member(group, name, where)
        if d is None:
            raise UserError(f"{path}: no dataset `{where}` (a figures.h5 written by `tcvae stage evaluate` has it)")
        if not isinstance(d, h5py.Dataset) or d.is_virtual or d.external:
            raise UserError(f"{path}: `{where}` is not a plain dataset stored in the file")
        if d.dtype.kind not in kinds:
            raise UserError(f"{path}: `{where}` has dtype {d.dtype}; expected kind {'/'.join(kinds)}")
        if "S" in kinds and (d.dtype.itemsize > 64 if d.dtype.kind == "S" else h5py.check_string_dtype(d.dtype) is None):
            raise UserError(f"{path}: `{where}` has dtype {d.dtype}; expected strings of at most 64 bytes")
        if len(d.shape) != len(dims):
            raise UserError(f"{path}: `{where}` has shape {d.shape}; expected ({', '.join(dims)})")
        for letter, size in zip(dims, d.shape):
            lo, hi = bounds[letter]
            if not lo <= size <= hi:
                raise UserError(f"{path}: `{where}` has shape {d.shape}: {letter} = {size} is not within {lo}–{hi}")
            if sizes.setdefault(letter, size) != size:
                raise UserError(f"{path}: `{where}` has shape {d.shape}: {letter} = {size}, not the "
                                f"{sizes[letter]} of the other datasets")

    def labels(values: Any, where: str) -> list[str]:
        texts = [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in values]
        for t in texts:
            if not isinstance(t, str) or LABEL.fullmatch(t) is None:
                raise UserError(f"{path}: `{where}` holds {str(t)[:40]!r}; each must be {LABEL_RULE}")
        return texts

    sizes: dict[str, int] = {}
    for name, spec in FIGURES.items():
        top, _, rest = name.rstrip("?").partition("/")
        if top in ("factors", "attributes", "estimator_bias"):     # groups: checked below
            continue
        if name.endswith("?") and member(f, top, top) is None:
            continue
        dataset(f, top, top, spec, sizes)
    if not np.isfinite(f["offsets"][()]).all():          # small (S ≤ 21): checked by value too
        raise UserError(f"{path}: `offsets` must be finite numbers")
    image = f.attrs.get("image")
    if not isinstance(image, (int, np.integer)) or image < 0:
        raise UserError(f"{path}: attribute `image` must be an integer ≥ 0")
    factors = member(f, "factors", "factors")
    groups = f.attrs.get("groups", [])
    if factors is not None:
        if not isinstance(factors, h5py.Group) or len(factors) > 16:
            raise UserError(f"{path}: `factors` must be a group of at most 16 factors")
        labels(list(factors), "factors")
        for name in factors:
            g = member(factors, name, f"factors/{name}")
            if not isinstance(g, h5py.Group) or not isinstance(g.attrs.get("unit"), str):
                raise UserError(f"{path}: `factors/{name}` must be a group with a `unit` text attribute")
            labels([g.attrs["unit"]], f"factors/{name}` attribute `unit")
            per = {k: v for k, v in sizes.items() if k != "V"}      # each factor has its own number of values
            for key in ("means", "values"):
                dataset(g, key, f"factors/{name}/{key}", FIGURES[f"factors/*/{key}"], per)
            if not np.isfinite(g["values"][()].astype(float)).all():
                raise UserError(f"{path}: `factors/{name}/values` must be finite numbers")
            sizes.setdefault("G", per["G"])
            if per["G"] != sizes["G"]:
                raise UserError(f"{path}: `factors/{name}/means` has {per['G']} groups, another factor {sizes['G']}")
        if len(groups) not in (0, sizes.get("G", 1)) or not all(isinstance(s, (str, bytes)) for s in groups):
            raise UserError(f"{path}: attribute `groups` must name the {sizes.get('G', 1)} groups of the factor tables")
        labels(groups, "groups")
    attributes = member(f, "attributes", "attributes")
    if attributes is not None:
        if not isinstance(attributes, h5py.Group) or not _number_attr(attributes.attrs.get("range")):
            raise UserError(f"{path}: `attributes` must be a group with a finite `range` attribute")
        for key in ("traversals", "latents", "correlations", "names"):
            dataset(attributes, key, f"attributes/{key}", FIGURES[f"attributes/{key}"], sizes)
        chosen = attributes["latents"][()]
        if ((chosen < 0) | (chosen >= latents)).any():
            raise UserError(f"{path}: `attributes/latents` must be latent indices below {latents}")
        labels(attributes["names"][()], "attributes/names")
    bias = member(f, "estimator_bias", "estimator_bias")
    if bias is not None:          # optional: sets made before the estimator study have none (tcvae.figure_data)
        if not isinstance(bias, h5py.Group) or not all(_number_attr(bias.attrs.get(k)) for k in ("dataset_size",
                                                                                               "batch_size")):
            raise UserError(f"{path}: `estimator_bias` must be a group with `dataset_size` and `batch_size` attributes")
        for key in ("estimators", "quantities", "batches", "repeats", "mean", "std", "full"):
            dataset(bias, key, f"estimator_bias/{key}", FIGURES[f"estimator_bias/{key}"], sizes)
        if not (bias["batches"][()] > 0).all():
            raise UserError(f"{path}: `estimator_bias/batches` must be batch sizes ≥ 1")
        labels(bias["estimators"][()], "estimator_bias/estimators")
        if tuple(labels(bias["quantities"][()], "estimator_bias/quantities")) != ESTIMATOR_QUANTITIES:
            raise UserError(f"{path}: `estimator_bias/quantities` must be {', '.join(ESTIMATOR_QUANTITIES)}, in that "
                            f"order")


def _number_attr(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))
