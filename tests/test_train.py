"""Training as a user relies on it: deterministic, resumable after kill -9 or Ctrl-C, loud on NaN."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tcvae import objectives, train
from tcvae.errors import UserError
from tests.conftest import python_path, tcvae, tiny_params

RUN = ["--dataset", "tiny", "--method", "tcvae", "--beta", "4", "--seed", "1"]
RUN_DIR = "data/runs/tiny/tcvae/beta4/seed1"
SWEEP = {"datasets": ["tiny"], "betas": {"betavae": [2], "tcvae": [2, 4], "factorvae": [2], "annealedvae": []}, "seeds": [0, 1]}  # these runs


@pytest.fixture
def prepared(project, monkeypatch):
    """The tiny data set, downloaded and preprocessed (in-process: test_cli covers the subprocess path)."""
    from stages import download, preprocess
    folder, write_params = project
    write_params(tiny_params(sweep=SWEEP))       # runs outside the sweep would go to data/explore/
    monkeypatch.chdir(folder)
    download.command(folder / "params.yaml", None)
    preprocess.command(folder / "params.yaml", None)
    return folder, write_params


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["betavae", "tcvae", "factorvae"])
def test_same_seed_same_weights(prepared, method):
    folder, _ = prepared
    run = ["--dataset", "tiny", "--method", method, "--beta", "2", "--seed", "0"]
    out = folder / f"data/runs/tiny/{method}/beta2/seed0"
    tcvae("stage", "train", *run, cwd=folder, check=True)
    first = weights(out / "model.pt")
    for f in out.iterdir():
        f.unlink()
    tcvae("stage", "train", *run, cwd=folder, check=True)
    assert same_weights(first, weights(out / "model.pt"))
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["method"] == method and saved["train"]["batch_size"] == 16 and saved["beta"] == 2.0
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("step,epoch,loss,elbo") and len(history) == 1 + 3     # steps 2, 4, 6
    model, record = train.load_model(out / "model.pt")
    assert model.encode(torch.rand(2, 1, 64, 64))[0].shape == (2, 4)


def start_training(folder, run=RUN):
    env = {**os.environ, "PYTHONPATH": python_path()}
    return subprocess.Popen([sys.executable, "-m", "tcvae", "stage", "train", *run], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(folder, proc, where=RUN_DIR, name="checkpoint.pt"):
    deadline = time.monotonic() + 120
    while not list((folder / where).glob(name)):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


UNINTERRUPTED: dict[str, dict] = {}     # device → the uninterrupted run's weights


@pytest.mark.parametrize("device,how", [("cpu", signal.SIGKILL), ("cpu", signal.SIGINT), ("cpu", signal.SIGTERM),
                                        pytest.param("cuda", signal.SIGINT, marks=CUDA)])
def test_interrupted_run_resumes_to_the_same_weights(prepared, device, how):
    """SIGTERM is SLURM's (scancel, time limit, pre-emption): its run checkpoints in a shared compute.checkpoint_dir."""
    folder, write_params = prepared
    shared = how == signal.SIGTERM
    compute = {"device": device, "checkpoint_every_steps": 10} | ({"checkpoint_dir": str(folder / "shared")} if shared else {})
    write_params(tiny_params(train={**tiny_params()["train"], "steps": 300}, compute=compute, sweep=SWEEP))
    if device not in UNINTERRUPTED:               # where it checkpoints changes no weight: one reference a device
        tcvae("stage", "train", *RUN, cwd=folder, check=True)
        UNINTERRUPTED[device] = weights(folder / RUN_DIR / "model.pt")
        for f in (folder / RUN_DIR).iterdir():
            f.unlink()
    uninterrupted = UNINTERRUPTED[device]

    where, name = ("shared", "tiny-tcvae-beta4-seed1-*.pt") if shared else (RUN_DIR, "checkpoint.pt")
    proc = start_training(folder)
    wait_for_checkpoint(folder, proc, where, name)
    proc.send_signal(how)
    proc.wait(timeout=60)
    assert proc.returncode == (-9 if how == signal.SIGKILL else 130)
    if how != signal.SIGKILL:                         # Ctrl-C says what it kept, though Typer exits before main()'s except
        assert "interrupted; no partial output was kept" in proc.stderr.read()
    [ckpt] = (folder / where).glob(name)
    assert shared != (folder / RUN_DIR / "checkpoint.pt").exists()     # one checkpoint, where compute says
    state = torch.load(ckpt, weights_only=True)
    assert 0 < state["step"] < 300                    # it really stopped part-way
    assert not (folder / RUN_DIR / "model.pt").exists()
    tcvae("stage", "train", *RUN, cwd=folder, check=True)
    resumed = weights(folder / RUN_DIR / "model.pt")
    if device == "cpu":
        assert same_weights(uninterrupted, resumed)
    else:                                             # CUDA kernels need not be bitwise repeatable
        assert all(torch.allclose(uninterrupted[k], resumed[k], atol=1e-5) for k in uninterrupted)
    assert not ckpt.exists()                          # the finished run's checkpoint is gone
    rows = (folder / RUN_DIR / "history.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(2, 301, 2))   # history neither lost nor doubled


def test_nan_stops_with_step_and_term_and_keeps_the_checkpoint(prepared, monkeypatch):
    folder, _ = prepared
    from stages.params import load_params
    from tcvae import data

    p = load_params(folder / "params.yaml")
    calls = []
    real = objectives.log_bernoulli

    def poisoned(logits, x):
        calls.append(1)
        out = real(logits, x)
        return out * float("nan") if len(calls) == 4 else out

    monkeypatch.setattr(objectives, "log_bernoulli", poisoned)
    out = folder / "run"
    with pytest.raises(train.Diverged, match="step 4: loss = nan") as err:
        train.fit(data.load(folder / "data/processed/tiny.h5"), p.train, method="tcvae", beta=1.0, seed=0, arch="mlp",
                  out=out, record={}, checkpoint_every_steps=1)
    assert isinstance(err.value, UserError)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3
    assert not (out / "model.pt").exists()


def test_bad_coordinates_exit_2(prepared):
    folder, _ = prepared
    proc = tcvae("stage", "train", "--dataset", "tiny", "--method", "vae", "--beta", "-1", cwd=folder)
    assert proc.returncode == 2 and "--method vae" in proc.stderr and "--beta '-1'" in proc.stderr
    proc = tcvae("stage", "train", "--dataset", "other", "--method", "tcvae", "--beta", "1", cwd=folder)
    assert proc.returncode == 2 and "--dataset other" in proc.stderr


@pytest.mark.parametrize("method", ["tcvae", "factorvae"])
def test_the_nan_fill_of_deterministic_mode_changes_no_weight(prepared, monkeypatch, method):
    """`fit` turns off deterministic mode's NaN fill of uninitialised memory (a kernel per allocation on CUDA):
    the weights are bit for bit those made with the fill on, so no buffer is read before it is written."""
    from stages.params import load_params
    from tcvae import data
    folder, _ = prepared
    p, ds = load_params(folder / "params.yaml"), data.load(folder / "data/processed/tiny.h5")
    fit = lambda out: train.fit(ds, p.train, method=method, beta=2.0, seed=0, arch="mlp", out=folder / out,
                                record={}, device="cpu")
    fit("off")
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)   # restored afterwards
    switch_off = train.deterministic
    monkeypatch.setattr(train, "deterministic", lambda: (switch_off(), setattr(
        torch.utils.deterministic, "fill_uninitialized_memory", True)))
    fit("on")
    assert torch.utils.deterministic.fill_uninitialized_memory is True
    assert same_weights(weights(folder / "off/model.pt"), weights(folder / "on/model.pt"))
