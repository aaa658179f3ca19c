"""Procedural generator throughput: tokens generated per second, per task, at its default parameters.

Each task draws examples in chunks of about 2M tokens (k-Dyck at k = 64, length 2048: 1024 sequences per
chunk). `tokens_per_second` is the median over repeats of tokens per second of the process's CPU time:
generation is single-threaded NumPy, so that is the wall-clock rate on an idle core, and it stays
meaningful on a shared box (whose wall-clock rates and load average are written alongside). Also measured:
each task's shuffled control, and the whole ProceduralSource path the trainer sees
(k-Dyck into rows of 257 tokens, torch tensors out). Targets: k-Dyck >= 5M tokens/s, every task >= 100×
the reference training config's tokens/s (benchmarks/results/train.json).

    python benchmarks/bench_procedural.py [--repeats 5] [--out benchmarks/results/procedural.json]
"""

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from machine import cpu_model

from scarce.atomic import write_json_atomic
from scarce.data.procedural import ProceduralSource
from scarce.procedural.registry import TASKS, get_task

CHUNK_TOKENS = 2**21
RESULTS = Path(__file__).parent / "results"



def rates(task, repeats: int) -> tuple[list[float], list[float]]:
    """Tokens per second of CPU time and of wall-clock time, per repeat. Generation is single-threaded
    NumPy, so on an idle core the two agree; on a shared box the CPU-time figure is the generator's own."""
    n = max(1, CHUNK_TOKENS // task.example_tokens)
    rng = np.random.default_rng(0)
    task.generate(rng, min(n, 64))  # warm caches (held-out sets, imports)
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        task.generate(rng, n)
        cpu.append(n * task.example_tokens / (time.process_time() - cpu_start))
        wall.append(n * task.example_tokens / (time.perf_counter() - wall_start))
    return cpu, wall


def source_rate(repeats: int) -> float:
    """Tokens per CPU second through ProceduralSource: k-Dyck into rows of 257, torch tensors out."""
    source = ProceduralSource(get_task("dyck"), seq_len=256, batch_size=1024, steps=repeats, seed=0)
    start = time.process_time()
    for _ in source:
        pass
    return repeats * 1024 * 257 / (time.process_time() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "procedural.json")
    args = parser.parse_args()

    per_task, spread, wall, shuffled = {}, {}, {}, {}
    for name in TASKS:
        task = get_task(name)
        cpu, wall_clock = rates(task, args.repeats)
        per_task[name], spread[name], wall[name] = statistics.median(cpu), [min(cpu), max(cpu)], statistics.median(wall_clock)
        shuffled[name] = statistics.median(rates(task.model_copy(update={"shuffled": True}), max(2, args.repeats // 2))[0])
        print(f"{name:18s} {per_task[name] / 1e6:8.2f}M tokens/s (wall {wall[name] / 1e6:6.2f}M)   "
              f"shuffled {shuffled[name] / 1e6:8.2f}M", flush=True)

    train_file = RESULTS / "train.json"
    reference = json.loads(train_file.read_text())["tokens_per_second"] if train_file.exists() else None
    result = {
        "tokens_per_second": per_task,
        "tokens_per_second_min_max": spread,
        "wall_clock_tokens_per_second": wall,
        "load_average_1min": os.getloadavg()[0],
        "shuffled_tokens_per_second": shuffled,
        "source_tokens_per_second": {"dyck k=64 length=2048 → rows of 257, batch 1024": source_rate(args.repeats)},
        "params": {name: get_task(name).params() for name in TASKS},
        "targets": {
            "dyck_tokens_per_second": 5e6,
            "reference_training_tokens_per_second": reference,
            "every_task_at_least": None if reference is None else 100 * reference,
            "slowest_task": min(per_task, key=per_task.get),
            "slowest_over_reference_training": None if reference is None else min(per_task.values()) / reference,
        },
        "machine": {
            "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "repeats": args.repeats,
        "chunk_tokens": CHUNK_TOKENS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(json.dumps(result["targets"], indent=2))


if __name__ == "__main__":
    main()
