"""`scarce eval` (validation loss, or lm-eval tasks) and `scarce export` (a transformers checkpoint)."""

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from scarce.commands.options import check_number, check_output_dir, check_output_file, console
from scarce.errors import ScarceError


def eval_(
    run_dirs: Annotated[list[Path], typer.Argument(help="A run directory (several with --tasks: an ensemble)")],
    eval_tokens: Annotated[Optional[int], typer.Option(help="Validation tokens to score; default all")] = None,
    tasks: Annotated[Optional[str], typer.Option(help="lm-eval tasks, comma-separated (e.g. kjv); needs the eval extra")] = None,
    include_path: Annotated[Optional[list[Path]], typer.Option(help="A folder of your own lm-eval task YAMLs")] = None,
    limit: Annotated[Optional[float], typer.Option(help="Documents per task (a fraction if below 1)")] = None,
    num_fewshot: Optional[int] = None,
    batch_size: Optional[int] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write lm-eval's results as JSON here")] = None,
):
    """Score a run's newest checkpoint on its validation split (nats/token and bits/byte), or with --tasks on lm-eval tasks."""
    check_number(limit, "--limit")
    check_number(num_fewshot, "--num-fewshot", inclusive=True)
    check_number(batch_size, "--batch-size", minimum=1, inclusive=True)
    check_number(eval_tokens, "--eval-tokens", minimum=1, inclusive=True)
    if limit is not None and limit > 1 and limit != int(limit):
        raise ScarceError(f"--limit is a number of documents (a whole number) or a fraction below 1, got {limit:g}")
    check_output_file(out, "--out")
    if tasks is not None:
        return _eval_tasks(run_dirs, tasks, include_path or [], limit, num_fewshot, batch_size, out)
    from scarce.evals.run import evaluate_run

    if len(run_dirs) != 1:
        raise ScarceError("scoring validation loss takes one run directory; several make an ensemble only with --tasks")
    run_dir = run_dirs[0]
    result = evaluate_run(run_dir, eval_tokens)
    console.print(
        f"{run_dir}: val loss {result['val_loss']:.4f} nats/token, {result['val_bpb']:.4f} bits/byte "
        f"over {result['val_tokens']:,} tokens (checkpoint {result['checkpoint']})"
    )
    for key in (k for k in result if k.startswith("val_loss.")):  # a domain run: each domain's own held-out loss
        console.print(f"  {key.removeprefix('val_loss.')}: {result[key]:.4f} nats/token, {result['val_bpb.' + key[9:]]:.4f} bits/byte")


def _eval_tasks(run_dirs: list[Path], tasks: str, include_paths: list[Path], limit: float | None,
                num_fewshot: int | None, batch_size: int | None, out: Path | None) -> None:
    from scarce.evals.harness.runner import results_rows, run_tasks

    names = [task.strip() for task in tasks.split(",") if task.strip()]
    results = run_tasks(
        run_dirs, names, include_paths, limit=int(limit) if limit and limit >= 1 else limit,
        num_fewshot=num_fewshot, batch_size=batch_size, out=out,
    )
    title = " + ".join(map(str, run_dirs)) + (" (ensemble)" if len(run_dirs) > 1 else "")
    table = Table("task", "metric", "value", "± stderr", title=title)
    for task, metric, value, stderr in results_rows(results):
        table.add_row(task, metric, f"{value:.4f}", f"{stderr:.4f}" if stderr is not None else "")
    console.print(table)
    if out is not None:
        console.print(f"wrote {out}")


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory")],
    hf: Annotated[Path, typer.Option(help="Output directory for a Hugging Face transformers checkpoint")],
):
    """Export a run's newest checkpoint as a standard transformers model and tokenizer (needs the hf extra)."""
    check_output_dir(hf, "--hf")
    from scarce.export import export_run

    console.print(f"wrote {export_run(run_dir, hf)}")
