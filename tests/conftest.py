import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def python_path() -> str:
    """The repository first, then whatever PYTHONPATH the tests run under."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def tcvae(*args: str, cwd: Path, check: bool = False, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (as DVC does), from `cwd`."""
    env = {**os.environ, "PYTHONPATH": python_path(), "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "tcvae", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"tcvae {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


TINY_DSPRITES = {"kind": "dsprites", "source": "procedural",
                 "step": {"scale": 5, "orientation": 20, "posX": 8, "posY": 8}}  # 3 × 2 × 2 × 4 × 4 = 192 images
TINY_TRAIN = {"steps": 6, "batch_size": 16, "log_every": 2, "latents": 4, "mlp_width": 64}
TINY_SWEEP = {"datasets": ["tiny"], "betas": {"betavae": [1], "tcvae": [], "factorvae": [], "annealedvae": []}, "seeds": [0]}
TINY_EVAL = {"n_samples": 150, "batch_size": 64}


def tiny_params(**sections) -> dict:
    """A complete params tree on the 192-image dSprites grid; keyword sections replace or add (a new
    `data` section alone also points the sweep at its data sets)."""
    params = {"data": {"tiny": TINY_DSPRITES}, "train": TINY_TRAIN, "sweep": TINY_SWEEP,
              "evaluate": TINY_EVAL, "figures": {}, "plot": {}} | sections   # DVC needs every section a stage uses
    if "data" in sections and "sweep" not in sections:
        params["sweep"] = {**TINY_SWEEP, "datasets": list(sections["data"])}
    return params


@pytest.fixture
def project(tmp_path: Path):
    """A working folder with a tiny params.yaml; returns (folder, write_params)."""
    def write_params(params: dict) -> Path:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    write_params(tiny_params())
    return tmp_path, write_params


@pytest.fixture
def trained(project, monkeypatch):
    """The tiny data set with one β-VAE and one β-TCVAE run trained (stages called in-process)."""
    from stages import download, preprocess, train
    folder, write_params = project
    write_params(tiny_params(sweep={"datasets": ["tiny"], "betas": {"betavae": [2], "tcvae": [2], "factorvae": [], "annealedvae": []}, "seeds": [0]},
                             evaluate=TINY_EVAL))
    monkeypatch.chdir(folder)
    download.command(folder / "params.yaml", None)
    preprocess.command(folder / "params.yaml", None)
    for method in ("betavae", "tcvae"):
        train.command("tiny", method, "2", 0, params=folder / "params.yaml")
    return folder, write_params


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """Run the real CLI in-process (tcvae.cli.main, as the console script does); return (exit code, stderr
    + stdout). Any exception other than the exit is left to fail the test: that would be a traceback."""
    import contextlib
    import io

    from tcvae.cli import main

    out = io.StringIO()
    with contextlib.chdir(cwd or Path.cwd()), contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue()


@pytest.fixture(scope="session")
def shipped_workspace(tmp_path_factory) -> Path:
    """A workspace (made once per session: ~15 s) with the tiny data set, one β-VAE and one β-TCVAE run trained,
    evaluated and aggregated, and exported as the result set data/results/s1. Copy it (`copy_workspace`) before
    changing anything."""
    folder = tmp_path_factory.mktemp("shipped")
    (folder / "params.yaml").write_text(yaml.safe_dump(tiny_params(
        sweep={"datasets": ["tiny"], "betas": {"betavae": [2], "tcvae": [2], "factorvae": [], "annealedvae": []}, "seeds": [0]}),
        sort_keys=False))
    steps = [("stage", "download"), ("stage", "preprocess")] + [
        (stage, "--dataset", "tiny", "--method", method, "--beta", "2") for stage in ("train", "evaluate")
        for method in ("betavae", "tcvae")]
    for args in [*steps, ("stage", "aggregate"), ("results", "export", "s1")]:
        if args[0] in ("train", "evaluate"):
            args = ("stage", *args)
        code, out = run_cli(*args, cwd=folder)
        assert code == 0, out
    return folder


@pytest.fixture
def workspace(shipped_workspace, tmp_path) -> Path:
    """A fresh copy of `shipped_workspace` to change."""
    import shutil

    return Path(shutil.copytree(shipped_workspace, tmp_path / "ws", symlinks=True))
