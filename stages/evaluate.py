"""`tcvae stage evaluate`: one trained run → its eval.json (MIG, discrete MIG, ELBO, KL decomposition) and
figures.h5 (what its figures draw)."""

from __future__ import annotations

import time
from pathlib import Path

from stages.options import BetaOption, DatasetOption, MethodOption, ParamsOption, SeedOption
from stages.runs import Run, need, open_run, processed_path, record_timing, stage_name
from tcvae.errors import UserError


def command(dataset: DatasetOption, method: MethodOption, beta: BetaOption, seed: SeedOption = 0,
            params: ParamsOption = Path("params.yaml")) -> None:
    """Evaluate one trained run on its whole data set; writes eval.json and figures.h5 beside model.pt."""
    from tcvae import data
    from tcvae.console import console, count
    from tcvae.evaluate import evaluate
    from tcvae.figure_data import write
    from tcvae.io import atomic_outputs, write_json
    from tcvae.results import number
    from tcvae.train import load_model, pick_device

    start = time.monotonic()
    run = open_run(params, dataset, method, beta, seed)
    device = pick_device(run.params.compute.device)
    model, record = load_model(need(run.dir / "model.pt", "train", dataset), device)
    ds = data.load(need(processed_path(dataset), "preprocess", dataset))
    check_model(run, record, run.dir / "model.pt", ds.image_shape[0])
    e = run.params.evaluate
    result, drawn = evaluate(model, ds, n_samples=e.n_samples, batch_size=e.batch_size, n_bins=e.discrete_bins,
                             active_threshold=e.active_threshold, seed=e.seed, device=device, scores=e.scores,
                             figures=run.params.figures,
                             precision=record.get("precision", "fp32"),    # the precision the run was trained with
                             train_batch=run.params.train.batch_size)
    with atomic_outputs(files=[run.dir / "eval.json", run.dir / "figures.h5"]) as (eval_json, figures):   # both or neither
        write_json(eval_json, {"run": {"dataset": dataset, "method": method, "beta": run.beta, "seed": seed}, **result})
        write(figures, drawn)
    record_timing(run, "evaluate", time.monotonic() - start, device)
    mig = f"MIG {number(result['mig']['score'])}, " if "mig" in result else ""
    console(stderr=True, highlight=False).print(
        f"{run.dir}: {mig}TC {number(result['decomposition']['total_correlation'])} nats, "
        f"ELBO {number(result['elbo'], 1)} nats, {count(result['active_units'], 'active unit')}")


def check_model(run: Run, record: dict, path: Path, channels: int) -> None:
    """Refuse a model.pt made for another run: its record (written by train) must name this run's data set,
    method, β and seed, the data and train params it is evaluated under, and the latents and channels they imply."""
    expected = {"dataset": run.dataset, "method": run.method, "beta": run.beta, "seed": run.seed,
                "data": run.params.data[run.dataset].model_dump(mode="json"),
                "train": run.params.train.model_dump(mode="json"), "latents": run.params.train.latents,
                "channels": channels}
    differ = [k for k, v in expected.items() if record.get(k) != v]
    if differ:
        k = differ[0]
        raise UserError(f"{path} was not made for this run: its record's `{k}` is {str(record.get(k))[:60]!r}, this "
                        f"run's {str(expected[k])[:60]!r}" + (f" (and {len(differ) - 1} more differ)" if len(differ) > 1
                                                            else "")
                        + f"; retrain it: `dvc repro {stage_name('train', run.dataset, run.method, run.beta, run.seed)}`")
