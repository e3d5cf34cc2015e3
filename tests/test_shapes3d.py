"""Shapes3D: a small file in the official layout (real label values, a sub-grid of them), converted, downloaded
from a local server and md5-checked. The real file (268 MB) is never needed here."""

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import h5py
import numpy as np
import pytest

from tcvae import data
from tcvae.data import shapes3d
from tcvae.errors import UserError
from tests.conftest import tcvae, tiny_params

KEEP = [[0, 9], [3], [1, 5, 8], [0, 7], [0, 1, 2, 3], [0, 14]]      # class indices kept: 2·1·3·2·4·2 = 96 images


def fake_h5(path, keep=KEEP, shuffle=True):
    """A 3dshapes.h5 of the real layout (images (N, 64, 64, 3) uint8, labels (N, 6) float64 with the official
    values) for a sub-grid; each image encodes its own classes in its pixels, rows optionally shuffled.
    Returns the images (N, 3, 64, 64) in canonical order."""
    idx = data.grid([len(k) for k in keep])
    classes = np.stack([np.asarray(keep[k])[idx[:, k]] for k in range(6)], 1)
    values = shapes3d.factor_values()
    labels = np.stack([values[k][classes[:, k]] for k in range(6)], 1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(idx), 64, 64, 3), dtype=np.uint8)
    images[:, 0, :6, 0] = classes * 10                                 # the classes, readable in the pixels
    order = rng.permutation(len(idx)) if shuffle else np.arange(len(idx))
    with h5py.File(path, "w") as f:
        f["images"], f["labels"] = images[order], labels[order]
    return images.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("shuffle", [False, True])
def test_converts_to_the_processed_layout(tmp_path, shuffle):
    expected = fake_h5(tmp_path / "3dshapes.h5", shuffle=shuffle)
    shapes3d.preprocess(tmp_path / "s.h5", tmp_path / "3dshapes.h5", "file", "abc")
    ds = data.load(tmp_path / "s.h5")
    assert ds.images.shape == (96, 3, 64, 64) and not ds.packed and ds.source == "file"
    assert (ds.images == expected).all()
    assert ds.factor_names == shapes3d.FACTOR_NAMES and ds.factor_sizes == (2, 1, 3, 2, 4, 2)
    assert (ds.factors == data.grid(ds.factor_sizes)).all()
    original = ds.images[:, 0, 0, :6] // 10                            # each image's own classes
    assert (original == np.stack([np.asarray(KEEP[k])[ds.factors[:, k]] for k in range(6)], 1)).all()
    assert ds.factor_values[:, 3].tolist()[:2] == [0.75, 0.75] and ds.factor_values[:, 5].max() == 30.0


def test_streams_in_blocks(tmp_path, monkeypatch):
    """Images pass through in blocks (here of 10), never as a whole array."""
    fake_h5(tmp_path / "3dshapes.h5")
    sizes = []
    blocks = shapes3d._blocks
    monkeypatch.setattr(shapes3d, "_blocks", lambda images, order: (sizes.append(len(b)) or (s, b)
                                                                    for s, b in blocks(images, order, block=10)))
    shapes3d.preprocess(tmp_path / "s.h5", tmp_path / "3dshapes.h5")
    assert sizes == [10] * 9 + [6]


def test_wrong_layouts_are_refused(tmp_path):
    fake_h5(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5", "r+") as f:
        f["labels"][0, 3] = 0.8                                        # not one of the 8 scales
    with pytest.raises(UserError, match="scale = 0.8.*not one of"):
        shapes3d.preprocess(tmp_path / "a.h5.out", tmp_path / "a.h5")
    fake_h5(tmp_path / "b.h5")
    with h5py.File(tmp_path / "b.h5", "r+") as f:
        f["labels"][1] = f["labels"][0]                                # one combination twice, one missing
    with pytest.raises(UserError, match="every combination"):
        shapes3d.preprocess(tmp_path / "b.h5.out", tmp_path / "b.h5")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["imgs"] = np.zeros((2, 64, 64), np.uint8)
    with pytest.raises(UserError, match="missing datasets"):
        shapes3d.preprocess(tmp_path / "c.h5.out", tmp_path / "c.h5")
    assert not list(tmp_path.glob("*.out"))


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_download_and_preprocess_stages(server, project):
    root, url = server
    folder, write_params = project
    expected = fake_h5(root / "3dshapes.h5")
    md5 = hashlib.md5((root / "3dshapes.h5").read_bytes()).hexdigest()
    spec = {"kind": "shapes3d", "source": "download", "url": f"{url}/3dshapes.h5"}
    write_params(tiny_params(data={"shapes": spec}))                   # the official md5: this file is refused
    proc = tcvae("stage", "download", cwd=folder)
    assert proc.returncode == 2 and "checksum mismatch" in proc.stderr and "no offline stand-in" in proc.stderr
    write_params(tiny_params(data={"shapes": {**spec, "md5": md5}}))
    tcvae("stage", "download", cwd=folder, check=True)
    tcvae("stage", "preprocess", cwd=folder, check=True)
    ds = data.load(folder / "data/processed/shapes.h5")
    assert (ds.images == expected).all() and ds.source == "download"
    with h5py.File(folder / "data/processed/shapes.h5") as f:
        assert f.attrs["source_md5"] == md5


def test_local_file_source(project):
    folder, write_params = project
    fake_h5(folder / "mine.h5")
    write_params(tiny_params(data={"shapes": {"kind": "shapes3d", "source": "file", "file": "mine.h5"}}))
    proc = tcvae("stage", "download", cwd=folder)                      # md5 defaults to the official file's
    assert proc.returncode == 2 and "does not match" in proc.stderr
    write_params(tiny_params(data={"shapes": {"kind": "shapes3d", "source": "file", "file": "mine.h5", "md5": None}}))
    tcvae("stage", "download", cwd=folder, check=True)
    tcvae("stage", "preprocess", cwd=folder, check=True)
    assert data.load(folder / "data/processed/shapes.h5").factor_sizes == (2, 1, 3, 2, 4, 2)
