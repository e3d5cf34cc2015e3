"""The plot stage on tiny runs: every figure is drawn, as PNG and PDF, and nothing half-written is left."""

from PIL import Image

from tests.conftest import tcvae


def test_plot_stage_draws_every_figure(trained):
    folder, _ = trained
    for method in ("betavae", "tcvae"):
        tcvae("stage", "evaluate", "--dataset", "tiny", "--method", method, "--beta", "2", cwd=folder, check=True)
    tcvae("stage", "aggregate", cwd=folder, check=True)
    tcvae("stage", "plot", cwd=folder, check=True)
    figures = folder / "data/figures"
    expected = ["mig_vs_beta", "tc_vs_mig"] + [f"runs/tiny/{m}/beta2/seed0/{f}" for m in ("betavae", "tcvae")
                                              for f in ("traversals", "reconstructions", "latents_vs_factors")]
    for name in expected:
        for suffix in (".png", ".pdf"):
            assert (figures / (name + suffix)).stat().st_size > 5000, name + suffix
        with Image.open(figures / (name + ".png")) as img:
            assert img.size[0] > 300 and img.getextrema() != ((255, 255), (255, 255), (255, 255), (255, 255))
    assert not list(figures.rglob(".*.tmp"))
    with Image.open(figures / "runs/tiny/tcvae/beta2/seed0/traversals.png") as img:
        assert img.size[1] > img.size[0] * 0.3            # one row per latent (4 here)
