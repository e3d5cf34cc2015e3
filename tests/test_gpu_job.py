"""The GPU job (scripts/gpu-sweep.sh → stages/gpu_job.py), rehearsed on the CPU as it would run on the GPU
machine: every step, tiny sizes, a 45 s budget kept, at most 8 files back, and the result set it made shipped
with `tcvae results export --from` and redrawn by `dvc repro` in a fresh clone. Also the sweep's `order`."""

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from stages.runs import sweep_runs
from stages.schema import SweepParams
from tests.conftest import ROOT, python_path, tcvae
from tests.test_scale import DVC, make_repo, run


def sweep(**kw) -> SweepParams:
    return SweepParams.model_validate({"datasets": ["d"], "betas": {"betavae": [1, 6], "tcvae": [4, 6],
                                                                     "factorvae": [], "annealedvae": []}, "seeds": [0, 1]} | kw)


def test_sweep_order_is_followed_seed_by_seed_and_the_rest_after():
    s = sweep(order=[["tcvae", 6], ["betavae", 6]])
    assert sweep_runs(s) == [("d", "tcvae", 6, 0), ("d", "betavae", 6, 0), ("d", "betavae", 1, 0), ("d", "tcvae", 4, 0),
                             ("d", "tcvae", 6, 1), ("d", "betavae", 6, 1), ("d", "betavae", 1, 1), ("d", "tcvae", 4, 1)]
    assert sorted(sweep_runs(s)) == sorted(sweep_runs(sweep()))     # the same runs, only their order differs
    assert sweep_runs(sweep())[:2] == [("d", "betavae", 1, 0), ("d", "betavae", 1, 1)]   # no order: as before


@pytest.mark.parametrize("order,rule", [([["tcvae", 8]], "not a run of the sweep"),
                                        ([["tcvae", 6], ["tcvae", 6]], "listed twice"),
                                        ([["vae", 1]], "betavae")])
def test_sweep_order_names_only_runs_of_the_matrix(order, rule):
    with pytest.raises(ValueError, match=rule):
        sweep(order=order)


def test_shipped_gpu_params_follow_issue_21s_order():
    from stages.params import load_params
    p = load_params(ROOT / "params-gpu.yaml")
    first = [(m, b) for _, m, b, s in sweep_runs(p.sweep)[:7]]
    assert first == [("tcvae", 6), ("betavae", 6), ("tcvae", 4), ("betavae", 4), ("tcvae", 10), ("betavae", 10),
                     ("betavae", 1)]
    assert p.train.batch_size == 2048 and p.train.epochs == 50 and p.train.mlp_width == 1200
    assert p.evaluate.n_samples == 10_000 and p.data["dsprites"].step == {}           # full dSprites


BUDGET = 45      # seconds: the prepare step, the probe and a few tiny runs, then the budget declines the rest


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """`TCVAE_GPU_TINY=1 TCVAE_GPU_BUDGET_S=45 bash scripts/gpu-sweep.sh`: (rc, seconds, $OUT, stdout)."""
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "OUT": str(out), "TCVAE_GPU_TINY": "1", "TCVAE_GPU_BUDGET_S": str(BUDGET),
           "PYTHON": os.environ.get("PYTHON", str(Path(__import__("sys").executable))), "PYTHONPATH": python_path()}
    start = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu-sweep.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, time.monotonic() - start, out, proc.stdout + proc.stderr


def declined_every_run(printed: str) -> bool:
    """On a machine too busy for any tiny run to fit in 45 s (2 cores at load 15: process starts alone take
    ~20 s each), the job rightly starts none; the budget is then checked, the export cannot be."""
    return "runs: 0 done, 0 failed or killed" in printed


def test_rehearsal_keeps_its_budget_and_returns_at_most_8_files(rehearsal):
    rc, seconds, out, printed = rehearsal
    assert rc == 0 or (rc == 1 and declined_every_run(printed)), printed + (out / "job.log").read_text()
    assert seconds <= BUDGET + 30, printed                           # the budget, overrun by at most 30 s
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and {p.name for p in files} >= {"results.tar.gz", "probe.json", "job.log", "summary.txt"}
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    tail = printed.strip().splitlines()
    assert tail[-1].startswith(f"budget {BUDGET} s, used") and "=== GPU job summary ===" in printed
    probe = json.loads((out / "probe.json").read_text())
    assert probe["fused_log_qz"]["skipped"] and probe["concurrency"]["parallel"] == 1       # the CPU's answers
    assert set(probe["seconds_per_step"]) == {"vae", "tcvae"} and probe["seconds_per_step"]["tcvae"]["fp32"] > 0
    if declined_every_run(printed):
        pytest.skip("this machine is too busy for a tiny run to fit a 45-s budget: the budget was kept, nothing ran")
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    job = json.loads(tarfile.open(out / "results.tar.gz").extractfile("job.json").read())
    order = ["dsprites tcvae β=6 seed 0", "dsprites betavae β=6 seed 0", "dsprites tcvae β=4 seed 0"]
    assert job["runs"][0] in order[:2]          # issue 21's first; the second if the first's estimate did not fit
    first = "dsprites/" + job["runs"][0].split()[1] + "/beta" + job["runs"][0].split("=")[1].split()[0] + "/seed0"
    assert f"runs/{first}/eval.json" in names and f"timings/{first}/train.json" in names
    assert not [n for n in names if n.endswith(".pt")]                                        # never a model
    assert f"runs: {len(job['runs'])} done" in printed and "not started" in printed          # the budget stopped it


def test_the_jobs_result_set_is_exported_and_redrawn_in_a_fresh_clone(rehearsal, tmp_path):
    _, _, out, printed = rehearsal
    if declined_every_run(printed):
        pytest.skip("this machine is too busy for a tiny run to fit a 45-s budget: no result set to export")
    job = json.loads(tarfile.open(out / "results.tar.gz").extractfile("job.json").read())
    params = yaml.safe_load(tarfile.open(out / "results.tar.gz").extractfile("params.yaml").read())
    origin = make_repo(tmp_path / "origin", params)
    tcvae("results", "export", "gpu-tiny", "--from", out / "results.tar.gz", cwd=origin, check=True)
    shipped = origin / "data/results/gpu-tiny"
    prov = json.loads((shipped / "provenance.json").read_text())
    assert len(prov["runs"]) == len(job["runs"])
    entry = prov["runs"][sorted(prov["runs"])[0]]
    assert entry["train"]["device"] == "cpu" and entry["gpu_job"]["code_sha256"] == job["code_sha256"]
    assert entry["commit"]                                  # the job's, or this checkout's when it had none
    again = tcvae("results", "export", "gpu-tiny", "--from", out / "results.tar.gz", "--add", cwd=origin)
    assert again.returncode == 0, again.stderr              # the same runs added again: nothing replaced
    run("git", "add", "-A", cwd=origin), run("git", "commit", "-qm", "ship the GPU job's set", cwd=origin)

    clone = tmp_path / "clone"
    run("git", "clone", "-q", origin, clone, cwd=tmp_path)
    printed = run(*DVC, "repro", "results@gpu-tiny", cwd=clone)
    assert "Running stage 'results@gpu-tiny'" in printed and "train-" not in printed
    assert (clone / "data/results/gpu-tiny/figures/mig_vs_beta.png").stat().st_size > 5000
    assert run("git", "status", "--porcelain", "data/results", cwd=clone).strip() == ""     # its summary redrawn equal


def test_export_refuses_an_archive_with_a_link_or_an_escaping_path(tmp_path):
    (tmp_path / "f").write_text("x")
    for name, member in (("link", tarfile.TarInfo("runs/evil")), ("escape", tarfile.TarInfo("../evil"))):
        archive = tmp_path / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            if name == "link":
                member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(member)
            else:
                tar.add(tmp_path / "f", member.name)
        proc = tcvae("results", "export", "x", "--from", archive, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert ("link" if name == "link" else "outside") in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path.parent / "evil").exists()
    proc = tcvae("results", "export", "x", "--from", tmp_path / "f", cwd=tmp_path)
    assert proc.returncode == 2 and "not a readable tar archive" in proc.stderr


def test_export_refuses_an_archive_declaring_a_huge_header_before_reading_it(tmp_path):
    """A GNU long-name header declaring 1 GiB (tarfile reads long names whole): refused before the read."""
    import gzip
    import io

    head = tarfile.TarInfo("././@LongLink")
    head.type, head.size = tarfile.GNUTYPE_LONGNAME, 2**30
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(gzip.compress(head.tobuf(format=tarfile.USTAR_FORMAT) + b"a" * 4096))
    proc = tcvae("results", "export", "x", "--from", archive, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "unpacks to more than" in proc.stderr
    good = tmp_path / "plain.tar"                                      # an uncompressed tar is read too
    with tarfile.open(good, "w") as tar:
        info = tarfile.TarInfo("params.yaml")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    proc = tcvae("results", "export", "x", "--from", good, cwd=tmp_path)
    assert proc.returncode == 2 and "runs is missing" in proc.stderr
    with tarfile.open(tmp_path / "x.tar.xz", "w:xz") as tar:           # another compression: said so
        tar.add(good, "plain.tar")
    proc = tcvae("results", "export", "x", "--from", tmp_path / "x.tar.xz", cwd=tmp_path)
    assert proc.returncode == 2 and "compressed with xz" in proc.stderr
