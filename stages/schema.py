"""The whole params.yaml as one tree of pydantic models, a section per stage (`Params` is the root).

Schemas only: no stage code and no I/O here, so every module of `stages/` can import it and nothing in it
imports a stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union, get_args

from urllib.parse import urlsplit

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeFloat, NonNegativeInt,
                      PositiveFloat, PositiveInt, StrictFloat, StrictInt, field_validator, model_validator)

from tcvae.resultfiles import METHODS


class Strict(BaseModel):
    """Every params section: unknown keys are refused, values are immutable once validated. Types are strict
    (no `steps: true` or `steps: "5"`; an int is still a float) and numbers finite (no .inf or .nan)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# YAML has no path or tuple type: these two are read from a string and a list (the rest stays strict)
def _plain_path(p: object) -> object:
    """The text of a path as written (before Path() turns "" into "."): not blank, no control characters."""
    if isinstance(p, str) and (not p.strip() or any(ord(c) < 32 or c == "\x7f" for c in p)):
        raise ValueError("give a non-empty path without control characters (NUL, line breaks)")
    return p


def _expand(p: Path) -> Path:
    try:
        return p.expanduser()          # `~/…` works
    except RuntimeError:               # `~name/…` for a user this machine does not know
        raise ValueError(f"{str(p)[:60]}: `~` names no home folder on this machine") from None


UserPath = Annotated[Path, Field(strict=False), BeforeValidator(_plain_path), AfterValidator(_expand)]


# ---- data ----

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
Md5 = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


def _plain_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("a URL needs a host name")
    if {".", ".."} & set(parts.path.split("/")):
        raise ValueError("a URL with '.' or '..' in its path: write the file's own address")
    return url


Url = Annotated[str, Field(pattern=r"^https?://\S+$", max_length=2000), AfterValidator(_plain_url)]
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
    file: UserPath | None = None
    step: dict[Literal[DSPRITES_FACTORS], PositiveInt] = {}   # keep every k-th value of a factor
    keep: dict[Literal[DSPRITES_FACTORS], Annotated[list[NonNegativeInt], Field(min_length=1)]] = {}  # or these values

    @field_validator("url")
    @classmethod
    def _names_a_file(cls, url: str) -> str:
        if not urlsplit(url).path.rsplit("/", 1)[-1]:   # the download is saved under the URL's file name
            raise ValueError("the URL must end in the file's name (…/dsprites_ndarray_….npz)")
        return url

    @model_validator(mode="after")
    def _step_fits(self):
        for name, k in self.step.items():
            if k >= DSPRITES_SIZES[name]:
                raise ValueError(f"step.{name} = {k}: must be below the factor's {DSPRITES_SIZES[name]} values "
                                 f"(to keep a single value, list it under `keep`)")
        for name, values in self.keep.items():
            if name in self.step:
                raise ValueError(f"{name}: give `step` or `keep` for a factor, not both")
            bad = [v for v in values if v >= DSPRITES_SIZES[name]]
            if bad:
                raise ValueError(f"keep.{name}: {bad[0]} is not a class index of {name} (0–{DSPRITES_SIZES[name] - 1})")
            _unique(f"keep.{name} value", values)
        return self


class FacesData(FileSource):
    kind: Literal["faces"]
    source: Literal["procedural", "file"] = "procedural"   # the Basel renders are not downloadable
    file: UserPath | None = None
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
    file: UserPath | None = None
    attributes_url: Url | None = _drive("0B7EVK8r0v71pblRyaVFSWGxPY0U")
    attributes_md5: Md5 = "75e246fa4810816ffd6ee81facbd244c"
    attributes: UserPath | None = None
    partition_url: Url | None = _drive("0B7EVK8r0v71pY0NSMzRuSXJEVkk")
    partition_md5: Md5 = "d32c9cbf5e040fd4025c592c306e6668"
    partition: UserPath | None = None
    limit: PositiveInt | None = None            # only the first `limit` images (quick runs)


class Shapes3dData(FileSource):
    """Shapes3D from the official file (268 MB, md5-checked), or `file`: a copy you have. With `file`, md5 is
    checked when set (the official one by default; `md5: null` accepts another copy of the same layout)."""
    kind: Literal["shapes3d"]
    source: Literal["download", "file"] = "download"     # no offline stand-in
    url: Url = "https://storage.googleapis.com/3d-shapes/3dshapes.h5"
    md5: Md5 | None = "099a2078d58cec4daad0702c55d06868"
    file: UserPath | None = None

    @model_validator(mode="after")
    def _download_needs_md5(self):
        if self.source == "download" and self.md5 is None:
            raise ValueError("source 'download' needs `md5:` (the official file's is the default)")
        return self


DataSpec = Annotated[Union[DspritesData, FacesData, CelebaData, Shapes3dData], Field(discriminator="kind")]



# ---- train, sweep, compute ----

Arch = Literal["mlp", "conv"]
Method = Literal[METHODS]


class Anneal(Strict):
    """The original code's schedules, off (0) by default."""
    beta_warmup_steps: Annotated[int, Field(ge=0)] = 0   # β rises linearly from 0 over this many steps
    dimwise_kl_steps: Annotated[int, Field(ge=0)] = 0    # γ (dim-wise KL weight) rises linearly from 0


class DiscriminatorParams(Strict):
    """FactorVAE's critic optimiser (Kim & Mnih 2018: Adam 1e-4, betas 0.5, 0.9)."""
    lr: PositiveFloat = 1e-4
    betas: Annotated[tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]],
                     Field(strict=False)] = (0.5, 0.9)


class Capacity(Strict):
    """AnnealedVAE's capacity C (Burgess et al. 2018): raised linearly from 0 to `max` nats over `steps` steps, then
    held. Defaults: disentanglement_lib's AnnealedVAE (c_max = 25, iteration_threshold = 100,000; Burgess et al.
    used C_max = 25 nats on dSprites too)."""
    max: Annotated[float, Field(ge=0, le=1e4, allow_inf_nan=False)] = 25.0
    steps: Annotated[int, Field(ge=0, le=10**12)] = 100_000

    @model_validator(mode="after")
    def _reachable(self):
        if self.steps == 0 and self.max > 0:
            raise ValueError("`steps` is 0 but `max` > 0: the capacity needs at least one step to rise to its maximum")
        return self


class TrainParams(Strict):
    steps: Annotated[int, Field(gt=0, le=10**12)] | None = None         # optimisation steps; or give `epochs`
    epochs: Annotated[float, Field(gt=0, le=1e6)] | None = None
    batch_size: Annotated[int, Field(ge=2, le=65536)] = 256
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    latents: Annotated[int, Field(ge=1, le=512)] = 10
    mlp_width: Annotated[int, Field(ge=8, le=8192)] = 1200   # the MLP's hidden units (paper: 1200)
    arch: dict[str, Arch] = {"dsprites": "mlp", "faces": "conv", "celeba": "conv",
                             "shapes3d": "conv"}   # by data set name, else kind
    estimator: Literal["mss", "mws", "esmaeili"] = "mss"
    alpha: NonNegativeFloat = 1.0               # β-TCVAE's weight on the index-code MI
    gamma: NonNegativeFloat = 1.0               # β-TCVAE's weight on the dimension-wise KL
    anneal: Anneal = Anneal()
    discriminator: DiscriminatorParams = DiscriminatorParams()
    capacity: Capacity = Capacity()             # AnnealedVAE's (the sweep's weight is its γ)
    log_every: PositiveInt = 50                 # history.csv row (and MI/TC for every method) every k steps
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"   # matmuls; auto: fp32 on CPU, tf32 on CUDA

    @model_validator(mode="after")
    def _one_length(self):
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of `steps` and `epochs`")
        return self


class ComputeParams(Strict):
    """How runs are computed, not what they compute: no stage depends on it, so changing it never
    invalidates a trained or cached run."""
    device: Literal["auto", "cpu", "cuda"] = "auto"     # auto: CUDA when available, else CPU
    checkpoint_minutes: PositiveFloat = 2.0
    checkpoint_every_steps: PositiveInt | None = None   # also checkpoint every k steps (tests, debugging)
    # checkpoints in this folder, not beside the run: one the cluster's workers share, so a pre-empted task that
    # runs again in a fresh clone resumes (`tcvae sweep submit`); files are keyed by run and its training record
    checkpoint_dir: UserPath | None = None


Weight = Annotated[Union[StrictInt, StrictFloat], Field(ge=0, le=1e6, allow_inf_nan=False)]
Seed = Annotated[StrictInt, Field(ge=0, lt=2**32)]


def _unique(name: str, values: list) -> list:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"{seen[0]!r} is listed twice: each {name} names one run per combination")
    return values


class SweepParams(Strict):
    """The run matrix: for every data set and seed, each method at each of its weights (β; FactorVAE: γ). Weights
    are per method because their scales differ (FactorVAE's γ is not a β) and because β = 1 of β-VAE and of
    β-TCVAE (α = γ = 1) is one and the same VAE, worth training once. dvc.yaml has a train and an evaluate matrix
    stage per method, each reading `betas.<method>`, so every method is listed: [] runs none of it."""
    datasets: Annotated[list[str], Field(min_length=1)]
    betas: dict[Method, list[Weight]]
    seeds: Annotated[list[Seed], Field(min_length=1)]
    # Optional priority list of (method, weight) pairs for jobs that may not finish the sweep (the GPU job,
    # stages.gpu_job): each seed's runs in this order, seed by seed. DVC ignores it; every pair must be a run.
    order: list[Annotated[tuple[Method, Weight], Field(strict=False)]] = []

    @field_validator("datasets", "seeds")
    @classmethod
    def _no_repeats(cls, values: list, info) -> list:
        return _unique(info.field_name.removesuffix("s"), values)

    @field_validator("betas")
    @classmethod
    def _per_method(cls, betas: dict) -> dict:
        missing = [m for m in get_args(Method) if m not in betas]
        if missing:
            raise ValueError(f"list every method, [] for one not run (dvc.yaml has a stage per method): "
                             f"add {', '.join(f'`{m}: []`' for m in missing)}")
        if not any(betas.values()):
            raise ValueError("no runs: give at least one method a weight")
        for method, values in betas.items():
            _unique(f"{method} weight", values)
            for b in values:   # DVC names run folders from the value as written: 6.0 would be beta6.0, not beta6
                if isinstance(b, float) and b.is_integer():
                    raise ValueError(f"{method}: write {b!r} as {int(b)}: runs are named beta{int(b)}")
        return betas

    @model_validator(mode="after")
    def _order_names_runs(self):
        for method, weight in self.order:
            if weight not in self.betas.get(method, []):
                raise ValueError(f"order: [{method}, {weight}] is not a run of the sweep ({method}'s weights: "
                                 f"{self.betas.get(method) or 'none'})")
        _unique("order entry", [tuple(pair) for pair in self.order])
        return self

    @property
    def methods(self) -> list[str]:
        """The methods with at least one weight, in the order of `Method`."""
        return [m for m in get_args(Method) if self.betas.get(m)]


# ---- evaluate ----

class EvaluateParams(Strict):
    n_samples: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000   # posterior samples per entropy estimate
    batch_size: PositiveInt = 2048                                     # encoding batch
    discrete_bins: Annotated[int, Field(ge=2, le=1000)] = 20           # mig_discrete (disentanglement_lib)
    active_threshold: Annotated[float, Field(gt=0)] = 0.01             # Var_n(mu_j) above this: an active unit
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    scores: list[Literal["dci", "sap", "factorvae", "betavae"]] = ["dci", "sap", "factorvae", "betavae"]  # beside MIG



class FiguresParams(Strict):
    """What `evaluate` computes for each run's figures (figures.h5): it shapes the arrays, so evaluate depends on it."""
    traversal_range: Annotated[float, Field(gt=0, le=50)] = 3.0   # ±k prior standard deviations (the paper: 3)
    traversal_steps: Annotated[int, Field(ge=3, le=21)] = 9
    image: NonNegativeInt = 0                                  # index of the image whose posterior mean is traversed
    reconstructions: Annotated[int, Field(ge=1, le=32)] = 8
    attribute_range: Annotated[float, Field(gt=0, le=50)] = 6.0   # data sets with attributes (CelebA): ±k, as the paper
    attribute_latents: Annotated[int, Field(ge=1)] = 15        # …for the latents with the largest KL


# ---- plot ----

class PlotParams(Strict):
    """Drawing only: nothing here changes a number."""
    unused_below: Annotated[float, Field(gt=0, le=1e3)] = 0.1  # a latent with KL below this (nats) is marked unused


# ---- the whole file ----

class Params(Strict):
    data: dict[Name, DataSpec]
    train: TrainParams
    sweep: SweepParams
    evaluate: EvaluateParams = EvaluateParams()
    figures: FiguresParams = FiguresParams()
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
    def _arch_for_every_data_set(self):
        for name, spec in self.data.items():
            if name not in self.train.arch and spec.kind not in self.train.arch:
                raise ValueError(f"train.arch names neither data set '{name}' nor its kind '{spec.kind}': "
                                 f"add `{spec.kind}: mlp` or `{spec.kind}: conv`")
        return self

    @model_validator(mode="after")
    def _sweep_names_data(self):
        for name in self.sweep.datasets:
            if name not in self.data:
                raise ValueError(f"sweep.datasets: '{name}' is not a key of `data` ({', '.join(self.data)})")
        return self

    @model_validator(mode="after")
    def _capacity_needs_its_method(self):
        if "capacity" in self.train.model_fields_set and "annealedvae" not in self.sweep.methods:
            raise ValueError("train.capacity is AnnealedVAE's, but the sweep has no annealedvae run: "
                             "remove it, or give sweep.betas.annealedvae a weight (its γ)")
        return self

