"""`tcvae stage evaluate`: one trained run → its eval.json (MIG, discrete MIG, ELBO, KL decomposition) and
figures.h5 (what its figures draw)."""

from __future__ import annotations

import time
from pathlib import Path

from stages.options import BetaOption, DatasetOption, MethodOption, ParamsOption, SeedOption
from stages.runs import need, open_run, processed_path, record_timing


def command(dataset: DatasetOption, method: MethodOption, beta: BetaOption, seed: SeedOption = 0,
            params: ParamsOption = Path("params.yaml")) -> None:
    """Evaluate one trained run on its whole data set; writes eval.json and figures.h5 beside model.pt."""
    from rich.console import Console

    from tcvae import data
    from tcvae.evaluate import evaluate
    from tcvae.figure_data import write
    from tcvae.io import write_json
    from tcvae.train import load_model, pick_device

    start = time.monotonic()
    run = open_run(params, dataset, method, beta, seed)
    device = pick_device(run.params.compute.device)
    model, record = load_model(need(run.dir / "model.pt", "train", dataset), device)
    ds = data.load(need(processed_path(dataset), "preprocess", dataset))
    e = run.params.evaluate
    result, drawn = evaluate(model, ds, n_samples=e.n_samples, batch_size=e.batch_size, n_bins=e.discrete_bins,
                             active_threshold=e.active_threshold, seed=e.seed, device=device, scores=e.scores,
                             figures=run.params.figures,
                             precision=record.get("precision", "fp32"),    # the precision the run was trained with
                             train_batch=run.params.train.batch_size)
    write_json(run.dir / "eval.json", {"run": {"dataset": dataset, "method": method, "beta": run.beta, "seed": seed},
                                       **result})
    write(run.dir / "figures.h5", drawn)
    record_timing(run, "evaluate", time.monotonic() - start, device)
    mig = f"MIG {result['mig']['score']:.3f}, " if "mig" in result else ""
    Console(stderr=True, highlight=False).print(
        f"{run.dir}: {mig}TC {result['decomposition']['total_correlation']:.3f} nats, ELBO {result['elbo']:.1f} nats, "
        f"{result['active_units']} active units")
