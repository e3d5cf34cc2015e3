"""CelebA without the network: a synthetic archive of real-named JPEGs and a matching attribute file,
served from 127.0.0.1 — download (with Drive's confirmation page), wrong md5, an HTML answer, a
malicious archive — and preprocess + the attribute-labelled traversal figure end to end."""

import hashlib
import json
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tcvae import data
from tcvae.data import celeba
from tcvae.errors import UserError
from tests.conftest import tcvae, tiny_params

N = 36
ATTRS = ["Bangs", "Eyeglasses", "Smiling"] + [f"Attr{i}" for i in range(37)]


def face(i: int) -> bytes:
    """A 178×218 JPEG whose brightness follows attribute 'Smiling' and whose colour follows 'Bangs'."""
    rng = np.random.default_rng(i)
    img = np.full((218, 178, 3), 60 + 120 * (i % 2), np.uint8)
    img[..., 0] = 200 if i % 3 == 0 else 40
    img[60:160, 40:140] += rng.integers(0, 30, (100, 100, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def attributes_text() -> str:
    rows = [f"{i:06d}.jpg " + " ".join(["1" if i % 3 == 1 else "-1", "-1", "1" if i % 2 == 1 else "-1"] + ["-1"] * 37)
            for i in range(1, N + 1)]
    return f"{N}\n" + " ".join(ATTRS) + "\n" + "\n".join(rows) + "\n"


def make_zip(path: Path, extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("img_align_celeba/", "")
        for i in range(1, N + 1):
            zf.writestr(f"img_align_celeba/{i:06d}.jpg", face(i))
        for info, payload in extra:
            zf.writestr(info, payload)
    return path.read_bytes()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("celeba")
    payload = make_zip(folder / "img_align_celeba.zip")
    (folder / "list_attr_celeba.txt").write_text(attributes_text())
    return folder, payload


@pytest.fixture(scope="module")
def server(archive):
    folder, payload = archive
    attrs = (folder / "list_attr_celeba.txt").read_bytes()
    confirm_page = (b'<!DOCTYPE html><html><body>Google Drive can\'t scan this file for viruses.'
                    b'<form id="download-form" action="/confirmed.zip" method="get">'
                    b'<input type="hidden" name="id" value="abc"><input type="hidden" name="confirm" value="t">'
                    b'</form></body></html>')

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?")[0]
            routes = {"/celeba.zip": ("application/zip", payload), "/confirmed.zip": ("application/zip", payload),
                      "/drive": ("text/html", confirm_page), "/attrs.txt": ("text/plain", attrs),
                      "/quota": ("text/html", b"<html><body>Quota exceeded</body></html>")}
            kind, body = routes[path]
            start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_download_follows_drive_confirmation_and_resumes(server, archive, tmp_path):
    _, payload = archive
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "img_align_celeba.zip"
    celeba.fetch_resumable(f"{server}/drive", dest, md5)
    assert dest.read_bytes() == payload
    dest.unlink()
    (tmp_path / "img_align_celeba.zip.part").write_bytes(payload[:1000])       # an earlier, broken-off try
    celeba.fetch_resumable(f"{server}/celeba.zip", dest, md5)
    assert dest.read_bytes() == payload and not (tmp_path / "img_align_celeba.zip.part").exists()


@pytest.mark.parametrize("route,md5,message", [("/celeba.zip", "0" * 32, "checksum mismatch"),
                                               ("/quota", None, "HTML page")])
def test_bad_downloads_leave_nothing(server, archive, tmp_path, route, md5, message):
    md5 = md5 or hashlib.md5(archive[1]).hexdigest()
    with pytest.raises(UserError, match=message) as err:
        celeba.fetch_resumable(f"{server}{route}", tmp_path / "img_align_celeba.zip", md5)
    assert "source: file" in str(err.value) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,link", [("../evil.jpg", False), ("/etc/evil.jpg", False), ("img_align_celeba/x", True)])
def test_malicious_archive_is_refused(tmp_path, name, link):
    info = zipfile.ZipInfo(name)
    if link:
        info.external_attr = (0o120777 << 16)
    make_zip(tmp_path / "bad.zip", [(info, b"/etc/passwd" if link else b"x")])
    with pytest.raises(UserError, match="escape"):
        celeba.check_archive(tmp_path / "bad.zip")


def test_preprocess_from_zip_and_from_a_kaggle_folder(archive, tmp_path):
    folder, _ = archive
    from_zip = tmp_path / "a.h5"
    celeba.preprocess(from_zip, folder / "img_align_celeba.zip", folder / "list_attr_celeba.txt", None)
    nested = tmp_path / "kaggle/img_align_celeba/img_align_celeba"
    nested.mkdir(parents=True)
    with zipfile.ZipFile(folder / "img_align_celeba.zip") as zf:
        for i in range(1, N + 1):
            (nested / f"{i:06d}.jpg").write_bytes(zf.read(f"img_align_celeba/{i:06d}.jpg"))
    celeba.preprocess(tmp_path / "b.h5", tmp_path / "kaggle", None, None)
    a, b = data.load(from_zip), data.load(tmp_path / "b.h5")
    assert a.images.shape == (N, 3, 64, 64) and a.images.dtype == np.uint8
    assert (a.images == b.images).all() and a.factors is None and a.metric_factors == ()
    assert a.attribute_names[:3] == ("Bangs", "Eyeglasses", "Smiling") and a.attributes.shape == (N, 40)
    assert a.attributes[0, 2] == 1 and a.attributes[1, 2] == -1 and b.attributes is None   # 000001 smiles
    centre = a.images[:, :, 20:44, 20:44].astype(float).mean((1, 2, 3))
    assert centre[0] > centre[1] + 50                       # brightness follows the image, in file order


def test_celeba_pipeline_to_the_labelled_traversal(archive, server, project):
    folder, write_params = project
    _, payload = archive
    spec = {"kind": "celeba", "source": "download", "url": f"{server}/celeba.zip", "md5": hashlib.md5(payload).hexdigest(),
            "attributes_url": f"{server}/attrs.txt", "attributes_md5": hashlib.md5(attributes_text().encode()).hexdigest(),
            "partition_url": None}                                   # the test server has no partition file
    write_params(tiny_params(data={"celeba": spec},
                             train={"steps": 4, "batch_size": 8, "latents": 6, "log_every": 2, "arch": {"celeba": "conv"}},
                             sweep={"datasets": ["celeba"], "betas": {"betavae": [], "tcvae": [2], "factorvae": [], "annealedvae": []}, "seeds": [0]},
                             evaluate={"n_samples": 100, "batch_size": 16},
                             figures={"attribute_latents": 4}))
    for stage in ("download", "preprocess"):
        tcvae("stage", stage, cwd=folder, check=True)
    for stage in ("train", "evaluate"):
        tcvae("stage", stage, "--dataset", "celeba", "--method", "tcvae", "--beta", "2", cwd=folder, check=True)
    tcvae("stage", "aggregate", cwd=folder, check=True)
    tcvae("stage", "plot", cwd=folder, check=True)
    figure = folder / "data/figures/runs/celeba/tcvae/beta2/seed0/traversals_by_attribute.png"
    assert figure.stat().st_size > 5000
    labels = (folder / "data/figures/runs/celeba/tcvae/beta2/seed0/traversals_by_attribute.txt").read_text()
    assert (folder / "data/raw/celeba/img_align_celeba.zip").is_file()
    assert len(labels.splitlines()) == 4 and all(line.split("\t")[1] in ATTRS for line in labels.splitlines())


def test_dvc_repro_builds_the_labelled_traversal_from_a_file_source(archive, tmp_path):
    """The done-condition: a fresh repository, the zip given as a `file` source, one `dvc repro`."""
    from tests.test_scale import DVC, make_repo, run
    folder, _ = archive
    spec = {"kind": "celeba", "source": "file", "file": str(folder / "img_align_celeba.zip"),
            "md5": hashlib.md5((folder / "img_align_celeba.zip").read_bytes()).hexdigest()}
    repo = make_repo(tmp_path / "repo", tiny_params(
        data={"celeba": spec}, train={"steps": 4, "batch_size": 8, "latents": 6, "log_every": 2},
        sweep={"datasets": ["celeba"], "betas": {"betavae": [], "tcvae": [2], "factorvae": [], "annealedvae": []}, "seeds": [0]},
        evaluate={"n_samples": 100, "batch_size": 16}, figures={"attribute_latents": 3}))
    run(*DVC, "repro", cwd=repo)
    run_figures = repo / "data/figures/runs/celeba/tcvae/beta2/seed0"
    assert (run_figures / "traversals_by_attribute.png").stat().st_size > 5000
    assert len((run_figures / "traversals_by_attribute.txt").read_text().splitlines()) == 3
    assert set(json.loads((repo / "data/metrics/summary/celeba/tcvae.json").read_text())) == {"elbo"}   # no factors


def test_the_readme_celeba_snippet_merged_as_it_says_validates(tmp_path):
    """The README's CelebA recipe works as written: its yaml block, merged into the shipped params.yaml key by key
    (mappings merge, other values replace), is a valid params file that sweeps CelebA with the conv net."""
    import re

    import yaml

    from stages.params import load_params
    from tests.conftest import ROOT

    section = (ROOT / "README.md").read_text().split("### CelebA", 1)[1]
    snippet = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))

    def merge(base, extra):
        return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                           for k, v in extra.items()}}

    merged = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), snippet)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merged))
    p = load_params(tmp_path / "params.yaml")
    assert p.sweep.datasets == ["celeba"] and p.data["celeba"].kind == "celeba"
    assert p.train.arch.get("celeba", p.train.arch.get(p.data["celeba"].kind)) == "conv"
