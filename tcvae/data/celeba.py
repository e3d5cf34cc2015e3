"""CelebA (Liu et al. 2015): the aligned 178×218 JPEGs → 64×64 RGB, with the 40 binary attributes.

Sources: the official zip (Google Drive, or any mirror URL) or a file the user has — the zip, or an
extracted folder, also Kaggle's doubly nested `img_align_celeba/img_align_celeba/`. Images are decoded
straight from the zip (after checking that no entry could escape a folder) or the folder, in parallel.
"""

from __future__ import annotations

import html
import io
import multiprocessing
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from tcvae.errors import UserError
from tcvae.progress import progress

ZIP_NAME = "img_align_celeba.zip"
DRIVE_URL = "https://drive.google.com/uc?export=download&id=0B7EVK8r0v71pZjFTYXZWM3FlRnM"
ZIP_MD5 = "00d2c5bc6d35e252742224ab0c1e8fcb"
ATTR_NAME, ATTR_MD5 = "list_attr_celeba.txt", "75e246fa4810816ffd6ee81facbd244c"
PARTITION_NAME, PARTITION_MD5 = "list_eval_partition.txt", "d32c9cbf5e040fd4025c592c306e6668"
CROP, SIZE = 148, 64
IMAGE = re.compile(r"(?:^|/)(\d{6}\.jpg)$")
ALTERNATIVES = ("Alternatives:\n"
                "  • download img_align_celeba.zip yourself (a browser handles Drive's pages) and set\n"
                "    `source: file` and `file: path/to/img_align_celeba.zip` (or the extracted folder)\n"
                "  • set `url:` to a mirror you trust; the md5 is checked either way")


# ---- getting the zip ----

def drive_confirmation(page: bytes, url: str) -> str | None:
    """The URL behind Google Drive's "can't scan this file for viruses — download anyway" page, or None
    when the page is something else (a quota or error page)."""
    text = page.decode("utf-8", "replace")
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"(.*?)</form>', text, re.S)
    if form:
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form.group(2)))
        return html.unescape(form.group(1)) + "?" + urllib.parse.urlencode(fields)
    confirm = re.search(r"confirm=([0-9A-Za-z_\-]+)", text)
    if confirm:
        sep = "&" if "?" in url else "?"
        return f"{url}{sep}confirm={confirm.group(1)}"
    return None


def fetch_resumable(url: str, dest: Path, md5: str, timeout: float = 60) -> None:
    """Download `url` to `dest`, continuing a partial `dest.part` where the server allows (HTTP Range),
    following Drive's confirmation page, verifying `md5` at the end. An HTML answer or a checksum mismatch
    leaves nothing behind; a broken connection keeps the partial file for the next try."""
    import hashlib

    from tcvae.data.download import looks_like_html

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fail(what: str, keep: bool = False) -> UserError:
        if not keep:
            part.unlink(missing_ok=True)
        return UserError(f"Could not download {dest.name}\n  from {url}\n  {what}\n\n{ALTERNATIVES}")

    for _attempt in range(2):      # the second pass follows a Drive confirmation page
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416:      # the partial file is already complete
                break
            raise fail(f"the server answered HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise fail(f"the network failed: {getattr(e, 'reason', e)}", keep=True) from None
        with response:
            first = response.read(1 << 16)
            if response.headers.get("Content-Type", "").startswith("text/html") or looks_like_html(first[:512]):
                page = first + response.read(1 << 20)
                follow = drive_confirmation(page, url)
                if follow and _attempt == 0:
                    url = urllib.parse.urljoin(url, follow)
                    continue
                raise fail("the server sent an HTML page instead of the zip (Google Drive's quota is exceeded, "
                           "or it wants a sign-in); nothing was kept")
            resumed = response.status == 206
            total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
            try:
                with open(part, "ab" if resumed else "wb") as out, \
                        progress(total, f"download {dest.name}", unit="B", start=have if resumed else 0) as advance:
                    chunk = first
                    while chunk:
                        out.write(chunk)
                        advance(len(chunk))
                        chunk = response.read(1 << 20)
            except (TimeoutError, OSError) as e:
                raise fail(f"the transfer broke off ({e}); rerun to resume from {part.stat().st_size:,} bytes",
                           keep=True) from None
        break
    h = hashlib.md5()
    with open(part, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    if h.hexdigest() != md5:
        raise fail(f"checksum mismatch: md5 {h.hexdigest()}, expected {md5}; the file was discarded")
    part.replace(dest)


# ---- reading the images ----

def check_archive(path: Path) -> list[str]:
    """The zip's image entry names, in order; refuse an archive any entry of which could escape the folder
    it is extracted to (absolute path, '..', a link)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UserError(f"{path}: not a zip archive (an HTML page saved as the zip?)") from None
    with zf:
        for info in zf.infolist():
            name = info.filename
            parts = Path(name).parts
            is_link = stat.S_ISLNK(info.external_attr >> 16)
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or is_link:
                raise UserError(f"{path}: refused — entry '{name}' would escape the target folder "
                                f"({'a link' if is_link else 'absolute path or ..'}); the archive is not CelebA as "
                                f"published. Nothing was extracted.")
        names = sorted((i.filename for i in zf.infolist() if IMAGE.search(i.filename)), key=lambda n: IMAGE.search(n)[1])
    if not names:
        raise UserError(f"{path}: no CelebA images (000001.jpg, …) inside")
    return names


def find_folder(root: Path) -> Path:
    """The folder holding 000001.jpg …: `root` itself or below it (Kaggle nests img_align_celeba twice)."""
    if (root / "000001.jpg").is_file():
        return root
    for candidate in sorted(p.parent for p in root.rglob("000001.jpg")):
        return candidate
    raise UserError(f"{root}: no CelebA images (000001.jpg, …) in it or below it")


def crop_resize(jpeg: bytes) -> np.ndarray:
    """Centre crop 148×148, antialiased resize to 64×64: uint8 (3, 64, 64)."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as img:
        img.draft("RGB", (img.width // 2, img.height // 2))   # decode at half size when it loses nothing
        w, h = img.size
        scale = w / 178
        c = CROP * scale
        box = ((w - c) / 2, (h - c) / 2, (w + c) / 2, (h + c) / 2)
        out = img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out).transpose(2, 0, 1)


_zip: zipfile.ZipFile | None = None


def _open_zip(path: str) -> None:
    global _zip
    _zip = zipfile.ZipFile(path)


def _from_zip(name: str) -> np.ndarray:
    return _decode(name, _zip.read(name))


def _from_file(path: str) -> np.ndarray:
    return _decode(path, Path(path).read_bytes())


def _decode(name: str, jpeg: bytes) -> np.ndarray:
    try:
        return crop_resize(jpeg)
    except Exception as e:    # PIL raises many types for a file that is not an image (or a bomb of one)
        raise UserError(f"{name}: not a readable JPEG image ({str(e)[:120] or type(e).__name__}); the images are "
                        f"not CelebA as published. Nothing was written") from None


def images(source: Path, names: list[str], workers: int | None = None, block: int = 4096):
    """Yield (start, uint8 (b, 3, 64, 64)) for the images `names` (from `image_names`) of a zip or a
    folder, decoded by a pool of `workers` processes (default: one per core)."""
    zipped = source.is_file()
    workers = workers or multiprocessing.cpu_count()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_open_zip if zipped else None, initargs=(str(source),) if zipped else ()) as pool:
        decode = _from_zip if zipped else _from_file
        folder = None if zipped else find_folder(source)
        items = names if zipped else [str(folder / n) for n in names]
        for start in range(0, len(items), block):
            yield start, np.stack(pool.map(decode, items[start:start + block], chunksize=64))


def image_names(source: Path) -> list[str]:
    """Zip entry names or file names of the images, in numerical order."""
    if source.is_file():
        return check_archive(source)
    return sorted(p.name for p in find_folder(source).glob("*.jpg") if IMAGE.search(p.name))


def _lines(path: Path, expected: str) -> tuple[list[str], Callable[[int, str], UserError]]:
    """The file's lines, and a maker of one-line errors naming a line and what the file should hold."""
    def bad(i: int, why: str) -> UserError:
        return UserError(f"{path}, line {i + 1}: {why}; expected CelebA's {expected}")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines(), bad      # a BOM (Notepad's UTF-8) is not a name
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot be read as CelebA's {expected} ({e})") from None


def read_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """list_attr_celeba.txt (a count, the 40 names, then `<file> ±1 ×40` per image) → (40 names,
    {file name: int8 (40,) of ±1})."""
    lines, bad = _lines(path, f"{ATTR_NAME}: a count, 40 attribute names, then a file name and 40 values of 1 or -1 "
                              f"per line")
    if len(lines) < 2 or len(lines[1].split()) != 40:
        raise bad(1, "not a line of 40 attribute names")
    names, rows = lines[1].split(), {}
    for i, line in enumerate(lines[2:], 2):
        if line.strip():
            file, *values = line.split()
            if len(values) != 40 or not set(values) <= {"1", "-1"}:
                raise bad(i, f"{len(values)} values after {file[:60]!r}" if len(values) != 40 else "a value other than 1 or -1")
            rows[file] = np.array(values, dtype=np.int8)
    return names, rows


def read_partition(path: Path) -> dict[str, int]:
    """list_eval_partition.txt (`<file> 0|1|2` per line) → {file name: 0 train, 1 validation, 2 test}."""
    lines, bad = _lines(path, f"{PARTITION_NAME}: a file name and 0, 1 or 2 per line")
    split = {}
    for i, line in enumerate(lines):
        if line.strip():
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise bad(i, f"{line.strip()[:60]!r}")
            split[fields[0]] = int(fields[1])
    return split


def _every_image_in(files: list[str], table: dict, path: Path, what: str) -> None:
    missing = [f for f in files if f not in table]
    if missing:
        raise UserError(f"{path}: no {what} for {len(missing)} image(s), e.g. {missing[0]}")


def preprocess(path: Path, source: Path, attributes: Path | None, partition: Path | None, limit: int | None = None,
               source_kind: str = "file", source_md5: str = "", made_from: dict | None = None) -> None:
    """Write CelebA (or its first `limit` images) as a processed HDF5: images uint8 (N, 3, 64, 64), and when
    the files are given the 40 attributes (N, 40) of ±1 and the official partition (N,)."""
    from tcvae import data

    names = image_names(source)[:limit]
    files = [IMAGE.search(n)[1] for n in names]
    extra, attrs = {}, {}
    if attributes is not None:
        attribute_names, rows = read_attributes(attributes)
        _every_image_in(files, rows, attributes, "attributes")
        extra["attributes"] = np.stack([rows[f] for f in files])
        attrs["attribute_names"] = attribute_names
    else:
        from tcvae.progress import console
        console.print(f"note: no {ATTR_NAME} beside {source}: the traversals cannot be named after attributes "
                      f"(set `attributes:` in the data set's params to use one)", highlight=False)
    if partition is not None:
        split = read_partition(partition)
        _every_image_in(files, split, partition, "partition")
        extra["partition"] = np.array([split[f] for f in files], dtype=np.int8)
    data.write(path, images(source, names), n=len(names), image_shape=(3, SIZE, SIZE), factors=None,
               factor_values=None, factor_names=(), factor_sizes=(), metric_factors=(), source=source_kind,
               source_md5=source_md5, attrs=attrs, extra=extra, made_from=made_from)
