"""`scarce runs`: list and filter runs, export them as CSV; the table that shows one line per run at any width."""

import io
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from scarce import runs
from scarce.commands.options import check_output_file, console
from scarce.errors import ScarceError
from scarce.runs_jsonl import read_runs_jsonl


def runs_(
    runs_dir: Annotated[Path, typer.Argument(help="Runs directory, or a study's runs.jsonl")] = Path("runs"),
    where: Annotated[Optional[list[str]], typer.Option(help="Filter, e.g. status=completed or epochs>=4")] = None,
    csv: Annotated[Optional[Path], typer.Option(help="Write the rows to this CSV file")] = None,
    columns: Annotated[Optional[str], typer.Option(help="Comma-separated columns to show/export")] = None,
    reindex: Annotated[bool, typer.Option(help="Rebuild the index from the run directories first")] = False,
):
    """List and filter runs; export them as CSV for `scarce fit`. A run whose process is gone shows as crashed."""
    check_output_file(csv, "--csv")
    if runs_dir.suffix == ".jsonl":  # a study's compact record (scarce.runs_jsonl): the same rows
        if reindex:
            raise ScarceError(f"--reindex rebuilds a runs directory's index; {runs_dir} is a runs.jsonl, which has none")
        rows = runs.filter_rows(read_runs_jsonl(runs_dir), where or [])
    else:
        if reindex:
            console.print(f"indexed {runs.RunIndex(runs_dir).reindex()} runs")
        rows = runs.load_runs_table(runs_dir, where or [])
    selected = columns.split(",") if columns else None
    if csv:
        runs.export_csv(rows, csv, selected)
        console.print(f"wrote {len(rows)} runs to {csv}")
    else:
        console.print(runs_table(rows, selected, width=console.width))


DEFAULT_TABLE_COLUMNS = (
    "run_id", "study", "status", "model.size", "params", "unique_tokens", "epochs", "optim.weight_decay",
    "best_val_loss", "final_val_loss", "wall_seconds",
)
# When the default columns are wider than the terminal, these are hidden first (run_id always stays):
# what a loss-versus-(N, D, E, weight decay) comparison can best do without.
HIDE_FIRST = (
    "wall_seconds", "model.size", "best_val_loss", "status", "optim.weight_decay", "epochs",
    "unique_tokens", "params", "study", "final_val_loss",
)


def _format_cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return runs.as_text(value)
    if key.endswith(("_loss", "_bpb")):
        return f"{value:.4f}"
    if key == "wall_seconds":
        return f"{value:.1f}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    # Counts (params, tokens, flops): 3 significant digits with an SI suffix.
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return str(int(value))


def _wrap_key(key: str, width: int) -> str:
    """Break a long key after its dots and underscores ("optim.weight_decay" -> "optim.\nweight_decay")
    so a header is no wider than its values, while still spelling the exact key to filter on."""
    pieces = re.findall(r"[^._]+[._]?", key) or [key]
    width = max(width, *(len(p) for p in pieces))
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def _column_widths(rows: list[dict], columns: list[str]) -> list[tuple[str, str, int, bool]]:
    """(key, header, width, numeric) per column: the width holds every value whole and the header's
    longest line, the header broken at dots and underscores to come close to the values' width."""
    specs = []
    for column in columns:
        widest = max((len(_format_cell(column, row.get(column))) for row in rows), default=1)
        header = column if column == "run_id" else _wrap_key(column, widest)
        width = max(widest, *(len(line) for line in header.split("\n")))
        numeric = column != "run_id" and any(runs.as_number(row.get(column)) is not None for row in rows)
        specs.append((column, header, width, numeric))
    return specs


def _build_table(rows: list[dict], columns: list[str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), show_edge=False, pad_edge=False, header_style="bold")
    for _, header, width, numeric in _column_widths(rows, columns):
        # no_wrap + a width that holds the widest value: a cell is never folded or cut.
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True, min_width=width)
    for row in rows:
        table.add_row(*(_format_cell(c, row.get(c)) for c in columns))
    return table


def _table_width(table: Table) -> int:
    measuring = Console(width=100_000, file=io.StringIO())
    return Measurement.get(measuring, measuring.options, table).maximum


def runs_table(rows: list[dict], columns: list[str] | None = None, width: int | None = None) -> Table:
    """A rich Table of rows for the terminal: one line per run, every value whole.

    Default columns: the compact set people compare (DEFAULT_TABLE_COLUMNS), leaving out those no row has
    a value for (so `study` shows once a run belongs to one). Given a `width` (the terminal's), columns
    that do not fit are hidden, the defaults in HIDE_FIRST order and chosen columns from the right, and
    the caption names them; run_id always stays.
    """
    if columns is None:
        columns = [c for c in DEFAULT_TABLE_COLUMNS if any(row.get(c) is not None for row in rows)] or ["run_id"]
        hide_order = [c for c in HIDE_FIRST if c in columns]
    else:
        runs.check_keys(columns, rows, "column")
        hide_order = [c for c in reversed(columns) if c != "run_id"]
    shown = list(columns)
    table = _build_table(rows, shown)
    hidden = []
    while width is not None and hide_order and _table_width(table) > width:
        hidden.append(hide_order.pop(0))
        shown.remove(hidden[-1])
        table = _build_table(rows, shown)
    if hidden:
        table.caption = f"not shown, to fit {width} columns: {', '.join(hidden)} (choose with --columns)"
        table.caption_justify = "left"
    return table
