"""`scarce sweep` and `scarce tune`: plain Typer command functions the main app registers."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from scarce.errors import ScarceError

console = Console()

ConfigArg = Annotated[Optional[Path], typer.Argument(help="TOML config (see examples/); omit for defaults")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides, e.g. data.unique_tokens=65536")]
ExecutorName = Annotated[str, typer.Option("--executor", help="local (process pool), serial (this process), submitit (Slurm) or ray")]
Workers = Annotated[Optional[int], typer.Option(help="Runs at once; default: local one per core (one per GPU on CUDA), "
                                                     "submitit/ray all")]
Threads = Annotated[Optional[int], typer.Option(help="Torch threads (CPUs) per run; default 1 (local on CUDA: cores / workers)")]
ExecutorOptions = Annotated[Optional[list[str]], typer.Option(
    "--executor-option", help="KEY=VALUE for the executor, e.g. slurm_partition=gpu, cluster=local, address=auto")]
Name = Annotated[Optional[str], typer.Option(help="Study name (runs get study=NAME); default: derived from the config, so the same command resumes")]
Live = Annotated[bool, typer.Option(help="Show the live display of runs done / running / failed")]


def _base_config(config: Optional[Path], overrides: Optional[list[str]]):
    from scarce.config import load_config

    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not config.exists():  # `scarce sweep model.size=micro ...`
        config, overrides = None, [str(config), *overrides]
    return load_config(config, overrides)


def executor_options(options: Optional[list[str]]) -> dict:
    """--executor-option KEY=VALUE items as keyword arguments for the executor."""
    from scarce.config import parse_override

    parsed = {}
    for item in options or []:
        if "=" not in item:
            raise ScarceError(f"--executor-option {item!r} must look like KEY=VALUE, e.g. slurm_partition=gpu")
        keys, value = parse_override(item)
        parsed[".".join(keys)] = value
    return parsed


def _executor(name: str, workers: Optional[int], threads: Optional[int], options: Optional[list[str]]):
    from scarce.executors import make_executor

    return make_executor(name, workers=workers, threads=threads, **executor_options(options))


@contextlib.contextmanager
def _resumable():
    try:
        yield
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: finished runs are kept; run the same command again to resume")
        raise typer.Exit(130) from None


def sweep(
    config: ConfigArg = None,
    overrides: Overrides = None,
    grid: Annotated[Optional[list[str]], typer.Option(
        help="KEY=V1,V2,... (repeat for more keys; runs are the product), e.g. optim.weight_decay=0.1,0.4,1.6")] = None,
    executor: ExecutorName = "local",
    workers: Workers = None,
    threads: Threads = None,
    executor_option: ExecutorOptions = None,
    name: Name = None,
    live: Live = True,
):
    """Run every combination of the --grid values; re-run the same command to resume after an interruption."""
    from scarce.studies.sweep import parse_grid, run_sweep

    base = _base_config(config, overrides)
    parse_grid(grid or [], base)  # bad grids are reported before the executor starts anything
    with _resumable():
        run_sweep(base, grid or [], _executor(executor, workers, threads, executor_option), name, console, live)


def _values(option: str, text: Optional[str], cast) -> list | None:
    if text is None:
        return None
    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ScarceError(f"{option} {text!r} must be comma-separated numbers, e.g. {option} 0.1,0.4,1.6") from None
    if not values:
        raise ScarceError(f"{option} is empty; give at least one value")
    return values


def tune(
    config: ConfigArg = None,
    overrides: Overrides = None,
    lr: Annotated[Optional[str], typer.Option(help="Learning-rate grid; default 1e-4,3e-4,1e-3,3e-3,1e-2,3e-2")] = None,
    weight_decay: Annotated[Optional[str], typer.Option(
        help="Weight-decay grid; default 0,0.1,0.2,0.4,0.8,1.6,3.2,6.4")] = None,
    epochs: Annotated[Optional[str], typer.Option(help="Epochs grid; default 1,2,4,8,16,32,64")] = None,
    metric: Annotated[str, typer.Option(help="final_val_loss or best_val_loss")] = "final_val_loss",
    executor: ExecutorName = "local",
    workers: Workers = None,
    threads: Threads = None,
    executor_option: ExecutorOptions = None,
    name: Name = None,
    live: Live = True,
):
    """Locally optimal lr, weight decay and epochs for the config's model and data (grid coordinate descent)."""
    from scarce.studies.tune import DEFAULT_AXES, check_axes
    from scarce.studies.tune import tune as run_tune

    base = _base_config(config, overrides)
    given = {"optim.lr": _values("--lr", lr, float), "optim.weight_decay": _values("--weight-decay", weight_decay, float),
             "train.epochs": _values("--epochs", epochs, int)}
    axes = check_axes({key: given[key] or values for key, values in DEFAULT_AXES.items()}, base)
    with _resumable():
        run_tune(base, _executor(executor, workers, threads, executor_option), axes, name, metric, console, live)
