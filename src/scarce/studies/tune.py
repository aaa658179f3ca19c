"""Locally optimal tuning: grid coordinate descent over learning rate, weight decay and epochs.

For a fixed model and unique-token budget D, start from the config's values (snapped to the grid),
train every one-step grid neighbour (each axis one grid index up or down), move to the best neighbour
if it beats the current setting, and stop when none does. The setting reached is *locally optimal*:
none of its neighbours has a lower validation loss. This is the tuning protocol of Kim, Kotha, Liang
and Hashimoto, "Pre-training under infinite compute" (arXiv 2509.14786), whose grids are the defaults.

Trials are judged by `final_val_loss` by default: the loss of the run as configured, at the end of its
cosine schedule, as the paper reports. (`best_val_loss` would reward a long run for an early
evaluation, i.e. early stopping, which is not the setting being tuned.) Every trial is a run of one
study in the run store, so a tuning re-run (or interrupted and restarted) reuses every trial it has.

`coordinate_descent` is the optimizer alone, with the evaluation injected: it can be tested and reused
on any objective without training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from scarce.config import RunConfig
from scarce.errors import ScarceError
from scarce.executors import Executor
from scarce.report import plt, save_figure
from scarce.studies.sweep import METRICS, Study, check_config_key, check_study_name, default_name, point_config

# Kim et al.'s grids (arXiv 2509.14786, section 2).
DEFAULT_AXES: dict[str, list[float | int]] = {
    "optim.lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
    "optim.weight_decay": [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4],
    "train.epochs": [1, 2, 4, 8, 16, 32, 64],
}

Evaluate = Callable[[list[dict[str, Any]]], list[float]]


@dataclass
class TuneResult:
    axes: dict[str, list]
    start: dict[str, Any]  # the starting setting, snapped to the grid
    optimum: dict[str, Any]  # the locally optimal setting
    loss: float  # its loss
    neighbours: list[tuple[dict[str, Any], float]]  # its one-step neighbours and their losses, best first
    trials: list[tuple[dict[str, Any], float]]  # every setting evaluated, in order
    path: list[dict[str, Any]]  # the settings the descent moved through, start first
    # axes on whose grid edge the optimum lies, with the way to extend: {axis: "below" | "above"}. Its
    # neighbour that way was never tried, so it is optimal within the grid only.
    edges: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        pairs = lambda items: [{"point": point, "loss": _finite(loss)} for point, loss in items]
        return {
            "axes": self.axes, "start": self.start, "optimum": self.optimum, "loss": _finite(self.loss),
            "neighbours": pairs(self.neighbours), "trials": len(self.trials), "path": self.path, "edges": self.edges,
        }

    def extend(self) -> str:
        """How to extend the grid past the edges the optimum lies on ("" when it lies on none)."""
        return "; ".join(f"{axis} at the grid's {'smallest' if way == 'below' else 'largest'} value "
                         f"{self.optimum[axis]}: extend the grid {way} it" for axis, way in self.edges.items())


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------- the optimizer


def snap(value: float, grid: Sequence[float]) -> int:
    """Index of the grid value nearest to `value`. The grids are geometric, so a positive value snaps to
    the positive grid value nearest by ratio; 0 (no weight decay) snaps to 0, else to the smallest value."""
    def distance(g: float) -> float:
        if value > 0:
            return abs(math.log(value / g)) if g > 0 else math.inf
        return abs(value - g)
    return min(range(len(grid)), key=lambda i: (distance(grid[i]), i))


def neighbours(index: tuple[int, ...], sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """The one-step grid neighbours of `index`: each axis moved one index down or up, within the grid."""
    found = []
    for axis, size in enumerate(sizes):
        for step in (-1, 1):
            moved = index[axis] + step
            if 0 <= moved < size:
                found.append(index[:axis] + (moved,) + index[axis + 1:])
    return found


def coordinate_descent(evaluate: Evaluate, axes: dict[str, Sequence], start: dict[str, Any]) -> TuneResult:
    """Move through the grid to a setting none of whose one-step neighbours has a lower loss.

    `evaluate(points)` gets a batch of settings (dicts keyed like `axes`) never asked for before and
    returns their losses (inf or nan for a failed trial); a whole neighbourhood is one batch so it can
    run in parallel. Ties keep the current setting, so the descent always ends.
    """
    names, grids = list(axes), [list(axes[name]) for name in axes]
    as_point = lambda index: {name: grid[i] for name, grid, i in zip(names, grids, index)}
    losses: dict[tuple[int, ...], float] = {}

    def measure(indices: list[tuple[int, ...]]) -> None:
        new = list(dict.fromkeys(i for i in indices if i not in losses))
        if not new:
            return
        values = evaluate([as_point(i) for i in new])
        if len(values) != len(new):
            raise ValueError(f"evaluate returned {len(values)} losses for {len(new)} settings")
        for index, value in zip(new, values):
            losses[index] = value if value is not None and not math.isnan(value) else math.inf

    current = tuple(snap(start[name], grid) for name, grid in zip(names, grids))
    path = [current]
    while True:
        around = neighbours(current, [len(g) for g in grids])
        measure([current, *around])
        best = min(around, key=lambda i: losses[i], default=current)
        if losses[best] < losses[current]:
            current = best
            path.append(current)
            continue
        return TuneResult(
            axes={name: grid for name, grid in zip(names, grids)}, start=as_point(path[0]), optimum=as_point(current),
            loss=losses[current], neighbours=sorted(((as_point(i), losses[i]) for i in around), key=lambda p: p[1]),
            trials=[(as_point(i), loss) for i, loss in losses.items()], path=[as_point(i) for i in path],
            edges=_edges(names, grids, current),
        )


def _edges(names: list[str], grids: list[list], index: tuple[int, ...]) -> dict[str, str]:
    """The axes where `index` sits on the grid's first or last value, with a value beyond it (a one-value
    axis is fixed, not searched; nothing lies below a weight decay of 0)."""
    edges = {}
    for name, grid, i in zip(names, grids, index):
        if len(grid) > 1 and i == 0 and grid[0] > 0:
            edges[name] = "below"
        elif len(grid) > 1 and i == len(grid) - 1:
            edges[name] = "above"
    return edges


# ---------------------------------------------------------------- tuning real runs


def check_axes(axes: dict[str, Sequence], base: RunConfig) -> dict[str, list]:
    """Sorted, distinct, valid grid values for each axis (each checked against the config)."""
    checked = {}
    for key, values in axes.items():
        check_config_key(key, base, flag="axis")
        values = sorted(values)
        if not values:
            raise ScarceError(f"the {key} grid is empty; give at least one value")
        if len(set(values)) != len(values):
            raise ScarceError(f"the {key} grid lists a value twice: {values}")
        for value in values:
            point_config(base, {key: value}, "check")  # a ScarceError naming the key for a bad value
        checked[key] = values
    return checked


def tune(base: RunConfig, executor: Executor, axes: dict[str, Sequence] | None = None, name: str | None = None,
         metric: str = "final_val_loss", console: Console | None = None, live: bool = True) -> TuneResult:
    """Locally optimal (lr, weight decay, epochs) for base's model and data, each trial a run of study `name`.

    The default name depends on the base config without the tuned keys, so tuning the same model and
    budget again (with other grids or another start) reuses the trials already run.
    """
    console = console or Console(stderr=True)
    if metric not in METRICS:
        raise ScarceError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    axes = check_axes(axes or DEFAULT_AXES, base)
    if name:
        check_study_name(name)
    else:
        anchor = point_config(base, {key: values[0] for key, values in axes.items()}, "tune")
        name = default_name(f"{base.name}-tune", anchor, sorted(axes))
    start = {key: _get(base, key) for key in axes}
    spec = {"axes": axes, "metric": metric, "base_config": base.model_dump(mode="json")}
    trained = 0
    with Study(name, base.runs_dir, "tune", spec) as study:

        def evaluate(points: list[dict[str, Any]]) -> list[float]:
            nonlocal trained
            configs = [point_config(base, point, name) for point in points]
            outcomes = study.run(configs, points, executor, console, metric=metric, live=live)
            trained += sum(not o.reused for o in outcomes)
            return [o.loss(metric) for o in outcomes]

        console.print(f"tune {name}: {metric} over {', '.join(f'{k} ({len(v)} values)' for k, v in axes.items())} "
                      f"on {executor.name}; manifest {study.manifest_path}")
        result = coordinate_descent(evaluate, axes, start)
        heatmap = plot_heatmap(result, study.dir / "heatmap.png", metric) if len(axes) == 3 else None
        study.manifest["result"] = {**result.to_json(), "trained_this_time": trained,
                                    "heatmap": heatmap.name if heatmap else None}
    console.print(neighbourhood_table(result, metric, title=f"tune {name}"))
    moved = {k: f"{start[k]} → {v}" for k, v in result.start.items() if v != start[k]}
    console.print(
        (f"start snapped to the grid: {moved}\n" if moved else "")
        + ("locally optimal" if not result.edges else "optimal within the grid, on its edge,")
        + f" after {len(result.path) - 1} move(s): {_setting(result.optimum)}, {metric} "
        + (f"{result.loss:.4f}" if math.isfinite(result.loss) else "none (every trial failed)")
        + (f"\n[yellow]warning:[/yellow] {result.extend()} (a neighbour there was never tried)" if result.edges else "")
        + f"\n{len(result.trials)} trials ({trained} trained now, {len(result.trials) - trained} reused); "
        + (f"heat map {heatmap}" if heatmap else "")
    )
    return result


def _get(config: RunConfig, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _setting(point: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in point.items())


def neighbourhood_table(result: TuneResult, metric: str, title: str | None = None) -> Table:
    """The optimum and the neighbours it beat, best first, with each one's loss and gap to the optimum."""
    table = Table(*result.axes, metric, "vs optimum", title=title, header_style="bold")
    rows = sorted([(result.optimum, result.loss), *result.neighbours], key=lambda p: p[1])
    for point, loss in rows:
        gap = "optimum" if point == result.optimum else (f"+{loss - result.loss:.4f}" if math.isfinite(loss) else "failed")
        table.add_row(*(str(point[k]) for k in result.axes), f"{loss:.4f}" if math.isfinite(loss) else "-", gap,
                      style="bold green" if point == result.optimum else None)
    return table


def plot_heatmap(result: TuneResult, path: Path, metric: str) -> Path:
    """The loss over the last two axes (weight decay × epochs) at the optimum's value of the first (lr);
    cells not evaluated are blank, the optimum is boxed."""
    fixed, rows, cols = list(result.axes)
    row_values, col_values = result.axes[rows], result.axes[cols]
    grid = np.full((len(row_values), len(col_values)), np.nan)
    for point, loss in result.trials:
        if point[fixed] == result.optimum[fixed] and math.isfinite(loss):
            grid[row_values.index(point[rows]), col_values.index(point[cols])] = loss
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(col_values), 1.0 + 0.55 * len(row_values)))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label=f"{metric} (nats/token)")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for r, c in zip(*np.nonzero(np.isfinite(grid))):
        ax.text(c, r, f"{grid[r, c]:.3f}", ha="center", va="center", fontsize=7,
                color="white" if grid[r, c] > middle else "black")
    r, c = row_values.index(result.optimum[rows]), col_values.index(result.optimum[cols])
    ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(col_values)), [str(v) for v in col_values])
    ax.set_yticks(range(len(row_values)), [str(v) for v in row_values])
    ax.set_xlabel(cols)
    ax.set_ylabel(rows)
    ax.set_title(f"{metric} at {fixed}={result.optimum[fixed]} (boxed: locally optimal)", fontsize=9)
    return save_figure(fig, path)


__all__ = ["DEFAULT_AXES", "TuneResult", "check_axes", "coordinate_descent", "neighbourhood_table", "neighbours",
           "plot_heatmap", "snap", "tune"]
