"""Where each stage reads and writes (relative to the repository root, where DVC runs stages), and one run of the
sweep matrix with its coordinates checked against the validated params."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from stages.params import _clip, load_params
from stages.schema import Method, Params, SweepParams
from tcvae.errors import UserError
from tcvae.io import write_json
from tcvae.resultfiles import beta_name
from tcvae.results import run_path


def raw_dir(dataset: str) -> Path:
    return Path("data/raw") / dataset


def processed_path(dataset: str) -> Path:
    return Path("data/processed") / f"{dataset}.h5"


def run_dir(dataset: str, method: str, beta: float, seed: int) -> Path:
    """data/runs/<dataset>/<method>/beta<β>/seed<seed>, β spelt once for all (beta6, beta0.5), as DVC's matrix
    spells the sweep's values."""
    return Path("data/runs") / run_path(dataset, method, beta, seed)


METRICS = Path("data/metrics")      # the workspace sweep's result folder (tcvae.results)
HEADLINE = Path("data/mig.json")     # its headline, the pipeline's DVC metric: short, so DVC's tables fit 120 columns
RESULTS = Path("data/results")      # shipped result sets, one folder each, listed in sets.yaml
TIMINGS = Path("data/timings")      # wall times per run and stage: not DVC outputs (they differ run to run)
EXPLORE = Path("data/explore")      # runs trained by hand outside the sweep: no stage reads or writes them


def record_timing(run: "Run", stage: str, seconds: float, device: Any, extra: dict | None = None) -> None:
    """data/timings/<run>/<stage>.json (data/timings/explore/<run>/ for a run outside the sweep): the wall time of
    this invocation and what it ran on (for provenance)."""
    import datetime

    import torch

    cuda = device.type == "cuda"
    rel = run_path(run.dataset, run.method, run.beta, run.seed)
    folder = TIMINGS / rel if run.dir == Path("data/runs") / rel else TIMINGS / "explore" / rel
    write_json(folder / f"{stage}.json", {
        "seconds": round(seconds, 2), "device": device.type, "device_count": torch.cuda.device_count() if cuda else 1,
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
        "date": datetime.date.today().isoformat(), **(extra or {})})


def _cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what the platform module knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sweep_runs(sweep: SweepParams) -> list[tuple[str, str, float, int]]:
    """The sweep's runs (dataset, method, β, seed): per data set, each method's weights as listed, each seed.
    With `sweep.order`, seed by seed: that seed's ordered (method, weight) pairs first, then its other runs.
    Every stage, command and plan that walks the sweep takes its runs from here."""
    if sweep.order:
        pairs = [tuple(p) for p in sweep.order]
        pairs += [(m, b) for m in sweep.methods for b in sweep.betas[m] if (m, b) not in pairs]
        return [(dataset, method, beta, seed) for seed in sweep.seeds for method, beta in pairs
                for dataset in sweep.datasets]
    return [(dataset, method, beta, seed) for dataset in sweep.datasets for method in sweep.methods
            for beta in sweep.betas[method] for seed in sweep.seeds]


def stage_name(stage: str, dataset: str, method: str, beta: float, seed: int) -> str:
    """DVC's name of one run's train or evaluate stage: dvc.yaml has one matrix stage per method, so
    `train-tcvae@dsprites-grid-6-0` (DVC spells β as the value was written, as `beta_name` does)."""
    return f"{stage}-{method}@{dataset}-{beta_name(beta)}-{seed}"


def select(p: Params, names: list[str] | None) -> list[str]:
    for n in names or []:
        if n not in p.data:
            raise UserError(f"--dataset {n}: not in params `data` (known: {', '.join(p.data)})")
    return names or list(p.data)


def need(path: Path, stage: str, dataset: str) -> Path:
    """`path` if it exists (a link too: the read that follows refuses it, naming it), else a UserError saying
    which stage makes it."""
    if not os.path.lexists(path):
        raise UserError(f"{path} is missing: run `dvc repro {stage}` (or `tcvae stage {stage} --dataset {dataset}`)")
    return path


@dataclass
class Run:
    """One run of the sweep matrix, its coordinates checked against the validated params."""
    params: "Params"
    dataset: str
    method: str
    beta: float
    seed: int
    dir: Path


def open_run(params: Path, dataset: str, method: str, beta: str, seed: int) -> Run:
    """Validate params and a run's coordinates; on a multi-GPU machine, claim a free GPU for this process."""
    from tcvae.devices import claim_gpu, visible_gpus
    from tcvae.train import pick_device

    p = load_params(params)
    value = run_coordinates(p, dataset, method, beta)
    check_processed(p, dataset)
    if p.compute.device != "cpu":      # parallel workers on a multi-GPU machine: one GPU each
        gpus = visible_gpus()
        if gpus == 0 and p.compute.device == "cuda":
            pick_device("cuda")        # refuses, naming compute.device, before anything is said about the run
        claim_gpu(gpus)
    where = run_dir(dataset, method, value, seed)
    if (dataset, method, value, seed) not in sweep_runs(p.sweep):     # outside every DVC dependency
        where = EXPLORE / run_path(dataset, method, value, seed)
        print(f"note: {dataset} {method} β={beta_name(value)} seed {seed} is not in params' sweep: it goes to "
              f"{where}\n  (for exploring: aggregate, figures and `dvc status` leave it alone)", file=sys.stderr)
    elif params.resolve() != Path("params.yaml").resolve() and Path("dvc.yaml").is_file():
        print(f"note: {params} is not the pipeline's params.yaml, yet this run writes to the pipeline's own run,\n"
              f"  {where}: `dvc status` will call it modified, and `dvc repro` restores it", file=sys.stderr)
    return Run(p, dataset, method, value, seed, where)


def check_processed(p: "Params", dataset: str) -> None:
    """Refuse a processed file that its data set's params no longer describe (made with another `step`,
    source, …): training on it would record params the data does not follow. A missing file is left to
    the stage, which says how to make it."""
    from tcvae.data import made_from

    path = processed_path(dataset)
    if not path.is_file():
        return
    then, now = made_from(path), p.data[dataset].model_dump(mode="json")
    if then == now:
        return
    rerun = f"rerun `dvc repro preprocess` (or `tcvae stage preprocess --dataset {dataset}`)"
    if then is None:
        raise UserError(f"{path} does not record the params that made it (an older tcvae made it): {rerun}")
    changed = [f"data.{dataset}.{k}: {_clip(repr(then.get(k)), 40)} then, {_clip(repr(now.get(k)), 40)} now"
               for k in sorted(set(then) | set(now)) if then.get(k) != now.get(k)]
    raise UserError(f"{path} was made from other params ({'; '.join(changed)}): {rerun}")


def run_coordinates(p: "Params", dataset: str, method: str, beta: str) -> float:
    """Check one run's coordinates (from the command line) against params; return β as a number."""
    problems = []
    if dataset not in p.data:
        problems.append(f"--dataset {dataset}: not a key of `data` ({', '.join(p.data)})")
    if method not in get_args(Method):
        problems.append(f"--method {method}: must be one of {', '.join(get_args(Method))}")
    try:
        value = float(beta.strip().replace("_", "x"))      # no `1_0` for 10: a folder is named after the number
        if not 0 <= value <= 1e6:
            raise ValueError
    except ValueError:
        problems.append(f"--beta {beta!r}: must be a number from 0 to 1e6")
        value = 0.0
    if problems:
        raise UserError("\n".join(problems))
    return value
