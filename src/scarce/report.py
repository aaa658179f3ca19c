"""Plots and tables people look at."""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402

from scarce.atomic import write_bytes_atomic  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Write the figure atomically (a reader never sees half a PNG) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)


def plot_loss_curves(curves: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Validation (solid) and training (faint) loss against epochs, one line per run.

    `curves` maps a label to that run's metrics records (as in metrics.jsonl).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, records) in enumerate(curves.items()):
        color = f"C{i % 10}"
        train = [(r["epochs_completed"], r["train_loss"]) for r in records if "train_loss" in r]
        val = [(r["epochs_completed"], r["val_loss"]) for r in records if "val_loss" in r and "epochs_completed" in r]
        if train:
            ax.plot(*zip(*train), color=color, alpha=0.25, linewidth=1)
        if val:
            ax.plot(*zip(*val), color=color, marker="o", markersize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epochs over the unique tokens")
    ax.set_ylabel("loss (nats/token); solid: validation, faint: training")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
