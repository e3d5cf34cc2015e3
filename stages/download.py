"""`tcvae stage download`: fetch (or locate) each data set's raw files into data/raw/<dataset>/."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

from stages.options import DatasetsOption, ParamsOption
from stages.params import load_params
from stages.runs import raw_dir, select
from tcvae.errors import UserError
from tcvae.io import write_json

OFFLINE = ("Alternatives that need no network:\n"
           "  • source: procedural   draw the data set here (dSprites exactly; faces as a stand-in)\n"
           "  • source: file         point `file:` at a copy you already have")
SHAPES3D_OFFLINE = ("Shapes3D has no offline stand-in: fetch 3dshapes.h5 (268 MB) on a machine with network, from\n"
                    "  https://storage.googleapis.com/3d-shapes/3dshapes.h5, then use `source: file` with `file:` naming it")


def command(params: ParamsOption = Path("params.yaml"),
            dataset: DatasetsOption = None) -> None:
    """Download or locate raw files; procedural data sets need none (a source.json records that)."""
    p = load_params(params)
    names = select(p, dataset)
    made = [d for d in (Path("data"), Path("data/raw"), *map(raw_dir, names)) if not d.exists()]
    try:
        records = {name: _record(name, p.data[name]) for name in names}
    except BaseException:          # a failed download leaves no empty data/raw/<dataset>/ behind
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()          # only if empty: a partial CelebA download (.part) is kept to resume
        raise
    for name, record in records.items():     # written once every data set is in place: all or none
        write_json(raw_dir(name) / "source.json", record)


def _record(name: str, spec) -> dict:
    """Fetch or check one data set's raw files; return what its source.json records."""
    try:
        return _fetch(name, spec, raw_dir(name))
    except OSError as e:     # a path the system refuses (too long, a loop, unreadable, …)
        raise UserError(f"data.{name}: {e.filename or ''}: {e.strerror or e}; nothing was written") from None


def _fetch(name: str, spec, out: Path) -> dict:
    from tcvae.data.download import fetch, md5sum

    record = {"dataset": name, "kind": spec.kind, "source": spec.source}
    hint = SHAPES3D_OFFLINE if spec.kind == "shapes3d" else OFFLINE
    if spec.kind == "celeba":
        record |= _celeba(name, spec, out)
    elif spec.source == "download":
        target = out / urlsplit(spec.url).path.rsplit("/", 1)[-1]   # the URL's file name (params check it has one)
        if not (target.is_file() and md5sum(target) == spec.md5):
            fetch(spec.url, target, spec.md5, offline_hint=hint)
        record |= {"file": str(target), "md5": spec.md5, "url": spec.url}
    elif spec.source == "file":
        if not spec.file.is_file():
            raise UserError(f"data.{name}.file = {spec.file}: no such file\n\n{hint}")
        digest = md5sum(spec.file)
        if spec.md5 and digest != spec.md5:
            raise UserError(f"data.{name}.file = {spec.file}: md5 {digest} does not match data.{name}.md5 "
                            f"= {spec.md5}\n  the file is damaged or a different release; nothing was written")
        record |= {"file": str(spec.file), "md5": digest}
    return record


def _celeba(name: str, spec, out: Path) -> dict:
    """CelebA's zip (resumable: 1.4 GB) with its attribute and partition files, or the user's copy."""
    from tcvae.data import celeba
    from tcvae.data.download import md5sum

    record = {}
    extras = [("attributes", celeba.ATTR_NAME, spec.attributes_url, spec.attributes_md5, spec.attributes),
              ("partition", celeba.PARTITION_NAME, spec.partition_url, spec.partition_md5, spec.partition)]
    if spec.source == "download":
        celeba.fetch_resumable(spec.url, out / celeba.ZIP_NAME, spec.md5)
        record |= {"file": str(out / celeba.ZIP_NAME), "md5": spec.md5, "url": spec.url}
        for key, filename, url, md5, _ in extras:
            if url:
                celeba.fetch_resumable(url, out / filename, md5)
                record[key] = str(out / filename)
        return record
    if not spec.file.exists():
        raise UserError(f"data.{name}.file = {spec.file}: no such file or folder\n\n{celeba.ALTERNATIVES}")
    record["file"] = str(spec.file)
    if spec.file.is_file():
        digest = md5sum(spec.file)
        if digest != spec.md5:
            raise UserError(f"data.{name}.file = {spec.file}: md5 {digest}, expected {spec.md5} (the official "
                            f"img_align_celeba.zip); a damaged or different file. Nothing was written")
        record["md5"] = digest
    for key, filename, _, _, given in extras:
        near = [given] if given else [spec.file.parent / filename, spec.file / filename, spec.file.parent.parent / filename]
        found = next((p for p in near if p.is_file()), None)
        if given and not found:
            raise UserError(f"data.{name}.{key} = {given}: no such file")
        if found:
            record[key] = str(found)
    return record
