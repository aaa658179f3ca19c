"""`scarce procedural list` and `scarce procedural sample`: the generators, from the command line."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from scarce.commands.options import check_output_file, console

# What `procedural sample` draws at most (n × tokens per example): a few hundred MB of int64 as it is built.
MAX_SAMPLE_TOKENS = 2**25


def list_tasks():
    """The tasks, their parameters and defaults."""
    from scarce.procedural.registry import TASKS, describe

    table = Table("task", "what", "parameters: default, meaning", caption="every task also takes shuffled=true: the control")
    for name, task in TASKS.items():
        params = [f"{key}={default}: {why}" for key, (default, why) in describe(name).items() if key != "shuffled"]
        table.add_row(name, task.description, "\n".join(params) or "(none)")
    console.print(table)


def _spans(mask) -> str:
    """Positions where the mask is True, as ranges: 1-5, 9."""
    spans, start = [], None
    for i, on in enumerate([*mask, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append(f"{start}" if i - 1 == start else f"{start}-{i - 1}")
            start = None
    return ", ".join(spans) or "none"


def sample(
    task: Annotated[str, typer.Argument(help="A task name (see `scarce procedural list`)")],
    params: Annotated[Optional[list[str]], typer.Argument(help="Task parameters, e.g. k=4 length=32 shuffled=true")] = None,
    n: Annotated[int, typer.Option("-n", help="Examples to draw")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the draw")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write JSONL here (one {tokens, loss_mask} per line) instead of printing")] = None,
):
    """Draw examples: print them (counted targets in green) or write them as JSONL."""
    import numpy as np

    from scarce.atomic import write_bytes_atomic
    from scarce.errors import ScarceError
    from scarce.procedural.registry import get_task, parse_params

    if n < 1:
        raise ScarceError(f"-n must be at least 1, got {n}")
    check_output_file(out, "--out")
    chosen = get_task(task, parse_params(params or []))
    if n * chosen.example_tokens > MAX_SAMPLE_TOKENS:  # refused up front, not a MemoryError minutes later
        raise ScarceError(f"{n} examples of {chosen.example_tokens:,} tokens ({chosen.name} {chosen.params()}) are "
                          f"{n * chosen.example_tokens:,} tokens, more than the {MAX_SAMPLE_TOKENS:,} this draws at once; "
                          "lower -n or the task's length")
    examples = chosen.generate(np.random.default_rng(seed), n)
    if out is not None:
        lines = [
            json.dumps({"task": chosen.name, "params": chosen.params(), "tokens": t.tolist(), "loss_mask": m.tolist()})
            for t, m in zip(examples.tokens, examples.loss_mask)
        ]
        write_bytes_atomic(out, ("\n".join(lines) + "\n").encode())
        console.print(f"wrote {n} examples of {chosen.name} to {out}")
        return
    console.print(
        f"{chosen.name} {chosen.params()}: {chosen.example_tokens} tokens per example, vocabulary {chosen.vocab_size}, "
        f"pad {chosen.pad}; [green]green[/green]: targets whose loss counts"
    )
    for i, (tokens, mask) in enumerate(zip(examples.tokens, examples.loss_mask)):
        shown = " ".join(f"[green]{t}[/green]" if m else str(t) for t, m in zip(tokens.tolist(), mask.tolist()))
        console.print(f"\n[bold]#{i}[/bold] loss on positions {escape(_spans(mask))}\n{shown}")
