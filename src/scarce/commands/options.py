"""What the commands share: the console, the argument and option types, and the small steps every command
that reads a config or runs many runs takes the same way."""

import contextlib
import math
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from scarce.errors import ScarceError

console = Console()

ConfigArg = Annotated[Optional[Path], typer.Argument(help="TOML config (see examples/); omit for defaults")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides, e.g. optim.weight_decay=0.8")]
ExecutorName = Annotated[str, typer.Option("--executor", help="local (process pool), serial (this process), submitit (Slurm) or ray")]
Workers = Annotated[Optional[int], typer.Option(help="Runs at once; default: local one per core (one per GPU on CUDA), "
                                                     "submitit/ray all")]
Threads = Annotated[Optional[int], typer.Option(help="Torch threads (CPUs) per run; default 1 (local on CUDA: cores / workers)")]
ExecutorOptions = Annotated[Optional[list[str]], typer.Option(
    "--executor-option", help="KEY=VALUE for the executor, e.g. slurm_partition=gpu, cluster=local, address=auto")]
Name = Annotated[Optional[str], typer.Option(
    help="Study name (runs get study=NAME); default: derived from the config, so the same command resumes")]
Live = Annotated[bool, typer.Option(help="Show the live display of runs done / running / failed")]


def config_and_overrides(config: Optional[Path], overrides: Optional[list[str]]) -> tuple[Optional[Path], list[str]]:
    """A first argument with '=' that names no file is an override (`scarce train model.size=micro`), so a
    config file is optional."""
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not config.exists():
        return None, [str(config), *overrides]
    return config, overrides


def load_run_config(config: Optional[Path], overrides: Optional[list[str]]):
    """The config a command runs: the TOML file (or the defaults) with the overrides."""
    from scarce.config import load_config

    return load_config(*config_and_overrides(config, overrides))


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


def build_executor(name: str, workers: Optional[int], threads: Optional[int], options: Optional[list[str]]):
    from scarce.executors import make_executor

    return make_executor(name, workers=workers, threads=threads, **executor_options(options))


@contextlib.contextmanager
def resumable():
    """Ctrl-C during a study: say that finished runs are kept and the same command resumes; exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: finished runs are kept; run the same command again to resume")
        raise typer.Exit(130) from None


def check_output_file(path: Optional[Path], option: str, suffixes: tuple[str, ...] = ()) -> None:
    """Before any work: the file `option` names can be written (its folder exists and is writable, it is not
    a folder, it has one of `suffixes` when given), so a long computation never ends in a failed write."""
    if path is None:
        return
    if suffixes and path.suffix.lower() not in suffixes:
        raise ScarceError(f"{option} {path}: the file name must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ScarceError(f"{option} {path} is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise ScarceError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ScarceError(f"{option} {path} cannot be written: {folder if not path.exists() else path} is read-only")


def check_output_dir(path: Optional[Path], option: str) -> None:
    """Before any work: the directory `option` names is one, or can be made under a writable folder."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise ScarceError(f"{option} {path} is a file; give a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ScarceError(f"{option} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ScarceError(f"{option} {path} cannot be written: {existing} is read-only")


def check_number(value: Optional[float], option: str, minimum: float = 0.0, inclusive: bool = False) -> None:
    """A finite number above `minimum` (or at least it, `inclusive`); None passes (the option was not given)."""
    if value is None:
        return
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        bound = f"at least {minimum:g}" if inclusive else f"above {minimum:g}"
        raise ScarceError(f"{option} must be a finite number {bound}, got {value:g}")


# what matplotlib writes without extra packages (report.save_figure picks the format from the suffix)
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".eps", ".ps", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
