import numpy as np
import pytest

from tcvae.data import dsprites
from tcvae.data.dsprites import _inside, factor_values


def test_golden_square_pixel_counts():
    """The real data set's square at orientation 0, position (0, 0) has these many white pixels."""
    factors = np.array([[0, s, 0, 0, 0] for s in range(6)])
    assert dsprites.render(factors).sum(axis=(1, 2)).tolist() == [100, 144, 196, 256, 324, 400]


def full_frame(f):
    """Brute force: test the shape at every pixel centre of the 64×64 frame (no window)."""
    import torch
    sh, sc, ori, px, py = f
    v = factor_values()
    x = np.arange(64) + 0.5
    dx = x[None, :] - (16 + 32 * v[3][px])     # columns
    dy = x[:, None] - (16 + 32 * v[4][py])     # rows
    c, s = np.cos(v[2][ori]), np.sin(v[2][ori])
    u = (c * dx - s * dy) / v[1][sc]
    w = (s * dx + c * dy) / v[1][sc]
    return _inside(int(sh), torch.tensor(u, dtype=torch.float32), torch.tensor(w, dtype=torch.float32)).numpy()


def test_windowed_render_matches_full_frame():
    rng = np.random.default_rng(1)
    factors = np.stack([rng.integers(0, s, 40) for s in dsprites.FACTOR_SIZES], 1)
    factors[:4, 3:] = [[0, 0], [31, 31], [0, 31], [31, 0]]        # sprites at the corners of the frame
    images = dsprites.render(factors)
    for f, img in zip(factors, images):
        assert (img == full_frame(f)).all(), f


def test_grid_order_is_canonical():
    """render_grid writes row-major with posY fastest, like the real npz."""
    keep = dsprites.subgrid({"orientation": 10, "posX": 8, "posY": 8})
    images = np.concatenate([b for _, b in dsprites.render_grid(keep)])
    sizes = [len(k) for k in keep]
    for flat in [0, 1, 17, 300, len(images) - 1]:
        idx = np.unravel_index(flat, sizes)
        classes = [keep[k][i] for k, i in enumerate(idx)]
        assert (images[flat] == dsprites.render(np.array([classes]))[0]).all()


def test_heart_points_down_and_orientation_wraps():
    heart = dsprites.render(np.array([[2, 5, 0, 16, 16], [2, 5, 39, 16, 16]]))
    assert (heart[0] == heart[1]).all()                  # orientation 0 and 2π are the same image
    widths = heart[0].sum(axis=1)
    rows = np.flatnonzero(widths)
    top, bottom = widths[rows[:4]].mean(), widths[rows[-4:]].mean()
    assert top > 2 * bottom                              # lobes up (wide), tip down (narrow)
    assert widths[rows[0] + 1] < widths[rows[0] + 6]     # …with the notch between the lobes at the top


@pytest.mark.parametrize("axis,factor", [(1, 3), (0, 4)])
def test_position_moves_the_sprite(axis, factor):
    f = np.zeros((32, 5), dtype=int)
    f[:, 1] = 5
    f[:, factor] = np.arange(32)
    images = dsprites.render(f)
    centre = (images * np.arange(64)[None, :, None] if axis == 0 else images * np.arange(64)).sum((1, 2)) / images.sum((1, 2))
    assert np.all(np.diff(centre) > 0.8)                 # posX moves right (columns), posY moves down (rows)
    assert centre[0] == pytest.approx(16, abs=0.6) and centre[-1] == pytest.approx(48, abs=0.6)


def test_render_rejects_out_of_range():
    with pytest.raises(ValueError):
        dsprites.render(np.array([[3, 0, 0, 0, 0]]))


def test_a_subgrid_can_keep_chosen_values(project):
    """`keep: {shape: [2]}` (hearts only) and one orientation: values the step rule cannot pick. A factor left with
    one value is not scored (no entropy), and the figures name the shape kept, not the first one."""
    import numpy as np

    from tcvae import data
    from tcvae.data import dsprites
    from tcvae.figure_data import factor_tables
    from tests.conftest import TINY_DSPRITES, tcvae, tiny_params

    folder, write_params = project
    spec = {**TINY_DSPRITES, "step": {"scale": 5, "posX": 8, "posY": 8}, "keep": {"shape": [2], "orientation": [0]}}
    write_params(tiny_params(data={"tiny": spec}))
    tcvae("stage", "download", cwd=folder, check=True)
    tcvae("stage", "preprocess", cwd=folder, check=True)
    ds = data.load(folder / "data/processed/tiny.h5")
    assert len(ds) == 1 * 2 * 1 * 4 * 4 and ds.factor_sizes == (1, 2, 1, 4, 4)
    assert ds.metric_factors == ("scale", "posX", "posY")
    assert (ds.factor_values[:, 0] == 3).all()                              # heart is shape value 3 (class index 2)
    full = dsprites.render(np.array([[2, 0, 0, 0, 0], [2, 5, 0, 24, 24]]))
    assert (ds.uint8([0, len(ds) - 1])[:, 0] > 0).tolist() == (full > 0).tolist()
    _, groups, _ = factor_tables(np.zeros((len(ds), 2)), ds.factors, ds.factor_names, ds.factor_values)
    assert groups == ("heart",)


@pytest.mark.parametrize("spec,says", [
    ({"keep": {"shape": [3]}}, "not a class index of shape"),
    ({"keep": {"shape": []}}, "keep.shape"),
    ({"keep": {"shape": [1, 1]}}, "listed twice"),
    ({"keep": {"posX": [0]}, "step": {"posX": 2}}, "give `step` or `keep`"),
    ({"step": {"shape": 3}}, "list it under `keep`"),
])
def test_bad_keep_is_refused(project, spec, says):
    from tests.conftest import TINY_DSPRITES, tcvae, tiny_params
    folder, write_params = project
    write_params(tiny_params(data={"tiny": {**TINY_DSPRITES, **spec}}))
    proc = tcvae("stage", "download", cwd=folder)
    text = " ".join(proc.stderr.replace("│", " ").split())         # the error table's cells, unwrapped
    assert proc.returncode == 2 and says in text, proc.stderr
