"""Loading params.yaml (validated against stages.schema as a whole) and where each stage reads and writes.

Every stage validates the whole file, so a typo anywhere (`trian:`) is refused by any stage."""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from stages.schema import Method, Params
from tcvae.io import write_json
from tcvae.results import run_path
from tcvae.errors import UserError

# ---- where things live (relative to the repository root, where DVC runs stages) ----

def raw_dir(dataset: str) -> Path:
    return Path("data/raw") / dataset


def processed_path(dataset: str) -> Path:
    return Path("data/processed") / f"{dataset}.h5"


def run_dir(dataset: str, method: str, beta: float, seed: int) -> Path:
    """data/runs/<dataset>/<method>/beta<β>/seed<seed>, β spelt once for all (beta6, beta0.5), as DVC's matrix
    spells the sweep's values."""
    return Path("data/runs") / run_path(dataset, method, beta, seed)


METRICS = Path("data/metrics")      # the workspace sweep's result folder (tcvae.results)
RESULTS = Path("data/results")      # shipped result sets, one folder each, listed in sets.yaml
TIMINGS = Path("data/timings")      # wall times per run and stage: not DVC outputs (they differ run to run)


def record_timing(run: "Run", stage: str, seconds: float, device: Any) -> None:
    """data/timings/<run>/<stage>.json: the wall time of this invocation and what it ran on (for provenance)."""
    import datetime
    import platform

    import torch

    cuda = device.type == "cuda"
    write_json(TIMINGS / run_path(run.dataset, run.method, run.beta, run.seed) / f"{stage}.json", {
        "seconds": round(seconds, 2), "device": device.type, "device_count": torch.cuda.device_count() if cuda else 1,
        "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
        "date": datetime.date.today().isoformat()})


def select(p: Params, names: list[str] | None) -> list[str]:
    for n in names or []:
        if n not in p.data:
            raise UserError(f"--dataset {n}: not in params `data` (known: {', '.join(p.data)})")
    return names or list(p.data)


def need(path: Path, stage: str, dataset: str) -> Path:
    """`path` if it exists, else a UserError saying which stage makes it."""
    if not path.is_file():
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

    p = load_params(params)
    value = run_coordinates(p, dataset, method, beta)
    if p.compute.device != "cpu":      # parallel workers on a multi-GPU machine: one GPU each
        claim_gpu(visible_gpus())
    return Run(p, dataset, method, value, seed, run_dir(dataset, method, value, seed))


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


# ---- loading ----

def load_params(path: Path) -> Params:
    """Read and validate params.yaml; raise UserError with a key/value/rule table if anything is off."""
    if not path.is_file():
        raise UserError(f"params file not found: {path}\n  run from the repository root, or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML:\n{e}") from None
    try:
        return Params.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        raise UserError(_explain(path, raw, e)) from None


def _explain(path: Path, raw: object, error: ValidationError) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{path}: {error.error_count()} invalid value(s); nothing was run", title_justify="left")
    for col in ("key", "value", "rule"):
        table.add_column(col, overflow="fold")
    for e in error.errors():
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("dsprites", "faces", "celeba", "shapes3d") and e["loc"].index(p) == 2)]
        key = ".".join(loc) or "(top level)"
        rule = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            rule = "unknown key"
            if len(loc) == 1:
                close = difflib.get_close_matches(loc[0], Params.model_fields, n=1)
                rule += f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(Params.model_fields)})"
        value = "(missing)" if e["type"] == "missing" else repr(e.get("input"))[:60]
        table.add_row(key, value, rule)
    out = io.StringIO()
    Console(file=out, width=110, no_color=True).print(table)
    return out.getvalue().rstrip()
