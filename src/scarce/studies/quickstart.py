"""`scarce quickstart`: the data-constrained regime on the King James Bible, on a CPU, in minutes.

One small model on one small budget of unique tokens, trained for 1, 4 and 16 epochs with the usual
weight decay (0.1) and a strong one (1.0, ten times more). The grid was sized for time, not tuned
for a result: whatever it shows is printed as measured.
"""

from pathlib import Path

from rich.console import Console
from rich.table import Table

from scarce import runs
from scarce.config import resolve_config
from scarce.report import plot_loss_curves
from scarce.train.trainer import train

FULL = {
    "epochs": (1, 4, 16),
    "weight_decays": (0.1, 1.0),
    "base": {
        "data": {"corpus": "kjv", "vocab_size": 4096, "unique_tokens": 50_000, "eval_tokens": 16_384},
        "model": {"size": "tiny", "seq_len": 128},
        "optim": {"lr": 3e-3, "schedule": "cosine", "warmup_fraction": 0.02},
        "train": {"batch_size": 16},
    },
}
# seconds-long version of the same grid, for tests and smoke checks
QUICK = {
    "epochs": (1, 2),
    "weight_decays": (0.1, 1.0),
    "base": {
        "data": {"corpus": "kjv", "vocab_size": 512, "unique_tokens": 8_192, "eval_tokens": 2_048},
        "model": {"size": "micro", "seq_len": 64},
        "optim": {"lr": 3e-3},
        "train": {"batch_size": 8},
    },
}


def run_quickstart(runs_dir: Path, quick: bool = False, console: Console | None = None) -> list[Path]:
    console = console or Console()
    grid = QUICK if quick else FULL
    configs = []
    for weight_decay in grid["weight_decays"]:
        for epochs in grid["epochs"]:
            base = {**grid["base"], "name": f"quickstart-e{epochs}-wd{weight_decay}", "runs_dir": str(runs_dir)}
            configs.append(resolve_config(base, [f"train.epochs={epochs}", f"optim.weight_decay={weight_decay}"]))
    run_dirs = []
    for i, config in enumerate(configs, 1):
        console.rule(f"run {i}/{len(configs)}: {config.train.epochs} epochs, weight decay {config.optim.weight_decay}")
        # about a dozen validation points per curve, whatever its length
        steps = (config.data.unique_tokens - 1) // config.model.seq_len * config.train.epochs // config.train.batch_size
        config.train.eval_every = config.train.log_every = max(1, steps // 12)
        run_dirs.append(train(config))

    summaries = {(c.optim.weight_decay, c.train.epochs): runs.read_summary(d) for c, d in zip(configs, run_dirs)}
    table = Table(title=f"validation loss (nats/token) on KJV, {configs[0].data.unique_tokens:,} unique tokens")
    table.add_column("weight decay")
    for epochs in grid["epochs"]:
        table.add_column(f"{epochs} epochs", justify="right")
    for weight_decay in grid["weight_decays"]:
        cells = [summaries[weight_decay, epochs] for epochs in grid["epochs"]]
        table.add_row(str(weight_decay), *(f"{s['final_val_loss']:.3f} (best {s['best_val_loss']:.3f})" for s in cells))
    console.print(table)

    curves = {
        f"{c.train.epochs} ep, wd {c.optim.weight_decay}": runs.read_metrics(d) for c, d in zip(configs, run_dirs)
    }
    plot = plot_loss_curves(curves, Path(runs_dir) / "quickstart-loss-curves.png", title="KJV: epochs × weight decay")
    console.print(
        f"runs are in {runs_dir}/ (list them with `scarce runs {runs_dir}`); loss curves: {plot}\n"
        f"fit a law to them with `scarce fit --runs {runs_dir} ...` (see docs/laws.md)"
    )
    return run_dirs
