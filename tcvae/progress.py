"""Progress for long work: a rich bar (rate, ETA) on a terminal, plain log lines every 10% elsewhere."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from rich.console import Console

console = Console(stderr=True)


@contextlib.contextmanager
def progress(total: float, description: str, unit: str = "it") -> Iterator[Callable[..., None]]:
    """Yield `advance(n, **fields)`; fields (e.g. loss terms) are shown beside the bar or the log line."""
    if console.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                      console=console) as bar:
            task = bar.add_task(description, total=total, info="", rate="")

            def advance(n: float = 1, **fields: float) -> None:
                speed = bar.tasks[0].speed
                info = _fmt(fields) if fields else bar.tasks[0].fields["info"]
                bar.update(task, advance=n, info=info, rate=f"{_human(speed or 0)}{unit}/s")

            yield advance
        return
    done, next_report, start = 0.0, 0.1, time.monotonic()

    def advance(n: float = 1, **fields: float) -> None:
        nonlocal done, next_report
        done += n
        if total and done / total >= next_report - 1e-9:
            elapsed = time.monotonic() - start
            print(f"{description}: {done / total:4.0%} ({_human(done)}/{_human(total)} {unit}, {elapsed:.0f} s, "
                  f"{_human(done / max(elapsed, 1e-9))}{unit}/s) {_fmt(fields)}", file=sys.stderr, flush=True)
            next_report = min(1.0, (int(done / total * 10) + 1) / 10)

    yield advance


def _human(x: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f} {prefix}"
    return f"{x:.1f} "


def _fmt(fields: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in fields.items())
