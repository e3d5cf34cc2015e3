"""`tcvae sweep plan`: the runs the params imply, which are done or cached, and what the rest will cost."""

from __future__ import annotations

from pathlib import Path

from stages.options import ParamsOption
from stages.params import load_params
from stages.runs import stage_name, sweep_runs
from tcvae.errors import UserError

CELEBA_IMAGES = 202_599


def command(params: ParamsOption = Path("params.yaml")) -> None:
    """List the sweep's training runs: done (outputs match), cached (DVC's run-cache restores them without
    training) or to train, with the time estimated from a few measured steps on this device."""
    import numpy as np
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from rich.table import Table

    from tcvae.bench import step_seconds
    from tcvae.console import console
    from tcvae.data import dsprites, faces
    from tcvae.progress import progress
    from tcvae.train import pick_device, total_steps

    p = load_params(params)
    t, s = p.train, p.sweep
    try:
        repo = Repo()
        with repo, repo.lock:    # stage status reads what DVC writes: hold its lock
            status = _train_status(repo)
            own = params.resolve() == Path(repo.root_dir, "params.yaml").resolve()   # DVC's stages follow params.yaml
    except NotDvcRepoError:
        raise UserError(f"{Path.cwd()} is not inside a DVC repository: run `tcvae sweep plan` from the "
                        f"repository's root (where dvc.yaml is)") from None
    except DvcException as e:   # another DVC process holds the lock, or dvc.yaml / dvc.lock do not parse
        raise UserError(f"DVC cannot read this repository's pipeline: {e}") from None
    per_step, sizes = {}, {}
    for dataset in s.datasets:                  # sizes as the params imply them, built or not
        spec = p.data[dataset]
        if spec.kind == "dsprites":
            sizes[dataset] = (int(np.prod([len(k) for k in dsprites.subgrid(spec.step, spec.keep)])), 1)
        elif spec.kind == "faces":
            sizes[dataset] = (spec.identities * faces.PER_IDENTITY, 1)
        elif spec.kind == "shapes3d":
            sizes[dataset] = (480_000, 3)
        else:
            sizes[dataset] = (spec.limit or CELEBA_IMAGES, 3)
    with progress(len(s.datasets) * len(s.methods), "measure training steps", "model") as advance:
        for dataset in s.datasets:
            spec = p.data[dataset]
            arch = t.arch.get(dataset, t.arch.get(spec.kind))
            for method in s.methods:
                per_step[dataset, method] = step_seconds(method, arch, t.latents, t.mlp_width, sizes[dataset][1],
                                                         t.batch_size, p.compute.device, precision=t.precision)
                advance(1)
    table = Table(title=f"sweep plan — {pick_device(p.compute.device).type}, batch {t.batch_size}")
    for c in ("run", "status", "steps", "estimated"):
        table.add_column(c)
    counts = {"done": 0, "cached": 0, "to train": 0, "inputs not built": 0}
    todo = 0.0
    for dataset, method, beta, seed in sweep_runs(s):
        steps = total_steps(t, sizes[dataset][0])
        cost = steps * per_step[dataset, method]
        state = status.get(stage_name("train", dataset, method, beta, seed), "to train") if own else "to train"
        counts[state] += 1
        todo += cost if state in ("to train", "inputs not built") else 0
        table.add_row(f"{dataset} {method} β={beta} seed {seed}", state, f"{steps:,}", _duration(cost))
    out = console(highlight=False)
    out.print(table)
    waiting = (f", {counts['inputs not built']} whose inputs are not built nor in the run-cache (counted as to "
               f"train)") if counts["inputs not built"] else ""
    out.print(f"{counts['done']} done, {counts['cached']} restorable from the run-cache, {counts['to train']} to "
              f"train{waiting}:\n  about {_duration(todo)} of training on this device (evaluation not included)")
    if not own:
        out.print(f"note: the statuses follow params.yaml, the file DVC reads;\n  with {params} every run counts "
                  f"as to train")


def _train_status(repo, last: str = "train-", pushed: bool = False) -> dict[str, str]:
    """Each train stage (train-<method>@…): "done" (outputs match), "cached" (DVC's run-cache restores it without training), "to train",
    or "inputs not built" (missing, or to be remade by a stage that runs first). A stage's run-cache key is the
    hash of its command, params and inputs, so an input not built yet (a data set not downloaded or preprocessed)
    is predicted from its own stage's run-cache entry, as `dvc repro` would restore it: download → preprocess →
    train, in that order. With `last="evaluate-"` the evaluate stages too (theirs are returned, not train's); with
    `pushed`, a run-cache entry counts as restorable though its outputs are not in the local cache (`tcvae sweep`:
    workers push entries and outputs together to the remote, which `dvc repro --pull` restores from)."""
    from dvc.exceptions import DvcException
    from dvc.stage.cache import _get_cache_hash
    from dvc.stage.serialize import to_single_stage_lockfile
    from dvc_data.hashfile.meta import Meta

    prefixes = ("download@", "preprocess@", "train-", "evaluate-")
    stages = [st for prefix in prefixes[:prefixes.index(last) + 1] for st in repo.index.stages
              if st.name.startswith(prefix)]
    built: dict[str, object] = {}    # path → the HashInfo an upstream stage's output has, or will have once restored
    status: dict[str, str] = {}
    rebuilt: set[str] = set()        # outputs of the stages that will run
    for st in stages:
        try:
            if any(d.fs_path in rebuilt for d in st.deps):     # an input its stage will remake: unknown until then
                raise FileNotFoundError
            if (all(Path(d.fs_path).exists() for d in st.deps) and not st.changed()
                    and all(built.get(d.fs_path, d.hash_info) == d.hash_info for d in st.deps)):   # inputs stay
                status[st.name] = "done"
                built.update((out.fs_path, out.hash_info) for out in st.outs)
                continue
            for dep in st.deps:      # the inputs' hashes as their stages leave them, else as they are now
                if dep.fs_path in built:
                    dep.hash_info, dep.meta = built[dep.fs_path], Meta(isdir=built[dep.fs_path].isdir)
                elif Path(dep.fs_path).exists():
                    dep.save()
                else:
                    raise FileNotFoundError(dep.fs_path)
            key = _get_cache_hash(to_single_stage_lockfile(st), key=True)
            entries = Path(repo.stage_cache._get_cache_dir(key))
            newest = max(entries.iterdir(), key=lambda f: f.stat().st_mtime, default=None) if entries.is_dir() else None
            entry = newest and repo.stage_cache._load_cache(key, newest.name)
            cached = entry and repo.stage_cache._create_stage(entry, wdir=st.wdir)
            if cached and (pushed or cached.outs_cached()):
                status[st.name] = "cached"
                built.update((out.fs_path, out.hash_info) for out in cached.outs)
            else:
                status[st.name] = "to train"
        except FileNotFoundError:
            status[st.name] = "inputs not built"
        except (DvcException, OSError):     # e.g. an input DVC cannot hash: it will train
            status[st.name] = "to train"
        if status[st.name] in ("to train", "inputs not built"):
            rebuilt.update(out.fs_path for out in st.outs)
    return {name: state for name, state in status.items() if name.startswith(last)}


def _duration(seconds: float) -> str:
    """Seconds as a person reads them: '40 s', '12.5 min', '5.6 h', '101.8 days' (from 2 days on)."""
    if seconds > 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} h" if seconds > 5400 else f"{seconds / 60:.1f} min" if seconds > 90 else f"{seconds:.0f} s"
