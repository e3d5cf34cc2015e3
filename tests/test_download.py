import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tcvae.data.download import fetch
from tcvae.errors import UserError
from tests.conftest import tcvae, tiny_params

PAYLOAD = bytes(range(256)) * 4096          # 1 MiB
MD5 = hashlib.md5(PAYLOAD).hexdigest()
PAGE = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses.</body></html>"


class Handler(BaseHTTPRequestHandler):
    routes = {"/file.npz": ("application/octet-stream", PAYLOAD),
              "/quota.npz": ("text/html; charset=utf-8", PAGE),
              "/disguised.npz": ("application/octet-stream", b"\n  " + PAGE)}

    def do_GET(self):
        if self.path not in self.routes:
            self.send_error(404)
            return
        kind, body = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_download_verifies_and_renames(server, tmp_path):
    fetch(f"{server}/file.npz", tmp_path / "file.npz", MD5, offline_hint="")
    assert (tmp_path / "file.npz").read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["file.npz"]


@pytest.mark.parametrize("path,md5,message", [
    ("/file.npz", "0" * 32, "checksum mismatch"),
    ("/quota.npz", MD5, "HTML page"),
    ("/disguised.npz", MD5, "HTML page"),
    ("/nothing.npz", MD5, "HTTP 404"),
])
def test_bad_answers_leave_nothing_behind(server, tmp_path, path, md5, message):
    with pytest.raises(UserError, match=message) as err:
        fetch(f"{server}{path}", tmp_path / "out.npz", md5, offline_hint="use source: procedural")
    assert "use source: procedural" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_refused_connection(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                  # nothing listens there now
    with pytest.raises(UserError, match="refused"):
        fetch(f"http://127.0.0.1:{port}/x.npz", tmp_path / "x.npz", MD5, offline_hint="")
    assert list(tmp_path.iterdir()) == []


def test_no_network(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(UserError, match="no network"):
        fetch("https://github.com/x.npz", tmp_path / "x.npz", MD5, offline_hint="")
    assert list(tmp_path.iterdir()) == []


def test_download_stage_reports_checksum_and_exits_2(server, project):
    folder, write_params = project
    write_params(tiny_params(data={"d": {"kind": "dsprites", "source": "download", "url": f"{server}/file.npz",
                                         "md5": "0" * 32}}))
    proc = tcvae("stage", "download", "--dataset", "d", cwd=folder)
    assert proc.returncode == 2, proc.stderr
    assert "checksum mismatch" in proc.stderr and "procedural" in proc.stderr and "Traceback" not in proc.stderr
    assert not (folder / "data").exists() or not any((folder / "data").rglob("*.*"))
    write_params(tiny_params(data={"d": {"kind": "dsprites", "source": "download", "url": f"{server}/file.npz", "md5": MD5}}))
    tcvae("stage", "download", "--dataset", "d", cwd=folder, check=True)
    assert (folder / "data/raw/d/file.npz").read_bytes() == PAYLOAD
