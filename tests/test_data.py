
import numpy as np
import pytest
import torch

from tcvae import data
from tcvae.data import dsprites, faces
from tcvae.errors import UserError

STEP = {"scale": 5, "orientation": 20, "posX": 8, "posY": 8}      # 3 × 2 × 2 × 4 × 4 = 192 images


def fake_npz(path, step=STEP, shuffle=True):
    """A small npz with the real keys and dtypes (0/1 uint8 imgs, int64 classes with the colour column)."""
    keep = dsprites.subgrid(step)
    idx = data.grid([len(k) for k in keep])
    classes = np.stack([keep[k][idx[:, k]] for k in range(5)], 1)
    imgs = dsprites.render(classes)
    order = np.random.default_rng(0).permutation(len(imgs)) if shuffle else np.arange(len(imgs))
    full = np.concatenate([np.zeros((len(idx), 1), np.int64), classes], 1)[order]
    values = full.astype(np.float64)
    np.savez_compressed(path, imgs=imgs[order], latents_classes=full, latents_values=values,
                        metadata=np.array(0))
    return imgs


def test_npz_converts_to_canonical_order(tmp_path):
    expected = fake_npz(tmp_path / "fake.npz")
    dsprites.preprocess(tmp_path / "a.h5", STEP, tmp_path / "fake.npz", "file", "abc")
    dsprites.preprocess(tmp_path / "b.h5", STEP)
    a, b = data.load(tmp_path / "a.h5"), data.load(tmp_path / "b.h5")
    assert (a.images[:, 0] == expected * 255).all()
    assert (a.images == b.images).all() and (a.factors == b.factors).all()
    assert a.source == "file" and b.source == "procedural"
    assert a.factor_sizes == (3, 2, 2, 4, 4) and a.metric_factors == ("scale", "orientation", "posX", "posY")


def test_npz_missing_combinations_is_refused(tmp_path):
    fake_npz(tmp_path / "fake.npz")
    with pytest.raises(UserError, match="every combination"):
        dsprites.preprocess(tmp_path / "a.h5", {"scale": 1}, tmp_path / "fake.npz")
    assert not list(tmp_path.glob("*.h5"))


def test_load_serves_float_batches_and_hides_packing(tmp_path):
    dsprites.preprocess(tmp_path / "d.h5", STEP)
    ds = data.load(tmp_path / "d.h5")
    assert ds.packed and ds.images.dtype == np.uint8 and ds.images.shape == (192, 1, 64, 64)
    x = ds.batch(np.array([5, 0, 5]))
    assert x.dtype == torch.float32 and x.shape == (3, 1, 64, 64)
    assert set(x.unique().tolist()) <= {0.0, 1.0} and (x[0] == x[2]).all()
    assert (x[1, 0].numpy() * 255 == ds.images[0, 0]).all()
    assert ds.factor_values[:, 1].min() == 0.5 and ds.factor_values[:, 1].max() == 1.0


def nose_centre(monkeypatch, azimuth, elevation):
    """Where the nose is in each image: the pixels that change when the nose is removed → (col, row)."""
    with_nose = faces.render(0, azimuth, elevation, np.zeros(1))[:, 0].astype(float)
    parts, sockets = faces.identities()
    parts[:, 1, 3:6] = 1e-6
    monkeypatch.setattr(faces, "identities", lambda n=50, seed=0: (parts, sockets))
    nose = np.abs(with_nose - faces.render(0, azimuth, elevation, np.zeros(1))[:, 0]) > 0
    monkeypatch.undo()
    count = nose.sum((1, 2))
    return (nose * np.arange(64)).sum((1, 2)) / count, (nose * np.arange(64)[:, None]).sum((1, 2)) / count


def test_faces_factors_change_the_image_as_named(monkeypatch):
    """Azimuth turns the head left→right (mirror-symmetric), elevation views it from below→above (the nose
    moves down the image), the light's azimuth moves the bright side left→right."""
    _, az, el, light = faces.factor_values()
    turned = faces.render(0, az, np.zeros(21), np.zeros(1))[:, 0]
    assert all((turned[i] == turned[20 - i][:, ::-1]).all() for i in range(21))      # ±a are mirror images
    col, _ = nose_centre(monkeypatch, az[6:15], np.zeros(9))            # ±36°; further, it turns edge-on
    assert np.all(np.diff(col) > 0) and col[-1] - col[0] > 6
    _, row = nose_centre(monkeypatch, np.zeros(11), el)
    assert np.all(np.diff(row) > 0) and row[-1] - row[0] > 10
    img = faces.render(0, np.zeros(1), np.zeros(1), light)[0].astype(float)          # (L, 64, 64)
    centroid = (img * np.arange(64)).sum((1, 2)) / img.sum((1, 2))
    assert np.all(np.diff(centroid[1:-1]) > 0) and centroid[-1] - centroid[0] > 5   # grazing at ±90°
    assert img[:, 0, 0].max() == 0                                                  # background stays black


def test_basel_file_is_checked(tmp_path):
    good = torch.randint(0, 255, (50, 21, 11, 11, 64, 64), dtype=torch.uint8)
    torch.save(good, tmp_path / "good.pth")
    assert (faces.load_basel(tmp_path / "good.pth")[7] == good.reshape(-1, 64, 64)[7].numpy()).all()
    torch.save(good[:2], tmp_path / "small.pth")
    with pytest.raises(UserError, match="expected a uint8 tensor"):      # exit 2, not a traceback
        faces.load_basel(tmp_path / "small.pth")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="refused — it holds Python objects") as err:
        faces.load_basel(tmp_path / "evil.pth")
    assert "weights_only" not in str(err.value)                     # never torch's advice to turn the check off
