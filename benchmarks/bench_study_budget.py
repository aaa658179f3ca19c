"""Does `scarce study` keep its wall-clock budget while another process saturates a core?

Starts `--hogs` deliberate CPU hogs (processes spinning in a Python loop; `--hog-after S` starts them S
seconds into the study, after its calibration, so that it must notice and re-plan), runs `scarce study CORPUS --flops F
--budget-hours H` on all cores (one worker of one thread per core) as a user would, and reports the
study's wall time (the whole command, from start to the report) against the budget: the target is at most
1.15x. Also reported: what the study dropped to keep the budget (from its results.json), its design, and
the load average before and after.

    python benchmarks/bench_study_budget.py [--corpus kjv] [--hours 0.15] [--hogs 1] [--out benchmarks/results/study_budget.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from machine import cpu_model

from scarce.atomic import write_json_atomic
from scarce.executors import usable_cpus

HOG = "while True: pass"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", default="kjv")
    parser.add_argument("--flops", type=float, default=1e15)
    parser.add_argument("--hours", type=float, default=0.15)
    parser.add_argument("--hogs", type=int, default=1, help="processes spinning a core each, for the study's whole run")
    parser.add_argument("--hog-after", type=float, default=0.0,
                        help="seconds after the study starts that the hogs start (after its calibration: it must re-plan)")
    parser.add_argument("--workers", type=int, default=None, help="default: every usable core")
    parser.add_argument("--note", default="", help="recorded with the results: what else ran on the machine")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "study_budget.json")
    args = parser.parse_args()
    workers = args.workers or usable_cpus()
    hogs: list[subprocess.Popen] = []
    start_hogs = threading.Timer(args.hog_after, lambda: hogs.extend(subprocess.Popen([sys.executable, "-c", HOG])
                                                                      for _ in range(args.hogs)))
    start_hogs.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-study-budget-") as work:
            out = Path(work) / "study"
            load_before = os.getloadavg()
            started = time.perf_counter()
            command = ["scarce", "study", args.corpus, "--flops", f"{args.flops:g}",
                       "--budget-hours", f"{args.hours:g}", "--workers", str(workers), "--threads", "1",
                       "--out", str(out)]
            finished = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - started
            load_after = os.getloadavg()
            if finished.returncode != 0:
                sys.exit(f"error: the study failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
            results = json.loads((out / "results.json").read_text())
    finally:
        start_hogs.cancel()
        for hog in hogs:
            hog.kill()
    budget = args.hours * 3600
    design = results["design"]
    report = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "usable": usable_cpus()},
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join([*command[:-1], "DIR"]),
        "hogs": args.hogs,
        "hogs_started_after_s": args.hog_after,
        "note": args.note,
        "budget_s": budget,
        "wall_s": wall,
        "wall_over_budget": wall / budget,
        "target": 1.15,
        "within_target": wall / budget <= 1.15,
        "study_runs_s": results["wall_seconds"]["runs"],
        "design": {k: design[k] for k in ("level", "sizes", "budgets", "epochs", "weight_decays", "members",
                                          "workers", "predicted_seconds", "dropped")},
        "dropped_while_running": {e["name"]: e["reason"] for e in results["effects"]
                                  if e["status"] == "skipped" and "to keep the" in (e["reason"] or "")},
        "dropped_grid_cells": results.get("dropped_cells", {}),
        "runs": len(results["rows"]),
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
