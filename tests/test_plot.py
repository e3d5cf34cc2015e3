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


def test_mosaic_places_each_tile_in_its_row_and_column():
    import torch
    from tcvae.plots import mosaic
    tiles = torch.arange(6.0).reshape(2, 3, 1, 1, 1).expand(2, 3, 1, 5, 7) / 10      # tile (i, j) = (3i + j)/10
    grid = mosaic(tiles, gap=2)
    assert grid.shape == (2 * 7 - 2, 3 * 9 - 2)
    for i in range(2):
        for j in range(3):
            assert (grid[i * 7:i * 7 + 5, j * 9:j * 9 + 7] == (3 * i + j) / 10).all()
    assert (grid[5:7] == 1).all() and (grid[:, 7:9] == 1).all()                      # white gaps
    colour = mosaic(torch.rand(1, 2, 3, 4, 4))
    assert colour.shape == (4, 12, 3)
