"""Loading params.yaml, validated against stages.schema as a whole: every stage validates the whole file, so a
typo anywhere (`trian:`) is refused by any stage. Where stages read and write is stages.runs."""

from __future__ import annotations

import difflib
import io
from pathlib import Path

import yaml
from pydantic import ValidationError

from stages.schema import Params
from tcvae.errors import UserError

# ---- loading ----

MAX_BYTES = 1 << 20        # a params file is a few KB; anything near a megabyte is not one
MAX_VALUES = 100_000       # values after YAML aliases are expanded (a billion-laughs file expands to 9**9)
MAX_DEPTH = 32             # nesting levels (params nest four deep)
MAX_ROWS = 15              # invalid values shown; the rest are counted


def load_params(path: Path) -> Params:
    """Read and validate params.yaml; raise UserError with a key/value/rule table if anything is off.

    Any file is answered in well under a second: its size, nesting and alias expansion are bounded before
    anything is built from it, and duplicate keys (where YAML would silently keep the last) are refused."""
    raw = read_yaml(path)
    try:
        return Params.model_validate(raw if raw is not None else {})
    except ValidationError as e:
        raise UserError(_explain(path, e)) from None


def read_yaml(path: Path) -> object:
    """The YAML document at `path` as plain Python data, or a UserError saying why it is not a params file."""
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a params file\n  pass --params path/to/params.yaml")
    if not path.exists():
        raise UserError(f"params file not found: {path}\n  run from the repository root, or pass --params PATH")
    if not path.is_file():        # a FIFO or a device would block or never end
        raise UserError(f"{path} is not a regular file; a params file is a few KB of YAML")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"{path}: larger than {MAX_BYTES // 1024} KiB; a params file is a few KB of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start} is {data[e.start:e.start + 1]!r}); "
                        f"a params file is YAML") from None
    try:
        loader = yaml.SafeLoader(text)
        loader.name = str(path)       # for error marks (`in "params.yaml", line 3`)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_nodes(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except _Refused as e:
        raise UserError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML:\n{_clip(str(e), 800)}") from None
    except RecursionError:
        raise UserError(f"{path}: nested more than {MAX_DEPTH} levels deep; params nest four") from None
    except (ValueError, OverflowError) as e:     # e.g. an integer of more than 4,300 digits
        what = "a number of more than 4,300 digits" if "digits" in str(e) else _clip(str(e), 200)
        raise UserError(f"{path}: a value cannot be read: {what}") from None


class _Refused(yaml.YAMLError):
    """Valid YAML that no params file should be (too deep, too large, a repeated key)."""


def _check_nodes(root: yaml.Node) -> None:
    """Refuse (as yaml.YAMLError) documents nested too deeply, expanding past MAX_VALUES values through
    aliases, referring to themselves, or repeating a key in one mapping. Shared (aliased) nodes are
    measured once, so a billion-laughs file is refused in microseconds."""
    sizes: dict[int, tuple[int, int]] = {}      # id(node) -> (values when expanded, height)
    busy: set[int] = set()

    def measure(node: yaml.Node, where: str) -> tuple[int, int]:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in busy or len(busy) > MAX_DEPTH:
            raise _Refused(f"{where or 'the document'}: nested more than {MAX_DEPTH} levels deep "
                                 f"(or an alias that refers to itself)")
        busy.add(id(node))
        size, height = 1, 0
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    name = (key.tag, key.value)
                    line = key.start_mark.line + 1
                    if name in seen:
                        inside = f" in `{where}`" if where else ""
                        raise _Refused(f"key '{_clip(key.value, 60)}'{inside} appears twice (lines {seen[name]} "
                                             f"and {line}); YAML would silently keep the last. Remove one")
                    seen[name] = line
                child = f"{where}.{key.value}" if where and isinstance(key, yaml.ScalarNode) else \
                    (key.value if isinstance(key, yaml.ScalarNode) else where)
                for sub in (key, value):
                    s, h = measure(sub, _clip(str(child), 60))
                    size, height = size + s, max(height, h + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                s, h = measure(item, f"{where}.{i}" if where else str(i))
                size, height = size + s, max(height, h + 1)
        busy.discard(id(node))
        if size > MAX_VALUES:
            raise _Refused(f"{where or 'the document'}: expands to more than {MAX_VALUES:,} values "
                                 f"(YAML aliases repeating aliases?); a params file holds a few hundred")
        sizes[id(node)] = (size, height)
        return size, height

    measure(root, "")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _short(value: object, n: int = 60) -> str:
    """A bounded repr: never builds the repr of a huge value only to cut it."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxtuple, r.maxset, r.maxlevel = n, n, 6, 6, 6, 6, 3
    r.maxlong = 40
    return _clip(r.repr(value), n)


def _explain(path: Path, error: ValidationError) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    errors = error.errors(include_url=False, include_context=False)
    table = Table(title=escape(f"{path}: {len(errors)} invalid value(s); nothing was run"), title_justify="left")
    for col in ("key", "value", "rule"):
        table.add_column(col, overflow="fold")
    for e in errors[:MAX_ROWS]:
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and p in ("dsprites", "faces", "celeba", "shapes3d") and e["loc"].index(p) == 2)]
        key = _clip(".".join(loc) or "(top level)", 80)
        rule = _clip(e["msg"].removeprefix("Value error, "), 300)
        if e["type"] == "extra_forbidden":
            rule = "unknown key"
            if len(loc) == 1:
                close = difflib.get_close_matches(loc[0], Params.model_fields, n=1)
                rule += f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(Params.model_fields)})"
        value = "(missing)" if e["type"] == "missing" else _short(e.get("input"))
        table.add_row(*map(escape, (key, value, rule)))     # cells are rich markup: `[/]` in a key is text
    if len(errors) > MAX_ROWS:
        table.add_row("…", "", f"and {len(errors) - MAX_ROWS} more")
    out = io.StringIO()
    Console(file=out, width=110, no_color=True).print(table)
    return out.getvalue().rstrip()
