"""Evaluating runs and comparing them across commits, as the pipeline does."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, TINY_EVAL, python_path, tcvae, tiny_params

def test_evaluate_writes_every_number_with_its_variant(trained):
    folder, _ = trained
    tcvae("stage", "evaluate", "--dataset", "tiny", "--method", "tcvae", "--beta", "2", cwd=folder, check=True)
    ev = json.loads((folder / "data/runs/tiny/tcvae/beta2/seed0/eval.json").read_text())
    assert ev["run"] == {"dataset": "tiny", "method": "tcvae", "beta": 2.0, "seed": 0} and ev["n_images"] == 192
    assert ev["metric_factors"] == ["scale", "orientation", "posX", "posY"]
    assert 0 <= ev["mig"]["score"] <= 1 and len(ev["mig"]["mutual_info"]) == 4 and len(ev["mig"]["mutual_info"][0]) == 4
    assert "Chen" in ev["mig"]["variant"] and "disentanglement_lib" in ev["mig_discrete"]["variant"]
    assert len(ev["mig"]["captured"]) == 4 and all(j is None or 0 <= j < 4 for j in ev["mig"]["captured"])
    d = ev["decomposition"]
    assert d["mutual_info"] + d["total_correlation"] + d["dimwise_kl"] == pytest.approx(ev["kl"], abs=0.3)
    assert ev["elbo"] == pytest.approx(ev["log_px"] - ev["kl"]) and ev["elbo"] < 0
    tcvae("stage", "evaluate", "--dataset", "tiny", "--method", "tcvae", "--beta", "2", cwd=folder, check=True)
    assert json.loads((folder / "data/runs/tiny/tcvae/beta2/seed0/eval.json").read_text()) == ev   # deterministic


def test_aggregate_reads_exactly_the_sweep(trained):
    folder, write_params = trained
    proc = tcvae("stage", "aggregate", cwd=folder)
    assert proc.returncode == 2 and "not evaluated" in proc.stderr and not (folder / "data/metrics").exists()
    for method in ("betavae", "tcvae"):
        tcvae("stage", "evaluate", "--dataset", "tiny", "--method", method, "--beta", "2", cwd=folder, check=True)
    tcvae("stage", "aggregate", cwd=folder, check=True)
    rows = (folder / "data/metrics/runs.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,method,beta,seed,mig") and len(rows) == 3
    from tcvae.results import read_rows
    for r in read_rows(folder / "data/metrics/runs.csv"):   # the count eval.json's own latents give
        ev = json.loads((folder / f"data/runs/tiny/{r['method']}/beta2/seed0/eval.json").read_text())
        assert (r["factors_captured"], r["factors_scored"]) == (sum(j is not None for j in ev["mig"]["captured"]), 4)
    assert sorted(p.name for p in (folder / "data/metrics/summary/tiny").iterdir()) == ["betavae.json", "tcvae.json"]
    summary = json.loads((folder / "data/metrics/summary/tiny/tcvae.json").read_text())
    assert {"mig", "beta", "rho", "elbo", "dci", "sap"} <= set(summary) and summary["beta"] == 2
    assert summary["rho"] is None                               # one run: no correlation to speak of
    assert (folder / "data/metrics/runs/tiny/tcvae/beta2/seed0/figures.h5").is_file()      # the small files, collected
    assert "tiny" in proc_out(folder) and "tcvae" in proc_out(folder)                        # printed again from files
    write_params(tiny_params(sweep={"datasets": ["tiny"], "betas": {"betavae": [], "tcvae": [2], "factorvae": [], "annealedvae": []}, "seeds": [0]},
                             evaluate=TINY_EVAL))           # shrink the sweep: the β-VAE run is left on disk…
    tcvae("stage", "aggregate", cwd=folder, check=True)
    assert len((folder / "data/metrics/runs.csv").read_text().splitlines()) == 2   # …and ignored
    assert json.loads((folder / "data/mig.json").read_text()) == {"tiny": {"tcvae": summary["mig"]}}   # the headline
    (folder / "data/mig.json").unlink()
    (folder / "data/mig.json").mkdir()                          # a folder where the headline goes: one line, exit 2
    proc = tcvae("stage", "aggregate", cwd=folder)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "data/mig.json" in proc.stderr, proc.stderr


def proc_out(folder: Path) -> str:
    return tcvae("results", "show", cwd=folder, check=True).stdout


def run(*args, cwd, env=None):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": python_path(), **(env or {})}
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_dvc_metrics_diff_reports_a_changed_param(tmp_path):
    """A real git + DVC repository with this project's dvc.yaml: repro, commit, change a param, repro,
    and `dvc metrics diff` shows what changed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "tcvae", ".gitignore"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, repo / item)
    (repo / "data/results").mkdir(parents=True)
    (repo / "data/results/sets.yaml").write_text("sets: []\n")
    params = tiny_params(evaluate=TINY_EVAL)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    dvc = [sys.executable, "-m", "dvc"]
    run("git", "init", "-q", cwd=repo)
    run("git", "config", "user.email", "t@t", cwd=repo), run("git", "config", "user.name", "t", cwd=repo)
    run(*dvc, "init", "-q", cwd=repo)
    run(*dvc, "config", "core.analytics", "false", cwd=repo)
    run(*dvc, "repro", "aggregate", cwd=repo)
    run("git", "add", "-A", cwd=repo), run("git", "commit", "-qm", "first", cwd=repo)
    params["train"] = {**params["train"], "steps": 12}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    out = run(*dvc, "repro", "aggregate", cwd=repo)
    assert "Running stage 'train-betavae@tiny-1-0'" in out and "Running stage 'preprocess@tiny'" not in out
    headline = json.loads(run(*dvc, "metrics", "diff", "--json", "--all", cwd=repo))["data/mig.json"]
    assert set(headline) == {"tiny.betavae"}                         # the headline: MIG per data set × method
    diff = json.loads(run(*dvc, "metrics", "diff", "--json", "--targets", "data/metrics/summary", "-R", cwd=repo))
    changed = diff["data/metrics/summary/tiny/betavae.json"]          # metrics live in git: HEAD is readable
    assert changed["elbo"]["old"] is not None and changed["elbo"]["diff"] != 0
    shown = run(*dvc, "metrics", "show", "data/metrics/summary", cwd=repo).splitlines()
    # a header and one row per data set × method; the scores' names spelt out (betavae_score, …) take it past 120
    assert len(shown) == 2 and max(map(len, shown)) <= 140 and "betavae_score" in shown[0]
    # the README's experiment table: the changed params and the headline, nothing cut at 120 columns
    table = run(*dvc, "exp", "show", "--no-pager", "--only-changed", "--drop", "Created|data/|tcvae/", cwd=repo,
                env={"COLUMNS": "120"}).splitlines()
    assert max(map(len, table)) <= 120 and "…" not in "".join(table)
    rows = {line.split()[0]: line.split() for line in table[3:5]}     # workspace, then the branch (HEAD)
    assert "train.steps" in table[1] and "12" in rows["workspace"]
    assert all(name in table[1] for name, change in headline.items() if change["diff"])    # MIGs that moved
    assert "6" in next(row for name, row in rows.items() if name != "workspace")
