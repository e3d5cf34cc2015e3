"""Hostile input, each case as a user could write it: exit 2 with a one-screen message naming what is wrong,
within seconds, never a traceback and nothing written under data/."""

import os
import time

import pytest
import yaml

from tests.conftest import ROOT, TINY_DSPRITES, TINY_SWEEP, TINY_TRAIN, run_cli, tiny_params

SHIPPED = (ROOT / "params.yaml").read_text()


def refused(folder, *args, within: float = 5.0) -> str:
    """Run `tcvae *args` in `folder`; assert exit 2, no traceback, no data written, in time; return the message."""
    start = time.monotonic()
    code, out = run_cli(*args, cwd=folder)
    assert time.monotonic() - start < within, f"took {time.monotonic() - start:.1f} s"
    assert code == 2, out
    assert "Traceback" not in out and len(out.splitlines()) < 30, out
    assert not any(p.is_file() for p in (folder / "data").rglob("*")), "wrote under data/ on exit 2"
    return out


def write(folder, text: str | bytes, name: str = "params.yaml"):
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ---- params files that are not params files ----

def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,says", [
    (alias_bomb(), "expands to more than"),
    (os.urandom(4096) + b"\xff", "not UTF-8"),
    ("[" * 5000 + "]" * 5000, "nested more than"),
    ("a: &a [*a]\n", "refers to itself"),
    ("train:\n  steps: " + "7" * 5000 + "\n", "more than 4,300 digits"),
    ("x" * (2 << 20), "larger than"),
    (SHIPPED + "\ntrain:\n  steps: 5\n", "key 'train' appears twice"),
    (SHIPPED.replace("  lr: 0.001\n", "  lr: 0.001\n  lr: 1\n"), "key 'lr' in `train` appears twice"),
    ("data: [unclosed\n", "not valid YAML"),
])
def test_params_files_that_are_no_params_file(project, text, says):
    folder, _ = project
    write(folder, text)
    assert says in refused(folder, "stage", "download")


def test_a_directory_as_params_says_so(project):
    folder, _ = project
    (folder / "conf").mkdir()
    assert "conf is a directory" in refused(folder, "stage", "download", "--params", "conf")


def test_the_error_table_is_bounded(project):
    folder, write_params = project
    huge = {f"k{i}": "v" * 3000 for i in range(200)}   # 600 KB, 200 unknown keys
    write_params(tiny_params(train={**TINY_TRAIN, **huge}))
    out = refused(folder, "stage", "download")
    assert "and 185 more" in out and len(out) < 6000


# ---- values of the wrong type or out of range ----

@pytest.mark.parametrize("section,value,key", [
    ("train", {"steps": True}, "train.steps"),
    ("train", {"steps": "5"}, "train.steps"),
    ("train", {"steps": None, "epochs": float("inf")}, "train.epochs"),
    ("train", {"steps": None, "epochs": 1e300}, "train.epochs"),
    ("train", {"alpha": float("inf")}, "train.alpha"),
    ("train", {"gamma": float("inf")}, "train.gamma"),
    ("train", {"gamma": float("nan")}, "train.gamma"),
    ("train", {"discriminator": {"lr": float("inf")}}, "train.discriminator.lr"),
    ("train", {"discriminator": {"betas": [True, 0.9]}}, "train.discriminator.betas.0"),
    ("train", {"arch": {}}, "train.arch names neither data set 'tiny'"),
    ("train", {"arch": {"faces": "conv"}}, "train.arch names neither data set 'tiny'"),
    ("compute", {"checkpoint_minutes": float("inf")}, "compute.checkpoint_minutes"),
    ("evaluate", {**{"n_samples": 150}, "active_threshold": float("inf")}, "evaluate.active_threshold"),
    ("evaluate", {"seed": 2**70}, "evaluate.seed"),
    ("plot", {"traversal_range": float("inf")}, "plot.traversal_range"),
    ("sweep", {"betas": [float("inf")]}, "sweep.betas.0"),
    ("sweep", {"betas": [True]}, "sweep.betas.0"),
    ("sweep", {"betas": ["1"]}, "sweep.betas.0"),
    ("sweep", {"betas": [1, 1]}, "listed twice"),
    ("sweep", {"seeds": [False]}, "sweep.seeds.0"),
    ("sweep", {"seeds": [0, 0]}, "listed twice"),
    ("sweep", {"betas": [6.0]}, "write 6.0 as 6"),
    ("data", {"tiny": {**TINY_DSPRITES, "source": "download", "url": "https://example.org/x/.."}}, "'..'"),
    ("data", {"tiny": {**TINY_DSPRITES, "source": "download", "url": "https://example.org/x/"}}, "file's name"),
])
def test_strict_values_are_refused(project, section, value, key):
    folder, write_params = project
    defaults = {"train": TINY_TRAIN, "sweep": TINY_SWEEP, "data": {}}
    merged = {**defaults.get(section, {}), **value}
    if section == "train" and merged.get("steps", 1) is None:
        del merged["steps"]
    write_params(tiny_params(**{section: merged}))
    out = refused(folder, "stage", "download")
    assert key in out, out


def test_paths_and_pairs_still_read_from_yaml(project, monkeypatch, tmp_path):
    """Strict types, but YAML has no path or tuple: a string and a list are read as one; `~` is expanded."""
    from stages.params import load_params
    folder, write_params = project
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data/renders.pth").write_bytes(b"x")
    path = write_params(tiny_params(data={"faces": {"kind": "faces", "source": "file", "file": "~/data/renders.pth"}},
                                    train={**TINY_TRAIN, "discriminator": {"betas": [0.5, 0.9]}, "alpha": 1}))
    p = load_params(path)
    assert p.data["faces"].file == tmp_path / "data/renders.pth" and p.train.discriminator.betas == (0.5, 0.9)
    assert p.train.alpha == 1.0
    code, out = run_cli("stage", "download", cwd=folder)
    assert code == 0, out                                 # the README's `file: ~/data/…` is found


# ---- run coordinates on the command line ----

@pytest.mark.parametrize("beta,says", [("inf", "--beta 'inf'"), ("nan", "--beta 'nan'"), ("1_0", "--beta '1_0'"),
                                       ("-1", "--beta '-1'")])
def test_bad_beta_is_refused(project, beta, says):
    folder, _ = project
    assert says in refused(folder, "stage", "train", "--dataset", "tiny", "--method", "tcvae", "--beta", beta)


@pytest.mark.parametrize("seed", [str(2**63), str(2**32)])
def test_seed_beyond_the_sweeps_range_is_refused(project, seed):
    folder, _ = project
    out = refused(folder, "stage", "train", "--dataset", "tiny", "--method", "tcvae", "--beta", "1", "--seed", seed)
    assert "--seed" in out


@pytest.mark.parametrize("beta,folder_name", [("6.0", "beta6"), (" 1", "beta1"), ("0.50", "beta0.5")])
def test_one_spelling_of_beta(project, beta, folder_name):
    from stages.params import load_params, run_coordinates, run_dir
    folder, _ = project
    value = run_coordinates(load_params(folder / "params.yaml"), "tiny", "tcvae", beta)
    assert run_dir("tiny", "tcvae", value, 0).parent.name == folder_name
