"""AnnealedVAE (Burgess et al. 2018, eq. 8): −E log p(x|z) + γ·|KL − C|, C raised linearly from 0 to C_max."""

import pytest
import torch

from tcvae import objectives as obj
from tcvae.models import VAE
from tests.conftest import TINY_EVAL, tcvae, tiny_params
from tests.test_train import prepared, same_weights, start_training, wait_for_checkpoint, weights  # noqa: F401


def test_capacity_rises_from_0_to_its_maximum_and_stays():
    assert obj.capacity(0, 25.0, 1000) == 0.0
    assert obj.capacity(500, 25.0, 1000) == pytest.approx(12.5)
    assert obj.capacity(1000, 25.0, 1000) == 25.0 and obj.capacity(10**6, 25.0, 1000) == 25.0
    assert obj.capacity(0, 0.0, 0) == 0.0                      # no capacity at all: β-VAE


def test_zero_capacity_is_betavae_with_beta_gamma():
    """With C = 0 the loss and every gradient equal β-VAE's at β = γ (|KL| = KL: the sampled batch-mean KL of a
    random model is positive here; the test checks it)."""
    torch.manual_seed(0)
    model, x = VAE("mlp", 4, 1, 32), (torch.rand(16, 1, 64, 64) > 0.5).float()
    grads = []
    for loss_of in (lambda t: obj.betavae_loss(t, 3.0), lambda t: obj.annealedvae_loss(t, 3.0, 0.0)):
        model.zero_grad()
        terms = obj.elbo_terms(model, x, 100, generator=torch.Generator().manual_seed(1), with_qz=False)
        assert (terms["log_qz_x"] - terms["log_pz"]).mean() > 0
        loss = loss_of(terms)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))


def test_the_trained_kl_follows_the_capacity(prepared):
    """A short run with a large γ holds its KL at C: at the end of training, C_max = 4 nats, the KL logged in
    history.csv (the batch's sampled KL) is within 1 nat of it — γ = 200 makes every nat off C cost 200 nats of
    loss, against reconstruction gains of a few nats per nat of KL on this tiny data set."""
    folder, write_params = prepared
    write_params(tiny_params(train={**tiny_params()["train"], "steps": 200, "log_every": 20, "lr": 3e-3,
                                    "capacity": {"max": 4, "steps": 100}},
                             sweep={"datasets": ["tiny"], "betas": {"betavae": [], "tcvae": [], "factorvae": [],
                                                                    "annealedvae": [200]}, "seeds": [0]}))
    tcvae("stage", "train", "--dataset", "tiny", "--method", "annealedvae", "--beta", "200", cwd=folder, check=True)
    rows = (folder / "data/runs/tiny/annealedvae/beta200/seed0/history.csv").read_text().splitlines()
    header, last = rows[0].split(","), dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert "kl" in header and abs(float(last["kl"]) - 4.0) < 1.0, last


def test_resume_after_kill_keeps_the_schedule(prepared):
    """kill -9 part-way through the capacity ramp, rerun: the same weights as an uninterrupted run (CPU)."""
    import signal

    folder, write_params = prepared
    run_dir = folder / "data/runs/tiny/annealedvae/beta4/seed1"
    write_params(tiny_params(train={**tiny_params()["train"], "steps": 300, "capacity": {"max": 3, "steps": 200}},
                             sweep={"datasets": ["tiny"], "betas": {"betavae": [], "tcvae": [], "factorvae": [],
                                                                    "annealedvae": [4]}, "seeds": [1]},
                             compute={"device": "cpu", "checkpoint_every_steps": 10}))
    args = ["--dataset", "tiny", "--method", "annealedvae", "--beta", "4", "--seed", "1"]
    tcvae("stage", "train", *args, cwd=folder, check=True)
    uninterrupted = weights(run_dir / "model.pt")
    for f in run_dir.iterdir():
        f.unlink()
    proc = start_training(folder, args)
    wait_for_checkpoint(folder, proc, run_dir.relative_to(folder))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert 0 < torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] < 300
    tcvae("stage", "train", *args, cwd=folder, check=True)
    assert same_weights(uninterrupted, weights(run_dir / "model.pt"))


def test_annealedvae_runs_through_evaluate_and_the_results_table(prepared):
    folder, write_params = prepared
    write_params(tiny_params(sweep={"datasets": ["tiny"], "betas": {"betavae": [], "tcvae": [], "factorvae": [],
                                                                    "annealedvae": [2]}, "seeds": [0]},
                             train={**tiny_params()["train"], "capacity": {"max": 2, "steps": 4}}, evaluate=TINY_EVAL))
    args = ["--dataset", "tiny", "--method", "annealedvae", "--beta", "2"]
    tcvae("stage", "train", *args, cwd=folder, check=True)
    tcvae("stage", "evaluate", *args, cwd=folder, check=True)
    tcvae("stage", "aggregate", cwd=folder, check=True)
    tcvae("stage", "plot", cwd=folder, check=True)
    assert "annealedvae" in (folder / "data/metrics/runs.csv").read_text()
    assert (folder / "data/figures/mig_vs_beta.png").is_file()
