"""Sweep throughput: runs/hour for a grid of tiny runs, one sequential process against local process pools.

The grid is `--runs` micro-model runs (the same budget, seeds 0..runs-1: equal work each), run through
the real executors: `serial` (this process, torch's own thread count, then 1 thread) and `local` with 1, 2, 4, ...
workers up to the usable cores, each with cores / workers threads. Wall time includes starting the pool,
as a sweep pays it. The machine's load average is recorded before and after each measurement: the
numbers mean little if other work was running.

    python benchmarks/bench_sweep.py [--runs 8] [--out benchmarks/results/sweep.json]
"""

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from machine import cpu_model

from scarce.atomic import write_json_atomic
from scarce.config import resolve_config
from scarce.data.store import prepare_store
from scarce.executors import Job, LocalExecutor, SerialExecutor, usable_cpus

# micro model, 64-token context, 16,384 unique tokens: 32 steps at batch 8, a few seconds a run
TINY = {
    "data": {"corpus": "kjv", "vocab_size": 512, "unique_tokens": 16_384, "eval_tokens": 2048},
    "model": {"size": "micro", "seq_len": 64},
    "train": {"batch_size": 8, "epochs": 1},
}



def layouts(cpus: int) -> list[tuple[str, int, int | None]]:
    """(executor, workers, threads per worker): sequential first (torch's threads, then one), then pools
    of 1, 2, 4, ... workers sharing the cores."""
    found = [("serial", 1, None), ("serial", 1, 1)]
    workers = 1
    while workers <= cpus:
        found.append(("local", workers, cpus // workers))
        workers *= 2
    if found[-1][1] != cpus:
        found.append(("local", cpus, 1))
    return found


def measure(executor, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as runs_dir:
        configs = [resolve_config({**TINY, "name": f"bench-{seed}", "runs_dir": runs_dir}, [f"train.seed={seed}"])
                   for seed in range(runs)]
        jobs = [Job(config, log_path=Path(runs_dir) / "runs.log") for config in configs]  # output off the terminal
        load_before = os.getloadavg()
        start = time.perf_counter()
        results = executor.run(jobs)
        seconds = time.perf_counter() - start
    failed = [r.error for r in results if r.status != "completed"]
    if failed:
        raise SystemExit(f"benchmark runs failed: {failed[:3]}")
    return {"seconds": seconds, "runs_per_hour": runs / seconds * 3600,
            "load_before": list(load_before), "load_after": list(os.getloadavg())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sweep.json")
    args = parser.parse_args()

    cpus = usable_cpus()
    store = prepare_store(TINY["data"]["corpus"], vocab_size=TINY["data"]["vocab_size"])  # tokenized once, not timed
    rows = []
    for name, workers, threads in layouts(cpus):
        executor = SerialExecutor(threads=threads) if name == "serial" else LocalExecutor(workers, threads, gpus=[])
        row = {"executor": name, "workers": workers, "threads_per_worker": threads or torch.get_num_threads(),
               **measure(executor, args.runs)}
        rows.append(row)
        print(f"{name:6s} {workers:2d} workers × {row['threads_per_worker']:2d} threads: "
              f"{row['runs_per_hour']:7.0f} runs/hour ({row['seconds']:.1f} s; load {row['load_before'][0]:.1f})")
    fastest = max(rows, key=lambda r: r["runs_per_hour"])
    sequential = rows[0]["runs_per_hour"]
    result = {
        "what": f"{args.runs} runs of a micro model (32 steps, {TINY['data']['unique_tokens']:,} unique tokens), "
                "wall time including the pool's start-up",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "usable_cpus": cpus, "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__, "store": store.path.name},
        "results": [{**row, "speedup_vs_sequential": row["runs_per_hour"] / sequential} for row in rows],
        "fastest": {k: fastest[k] for k in ("executor", "workers", "threads_per_worker", "runs_per_hour")},
    }
    write_json_atomic(args.out, result)
    print(json.dumps(result["fastest"]))


if __name__ == "__main__":
    main()
