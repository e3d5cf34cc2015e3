"""Beyond one machine, end to end in real git + DVC repositories: a worker pushes training outputs and the
run-cache to a shared remote, another clone rebuilds every figure without training; a DVC queue with two
workers runs two slices of a sweep in parallel."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, TINY_EVAL, python_path, tiny_params

DVC = [sys.executable, "-m", "dvc"]


def run(*args, cwd, timeout=600):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": python_path()}
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def make_repo(path: Path, params: dict) -> Path:
    """A git + DVC repository holding this project's pipeline (dvc.yaml, the code it depends on) and `params`."""
    path.mkdir()
    for item in ("dvc.yaml", "tcvae", ".gitignore", ".dvcignore"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, path / item,
                                                                        **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / item).is_dir() else {}))
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / "data/results").mkdir(parents=True)
    (path / "data/results/sets.yaml").write_text("sets: []\n")
    run("git", "init", "-q", "-b", "main", cwd=path)
    run("git", "config", "user.email", "t@t", cwd=path), run("git", "config", "user.name", "t", cwd=path)
    run(*DVC, "init", "-q", cwd=path)
    run(*DVC, "config", "core.analytics", "false", cwd=path)
    return path


TWO_RUNS = tiny_params(sweep={"datasets": ["tiny"], "betas": {"betavae": [2], "tcvae": [2], "factorvae": [], "annealedvae": []}, "seeds": [0]},
                       evaluate=TINY_EVAL)


def test_second_clone_rebuilds_figures_from_the_remote_without_training(tmp_path):
    origin = make_repo(tmp_path / "origin", TWO_RUNS)
    run(*DVC, "remote", "add", "-d", "shared", tmp_path / "remote", cwd=origin)
    run("git", "add", "-A", cwd=origin), run("git", "commit", "-qm", "pipeline", cwd=origin)

    worker = tmp_path / "worker"
    run("git", "clone", "-q", origin, worker, cwd=tmp_path)
    run("git", "config", "user.email", "w@w", cwd=worker), run("git", "config", "user.name", "w", cwd=worker)
    out = run(*DVC, "repro", "--glob", "evaluate-*", cwd=worker)       # the worker's slice: train + evaluate
    assert "Running stage 'train-tcvae@tiny-2-0'" in out
    run(*DVC, "push", "--run-cache", cwd=worker)

    reader = tmp_path / "reader"
    run("git", "clone", "-q", origin, reader, cwd=tmp_path)              # knows nothing but git and the remote
    out = run(*DVC, "repro", "--pull", cwd=reader)                    # fetches run-cache entries as it goes
    assert "Running stage 'train-" not in out and "Running stage 'evaluate-" not in out
    assert "Running stage 'plot'" in out
    figures = reader / "data/figures"
    for name in ("mig_vs_beta.png", "tc_vs_mig.pdf", "runs/tiny/tcvae/beta2/seed0/traversals.png",
                 "runs/tiny/betavae/beta2/seed0/latents_vs_factors.png"):
        assert (figures / name).stat().st_size > 5000, name
    worker_eval = json.loads((worker / "data/runs/tiny/tcvae/beta2/seed0/eval.json").read_text())
    assert json.loads((reader / "data/runs/tiny/tcvae/beta2/seed0/eval.json").read_text()) == worker_eval


def test_queue_with_two_workers_runs_sweep_slices_in_parallel(tmp_path):
    repo = make_repo(tmp_path / "repo", TWO_RUNS)
    run("git", "add", "-A", cwd=repo), run("git", "commit", "-qm", "pipeline", cwd=repo)
    for method, other in (("betavae", "tcvae"), ("tcvae", "betavae")):
        run(*DVC, "exp", "run", "--queue", "-n", f"only-{method}", "-S", f"sweep.betas.{other}=[]", cwd=repo)
    run(*DVC, "queue", "start", "-j", "2", cwd=repo)
    run(*DVC, "queue", "status", cwd=repo)
    import time
    deadline = time.monotonic() + 500
    while True:
        status = run(*DVC, "queue", "status", cwd=repo)
        if "Running" not in status and "Queued" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(run(*DVC, "exp", "show", "--json", cwd=repo))
    names = {e["name"] for rev in shown for e in (rev.get("experiments") or []) for e in [e.get("revs", [{}])[0]]}
    assert {"only-betavae", "only-tcvae"} <= names, names


def test_sweep_plan_lists_runs_status_and_cost(tmp_path):
    repo = make_repo(tmp_path / "repo", TWO_RUNS)
    tcvae_cli = [sys.executable, "-m", "tcvae", "sweep", "plan"]
    out = run(*tcvae_cli, cwd=repo)
    assert "tiny betavae β=2 seed 0" in out and "tiny tcvae β=2 seed 0" in out
    assert out.count("inputs not built") >= 2 and "0 done" in out and "2 whose inputs are not built nor in the run-cache" in out
    run(*DVC, "repro", "train-tcvae@tiny-2-0", cwd=repo)
    out = run(*tcvae_cli, cwd=repo)
    assert "1 done" in out and "1 to train" in out
    # nothing built (a new clone sharing the cache): the run-cache still knows the data set and the trained run
    for built in ("raw", "processed", "runs"):
        shutil.rmtree(repo / "data" / built)
    out = run(*tcvae_cli, cwd=repo)
    assert "0 done, 1 restorable from the run-cache, 1 to train" in out, out
    out = run(*DVC, "repro", "train-tcvae@tiny-2-0", cwd=repo)  # …and DVC agrees: restored, nothing run
    assert "Running stage" not in out and "'train-tcvae@tiny-2-0' is cached" in out


def test_plan_durations_read_as_a_person_would():
    from stages.plan import _duration
    assert [_duration(s) for s in (40, 750, 20_160, 2442.6 * 3600)] == ["40 s", "12.5 min", "5.6 h", "101.8 days"]
