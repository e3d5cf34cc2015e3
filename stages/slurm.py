"""`tcvae sweep submit` / `tcvae sweep status`: the sweep on a SLURM cluster, gathered through the DVC remote.

SLURM's own tools (sbatch, squeue, sacct), called with argument lists (no shell), rather than submitit: no
extra dependency, nothing pickled, and no need for the login node's Python environment to match the workers'.
One array job has a task per run still to do (what `tcvae sweep plan` calls neither done nor restorable from
the run-cache); each task clones the repository at the submitted commit into a throwaway folder, runs
`dvc repro --pull evaluate-<method>@…` and `dvc push --run-cache`. A final job (afterany) restores every
run from the remote and runs aggregate and plot. Submissions are recorded in .dvc/tmp/sweep-slurm.json
(the job ids `status` asks SLURM about)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from stages.params import load_params
from stages.runs import stage_name, sweep_runs
from tcvae.errors import UserError

PARAMS = Path("params.yaml")        # the pipeline's: DVC's stages (and so the tasks) read this one
RECORD = Path(".dvc/tmp/sweep-slurm.json")
LOGS = Path(".dvc/tmp/slurm")        # the tasks' logs, and the final job's copy of the figures and metrics
ACTIVE = {"PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued", "RUNNING": "running",
          "COMPLETING": "running", "SUSPENDED": "running"}

Partition = Annotated[str | None, typer.Option(help="SLURM partition (sbatch --partition)")]
Time = Annotated[str | None, typer.Option(help="time limit per task, as sbatch --time takes it (e.g. 4:00:00)")]
Cpus = Annotated[int | None, typer.Option(min=1, help="CPUs per task (sbatch --cpus-per-task)")]
Mem = Annotated[str | None, typer.Option(help="memory per task (sbatch --mem, e.g. 16G)")]
Gres = Annotated[str | None, typer.Option(help="generic resources per task, e.g. gpu:1 (sbatch --gres)")]
Lines = Annotated[list[str] | None, typer.Option("--sbatch-line", metavar="LINE",
                                                 help="an extra '#SBATCH …' option, e.g. --account=abc (repeatable)")]
Remote = Annotated[str | None, typer.Option(help="the DVC remote the tasks pull from and push to; default: DVC's default")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="print the two job scripts; submit nothing")]


def submit(partition: Partition = None, time: Time = None, cpus: Cpus = None, mem: Mem = None, gres: Gres = None,
           sbatch_line: Lines = None, remote: Remote = None, dry_run: DryRun = False) -> None:
    """Submit the sweep's runs still to do as one SLURM array (a task per run: its own clone at this commit,
    `dvc repro --pull` of its evaluate stage, `dvc push --run-cache`), then a job after it that restores
    every run from the remote and runs aggregate and plot. The runs are params.yaml's, as dvc.yaml reads it."""
    p = load_params(PARAMS)
    given = [(k, v) for k, v in (("partition", partition), ("time", time), ("cpus", cpus), ("mem", mem),
                                 ("gres", gres)) if v is not None]
    options = [f"--{'cpus-per-task' if k == 'cpus' else k}={v}" for k, v in given] + list(sbatch_line or [])
    arguments = [f"--{k}={v}" for k, v in given] + [f"--sbatch-line={line}" for line in sbatch_line or []]  # submit's
    _check_values(time, mem, gres)
    for option, line in zip(arguments, options):
        if any(ord(c) < 32 or ord(c) == 127 for c in line) or not line.startswith("-"):
            raise UserError(f"{option.split('=')[0]} {line[:80]!r}: one sbatch option per line, starting with '-', "
                            f"without control characters (e.g. --account=abc)")
    sbatch = _tool("sbatch")
    if partition:
        _check_partition(partition)
    commit = _clean_commit()
    name, url = _remote(remote)
    pending = [s for s, state in run_states(name).items() if state in ("to run", "failed")]
    if p.compute.checkpoint_dir is None:
        print("note: compute.checkpoint_dir is not set: a cancelled or pre-empted task starts its run over "
              "(its checkpoint was in its throwaway clone)", file=sys.stderr)
    root = Path.cwd().resolve()
    logs = (root / LOGS).resolve()
    array = _array_script(pending, options, root, commit, name, url, logs) if pending else None
    final = _final_script(options, root, commit, name, url, logs)
    if dry_run:
        print(array or "# no array: every run is done or restorable from the run-cache\n", end="")
        print(final, end="")
        return
    logs.mkdir(parents=True, exist_ok=True)
    array_id = _sbatch(sbatch, array) if array else None
    final_id = _sbatch(sbatch, final, [f"--dependency=afterany:{array_id}"] if array_id else [])
    record = _read_record()
    record.append({"array": array_id, "final": final_id, "commit": commit, "remote": name, "stages": pending,
                   "arguments": arguments})
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record, indent=1))
    print(f"submitted {len(pending)} runs as array job {array_id} (logs in {LOGS}/), then job {final_id} "
          f"(aggregate + plot); follow with `tcvae sweep status`" if array_id else
          f"every run is done or restorable: submitted job {final_id} (aggregate + plot)")


def status(remote: Remote = None) -> None:
    """Each run of the sweep: done (restorable from the remote's run-cache), queued, running, failed (submitted,
    no longer in SLURM's queue, not done: SLURM's accounting says why where it keeps one) or to run; and the
    command that resubmits exactly the failed ones."""
    load_params(PARAMS)
    name, _ = _remote(remote)
    states = run_states(name)
    reasons = _accounting()
    width = max(map(len, states), default=0)
    for stage, state in states.items():
        why = f" ({reasons[_task_of(stage)]})" if state == "failed" and _task_of(stage) in reasons else ""
        print(f"{stage:<{width}}  {state}{why}")
    counts = {s: list(states.values()).count(s) for s in ("done", "queued", "running", "failed", "to run")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    failed = counts["failed"] + counts["to run"]
    if failed:
        last = _read_record()[-1:] or [{"arguments": []}]
        again = " ".join(["tcvae", "sweep", "submit", *map(shlex.quote, last[0]["arguments"])]
                         + ([f"--remote={shlex.quote(remote)}"] if remote else []))
        print(f"resubmit the {failed} not done (and nothing queued, running or done): {again}")


def run_states(remote: str) -> dict[str, str]:
    """Each run's evaluate stage → done | queued | running | failed | to run. Done: its run-cache entry is on the
    remote (pulled here first); queued / running: its task is in SLURM's queue; failed: submitted, neither."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from stages.plan import _train_status

    try:
        repo = Repo()
        with repo, repo.lock:
            repo.stage_cache.pull(remote)       # the entries only (small files); outputs stay on the remote
            evaluated = _train_status(repo, last="evaluate-", pushed=True)
    except DvcException as e:
        raise UserError(f"DVC remote {remote!r}: cannot read its run-cache ({e})") from None
    p = load_params(PARAMS)
    runs = [stage_name("evaluate", *run) for run in sweep_runs(p.sweep)]
    queue = _queue()
    submitted = {s: sub["array"] for sub in _read_record() for s in sub["stages"] if sub["array"]}
    tasks = {s: f"{sub['array']}_{i}" for sub in _read_record() for i, s in enumerate(sub["stages"]) if sub["array"]}
    states = {}
    for stage in runs:
        if tasks.get(stage) in queue:
            states[stage] = queue[tasks[stage]]
        elif evaluated.get(stage) in ("done", "cached"):
            states[stage] = "done"
        else:
            states[stage] = "failed" if stage in submitted else "to run"
    return states


def _task_of(stage: str) -> str | None:
    return {s: f"{sub['array']}_{i}" for sub in _read_record() for i, s in enumerate(sub["stages"])}.get(stage)


def _queue() -> dict[str, str]:
    """Array task id (`<job>_<index>`) → queued | running, for every job SLURM has in its queue."""
    out = _slurm([_tool("squeue"), "--noheader", "--array", "--format=%i|%T"], "squeue")
    return {job: ACTIVE.get(state, "running") for job, _, state in
            (line.partition("|") for line in out.splitlines() if "|" in line)}


def _accounting() -> dict[str, str]:
    """Array task id → SLURM's final state (FAILED, CANCELLED, TIMEOUT, …) for our jobs, where accounting
    is kept (sacct); empty where it is not."""
    ids = sorted({str(sub["array"]) for sub in _read_record() if sub["array"]})
    sacct = shutil.which("sacct")
    if not ids or not sacct:
        return {}
    proc = subprocess.run([sacct, "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                           f"--jobs={','.join(ids)}"], capture_output=True, text=True)
    if proc.returncode:
        return {}
    return {job: state.split()[0].lower() for job, _, state in
            (line.partition("|") for line in proc.stdout.splitlines() if "|" in line)}


def _array_script(stages: list[str], options: list[str], root: Path, commit: str, remote: str, url: str,
                  logs: Path) -> str:
    listed = "\n".join(f"  {shlex.quote(s)}" for s in stages)
    return _header("tcvae-sweep", [f"--array=0-{len(stages) - 1}", f"--output={logs}/%A_%a.out", *options]) + f"""
stages=(
{listed}
)
stage=${{stages[$SLURM_ARRAY_TASK_ID]}}
{_clone(root, commit, remote, url)}
echo "$stage at {commit[:12]} in $work"
run dvc repro --pull "$stage"
run dvc push --run-cache
"""


def _final_script(options: list[str], root: Path, commit: str, remote: str, url: str, logs: Path) -> str:
    return _header("tcvae-sweep-gather", [f"--output={logs}/%j-gather.out", *options]) + f"""
{_clone(root, commit, remote, url)}
# every run restored from the remote, none trained here: a run not done stops this job (`tcvae sweep status`)
run tcvae sweep status --remote {shlex.quote(remote)} | tee status.txt
if grep -q "^resubmit" status.txt; then echo "not every run is done: nothing aggregated" >&2; exit 1; fi
run dvc repro --pull plot
run dvc push --run-cache
mkdir -p {shlex.quote(str(logs))}/$SLURM_JOB_ID && cp -r data/figures data/metrics data/mig.json {shlex.quote(str(logs))}/$SLURM_JOB_ID/
"""


def _header(name: str, options: list[str]) -> str:
    # SLURM sends SIGTERM before it kills (scancel, time limit, pre-emption); --signal asks for it 2 minutes
    # ahead of the limit as well. The shell passes it on to its process group: training checkpoints and exits.
    lines = [f"--job-name={name}", "--signal=B:TERM@120", *options]
    return "#!/bin/bash\n" + "".join(f"#SBATCH {line}\n" for line in lines) + """set -euo pipefail
run() { "$@" & wait $! ; }     # in the background, so the TERM trap runs at once, not when the command ends
trap 'trap "" TERM; kill -TERM 0; wait; exit 143' TERM
"""


def _clone(root: Path, commit: str, remote: str, url: str) -> str:
    q = shlex.quote
    return f"""work=$(mktemp -d "${{TMPDIR:-/tmp}}/tcvae-XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone --quiet --no-checkout {q(str(root))} "$work/repo"
cd "$work/repo"
git checkout --quiet {commit}
export PATH={q(str(Path(sys.executable).parent))}:$PATH PYTHONPATH="$PWD${{PYTHONPATH:+:$PYTHONPATH}}" DVC_NO_ANALYTICS=1
dvc remote add --local --force --default {q(remote)} {q(url)}"""


def _sbatch(sbatch: str, script: str, extra: list[str] | None = None) -> str:
    out = _slurm([sbatch, "--parsable", *(extra or [])], "sbatch", script)
    return out.strip().split(";")[0]


def _slurm(args: list[str], what: str, stdin: str | None = None) -> str:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if proc.returncode:
        first = next((line for line in proc.stderr.splitlines() if line.strip()), f"exit code {proc.returncode}")
        raise UserError(f"{what} refused: {first.strip()}")
    return proc.stdout


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"`{name}` not found: run this on the cluster's login node, where SLURM's tools are "
                        f"(or install them: apt-get install slurm-client)")
    return path


TIME = re.compile(r"(\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}|infinite|unlimited)")   # sbatch --time's forms
MEM = re.compile(r"\d+[KMGT]?")
GRES = re.compile(r"[A-Za-z0-9_.:,-]{1,200}")


def _check_values(time: str | None, mem: str | None, gres: str | None) -> None:
    """sbatch's own forms (man sbatch): a value off them would reach the job script's #SBATCH lines."""
    for option, value, form, example in (("--time", time, TIME, "minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM:SS"),
                                         ("--mem", mem, MEM, "a number with K, M, G or T: 16G"),
                                         ("--gres", gres, GRES, "name[:type]:count, e.g. gpu:1")):
        if value is not None and form.fullmatch(value) is None:
            raise UserError(f"{option} {value[:40]!r}: not a value sbatch takes ({example})")


def _check_partition(partition: str) -> None:
    known = _slurm([_tool("sinfo"), "--noheader", "--format=%R"], "sinfo").split()
    if partition not in known:
        raise UserError(f"--partition {partition}: not a partition of this cluster (known: {', '.join(known)})")


def _clean_commit() -> str:
    """HEAD, if the work tree has no uncommitted change to a tracked file (the tasks check out the commit)."""
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], capture_output=True, text=True)
        if proc.returncode:
            raise UserError(f"git {args[0]}: {proc.stderr.strip() or 'failed'} (run from the repository's root)")
        return proc.stdout
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    if changed:
        raise UserError(f"uncommitted changes ({', '.join(line[3:] for line in changed[:3])}"
                        f"{', …' if len(changed) > 3 else ''}): the tasks check out the commit, so they would "
                        f"train other code. Commit or stash them first")
    return git("rev-parse", "HEAD").strip()


def _remote(name: str | None) -> tuple[str, str]:
    """The DVC remote's name and URL; a UserError if there is none or it cannot be reached."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            remote = repo.cloud.get_remote(name)
            url = repo.config["remote"][remote.name]["url"]
            fs, path = remote.fs, remote.path
            reachable = fs.exists(path) or fs.protocol in ("local", "file") and fs.exists(fs.parent(path))
    except NotDvcRepoError:
        raise UserError(f"{Path.cwd()} is not a DVC repository: run from the repository's root") from None
    except (DvcException, KeyError) as e:
        raise UserError(f"DVC remote {name or '(default)'}: {e}" if name or not isinstance(e, KeyError) else
                        f"DVC remote {name!r} is not configured (`dvc remote list`)") from None
    except Exception as e:      # the file system's own error (network, credentials): one line
        raise UserError(f"DVC remote {name or '(default)'} cannot be reached: {e}") from None
    if not reachable:
        raise UserError(f"DVC remote {remote.name} ({url}) cannot be reached: {path} does not exist")
    return remote.name, url


def _read_record() -> list[dict]:
    """The submissions recorded by `submit`: [{"array": job id or null, "stages": [stage name], "arguments": [its
    options as given]}], checked (a damaged record is one line, exit 2: remove it and submit again)."""
    if not RECORD.exists():
        return []
    from tcvae.io import read_json

    record = read_json(RECORD, 16 * 2**20)
    ok = isinstance(record, list) and all(
        isinstance(sub, dict) and isinstance(sub.get("array"), (int, str, type(None)))
        and not isinstance(sub.get("array"), bool)
        and isinstance(sub.get("stages"), list) and all(isinstance(x, str) for x in sub["stages"])
        and isinstance(sub.get("arguments"), list) and all(isinstance(x, str) for x in sub["arguments"])
        for sub in record)
    if not ok:
        raise UserError(f"{RECORD}: not the record `tcvae sweep submit` writes; remove it (the jobs themselves are "
                        f"SLURM's) and submit again")
    return record
