"""`tcvae stage evaluate`: one trained run → its eval.json (MIG, discrete MIG, ELBO, KL decomposition)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, PositiveInt

from stages.options import BetaOption, DatasetOption, MethodOption, ParamsOption, SeedOption
from stages.strict import Strict


class EvaluateParams(Strict):
    n_samples: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000   # posterior samples per entropy estimate
    batch_size: PositiveInt = 2048                                     # encoding batch
    discrete_bins: Annotated[int, Field(ge=2, le=1000)] = 20           # mig_discrete (disentanglement_lib)
    active_threshold: Annotated[float, Field(gt=0)] = 0.01             # Var_n(mu_j) above this: an active unit
    seed: Annotated[int, Field(ge=0)] = 0


def command(dataset: DatasetOption, method: MethodOption, beta: BetaOption, seed: SeedOption = 0,
            params: ParamsOption = Path("params.yaml")) -> None:
    """Evaluate one trained run on its whole data set; writes eval.json beside model.pt."""
    from stages.params import need, open_run, processed_path
    from tcvae import data
    from tcvae.evaluate import evaluate
    from tcvae.io import write_json
    from tcvae.train import load_model, pick_device

    run = open_run(params, dataset, method, beta, seed)
    device = pick_device(run.params.compute.device)
    model, record = load_model(need(run.dir / "model.pt", "train", dataset), device)
    ds = data.load(need(processed_path(dataset), "preprocess", dataset))
    e = run.params.evaluate
    result = evaluate(model, ds, n_samples=e.n_samples, batch_size=e.batch_size, n_bins=e.discrete_bins,
                      active_threshold=e.active_threshold, seed=e.seed, device=device,
                      precision=record.get("precision", "fp32"))    # the precision the run was trained with
    write_json(run.dir / "eval.json", {"run": {"dataset": dataset, "method": method, "beta": run.beta, "seed": seed},
                                       **result})
