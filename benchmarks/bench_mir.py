"""MIR's cost per step: two forward/backward passes vs one pass over the clean and masked copies stacked
along the batch, each against the plain next-token step, through the trainer's own `train_step`.

Reference config of bench_train.py (4 layers, d_model 256, 4 heads, context 256, vocab 4096, batch 16).
The three objectives are timed round-robin, `--block` steps each in a row (the first untimed: see the
loop), so the machine's drift hits them alike. A step's seconds are the median over its timed steps; a
ratio is the median over rounds of that round's ratio to the plain step (paired: drift between rounds
cancels), with the range over rounds beside it. The cheaper execution is the default
(scarce.train.objectives.MIR_EXECUTION_BY_DEVICE); 2.0 is MIR's FLOP cost.

    python benchmarks/bench_mir.py [--rounds 8] [--block 4] [--device auto] [--out benchmarks/results/mir.json]
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import scarce.train.trainer as trainer
from scarce.config import resolve_config
from scarce.train.objectives import MaskedInput, NextToken

REFERENCE = {
    "data": {"corpus": "kjv", "vocab_size": 4096, "unique_tokens": 200_000, "eval_tokens": 1024},
    "model": {"size": "small", "seq_len": 256},
    "train": {"batch_size": 16, "compile": False},
}
BATCHES_PER_EPOCH = 49  # 200,000 unique tokens in batches of 16 × 256


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block", type=int, default=4, help="steps of one objective in a row (the first untimed)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mir.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as runs_dir:
        base = {"name": "bench-mir", "runs_dir": runs_dir, **REFERENCE}
        epochs = -(-(args.rounds + 1) * 3 * args.block // BATCHES_PER_EPOCH)  # enough batches for every step
        config = resolve_config(base, ["objective.kind=mir", f"train.device={args.device}", f"train.epochs={epochs}"])
        run = trainer._set_up(config, None)  # a MIR-shaped model (one mask-token row); NTP ignores that row
        objectives = {
            "plain": NextToken(),
            "two_pass": MaskedInput(config.objective, run.shape.vocab_size, seed=0, execution="two_pass"),
            "concatenated": MaskedInput(config.objective, run.shape.vocab_size, seed=0, execution="concatenated"),
        }
        batches = iter(run.source)
        seconds = {name: [] for name in objectives}
        per_round = {name: [] for name in objectives}  # each round's median step
        for round_ in range(args.rounds + 1):
            for name, objective in objectives.items():
                run.objective = objective
                # A run repeats one objective; switching between them (concatenated doubles the batch)
                # makes the allocator re-fault its memory on the first step after a switch, a cost no
                # run pays: each objective takes `block` steps in a row and the first is not timed.
                for i in range(args.block):
                    batch = next(batches)
                    if run.device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    trainer.train_step(run, batch, lr=1e-3)
                    if run.device.type == "cuda":
                        torch.cuda.synchronize()
                    if round_ and i:  # the first round warms up
                        seconds[name].append(time.perf_counter() - start)
                if round_:
                    per_round[name].append(statistics.median(seconds[name][-(args.block - 1):]))
    plain = statistics.median(seconds["plain"])
    executions = {}
    for name in ("two_pass", "concatenated"):
        ratios = [s / p for s, p in zip(per_round[name], per_round["plain"])]
        executions[name] = {"step_seconds": statistics.median(seconds[name]), "step_time_ratio": statistics.median(ratios),
                            "step_time_ratio_range_over_rounds": [min(ratios), max(ratios)]}
    result = {
        "config": "4 layers, d_model 256, 4 heads, context 256, vocab 4096, batch 16",
        "device": run.device.type,
        "machine": {"cpu": os.uname().machine, "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": os.getloadavg()},
        "rounds": args.rounds, "steps_in_a_row": args.block,
        "plain_step_seconds": plain,
        "executions": executions,
        "default": min(executions, key=lambda name: executions[name]["step_seconds"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
