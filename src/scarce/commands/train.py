"""`scarce train`, `scarce sizes` and `scarce quickstart`: one model, the size ladder, the main job."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from scarce.commands.options import ConfigArg, Overrides, config_and_overrides, console, load_run_config
from scarce.errors import ScarceError


def train(
    config: ConfigArg = None,
    overrides: Overrides = None,
    resume: Annotated[Optional[Path], typer.Option(help="Run directory to continue from its newest checkpoint")] = None,
    restart: Annotated[Optional[Path], typer.Option(
        help="Run directory to start over from step 0 with its saved config (a crashed run with no intact "
             "checkpoint); the old directory is set aside in RUNS_DIR/.set-aside/, not deleted")] = None,
    branch_from: Annotated[Optional[str], typer.Option(
        help="RUN_DIR@STEP: a decay branch continuing that run's training state (docs/specialization.md)")] = None,
    progress: bool = True,
):
    """Train one model for E epochs over D unique tokens."""
    from scarce.train.trainer import restart as restart_run
    from scarce.train.trainer import resume as resume_run
    from scarce.train.trainer import train as train_run

    config, overrides = config_and_overrides(config, overrides)
    if sum(option is not None for option in (resume, restart, branch_from)) > 1:
        raise ScarceError("give at most one of --resume, --restart and --branch-from")
    if restart is not None:
        if config is not None or overrides:
            raise ScarceError("--restart starts a run over with its saved config; pass no config or overrides with it")
        restart_run(restart, progress=progress)
    elif resume is not None:
        if config is not None or overrides:
            raise ScarceError("--resume continues a run with its saved config; pass no config or overrides with it")
        resume_run(resume, progress=progress)
    elif branch_from is not None:
        from scarce.train.init import branch_config

        if config is not None:
            raise ScarceError("--branch-from starts from the source run's config; pass only overrides with it")
        train_run(branch_config(branch_from, overrides), progress=progress)
    else:
        train_run(load_run_config(config, overrides), progress=progress)


def sizes(
    vocab_size: Annotated[int, typer.Option(help="Vocabulary (GPT-2's is 50258 with the mask token)")] = 8192,
    seq_len: Annotated[int, typer.Option(help="Context length, for attention FLOPs")] = 256,
):
    """The model size ladder: shape, total and non-embedding parameters, training FLOPs per token."""
    from scarce.shapes import SIZES, model_shape

    table = Table("size", "layers × d_model", "heads", "params", "non-embedding", "train FLOPs/token")
    for name in SIZES:
        shape = model_shape(name, vocab_size=vocab_size, seq_len=seq_len)
        table.add_row(
            name, f"{shape.n_layers} × {shape.d_model}", str(shape.n_heads), f"{shape.total_params():,}",
            f"{shape.non_embedding_params():,}", f"{shape.train_flops_per_token():.3g}",
        )
    console.print(table)


def quickstart(
    runs_dir: Annotated[Path, typer.Option(help="Where the runs go")] = Path("runs/quickstart"),
    quick: Annotated[bool, typer.Option(help="A seconds-long smoke version of the grid")] = False,
):
    """The data-constrained regime on the King James Bible: 6 runs, about 6 minutes on a 2-core CPU."""
    from scarce.studies.quickstart import run_quickstart

    run_quickstart(runs_dir, quick=quick, console=console)
