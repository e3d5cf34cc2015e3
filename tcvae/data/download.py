"""Downloads that never leave a broken file: stream to a temporary name, verify the md5, rename."""

from __future__ import annotations

import hashlib
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tcvae.errors import UserError
from tcvae.io import atomic_path
from tcvae.progress import progress

CHUNK = 1 << 20


def md5sum(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def looks_like_html(head: bytes) -> bool:
    """True for the start of an HTML page (an error, quota or login page saved instead of the file)."""
    head = head.lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def fetch(url: str, dest: Path, md5: str, *, offline_hint: str, timeout: float = 60) -> None:
    """Stream `url` to `dest`, showing progress; verify `md5`. On any failure raise UserError explaining
    what happened and `offline_hint` (the alternatives), leaving no file behind."""
    def fail(what: str) -> UserError:
        return UserError(f"Could not download {dest.name}\n  from {url}\n  {what}\n\n{offline_hint}")

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise fail(f"the server answered HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ConnectionRefusedError):
            raise fail("the connection was refused (is the server up?)") from None
        if isinstance(reason, socket.gaierror):
            raise fail("the host name could not be resolved: this machine seems to have no network") from None
        raise fail(f"the network failed: {reason}") from None
    except (TimeoutError, OSError) as e:
        raise fail(f"the network failed: {e}") from None
    with response, atomic_path(dest) as tmp:
        total = int(response.headers.get("Content-Length") or 0)
        kind = response.headers.get("Content-Type", "")
        h = hashlib.md5()
        first = True
        try:
            with open(tmp, "wb") as out, progress(total, f"download {dest.name}", unit="B") as advance:
                while chunk := response.read(CHUNK):
                    if first and (kind.startswith("text/html") or looks_like_html(chunk[:512])):
                        raise fail("the server sent an HTML page instead of the file (a quota, login or "
                                   "error page?)")
                    first = False
                    out.write(chunk)
                    h.update(chunk)
                    advance(len(chunk))
        except (TimeoutError, OSError) as e:
            raise fail(f"the transfer broke off: {e}") from None
        if h.hexdigest() != md5:
            raise fail(f"checksum mismatch: md5 {h.hexdigest()}, expected {md5}; the file was discarded")
