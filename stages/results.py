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
           source: Path = typer.Option(None, "--from", metavar="FOLDER|ARCHIVE",
                                       help="a GPU job's results (results.tar.gz, or that archive unpacked) "
                                            "instead of the sweep's"),
           add: bool = typer.Option(False, "--add", help="add these runs to an existing set (new seeds or βs)"),
           force: bool = typer.Option(False, "--force", help="replace a set (or, with --add, runs) that differ")) -> None:
    """Copy the sweep's small outputs (data/metrics/runs/: eval.json, history.csv, figures.h5 per run), or a GPU
    job's (--from), into data/results/<name>/ with provenance.json (params, commit, date, device, versions, wall
    times), atomically."""
    import tempfile

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
        raise UserError(f"result set name {name!r}: use lower-case letters, digits, '-' and '_' (it names a folder)")
    if source is None:
        if not (METRICS / "runs.csv").is_file() or not (METRICS / "runs").is_dir():
            raise UserError(f"{METRICS}/runs is missing: run `dvc repro aggregate` first (export ships what it collected)")
        commit, dirty = _git_commit()
        _ship(name, METRICS / "runs", TIMINGS, params, commit, dirty, add, force)
        return
    if source.is_dir():
        _ship_job(name, source, add, force)
        return
    if not source.is_file():
        raise UserError(f"--from {source}: no such folder or archive")
    with tempfile.TemporaryDirectory(prefix="tcvae-export.") as tmp:
        unpack(source, Path(tmp))
        _ship_job(name, Path(tmp), add, force)


ARCHIVE_LIMIT = 256 * 2**20    # unpacked bytes: a job's archive holds small files only (~150 KB a run)
ARCHIVE_MEMBERS = 20_000


def unpack(archive: Path, dest: Path) -> None:
    """Unpack a GPU job's results archive (tar, gzipped or not) into `dest`: plain files and folders only (links,
    devices and absolute or `..` paths are refused), at most ARCHIVE_LIMIT bytes; then tar's `data` filter."""
    import gzip
    import tarfile
    import zlib

    try:
        with tarfile.open(archive) as tar:
            members, total = [], 0
            for m in tar:
                if len(members) >= ARCHIVE_MEMBERS:
                    raise UserError(f"--from {archive}: more than {ARCHIVE_MEMBERS:,} entries; not a GPU job's archive")
                if not (m.isfile() or m.isdir()):
                    raise UserError(f"--from {archive}: entry {m.name!r} is a link or a special file; "
                                    f"a GPU job's archive holds plain files only")
                parts = Path(m.name).parts
                if Path(m.name).is_absolute() or ".." in parts:
                    raise UserError(f"--from {archive}: entry {m.name!r} points outside the archive's folder")
                total += m.size
                if total > ARCHIVE_LIMIT:
                    raise UserError(f"--from {archive}: unpacks to more than {ARCHIVE_LIMIT // 2**20} MiB; "
                                    f"a GPU job's archive holds small files only")
                members.append(m)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"--from {archive}: not a readable tar archive ({type(e).__name__}: {e})") from None


def _ship_job(name: str, folder: Path, add: bool, force: bool) -> None:
    """Export a GPU job's unpacked results (runs/, timings/, params.yaml, job.json: stages.gpu_job)."""
    for needed in ("runs", "params.yaml", "job.json"):
        if not (folder / needed).exists():
            raise UserError(f"--from: {needed} is missing; a GPU job's results hold runs/, timings/, params.yaml "
                            f"and job.json (scripts/gpu-sweep.sh writes them)")
    try:
        job = json.loads((folder / "job.json").read_text())
        if not isinstance(job, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise UserError(f"--from: job.json is not the job's record ({e})") from None
    commit, dirty = job.get("commit"), job.get("uncommitted_changes")
    if commit is None:      # the tree travelled without .git: this checkout's commit, dirty unless its code is the job's
        from stages.gpu_job import code_digest

        commit, dirty = _git_commit()
        dirty = dirty or code_digest() != job.get("code_sha256")
    _ship(name, folder / "runs", folder / "timings", folder / "params.yaml", commit, dirty, add, force,
          job={k: job.get(k) for k in ("code_sha256", "budget_s", "parallel", "tiny", "probe")})


def _ship(name: str, source: Path, timings: Path, params: Path, commit: str | None, dirty: bool | None,
          add: bool, force: bool, job: dict | None = None) -> None:
    """Copy the runs under `source` (runs/<dataset>/<method>/beta<β>/seed<s>/) into data/results/<name>/ with their
    timings and params file as provenance; `job`: the GPU job's own record, kept with each run."""
    from rich.console import Console

    import torch

    from tcvae import results
    from tcvae.console import console, count
    from tcvae.train import resolve_precision

    p = load_params(params)
    new = results.collect(source)
    dest = RESULTS / name
    old = json.loads((dest / "provenance.json").read_text()) if (dest / "provenance.json").is_file() else None
    keys = [str(results.run_path(r["dataset"], r["method"], r["beta"], r["seed"])) for r in new]
    if not keys:
        raise UserError(f"{source}: no evaluated runs to export")
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
            timing = {stage: _read_json(timings / key / f"{stage}.json") for stage in ("train", "evaluate")}
            trained_on = (timing["train"] or {}).get("device", "cpu")     # `auto` as it was resolved for the run
            precision = (timing["train"] or {}).get("precision") or resolve_precision(p.train.precision, torch.device(trained_on))
            prov["runs"][key] = {"params": params_file, "commit": commit, "uncommitted_changes": dirty,
                                 "precision": precision, **timing, **({"gpu_job": job} if job else {})}
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
