"""The whole params.yaml as one tree of pydantic models, and where each stage reads and writes.

Every stage validates the whole file, so a typo anywhere (`trian:`) is refused by any stage."""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union, get_args

import yaml
from pydantic import Field, PositiveInt, ValidationError, model_validator

from stages.strict import Strict
from stages.evaluate import EvaluateParams
from stages.plot import PlotParams
from stages.train import ComputeParams, Method, SweepParams, TrainParams
from tcvae.errors import UserError

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
Md5 = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Url = Annotated[str, Field(pattern=r"^https?://\S+$")]
DSPRITES_FACTORS = ("shape", "scale", "orientation", "posX", "posY")
DSPRITES_SIZES = dict(zip(DSPRITES_FACTORS, (3, 6, 40, 32, 32)))


class FileSource(Strict):
    """Shared by every data set: where its files come from."""

    @model_validator(mode="after")
    def _file_needs_path(self):
        if self.source == "file" and self.file is None:
            raise ValueError("source 'file' needs `file: <path>` naming the file you have")
        return self


class DspritesData(FileSource):
    kind: Literal["dsprites"]
    source: Literal["procedural", "download", "file"] = "procedural"
    url: Url = "https://github.com/deepmind/dsprites-dataset/raw/master/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    md5: Md5 = "7da33b31b13a06f4b04a70402ce90c2e"
    file: Path | None = None
    step: dict[Literal[DSPRITES_FACTORS], PositiveInt] = {}   # keep every k-th value of a factor

    @model_validator(mode="after")
    def _step_fits(self):
        for name, k in self.step.items():
            if k >= DSPRITES_SIZES[name]:
                raise ValueError(f"step.{name} = {k}: must be below the factor's {DSPRITES_SIZES[name]} values")
        return self


class FacesData(FileSource):
    kind: Literal["faces"]
    source: Literal["procedural", "file"] = "procedural"   # the Basel renders are not downloadable
    file: Path | None = None
    md5: Md5 | None = None                                  # checked when given
    identities: Annotated[int, Field(ge=1, le=50)] = 50     # keep the first k of the 50 (k × 2,541 images)


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


class CelebaData(FileSource):
    """CelebA from the official Google Drive files (or a mirror), or `file`: the zip or an extracted folder
    (Kaggle's nested layout too). Attributes and partition are read when present; with `file`, they are
    looked for beside it unless given."""
    kind: Literal["celeba"]
    source: Literal["download", "file"] = "download"
    url: Url = _drive("0B7EVK8r0v71pZjFTYXZWM3FlRnM")
    md5: Md5 = "00d2c5bc6d35e252742224ab0c1e8fcb"
    file: Path | None = None
    attributes_url: Url | None = _drive("0B7EVK8r0v71pblRyaVFSWGxPY0U")
    attributes_md5: Md5 = "75e246fa4810816ffd6ee81facbd244c"
    attributes: Path | None = None
    partition_url: Url | None = _drive("0B7EVK8r0v71pY0NSMzRuSXJEVkk")
    partition_md5: Md5 = "d32c9cbf5e040fd4025c592c306e6668"
    partition: Path | None = None
    limit: PositiveInt | None = None            # only the first `limit` images (quick runs)


class Shapes3dData(FileSource):
    """Shapes3D from the official file (268 MB, md5-checked), or `file`: a copy you have. With `file`, md5 is
    checked when set (the official one by default; `md5: null` accepts another copy of the same layout)."""
    kind: Literal["shapes3d"]
    source: Literal["download", "file"] = "download"     # no offline stand-in
    url: Url = "https://storage.googleapis.com/3d-shapes/3dshapes.h5"
    md5: Md5 | None = "099a2078d58cec4daad0702c55d06868"
    file: Path | None = None

    @model_validator(mode="after")
    def _download_needs_md5(self):
        if self.source == "download" and self.md5 is None:
            raise ValueError("source 'download' needs `md5:` (the official file's is the default)")
        return self


DataSpec = Annotated[Union[DspritesData, FacesData, CelebaData, Shapes3dData], Field(discriminator="kind")]


class Params(Strict):
    data: dict[Name, DataSpec]
    train: TrainParams
    sweep: SweepParams
    evaluate: EvaluateParams = EvaluateParams()
    plot: PlotParams = PlotParams()
    compute: ComputeParams = ComputeParams()

    @model_validator(mode="after")
    def _honest_names(self):
        for name, spec in self.data.items():
            if spec.kind == "faces" and spec.source == "procedural" and not name.endswith("-procedural"):
                raise ValueError(f"data.{name}: procedural faces are a stand-in for the Basel renders; "
                                 f"name the data set '{name}-procedural'")
        return self

    @model_validator(mode="after")
    def _sweep_names_data(self):
        for name in self.sweep.datasets:
            if name not in self.data:
                raise ValueError(f"sweep.datasets: '{name}' is not a key of `data` ({', '.join(self.data)})")
        return self


# ---- where things live (relative to the repository root, where DVC runs stages) ----

def raw_dir(dataset: str) -> Path:
    return Path("data/raw") / dataset


def processed_path(dataset: str) -> Path:
    return Path("data/processed") / f"{dataset}.h5"


def run_dir(dataset: str, method: str, beta: object, seed: int) -> Path:
    """data/runs/<dataset>/<method>/beta<β>/seed<seed>; β as written in params (DVC's matrix does the same)."""
    return Path("data/runs") / dataset / method / f"beta{beta}" / f"seed{seed}"


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
    return Run(p, dataset, method, value, seed, run_dir(dataset, method, beta, seed))


def run_coordinates(p: "Params", dataset: str, method: str, beta: str) -> float:
    """Check one run's coordinates (from the command line) against params; return β as a number."""
    problems = []
    if dataset not in p.data:
        problems.append(f"--dataset {dataset}: not a key of `data` ({', '.join(p.data)})")
    if method not in get_args(Method):
        problems.append(f"--method {method}: must be one of {', '.join(get_args(Method))}")
    try:
        value = float(beta)
        if not value >= 0:
            raise ValueError
    except ValueError:
        problems.append(f"--beta {beta}: must be a number ≥ 0")
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
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("dsprites", "faces", "celeba") and e["loc"].index(p) == 2)]
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
