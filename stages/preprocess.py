"""`tcvae stage preprocess`: raw files (or nothing, for procedural sources) → data/processed/<dataset>.h5."""

from __future__ import annotations

import json
from pathlib import Path

from stages.options import DatasetsOption, ParamsOption
from stages.params import load_params
from stages.runs import processed_path, raw_dir, select
from tcvae.errors import UserError


def command(params: ParamsOption = Path("params.yaml"),
            dataset: DatasetsOption = None) -> None:
    """Render or convert each data set into one HDF5 file (written atomically)."""
    from tcvae.data import celeba, dsprites, faces, shapes3d

    p = load_params(params)
    for name in select(p, dataset):
        spec = p.data[name]
        record_path = raw_dir(name) / "source.json"
        if not record_path.is_file():
            raise UserError(f"{record_path} is missing: run `tcvae stage download --dataset {name}` first "
                            f"(or `dvc repro download`)")
        record = json.loads(record_path.read_text())
        if record.get("source") != spec.source:
            raise UserError(f"{record_path} was made for source '{record.get('source')}', params now say "
                            f"'{spec.source}': rerun the download stage")
        file = Path(record["file"]) if "file" in record else None
        md5 = record.get("md5", "")
        made_from = spec.model_dump(mode="json")     # train and evaluate refuse the file once params differ
        if spec.kind == "dsprites":
            dsprites.preprocess(processed_path(name), spec.step, file, spec.source, md5, made_from, spec.keep)
        elif spec.kind == "celeba":
            extra = [Path(record[k]) if k in record else None for k in ("attributes", "partition")]
            celeba.preprocess(processed_path(name), file, *extra, spec.limit, spec.source, md5, made_from)
        elif spec.kind == "shapes3d":
            shapes3d.preprocess(processed_path(name), file, spec.source, md5, made_from)
        else:
            faces.preprocess(processed_path(name), file, spec.source, md5, spec.identities, made_from)
