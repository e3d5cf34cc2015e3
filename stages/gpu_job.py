"""The one GPU job (scripts/gpu-sweep.sh runs it): probe the device, then train and evaluate the sweep's runs in
`sweep.order` for as long as a time budget allows, each finished run added to the result archive at once.

No DVC: the stages run as `python -m tcvae stage …` in a work folder. Environment (all optional):
  OUT                  where the ≤ 8 files that come back are written (default ./gpu-sweep-out)
  TCVAE_GPU_BUDGET_S   wall seconds for the whole job (default 480); it never overruns by more than KILL_MARGIN_S
  TCVAE_GPU_PARAMS     the params file (default params-gpu.yaml)
  TCVAE_GPU_TINY=1     the rehearsal: the same steps on the CPU at tiny sizes
  TCVAE_GPU_WORK       the work folder (default: a fresh one under /tmp)
  TCVAE_COMMIT         the commit the working tree is (for provenance, where the tree has no .git)
  TCVAE_GPU_START      when the budget began (Unix time; the script sets it), else when the driver started

Files in $OUT: results.tar.gz (the result set so far: runs/…/{eval.json, history.csv, figures.h5},
timings/…, params.yaml, job.json; `tcvae results export NAME --from results.tar.gz` ships it), probe.json,
job.log, summary.txt. The last lines printed are the summary.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from stages.provenance import code_digest, git_commit

ROOT = Path(__file__).resolve().parents[1]
KILL_MARGIN_S = 25          # a process still running this long after the deadline is killed (the issue allows 30)
PROBE_LIMIT_S = 60
RETURNED_LIMIT = 15 * 2**20  # results.tar.gz: a returned file may be 16 MiB
# What `tcvae stage train | evaluate` import (module: the package that provides it); the GPU image lacks pydantic.
NEEDED = {"torch": "torch", "numpy": "numpy", "pydantic": "pydantic", "pydantic_core": "pydantic-core",
          "annotated_types": "annotated-types", "typing_inspection": "typing-inspection",
          "typing_extensions": "typing-extensions", "typer": "typer", "rich": "rich", "yaml": "pyyaml",
          "h5py": "h5py", "scipy": "scipy", "sklearn": "scikit-learn"}
TINY_DATA = {"step": {"scale": 5, "orientation": 20, "posX": 8, "posY": 8}}     # 192 images of dSprites
TINY_TRAIN = {"steps": 6, "epochs": None, "batch_size": 32, "latents": 4, "mlp_width": 32, "log_every": 3}
TINY_EVALUATE = {"n_samples": 100, "batch_size": 64}


class Job:
    """The job's clock, log and summary."""

    def __init__(self, out: Path, budget: float):
        # from TCVAE_GPU_START (the script's start, Unix time) when given: the wheels' install counts too
        since = time.time() - float(os.environ.get("TCVAE_GPU_START") or time.time())
        self.out, self.budget, self.start = out, budget, time.monotonic() - max(since, 0.0)
        self.deadline = self.start + budget
        self.lock = threading.Lock()
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "job.log", "a")

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, text: str) -> None:
        with self.lock:
            self.log_file.write(f"[{self.elapsed():7.1f} s] {text}\n")
            self.log_file.flush()

    def spawn(self, args: list[str], cwd: Path) -> subprocess.Popen:
        """`python …args` in its own process group (so that a kill takes its children too), output captured."""
        return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

    def finish(self, proc: subprocess.Popen, what: str, limit: float | None = None) -> tuple[int, float, str]:
        """Wait for `proc`; kill its group at the deadline + KILL_MARGIN_S (or after `limit` s more). Returns
        (exit code, seconds waited, its output's tail); 124 when killed. The output goes to job.log."""
        until = self.left() + KILL_MARGIN_S
        limit = until if limit is None else min(limit, until)
        started = time.monotonic()
        try:
            output, _ = proc.communicate(timeout=max(limit, 0.1))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            code = 124
        seconds = time.monotonic() - started
        tail = (output or "")[-3000:]
        self.log(f"{what}: rc {code} in {seconds:.1f} s\n{tail.rstrip()}")
        return code, seconds, tail

    def command(self, args: list[str], cwd: Path, what: str, limit: float | None = None) -> tuple[int, float, str]:
        return self.finish(self.spawn(args, cwd), what, limit)


# Child processes (the driver itself never imports torch: on a busy machine every import costs seconds).
PREPARE = """import json
from pathlib import Path
from stages import download, preprocess
from stages.params import load_params
from tcvae import data
from tcvae.train import total_steps
p = load_params(Path("params.yaml"))
download.command(Path("params.yaml"), list(p.sweep.datasets))
preprocess.command(Path("params.yaml"), list(p.sweep.datasets))
sizes = {d: len(data.load(Path("data/processed") / f"{d}.h5")) for d in p.sweep.datasets}
print(json.dumps({"sizes": sizes, "steps": {d: total_steps(p.train, n) for d, n in sizes.items()}}))
"""
PROBE = """import json, sys
from pathlib import Path
import torch
from stages.params import load_params
from tcvae import probe
from tcvae.train import pick_device, resolve_precision
p = load_params(Path("params.yaml"))
device = pick_device(p.compute.device)
shape = probe.Shape(p.train.batch_size, p.train.latents, p.train.mlp_width, 737_280)   # N enters the weights alone
save = lambda result: Path(sys.argv[1]).write_text(json.dumps(result, indent=2))    # after each part
probe.probe(shape, device, resolve_precision(p.train.precision, device), steps=int(sys.argv[2]), save=save)
"""
RUN = """import sys
from tcvae.cli import main
for stage in ("train", "evaluate"):     # one process for both: a process start costs seconds
    try:
        main(["stage", stage, "--params", "params.yaml", *sys.argv[1:]])
    except SystemExit as e:
        if e.code not in (0, None):
            print(f"[{stage} failed]")
            raise
"""


def environment() -> list[str]:
    """The packages that `tcvae stage train | evaluate` need and this Python lacks, named as pip names them
    (found without importing them: torch alone takes seconds to import on a busy machine)."""
    import importlib.util

    missing = [package for module, package in NEEDED.items() if importlib.util.find_spec(module) is None]
    if not missing:
        try:        # found is not enough for the carried ones: pydantic checks pydantic_core's version on import
            importlib.import_module("pydantic")
        except Exception as e:
            missing.append(f"a pydantic that imports ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
    return missing


def job_params(path: Path, tiny: bool) -> dict[str, Any]:
    """The params the job runs: the file as written, or for the rehearsal its tiny version (same sweep and
    order, 192-image sub-grids of dSprites, a few steps of a narrow MLP, on the CPU)."""
    from stages.params import read_yaml
    from tcvae.errors import UserError

    p = read_yaml(path)           # bounded, a regular file; the schema checks the rest (`load_params`)
    if not isinstance(p, dict) or not all(isinstance(p.get(k, {}), dict) for k in ("data", "train", "evaluate", "compute")):
        raise UserError(f"{path}: not a params file (a mapping with data, train, sweep, … sections)")
    if tiny:
        for spec in p["data"].values():
            if spec.get("kind") == "dsprites":
                spec.update(TINY_DATA)
        p["train"] = {**p["train"], **TINY_TRAIN}
        p["train"] = {k: v for k, v in p["train"].items() if v is not None}
        p["evaluate"] = {**p.get("evaluate", {}), **TINY_EVALUATE}
        p["compute"] = {**p.get("compute", {}), "device": "cpu"}
    return p


class Estimates:
    """Seconds a run will take: from the probe's step times until a run of the method has been timed, then
    from that run (its wall time per step, process start and evaluation included)."""

    def __init__(self, probe: dict[str, Any], precision: str, n: int, slowdown: float):
        rates = probe.get("seconds_per_step", {})
        vae = rates.get("vae", {}).get(precision) or rates.get("vae", {}).get("fp32")
        tc = rates.get("tcvae", {}).get(precision) or rates.get("tcvae", {}).get("fp32")
        # FactorVAE is not probed: its step measured 1.9× a VAE step (README, Speed); AnnealedVAE steps as the VAE
        self.step = {"betavae": vae, "annealedvae": vae, "tcvae": tc, "factorvae": 2 * vae if vae else None}
        self.train_measured: dict[str, float] = {}     # method → seconds per step, as measured
        self.evaluate_measured: float | None = None
        self.n, self.slowdown = n, slowdown

    def train(self, method: str, steps: int) -> float:
        per_step = self.train_measured.get(method)
        if per_step is not None:
            return per_step * steps
        guess = self.step.get(method)
        return 10 + (guess if guess is not None else 0.02) * steps * self.slowdown    # 10 s: start, load, save

    def evaluate(self) -> float:
        # first guess: ~60 s for full dSprites (MIG and the decomposition ~28 s, DCI ~25 s, measured on 16 cores)
        return self.evaluate_measured if self.evaluate_measured is not None else 10 + 60 * self.n / 737_280

    def run(self, method: str, steps: int) -> float:
        return self.train(method, steps) + self.evaluate()


def write_archive(out: Path, work: Path, done: list[tuple], meta: dict[str, Any]) -> int:
    """$OUT/results.tar.gz holding every finished run's small files, timings, the params and job.json,
    replaced atomically (a killed job leaves the previous one). Returns its size in bytes."""
    from tcvae.results import RUN_FILES, run_path

    tmp = out / "results.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(work / "params.yaml", "params.yaml")
        for run in done:
            rel = run_path(*run)
            for name in RUN_FILES:
                if (work / "data/runs" / rel / name).is_file():
                    tar.add(work / "data/runs" / rel / name, f"runs/{rel}/{name}")
            for stage in ("train", "evaluate"):
                if (work / "data/timings" / rel / f"{stage}.json").is_file():
                    tar.add(work / "data/timings" / rel / f"{stage}.json", f"timings/{rel}/{stage}.json")
        (work / "job.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tar.add(work / "job.json", "job.json")
    os.replace(tmp, out / "results.tar.gz")
    return (out / "results.tar.gz").stat().st_size


def train_and_evaluate(job: Job, work: Path, run: tuple) -> dict[str, Any]:
    """One run, `tcvae stage train` then `tcvae stage evaluate` in one process: what happened, the seconds of each
    (as the stages timed themselves), and MIG."""
    from tcvae.resultfiles import beta_name

    dataset, method, beta, seed = run
    coords = ["--dataset", dataset, "--method", method, "--beta", beta_name(beta), "--seed", str(seed)]
    code, seconds, tail = job.command(["-c", RUN, *coords], work, _label(run))
    result: dict[str, Any] = {"run": run, "seconds": seconds}
    for stage in ("train", "evaluate"):
        timing = work / "data/timings" / _rel(run) / f"{stage}.json"
        result[stage] = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
    if code != 0:
        stage = "evaluate" if (work / "data/runs" / _rel(run) / "model.pt").is_file() else "train"
        result["failed"] = f"{stage}: " + ("killed at the deadline" if code == 124 else
                                           f"rc {code}: {_last_line(tail)}")
        return result
    ev = json.loads((work / "data/runs" / _rel(run) / "eval.json").read_text())
    result["mig"] = ev.get("mig", {}).get("score")
    return result


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and not line.startswith("[")]
    return (lines[-1] if lines else "")[:200]


def _rel(run: tuple) -> Path:
    from tcvae.results import run_path
    return run_path(*run)


def _label(run: tuple) -> str:
    from tcvae.resultfiles import beta_name
    dataset, method, beta, seed = run
    return f"{dataset} {method} {'γ' if method in ('factorvae', 'annealedvae') else 'β'}={beta_name(beta)} seed {seed}"


def main() -> int:
    out = Path(os.environ.get("OUT") or ROOT / "gpu-sweep-out")
    budget = float(os.environ.get("TCVAE_GPU_BUDGET_S", "480"))
    tiny = os.environ.get("TCVAE_GPU_TINY") == "1"
    params_path = Path(os.environ.get("TCVAE_GPU_PARAMS") or ROOT / "params-gpu.yaml")
    job = Job(out, budget)
    lines: list[str] = []

    def summary(final: bool = False) -> None:
        text = "\n".join(["=== GPU job summary ===", *lines]) + "\n"
        (out / "summary.txt").write_text(text)
        if final:
            print(text, end="", flush=True)

    missing = environment()
    if missing:
        lines.append("environment check FAILED, nothing trained; missing: " + "; ".join(missing))
        lines.append("  carry them as wheels: run scripts/gpu-wheels.sh where pip has a registry, carry .whl")
        summary(final=True)
        return 3
    import yaml

    from stages.params import load_params
    from stages.runs import sweep_runs

    work = Path(os.environ.get("TCVAE_GPU_WORK") or tempfile.mkdtemp(prefix="tcvae-gpu-job."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "params.yaml").write_text(yaml.safe_dump(job_params(params_path, tiny), sort_keys=False))
        p = load_params(work / "params.yaml")
    except Exception as e:          # UserError: the table naming the key
        lines.append(f"params {params_path} refused:\n{e}")
        summary(final=True)
        if not os.environ.get("TCVAE_GPU_WORK"):
            shutil.rmtree(work, ignore_errors=True)
        return 2
    job.log(f"budget {budget:.0f} s, params {params_path}{' (tiny rehearsal)' if tiny else ''}, work {work}")

    # --- the probe (on the device) and the data (on the CPU) at once, the probe bounded to PROBE_LIMIT_S
    probing = job.spawn(["-c", PROBE, str(out / "probe.json"), "2" if tiny else "20"], work)
    probe_started = time.monotonic()
    code, _, tail = job.command(["-c", PREPARE], work, "download + preprocess")
    if code != 0:
        os.killpg(probing.pid, signal.SIGKILL)
        lines.append(f"download + preprocess FAILED (rc {code}): {_last_line(tail)}; see job.log")
        summary(final=True)
        return 1
    prepared = json.loads(tail.strip().splitlines()[-1])
    sizes, steps = prepared["sizes"], prepared["steps"]
    code, _, tail = job.finish(probing, "probe", limit=PROBE_LIMIT_S - (time.monotonic() - probe_started))
    try:        # a probe stopped at its limit has saved what it measured by then
        probe = json.loads((out / "probe.json").read_text()) if (out / "probe.json").is_file() else {}
    except ValueError:
        probe = {}
    if code != 0:
        probe["stopped"] = f"rc {code}" + (f" (at its {PROBE_LIMIT_S} s limit)" if code == 124 else "")
        (out / "probe.json").write_text(json.dumps(probe, indent=2) + "\n")
    if "seconds_per_step" not in probe:
        probe = {}
        (out / "probe.json").write_text(json.dumps({"failed": f"rc {code}", "tail": tail[-1500:]}, indent=2) + "\n")
    best = probe.get("fused_log_qz", {}).get("best")
    if best:                # every run launches the probe's fastest correct tile (tcvae.fused reads it at import)
        os.environ["TCVAE_FUSED_TILES"] = f"{best['block_i']},{best['block_j']},{best['warps']}"
    precision = probe.get("precision", "?")
    parallel = probe.get("concurrency", {}).get("parallel", 1)
    speedup = probe.get("concurrency", {}).get("two_at_once_speedup", 1.0)
    estimates = Estimates(probe, precision, max(sizes.values()), slowdown=parallel / speedup if parallel > 1 else 1.0)
    lines.append(_device_line(probe, parallel))
    lines.extend(_probe_lines(probe, time.monotonic() - probe_started if not probe else None))

    # --- the runs, in order, each started only when its estimate fits the time left
    head, dirty = git_commit()
    head = head or os.environ.get("TCVAE_COMMIT") or None       # a tree that travelled without .git
    meta = {"params": params_path.name, "tiny": tiny, "budget_s": budget, "commit": head, "uncommitted_changes": dirty,
            "code_sha256": code_digest(), "precision": precision, "parallel": parallel,
            "probe": {k: probe.get(k) for k in ("device_name", "torch", "cuda", "triton", "tcvae_over_vae")}}
    pending, held_back = list(sweep_runs(p.sweep)), 0
    done: list[tuple] = []
    results: list[dict[str, Any]] = []
    running: dict[Future, tuple] = {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while pending or running:
            while len(running) < parallel and pending:
                fits = [r for r in pending if 1.1 * estimates.run(r[1], steps[r[0]]) + 2 <= job.left()]
                if not fits:
                    break
                run = fits[0]
                pending.remove(run)
                job.log(f"start {_label(run)} (estimate {estimates.run(run[1], steps[run[0]]):.0f} s, "
                        f"{job.left():.0f} s left)")
                running[pool.submit(train_and_evaluate, job, work, run)] = run
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                run = running.pop(future)
                r = future.result()
                results.append(r)
                if "failed" in r:
                    continue
                done.append(run)
                # the whole process per step (start, data, saving included), and evaluation with its share of the start
                estimates.train_measured[run[1]] = (r["seconds"] - r["evaluate"]) / steps[run[0]]
                estimates.evaluate_measured = r["evaluate"]
                meta["runs"] = [_label(x) for x in done]
                size = write_archive(out, work, done, meta)
                (out / "summary.txt").write_text("\n".join(["=== GPU job summary (so far) ===", *lines,
                                                            *_run_lines(results, len(pending), budget, job.elapsed())]) + "\n")
                job.log(f"archived {_label(run)}: results.tar.gz now {len(done)} runs, {size / 1024:.0f} KiB")
                if size > RETURNED_LIMIT:
                    lines.append("results.tar.gz is near the 16 MiB a returned file may take: no more runs started")
                    held_back += len(pending)
                    pending.clear()
    if not done:
        write_archive(out, work, done, {**meta, "runs": []})
    lines.extend(_run_lines(results, len(pending), budget, job.elapsed(), held_back))
    summary(final=True)
    if not os.environ.get("TCVAE_GPU_WORK"):
        shutil.rmtree(work, ignore_errors=True)
    broken = [r for r in results if "failed" in r and "killed at the deadline" not in r["failed"]]
    return 0 if done and not broken else 1      # a run killed at the deadline is the budget at work, not a fault


def _run_lines(results: list[dict[str, Any]], not_started: int, budget: float, used: float,
               held_back: int = 0) -> list[str]:
    """The summary's runs: done, failed, not started for the budget, held back for the archive's size."""
    failed = [r for r in results if "failed" in r]
    done = len(results) - len(failed)
    lines = [f"runs: {done} done, {len(failed)} failed or killed, {not_started} not started "
             f"(their estimates did not fit the budget left)"
             + (f", {held_back} held back (results.tar.gz near its size limit)" if held_back else "")]
    for r in results:
        label = _label(r["run"])
        if "failed" in r:
            lines.append(f"  {label}: FAILED {r['failed']}")
        else:
            mig = "—" if r.get("mig") is None else f"{r['mig']:.3f}"
            lines.append(f"  {label}: MIG {mig}, train {r['train']:.1f} s, evaluate {r['evaluate']:.1f} s")
    lines.append(f"budget {budget:.0f} s, used {used:.0f} s; results.tar.gz holds {done} runs "
                 f"(`tcvae results export NAME --from results.tar.gz`)")
    return lines


def _device_line(probe: dict[str, Any], parallel: int) -> str:
    name = probe.get("device_name") or probe.get("device", "?")
    return (f"device: {name} (torch {probe.get('torch', '?')}, CUDA {probe.get('cuda')}, Triton "
            f"{probe.get('triton')}), runs in {probe.get('precision', '?')}, {parallel} at a time")


def _probe_lines(probe: dict[str, Any], failed_after: float | None) -> list[str]:
    if failed_after is not None:
        return [f"probe FAILED after {failed_after:.0f} s (see probe.json, job.log); runs estimated without it"]
    rates = probe["seconds_per_step"]
    steps = ", ".join(f"{p} VAE {1e3 * rates['vae'][p]:.2f} / β-TCVAE {1e3 * rates['tcvae'][p]:.2f} ms"
                      for p in rates["vae"])
    lines = [f"probe ({probe['seconds']:.0f} s): steps {steps}; β-TCVAE / VAE {probe['tcvae_over_vae']:.2f}× in {probe['precision']}"]
    if "stopped" in probe:
        lines.append(f"  the probe was stopped ({probe['stopped']}): parts not reached are missing")
    f = probe.get("fused_log_qz", {"skipped": "not reached"})
    if "skipped" in f:
        lines.append(f"  fused log q(z): skipped ({f['skipped']})")
    elif f.get("best"):
        b = f["best"]
        lines.append(f"  fused log q(z) fwd+bwd {b['fwd_bwd_ms']:.3f} ms (fwd {b['fwd_ms']:.3f}) at {b['block_i']}×"
                     f"{b['block_j']}, {b['warps']} warps; materialised {f['materialised_fwd_bwd_ms']:.3f} ms")
    else:
        lines.append("  fused log q(z): NO tile choice matched the materialised way (see probe.json)")
    c = probe.get("concurrency", {})
    if "two_at_once_speedup" in c:
        lines.append(f"  two runs at once: {c['two_at_once_speedup']:.2f}× the steps per second of one")
    return lines


if __name__ == "__main__":
    sys.exit(main())
