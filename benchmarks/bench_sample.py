"""Sampling throughput with the KV cache, next to the same model's training throughput.

The model is benchmarks/bench_train.py's reference config (4 layers, d_model 256, 4 heads, context 256,
vocab 4096). Training tokens/s is the bare training loop of bench_train.py, measured before and after the
sampling runs (this machine's speed drifts); sampling tokens/s counts sampled tokens over wall time, with
documents from end-of-text to the context length (random weights rarely end one early, so every step
attends over a growing cache, as long documents do). Target on CPU: sampling ≥ 2× training at batch 64.

    python benchmarks/bench_sample.py [--batch-sizes 1,16,64] [--threads 1] [--out benchmarks/results/sample.json]
"""

import argparse
import json
import os
import statistics
from pathlib import Path

import torch
from bench_train import plain_loop_tokens_per_second
from machine import cpu_model

from scarce.config import resolve_config
from scarce.model import Transformer, model_shape
from scarce.train.sample import sample_documents


def sampling_tokens_per_second(model: Transformer, batch_size: int, tokens: int, cache: bool = True) -> float:
    stats: dict = {}
    for _ in sample_documents([model], tokens, eot_id=0, batch_size=batch_size, seed=0, cache=cache, stats=stats):
        pass
    return stats["draws"] / stats["seconds"]  # every sampled token, end-of-text included


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--device", default="auto")
    # On a CPU shared with other work, two spinning OpenMP threads stall each other on every small op
    # (sampling makes ~100 per step); one thread measures both loops the same, robustly.
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sample.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)

    config = resolve_config({"model": {"size": "small", "seq_len": 256}})
    shape = model_shape(vocab_size=4096, **config.model.model_dump())
    torch.manual_seed(0)
    model = Transformer(shape).to(device).eval()
    train_before = plain_loop_tokens_per_second(shape, config, 16) if device.type == "cpu" else None
    results = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        tokens = batch_size * shape.seq_len * (1 if device.type == "cpu" else 8)  # a full context per slot (CPU)
        sampling_tokens_per_second(model, batch_size, min(tokens, 2 * shape.seq_len))  # warm-up
        rate = sampling_tokens_per_second(model, batch_size, tokens)
        results.append({"batch_size": batch_size, "tokens": tokens, "sampled_tokens_per_second": rate})
        print(results[-1], flush=True)
    no_cache = sampling_tokens_per_second(model, 8, 8 * 64, cache=False)  # 64-token documents' worth, recomputed
    train_after = plain_loop_tokens_per_second(shape, config, 16) if device.type == "cpu" else None
    train_rate = statistics.mean([train_before, train_after]) if device.type == "cpu" else None
    by_batch = {r["batch_size"]: r["sampled_tokens_per_second"] for r in results}
    result = {
        "config": "4 layers, d_model 256, 4 heads, context 256, vocab 4096 (bench_train.py's reference)",
        "device": device.type,
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                    "load_average_1_5_15_min": os.getloadavg()},  # other work on the machine while measuring
        "sampling": results,
        "no_cache_tokens_per_second_batch_8": no_cache,
        "training_tokens_per_second": train_rate,
        "training_tokens_per_second_before_after": [train_before, train_after],
        "sampling_over_training_at_batch_64": by_batch[64] / train_rate if train_rate and 64 in by_batch else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
