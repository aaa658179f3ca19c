"""Ensemble members per hour: vmap-batched in one process, a pool of processes, and one after another.

Each member is a short run (tiny: 4 layers, d_model 128; small: 4 × 256) on KJV; K members differ by
seed. Every executor trains the same K configs from scratch (runs already on disk are never reused: each
measurement has its own runs directory) through scarce.studies.ensemble.train_members, timed end to end
(process start, evaluation and run writing included). The comparison is fair in threads: every executor
gets the same total, `--threads` (default: all usable cores), as
  serial:  one process, one member after another, with all the threads;
  batched: one process, all members in one vmapped step, with all the threads;
  local:   `--threads` processes of one thread each, one member per process at a time.
The fastest per device type becomes scarce.studies.ensemble.EXECUTOR_BY_DEVICE's choice.

    python benchmarks/bench_ensemble.py [--members 4,8] [--sizes tiny] [--steps 12] [--out benchmarks/results/ensemble.json]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_model

from scarce.config import resolve_config
from scarce.executors import usable_cpus
from scarce.studies.ensemble import member_configs, member_executor, train_members

EXECUTORS = ("serial", "batched", "local")


def members_per_hour(executor: str, threads: int, k: int, steps: int, size: str, seq_len: int, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as runs_dir:
        base = resolve_config({"name": "bench", "runs_dir": runs_dir}, [
            f"model.size={size}", f"model.seq_len={seq_len}", "data.vocab_size=4096", f"train.batch_size={batch_size}",
            f"data.unique_tokens={steps * batch_size * seq_len + 1}", "data.eval_tokens=4096", "train.device=cpu",
        ])
        configs = member_configs(base, k)
        chosen = (member_executor("local", configs, workers=threads, threads=1) if executor == "local"
                  else member_executor(executor, configs, threads=threads, progress=False))
        started = time.perf_counter()
        train_members(configs, chosen, progress=False)
        return k / (time.perf_counter() - started) * 3600


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", default="4,8")
    parser.add_argument("--sizes", default="tiny")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=usable_cpus(), help="threads in total for every executor")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ensemble.json")
    args = parser.parse_args()
    seq_len, batch_size = 128, 16
    load_before = os.getloadavg()
    members_per_hour("serial", args.threads, 1, 2, "tiny", seq_len, batch_size)  # warm-up: builds the token store
    results = []
    for size in args.sizes.split(","):
        for k in [int(k) for k in args.members.split(",")]:
            for executor in EXECUTORS:
                rate = members_per_hour(executor, args.threads, k, args.steps, size, seq_len, batch_size)
                results.append({"size": size, "members": k, "executor": executor, "members_per_hour": rate})
                print(results[-1], flush=True)
    fastest = {}
    for size, k in sorted({(r["size"], r["members"]) for r in results}):
        group = [r for r in results if (r["size"], r["members"]) == (size, k)]
        best = max(group, key=lambda r: r["members_per_hour"])
        serial = next(r["members_per_hour"] for r in group if r["executor"] == "serial")
        fastest[f"{size}, K={k}"] = {"executor": best["executor"], "over_serial": best["members_per_hour"] / serial}
    result = {
        "config": f"context {seq_len}, vocab 4096, batch {batch_size}, {args.steps} steps per member",
        "device": "cpu",
        "threads_in_total": args.threads,
        "machine": {"cpu": cpu_model(), "usable_cpus": usable_cpus(), "torch": torch.__version__,
                    # other work on the machine while measuring (the box may be shared)
                    "load_average_1_5_15_min_before": load_before, "load_average_1_5_15_min_after": os.getloadavg()},
        "results": results,
        "fastest": fastest,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
