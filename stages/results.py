"""`tcvae results show | list | export`: read results again, and ship a sweep's small outputs as a result set.

A result set is `data/results/<name>/` in git (tcvae.results describes the folder): `export` copies the
workspace sweep's collected runs (data/metrics/runs/, written by the aggregate stage) into it with a
`provenance.json`, and lists it in data/results/sets.yaml, whose sets `dvc repro` draws (stage results@<name>).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import typer
import yaml

from stages.options import ParamsOption
from stages.params import load_params
from stages.runs import METRICS, RESULTS, TIMINGS
from tcvae.errors import UserError
from tcvae.io import atomic_dir


def show(folder: Path = typer.Argument(METRICS, help="a result folder: data/metrics or data/results/<name>")) -> None:
    """Print a result folder's runs: per data set, method and β the median MIG, TC and ELBO, and the runs counted."""
    from tcvae import results
    from tcvae.console import console, count

    if not (folder / "runs.csv").is_file():
        raise UserError(f"{folder}/runs.csv is missing: run `dvc repro aggregate` first" if folder == METRICS else
                        f"{folder}/runs.csv is missing: not a result folder")
    rows = results.read_rows(folder / "runs.csv")
    console().print(results.table(rows, f"{folder}: {count(len(rows), 'run')} (medians over seeds)"))


def list_sets() -> None:
    """Print each shipped result set: its runs, and per data set and method the median MIG at the best β."""
    from rich.table import Table

    from tcvae import results
    from tcvae.console import console, count

    table = Table(title=f"result sets in {RESULTS}/ (drawn by `dvc repro`: stage results@<name>)", title_justify="left")
    for c in ("set: runs, trained when and on what", "data set", "method", "MIG", "best β", "ρ(TC, MIG)"):
        table.add_column(c, overflow="fold")
    for name in listed_sets():
        folder = RESULTS / name
        rows = results.read_rows(folder / "runs.csv") if (folder / "runs.csv").is_file() else []
        prov = json.loads((folder / "provenance.json").read_text()) if (folder / "provenance.json").is_file() else {}
        label = f"{name}\n{count(len(rows), 'run')}, {_made(prov)}"
        for dataset, methods in results.summarise(rows).items():
            for method, s in methods.items():
                table.add_row(label, dataset, method, results.number(s["mig"]) if "mig" in s else "—",
                              results.beta_name(s["beta"]) if "beta" in s else "—",
                              "—" if s.get("rho") is None else results.number(s["rho"], 2, sign=True))
                label = ""
        if label:
            table.add_row(label, "", "", "", "", "")
    console().print(table)


def _made(prov: dict) -> str:
    """When and on what a set's runs were trained, from its provenance: '2026-11-28 on CPU (Intel Xeon …, 2 threads)'."""
    trained = [run.get("train") or {} for run in prov.get("runs", {}).values()]
    dates = sorted({t["date"] for t in trained if t.get("date")})
    when = "date unknown" if not dates else dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
    machines = sorted({t.get("device_name") or "a GPU" if t.get("device") == "cuda" else
                       f"CPU ({t.get('device_name') or '?'}, {t.get('threads', '?')} threads)" for t in trained})
    return f"{when}\non {', '.join(machines) or 'an unrecorded machine'}"


def listed_sets() -> list[str]:
    path = RESULTS / "sets.yaml"
    return list(yaml.safe_load(path.read_text()).get("sets") or []) if path.is_file() else []


def export(name: str = typer.Argument(..., help="the set's name: data/results/<name>/"),
           params: ParamsOption = Path("params.yaml"),
           add: bool = typer.Option(False, "--add", help="add these runs to an existing set (new seeds or βs)"),
           force: bool = typer.Option(False, "--force", help="replace a set (or, with --add, runs) that differ")) -> None:
    """Copy the sweep's small outputs (data/metrics/runs/: eval.json, history.csv, figures.h5 per run) into
    data/results/<name>/ with provenance.json (params, commit, date, device, versions, wall times), atomically."""
    import torch

    from tcvae import results
    from tcvae.console import console, count
    from tcvae.train import resolve_precision

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
        raise UserError(f"result set name {name!r}: use lower-case letters, digits, '-' and '_' (it names a folder)")
    p = load_params(params)
    source = METRICS / "runs"
    if not (METRICS / "runs.csv").is_file() or not source.is_dir():
        raise UserError(f"{METRICS}/runs is missing: run `dvc repro aggregate` first (export ships what it collected)")
    new = results.collect(METRICS / "runs")
    dest = RESULTS / name
    old = json.loads((dest / "provenance.json").read_text()) if (dest / "provenance.json").is_file() else None
    keys = [str(results.run_path(r["dataset"], r["method"], r["beta"], r["seed"])) for r in new]
    if old is not None and not force:
        differ = [k for k in keys if k in old["runs"] and not _same_run(source / k, dest / "runs" / k)]
        if not add and (differ or set(old["runs"]) != set(keys)):
            raise UserError(f"{dest} holds a different result set ({len(old['runs'])} runs): pass --add to add these "
                            f"runs to it, or --force to replace it")
        if differ:
            raise UserError(f"{dest} already has other results for {len(differ)} of these runs, e.g. {differ[0]}: "
                            f"pass --force to replace them")
    params_text = params.read_text()
    params_file = f"params/{hashlib.sha256(params_text.encode()).hexdigest()[:12]}.yaml"
    commit, dirty = _git_commit()
    with atomic_dir(dest) as tmp:
        prov = {"name": name, "runs": {}}
        if old is not None and add:
            for folder in ("runs", "params"):
                if (dest / folder).is_dir():
                    shutil.copytree(dest / folder, tmp / folder)
            prov["runs"] = dict(old["runs"])
        for key in keys:
            shutil.rmtree(tmp / "runs" / key, ignore_errors=True)
            results.copy_run(source / key, tmp / "runs" / key)
            timing = {stage: _read_json(TIMINGS / key / f"{stage}.json") for stage in ("train", "evaluate")}
            trained_on = (timing["train"] or {}).get("device", "cpu")     # `auto` as it was resolved for the run
            precision = (timing["train"] or {}).get("precision") or resolve_precision(p.train.precision, torch.device(trained_on))
            prov["runs"][key] = {"params": params_file, "commit": commit, "uncommitted_changes": dirty,
                                 "precision": precision, **timing}
        (tmp / ".gitignore").write_text("/figures\n")      # drawn by `dvc repro`, kept in DVC's cache (as DVC writes it)
        (tmp / "params").mkdir(parents=True, exist_ok=True)
        (tmp / params_file).write_text(params_text)
        prov["runs"] = dict(sorted(prov["runs"].items()))
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")
        rows = results.summarise_folder(tmp)
    sets = sorted(set(listed_sets()) | {name})
    (RESULTS / "sets.yaml").write_text("# Shipped result sets, drawn by `dvc repro` (stage results@<name>); "
                                       "`tcvae results export` keeps this list.\n" + yaml.safe_dump({"sets": sets}))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    console(highlight=False).print(
        f"{dest}: {count(len(rows), 'run')} ({len(keys)} exported now), {size / 2**20:.1f} MiB\n"
        f"  next: `dvc repro results@{name}` draws its figures; "
        f"`git add {dest} {RESULTS}/sets.yaml dvc.lock` ships it")


def _same_run(a: Path, b: Path) -> bool:
    return all((a / f).is_file() == (b / f).is_file() and (not (a / f).is_file() or
               (a / f).read_bytes() == (b / f).read_bytes()) for f in ("eval.json", "history.csv"))


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _git_commit() -> tuple[str | None, bool]:
    """The repository's HEAD and whether tracked files have uncommitted changes (None outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip() != ""
        return head, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, False
