"""Loading params.yaml (validated against stages.schema as a whole) and where each stage reads and writes.

Every stage validates the whole file, so a typo anywhere (`trian:`) is refused by any stage."""

from __future__ import annotations

import difflib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from stages.schema import Method, Params
from tcvae.io import write_json
from tcvae.results import beta_name, run_path
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
HEADLINE = Path("data/mig.json")     # its headline, the pipeline's DVC metric: short, so DVC's tables fit 120 columns
RESULTS = Path("data/results")      # shipped result sets, one folder each, listed in sets.yaml
TIMINGS = Path("data/timings")      # wall times per run and stage: not DVC outputs (they differ run to run)


def record_timing(run: "Run", stage: str, seconds: float, device: Any, extra: dict | None = None) -> None:
    """data/timings/<run>/<stage>.json: the wall time of this invocation and what it ran on (for provenance)."""
    import datetime
    import platform

    import torch

    cuda = device.type == "cuda"
    write_json(TIMINGS / run_path(run.dataset, run.method, run.beta, run.seed) / f"{stage}.json", {
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
    check_processed(p, dataset)
    s = p.sweep
    if not (dataset in s.datasets and method in s.methods and value in s.betas and seed in s.seeds):
        print(f"note: {dataset} {method} β={beta_name(value)} seed {seed} is not in params' sweep: fine for "
              f"exploring, but it will not appear in aggregate or figures", file=sys.stderr)
    elif params.resolve() != Path("params.yaml").resolve() and Path("dvc.yaml").is_file():
        print(f"note: {params} is not the pipeline's params.yaml, yet this run writes to {run_dir(dataset, method, value, seed)}, "
              f"the pipeline's own run of these coordinates; `dvc status` will call it modified, and "
              f"`dvc repro` restores the pipeline's", file=sys.stderr)
    if p.compute.device != "cpu":      # parallel workers on a multi-GPU machine: one GPU each
        claim_gpu(visible_gpus())
    return Run(p, dataset, method, value, seed, run_dir(dataset, method, value, seed))


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


# ---- loading ----

MAX_BYTES = 1 << 20        # a params file is a few KB; anything near a megabyte is not one
MAX_VALUES = 100_000       # values after YAML aliases are expanded (a billion-laughs file expands to 9**9)
MAX_DEPTH = 32             # nesting levels (params nest four deep)
MAX_ROWS = 15              # invalid values shown; the rest are counted


def load_params(path: Path) -> Params:
    """Read and validate params.yaml; raise UserError with a key/value/rule table if anything is off.

    Any file is answered in well under a second: its size, nesting and alias expansion are bounded before
    anything is built from it, and duplicate keys (where YAML would silently keep the last) are refused."""
    raw = read_yaml(path)
    try:
        return Params.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        raise UserError(_explain(path, e)) from None


def read_yaml(path: Path) -> object:
    """The YAML document at `path` as plain Python data, or a UserError saying why it is not a params file."""
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a params file\n  pass --params path/to/params.yaml")
    if not path.exists():
        raise UserError(f"params file not found: {path}\n  run from the repository root, or pass --params PATH")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES // 1024} KiB; a params file is a few KB of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start} is {data[e.start:e.start + 1]!r}); "
                        f"a params file is YAML") from None
    try:
        loader = yaml.SafeLoader(text)
        loader.name = str(path)       # for error marks (`in "params.yaml", line 3`)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_nodes(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _Refused as e:
        raise UserError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML:\n{_clip(str(e), 800)}") from None
    except RecursionError:
        raise UserError(f"{path}: nested more than {MAX_DEPTH} levels deep; params nest four") from None
    except (ValueError, OverflowError) as e:     # e.g. an integer of more than 4,300 digits
        what = "a number of more than 4,300 digits" if "digits" in str(e) else _clip(str(e), 200)
        raise UserError(f"{path}: a value cannot be read: {what}") from None


class _Refused(yaml.YAMLError):
    """Valid YAML that no params file should be (too deep, too large, a repeated key)."""


def _check_nodes(root: yaml.Node) -> None:
    """Refuse (as yaml.YAMLError) documents nested too deeply, expanding past MAX_VALUES values through
    aliases, referring to themselves, or repeating a key in one mapping. Shared (aliased) nodes are
    measured once, so a billion-laughs file is refused in microseconds."""
    sizes: dict[int, tuple[int, int]] = {}      # id(node) -> (values when expanded, height)
    busy: set[int] = set()

    def measure(node: yaml.Node, where: str) -> tuple[int, int]:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in busy or len(busy) > MAX_DEPTH:
            raise _Refused(f"{where or 'the document'}: nested more than {MAX_DEPTH} levels deep "
                                 f"(or an alias that refers to itself)")
        busy.add(id(node))
        size, height = 1, 0
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    name = (key.tag, key.value)
                    line = key.start_mark.line + 1
                    if name in seen:
                        inside = f" in `{where}`" if where else ""
                        raise _Refused(f"key '{_clip(key.value, 60)}'{inside} appears twice (lines {seen[name]} "
                                             f"and {line}); YAML would silently keep the last. Remove one")
                    seen[name] = line
                child = f"{where}.{key.value}" if where and isinstance(key, yaml.ScalarNode) else \
                    (key.value if isinstance(key, yaml.ScalarNode) else where)
                for sub in (key, value):
                    s, h = measure(sub, _clip(str(child), 60))
                    size, height = size + s, max(height, h + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                s, h = measure(item, f"{where}.{i}" if where else str(i))
                size, height = size + s, max(height, h + 1)
        busy.discard(id(node))
        if size > MAX_VALUES:
            raise _Refused(f"{where or 'the document'}: expands to more than {MAX_VALUES:,} values "
                                 f"(YAML aliases repeating aliases?); a params file holds a few hundred")
        sizes[id(node)] = (size, height)
        return size, height

    measure(root, "")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _short(value: object, n: int = 60) -> str:
    """A bounded repr: never builds the repr of a huge value only to cut it."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxtuple, r.maxset, r.maxlevel = n, n, 6, 6, 6, 6, 3
    r.maxlong = 40
    return _clip(r.repr(value), n)


def _explain(path: Path, error: ValidationError) -> str:
    from rich.console import Console
    from rich.table import Table

    errors = error.errors(include_url=False, include_context=False)
    table = Table(title=f"{path}: {len(errors)} invalid value(s); nothing was run", title_justify="left")
    for col in ("key", "value", "rule"):
        table.add_column(col, overflow="fold")
    for e in errors[:MAX_ROWS]:
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("dsprites", "faces", "celeba", "shapes3d") and e["loc"].index(p) == 2)]
        key = _clip(".".join(loc) or "(top level)", 80)
        rule = _clip(e["msg"].removeprefix("Value error, "), 300)
        if e["type"] == "extra_forbidden":
            rule = "unknown key"
            if len(loc) == 1:
                close = difflib.get_close_matches(loc[0], Params.model_fields, n=1)
                rule += f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(Params.model_fields)})"
        value = "(missing)" if e["type"] == "missing" else _short(e.get("input"))
        table.add_row(key, value, rule)
    if len(errors) > MAX_ROWS:
        table.add_row("…", "", f"and {len(errors) - MAX_ROWS} more")
    out = io.StringIO()
    Console(file=out, width=110, no_color=True).print(table)
    return out.getvalue().rstrip()
