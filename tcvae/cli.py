"""The `tcvae` command: `tcvae stage <name>` runs a pipeline stage, `tcvae bench <what>` measures speed.

Imports stay light here (Typer and the stage schemas); torch loads only when a command runs."""

from __future__ import annotations

import os
import signal
import sys

STARTING = "interrupted while starting; nothing was run"


def _interrupted_at_start(signum: int, frame: object) -> None:
    print(STARTING, file=sys.stderr)
    os._exit(130)


# Ctrl-C (or DVC's SIGTERM) while the imports below load: one line, not a KeyboardInterrupt traceback. `main`
# hands both signals to Python's own Ctrl-C handling once the command starts.
# Only as the command (`tcvae`, `python -m tcvae`), never when a program such as pytest imports this module.
if os.path.basename(sys.argv[0]) in ("tcvae", "__main__.py"):
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:     # not where SIGINT is ignored (nohup … &)
        signal.signal(signal.SIGINT, _interrupted_at_start)
    signal.signal(signal.SIGTERM, _interrupted_at_start)

import typer  # noqa: E402

from stages import aggregate, download, evaluate, plan, plot, preprocess, results, slurm, train  # noqa: E402

app = typer.Typer(help="β-TCVAE, reproduced: data → train → evaluate → figures.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
stage = typer.Typer(help="Pipeline stages (run by `dvc repro`; each takes --params).", no_args_is_help=True,
                    rich_markup_mode=None)
bench = typer.Typer(help="Speed benchmarks: ratios against a straightforward baseline, same process.",
                    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(stage, name="stage")
sweep = typer.Typer(help="The run matrix of `sweep:` in params.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(bench, name="bench", short_help="Speed benchmarks: ratios against a baseline, one process.")
app.add_typer(sweep, name="sweep")

stage.command("download", short_help="Fetch or locate a data set's raw files.")(download.command)
stage.command("preprocess", short_help="Render or convert a data set into one HDF5 file.")(preprocess.command)
stage.command("train", short_help="Train one run (resumes from its checkpoint).")(train.command)
stage.command("evaluate", short_help="Evaluate one run: its eval.json and figures.h5.")(evaluate.command)
stage.command("aggregate", short_help="Collect the sweep's runs: runs.csv, summary, headline.")(aggregate.command)
stage.command("plot", short_help="Draw the sweep's and each run's figures from small files.")(plot.command)
stage.command("results", short_help="Draw the shipped result sets (DVC's results@<name>).")(results.stage)
sweep.command("plan", short_help="The sweep's runs: done, cached or to train, and the cost.")(plan.command)
sweep.command("submit", short_help="Submit the pending runs to SLURM as one array job.")(slurm.submit)
sweep.command("status", short_help="Each run's state on SLURM, and how to resubmit the failed ones.")(slurm.status)
shown = typer.Typer(help="Results: print them again, list the shipped result sets, export the sweep as one.",
                    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(shown, name="results", short_help="Show results again, list the shipped sets, export one.")
shown.command("show", short_help="Print a result folder's table again.")(results.show)
shown.command("list", short_help="List the shipped result sets and their headline numbers.")(results.list_sets)
shown.command("export", short_help="Ship the sweep's small outputs as a result set.")(results.export)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"tcvae {version('tcvae')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    """β-TCVAE, reproduced: data → train → evaluate → figures."""


@bench.command("data", short_help="Rendering the data sets and serving their batches.")
def bench_data(batch: int = typer.Option(2048, min=1, max=2**20, help="batch size"),
               seconds: float = typer.Option(3.0, min=0.1, max=3600)) -> None:
    """Render times for dSprites and faces, and the rate at which dSprites batches are served."""
    from tcvae.bench import data

    data(batch, seconds)


@bench.command("train", short_help="log_qz and training steps against their baselines.")
def bench_train(batch: int = typer.Option(2048, min=1, max=2**20, help="batch size"),
                latents: int = typer.Option(10, min=1, max=64),
                reps: int = typer.Option(3, min=1, max=1000, help="timed repetitions (medians)"),
                device: str = typer.Option("auto", help="auto | cpu | cuda")) -> None:
    """log_qz against the materialised baseline; training steps of VAE, β-TCVAE (MSS, MWS), FactorVAE."""
    from tcvae.bench import train
    from tcvae.errors import UserError

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device[:40]!r}: must be auto, cpu or cuda")
    train(batch, latents, reps, device)


@bench.command("mig", short_help="MIG at full dSprites size, and against brute force.")
def bench_mig(samples: int = typer.Option(10_000, min=1, max=10**7, help="posterior samples"),
              subset: int = typer.Option(46_080, min=1, max=10**7, help="data points in the brute-force comparison")) -> None:
    """MIG at full dSprites size, and the ratio against the straightforward chunked way on a subset."""
    from tcvae.bench import mig

    mig(samples, subset)


@bench.command("estimators", short_help="Each minibatch estimator's TC against the full-data value.")
def bench_estimators(seed: int = typer.Option(0, min=0, max=2**32 - 1, help="minibatch seed")) -> None:
    """Each minibatch estimator's TC against the full-data value on synthetic posteriors, with timings."""
    from tcvae.bench import estimators

    estimators(seed)


@bench.command("metrics", short_help="DCI, SAP, FactorVAE and β-VAE scores, timed.")
def bench_metrics(seed: int = typer.Option(0, min=0, max=2**32 - 1, help="metric seed")) -> None:
    """DCI, SAP, FactorVAE and β-VAE scores timed on the default dSprites sub-grid (46,080) and full dSprites."""
    from tcvae.bench import metrics

    metrics(seed)

def printable(text: str) -> str:
    """`text` with control characters (but line breaks and tabs) escaped: a file name from someone else's folder
    can neither split the message into lines nor drive the terminal."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (DVC stopping a stage, `kill`) as Ctrl-C: the same clean-up, message and exit code."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _terminate:
        handler(signal.SIGINT, frame)     # training's handler saves a checkpoint first; the default one raises
    else:
        raise KeyboardInterrupt


INTERRUPTED = "interrupted; no partial output was kept (rerun: an interrupted training run resumes from its checkpoint)"


def main(args: list[str] | None = None) -> None:
    """The console script: bad input (UserError) or a file system that refuses a write (OSError) is one screen on
    stderr and exit code 2, Ctrl-C exit 130.
    `args` (default: the command line) lets tests run the real CLI in-process."""
    from tcvae.errors import UserError

    if signal.getsignal(signal.SIGINT) is _interrupted_at_start:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    for stream in (sys.stdout, sys.stderr):     # an encoding without β or box lines: `?` in their place, no crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        app(args=args, prog_name="tcvae")
    except UserError as e:
        from rich.console import Console
        from rich.text import Text

        # as Text, not markup: a message quoting the user's input may hold [brackets]
        Console(stderr=True, highlight=False).print(Text.assemble(("error: ", "bold red"), printable(str(e))),
                                                    soft_wrap=True)
        sys.exit(2)
    except OSError as e:       # the file system refused (read-only, full, a folder where a file goes): one line too
        where = e.filename2 or e.filename     # a rename's destination, else the file
        print(printable(f"error: {e.strerror or e}" + (f": {where}" if where else "")), file=sys.stderr)
        sys.exit(2)
    except SystemExit as e:    # Typer turns Ctrl-C into Exit(130) before it could reach an `except` here
        if e.code == 130:
            print(INTERRUPTED, file=sys.stderr)
        raise
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
