"""The `tcvae` command: `tcvae stage <name>` runs a pipeline stage, `tcvae bench <what>` measures speed.

Imports stay light here (Typer and the stage schemas); torch loads only when a command runs."""

from __future__ import annotations

import sys

import typer

from stages import aggregate, download, evaluate, plan, plot, preprocess, results, train

app = typer.Typer(help="β-TCVAE, reproduced: data → train → evaluate → figures.", no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
stage = typer.Typer(help="Pipeline stages (run by `dvc repro`; each takes --params).", no_args_is_help=True,
                    rich_markup_mode=None)
bench = typer.Typer(help="Speed benchmarks: ratios against a straightforward baseline, same process.",
                    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(stage, name="stage")
sweep = typer.Typer(help="The run matrix of `sweep:` in params.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(bench, name="bench")
app.add_typer(sweep, name="sweep")

stage.command("download")(download.command)
stage.command("preprocess")(preprocess.command)
stage.command("train")(train.command)
stage.command("evaluate")(evaluate.command)
stage.command("aggregate")(aggregate.command)
stage.command("plot")(plot.command)
sweep.command("plan")(plan.command)
shown = typer.Typer(help="Results: print them again, list the shipped result sets, export the sweep as one.",
                    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(shown, name="results")
shown.command("show")(results.show)
shown.command("list")(results.list_sets)
shown.command("export")(results.export)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"tcvae {version('tcvae')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="print the version and exit")) -> None:
    """β-TCVAE, reproduced: data → train → evaluate → figures."""


@bench.command("data")
def bench_data(batch: int = typer.Option(2048, help="batch size"), seconds: float = typer.Option(3.0)) -> None:
    """Render times for dSprites and faces, and the rate at which dSprites batches are served."""
    from tcvae.bench import data

    data(batch, seconds)


@bench.command("train")
def bench_train(batch: int = typer.Option(2048, help="batch size"), latents: int = typer.Option(10),
                reps: int = typer.Option(3, help="timed repetitions (medians)"),
                device: str = typer.Option("auto", help="auto | cpu | cuda")) -> None:
    """log_qz against the materialised baseline; training steps of VAE, β-TCVAE (MSS, MWS), FactorVAE."""
    from tcvae.bench import train

    train(batch, latents, reps, device)


@bench.command("mig")
def bench_mig(samples: int = typer.Option(10_000, help="posterior samples"),
              subset: int = typer.Option(46_080, help="data points in the brute-force comparison")) -> None:
    """MIG at full dSprites size, and the ratio against the straightforward chunked way on a subset."""
    from tcvae.bench import mig

    mig(samples, subset)


@bench.command("estimators")
def bench_estimators(seed: int = typer.Option(0, min=0, max=2**32 - 1, help="minibatch seed")) -> None:
    """Each minibatch estimator's TC against the full-data value on synthetic posteriors, with timings."""
    from tcvae.bench import estimators

    estimators(seed)


@bench.command("metrics")
def bench_metrics(seed: int = typer.Option(0, min=0, max=2**32 - 1, help="metric seed")) -> None:
    """DCI, SAP, FactorVAE and β-VAE scores timed on the default dSprites sub-grid (46,080) and full dSprites."""
    from tcvae.bench import metrics

    metrics(seed)

INTERRUPTED = "interrupted; no partial output was kept (rerun: an interrupted training run resumes from its checkpoint)"


def main(args: list[str] | None = None) -> None:
    """The console script: bad input (UserError) or a file system that refuses a write (OSError) is one screen on
    stderr and exit code 2, Ctrl-C exit 130.
    `args` (default: the command line) lets tests run the real CLI in-process."""
    from tcvae.errors import UserError

    try:
        app(args=args, prog_name="tcvae")
    except UserError as e:
        from rich.console import Console
        from rich.text import Text

        # as Text, not markup: a message quoting the user's input may hold [brackets]
        Console(stderr=True, highlight=False).print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
        sys.exit(2)
    except OSError as e:       # the file system refused (read-only, full, a folder where a file goes): one line too
        where = e.filename2 or e.filename     # a rename's destination, else the file
        print(f"error: {e.strerror or e}" + (f": {where}" if where else ""), file=sys.stderr)
        sys.exit(2)
    except SystemExit as e:    # Typer turns Ctrl-C into Exit(130) before it could reach an `except` here
        if e.code == 130:
            print(INTERRUPTED, file=sys.stderr)
        raise
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
