"""`scarce sweep` and `scarce tune`: many runs over a grid, through an executor."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scarce.commands.options import (
    ConfigArg,
    ExecutorName,
    ExecutorOptions,
    Live,
    Name,
    Overrides,
    Threads,
    Workers,
    build_executor,
    console,
    load_run_config,
    resumable,
)
from scarce.errors import ScarceError


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

    base = load_run_config(config, overrides)
    parse_grid(grid or [], base)  # bad grids are reported before the executor starts anything
    with resumable():
        outcomes = run_sweep(base, grid or [], build_executor(executor, workers, threads, executor_option), name,
                             console, live)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:  # the table above shows them; the exit code says it to scripts
        raise ScarceError(f"{len(failed)} of {len(outcomes)} runs failed (logs in {base.runs_dir}/sweeps/*/logs); "
                          "run the same command again to retry them")


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

    base = load_run_config(config, overrides)
    given = {"optim.lr": _values("--lr", lr, float), "optim.weight_decay": _values("--weight-decay", weight_decay, float),
             "train.epochs": _values("--epochs", epochs, int)}
    axes = check_axes({key: given[key] or values for key, values in DEFAULT_AXES.items()}, base)
    with resumable():
        run_tune(base, build_executor(executor, workers, threads, executor_option), axes, name, metric, console, live)
