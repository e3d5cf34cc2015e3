"""`tcvae stage train`: one run of the sweep matrix (dataset × method × β × seed) → data/runs/…/."""

from __future__ import annotations

import time
from pathlib import Path

from stages.options import BetaOption, DatasetOption, MethodOption, ParamsOption, SeedOption
from stages.runs import need, open_run, processed_path, record_timing


def command(dataset: DatasetOption, method: MethodOption, beta: BetaOption, seed: SeedOption = 0,
            params: ParamsOption = Path("params.yaml")) -> None:
    """Train one model; resumes from its checkpoint (data/runs/…/checkpoint.pt, or in compute.checkpoint_dir)
    after an interruption (Ctrl-C, SIGTERM as SLURM sends it, kill -9)."""
    from tcvae import data
    from tcvae.train import fit, pick_device, resolve_precision

    start = time.monotonic()
    run = open_run(params, dataset, method, beta, seed)
    p, c = run.params, run.params.compute
    ds = data.load(need(processed_path(dataset), "preprocess", dataset))
    arch = p.train.arch.get(dataset, p.train.arch.get(p.data[dataset].kind))
    record = {"dataset": dataset, "method": method, "beta": run.beta, "seed": seed,
              "data": p.data[dataset].model_dump(mode="json"), "train": p.train.model_dump(mode="json")}
    fit(ds, p.train, method=method, beta=run.beta, seed=seed, arch=arch, out=run.dir, record=record,
        device=c.device, checkpoint_minutes=c.checkpoint_minutes, checkpoint_every_steps=c.checkpoint_every_steps,
        checkpoint_dir=c.checkpoint_dir)
    device = pick_device(c.device)
    record_timing(run, "train", time.monotonic() - start, device, {"precision": resolve_precision(p.train.precision, device)})
