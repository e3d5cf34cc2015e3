"""Hostile input, each case as a user could write it: exit 2 with a one-screen message naming what is wrong,
within seconds, never a traceback and nothing written under data/."""

import os
import time

import pytest

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
    ("sweep", {"betas": {"betavae": [float("inf")], "tcvae": [], "factorvae": [], "annealedvae": []}}, "sweep.betas.betavae.0"),
    ("sweep", {"betas": {"betavae": [True], "tcvae": [], "factorvae": [], "annealedvae": []}}, "sweep.betas.betavae.0"),
    ("sweep", {"betas": {"betavae": ["1"], "tcvae": [], "factorvae": [], "annealedvae": []}}, "sweep.betas.betavae.0"),
    ("sweep", {"betas": {"betavae": [1, 1], "tcvae": [], "factorvae": [], "annealedvae": []}}, "listed twice"),
    ("sweep", {"seeds": [False]}, "sweep.seeds.0"),
    ("sweep", {"seeds": [0, 0]}, "listed twice"),
    ("sweep", {"betas": {"betavae": [6.0], "tcvae": [], "factorvae": [], "annealedvae": []}}, "write 6.0 as 6"),
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
    """Strict types, but YAML has no path or tuple: a string and a list are read as one; `~` is expanded
    (the README's CelebA example, `file: ~/data/img_align_celeba.zip`)."""
    import hashlib
    import zipfile
    from stages.params import load_params
    folder, write_params = project
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    with zipfile.ZipFile(tmp_path / "data/img_align_celeba.zip", "w") as z:
        z.writestr("img_align_celeba/000001.jpg", b"")
    md5 = hashlib.md5((tmp_path / "data/img_align_celeba.zip").read_bytes()).hexdigest()
    celeba = {"kind": "celeba", "source": "file", "file": "~/data/img_align_celeba.zip", "md5": md5}
    path = write_params(tiny_params(data={"celeba": celeba},
                                    train={**TINY_TRAIN, "arch": {"celeba": "conv"}, "alpha": 1,
                                           "discriminator": {"betas": [0.5, 0.9]}}))
    p = load_params(path)
    assert p.data["celeba"].file == tmp_path / "data/img_align_celeba.zip"
    assert p.train.discriminator.betas == (0.5, 0.9) and p.train.alpha == 1.0
    code, out = run_cli("stage", "download", cwd=folder)
    assert code == 0, out


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
    from stages.params import load_params
    from stages.runs import run_coordinates, run_dir
    folder, _ = project
    value = run_coordinates(load_params(folder / "params.yaml"), "tiny", "tcvae", beta)
    assert run_dir("tiny", "tcvae", value, 0).parent.name == folder_name


# ---- stage inputs: processed data sets ----

@pytest.fixture
def prepared(project, monkeypatch):
    """The tiny data set, downloaded and preprocessed in-process."""
    folder, write_params = project
    monkeypatch.chdir(folder)
    for stage in ("download", "preprocess"):
        code, out = run_cli("stage", stage, cwd=folder)
        assert code == 0, out
    return folder, write_params


TRAIN = ("stage", "train", "--dataset", "tiny", "--method", "betavae", "--beta", "1")
H5 = "data/processed/tiny.h5"


def refused_stage(folder, *args) -> str:
    """Like `refused`, for stages that run after data exists: exit 2, and no run output written."""
    start = time.monotonic()
    code, out = run_cli(*args, cwd=folder)
    assert time.monotonic() - start < 10
    assert code == 2 and "Traceback" not in out and len(out.splitlines()) < 30, out
    assert not any(p.is_file() for p in (folder / "data/runs").rglob("*") if p.name != "model.pt"), "wrote a run"
    return out


def rewrite(path, name, array=None, attrs=None):
    import h5py
    with h5py.File(path, "r+") as f:
        if name in f:
            del f[name]
        if array is not None:
            f[name] = array
        for k, v in (attrs or {}).items():
            if v is None:
                del f.attrs[k]
            else:
                f.attrs[k] = v


def _truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


DAMAGE = {
    "truncated": (_truncate, "not a readable HDF5 file"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(5000)), "not a readable HDF5 file"),
    "no images": (lambda p: rewrite(p, "images"), "missing images"),
    "no image_shape": (lambda p: rewrite(p, "_", attrs={"image_shape": None}), "missing attribute image_shape"),
    "string images": (lambda p: rewrite(p, "images", [b"x" * 512] * 192), "must be uint8"),
    "float images": (lambda p: rewrite(p, "images", __import__("numpy").zeros((192, 512))), "must be uint8"),
    "rows of 10 bytes": (lambda p: rewrite(p, "images", __import__("numpy").zeros((192, 10), "uint8")), "(192, 10)"),
    "wrong image_shape": (lambda p: rewrite(p, "_", attrs={"image_shape": [1, 32, 32]}), "image_shape (1, 32, 32)"),
    "factors of the wrong shape": (lambda p: rewrite(p, "factors", __import__("numpy").zeros((191, 5), "int64")),
                                   "one row per image"),
    "factors out of range": (lambda p: rewrite(p, "factors", __import__("numpy").full((192, 5), 7)),
                             "outside the recorded factor_sizes"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_processed_file_is_refused(prepared, damage):
    folder, _ = prepared
    spoil, says = DAMAGE[damage]
    spoil(folder / H5)
    out = refused_stage(folder, *TRAIN)
    assert says in out and H5 in out and "preprocess" in out


def test_processed_file_made_from_other_params_is_refused(prepared):
    folder, write_params = prepared
    write_params(tiny_params(data={"tiny": {**TINY_DSPRITES, "step": {**TINY_DSPRITES["step"], "posX": 16}}}))
    out = refused_stage(folder, *TRAIN)
    assert "made from other params" in out and "data.tiny.step" in out and "preprocess" in out


def test_a_run_outside_the_sweep_goes_to_data_explore_and_says_so(prepared):
    """A run trained by hand outside the sweep must not change aggregate's dependency (data/runs/)."""
    folder, _ = prepared
    run = ("--dataset", "tiny", "--method", "tcvae", "--beta", "3")
    code, out = run_cli("stage", "train", *run, cwd=folder)
    assert code == 0, out
    assert "tiny tcvae β=3 seed 0 is not in params' sweep: it goes to data/explore/tiny/tcvae/beta3/seed0" in out
    assert all(len(line) <= 120 for line in out.splitlines()), out
    code, out = run_cli("stage", "evaluate", *run, cwd=folder)
    assert code == 0, out
    assert (folder / "data/explore/tiny/tcvae/beta3/seed0/eval.json").is_file()
    assert not (folder / "data/runs").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA device is here")
def test_cuda_asked_for_without_one_names_the_key(prepared):
    folder, write_params = prepared
    write_params(tiny_params(compute={"device": "cuda"}))
    out = refused_stage(folder, *TRAIN)
    assert out.startswith("error: compute.device: 'cuda', but no CUDA device") and "note:" not in out, out


# ---- stage inputs: models ----

@pytest.fixture
def model_file(prepared):
    folder, _ = prepared
    code, out = run_cli(*TRAIN, cwd=folder)
    assert code == 0, out
    return folder, folder / "data/runs/tiny/betavae/beta1/seed0/model.pt"


class Evil:
    def __reduce__(self):
        return os.system, ("echo pwned > pwned.txt",)


def _record(**changes):
    def spoil(path):
        import torch
        saved = torch.load(path, weights_only=True)
        saved.update(changes)
        for k in [k for k, v in changes.items() if v is None]:
            del saved[k]
        torch.save(saved, path)
    return spoil


def _save(obj):
    return lambda path: __import__("torch").save(obj, path)


MODEL_DAMAGE = {
    "random bytes": (lambda p: p.write_bytes(os.urandom(5000)), "not a"),
    "a list": (_save([1, 2, 3]), "it holds list"),
    "no arch": (_record(arch=None), "arch None"),
    "wrong latent count": (_record(latents=7), "do not fit its record"),
    "width 100000": (_record(width=100_000), "width 100000"),
    "a malicious pickle": (_save(Evil()), "refused — it holds Python objects"),
    "a malicious raw pickle": (lambda p: p.write_bytes(__import__("pickle").dumps(Evil(), protocol=2)), "refused"),
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE)
def test_damaged_model_file_is_refused(model_file, damage):
    folder, path = model_file
    spoil, says = MODEL_DAMAGE[damage]
    spoil(path)
    start = time.monotonic()
    code, out = run_cli("stage", "evaluate", "--dataset", "tiny", "--method", "betavae", "--beta", "1", cwd=folder)
    assert code == 2 and says in out and "Traceback" not in out, out
    assert time.monotonic() - start < 10
    assert len(out.strip().splitlines()) == 1 and "weights_only=False" not in out, out   # one line, no advice
    assert not (folder / "pwned.txt").exists() and not (path.parent / "eval.json").exists()


# ---- stage inputs: downloads, archives, the sweep plan ----

def test_a_failed_download_leaves_nothing(project):
    folder, write_params = project
    write_params(tiny_params(data={"tiny": {**TINY_DSPRITES, "source": "download", "url": "http://127.0.0.1:9/x.npz"}}))
    out = refused(folder, "stage", "download")
    assert "Could not download x.npz" in out and not (folder / "data").exists()


def test_a_non_jpeg_inside_the_celeba_zip(project):
    import hashlib
    import zipfile
    folder, write_params = project
    with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as z:
        z.writestr("img_align_celeba/000001.jpg", b"GIF89a not a jpeg at all")
    md5 = hashlib.md5((folder / "img_align_celeba.zip").read_bytes()).hexdigest()
    write_params(tiny_params(data={"celeba": {"kind": "celeba", "source": "file", "md5": md5,
                                              "file": str(folder / "img_align_celeba.zip")}},
                             train={**TINY_TRAIN, "arch": {"celeba": "conv"}}))
    assert run_cli("stage", "download", cwd=folder)[0] == 0
    code, out = run_cli("stage", "preprocess", cwd=folder)
    assert code == 2 and "000001.jpg: not a readable JPEG" in out and "Traceback" not in out, out
    assert not (folder / "data/processed").exists() or not any((folder / "data/processed").iterdir())


@pytest.mark.parametrize("key,contents,message", [
    ("attributes", b"2\nBangs Smiling\n000001.jpg 1 -1\n", "line 2: not a line of 40 attribute names"),
    ("attributes", b"1\n" + b"a " * 40 + b"\n000001.jpg" + b" 1" * 39 + b"\n", "line 3: 39 values after '000001.jpg'"),
    ("attributes", b"1\n" + b"a " * 40 + b"\n000001.jpg" + b" 2" * 40 + b"\n", "line 3: a value other than 1 or -1"),
    ("attributes", b"\xff\xfe\x00garbage", "cannot be read as CelebA's list_attr_celeba.txt"),
    ("partition", b"000001.jpg 0\n000002.jpg train\n", "line 2: '000002.jpg train'"),
    ("partition", b"999999.jpg 0\n", "no partition for 1 image(s), e.g. 000001.jpg"),
    ("partition", b"\xef\xbb\xbf000001.jpg 2 \r\n", None),          # a BOM and Windows line ends are fine
])
def test_malformed_celeba_attribute_and_partition_files(project, key, contents, message):
    import hashlib
    import io
    import zipfile

    from PIL import Image
    folder, write_params = project
    jpeg = io.BytesIO()
    Image.new("RGB", (178, 218)).save(jpeg, "JPEG")
    with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as z:
        z.writestr("img_align_celeba/000001.jpg", jpeg.getvalue())
    (folder / "side.txt").write_bytes(contents)
    md5 = hashlib.md5((folder / "img_align_celeba.zip").read_bytes()).hexdigest()
    write_params(tiny_params(data={"celeba": {"kind": "celeba", "source": "file", "md5": md5, key: str(folder / "side.txt"),
                                              "file": str(folder / "img_align_celeba.zip")}},
                             train={**TINY_TRAIN, "arch": {"celeba": "conv"}}))
    assert run_cli("stage", "download", cwd=folder)[0] == 0
    code, out = run_cli("stage", "preprocess", cwd=folder)
    if message is None:
        import h5py
        with h5py.File(folder / "data/processed/celeba.h5") as f:
            assert code == 0 and f["partition"][:].tolist() == [2], out
    else:
        assert code == 2 and message in out and "Traceback" not in out, out


@pytest.mark.parametrize("kind,name,contents", [
    ("faces", "basel_face_renders.pth", os.urandom(4000)),
    ("faces", "basel_face_renders.pth", "list"),
    ("dsprites", "dsprites.npz", os.urandom(4000)),
])
def test_damaged_raw_files_you_supply(project, kind, name, contents):
    import torch
    folder, write_params = project
    if contents == "list":
        torch.save([1, 2], folder / name)
    else:
        (folder / name).write_bytes(contents)
    import hashlib
    md5 = hashlib.md5((folder / name).read_bytes()).hexdigest()      # a copy whose checksum was taken: it is read
    spec = {"kind": kind, "source": "file", "file": str(folder / name), "md5": md5}
    write_params(tiny_params(data={"faces" if kind == "faces" else "tiny": spec}))
    assert run_cli("stage", "download", cwd=folder)[0] == 0
    code, out = run_cli("stage", "preprocess", cwd=folder)
    assert code == 2 and name in out and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    assert not (folder / "data/processed").exists() or not any((folder / "data/processed").iterdir())


def test_sweep_plan_outside_a_dvc_repository(project):
    folder, _ = project
    assert "not inside a DVC repository" in refused(folder, "sweep", "plan")


@pytest.mark.parametrize("damage", ["dvc.yaml", "dvc.lock"])
def test_sweep_plan_with_a_pipeline_dvc_cannot_read(project, damage):
    import shutil
    import subprocess
    import sys
    folder, write_params = project
    write_params(tiny_params())
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=folder, check=True)
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    (folder / "data/results").mkdir(parents=True)
    (folder / "data/results/sets.yaml").write_text("sets: []\n")
    with open(folder / damage, "a") as f:
        f.write(":::{[ not yaml\n")
    code, out = run_cli("sweep", "plan", cwd=folder)
    assert code == 2 and "DVC cannot read this repository's pipeline" in out and "Traceback" not in out, out


def test_ctrl_c_says_what_was_kept(project, monkeypatch):
    from stages import download

    def interrupted(path):
        raise KeyboardInterrupt
    monkeypatch.setattr(download, "load_params", interrupted)
    code, out = run_cli("stage", "download", cwd=project[0])
    assert code == 130 and "interrupted; no partial output was kept" in out and "resumes" in out


# ---- never lose a run's work ----

def _truncated_checkpoint(path):
    import torch
    torch.save({"key": "k", "step": 3, "model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])


@pytest.mark.parametrize("damage", [lambda p: p.write_bytes(os.urandom(3000)), _truncated_checkpoint],
                         ids=["random bytes", "truncated"])
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_starts_over(prepared, damage):
    import torch
    folder, _ = prepared
    run = folder / "data/runs/tiny/betavae/beta1/seed0"
    assert run_cli(*TRAIN, cwd=folder)[0] == 0
    clean = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    for f in run.iterdir():
        f.unlink()
    damage(run / "checkpoint.pt")
    code, out = run_cli(*TRAIN, cwd=folder)
    assert code == 0, out
    assert "checkpoint.pt is damaged" in out and "starts over" in out
    assert (run / "checkpoint.pt.damaged").is_file() and not (run / "checkpoint.pt").exists()
    again = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(clean[k], again[k]) for k in clean)     # as if the damaged file had never been


def test_a_resumed_run_says_where_it_resumes(prepared, monkeypatch, capsys):
    from stages.params import load_params
    from tcvae import data, objectives, train
    folder, _ = prepared
    p = load_params(folder / "params.yaml")
    ds = data.load(folder / H5)
    real, calls = objectives.log_bernoulli, []

    def poisoned(logits, x):                 # diverge at step 4: the checkpoint of step 3 stays
        calls.append(1)
        return real(logits, x) * (float("nan") if len(calls) == 4 else 1)
    monkeypatch.setattr(objectives, "log_bernoulli", poisoned)
    args = dict(method="betavae", beta=1.0, seed=0, arch="mlp", out=folder / "run", record={}, checkpoint_every_steps=1)
    with pytest.raises(train.Diverged):
        train.fit(ds, p.train, **args)
    monkeypatch.setattr(objectives, "log_bernoulli", real)
    capsys.readouterr()
    train.fit(ds, p.train, **args)
    assert f"resuming at step 3 of 6 (from {folder / 'run' / 'checkpoint.pt'})" in capsys.readouterr().err


def test_an_unwritable_output_is_found_before_step_1(prepared, monkeypatch):
    import shutil
    from collections import namedtuple
    from stages.params import load_params
    from tcvae import data, train
    from tcvae.errors import UserError
    folder, _ = prepared
    p, ds = load_params(folder / "params.yaml"), data.load(folder / H5)
    (folder / "a-file").write_text("")
    steps = []
    monkeypatch.setattr(train.Trainer, "step", lambda *a, **k: steps.append(1))
    with pytest.raises(UserError, match="cannot write there"):
        train.fit(ds, p.train, method="betavae", beta=1.0, seed=0, arch="mlp", out=folder / "a-file/run", record={})
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    with pytest.raises(UserError, match="MiB free"):
        train.fit(ds, p.train, method="betavae", beta=1.0, seed=0, arch="mlp", out=folder / "run", record={})
    assert not steps


# ---- writes: a folder result swapped in whole, an interruption or a refusing file system ----

def test_an_interrupted_folder_swap_keeps_a_whole_folder(tmp_path, monkeypatch, request):
    """Ctrl-C arriving between the two renames that swap a result folder in: it is held until both are done,
    so the folder is the new one, whole, and nothing is left beside it."""
    import signal

    from tcvae import io
    target = tmp_path / "summary"
    target.mkdir()
    (target / "a.json").write_text("old")
    rename = os.replace

    def interrupted_rename(src, dst):
        rename(src, dst)
        signal.raise_signal(signal.SIGINT)          # Ctrl-C right after the old folder moved aside
    monkeypatch.setattr(io.os, "replace", interrupted_rename)
    # Python's own Ctrl-C handler: a shell's background job (nohup … &) starts with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_dir(target) as tmp:
            (tmp / "a.json").write_text("new")
    assert (target / "a.json").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["summary"]

