"""`tcvae stage plot`: a result folder's small files → figures (PNG + PDF). No model, no data set, no torch."""

from __future__ import annotations

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
    from tcvae.io import atomic_dir, refuse_links
    from tcvae.results import read_rows

    cfg = load_params(params).plot
    refuse_links(results, results if results.is_absolute() else results.parts[0])
    rows = read_rows(need(results / "runs.csv", "aggregate", "…"), results)
    inputs = [_read_run(results, r) for r in rows]       # every file checked before anything is drawn
    with atomic_dir(out) as tmp:         # the whole figures folder at once: an interruption keeps the old one whole
        plots.mig_vs_beta(rows, tmp / "mig_vs_beta")
        plots.tc_vs_mig(rows, tmp / "tc_vs_mig")
        plots.metrics_vs_mig(rows, tmp / "metrics_vs_mig")
        jobs = [(tmp, r, cfg.unused_below, *read) for r, read in zip(rows, inputs)]
        if len(jobs) > 1 and (os.cpu_count() or 1) > 1:     # runs are independent: draw them on every core
            with ProcessPoolExecutor(min(os.cpu_count(), len(jobs)), mp_context=get_context("fork")) as pool:
                list(pool.map(_draw_run, jobs))
        else:
            for job in jobs:
                _draw_run(job)


def _read_run(results: Path, r: dict) -> tuple:
    """One run's kl_per_latent (eval.json), figure arrays (figures.h5) and history (history.csv), each checked
    (tcvae.resultfiles) and its eval.json against the run's coordinates."""
    from tcvae.figure_data import read
    from tcvae.resultfiles import read_eval, read_history
    from tcvae.results import run_path

    folder = results / "runs" / run_path(r["dataset"], r["method"], r["beta"], r["seed"])
    coordinates = (r["dataset"], r["method"], float(r["beta"]), r["seed"])
    kl = read_eval(need(folder / "eval.json", "evaluate", r["dataset"]), coordinates, results)["kl_per_latent"]
    fd = read(need(folder / "figures.h5", "evaluate", r["dataset"]), len(kl), results)
    return kl, fd, read_history(need(folder / "history.csv", "train", r["dataset"]), results)


def _draw_run(job: tuple) -> None:
    """One run's figures: traversals, reconstructions, latents against factors, learning curves, estimator bias
    (and CelebA's attribute-named traversals)."""
    from tcvae import plots
    from tcvae.results import run_path

    out, r, unused_below, kl, fd, history = job
    where = out / "runs" / run_path(r["dataset"], r["method"], r["beta"], r["seed"])
    name = f"{r['dataset']}: {plots.LABELS[r['method']]}, {plots.WEIGHT[r['method']]} = {r['beta']:g}, seed {r['seed']}"
    plots.traversals(fd, kl, where / "traversals", name, unused_below)
    plots.reconstructions(fd, where / "reconstructions", name)
    if fd.factors:
        plots.latents_vs_factors(fd, kl, where / "latents_vs_factors", name, unused_below)
    plots.learning_curves(history, where / "learning_curves", name)
    if fd.attributes is not None:
        plots.traversals_by_attribute(fd, kl, where / "traversals_by_attribute", name)
    if fd.estimator_bias is not None:
        plots.estimator_bias(fd.estimator_bias, where / "estimator_bias", name)
