"""Progress for long work: a rich bar (rate, ETA) on a terminal, plain log lines every 10% elsewhere."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator

from rich.console import Console

console = Console(stderr=True)


@contextlib.contextmanager
def progress(total: float, description: str, unit: str = "it", start: float = 0) -> Iterator[Callable[..., None]]:
    """Yield `advance(n, **fields)`; fields (e.g. loss terms) are shown beside the bar or the log line. Work
    already done (`start`, e.g. a resumed run's steps) counts towards the bar but not towards the rate."""
    began = time.monotonic()
    done = float(start)

    def rate() -> str:
        elapsed = time.monotonic() - began
        return f"{_human((done - start) / elapsed)} {unit}/s" if elapsed > 0.05 and done > start else f"– {unit}/s"

    if console.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                      console=console) as bar:
            task = bar.add_task(description, total=total, completed=start, info="", rate=rate(),
                                count=f"{_human(start)}/{_human(total)} {unit}")

            def advance(n: float = 1, **fields: float) -> None:
                nonlocal done
                done += n
                info = _fmt(fields) if fields else bar.tasks[0].fields["info"]
                bar.update(task, advance=n, info=info, rate=rate(), count=f"{_human(done)}/{_human(total)} {unit}")

            yield advance
        return
    next_report = (int(done / total * 10) + 1) / 10 if total else 1.0

    def advance(n: float = 1, **fields: float) -> None:
        nonlocal done, next_report
        done += n
        if total and done / total >= next_report - 1e-9:
            print(f"{description}: {done / total:4.0%} ({_human(done)}/{_human(total)} {unit}, "
                  f"{time.monotonic() - began:.0f} s, {rate()}) {_fmt(fields)}".rstrip(), file=sys.stderr, flush=True)
            next_report = min(1.0, (int(done / total * 10) + 1) / 10)

    yield advance


def _human(x: float) -> str:
    """3 → '3', 2541.5 → '2,542', 35_800_000 → '35.8 M'."""
    for scale, prefix in ((1e9, " G"), (1e6, " M")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{prefix}"
    return f"{x:,.0f}" if abs(x) >= 10 or float(x).is_integer() else f"{x:.1f}"


def _fmt(fields: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in fields.items())
