"""`scarce study CORPUS --flops C --out DIR`: what is my corpus worth?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from scarce.commands.options import (
    ExecutorName,
    ExecutorOptions,
    Live,
    Threads,
    Workers,
    build_executor,
    check_number,
    check_output_dir,
    console,
    resumable,
)
from scarce.errors import ScarceError


def _whole(option: str, value: Optional[float]) -> Optional[int]:
    """1e6 on the command line is a float; a token count must still be a whole number."""
    if value is None:
        return None
    check_number(value, option)
    if value != int(value):
        raise ScarceError(f"{option} must be a whole number of tokens, got {value:g}")
    return int(value)


def study(
    corpus: Annotated[str, typer.Argument(help="A catalog name (`scarce data list`) or a path to your files")],
    flops: Annotated[float, typer.Option(help="Your training compute C in FLOPs, e.g. 1e18")],
    out: Annotated[Path, typer.Option(help="Directory for the study: runs, design, results, report.md/html")],
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Recipe overrides shared by every run, e.g. data.vocab_size=8192 model.seq_len=256")] = None,
    unique_tokens: Annotated[Optional[float], typer.Option(
        help="Your unique tokens U (default: the corpus's whole training split)")] = None,
    budget_hours: Annotated[float, typer.Option(help="Wall-clock budget for the study's runs on this machine")] = 1.0,
    intervention: Annotated[Optional[list[str]], typer.Option(
        help="Only these interventions (repeat): tuned, mir, ensemble, distill, procedural, specialize; default all")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for every interval")] = 100,
    executor: ExecutorName = "local",
    workers: Workers = None,
    threads: Threads = None,
    executor_option: ExecutorOptions = None,
    live: Live = True,
):
    """What is my corpus worth? Design and run small studies, fit laws, and recommend (N, epochs, recipe) for U and C.

    Re-running the same command continues the study; it never repeats a finished run."""
    from scarce.studies.study import run

    if workers is not None and workers < 1:  # before anything is built
        raise ScarceError(f"--workers must be at least 1, got {workers}")
    check_number(flops, "--flops")
    check_number(budget_hours, "--budget-hours")
    if bootstrap < 0:
        raise ScarceError(f"--bootstrap must be at least 0, got {bootstrap}")
    check_output_dir(out, "--out")
    unique = _whole("--unique-tokens", unique_tokens)
    chosen = build_executor(executor, workers, threads, executor_option)
    with resumable():
        results = run(corpus, flops, out, unique, budget_hours, chosen, workers,
                      threads, list(overrides or []), intervention, bootstrap, console=console, live=live)
    from scarce.studies.study.estimates import format_multiplier
    from scarce.studies.study.report import headline

    table = Table("intervention", "verdict", "Δ loss, same setting", "multiplier k [95%]", header_style="bold")
    for e in results["effects"]:
        table.add_row(e["name"], e["verdict"], "–" if e["delta_data"] is None else f"{e['delta_data']:+.4f}",
                      format_multiplier(e["multiplier"]))
    console.print(table)
    console.print(headline(results))
    best = results["extrapolation"].get("best")
    console.print(f"report: {Path(out) / 'report.md'} and {Path(out) / 'report.html'}")
    if best is None:
        console.print("no recommendation: see the report's 'could not conclude' section")
    else:
        loss = best["loss"]
        console.print(f"recommended: {best['recipe']} recipe, N ≈ {best['params']['value']:.3g} non-embedding params "
                      f"({best['nearest_size']}), {best['epochs']['value']:.3g} epochs; predicted loss "
                      f"{loss['value']:.4f} nats/token")
