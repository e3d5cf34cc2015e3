"""The parts of the GPU paths that run anywhere: device-resident batches, the precision setting, and
divergence detection without a host sync per step (CUDA itself: tests/test_cuda.py)."""

import numpy as np
import pytest
import torch

from tcvae import train
from tcvae.data import Dataset, DeviceBatches


def dataset(packed: bool, channels: int = 1, n: int = 50) -> Dataset:
    rng = np.random.default_rng(0)
    if packed:
        images = rng.integers(0, 2, (n, channels * 64 * 64), dtype=np.uint8)
        stored = np.packbits(images, axis=1)
    else:
        stored = rng.integers(0, 256, (n, channels, 64, 64), dtype=np.uint8)
    return Dataset("t", stored, (channels, 64, 64), packed, None, None, (), (), (), "procedural")


@pytest.mark.parametrize("packed,channels", [(True, 1), (False, 3)])
def test_device_batches_are_the_ram_batches(packed, channels):
    """Same images for the same indices (in the order `batch_indices` gives), unpacked on the device."""
    data = dataset(packed, channels)
    index = train.batch_indices(7, len(data), 16, seed=3)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    on_device = DeviceBatches(data, device)
    assert len(on_device) == len(data)
    assert torch.equal(on_device.batch(index).cpu(), data.batch(index))
    assert data.to("cpu") is data          # the CPU serves from RAM as before


def test_precision_auto_is_fp32_on_the_cpu_and_named_everywhere():
    assert train.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert train.resolve_precision("auto", torch.device("cuda")) == "tf32"
    assert train.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    from stages.schema import TrainParams
    assert TrainParams(steps=1).precision == "auto"
    with pytest.raises(ValueError):
        TrainParams(steps=1, precision="fp16")


def test_bf16_autocast_keeps_the_objective_in_float32():
    from tcvae import objectives as obj
    from tcvae.models import VAE
    torch.manual_seed(0)
    model, x = VAE("mlp", 4, width=32), (torch.rand(16, 1, 64, 64) < 0.2).float()
    with train.autocast("bf16", torch.device("cpu")):
        terms = obj.elbo_terms(model, x, 1000, generator=torch.Generator().manual_seed(0))
    assert all(terms[k].dtype == torch.float32 for k in ("log_px", "log_qz", "log_prod_qzj", "mu"))
    loss = obj.tcvae_loss(terms, 1.0, 4.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and model.encoder[1].weight.grad is not None


def test_evaluation_splits_into_device_measures_and_cpu_scores(monkeypatch):
    """`measure` (the device's part) + `add_cpu_scores` is `evaluate`; the device code of the mixtures, run on
    the CPU, gives the CPU path's MIG and decomposition within 1e-3 on a model's own posteriors."""
    import types

    from tcvae import estimator_bias as eb
    from tcvae import evaluate as ev
    from tcvae import metrics
    from tcvae.data import grid
    from tcvae.models import VAE

    factors = grid((2, 3, 4))
    rng = np.random.default_rng(1)
    images = np.packbits(rng.integers(0, 2, (len(factors), 4096), dtype=np.uint8), axis=1)
    data = Dataset("toy", images, (1, 64, 64), True, factors, factors.astype(float), ("a", "b", "c"), (2, 3, 4), ("b", "c"),
                   "procedural")
    torch.manual_seed(0)
    model = VAE("mlp", 3, 1, 32)
    kw = dict(n_samples=20, batch_size=7, seed=0)
    out, codes, _, _ = ev.measure(model, data, **kw)
    assert {"elbo", "decomposition", "mig", "mig_discrete"} <= set(out) and "scores" not in out
    assert codes.shape == (len(factors), 3) and codes.dtype == np.float32
    whole, _ = ev.evaluate(model, data, scores=("sap",), **kw)
    assert ev.add_cpu_scores(out, codes, data, scores=("sap",)) == whole and "sap" in whole["scores"]
    cfg = types.SimpleNamespace(image=0, traversal_range=2.0, traversal_steps=3, reconstructions=2)
    _, drawn = ev.evaluate(model, data, scores=("sap",), figures=cfg, **kw)
    reference = dict(zip(eb.QUANTITIES, drawn.estimator_bias.full))     # the study's reference is the decomposition
    decomposition = whole["decomposition"]
    for name, key in (("mi", "mutual_info"), ("tc", "total_correlation"), ("dimwise_kl", "dimwise_kl")):
        assert reference[name] == pytest.approx(decomposition[key], abs=1e-5)
    mu, logvar, _ = ev.encode(model, data, 7, decode=False)
    dense = metrics.mig(mu, logvar, factors[:, 1:], n_samples=20, device="cpu")
    assert dense.score == pytest.approx(out["mig"]["score"], abs=1e-3)
    kl = metrics.kl_decomposition(mu, logvar, n_samples=20, device="cpu")
    assert kl.total_correlation == pytest.approx(out["decomposition"]["total_correlation"], abs=1e-3)


def test_the_trainer_serves_the_batches_of_batch_indices():
    """Trainer.indices (one permutation copied per epoch) gives `batch_indices` for every step, across epochs."""
    import types
    cfg = types.SimpleNamespace(batch_size=16, latents=2, mlp_width=8, lr=1e-3, precision="fp32")
    trainer = train.Trainer(dataset(True), cfg, method="betavae", beta=1.0, seed=5, arch="mlp", device="cpu")
    for step in (0, 1, 2, 3, 7, 3):                  # 50 // 16 = 3 steps an epoch
        assert torch.equal(trainer.indices(step), train.batch_indices(step, 50, 16, seed=5))
