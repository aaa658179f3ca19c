"""Evidence at small scale: does masked-input regularization (MIR) help on the embedded corpus, on a CPU?

The same recipe (tiny model, 8 epochs, weight decay 1.0, cosine) with and without MIR at three unique-token
budgets, two seeds each, run as one resumable sweep; then the table of best validation losses (mean and
half the spread over seeds) and MIR's effective-data multiplier k from one joint power-law fit in D
(L = E + B / D^β with the MIR points' D replaced by k·D), with a bootstrap interval.

    python evidence/mir.py [--runs-dir runs/evidence-mir] [--workers 2] [--out docs/evidence/mir.json]

Re-running continues the sweep; it never repeats a finished run. Not part of the tests.
"""

import argparse
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import resolve_config
from scarce.executors import make_executor
from scarce.laws import PowerLaw, effective_data_multiplier
from scarce.studies.sweep import run_sweep

BUDGETS = (25_000, 50_000, 100_000)
SEEDS = (0, 1)
RECIPE = [
    "model.size=tiny", "model.seq_len=128", "data.vocab_size=4096", "data.eval_tokens=16384",
    "optim.lr=3e-3", "optim.weight_decay=1.0", "train.epochs=8", "train.batch_size=16", "train.eval_every=20",
    "train.checkpoint_every=100",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/evidence-mir"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("docs/evidence/mir.json"))
    args = parser.parse_args()

    started = time.perf_counter()
    base = resolve_config({"name": "mir-evidence", "runs_dir": str(args.runs_dir)}, RECIPE)
    grid = [
        "objective.kind=ntp,mir",
        "data.unique_tokens=" + ",".join(map(str, BUDGETS)),
        "train.seed=" + ",".join(map(str, SEEDS)),
    ]
    outcomes = run_sweep(base, grid, make_executor("local", workers=args.workers, threads=1), name="mir-evidence", live=False)

    rows = []
    points = {"ntp": ({"x": []}, []), "mir": ({"x": []}, [])}
    for kind in ("ntp", "mir"):
        for budget in BUDGETS:
            losses, trained = [], None
            for outcome in outcomes:
                if outcome.point["objective.kind"] == kind and outcome.point["data.unique_tokens"] == budget:
                    summary = runs.read_summary(outcome.run_dir)
                    losses.append(summary["best_val_loss"])
                    trained = summary["unique_tokens"]
                    points[kind][0]["x"].append(trained)
                    points[kind][1].append(summary["best_val_loss"])
            rows.append({
                "objective": kind, "unique_tokens": trained, "best_val_losses": losses,
                "mean": statistics.fmean(losses), "half_spread": (max(losses) - min(losses)) / 2,
            })
    k, _ = effective_data_multiplier(PowerLaw(), points["ntp"], points["mir"], bootstrap=args.bootstrap)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {args.workers} workers × 1 thread",
        "wall_seconds": time.perf_counter() - started,
        "recipe": RECIPE, "seeds": list(SEEDS), "rows": rows,
        "multiplier_k": {"value": float(k.value), "interval": [float(v) for v in k.interval]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    lines = ["| objective | unique tokens | best val loss (mean ± half spread over seeds) | per seed |", "| --- | --- | --- | --- |"]
    for row in rows:
        seeds = ", ".join(f"{v:.4f}" for v in row["best_val_losses"])
        lines.append(f"| {row['objective']} | {row['unique_tokens']:,} | {row['mean']:.4f} ± {row['half_spread']:.4f} | {seeds} |")
    lines.append(f"\nMIR's effective-data multiplier k = {k.value:.3f}, {args.bootstrap}-resample interval "
                 f"[{k.interval[0]:.3f}, {k.interval[1]:.3f}]")
    print("\n".join(lines))
    args.out.with_suffix(".table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
