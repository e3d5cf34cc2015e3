"""`tcvae stage evaluate`: one trained run → its eval.json (MIG, discrete MIG, ELBO, KL decomposition)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import Field, PositiveInt

from stages.strict import Strict


class EvaluateParams(Strict):
    n_samples: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000   # posterior samples per entropy estimate
    batch_size: PositiveInt = 2048                                     # encoding batch
    discrete_bins: Annotated[int, Field(ge=2, le=1000)] = 20           # mig_discrete (disentanglement_lib)
    active_threshold: Annotated[float, Field(gt=0)] = 0.01             # Var_n(mu_j) above this: an active unit
    seed: Annotated[int, Field(ge=0)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


def command(params: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
            dataset: str = typer.Option(..., help="data set name (a key of `data`)"),
            method: str = typer.Option(..., help="betavae | tcvae | factorvae"),
            beta: str = typer.Option(..., help="the method's weight, as in the run's directory"),
            seed: int = typer.Option(0, min=0)) -> None:
    """Evaluate one trained run on its whole data set; writes eval.json beside model.pt."""
    from stages.params import load_params, processed_path, run_coordinates, run_dir
    from stages.train import need
    from tcvae import data
    from tcvae.evaluate import evaluate
    from tcvae.io import write_json
    from tcvae.train import load_model, pick_device

    p = load_params(params)
    value = run_coordinates(p, dataset, method, beta)
    out = run_dir(dataset, method, beta, seed)
    device = pick_device(p.evaluate.device)
    model, record = load_model(need(out / "model.pt", "train", dataset), device)
    ds = data.load(need(processed_path(dataset), "preprocess", dataset))
    e = p.evaluate
    result = evaluate(model, ds, n_samples=e.n_samples, batch_size=e.batch_size, n_bins=e.discrete_bins,
                      active_threshold=e.active_threshold, seed=e.seed, device=device)
    write_json(out / "eval.json", {"run": {"dataset": dataset, "method": method, "beta": value, "seed": seed},
                                   **result})
