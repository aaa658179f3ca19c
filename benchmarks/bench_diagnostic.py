"""The haystack diagnostic's training step: the project's step against a plain eager PyTorch step.

The paper's diagnostic (Jiang et al. 2026): 2 layers, 4 heads, width 16, batch 1000 rows of 62 tokens,
one counted position per row (the needle's value). The project's step is the trainer's own `train_step`
on the run `scarce diagnose haystack` builds (compiled; the output head, the loss and the last block's
queries only at the counted positions). The plain step is what one writes first: the same weights and
batch, eager, logits at every position, the cross-entropy masked, fused AdamW. Both run on one CPU
thread, interleaved round by round (`--block` steps each in a row, the first untimed), so drift hits
both alike; the speedup is the median over rounds of the round's ratio, with its range.

    python benchmarks/bench_diagnostic.py [--rounds 6] [--block 3] [--batch 1000] [--out benchmarks/results/diagnostic.json]
"""

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import scarce.train.trainer as trainer
from scarce.studies.diagnose import diagnostic_config


def plain_step(model, optimizer, batch) -> float:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)  # the trainer's compiled CPU run sets it; a plain step would not
    logits = model(batch.inputs)
    losses = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    loss = (losses * batch.loss_mask.flatten()).sum() / batch.loss_mask.sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.use_deterministic_algorithms(before, warn_only=True)
    return loss.item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=3, help="steps of one arm in a row (the first untimed)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "diagnostic.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    steps = (args.rounds + 1) * args.block
    with tempfile.TemporaryDirectory() as runs_dir:
        config = diagnostic_config("haystack", steps=steps, batch_size=args.batch, runs_dir=Path(runs_dir))
        with trainer._ordered_kernels(config):
            run = trainer._set_up(config, None)
            plain_model = copy.deepcopy(run.model)
            plain_optimizer = torch.optim.AdamW(plain_model.parameters(), lr=1e-3, weight_decay=0.001, fused=True)
            batches = list(run.source)
            arms = {"project": lambda b: trainer.train_step(run, b, lr=1e-3),
                    "plain": lambda b: plain_step(plain_model, plain_optimizer, b)}
            compile_start = time.perf_counter()
            arms["project"](batches[0])  # compiles
            compile_seconds = time.perf_counter() - compile_start
            seconds = {name: [] for name in arms}
            per_round = {name: [] for name in arms}
            for round_ in range(args.rounds + 1):
                for name, step in arms.items():
                    for i in range(args.block):
                        start = time.perf_counter()
                        step(batches[round_ * args.block + i])
                        if round_ and i:  # the first round warms up, the first step of a block too
                            seconds[name].append(time.perf_counter() - start)
                    if round_:
                        per_round[name].append(statistics.median(seconds[name][-(args.block - 1):]))
    ratios = [p / q for p, q in zip(per_round["plain"], per_round["project"])]
    result = {
        "config": f"haystack: 2 layers, 4 heads, width 16, batch {args.batch} x {config.model.seq_len} tokens, "
                  "one counted position per row",
        "machine": {"cpu": os.uname().machine, "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": os.getloadavg()},
        "rounds": args.rounds, "steps_in_a_row": args.block,
        "project_step_seconds": statistics.median(seconds["project"]),
        "plain_step_seconds": statistics.median(seconds["plain"]),
        "speedup": statistics.median(ratios), "speedup_range_over_rounds": [min(ratios), max(ratios)],
        "project_compile_seconds": compile_seconds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
