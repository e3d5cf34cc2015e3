"""The command-line options the stages share (Typer, annotated types)."""

from pathlib import Path
from typing import Annotated

import typer

ParamsOption = Annotated[Path, typer.Option("--params", help="params file")]
DatasetOption = Annotated[str, typer.Option(help="data set name (a key of `data`)")]
MethodOption = Annotated[str, typer.Option(help="betavae | tcvae | factorvae")]
BetaOption = Annotated[str, typer.Option(help="the method's weight (β; FactorVAE: γ), written as in params")]
SeedOption = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="the run's seed (as in sweep.seeds)")]
