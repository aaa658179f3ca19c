"""Evidence at small scale: does tuned regularization stop overfitting with more epochs (Kim et al. 2025)?

At two unique-token budgets D, on the embedded corpus (KJV), with the learning rate fixed:
1. the standard recipe: weight decay 0.1, epochs swept over EPOCHS (the "epochs tuned" baseline is the
   best of that column), two seeds;
2. locally tuned weight decay and epochs: grid coordinate descent (scarce.studies.tune.coordinate_descent)
   over WEIGHT_DECAYS × EPOCHS from the baseline's best setting, on seed 0;
3. the tuned weight decay's column and the grid's strongest weight decay's column over every epoch count,
   both seeds, so the loss-vs-epochs curves can be compared: does stronger regularization keep improving
   (or stay flat) where weight decay 0.1 turns back up? (The strongest column is there because a local
   optimum can sit at 0.1 while a far corner of the grid is better.)

Loss = final validation loss (the run as configured, at the end of its cosine schedule), as the tuning
protocol judges trials. Every run belongs to one resumable study; re-running continues it and never
repeats a finished run. Not part of the tests.

    python evidence/regularization.py [--runs-dir runs/evidence-regularization] [--workers 2] [--quick]
"""

import argparse
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from scarce.atomic import write_json_atomic
from scarce.config import resolve_config
from scarce.executors import make_executor
from scarce.studies.sweep import Study, point_config
from scarce.studies.tune import coordinate_descent

BUDGETS = (25_000, 50_000)
SEEDS = (0, 1)
EPOCHS = [1, 2, 4, 8, 16, 32]
# Every other value of Kim et al.'s grid, from the standard 0.1 up: at these step counts (12-780 steps of lr
# ≤ 3e-3) a 2× step in weight decay changes the loss by less than the seed spread (a first pass moved
# 0.1 → 0.2 at 8 epochs: 5.36156 → 5.36164), so a ×2 grid stops the descent at 0.1 on noise.
WEIGHT_DECAYS = [0.1, 0.4, 1.6, 6.4]
RECIPE = [
    "model.size=micro", "model.seq_len=128", "data.vocab_size=4096", "data.eval_tokens=16384",
    "optim.lr=3e-3", "train.batch_size=16", "train.checkpoint_every=100",
]
QUICK = dict(budgets=(5_000,), seeds=(0, 1), epochs=[1, 2, 4], weight_decays=[0.1, 0.8, 6.4])
WD, EP = "optim.weight_decay", "train.epochs"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/evidence-regularization"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/evidence/regularization.json"))
    parser.add_argument("--quick", action="store_true", help="a 3-epoch, 1-budget smoke version (minutes), written to /tmp")
    args = parser.parse_args()
    budgets, seeds, epochs, decays = BUDGETS, SEEDS, EPOCHS, WEIGHT_DECAYS
    if args.quick:
        budgets, seeds, epochs, decays = QUICK.values()
        args.runs_dir, args.out = Path("/tmp/evidence-regularization-quick"), Path("/tmp/regularization-quick.json")

    started = time.perf_counter()
    console = Console(stderr=True)
    executor = make_executor("local", workers=args.workers, threads=1)
    base = resolve_config({"name": "regularization-evidence", "runs_dir": str(args.runs_dir)}, RECIPE)
    name = "regularization-evidence"
    losses: dict[tuple, float] = {}  # (budget, seed, wd, epochs) -> final validation loss

    def measure(study: Study, settings: list[tuple]) -> list[float]:
        points = [{"data.unique_tokens": b, "train.seed": s, WD: wd, EP: e} for b, s, wd, e in settings]
        outcomes = study.run([point_config(base, p, name) for p in points], points, executor, console, live=False)
        for setting, outcome in zip(settings, outcomes):
            losses[setting] = outcome.loss("final_val_loss")
        return [losses[s] for s in settings]

    budget_rows = []
    with Study(name, args.runs_dir, "sweep", {"recipe": RECIPE, "budgets": list(budgets), "seeds": list(seeds),
                                              "epochs": epochs, "weight_decays": decays}) as study:
        for budget in budgets:
            # 1. the standard recipe's column, both seeds
            measure(study, [(budget, s, 0.1, e) for s in seeds for e in epochs])
            best_epochs = min(epochs, key=lambda e: statistics.fmean(losses[budget, s, 0.1, e] for s in seeds))
            # 2. local tuning of (wd, epochs) on seed 0, from the baseline's best setting
            tuned = coordinate_descent(
                lambda pts: measure(study, [(budget, seeds[0], p[WD], p[EP]) for p in pts]),  # noqa: B023 (called in this iteration)
                {WD: decays, EP: epochs}, {WD: 0.1, EP: best_epochs},
            )
            tuned_wd = tuned.optimum[WD]
            # 3. the tuned and the strongest weight decay's columns, both seeds
            measure(study, [(budget, s, wd, e) for wd in dict.fromkeys([tuned_wd, decays[-1]]) for s in seeds for e in epochs])
            budget_rows.append(_summarize(budget, seeds, epochs, losses, best_epochs, tuned))

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {args.workers} workers × 1 thread",
        "wall_seconds": time.perf_counter() - started,
        "recipe": RECIPE, "seeds": list(seeds), "epochs": epochs, "weight_decays": decays,
        "budgets": budget_rows,
        "runs": [{"unique_tokens": b, "seed": s, "weight_decay": wd, "epochs": e, "final_val_loss": v}
                 for (b, s, wd, e), v in sorted(losses.items())],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    table = _table(budget_rows, epochs)
    print(table)
    args.out.with_suffix(".table.md").write_text(table + "\n")


def _summarize(budget, seeds, epochs, losses, best_epochs, tuned) -> dict:
    wd = tuned.optimum[WD]
    curve = lambda decay: [{"epochs": e, "per_seed": [losses[budget, s, decay, e] for s in seeds]} for e in epochs]
    strongest = max(d for (b, _, d, _) in losses if b == budget)
    at = lambda decay, e: [losses[budget, s, decay, e] for s in seeds]
    return {
        "unique_tokens": budget,
        "baseline": {"weight_decay": 0.1, "epochs": best_epochs, "per_seed": at(0.1, best_epochs)},
        "tuned": {"weight_decay": wd, "epochs": tuned.optimum[EP], "per_seed": at(wd, tuned.optimum[EP]),
                  "trials_seed0": len(tuned.trials), "path": tuned.path,
                  "neighbours": [{"point": p, "loss": v} for p, v in tuned.neighbours]},
        "curves": {str(d): curve(d) for d in dict.fromkeys([0.1, wd, strongest])},
    }


def _mean_spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {(max(values) - min(values)) / 2:.4f}"


def _table(rows: list[dict], epochs: list[int]) -> str:
    lines = []
    for row in rows:
        wd = row["tuned"]["weight_decay"]
        columns = list(row["curves"])
        names = [f"wd {c}" + (" (tuned)" if float(c) == wd else "") for c in columns]
        lines += [
            f"\nD = {row['unique_tokens']:,} unique tokens: final validation loss, mean ± half spread over seeds",
            "\n| epochs | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names),
        ]
        for i, e in enumerate(epochs):
            lines.append(f"| {e} | " + " | ".join(_mean_spread(row["curves"][c][i]["per_seed"]) for c in columns) + " |")
        base, tuned = row["baseline"], row["tuned"]
        lines.append(
            f"\nbaseline (wd 0.1, epochs tuned): {base['epochs']} epochs, {_mean_spread(base['per_seed'])}; "
            f"locally tuned (seed 0, {tuned['trials_seed0']} trials): wd {wd}, {tuned['epochs']} epochs, "
            f"{_mean_spread(tuned['per_seed'])}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
