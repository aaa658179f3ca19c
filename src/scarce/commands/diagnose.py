"""`scarce diagnose`: the haystack and arithmetic diagnostics, warm-ups for them, and tokens to a target loss."""

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from scarce.commands.options import console

Params = Annotated[Optional[list[str]], typer.Argument(help="Task parameters, e.g. digits=3")]
Steps = Annotated[int, typer.Option(help="Optimizer steps (the paper: 10000)")]
Batch = Annotated[int, typer.Option(help="Rows per step, one example each (the paper: 1000)")]
TaskSteps = Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps (default: the paper's 10000; "
                                                  "multiplication: the reference's 156250)")]
TaskBatch = Annotated[Optional[int], typer.Option("--batch-size", help="Rows per step, one example each (default: the "
                                                  "paper's 1000; multiplication: the reference's 64)")]
Seed = Annotated[int, typer.Option(help="Model and data seed")]
RunsDir = Annotated[Path, typer.Option(help="Where the run goes")]
SetOptions = Annotated[Optional[list[str]], typer.Option("--set", help="A config override, e.g. optim.lr=3e-3 (repeatable)")]


def _train(task: str, params, steps, batch_size, seed, runs_dir, overrides, warmup=None, transfer=None, progress=True):
    from scarce.procedural.registry import parse_params
    from scarce.studies.diagnose import diagnostic_config
    from scarce.train.trainer import train

    groups = [g.strip() for g in transfer.split(",") if g.strip()] if transfer is not None else None
    config = diagnostic_config(task, parse_params(params or []), steps=steps, batch_size=batch_size, seed=seed,
                               warmup=warmup, transfer=groups, runs_dir=runs_dir, overrides=overrides or [])
    return train(config, progress=progress)


def _diagnostic_command(command: str, task: str):
    def diagnose(
        params: Params = None,
        warmup: Annotated[Optional[Path], typer.Option(help="A warm-up run to start from (same model shape)")] = None,
        transfer: Annotated[Optional[str], typer.Option(help="Groups copied from --warmup: attention,mlp,norms (default all)")] = None,
        steps: TaskSteps = None, batch_size: TaskBatch = None, seed: Seed = 0, runs_dir: RunsDir = Path("runs"),
        overrides: SetOptions = None, progress: bool = True,
    ):
        from scarce.studies.diagnose import record_diagnostic

        run_dir = _train(task, params, steps, batch_size, seed, runs_dir, overrides, warmup, transfer, progress)
        result = record_diagnostic(run_dir)
        digits = f", digit accuracy {result['digit_accuracy']:.4f}" if result["digit_accuracy"] is not None else ""
        start = f" from {result['warmup']} ({','.join(result['transfer'])})" if result["warmup"] else " from scratch"
        console.print(f"{command}{start}: accuracy {result['accuracy']:.4f} on {result['examples']} held-out examples"
                      f"{digits} → {run_dir}")
        if task == "haystack":
            console.print(haystack_reference())

    diagnose.__doc__ = f"Train the tiny diagnostic model on {task} and score it on the 4000 held-out examples."
    return diagnose


def haystack_reference() -> str:
    """The paper's haystack accuracies and the chance levels, to read a result against."""
    from scarce.studies.diagnose import HAYSTACK_CHANCE, PAPER_BATCH, PAPER_HAYSTACK, PAPER_STEPS

    paper = ", ".join(f"{arm} {accuracy:.1%}" for arm, accuracy in PAPER_HAYSTACK.items())
    chance = ", ".join(f"{label} {accuracy:.2%}" for label, accuracy in HAYSTACK_CHANCE.items())
    return f"the paper ({PAPER_STEPS:,} steps of {PAPER_BATCH:,}): {paper}; chance: {chance}"


# one command per diagnostic: command name, task name (scarce procedural list)
haystack = _diagnostic_command("haystack", "haystack")
addition = _diagnostic_command("addition", "addition")
reversed_addition = _diagnostic_command("reversed-addition", "addition_reversed")
multiplication = _diagnostic_command("multiplication", "multiplication")


def warmup(
    task: Annotated[str, typer.Argument(help="Any task of `scarce procedural list`, e.g. dyck")],
    params: Params = None, steps: Steps = 1000, batch_size: Batch = 1000, seed: Seed = 0,
    runs_dir: RunsDir = Path("runs"), overrides: SetOptions = None, progress: bool = True,
):
    """Train the diagnostic model's shape on any procedural task: a warm-up to pass to --warmup."""
    run_dir = _train(task, params, steps, batch_size, seed, runs_dir, overrides, progress=progress)
    console.print(f"warm-up on {task} → {run_dir}")


def tokens_to_loss(
    run_dirs: Annotated[list[Path], typer.Argument(help="Runs on the same data; the one without warm-up first")],
    target: Annotated[Optional[float], typer.Option(help="Validation loss to reach (default: the first run's final)")] = None,
):
    """Training tokens each run needed to reach a validation loss, as a share of the first run's."""
    from scarce.errors import ScarceError
    from scarce.studies.diagnose import data_fractions

    if target is not None and not (math.isfinite(target) and target > 0):
        raise ScarceError(f"--target is a validation loss in nats/token (finite, > 0), got {target:g}")
    target, rows = data_fractions(run_dirs, target)
    table = Table("run", "warm-up", "warm-up tokens", "tokens to target", "share of the first", "final val loss",
                  caption=f"target validation loss {target:.4f}")
    for row in rows:
        tokens = f"{row['tokens']:,}" if row["tokens"] is not None else "not reached"
        share = f"{row['fraction']:.0%}" if row["fraction"] is not None else "-"
        warmup_tokens = f"{row['warmup_tokens']:,}" if row["warmup_tokens"] else "-"
        table.add_row(row["run"], row["warmup"] or "-", warmup_tokens, tokens, share, f"{row['final_val_loss']:.4f}")
    console.print(table)

