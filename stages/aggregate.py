"""`tcvae stage aggregate`: the sweep's runs → data/metrics/ (their small files, runs.csv, summary/) and the headline
data/mig.json, printed.

With `--results FOLDER` it summarises a result set that is already collected (data/results/<name>/)."""

from __future__ import annotations

from pathlib import Path

import typer

from stages.options import ParamsOption
from stages.params import load_params
from stages.runs import HEADLINE, METRICS, run_dir, sweep_runs
from tcvae.errors import UserError
from tcvae.io import atomic_outputs, refuse_links, write_json


def command(params: ParamsOption = Path("params.yaml"),
            results: Path = typer.Option(None, help="summarise this result folder instead of collecting the sweep")) -> None:
    """Collect exactly the runs that `sweep` lists (never a glob: a shrunk sweep's old runs are ignored) and
    print them; a run not evaluated stops it, a run evaluated before its model was retrained is named stale."""
    from tcvae import results as r
    from tcvae.console import console, count

    out = console(stderr=True)
    if results is not None:
        refuse_links(results, results if results.is_absolute() else results.parts[0])
        if not (results / "runs").is_dir():
            raise UserError(f"{results}/runs: no such folder; a result folder holds runs/<dataset>/<method>/…")
        rows = r.summarise_folder(results)
        out.print(r.table(rows, f"{results}: {count(len(rows), 'run')}"))
        return
    s = load_params(params).sweep
    runs = [(run_dir(*c), r.run_path(*c)) for c in sweep_runs(s)]
    missing = [str(src / "eval.json") for src, _ in runs if not (src / "eval.json").is_file()]
    if missing:
        raise UserError(f"{len(missing)} run(s) of the sweep are not evaluated, e.g. {missing[0]}\n"
                        f"  run `dvc repro` (or `tcvae stage evaluate …` for each)")
    stale = [str(src) for src, _ in runs if (src / "model.pt").is_file()
             and (src / "model.pt").stat().st_mtime > (src / "eval.json").stat().st_mtime]
    # runs/, runs.csv, summary/ and the headline change together: an interruption leaves the old four
    with atomic_outputs(files=[METRICS / "runs.csv", HEADLINE], dirs=[METRICS / "runs", METRICS / "summary"]) as (
            runs_csv, headline, folder, summary):
        for src, rel in runs:
            r.copy_run(src, folder / rel)
        rows = r.collect(folder)             # every eval.json readable before anything is replaced
        write_json(headline, r.headline(r.write_derived(runs_csv, summary, rows)))
    out.print(r.table(rows, f"{METRICS}: the sweep's {count(len(rows), 'run')} (medians over seeds)",
                          [f"{s} (stale: model.pt is newer than eval.json; rerun evaluate)" for s in stale]))
