"""`tcvae stage plot`: the aggregate and the trained models → data/figures/ (PNG + PDF)."""

from __future__ import annotations

import itertools
from pathlib import Path
from stages.options import ParamsOption
from stages.params import load_params, need, processed_path, run_dir


def command(params: ParamsOption = Path("params.yaml")) -> None:
    """Draw MIG against β, TC against MIG, and per run: traversals, reconstructions, latents against factors."""
    import json

    import numpy as np

    from tcvae import data, plots, results
    from tcvae.evaluate import encode
    from tcvae.train import load_model

    p = load_params(params)
    out = Path("data/figures")
    rows = results.read_rows(need(Path("data/metrics/runs.csv"), "aggregate", "…"))
    plots.mig_vs_beta(rows, out / "mig_vs_beta")
    plots.tc_vs_mig(rows, out / "tc_vs_mig")
    s, cfg = p.sweep, p.plot
    for dataset in s.datasets:
        ds = data.load(need(processed_path(dataset), "preprocess", dataset))
        pick = np.sort(np.random.default_rng(0).permutation(len(ds))[:cfg.max_images])
        subset = data.Dataset(ds.name, ds.stored[pick], ds.image_shape, ds.packed,
                              None if ds.factors is None else ds.factors[pick],
                              None if ds.factor_values is None else ds.factor_values[pick],
                              ds.factor_names, ds.factor_sizes, ds.metric_factors, ds.source)
        shown = ds.batch(np.linspace(0, len(ds) - 1, cfg.reconstructions).astype(int))
        image = ds.batch(np.array([min(cfg.image, len(ds) - 1)]))[0]
        for method, beta, seed in itertools.product(s.methods, s.betas, s.seeds):
            run = run_dir(dataset, method, beta, seed)
            ev = json.loads(need(run / "eval.json", "evaluate", dataset).read_text())
            model, _ = load_model(need(run / "model.pt", "train", dataset))
            where = out / "runs" / dataset / method / f"beta{beta}" / f"seed{seed}"
            name = f"{dataset}: {plots.LABELS[method]}, {plots.WEIGHT[method]} = {beta}, seed {seed}"
            plots.traversals(model, image, ev["kl_per_latent"], where / "traversals", name, cfg.traversal_range,
                             cfg.traversal_steps, cfg.unused_below)
            plots.reconstructions(model, shown, where / "reconstructions", name)
            if ds.attributes is not None:
                mu, _, _ = encode(model, subset, decode=False)
                plots.traversals_by_attribute(model, image, ev["kl_per_latent"], mu.numpy(), ds.attributes[pick],
                                              ds.attribute_names, where / "traversals_by_attribute", name,
                                              cfg.attribute_range, cfg.traversal_steps, cfg.attribute_latents)
            if ds.factors is not None:
                mu, _, _ = encode(model, subset, decode=False)
                plots.latents_vs_factors(mu.numpy(), subset.factors, ds.factor_names, subset.factor_values,
                                         ev["kl_per_latent"], where / "latents_vs_factors",
                                         name + (f" (a {len(pick):,}-image sample)" if len(pick) < len(ds) else ""),
                                         cfg.unused_below)
