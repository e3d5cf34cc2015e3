"""Result sets are someone else's data (issue 22): a hostile or damaged set runs no command, writes nowhere outside
its figures, loses nothing and never crashes a command: exit 0 with the right output, or exit 2 with one line
naming the file and the rule. Each case starts from a real small set (conftest.shipped_workspace)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, python_path, run_cli

SET = Path("data/results/s1")
RUN = SET / "runs/tiny/tcvae/beta2/seed0"
OTHER = SET / "runs/tiny/betavae/beta2/seed0"


def refused(code: int, out: str, *names: str) -> None:
    """Exit 2, one line naming each of `names`, no traceback."""
    assert code == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert len(lines) == 1, out
    for name in names:
        assert name in out, out


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


# ---- (1) names: no command runs ----

def test_the_results_stage_pastes_no_name_into_a_shell():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["results"]["do"]
    assert "${" not in str(stage["cmd"])          # the name reaches the command as DVC_STAGE, not a shell word


@pytest.mark.parametrize("listed", ["sets: [ 'x; touch pwned' ]\n", "sets: ['../../outside']\n", "sets: ['[red]x']\n"])
def test_a_set_name_off_the_rule_is_refused(workspace, listed, monkeypatch):
    (workspace / "data/results/sets.yaml").write_text(listed)
    refused(*run_cli("results", "list", cwd=workspace), "sets.yaml", "not a valid name")
    monkeypatch.setenv("DVC_STAGE", "results@" + yaml.safe_load(listed)["sets"][0])
    refused(*run_cli("stage", "results", cwd=workspace), "DVC_STAGE", "not a valid name")
    assert not (workspace / "pwned").exists()


@pytest.mark.parametrize("text", ["5\n", "[a, b]\n", "", "sets: {\n", "sets: [s1, s1]\n", "other: [s1]\n", "sets: 3\n"])
def test_a_damaged_sets_yaml_is_refused_and_export_writes_nothing(workspace, text):
    (workspace / "data/results/sets.yaml").write_text(text)
    shutil.rmtree(workspace / SET)
    if text:
        refused(*run_cli("results", "list", cwd=workspace), "sets.yaml")
    code, out = run_cli("results", "export", "s2", cwd=workspace)
    if text:
        refused(code, out, "sets.yaml")
        assert not (workspace / "data/results/s2").exists()
    else:                                   # an empty file lists no set: export lists the new one
        assert code == 0, out
        assert yaml.safe_load((workspace / "data/results/sets.yaml").read_text()) == {"sets": ["s2"]}


# ---- (2) nothing written outside; run coordinates from folders ----

@pytest.mark.parametrize("dataset", ["../../../outside", "/proc/self/cwd/data/runs", "Tiny", "other"])
def test_eval_json_cannot_move_its_run(workspace, dataset):
    edit_json(workspace / RUN / "eval.json", lambda ev: ev["run"].update(dataset=dataset))
    before = files_of(workspace.parent)
    refused(*run_cli("stage", "results", "s1", cwd=workspace), str(RUN / "eval.json"))
    assert files_of(workspace.parent) == before


def test_a_copied_eval_json_is_not_counted_twice(workspace):
    shutil.copy(workspace / OTHER / "eval.json", workspace / RUN / "eval.json")
    refused(*run_cli("stage", "aggregate", "--results", SET, cwd=workspace), str(RUN / "eval.json"),
            "not the run of the folder")


@pytest.mark.parametrize("folder", ["tiny/tcvae/beta2.0/seed0", "tiny/tcvae/beta02/seed0", "tiny/tcvae/beta2/seed00",
                                    "tiny/vae/beta2/seed0", "Tiny/tcvae/beta2/seed0", "tiny/tcvae/beta2/seed0/x"])
def test_run_folders_are_spelt_as_tcvae_spells_them(workspace, folder):
    shutil.copytree(workspace / RUN, workspace / SET / "runs" / folder)
    refused(*run_cli("stage", "aggregate", "--results", SET, cwd=workspace), str(SET / "runs"))


def test_a_figures_folder_that_is_a_link_is_replaced_not_followed(workspace, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    (workspace / SET / "figures").symlink_to(target)
    code, out = run_cli("stage", "results", "s1", cwd=workspace)
    assert code == 0, out
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    assert not (workspace / SET / "figures").is_symlink() and (workspace / SET / "figures/mig_vs_beta.png").is_file()


@pytest.mark.parametrize("where", [RUN / "history.csv", RUN / "eval.json", RUN, SET / "runs/tiny", SET / "runs"])
def test_no_link_in_a_set_is_followed(workspace, where):
    real = workspace / where
    moved = workspace / "private" / real.name
    moved.parent.mkdir()
    shutil.move(real, moved)
    real.symlink_to(moved)
    refused(*run_cli("stage", "results", "s1", cwd=workspace), str(where), "symbolic link")
    code, out = run_cli("results", "export", "s1", "--add", cwd=workspace)
    refused(code, out, "symbolic link")


def test_export_add_does_not_copy_a_link_to_a_private_file(workspace):
    (workspace / OTHER / "history.csv").unlink()
    (workspace / OTHER / "history.csv").symlink_to("/etc/passwd")
    refused(*run_cli("results", "export", "s1", "--add", cwd=workspace), "history.csv", "symbolic link")
    assert not (workspace / OTHER / "history.csv").resolve().is_relative_to(workspace / SET)


def test_special_files_are_refused_without_blocking(workspace):
    (workspace / RUN / "eval.json").unlink()
    os.mkfifo(workspace / RUN / "eval.json")
    start = time.monotonic()
    refused(*run_cli("stage", "aggregate", "--results", SET, cwd=workspace), "eval.json")
    assert time.monotonic() - start < 30


def test_an_oversized_file_is_refused_before_it_is_read(workspace):
    with open(workspace / RUN / "eval.json", "r+b") as f:
        f.truncate(200 * 2**20)                       # 200 MB (sparse)
    refused(*run_cli("stage", "aggregate", "--results", SET, cwd=workspace), "eval.json", "MiB")


def test_export_keeps_a_folder_that_is_not_a_set(workspace):
    notes = workspace / "data/results/mine"
    (notes / "figures").mkdir(parents=True)
    (notes / "notes.md").write_text("mine")
    refused(*run_cli("results", "export", "mine", cwd=workspace), "not a result set", "--force")
    assert (notes / "notes.md").read_text() == "mine"
    code, out = run_cli("results", "export", "mine", "--force", cwd=workspace)
    assert code == 0 and not (notes / "notes.md").exists(), out


def test_a_damaged_provenance_is_refused_yet_force_replaces_it(workspace):
    (workspace / SET / "provenance.json").write_text("{")
    refused(*run_cli("results", "list", cwd=workspace), "provenance.json")
    code, out = run_cli("results", "export", "s1", "--force", cwd=workspace)
    assert code == 0, out
    assert json.loads((workspace / SET / "provenance.json").read_text())["name"] == "s1"


def test_an_empty_sweep_exports_nothing(workspace):
    shutil.rmtree(workspace / "data/metrics/runs")
    (workspace / "data/metrics/runs").mkdir()
    refused(*run_cli("results", "export", "s3", cwd=workspace), "no runs")
    assert not (workspace / "data/results/s3").exists()


def test_a_damaged_timing_record_is_refused(workspace):
    (workspace / "data/timings/tiny/tcvae/beta2/seed0/train.json").write_text("[1, 2")
    refused(*run_cli("results", "export", "s1", "--force", cwd=workspace), "train.json")


# ---- (3) a schema on every read ----

EVAL_DAMAGE = {
    "a string score": lambda ev: ev["mig"].update(score="0.5"),
    "a non-string dataset": lambda ev: ev["run"].update(dataset=3),
    "no seed": lambda ev: ev["run"].pop("seed"),
    "a string seed": lambda ev: ev["run"].update(seed="0"),
    "an unknown method": lambda ev: ev["run"].update(method="vae"),
    "a list for decomposition": lambda ev: ev.update(decomposition=[1]),
    "no kl_per_latent": lambda ev: ev.pop("kl_per_latent"),
    "a boolean elbo": lambda ev: ev.update(elbo=True),
    "too many active units": lambda ev: ev.update(active_units=99),
    "a captured latent beyond the latents": lambda ev: ev["mig"].update(captured=[99] * len(ev["mig"]["captured"])),
}


@pytest.mark.parametrize("damage", EVAL_DAMAGE, ids=list(EVAL_DAMAGE))
def test_a_damaged_eval_json_is_refused(workspace, damage):
    edit_json(workspace / RUN / "eval.json", EVAL_DAMAGE[damage])
    refused(*run_cli("stage", "aggregate", "--results", SET, cwd=workspace), str(RUN / "eval.json"))


@pytest.mark.parametrize("text", ['{"elbo": NaN}', '{"elbo": Infinity}', "[" * 100_000, b"\xff\xfe{}", ""])
def test_eval_json_that_is_not_strict_json_is_refused(workspace, text):
    path = workspace / RUN / "eval.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(*run_cli("stage", "aggregate", "--results", SET, cwd=workspace), str(RUN / "eval.json"))


def runs_csv(workspace: Path, change) -> None:
    path = workspace / SET / "runs.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


CSV_DAMAGE = {
    "a non-numeric cell": lambda lines: [lines[0], ",".join(c if i != 2 else "two" for i, c in enumerate(lines[1].split(","))),
                                         *lines[2:]],
    "a missing column": lambda lines: [line.split(",", 1)[1] for line in lines],
    "a short row": lambda lines: [lines[0], lines[1].rsplit(",", 1)[0], *lines[2:]],
    "a repeated run": lambda lines: [*lines, lines[1]],
    "a dataset off the rule": lambda lines: [lines[0], "../x" + lines[1][4:], *lines[2:]],
    "more factors captured than scored": lambda lines: [lines[0], ",".join(
        "9" if lines[0].split(",")[i] == "factors_captured" else c for i, c in enumerate(lines[1].split(","))), *lines[2:]],
    "an infinite MIG": lambda lines: [lines[0], ",".join(c if i != 4 else "inf" for i, c in enumerate(lines[1].split(","))),
                                      *lines[2:]],
}


@pytest.mark.parametrize("damage", CSV_DAMAGE, ids=list(CSV_DAMAGE))
def test_a_damaged_runs_csv_is_refused(workspace, damage):
    runs_csv(workspace, CSV_DAMAGE[damage])
    refused(*run_cli("results", "show", SET, cwd=workspace), "runs.csv")
    refused(*run_cli("stage", "plot", "--results", SET, "--out", SET / "figures", cwd=workspace), "runs.csv")


def test_runs_csv_with_a_bom_or_binary(workspace):
    path = workspace / SET / "runs.csv"
    text = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + text)           # a BOM (a spreadsheet's save): read as UTF-8
    code, out = run_cli("results", "show", SET, cwd=workspace)
    assert code == 0 and "tcvae" in out, out
    path.write_bytes(os.urandom(3000))
    refused(*run_cli("results", "show", SET, cwd=workspace), "runs.csv")


def test_an_older_runs_csv_without_the_newer_optional_columns_still_shows(workspace):
    path = workspace / SET / "runs.csv"
    lines = [line.split(",") for line in path.read_text().splitlines()]
    drop = [lines[0].index(c) for c in ("factors_captured", "factors_scored")]
    path.write_text("\n".join(",".join(c for i, c in enumerate(line) if i not in drop) for line in lines) + "\n")
    code, out = run_cli("results", "show", SET, cwd=workspace)
    assert code == 0 and "tcvae" in out, out


@pytest.mark.parametrize("cut", ["mid-line", "no column"])
def test_a_damaged_history_is_refused(workspace, cut):
    path = workspace / RUN / "history.csv"
    text = path.read_text()
    path.write_text(text[: len(text) - 20] if cut == "mid-line" else text.replace("elbo", "elb0", 1))
    refused(*run_cli("stage", "plot", "--results", SET, "--out", SET / "figures", cwd=workspace), "history.csv")


def h5_edit(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def replace(name, array):
    def change(f):
        del f[name]
        f.create_dataset(name, data=array)
    return change


def huge(f):            # a small file declaring an enormous dataset with unwritten chunks
    del f["traversals"]
    f.create_dataset("traversals", shape=(4, 9, 3, 8192, 8192), dtype="uint8", chunks=(1, 1, 1, 64, 64))


H5_DAMAGE = {
    "no traversals": lambda f: f.__delitem__("traversals"),
    "mis-shaped traversals": replace("traversals", np.zeros((4, 9, 64, 64), np.uint8)),
    "another latent count": replace("traversals", np.zeros((5, 9, 1, 64, 64), np.uint8)),
    "float images": replace("originals", np.zeros((8, 1, 64, 64))),
    "an enormous declared shape": huge,
    "an external link": lambda f: (f.__delitem__("offsets"), f.__setitem__("offsets", h5py.ExternalLink("/etc/passwd", "/x"))),
    "a soft link": lambda f: (f.__delitem__("offsets"), f.__setitem__("offsets", h5py.SoftLink("/position"))),
    "a string image attribute": lambda f: f.attrs.__setitem__("image", "0"),
    "a factor without unit": lambda f: f["factors/posX"].attrs.__delitem__("unit"),
    "mismatched groups": replace("factors/posX/means", np.zeros((4, 2, 4))),
    "mathtext in a unit": lambda f: f["factors/posX"].attrs.__setitem__("unit", r"$\frac{$"),
    "a factor named in markup": lambda f: f.move("factors/posX", "factors/$x^$"),
    "strings of a megabyte": replace("estimator_bias/estimators", np.array([b"x" * 2**20] * 3)),
    "quantities reordered": replace("estimator_bias/quantities", np.array([b"mi", b"tc", b"log_qz", b"log_prod_qzj",
                                                                           b"dimwise_kl"])),
}


@pytest.mark.parametrize("damage", H5_DAMAGE, ids=list(H5_DAMAGE))
def test_a_damaged_figures_h5_is_refused_before_reading(workspace, damage):
    h5_edit(workspace / RUN / "figures.h5", H5_DAMAGE[damage])
    old = files_of(workspace / SET)
    refused(*run_cli("stage", "plot", "--results", SET, "--out", SET / "figures", cwd=workspace), str(RUN / "figures.h5"))
    assert files_of(workspace / SET) == old


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_an_unreadable_figures_h5_is_named(workspace, damage):
    path = workspace / RUN / "figures.h5"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    refused(*run_cli("stage", "plot", "--results", SET, "--out", SET / "figures", cwd=workspace), str(RUN / "figures.h5"))


def test_an_unknown_extra_group_in_figures_h5_is_ignored(workspace):
    h5_edit(workspace / RUN / "figures.h5", lambda f: f.create_dataset("estimator_bias/x", data=np.zeros(3)))
    code, out = run_cli("stage", "plot", "--results", SET, "--out", SET / "figures", cwd=workspace)
    assert code == 0, out


def test_an_intact_set_draws_and_summarises_the_same(workspace):
    before = files_of(workspace / SET / "summary"), (workspace / SET / "runs.csv").read_bytes()
    code, out = run_cli("stage", "results", "s1", cwd=workspace)
    assert code == 0, out
    assert (files_of(workspace / SET / "summary"), (workspace / SET / "runs.csv").read_bytes()) == before
    assert (workspace / SET / "figures/runs/tiny/tcvae/beta2/seed0/traversals.png").is_file()


# ---- (4) outputs as one unit; interruptions ----

def test_an_interrupted_plot_keeps_the_old_figures_whole(workspace, monkeypatch):
    from tcvae import plots
    code, out = run_cli("stage", "plot", "--results", SET, "--out", SET / "figures", cwd=workspace)
    assert code == 0, out
    before = files_of(workspace / SET / "figures")
    monkeypatch.setattr(os, "cpu_count", lambda: 1)            # draw in this process, where the patch applies
    calls = []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(plots, "reconstructions", interrupted)
    code, out = run_cli("stage", "plot", "--results", SET, "--out", SET / "figures", cwd=workspace)
    assert code == 130 and "interrupted" in out, out
    assert files_of(workspace / SET / "figures") == before
    assert sorted(p.name for p in (workspace / SET).iterdir() if p.name.startswith(".")) == [".gitignore"]


def test_outputs_change_together_or_not_at_all(tmp_path):
    from tcvae.io import atomic_outputs
    a, b = tmp_path / "eval.json", tmp_path / "figures"
    a.write_text("old")
    b.mkdir()
    (b / "x").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_outputs(files=[a], dirs=[b]) as (ta, tb):
            ta.write_text("new")
            (tb / "x").write_text("new")
            raise KeyboardInterrupt
    assert a.read_text() == "old" and (b / "x").read_text() == "old"
    with atomic_outputs(files=[a], dirs=[b]) as (ta, tb):
        ta.write_text("new")
        (tb / "x").write_text("new")
    assert a.read_text() == "new" and (b / "x").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "figures"]


def start(folder: Path, *args: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tcvae", *args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": python_path(), **env})


def test_sigterm_is_handled_as_ctrl_c(workspace):
    proc = start(workspace, "stage", "plot", "--results", str(SET), "--out", str(SET / "figures"))
    deadline = time.monotonic() + 60
    while not list((workspace / SET).glob(".figures.*.tmp/*")) and time.monotonic() < deadline:
        time.sleep(0.05)                                           # drawing has begun
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not [p for p in (workspace / SET).iterdir() if p.name.endswith((".tmp", ".old"))]
    assert not (workspace / SET / "figures").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_while_starting_is_one_line(tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-m", "tcvae", "--help"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": python_path()},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:     # imports still loading: the params schema's
        if "pydantic_core" in maps.read_text(errors="replace"):     # library is in, the command not yet started
            break
        time.sleep(0.002)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the command finished before the signal arrived")
    assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# ---- (5) evaluate checks the model against the run ----

def test_evaluate_refuses_a_model_made_for_another_run(workspace):
    shutil.copy(workspace / "data/runs/tiny/tcvae/beta2/seed0/model.pt", workspace / "data/runs/tiny/betavae/beta2/seed0/model.pt")
    before = files_of(workspace / "data/runs")
    refused(*run_cli("stage", "evaluate", "--dataset", "tiny", "--method", "betavae", "--beta", "2", cwd=workspace),
            "model.pt", "not made for this run", "method")
    assert files_of(workspace / "data/runs") == before


def test_evaluate_refuses_a_model_made_with_other_train_params(workspace):
    p = yaml.safe_load((workspace / "params.yaml").read_text())
    p["train"]["latents"] = 5
    (workspace / "params.yaml").write_text(yaml.safe_dump(p))
    refused(*run_cli("stage", "evaluate", "--dataset", "tiny", "--method", "tcvae", "--beta", "2", cwd=workspace),
            "model.pt", "not made for this run")


# ---- (6) text that prints anywhere ----

def test_markup_in_params_is_shown_as_text(project):
    folder, write_params = project
    (folder / "params.yaml").write_text("data:\n  '[red on white]x[/]': {kind: dsprites}\n")
    code, out = run_cli("stage", "download", cwd=folder)
    assert code == 2 and "[red on white]x[/]" in out and "Traceback" not in out, out


def test_an_ascii_terminal_gets_a_table_not_a_crash(workspace):
    proc = subprocess.run([sys.executable, "-m", "tcvae", "results", "show", str(SET)], cwd=workspace, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": python_path(), "PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0 and "tcvae" in proc.stdout, proc.stderr


@pytest.mark.parametrize("args", [("train", "--batch", "0"), ("train", "--device", "tpu"), ("mig", "--samples", "0"),
                                  ("data", "--seconds", "-1"), ("train", "--latents", "0")])
def test_bench_options_are_validated(args):
    code, out = run_cli("bench", *args)
    assert code == 2 and "Traceback" not in out, out


def test_summary_json_holds_null_not_nan(tmp_path):
    from tcvae.io import write_json
    write_json(tmp_path / "x.json", {"rho": math.nan, "mig": [math.inf, 1.0]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"rho": None, "mig": [None, 1.0]}


# ---- provenance from the runs' own records ----

def other_train_params(workspace: Path) -> Path:
    p = yaml.safe_load((workspace / "params.yaml").read_text())
    p["train"]["steps"] = 999
    path = workspace / "other.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_export_records_no_params_the_runs_were_not_made_with(workspace):
    refused(*run_cli("results", "export", "s4", "--params", other_train_params(workspace), cwd=workspace),
            "model.pt", "other `train` params")
    assert not (workspace / "data/results/s4").exists()


def test_add_refuses_runs_made_with_other_params(workspace):
    prov = workspace / SET / "provenance.json"
    edit_json(prov, lambda p: [r.update(params="params/other.yaml") for r in p["runs"].values()])
    shutil.copy(other_train_params(workspace), workspace / SET / "params/other.yaml")
    shutil.rmtree(workspace / SET / "runs/tiny/betavae")          # so that --add has a run to add
    edit_json(prov, lambda p: p["runs"].pop("tiny/betavae/beta2/seed0"))
    refused(*run_cli("results", "export", "s1", "--add", cwd=workspace), "other data or train params", "--force")
    code, out = run_cli("results", "export", "s1", "--add", "--force", cwd=workspace)
    assert code == 0, out
