"""The main process's memory in each of its steps of a store build, on a corpus bench_prepare.py generates.

Scan, BPE sample and BPE training run as prepare_store runs them (the pool's workers are not counted);
the gather writes a train.bin of --gather-mb from sparse part files in a random document order. Prints
resident memory (now, and the peak so far) after each step. The corpus is generated in a subprocess, so
its generator's memory is not this process's.

    python benchmarks/probe_prepare_memory.py --size 256 --work /tmp/probe
"""

import argparse
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil

import scarce.data.store as store_module
from scarce.data.tokenizer import train_bpe

MB = 2**20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=float, default=256, help="MB of generated text")
    parser.add_argument("--gather-mb", type=float, default=430, help="MB of train.bin the gather writes")
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    corpus = args.work / f"corpus-{args.size:g}mb"
    if not corpus.exists():
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from bench_prepare import generate_corpus; "
                        f"generate_corpus(Path({str(corpus)!r}), int({args.size} * 2**20))"],
                       check=True, cwd=Path(__file__).parent)
    me = psutil.Process()

    def mark(step):
        print(f"{step}: rss {me.memory_info().rss // MB} MB, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB",
              flush=True)

    mark("start")
    scanned = store_module.scan_corpus(str(corpus), 0.05, 0, args.work / "parts", workers=2)
    mark(f"scanned {len(scanned.document_bytes)} documents")
    texts = scanned.training_sample(store_module.BPE_SAMPLE_BYTES, 2)
    mark(f"read the BPE sample ({len(texts)} documents)")
    train_bpe(texts, 4096)
    mark("trained the BPE")
    del texts
    rng = np.random.default_rng(0)
    shards = 16
    counts = rng.integers(200, 3800, size=int(args.gather_mb * MB / 2 / 2000)).astype(np.int64)
    parts = []
    for i, shard_counts in enumerate(np.array_split(counts, shards)):
        parts.append(args.work / f"part{i}.bin")
        with open(parts[-1], "wb") as f:
            f.truncate(int(shard_counts.sum()) * 2)
    starts = np.concatenate([np.cumsum(c) - c for c in np.array_split(counts, shards)])
    shard_of = np.repeat(np.arange(shards), [len(c) for c in np.array_split(counts, shards)])
    store_module._gather(args.work / "train.bin", rng.permutation(len(counts)), counts, starts, shard_of, parts, 2)
    mark(f"gathered a {(args.work / 'train.bin').stat().st_size // MB} MB train.bin")


if __name__ == "__main__":
    main()
