"""Figures from small files: evaluate writes what they draw, the plot stage needs no model, no data set and no
torch, and a result set shipped in git redraws with nothing trained."""

import json
import shutil
import subprocess
import sys

import numpy as np
import yaml
from PIL import Image

from tests.conftest import python_path, run_cli, tcvae


def cli(*args: str, cwd) -> str:
    """The CLI in-process (no interpreter and torch start per call); its printed text. Must succeed."""
    code, out = run_cli(*args, cwd=cwd)
    assert code == 0, out
    return out


def evaluated(folder):
    for method in ("betavae", "tcvae"):
        cli("stage", "evaluate", "--dataset", "tiny", "--method", method, "--beta", "2", cwd=folder)
    cli("stage", "aggregate", cwd=folder)


def drawn(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder / "data/figures")): p.read_bytes() for p in (folder / "data/figures").rglob("*.*")}


def test_plot_draws_every_figure_from_small_files_alone(trained):
    folder, _ = trained
    evaluated(folder)
    small = folder / "data/runs/tiny/tcvae/beta2/seed0/figures.h5"
    assert small.stat().st_size < 1_000_000
    cli("stage", "plot", cwd=folder)
    figures = folder / "data/figures"
    expected = ["mig_vs_beta.pdf", "tc_vs_mig.pdf"] + [f"{name}.png" for name in ("mig_vs_beta", "tc_vs_mig")] + [
        f"runs/tiny/{m}/beta2/seed0/{f}.png" for m in ("betavae", "tcvae")
        for f in ("traversals", "reconstructions", "latents_vs_factors", "learning_curves", "estimator_bias")]
    for name in expected:
        assert (figures / name).stat().st_size > 5000, name
        if name.endswith(".png"):
            with Image.open(figures / name) as img:
                assert img.size[0] > 300 and len(set(img.getextrema())) > 1, name     # not a blank canvas
    assert not list(figures.rglob(".*.tmp"))
    with Image.open(figures / "runs/tiny/tcvae/beta2/seed0/traversals.png") as img:
        assert img.size[1] > img.size[0] * 0.3            # one row per latent (4 here)
    before = drawn(folder)
    for path in [*folder.glob("data/runs/**/model.pt"), *folder.glob("data/processed/*.h5")]:
        path.unlink()                                     # no model, no data set …
    shutil.rmtree(figures)
    script = ("import sys; from tcvae.cli import app\ntry:\n    app(['stage', 'plot'])\nexcept SystemExit as e:\n"
              "    assert not e.code, e.code\nassert 'torch' not in sys.modules, 'plot imported torch'")
    subprocess.run([sys.executable, "-c", script], cwd=folder, check=True, env={"PYTHONPATH": python_path()})
    assert drawn(folder) == before                        # … the same figures, byte for byte


def test_stage_outputs_repeat_byte_for_byte(trained):
    """Every DVC-tracked output is a function of its inputs: no wall times, dates or temporary names inside."""
    folder, _ = trained
    run = folder / "data/runs/tiny/tcvae/beta2/seed0"
    first = {name: (run / name).read_bytes() for name in ("model.pt", "history.csv")}
    tcvae("stage", "train", "--dataset", "tiny", "--method", "tcvae", "--beta", "2", cwd=folder, check=True)
    assert {name: (run / name).read_bytes() for name in first} == first
    evaluated(folder)
    cli("stage", "plot", cwd=folder)
    outputs = {p: p.read_bytes() for p in [run / "eval.json", run / "figures.h5", *folder.glob("data/metrics/**/*.*")]}
    figures = drawn(folder)
    evaluated(folder)
    cli("stage", "plot", cwd=folder)
    assert {p: p.read_bytes() for p in outputs} == outputs and drawn(folder) == figures


def test_a_result_set_redraws_in_a_fresh_repository_with_nothing_trained(trained, tmp_path):
    from tests.test_scale import DVC, make_repo, run
    folder, _ = trained
    evaluated(folder)
    out = cli("results", "export", "tiny-set", cwd=folder)
    assert "2 runs" in out
    shipped = folder / "data/results/tiny-set"
    prov = json.loads((shipped / "provenance.json").read_text())
    entry = prov["runs"]["tiny/tcvae/beta2/seed0"]
    assert entry["train"]["seconds"] > 0 and entry["train"]["device"] == "cpu" and entry["train"]["torch"]
    assert (shipped / entry["params"]).read_text() == (folder / "params.yaml").read_text()
    assert sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file()) < 2_000_000
    assert not list(shipped.rglob("model.pt"))
    assert yaml.safe_load((folder / "data/results/sets.yaml").read_text())["sets"] == ["tiny-set"]
    cli("results", "export", "tiny-set", cwd=folder)                             # the same runs again: fine
    changed = folder / "data/metrics/runs/tiny/tcvae/beta2/seed0/eval.json"
    changed.write_text(json.dumps({**json.loads(changed.read_text()), "elbo": -1.0}))
    code, out = run_cli("results", "export", "tiny-set", cwd=folder)             # other results: refused
    assert code == 2 and "--force" in out
    assert "tiny-set" in cli("results", "list", cwd=folder)

    repo = make_repo(tmp_path / "repo", yaml.safe_load((folder / "params.yaml").read_text()))
    shutil.copytree(shipped, repo / "data/results/tiny-set")
    shutil.copy(folder / "data/results/sets.yaml", repo / "data/results/sets.yaml")
    run("git", "add", "-A", cwd=repo), run("git", "commit", "-qm", "ship a set", cwd=repo)
    out = run(*DVC, "repro", "results@tiny-set", cwd=repo)
    assert "Running stage 'results@tiny-set'" in out and "train-" not in out and "preprocess@" not in out
    figures = repo / "data/results/tiny-set/figures"
    assert (figures / "mig_vs_beta.png").stat().st_size > 5000
    assert (figures / "runs/tiny/tcvae/beta2/seed0/traversals.png").stat().st_size > 5000
    assert run("git", "status", "--porcelain", "data/results", cwd=repo).strip() == ""  # its summary redrawn equal
    shown = run(*DVC, "metrics", "show", "data/results/tiny-set/summary", cwd=repo)
    assert "data/results/tiny-set/summary/tiny/tcvae.json" in shown


def test_mosaic_places_each_tile_in_its_row_and_column():
    from tcvae.plots import mosaic
    tiles = np.broadcast_to(np.arange(6, dtype=np.uint8).reshape(2, 3, 1, 1, 1), (2, 3, 1, 5, 7))
    grid = mosaic(tiles, gap=2)
    assert grid.shape == (2 * 7 - 2, 3 * 9 - 2)
    for i in range(2):
        for j in range(3):
            assert (grid[i * 7:i * 7 + 5, j * 9:j * 9 + 7] == 3 * i + j).all()
    assert (grid[5:7] == 255).all() and (grid[:, 7:9] == 255).all()                  # white gaps
    assert mosaic(np.zeros((1, 2, 3, 4, 4), np.uint8)).shape == (4, 12, 3)


def test_reconstructions_leave_no_empty_band(tmp_path):
    from tcvae import plots
    from tcvae.figure_data import read
    from tests.conftest import ROOT
    shipped = sorted(ROOT.glob("data/results/*/runs/*/*/*/*/figures.h5"))[0]
    latents = len(json.loads((shipped.parent / "eval.json").read_text())["kl_per_latent"])
    plots.reconstructions(read(shipped, latents), tmp_path / "r", "a run")
    ink = np.where((np.asarray(Image.open(tmp_path / "r.png").convert("L")) < 250).any(axis=1))[0]
    height = Image.open(tmp_path / "r.png").size[1]
    assert height - ink.max() < 0.08 * height, (height, ink.max())          # the images reach the bottom


def test_tc_vs_mig_counts_runs_drawn_at_one_point(tmp_path, monkeypatch):
    """Identical runs (β = 1 of β-VAE and β-TCVAE is one VAE; collapsed runs) would hide each other: each shared point
    is labelled with its count ("2 runs"), and 3 runs per method give no ρ (below RHO_MIN distinct points)."""
    import matplotlib.axes
    from tcvae import plots
    from tcvae.results import RHO_MIN
    run = {"dataset": "d", "seed": 0, "mig": 0.2, "tc": 1.0, "active_units": 3}
    rows = [{**run, "method": m, "beta": 1} for m in ("betavae", "tcvae")] + [
        {**run, "method": "betavae", "beta": b, "mig": 0.0, "tc": 0.0, "active_units": 0} for b in (6, 8)] + [
        {**run, "method": "tcvae", "beta": b, "mig": m, "tc": t} for b, m, t in ((6, 0.3, 0.5), (8, 0.1, 0.2))]
    said, legends = [], []
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate", lambda self, text, *a, **k: said.append(text))
    real = matplotlib.axes.Axes.legend
    monkeypatch.setattr(matplotlib.axes.Axes, "legend",
                        lambda self, *a, **k: (legends.append(a[1] if len(a) > 1 else []), real(self, *a, **k))[1])
    plots.tc_vs_mig(rows, tmp_path / "tc")
    assert sorted(said) == ["2 runs", "2 runs"]
    methods = [label for label in legends[0] if label.startswith(("β-VAE", "β-TCVAE"))]
    assert RHO_MIN == 5 and len(methods) == 2 and all("no ρ" in label for label in methods), legends
    assert not any("γ" in label for label in legends[0])                     # no FactorVAE in this sweep


def test_dvc_plots_draw_each_runs_kl_parts_beside_its_elbo(tmp_path):
    """dvc.yaml's `plots:`: every run's ELBO (train's history.csv) and its MI, TC and dim-wise KL (the plot stage's
    learning_curves.csv), as interactive plots."""
    from tcvae import plots
    from tests.test_scale import DVC, TWO_RUNS, make_repo, run
    repo = make_repo(tmp_path / "repo", TWO_RUNS)
    history = [{"step": s, "elbo": -500.0 + s, "mi": 1.0, "tc": 0.5 / s, "dimwise_kl": 2.0} for s in (10, 20)]
    plots.learning_curves(history, repo / "data/figures/runs/tiny/tcvae/beta2/seed0/learning_curves", "a run")
    out = run(*DVC, "plots", "show", "--json", cwd=repo)
    shown, end = json.JSONDecoder().raw_decode(out)
    assert not [e for e in shown.get("errors", []) if "learning_curves" in e["name"]], out   # the rest is not drawn here
    curves = shown["data"]["data/figures/runs/tiny/tcvae/beta2/seed0/learning_curves.csv"][0]
    assert curves["type"] == "vega" and {"mi", "tc", "dimwise_kl"} <= {v["field"] for v in curves["content"]["data"]["values"]}
    assert shown["data"]["data/figures/runs/tiny/tcvae/beta2/seed0/learning_curves.png"][0]["type"] == "image"


def test_a_collapsed_run_draws_no_latents_against_factors(tmp_path, monkeypatch):
    """A posterior with every KL near 0 has nothing to draw: the figure says so instead of showing noise on an
    automatic colour scale."""
    import matplotlib.pyplot as plt

    from tcvae import plots
    from tcvae.figure_data import FigureData
    drawn = []
    monkeypatch.setattr(plots, "save", lambda fig, path, **kw: drawn.append(fig))
    fd = FigureData(traversals=np.zeros((2, 3, 1, 4, 4), np.uint8), offsets=np.zeros(3), image=0,
                    originals=np.zeros((1, 1, 4, 4), np.uint8), reconstructions=np.zeros((1, 1, 4, 4), np.uint8))
    plots.latents_vs_factors(fd, [0.001, 0.002], tmp_path / "x.png", "run")
    texts = [t.get_text() for ax in drawn[0].axes for t in ax.texts]
    assert any("collapsed" in t for t in texts) and not any(ax.images for ax in drawn[0].axes)
    plt.close("all")
