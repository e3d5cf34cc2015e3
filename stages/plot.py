"""`tcvae stage plot`: a result folder's small files → figures (PNG + PDF). No model, no data set, no torch."""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import typer

from stages.options import ParamsOption
from stages.params import load_params
from stages.runs import METRICS, need


def command(params: ParamsOption = Path("params.yaml"),
            results: Path = typer.Option(METRICS, help="result folder: data/metrics (the sweep) or data/results/<name>"),
            out: Path = typer.Option(Path("data/figures"), help="where the figures go")) -> None:
    """Draw MIG against β, TC against MIG, and per run: traversals, reconstructions, latents against factors,
    learning curves, the minibatch estimators against batch size."""
    from tcvae import plots
    from tcvae.results import read_rows

    cfg = load_params(params).plot
    rows = read_rows(need(results / "runs.csv", "aggregate", "…"))
    plots.mig_vs_beta(rows, out / "mig_vs_beta")
    plots.tc_vs_mig(rows, out / "tc_vs_mig")
    plots.metrics_vs_mig(rows, out / "metrics_vs_mig")
    jobs = [(results, out, r, cfg.unused_below) for r in rows]
    if len(jobs) > 1 and (os.cpu_count() or 1) > 1:     # runs are independent: draw them on every core
        with ProcessPoolExecutor(min(os.cpu_count(), len(jobs)), mp_context=get_context("fork")) as pool:
            list(pool.map(_draw_run, jobs))
    else:
        for job in jobs:
            _draw_run(job)


def _draw_run(job: tuple) -> None:
    """One run's figures: traversals, reconstructions, latents against factors, learning curves, estimator bias
    (and CelebA's attribute-named traversals)."""
    from tcvae import plots
    from tcvae.figure_data import read
    from tcvae.results import run_path

    results, out, r, unused_below = job
    rel = run_path(r["dataset"], r["method"], r["beta"], r["seed"])
    kl = json.loads(need(results / "runs" / rel / "eval.json", "evaluate", r["dataset"]).read_text())["kl_per_latent"]
    fd = read(need(results / "runs" / rel / "figures.h5", "evaluate", r["dataset"]))
    where = out / "runs" / rel
    name = f"{r['dataset']}: {plots.LABELS[r['method']]}, {plots.WEIGHT[r['method']]} = {r['beta']:g}, seed {r['seed']}"
    plots.traversals(fd, kl, where / "traversals", name, unused_below)
    plots.reconstructions(fd, where / "reconstructions", name)
    if fd.factors:
        plots.latents_vs_factors(fd, kl, where / "latents_vs_factors", name, unused_below)
    with open(need(results / "runs" / rel / "history.csv", "train", r["dataset"]), newline="") as f:
        history = [{k: float(v) for k, v in h.items()} for h in csv.DictReader(f)]
    plots.learning_curves(history, where / "learning_curves", name)
    if fd.attributes is not None:
        plots.traversals_by_attribute(fd, kl, where / "traversals_by_attribute", name)
    if fd.estimator_bias is not None:
        plots.estimator_bias(fd.estimator_bias, where / "estimator_bias", name)
