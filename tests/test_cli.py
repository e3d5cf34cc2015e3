"""The CLI as a user meets it: help, bad params refused on one screen with exit 2, stages end to end."""

import h5py
import pytest

from tcvae import data
from tests.conftest import TINY_DSPRITES, tcvae


def test_help_lists_the_stages(project):
    out = tcvae("stage", "--help", cwd=project[0], check=True).stdout
    assert "download" in out and "preprocess" in out


@pytest.mark.parametrize("params,key,rule", [
    ({"dta": {}}, "dta", "did you mean 'data'"),
    ({"data": {"d": {**TINY_DSPRITES, "sorce": "file"}}}, "data.d.sorce", "unknown key"),
    ({"data": {"d": {**TINY_DSPRITES, "source": "ftp"}}}, "data.d.source", "'procedural'"),
    ({"data": {"d": {**TINY_DSPRITES, "step": {"posX": 0}}}}, "data.d.step.posX", "greater than 0"),
    ({"data": {"d": {**TINY_DSPRITES, "source": "file"}}}, "data.d", "needs `file: <path>`"),
    ({"data": {"faces": {"kind": "faces"}}}, "faces-procedural", "stand-in"),
])
@pytest.mark.parametrize("stage", ["download", "preprocess"])
def test_bad_params_exit_2_and_name_the_key(project, params, key, rule, stage):
    folder, write_params = project
    write_params({"data": {"d": TINY_DSPRITES}, **params} if "dta" in params else params)
    proc = tcvae("stage", stage, cwd=folder)
    assert proc.returncode == 2
    assert key in proc.stderr and rule in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) < 25
    assert not (folder / "data").exists()


def test_missing_params_file(project):
    proc = tcvae("stage", "download", "--params", "nope.yaml", cwd=project[0])
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr


def test_download_then_preprocess_tiny_dsprites(project):
    folder, _ = project
    proc = tcvae("stage", "preprocess", cwd=folder)
    assert proc.returncode == 2 and "download" in proc.stderr          # says what to run first
    tcvae("stage", "download", cwd=folder, check=True)
    tcvae("stage", "preprocess", cwd=folder, check=True)
    ds = data.load(folder / "data/processed/tiny.h5")
    assert len(ds) == 32 and ds.factor_sizes == (2, 2, 2, 2, 2)
    with h5py.File(folder / "data/processed/tiny.h5") as f:
        assert f.attrs["source"] == "procedural" and f.attrs["packed"] == 1
    assert [p.name for p in (folder / "data/processed").iterdir()] == ["tiny.h5"]   # no temporary left


def test_faces_from_the_authors_file(project, tmp_path):
    import torch
    folder, write_params = project
    renders = torch.randint(0, 255, (50, 21, 11, 11, 64, 64), dtype=torch.uint8)
    torch.save(renders, tmp_path / "basel_face_renders.pth")
    write_params({"data": {"faces": {"kind": "faces", "source": "file", "file": str(tmp_path / "basel_face_renders.pth")}}})
    tcvae("stage", "download", cwd=folder, check=True)
    tcvae("stage", "preprocess", cwd=folder, check=True)
    ds = data.load(folder / "data/processed/faces.h5")
    assert ds.source == "file" and ds.factor_names == ("identity", "azimuth", "elevation", "lighting")
    assert (ds.uint8([12345])[0, 0] == renders.reshape(-1, 64, 64)[12345].numpy()).all()
