"""A fuzzer: the shipped params files, mutated (keys deleted, renamed, misspelt and duplicated, values of the
wrong type, extreme numbers, infinities), through the real CLI in-process. Every answer is exit 0 or 2,
never a traceback or a hang, and nothing is written under data/ on exit 2.

`tcvae stage download` is the command: it validates the whole file like every stage and, for procedural
data, only writes a source.json, so an accepted file costs milliseconds. The network is replaced by a
refusal (a mutated `source: download` must still end in exit 2 and leave nothing).

Derandomized: the same examples on every run. TCVAE_FUZZ_EXAMPLES=1500 runs more."""

import collections
import contextlib
import copy
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcvae.errors import UserError
from tests.conftest import ROOT, run_cli

EXAMPLES = int(os.environ.get("TCVAE_FUZZ_EXAMPLES", "250"))
SECONDS = 10                       # per example; a hang is stopped by an alarm at twice this
SHIPPED = {name: yaml.safe_load((ROOT / name).read_text()) for name in ("params.yaml", "params-paper.yaml")}
COUNTS: collections.Counter = collections.Counter()

ODD = st.one_of(
    st.sampled_from([True, False, None, "", "5", "1e3", "inf", ".nan", "~", "../..", "[bold]x[/]", "é", "x" * 300,
                     0, -1, 1, 2, 2**31, 2**32, 2**63, 2**64, 10**30, -(10**30), 10**400, 0.0, -0.0, 1e-320, 0.5,
                     1e308, -1e308, float("inf"), float("-inf"), float("nan"), [], {}, [1], [1, 1], ["a"],
                     {"a": 1}, {"kind": "dsprites"}, "dsprites", "faces", "celeba", "download", "file", "conv"]),
    st.integers(), st.floats(), st.text(max_size=12), st.lists(st.integers(-3, 20), max_size=4))


def paths(tree, prefix=()):
    """Every (path, value) in a tree of dicts and lists."""
    yield prefix, tree
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        yield from paths(v, prefix + (k,))


def misspell(draw, key: str) -> str:
    how = draw(st.sampled_from(["drop", "double", "upper", "plural", "random", "swap"]))
    i = draw(st.integers(0, max(len(key) - 1, 0)))
    if how == "drop" and key:
        return key[:i] + key[i + 1:]
    if how == "double" and key:
        return key[:i] + key[i] + key[i:]
    if how == "upper":
        return key.upper()
    if how == "plural":
        return key + "s"
    if how == "swap" and len(key) > 1:
        i = min(i, len(key) - 2)
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return draw(st.text(min_size=1, max_size=10))


@st.composite
def mutated(draw) -> str:
    """A shipped params file with 1-3 mutations, as YAML text (sometimes with a line repeated)."""
    tree = copy.deepcopy(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(1, 3))):
        where = [p for p, _ in paths(tree) if p]
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = tree
        for k in path[:-1]:
            parent = parent[k]
        key, value = path[-1], parent[path[-1]]
        op = draw(st.sampled_from(["delete", "rename", "replace", "replace", "wrap", "extreme", "copy"]))
        if op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            parent[misspell(draw, str(key))] = parent.pop(key)
        elif op == "wrap":
            parent[key] = [value]
        elif op == "extreme" and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[key] = value * draw(st.sampled_from([-1, 0, 10**6, 10**30, 1e300, float("inf"), 2**64]))
        elif op == "copy" and isinstance(parent, list):
            parent.append(copy.deepcopy(value))                       # a repeated sweep entry
        else:
            parent[key] = copy.deepcopy(draw(ODD))         # never share a list or dict between examples
    text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    if draw(st.integers(0, 3)) == 0:                                  # a repeated line: a duplicated key
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        text = "\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]) + "\n"
    return text


@contextlib.contextmanager
def alarm(seconds: float):
    def hang(*_):
        raise TimeoutError(f"no answer within {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def offline(monkeypatch):
    from tcvae.data import celeba, download

    def no_network(url, *args, **kw):
        raise UserError(f"no network in the fuzzer ({url})")
    monkeypatch.setattr(download, "fetch", no_network)
    monkeypatch.setattr(celeba, "fetch_resumable", no_network)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(text=mutated())
def test_mutated_params_exit_0_or_2_and_write_nothing_on_2(offline, text):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "params.yaml").write_text(text)
        start = time.monotonic()
        with alarm(2 * SECONDS):
            code, out = run_cli("stage", "download", cwd=folder)
        seconds = time.monotonic() - start
        COUNTS[f"exit {code}"] += 1
        COUNTS["tracebacks"] += "Traceback" in out
        assert code in (0, 2), out
        assert "Traceback" not in out, out
        assert seconds < SECONDS, f"{seconds:.1f} s"
        if code == 2:
            assert not [p for p in (folder / "data").rglob("*") if p.is_file()], out
        else:
            assert list((folder / "data/raw").glob("*/source.json")), out


def test_report_the_counts():
    """Runs after the fuzzer (file order): its tallies, shown with `pytest -s`."""
    if COUNTS:
        print(f"\nfuzzer: {sum(v for k, v in COUNTS.items() if k.startswith('exit'))} examples, "
              + ", ".join(f"{k}: {v}" for k, v in sorted(COUNTS.items())))
