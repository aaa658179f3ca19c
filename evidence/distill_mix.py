"""Evidence at small scale: does sequence distillation's real/synthetic mix drawn per example differ from one
drawn per batch? (distill.mix = "example", the default, against "batch"; docs/ensembles.md.)

Self-distillation on KJV at toy scale: one teacher (the base recipe), its samples (as many tokens as the
student's unique tokens), then students from scratch at synthetic fraction w = 0.75 with each mix, over
several seeds (train.seed and train.data_seed = s: initialization, real-data order and which sequences or
batches are synthetic). Every student makes the same passes over the real data and sees the same number
of synthetic sequences; only how they are spread over batches differs. Writes docs/evidence/distill-mix.json.

    python evidence/distill_mix.py [--runs-dir runs/evidence-distill-mix] [--workers 2] [--seeds 3]
"""

import argparse
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import RunConfig, resolve_config
from scarce.executors import make_executor
from scarce.studies.distill import student_config
from scarce.studies.ensemble import member_configs, train_members
from scarce.studies.sweep import Study

RECIPE = [
    "model.size=micro", "model.seq_len=128", "data.vocab_size=4096", "data.unique_tokens=32768",
    "data.eval_tokens=16384", "optim.lr=3e-3", "optim.weight_decay=0.8", "train.epochs=4", "train.batch_size=16",
]
WEIGHT = 0.75  # the paper's self-distillation fraction
MIXES = ("example", "batch")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/evidence-distill-mix"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/evidence/distill-mix.json"))
    args = parser.parse_args()
    console, started = Console(stderr=True), time.perf_counter()
    executor = make_executor("local", workers=args.workers, threads=1)
    base = resolve_config({"name": "distill-mix", "runs_dir": str(args.runs_dir)}, RECIPE)
    (teacher,) = train_members(member_configs(base, 1, study="distill-mix-teacher"), executor, console=console)
    sampled = student_config(base, [teacher], "sequence", WEIGHT, console=console)  # samples once, reused by all
    students, points = [], []
    for seed in range(args.seeds):
        for mix in MIXES:
            data = sampled.model_dump(mode="json")
            data["train"].update(seed=seed, data_seed=seed)
            data["distill"]["mix"] = mix
            students.append(RunConfig.model_validate(data))
            points.append({"seed": seed, "mix": mix})
    with Study("distill-mix-students", args.runs_dir, "distill", {"students": points}) as study:
        outcomes = study.run(students, points, executor, console, live=False)
    losses = {mix: [runs.read_summary(o.run_dir)["final_val_loss"] for o, p in zip(outcomes, points) if p["mix"] == mix]
              for mix in MIXES}
    differences = [a - b for a, b in zip(losses["example"], losses["batch"])]  # paired by seed
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {args.workers} workers × 1 thread",
        "wall_seconds": time.perf_counter() - started, "recipe": RECIPE, "weight": WEIGHT,
        "teacher_loss": runs.read_summary(teacher)["final_val_loss"],
        "students": [{**p, "final_val_loss": runs.read_summary(o.run_dir)["final_val_loss"],
                      "steps": runs.read_summary(o.run_dir)["steps"]} for o, p in zip(outcomes, points)],
        "mean": {mix: statistics.fmean(values) for mix, values in losses.items()},
        "seed_std": {mix: statistics.stdev(values) for mix, values in losses.items()},
        "example_minus_batch": {"per_seed": differences, "mean": statistics.fmean(differences),
                                "std": statistics.stdev(differences)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print({k: result[k] for k in ("teacher_loss", "mean", "seed_std", "example_minus_batch")})


if __name__ == "__main__":
    main()
