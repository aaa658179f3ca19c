"""Training throughput, MFU and the data loader's share of step time, through the real trainer.

Reference config (issue 2): 4 layers, d_model 256, 4 heads, context 256, vocab 4096, batch 16, on KJV.
Runs the trainer twice, eager and with train.compile (torch.compile), and says which is faster: that is
the default of train.compile = "auto" on this device (scarce.train.trainer.COMPILE_BY_DEVICE).
MFU = 6·N·tokens/s over the fp32 matmul rate measured here, in this run, where N counts the weights
that take part in matmuls (everything but the input embedding lookup). MFU with attention FLOPs
(scarce.model.ModelShape.train_flops_per_token) is written too.

    python benchmarks/bench_train.py [--steps 60] [--out benchmarks/results/train.json]
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import cpu_model

from scarce import runs
from scarce.config import resolve_config
from scarce.model import Transformer, model_shape
from scarce.train.optim import build_optimizer
from scarce.train.trainer import train


def matmul_flops_per_second(size: int = 2048, repeats: int = 20) -> float:
    """Peak-ish fp32 dense matmul rate of this machine with torch's current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def plain_loop_tokens_per_second(shape, config, batch_size: int, steps: int = 8) -> float:
    """The same model and optimizer in a bare loop on random tokens: what the trainer's overhead is measured against."""
    model = Transformer(shape)
    optimizer = build_optimizer(model, config.optim)
    batch = torch.randint(0, shape.vocab_size, (batch_size, shape.seq_len + 1))

    def step():
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size * shape.seq_len / (time.perf_counter() - start)



def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args()

    seq_len, batch_size = 256, 16
    unique_tokens = args.steps * batch_size * seq_len + 1  # exactly `steps` steps in one epoch
    def measure(compile_model: bool) -> dict:
        """tokens/s, MFU and loader share of one real run, with or without torch.compile."""
        with tempfile.TemporaryDirectory() as runs_dir:
            config = resolve_config(
                {
                    "name": "bench",
                    "runs_dir": runs_dir,
                    "data": {"corpus": "kjv", "vocab_size": 4096, "unique_tokens": unique_tokens, "eval_tokens": 1024},
                    "model": {"size": "small", "seq_len": seq_len},
                    "train": {"batch_size": batch_size, "epochs": 1, "log_every": 10, "device": args.device,
                              "compile": compile_model},
                }
            )
            # this machine's matmul rate drifts by ±20% over minutes: measure it on both sides of the run
            matmul_before = matmul_flops_per_second()
            run_dir = train(config, progress=False)
            matmul_after = matmul_flops_per_second()
            windows = [r for r in runs.read_metrics(run_dir) if "tokens_per_second" in r][1:]  # first window warms up (and compiles)
            device = runs.read_summary(run_dir)["device"]
        shape = model_shape(vocab_size=4096, **config.model.model_dump())
        matmul_rate = (matmul_before + matmul_after) / 2
        tokens_per_second = statistics.median(r["tokens_per_second"] for r in windows)
        matmul_params = shape.non_embedding_params() + shape.vocab_size * shape.d_model
        return {
            "device": device, "config": config, "shape": shape, "matmul_params": matmul_params,
            "tokens_per_second": tokens_per_second,
            "fp32_matmul_flops_per_second": matmul_rate,
            "fp32_matmul_flops_per_second_before_after": [matmul_before, matmul_after],
            "mfu_6n": 6 * matmul_params * tokens_per_second / matmul_rate,
            "mfu_with_attention": shape.train_flops_per_token() * tokens_per_second / matmul_rate,
            "loader_fraction_of_step_time": statistics.median(r["loader_fraction"] for r in windows),
        }

    eager, compiled = measure(False), measure(True)
    shape, config = eager.pop("shape"), eager.pop("config")
    compiled.pop("shape"), compiled.pop("config")
    plain = plain_loop_tokens_per_second(shape, config, batch_size)
    result = {
        "config": "4 layers, d_model 256, 4 heads, context 256, vocab 4096, batch 16",
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": os.getloadavg()},
        **eager,
        "plain_loop_tokens_per_second": plain,
        "trainer_vs_plain_loop": eager["tokens_per_second"] / plain,
        "compiled": compiled,
        "compiled_speedup": compiled["tokens_per_second"] / eager["tokens_per_second"],
        "faster": "compiled" if compiled["tokens_per_second"] > eager["tokens_per_second"] else "eager",
        "steps": args.steps,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
