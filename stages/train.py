"""`tcvae stage train`: one run of the sweep matrix (dataset × method × β × seed) → data/runs/…/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from stages.options import BetaOption, DatasetOption, MethodOption, ParamsOption, SeedOption
from stages.strict import Strict

Arch = Literal["mlp", "conv"]
Method = Literal["betavae", "tcvae", "factorvae"]


class Anneal(Strict):
    """The original code's schedules, off (0) by default."""
    beta_warmup_steps: Annotated[int, Field(ge=0)] = 0   # β rises linearly from 0 over this many steps
    dimwise_kl_steps: Annotated[int, Field(ge=0)] = 0    # γ (dim-wise KL weight) rises linearly from 0


class DiscriminatorParams(Strict):
    """FactorVAE's critic optimiser (Kim & Mnih 2018: Adam 1e-4, betas 0.5, 0.9)."""
    lr: PositiveFloat = 1e-4
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.5, 0.9)


class TrainParams(Strict):
    steps: PositiveInt | None = None            # optimisation steps; or give `epochs`
    epochs: PositiveFloat | None = None
    batch_size: Annotated[int, Field(ge=2, le=65536)] = 256
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    latents: Annotated[int, Field(ge=1, le=512)] = 10
    mlp_width: Annotated[int, Field(ge=8, le=8192)] = 1200   # the MLP's hidden units (paper: 1200)
    arch: dict[str, Arch] = {"dsprites": "mlp", "faces": "conv", "celeba": "conv"}   # by data set name, else kind
    estimator: Literal["mss", "mws"] = "mss"
    alpha: NonNegativeFloat = 1.0               # β-TCVAE's weight on the index-code MI
    gamma: NonNegativeFloat = 1.0               # β-TCVAE's weight on the dimension-wise KL
    anneal: Anneal = Anneal()
    discriminator: DiscriminatorParams = DiscriminatorParams()
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


class SweepParams(Strict):
    """The run matrix: every combination is one train / evaluate run (dvc.yaml's `matrix`)."""
    datasets: Annotated[list[str], Field(min_length=1)]
    methods: Annotated[list[Method], Field(min_length=1)]
    betas: Annotated[list[Annotated[float, Field(ge=0)] | Annotated[int, Field(ge=0)]], Field(min_length=1)]
    seeds: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


def command(dataset: DatasetOption, method: MethodOption, beta: BetaOption, seed: SeedOption = 0,
            params: ParamsOption = Path("params.yaml")) -> None:
    """Train one model; resumes from data/runs/…/checkpoint.pt after an interruption."""
    from stages.params import need, open_run, processed_path
    from tcvae import data
    from tcvae.train import fit

    run = open_run(params, dataset, method, beta, seed)
    p, c = run.params, run.params.compute
    ds = data.load(need(processed_path(dataset), "preprocess", dataset))
    arch = p.train.arch.get(dataset, p.train.arch.get(p.data[dataset].kind))
    record = {"dataset": dataset, "method": method, "beta": run.beta, "seed": seed,
              "data": p.data[dataset].model_dump(mode="json"), "train": p.train.model_dump(mode="json")}
    fit(ds, p.train, method=method, beta=run.beta, seed=seed, arch=arch, out=run.dir, record=record,
        device=c.device, checkpoint_minutes=c.checkpoint_minutes, checkpoint_every_steps=c.checkpoint_every_steps)
