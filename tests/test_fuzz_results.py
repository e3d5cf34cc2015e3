"""A fuzzer for result sets (the params one is tests/test_fuzz.py): a real small set's files mutated (bytes
flipped, truncation, CSV cells and lines, JSON values and types, HDF5 datasets' shapes, dtypes and attributes,
HDF5 and file-system links, FIFOs, folder and file names), then `tcvae results show` and `tcvae stage results`
(dvc.yaml's results@<name>) through the real CLI in-process. Every answer is exit 0 with the set's correct
table, or exit 2 with one error line naming a file; never a traceback, a hang, a write outside the set's outputs
(runs.csv, summary/, figures/), or more than a few hundred MB.

Drawing is replaced by a stub that writes a small file where each figure goes: the readers and checks are what is
fuzzed, and a figure costs a second. Derandomized: the same examples every run; TCVAE_FUZZ_RESULTS=500 runs more."""

import collections
import copy
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import run_cli
from tests.test_fuzz import alarm

EXAMPLES = int(os.environ.get("TCVAE_FUZZ_RESULTS", "30"))
SECONDS = 10
SET = Path("data/results/s1")
OUTPUTS = ("runs.csv", "summary", "figures")        # what the results stage writes in the set
COUNTS: collections.Counter = collections.Counter()
ODD = st.sampled_from([None, True, "", "x", "0.5", "../..", "[red]x[/]", "é", 0, -1, 2**63, 1e308, -1e308, 0.5,
                       float("nan"), float("inf"), [], {}, [1], {"a": 1}, "nan", "inf", "1e999", "tcvae", "tiny"])


def json_paths(tree, prefix=()):
    yield prefix
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        if len(prefix) < 4:
            yield from json_paths(v, prefix + (k,))


@st.composite
def mutation(draw, files: list[str]) -> tuple[str, str, dict]:
    """(file, operation, arguments) with every random choice drawn here, so a failing example replays."""
    name = draw(st.sampled_from(files))
    kind = name.rsplit(".", 1)[-1]
    ops = ["flip", "truncate", "link", "fifo", "rename", "extra"] + {
        "csv": ["cell", "line"], "json": ["json"] * 4, "h5": ["dataset", "attribute", "h5link"] * 2,
        "yaml": ["text"]}.get(kind, [])
    op = draw(st.sampled_from(ops))
    args = {"at": draw(st.floats(0, 1)), "n": draw(st.integers(1, 8)), "odd": draw(ODD),
            "shape": draw(st.lists(st.integers(0, 70), min_size=0, max_size=5)),
            "dtype": draw(st.sampled_from(["u1", "f8", "i8", "S3", "f2"])), "text": draw(st.text(max_size=20)),
            "how": draw(st.integers(0, 3))}
    return name, op, args


def apply(folder: Path, name: str, op: str, a: dict) -> None:
    path = folder / name
    data = path.read_bytes()
    if op == "flip":
        b = bytearray(data)
        for i in range(a["n"]):
            b[int(a["at"] * (len(b) - 1) + i * 97) % len(b)] ^= 0xFF
        path.write_bytes(bytes(b))
    elif op == "truncate":
        path.write_bytes(data[: int(a["at"] * len(data))])
    elif op == "link":
        path.unlink()
        path.symlink_to(["/etc/passwd", "/dev/zero", str(folder / SET / "runs.csv"), "/nonexistent"][a["how"]])
    elif op == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif op == "rename":
        parent = path.parent if a["how"] < 2 else path.parent.parent
        target = parent.with_name([a["text"] or "x", "seed01", "Tiny", "beta2.0"][a["how"]].replace("/", "_") or "x")
        if not target.exists():
            parent.rename(target)
    elif op == "extra":
        (path.parent / ([a["text"] or "x", ".hidden", "model.pt", "sub"][a["how"]].replace("/", "_") or "x")).write_text("x")
    elif op == "cell":
        lines = data.decode().splitlines()
        i = int(a["at"] * (len(lines) - 1))
        cells = lines[i].split(",")
        cells[a["n"] % len(cells)] = str(a["odd"])
        lines[i] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
    elif op == "line":
        lines = data.decode().splitlines()
        i = int(a["at"] * (len(lines) - 1))
        lines = [lines[:i] + lines[i + 1:], lines + [lines[i]], lines[:i] + [lines[i][: a["n"]]] + lines[i + 1:],
                 [lines[0]] * 2 + lines[1:]][a["how"]]
        path.write_text("\n".join(lines) + "\n")
    elif op == "json":
        tree = json.loads(data)
        where = list(json_paths(tree))[1:]
        at = where[int(a["at"] * (len(where) - 1))]
        parent = tree
        for k in at[:-1]:
            parent = parent[k]
        if a["how"] == 0 and isinstance(parent, dict):
            del parent[at[-1]]
        elif a["how"] == 1:
            parent[at[-1]] = [parent[at[-1]]]
        else:
            parent[at[-1]] = copy.deepcopy(a["odd"])
        path.write_text(json.dumps(tree))                  # NaN and Infinity as Python writes them: not strict JSON
    elif op in ("dataset", "attribute", "h5link"):
        with h5py.File(path, "r+") as f:
            names: list[str] = []
            f.visit(names.append)
            target = sorted(names)[int(a["at"] * (len(names) - 1))]
            if op == "dataset":
                del f[target]
                if a["how"]:
                    f.create_dataset(target, data=np.zeros(a["shape"], a["dtype"]))
            elif op == "attribute":
                f[target if a["how"] else "/"].attrs[["image", "groups", "unit", "range"][a["n"] % 4]] = (
                    a["odd"] if isinstance(a["odd"], (int, float, str)) and not isinstance(a["odd"], bool) else "x")
            else:
                del f[target]
                f[target] = h5py.ExternalLink("/etc/passwd", "/x") if a["how"] % 2 else h5py.SoftLink("/" + sorted(names)[0])
    elif op == "text":
        path.write_text([a["text"], "sets: 3\n", "sets: [s1, s1]\n", "sets: ['a;b']\n"][a["how"]])


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry outside the set's outputs: its kind and, for a regular file, its bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts[:3] == SET.parts and len(rel.parts) > 3 and rel.parts[3] in OUTPUTS:
            continue
        out[str(rel)] = ("link", os.readlink(p)) if p.is_symlink() else ("file", p.read_bytes()) if p.is_file() and \
            not p.is_fifo() else ("other",)
    return out


@pytest.fixture(scope="module")
def pristine(shipped_workspace, tmp_path_factory) -> Path:
    """Just what the results stage needs: params.yaml, sets.yaml and the set (no runs, data or models)."""
    folder = tmp_path_factory.mktemp("pristine")
    shutil.copy(shipped_workspace / "params.yaml", folder / "params.yaml")
    shutil.copytree(shipped_workspace / "data/results", folder / "data/results")
    shutil.rmtree(folder / SET / "figures", ignore_errors=True)
    return folder


@pytest.fixture
def stub_drawing(monkeypatch):
    from tcvae import plots

    def stub(*args, **kw):
        path = next(a for a in args if isinstance(a, Path))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".png").write_bytes(b"png")
    for name in ("mig_vs_beta", "tc_vs_mig", "metrics_vs_mig", "traversals", "reconstructions", "latents_vs_factors",
                 "learning_curves", "traversals_by_attribute"):
        monkeypatch.setattr(plots, name, stub)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)


FILES = [str(SET / p) for p in ("runs.csv", "provenance.json", "runs/tiny/tcvae/beta2/seed0/eval.json",
                                "runs/tiny/betavae/beta2/seed0/eval.json", "runs/tiny/tcvae/beta2/seed0/history.csv",
                                "runs/tiny/tcvae/beta2/seed0/figures.h5", "runs/tiny/betavae/beta2/seed0/figures.h5")] + [
    "data/results/sets.yaml"]


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(changes=st.lists(mutation(FILES), min_size=1, max_size=2))
def test_mutated_result_sets_exit_0_or_2_and_write_only_their_outputs(pristine, stub_drawing, changes):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(pristine, Path(tmp) / "ws"))
        original = (folder / SET / "runs.csv").read_text()
        for name, op, args in changes:
            if os.path.lexists(folder / name) and (folder / name).is_file() and not (folder / name).is_symlink():
                try:
                    apply(folder, name, op, args)
                except (ValueError, KeyError, IndexError, UnicodeDecodeError, OSError):
                    COUNTS["mutations not applicable"] += 1    # e.g. JSON edits on a file already cut short
        before = snapshot(folder)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for args in (("results", "show", SET), ("stage", "results", "s1")):
            start = time.monotonic()
            with alarm(2 * SECONDS):
                code, out = run_cli(*args, cwd=folder)
            seconds = time.monotonic() - start
            COUNTS[f"{args[1]}: exit {code}"] += 1
            assert code in (0, 2), out
            assert "Traceback" not in out, out
            assert seconds < SECONDS, f"{seconds:.1f} s"
            if code == 2:          # one line, last, naming a file (aggregate's table may come before plot's refusal)
                errors = [line for line in out.splitlines() if line.startswith("error")]
                assert len(errors) == 1 and out.strip().splitlines()[-1] == errors[0] and "data/results" in errors[0], out
        assert snapshot(folder) == before                  # nothing written outside the set's outputs
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 400 * 1024      # KiB: < 400 MB more
        if code == 0 and all(not n.endswith(("eval.json", "sets.yaml")) for n, _, _ in changes):
            assert (folder / SET / "runs.csv").read_text() == original   # the set's correct table, redrawn


def test_report_the_counts():
    """Runs after the fuzzer (file order): its tallies, shown with `pytest -s`."""
    if COUNTS:
        print(f"\nresult-set fuzzer: {sum(v for k, v in COUNTS.items() if 'results: exit' in k)} examples, "
              + ", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())))
