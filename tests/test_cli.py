"""The CLI as a user meets it: help, bad params refused on one screen with exit 2, stages end to end."""

import h5py
import pytest

from tcvae import data
from tests.conftest import TINY_DSPRITES, run_cli, tcvae, tiny_params


def test_help_lists_the_stages(project):
    out = tcvae("stage", "--help", cwd=project[0], check=True).stdout
    assert "download" in out and "preprocess" in out


@pytest.mark.parametrize("group", [[], ["stage"], ["bench"], ["sweep"], ["results"]])
def test_help_summaries_are_whole_at_80_columns(group):
    code, out = run_cli(*group, "--help")
    commands = out[out.index("Commands:"):]
    assert code == 0 and len(commands.splitlines()) > 1 and "..." not in commands and "…" not in commands, out


@pytest.mark.parametrize("params,key,rule", [
    ({"trian": {}}, "trian", "did you mean 'train'"),
    ({"data": {"tiny": {**TINY_DSPRITES, "sorce": "file"}}}, "data.tiny.sorce", "unknown key"),
    ({"data": {"tiny": {**TINY_DSPRITES, "source": "ftp"}}}, "data.tiny.source", "'procedural'"),
    ({"data": {"tiny": {**TINY_DSPRITES, "step": {"posX": 0}}}}, "data.tiny.step.posX", "greater than 0"),
    ({"data": {"tiny": {**TINY_DSPRITES, "source": "file"}}}, "data.tiny", "needs `file: <path>`"),
    ({"data": {"tiny": TINY_DSPRITES, "faces": {"kind": "faces"}}}, "faces-procedural", "stand-in"),
    ({"train": {"steps": 5, "lr": -1}}, "train.lr", "greater than 0"),
    ({"train": {"steps": 5, "epochs": 2}}, "train", "exactly one of"),
    ({"sweep": {"datasets": ["nope"], "betas": {"betavae": [], "tcvae": [1], "factorvae": [], "annealedvae": []}, "seeds": [0]}}, "nope", "not a key of"),
    ({"sweep": {"datasets": ["tiny"], "betas": {"vae": [1], "betavae": [], "tcvae": [], "factorvae": [], "annealedvae": []}, "seeds": [0]}},
     "sweep.betas.vae", "betavae"),
    ({"sweep": {"datasets": ["tiny"], "betas": {"betavae": [1], "tcvae": [2]}, "seeds": [0]}}, "sweep.betas",
     "add `factorvae: []`"),
    ({"sweep": {"datasets": ["tiny"], "betas": {"betavae": [], "tcvae": [], "factorvae": [], "annealedvae": []}, "seeds": [0]}},
     "sweep.betas", "no runs"),
    ({"train": {"steps": 5, "capacity": {"max": -1}}}, "train.capacity.max", "greater than or equal to 0"),
    ({"train": {"steps": 5, "capacity": {"max": 5, "steps": 0}}}, "train.capacity", "`steps` is 0"),
    ({"train": {"steps": 5, "capacity": {"max": 5, "steps": 10}}}, "train.capacity", "no annealedvae run"),
    ({"compute": {"checkpoint_dir": ""}}, "compute.checkpoint_dir", "non-empty path"),
    ({"compute": {"checkpoint_dir": "~no-such-user-here/ckpt"}}, "compute.checkpoint_dir", "names no home folder"),
])
@pytest.mark.parametrize("stage", ["download", "preprocess", "train"])
def test_bad_params_exit_2_and_name_the_key(project, params, key, rule, stage):
    folder, write_params = project
    write_params({**tiny_params(), **params} if "trian" in params else tiny_params(**params))
    args = ["--dataset", "tiny", "--method", "tcvae", "--beta", "1"] if stage == "train" else []
    code, out = run_cli("stage", stage, *args, cwd=folder)
    assert code == 2
    assert key in out and rule in out, out
    assert "Traceback" not in out and len(out.splitlines()) < 25
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
    assert len(ds) == 192 and ds.factor_sizes == (3, 2, 2, 4, 4)
    with h5py.File(folder / "data/processed/tiny.h5") as f:
        assert f.attrs["source"] == "procedural" and f.attrs["packed"] == 1
    assert [p.name for p in (folder / "data/processed").iterdir()] == ["tiny.h5"]   # no temporary left


def test_faces_from_the_authors_file(project, tmp_path):
    import torch
    folder, write_params = project
    renders = torch.randint(0, 255, (50, 21, 11, 11, 64, 64), dtype=torch.uint8)
    torch.save(renders, tmp_path / "basel_face_renders.pth")
    write_params(tiny_params(data={"faces": {"kind": "faces", "source": "file", "file": str(tmp_path / "basel_face_renders.pth")}}))
    tcvae("stage", "download", cwd=folder, check=True)
    tcvae("stage", "preprocess", cwd=folder, check=True)
    ds = data.load(folder / "data/processed/faces.h5")
    assert ds.source == "file" and ds.factor_names == ("identity", "azimuth", "elevation", "lighting")
    assert (ds.uint8([12345])[0, 0] == renders.reshape(-1, 64, 64)[12345].numpy()).all()
    write_params(tiny_params(data={"faces": {"kind": "faces", "source": "file", "identities": 3,
                                             "file": str(tmp_path / "basel_face_renders.pth")}}))
    tcvae("stage", "preprocess", cwd=folder, check=True)
    ds = data.load(folder / "data/processed/faces.h5")          # the first 3 identities, factors to match
    assert len(ds) == 3 * 2541 and ds.factor_sizes == (3, 21, 11, 11) and ds.factors[:, 0].max() == 2
    assert (ds.uint8([7000])[0, 0] == renders.reshape(-1, 64, 64)[7000].numpy()).all()


@pytest.mark.parametrize("name", ["params.yaml", "params-paper.yaml", "params-gpu.yaml"])
def test_shipped_params_are_valid(name):
    from stages.params import load_params
    from tests.conftest import ROOT
    p = load_params(ROOT / name)
    assert set(p.sweep.methods) >= {"betavae", "tcvae"} and len(p.sweep.betas["tcvae"]) >= 2


def test_counts_and_numbers_read_as_written():
    from tcvae.console import count
    from tcvae.results import number
    assert [count(1, "active unit"), count(0, "run"), count(12, "run")] == ["1 active unit", "0 runs", "12 runs"]
    assert [number(-0.0004), number(-0.004, 2, sign=True), number(0.2225)] == ["0.000", "+0.00", "0.223"]
