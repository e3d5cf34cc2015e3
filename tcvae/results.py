"""Collecting evaluated runs: one row per run, and medians with quartiles per dataset × method × β."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from tcvae.io import atomic_path

FIELDS = ["dataset", "method", "beta", "seed", "mig", "mig_discrete", "elbo", "log_px", "kl", "mi", "tc",
          "dimwise_kl", "active_units"]
SUMMARISED = ["mig", "mig_discrete", "tc", "elbo"]


def row(ev: dict[str, Any]) -> dict[str, Any]:
    """The runs.csv row of one eval.json (MIG columns empty for data sets without factors)."""
    d = ev["decomposition"]
    return {**ev["run"], "mig": ev.get("mig", {}).get("score"), "mig_discrete": ev.get("mig_discrete", {}).get("score"),
            "elbo": ev["elbo"], "log_px": ev["log_px"], "kl": ev["kl"], "mi": d["mutual_info"],
            "tc": d["total_correlation"], "dimwise_kl": d["dimwise_kl"], "active_units": ev["active_units"]}


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows({k: ("" if r[k] is None else r[k]) for k in FIELDS} for r in rows)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """runs.csv back as dicts with numbers parsed (empty → None)."""
    def parse(k: str, v: str):
        if k in ("dataset", "method"):
            return v
        return None if v == "" else (int(v) if k in ("seed", "active_units") else float(v))
    with open(path, newline="") as f:
        return [{k: parse(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{dataset: {method: {"beta<β>": {metric: {median, q1, q3}, "runs": n}}}} over seeds."""
    out: dict[str, Any] = {}
    for r in rows:
        cell = out.setdefault(r["dataset"], {}).setdefault(r["method"], {}).setdefault(f"beta{r['beta']:g}", [])
        cell.append(r)
    for methods in out.values():
        for betas in methods.values():
            for key, runs in betas.items():
                stats: dict[str, Any] = {"runs": len(runs)}
                for m in SUMMARISED:
                    values = [r[m] for r in runs if r[m] is not None]
                    if values:
                        q1, med, q3 = np.percentile(values, [25, 50, 75])
                        stats[m] = {"median": float(med), "q1": float(q1), "q3": float(q3)}
                betas[key] = stats
    return out
