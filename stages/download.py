"""`tcvae stage download`: fetch (or locate) each data set's raw files into data/raw/<dataset>/."""

from __future__ import annotations

from pathlib import Path

import typer

from stages.params import load_params, raw_dir
from tcvae.errors import UserError
from tcvae.io import write_json

OFFLINE = ("Alternatives that need no network:\n"
           "  • source: procedural   draw the data set here (dSprites exactly; faces as a stand-in)\n"
           "  • source: file         point `file:` at a copy you already have")


def command(params: Path = typer.Option(Path("params.yaml"), "--params", help="params file"),
            dataset: list[str] = typer.Option(None, "--dataset", help="data set name(s); default: all")) -> None:
    """Download or locate raw files; procedural data sets need none (a source.json records that)."""
    from tcvae.data.download import fetch, md5sum

    p = load_params(params)
    for name in _select(p, dataset):
        spec, out = p.data[name], raw_dir(name)
        record = {"dataset": name, "kind": spec.kind, "source": spec.source}
        if spec.source == "download":
            target = out / Path(spec.url).name
            if not (target.is_file() and md5sum(target) == spec.md5):
                fetch(spec.url, target, spec.md5, offline_hint=OFFLINE)
            record |= {"file": str(target), "md5": spec.md5, "url": spec.url}
        elif spec.source == "file":
            if not spec.file.is_file():
                raise UserError(f"data.{name}.file = {spec.file}: no such file\n\n{OFFLINE}")
            digest = md5sum(spec.file)
            if spec.md5 and digest != spec.md5:
                raise UserError(f"data.{name}.file = {spec.file}: md5 {digest} does not match data.{name}.md5 "
                                f"= {spec.md5}\n  the file is damaged or a different release; nothing was written")
            record |= {"file": str(spec.file), "md5": digest}
        write_json(out / "source.json", record)


def _select(p, names: list[str] | None) -> list[str]:
    for n in names or []:
        if n not in p.data:
            raise UserError(f"--dataset {n}: not in params `data` (known: {', '.join(p.data)})")
    return names or list(p.data)
