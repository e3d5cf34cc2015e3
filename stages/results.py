"""`tcvae results show | list | export`: read results again, and ship a sweep's small outputs as a result set.

A result set is `data/results/<name>/` in git (tcvae.results describes the folder): `export` copies the
workspace sweep's collected runs (data/metrics/runs/, written by the aggregate stage) into it with a
`provenance.json`, and lists it in data/results/sets.yaml, whose sets `dvc repro` draws (stage results@<name>).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import typer
import yaml

from stages.options import ParamsOption
from stages.params import load_params
from stages.provenance import code_digest, git_commit
from stages.runs import METRICS, RESULTS, TIMINGS
from tcvae.errors import UserError
from tcvae.io import atomic_outputs, load_weights_only, read_bounded, read_json, refuse_links
from tcvae.resultfiles import LIMITS, check_name


def stage(name: str = typer.Argument(None, help="the set's name (default: from DVC's stage name, results@<name>)"),
          params: ParamsOption = Path("params.yaml")) -> None:
    """A shipped result set's table, summary and figures (dvc.yaml's results@<name>): aggregate --results, then
    plot into its figures/. The name comes from DVC (DVC_STAGE), never through a shell command line."""
    from stages import aggregate, plot

    if name is None:
        stage_name = os.environ.get("DVC_STAGE", "")
        if not stage_name.startswith("results@"):
            raise UserError("tcvae stage results: give the set's name (outside `dvc repro` there is no DVC_STAGE)")
        name = stage_name.removeprefix("results@")
    folder = set_folder(name, "DVC_STAGE" if os.environ.get("DVC_STAGE") else "the set's name")
    aggregate.command(params, results=folder)
    plot.command(params, results=folder, out=folder / "figures")


def set_folder(name: str, where: str) -> Path:
    """data/results/<name> for a name by the name rule, its folders no symbolic links."""
    folder = RESULTS / check_name(name, where)
    refuse_links(folder, RESULTS.parts[0])
    return folder


def show(folder: Path = typer.Argument(METRICS, help="a result folder: data/metrics or data/results/<name>")) -> None:
    """Print a result folder's runs: per data set, method and β the median MIG, TC and ELBO, and the runs counted."""
    from tcvae import results
    from tcvae.console import console, count

    if not os.path.lexists(folder / "runs.csv"):
        raise UserError(f"{folder}/runs.csv is missing: run `dvc repro aggregate` first" if folder == METRICS else
                        f"{folder}/runs.csv is missing: not a result folder")
    rows = results.read_rows(folder / "runs.csv", folder)
    console().print(results.table(rows, f"{folder}: {count(len(rows), 'run')} (medians over seeds)"))


def list_sets() -> None:
    """Print each shipped result set: its runs, and per data set and method the median MIG at the best β."""
    from rich.markup import escape
    from rich.table import Table

    from tcvae import results
    from tcvae.console import console, count

    table = Table(title=f"result sets in {RESULTS}/ (drawn by `dvc repro`: stage results@<name>)", title_justify="left")
    for c in ("set: runs, trained when and on what", "data set", "method", "MIG", "best β", "ρ(TC, MIG)"):
        table.add_column(c, overflow="fold")
    for name in listed_sets():
        folder = set_folder(name, f"{RESULTS}/sets.yaml")
        rows = results.read_rows(folder / "runs.csv", RESULTS) if os.path.lexists(folder / "runs.csv") else []
        prov = read_provenance(folder) or {"runs": {}}
        label = escape(f"{name}\n{count(len(rows), 'run')}, {_made(prov)}")      # provenance's text is not markup
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
    """The names data/results/sets.yaml lists (`sets: [name, …]`), each by the name rule; none if it is absent."""
    path = RESULTS / "sets.yaml"
    if not os.path.lexists(path):
        return []
    try:
        listed = yaml.safe_load(read_bounded(path, LIMITS["sets.yaml"], RESULTS.parts[0]).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0][:100]})") from None
    if listed is None:                                 # an empty file: no set listed
        return []
    sets = listed.get("sets") if isinstance(listed, dict) else None
    if not isinstance(listed, dict) or set(listed) - {"sets"} or not isinstance(sets, (list, type(None))):
        raise UserError(f"{path}: must be a mapping `sets: [name, …]` (what `tcvae results export` writes)")
    names = [check_name(n, str(path)) for n in sets or []]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: lists a set twice")
    return names


def read_provenance(folder: Path) -> dict | None:
    """A set's provenance.json ({"name", "runs": {run path: record}}), checked; None where there is none."""
    path = folder / "provenance.json"
    if not os.path.lexists(path):
        return None
    prov = read_json(path, LIMITS["provenance.json"], folder)
    if not isinstance(prov, dict) or not isinstance(prov.get("runs"), dict) or not all(
            isinstance(v, dict) for v in prov["runs"].values()):
        raise UserError(f"{path}: must hold an object whose `runs` maps each run's path to an object")
    return prov


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

    set_folder(name, "result set name")
    if source is None:
        if not (METRICS / "runs.csv").is_file() or not (METRICS / "runs").is_dir():
            raise UserError(f"{METRICS}/runs is missing: run `dvc repro aggregate` first (export ships what it collected)")
        commit, dirty = git_commit(Path.cwd())
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


UNPACKED_LIMIT = 256 * 2**20    # unpacked bytes: a job's archive holds small files only (~150 KB a run)
ARCHIVE_MEMBERS = 20_000


class _Bounded:
    """A seekable (decompressed) stream that refuses to be read or sought past `limit` bytes, before reading:
    tarfile reads a member's long name or pax header whole, so an archive declaring one of gigabytes would be a
    memory bomb, and a seek past a gzip's end decompresses everything on the way."""

    def __init__(self, f, limit: int, archive: Path):
        self.f, self.limit, self.archive = f, limit, archive

    def refuse(self) -> None:
        raise UserError(f"--from {self.archive}: unpacks to more than {self.limit // 2**20} MiB; "
                        f"a GPU job's archive holds small files only")

    def read(self, n: int = -1) -> bytes:
        room = self.limit - self.f.tell()
        if n is None or n < 0:
            data = self.f.read(room + 1)
            if len(data) > room:
                self.refuse()
            return data
        if n > room:
            self.refuse()
        return self.f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.f.tell() + offset if whence == 1 else None
        if target is None or target > self.limit:
            self.refuse()
        return self.f.seek(target)

    def tell(self) -> int:
        return self.f.tell()


def unpack(archive: Path, dest: Path) -> None:
    """Unpack a GPU job's results archive (tar, gzipped or not) into `dest`: plain files and folders only (links,
    devices and absolute or `..` paths are refused), at most UNPACKED_LIMIT bytes read from its decompressed
    stream (headers included); then tar's `data` filter."""
    import gzip
    import tarfile
    import zlib

    try:
        with open(archive, "rb") as raw:
            head = raw.read(6)
            raw.seek(0)
            gzipped = head[:2] == b"\x1f\x8b"
            if head[:3] == b"BZh" or head == b"\xfd7zXZ\x00":
                raise UserError(f"--from {archive}: compressed with {'bzip2' if head[:3] == b'BZh' else 'xz'}; "
                                f"a GPU job's archive is a tar, gzipped or not")
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
            bounded = _Bounded(stream, UNPACKED_LIMIT, archive)
            with tarfile.open(fileobj=bounded, mode="r:") as tar:
                members, total = [], 0
                for m in tar:
                    if len(members) >= ARCHIVE_MEMBERS:
                        raise UserError(f"--from {archive}: more than {ARCHIVE_MEMBERS:,} entries; not a GPU job's archive")
                    if not (m.isfile() or m.isdir()):
                        raise UserError(f"--from {archive}: entry {m.name!r} is a link or a special file; "
                                        f"a GPU job's archive holds plain files only")
                    parts = Path(m.name).parts
                    if len(m.name) > 1024 or len(parts) > 16:     # a run's files sit 6 folders deep
                        raise UserError(f"--from {archive}: entry {m.name[:60]!r}… has a path longer than a GPU "
                                        f"job's archive holds (1,024 characters, 16 folders)")
                    if Path(m.name).is_absolute() or ".." in parts:
                        raise UserError(f"--from {archive}: entry {m.name[:100]!r} points outside the archive's folder")
                    total += m.size
                    if total > UNPACKED_LIMIT:          # declared sizes: refused before anything is written
                        bounded.refuse()
                    members.append(m)
                tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, RecursionError) as e:
        raise UserError(f"--from {archive}: not a readable tar archive ({type(e).__name__}: {str(e)[:200]})") from None
    except OSError as e:          # an entry clashing with another (a file where a folder goes), or a full disk
        raise UserError(f"--from {archive}: cannot be unpacked ({e.strerror or type(e).__name__}); "
                        f"not a GPU job's archive") from None


def _ship_job(name: str, folder: Path, add: bool, force: bool) -> None:
    """Export a GPU job's unpacked results (runs/, timings/, params.yaml, job.json: stages.gpu_job)."""
    for needed in ("runs", "params.yaml", "job.json"):
        if not (folder / needed).exists():
            raise UserError(f"--from: {needed} is missing; a GPU job's results hold runs/, timings/, params.yaml "
                            f"and job.json (scripts/gpu-sweep.sh writes them)")
    job = read_json(folder / "job.json", LIMITS["provenance.json"], folder)
    if not isinstance(job, dict):
        raise UserError(f"--from: {folder / 'job.json'} is not the job's record (not a JSON object)")
    for key, kinds in (("commit", (str, type(None))), ("uncommitted_changes", (bool, type(None))),
                       ("code_sha256", (str, type(None)))):
        if not isinstance(job.get(key), kinds) or (isinstance(job.get(key), str) and not
                                                   re.fullmatch(r"[0-9a-f]{7,64}", job[key])):
            raise UserError(f"--from: {folder / 'job.json'}: `{key}` is not what the job writes "
                            f"({'a hex digest' if kinds[0] is str else 'true, false or null'})")
    refuse_links(folder / "params.yaml", folder)
    commit, dirty = job.get("commit"), job.get("uncommitted_changes")
    if commit is None:      # the tree travelled without .git: this checkout's commit, dirty unless its code is the job's
        commit, dirty = git_commit(Path.cwd())
        dirty = dirty or code_digest() != job.get("code_sha256")
    _ship(name, folder / "runs", folder / "timings", folder / "params.yaml", commit, dirty, add, force,
          job={k: job.get(k) for k in ("code_sha256", "budget_s", "parallel", "tiny", "probe")})


def _ship(name: str, source: Path, timings: Path, params: Path, commit: str | None, dirty: bool | None,
          add: bool, force: bool, job: dict | None = None) -> None:
    """Copy the runs under `source` (runs/<dataset>/<method>/beta<β>/seed<s>/) into data/results/<name>/ with their
    timings and params file as provenance; `job`: the GPU job's own record, kept with each run."""
    import torch

    from tcvae import results
    from tcvae.console import console, count
    from tcvae.train import resolve_precision

    dest = set_folder(name, "result set name")
    p = load_params(params)
    sets = sorted(set(listed_sets()) | {name})       # a damaged sets.yaml stops it before anything is written
    new = results.collect(source)
    if not new:
        raise UserError(f"{source} holds no runs (an empty sweep): there is nothing to export")
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise UserError(f"{dest} is a file, not a result set: move it away first")
    if os.path.isdir(dest) and not os.path.lexists(dest / "provenance.json") and not force:
        raise UserError(f"{dest} exists but is not a result set (no provenance.json): pass --force to replace it "
                        f"and everything in it, or choose another name")
    old = read_provenance(dest) if not force or add else None
    keys = [str(results.run_path(r["dataset"], r["method"], r["beta"], r["seed"])) for r in new]
    if old is not None and not force:
        differ = [k for k in keys if k in old["runs"] and not _same_run(source / k, dest / "runs" / k)]
        if not add and (differ or set(old["runs"]) != set(keys)):
            raise UserError(f"{dest} holds a different result set ({len(old['runs'])} runs): pass --add to add these "
                            f"runs to it, or --force to replace it")
        if differ:
            raise UserError(f"{dest} already has other results for {len(differ)} of these runs, e.g. {differ[0]}: "
                            f"pass --force to replace them")
    for r, key in zip(new, keys):           # the params recorded are the ones the runs were made with (a GPU job's
        if job is None:                     # params.yaml is the one its runs were trained with, models not shipped)
            _check_record(Path("data/runs") / key / "model.pt", p, r["dataset"], params)
    if old is not None and add and not force:
        for key, record in old["runs"].items():
            _check_same_params(dest, key, record, p, params)
    params_text = params.read_text()
    params_file = f"params/{hashlib.sha256(params_text.encode()).hexdigest()[:12]}.yaml"
    with atomic_outputs(files=[RESULTS / "sets.yaml"], dirs=[dest]) as (sets_yaml, tmp):   # the set and its listing together
        prov = {"name": name, "runs": {}}
        if old is not None and add:
            results.collect(dest / "runs")       # the set's own runs: plain files, each as its folder says
            for folder in ("runs", "params"):
                if (dest / folder).is_dir():
                    shutil.copytree(dest / folder, tmp / folder, symlinks=True)   # links copied as links: none here
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
        sets_yaml.write_text("# Shipped result sets, drawn by `dvc repro` (stage results@<name>); "
                             "`tcvae results export` keeps this list.\n" + yaml.safe_dump({"sets": sets}))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    console(highlight=False).print(
        f"{dest}: {count(len(rows), 'run')} ({len(keys)} exported now), {size / 2**20:.1f} MiB\n"
        f"  next: `dvc repro results@{name}` draws its figures; "
        f"`git add {dest} {RESULTS}/sets.yaml dvc.lock` ships it")


def _check_record(model: Path, p, dataset: str, params: Path) -> None:
    """Refuse to record `params` for a run whose model.pt (its train stage's record) says it was made with other
    data or train params: provenance must say how the run was made."""
    if not os.path.lexists(model):
        raise UserError(f"{model} is missing: export records each run's params from its model's record; run "
                        f"`dvc pull` or `dvc repro` for it first")
    saved = load_weights_only(model, remedy="rerun its train stage")
    record = saved if isinstance(saved, dict) else {}
    for section, now in (("data", p.data[dataset].model_dump(mode="json")), ("train", p.train.model_dump(mode="json"))):
        if record.get(section) != now:
            raise UserError(f"{model} was made with other `{section}` params than {params} holds: export with the "
                            f"params file its sweep was run with (--params)")


def _check_same_params(dest: Path, key: str, record: dict, p, params: Path) -> None:
    """Refuse (without --force) to add runs made with other data or train params than a set's runs were."""
    path = dest / str(record.get("params"))
    if not os.path.lexists(path):
        raise UserError(f"{path}: missing (provenance.json names it as the params of {key})")
    read_bounded(path, LIMITS["params"], dest)                 # a plain, small file: then validated as params
    then, dataset = load_params(path), key.split("/")[0]
    same_data = dataset not in p.data or (dataset in then.data and then.data[dataset] == p.data[dataset])
    if then.train != p.train or not same_data:
        raise UserError(f"{dest}: its run {key} was made with other data or train params than {params}: one median "
                        f"over both would mix them; export to another set, or pass --force to add them anyway")


def _same_run(a: Path, b: Path) -> bool:
    """Whether runs a and b hold the same eval.json and history.csv (plain files within their caps)."""
    def content(folder: Path, name: str) -> bytes | None:
        return read_bounded(folder / name, LIMITS[name], folder) if os.path.lexists(folder / name) else None
    return all(content(a, f) == content(b, f) for f in ("eval.json", "history.csv"))


def _read_json(path: Path) -> dict | None:
    """A timing record (data/timings/…), checked; None where there is none."""
    if not os.path.lexists(path):
        return None
    record = read_json(path, LIMITS["timing"])
    if not isinstance(record, dict):
        raise UserError(f"{path}: must hold a JSON object (a timing record, written by the stage)")
    return record
