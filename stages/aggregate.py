"""`tcvae stage aggregate`: the sweep's eval.json files → data/metrics/runs.csv and summary.json."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from stages.options import ParamsOption
from stages.params import load_params, run_dir


def command(params: ParamsOption = Path("params.yaml")) -> None:
    """Collect exactly the runs that `sweep` lists (never a glob: a shrunk sweep's old runs are ignored)."""
    from tcvae import results
    from tcvae.errors import UserError
    from tcvae.io import write_json

    p = load_params(params)
    s = p.sweep
    rows, missing = [], []
    for dataset, method, beta, seed in itertools.product(s.datasets, s.methods, s.betas, s.seeds):
        path = run_dir(dataset, method, beta, seed) / "eval.json"
        if path.is_file():
            rows.append(results.row(json.loads(path.read_text())))
        else:
            missing.append(str(path))
    if missing:
        raise UserError(f"{len(missing)} run(s) of the sweep are not evaluated, e.g. {missing[0]}\n"
                        f"  run `dvc repro` (or `tcvae stage evaluate …` for each)")
    results.write_rows(Path("data/metrics/runs.csv"), rows)
    write_json(Path("data/metrics/summary.json"), results.summarise(rows))
