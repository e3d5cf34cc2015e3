"""Result folders: the small files of a sweep's runs, a table of them and the few numbers a researcher compares.

A result folder — `data/metrics/` for the workspace's sweep, `data/results/<name>/` for a shipped result set —
holds `runs/<dataset>/<method>/beta<β>/seed<s>/` with each run's `eval.json`, `history.csv` and `figures.h5`,
and what is derived from them: `runs.csv` (one row per run), `summary/<dataset>/<method>.json` (per data set
and method: the median MIG over seeds at the best β, that β, Spearman's ρ between TC and MIG over the runs,
the median ELBO and the other metrics there), one small file each so that `dvc metrics show data/metrics/summary`
prints them as a table. The sweep's headline (`headline`: that MIG per data set × method) is the pipeline's DVC
metric, four short columns that `dvc exp show` and `dvc metrics show` fit in 120 columns (the summary's 32,
path-prefixed, do not).
A shipped set adds `provenance.json` and the `params.yaml` it was made with. No torch here: plotting imports it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from tcvae.errors import UserError
from tcvae.io import atomic_outputs, atomic_path, read_bounded, write_json
from tcvae.resultfiles import LIMITS, RUN_FILES, RUNS_CSV, beta_name, read_eval, read_runs_csv, run_folders

FIELDS = list(RUNS_CSV)      # runs.csv's columns, in order (their kinds: tcvae.resultfiles.RUNS_CSV)
SCORES = {"dci": ("dci", "disentanglement"), "sap": ("sap", "score"), "factorvae_score": ("factorvae", "score"),
          "betavae_score": ("betavae", "score")}     # runs.csv column: (eval.json's scores entry, its number)


def number(x: float, digits: int = 3, sign: bool = False) -> str:
    """`x` with `digits` decimals, never a negative zero (-0.0004 → '0.000'); `sign` puts '+' on positives."""
    x = round(float(x), digits) + 0.0          # -0.0 + 0.0 is 0.0
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def run_path(dataset: str, method: str, beta: float, seed: int) -> Path:
    """A run's folder relative to data/runs/ and to a result folder's runs/."""
    return Path(dataset) / method / f"beta{beta_name(beta)}" / f"seed{seed}"


def row(ev: dict[str, Any]) -> dict[str, Any]:
    """The runs.csv row of one eval.json (MIG columns empty for data sets without factors). factors_captured: how
    many of the factors_scored have a latent of their own (tcvae.metrics.factors_captured)."""
    d = ev["decomposition"]
    scores = {column: ev.get("scores", {}).get(name, {}).get(key) for column, (name, key) in SCORES.items()}
    own = ev["mig"].get("captured") if "mig" in ev else None     # absent in sets made before it existed
    return {**ev["run"], "mig": ev.get("mig", {}).get("score"), "mig_discrete": ev.get("mig_discrete", {}).get("score"),
            **scores, "factors_captured": None if own is None else sum(j is not None for j in own),
            "factors_scored": None if own is None else len(own),
            "elbo": ev["elbo"], "log_px": ev["log_px"], "kl": ev["kl"], "mi": d["mutual_info"],
            "tc": d["total_correlation"], "dimwise_kl": d["dimwise_kl"], "active_units": ev["active_units"]}


def collect(runs: Path) -> list[dict[str, Any]]:
    """The rows of every run under `runs` (a result folder's runs/), ordered by data set, method, β and seed; each
    run's coordinates are its folder's, and its eval.json must say the same (tcvae.resultfiles).
    Within a data set every run has a MIG, or none has (a data set without factors)."""
    rows = []
    for folder, coordinates in run_folders(runs):
        missing = [name for name in RUN_FILES if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{folder / missing[0]} is missing: a run folder holds {', '.join(RUN_FILES)}")
        rows.append(row(read_eval(folder / "eval.json", coordinates, runs)))
    for dataset in {r["dataset"] for r in rows}:
        theirs = [r for r in rows if r["dataset"] == dataset]
        if len({r["mig"] is None for r in theirs}) > 1:
            odd = next(r for r in theirs if r["mig"] is None)
            raise UserError(f"{runs}: {dataset} {odd['method']} β={beta_name(odd['beta'])} seed {odd['seed']} has no "
                            f"MIG while other runs of {dataset} have one: evaluate it again (`tcvae stage evaluate`)")
    return sorted(rows, key=lambda r: (r["dataset"], r["method"], r["beta"], r["seed"]))


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows({k: ("" if r[k] is None else r[k]) for k in FIELDS} for r in rows)


def read_rows(path: Path, root: Path | None = None) -> list[dict[str, Any]]:
    """runs.csv back as dicts with numbers parsed (empty → None), checked (tcvae.resultfiles.read_runs_csv);
    `root`: the folder below which no symbolic link is followed (default: runs.csv's own folder)."""
    return read_runs_csv(path, path.parent if root is None else root)


# Below 5 points a rank correlation says nothing: of the 4! orderings of 4 uncorrelated points, 2 give ρ = ±1
# (p = 1/12 for a perfect ranking, two-sided), while from 5 points a perfect ranking has p = 2/5! ≈ 0.017 < 0.05.
RHO_MIN = 5


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when fewer than `RHO_MIN` distinct (x, y) points
    (identical runs count once) or either variable is constant: then no correlation is meaningful."""
    if len(set(zip(x, y))) < RHO_MIN or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rx, ry = (_ranks(np.asarray(v, dtype=float)) for v in (x, y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = v.argsort(kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    for value in np.unique(v):          # ties share their mean rank
        ranks[v == value] = ranks[v == value].mean()
    return ranks


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{dataset: {method: {"mig", "beta", "rho", "captured", "elbo", "dci", "sap", "factorvae_score", "betavae_score"}}}:
    the median MIG over seeds at the β where it is largest, that β, Spearman's ρ(TC, MIG) over all the method's runs
    (None below `RHO_MIN` distinct points), and at that β the median factors captured, the median ELBO (nats) and
    other metrics (where computed). Runs are counted in the printed table (`table`), not here: the summary stays
    one readable row per data set × method.
    Data sets without factors get the median ELBO instead of MIG."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    for dataset, methods in out.items():
        for method, runs in methods.items():
            betas = sorted({r["beta"] for r in runs})
            if runs[0]["mig"] is None:
                methods[method] = {"elbo": round(float(np.median([r["elbo"] for r in runs])), 1)}
                continue
            medians = {b: float(np.median([r["mig"] for r in runs if r["beta"] == b])) for b in betas}
            best = max(betas, key=lambda b: (medians[b], -b))
            rho = spearman([r["tc"] for r in runs], [r["mig"] for r in runs])
            at_best = [r for r in runs if r["beta"] == best]
            # three decimals: seeds move MIG by far more, and `dvc metrics show` stays narrow
            methods[method] = {"mig": round(medians[best], 3), "beta": int(best) if float(best).is_integer() else best,
                               "rho": None if rho is None else round(rho, 2),
                               "captured": _median([r["factors_captured"] for r in at_best]),
                               "elbo": round(float(np.median([r["elbo"] for r in at_best])), 1)}
            for column in SCORES:      # the other metrics at the same β
                values = [r[column] for r in at_best if r[column] is not None]
                if values:
                    methods[method][column] = round(float(np.median(values)), 3)
    return out


def _median(values: list[float | None]) -> float | None:
    """The median of the values that are not None (None if there are none)."""
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def headline(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """{dataset: {method: MIG}} from the summary, for the data sets with factors."""
    return {dataset: {method: numbers["mig"] for method, numbers in methods.items()}
            for dataset, methods in summary.items() if all("mig" in numbers for numbers in methods.values())}


def write_derived(runs_csv: Path, summary_dir: Path, rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Write runs.csv and the summary folder (summary_dir/<dataset>/<method>.json) from the rows of the runs
    (`collect`) at the paths given (temporary ones of `tcvae.io.atomic_outputs`); return the summary."""
    write_rows(runs_csv, rows)
    summary = summarise(rows)
    for dataset, methods in summary.items():
        for method, numbers in methods.items():
            write_json(summary_dir / dataset / f"{method}.json", numbers)
    return summary


def summarise_folder(folder: Path) -> list[dict[str, Any]]:
    """(Re)write folder/runs.csv and folder/summary/ from the runs under folder/runs/, both in one step; return
    the rows."""
    rows = collect(folder / "runs")
    if not rows:
        raise UserError(f"{folder}/runs holds no runs: a result folder holds runs/<dataset>/<method>/beta<β>/seed<s>/")
    with atomic_outputs(files=[folder / "runs.csv"], dirs=[folder / "summary"]) as (runs_csv, summary_dir):
        write_derived(runs_csv, summary_dir, rows)
    return rows


def collapsed(r: dict[str, Any]) -> bool:
    """A run whose posterior collapsed to the prior: no active unit (no latent's posterior mean varies over the
    data set; tcvae.metrics.active_units). Its MIG of 0 says nothing about disentanglement."""
    return r["active_units"] == 0


def captured_text(runs: list[dict[str, Any]]) -> str:
    """Factors captured over some runs of one data set: "2 of 4", or the range over seeds, "1–2 of 4"."""
    counts = sorted(r["factors_captured"] for r in runs if r["factors_captured"] is not None)
    if not counts:
        return "—"
    span = str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    return f"{span} of {runs[0]['factors_scored']}"


def table(rows: list[dict[str, Any]], title: str, missing: list[str] = ()) -> Any:
    """A rich table of the runs: per data set, method and β the median MIG, TC and ELBO over seeds, the factors
    captured (their range over seeds) and the runs counted, collapsed ones named; `missing` runs are listed under it."""
    from rich.table import Table

    from rich.markup import escape

    t = Table(title=escape(title), title_justify="left",      # a folder named on the command line may hold [brackets]
              caption=escape("\n".join(f"missing: {m}" for m in missing)) or None,
              caption_justify="left")
    for c, justify in (("data set", "left"), ("method", "left"), ("β", "right"), ("MIG", "right"),
                       ("factors captured", "right"), ("TC (nats)", "right"), ("ELBO (nats)", "right"),
                       ("runs", "right")):
        t.add_column(c, justify=justify)
    cells: dict[tuple, list] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["method"], r["beta"]), []).append(r)
    for (dataset, method, beta), runs in cells.items():
        def median(k: str) -> str:
            values = [r[k] for r in runs if r[k] is not None]
            return number(np.median(values)) if values else "—"
        down = sum(collapsed(r) for r in runs)
        t.add_row(dataset, method, beta_name(beta), median("mig"), captured_text(runs), median("tc"), median("elbo"),
                  f"{len(runs)}" + (f" ({down} collapsed)" if down else ""))
    return t


def copy_run(src: Path, dest: Path) -> None:
    """Copy one run's small files (those that exist) from folder `src` into folder `dest`: plain files only, each
    within its cap (a symbolic link or a FIFO is refused, naming it, never followed)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if os.path.lexists(src / name):
            (dest / name).write_bytes(read_bounded(src / name, LIMITS[name], src))
