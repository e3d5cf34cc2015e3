"""The command-line options the stages share (Typer, annotated types)."""

from pathlib import Path
from typing import Annotated

import typer

ParamsOption = Annotated[Path, typer.Option("--params", metavar="PATH", help="params file")]
DatasetOption = Annotated[str, typer.Option(metavar="NAME", help="data set name (a key of `data`)")]
DatasetsOption = Annotated[list[str] | None, typer.Option("--dataset", metavar="NAME",
                                                           help="data set name (repeat for several); default: all")]
MethodOption = Annotated[str, typer.Option(metavar="METHOD", help="betavae | tcvae | factorvae | annealedvae")]
BetaOption = Annotated[str, typer.Option(metavar="BETA", help="the method's weight (β; FactorVAE: γ), a number ≥ 0")]
SeedOption = Annotated[int, typer.Option(metavar="SEED", min=0, max=2**32 - 1, help="the run's seed (as in sweep.seeds)")]
