"""Preparing a token store at scale: throughput, peak memory, the raw tokenizer rate, and the loader's share.

A corpus of `--size` MB of generated English-like text (Zipf-distributed words from a 50k-word vocabulary,
documents of 0.5-16 KB, written as JSONL shards) is prepared with a 4096-token BPE, as a user would
(`prepare_store`, all `--workers`), at `--size` and at a quarter of it, to show how memory grows with size.
Measured for each:
- wall time of each phase (reading, the BPE's sample and training, tokenizing, gathering) and in all;
  throughput in MB/s of text and tokens/s;
- peak resident memory of the whole process tree (a fresh process running the prepare, as `scarce data
  prepare` does, and its pool workers, summed, sampled every 0.1 s), and the largest single process;
- the raw rate of `tokenizers`' batch encoder (`encode_batch_fast`, the same trained tokenizer, all
  cores) on the same text, already in memory: tokenizing's MB/s divided by it is the target ratio (≥ 0.7).
Then the loader: an EpochLoader over a sparse 600M-token store (bench_train.py's reference batch, 16 x 256)
against a training step of bench_train.py's reference model; the share is loader / (loader + step).

    python benchmarks/bench_prepare.py [--size 1024] [--workers N] [--out benchmarks/results/prepare.json]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from machine import cpu_model

import scarce.data.store as store_module
from scarce.data.corpora import iter_documents

# Nothing here imports torch at the top: the store's pool workers are spawned, and a spawned process
# imports the main module again, so torch would sit in every worker's memory (the CLI does not import it).

MB = 2**20


def generate_corpus(folder: Path, size_bytes: int, seed: int = 0, file_bytes: int = 128 * MB) -> int:
    """JSONL shards of generated documents totalling about size_bytes of text; returns the text bytes."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkjqxz"))
    letter_p = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.0, 2.0, 1.9,
                         1.5, 1.0, 0.8, 0.2, 0.2, 0.2, 0.1, 0.1])
    words = np.array(["".join(rng.choice(letters, size=rng.integers(1, 11), p=letter_p / letter_p.sum()))
                      for _ in range(50_000)], dtype=object)
    zipf = 1 / np.arange(1, len(words) + 1) ** 1.1
    zipf /= zipf.sum()
    folder.mkdir(parents=True)
    written, file_index, out = 0, 0, None
    while written < size_bytes:
        if out is None or out.tell() >= file_bytes:
            if out:
                out.close()
            out = open(folder / f"shard-{file_index:04d}.jsonl", "w", encoding="utf-8")
            file_index += 1
        lines = []
        for _ in range(256):
            n_words = int(rng.integers(80, 2600))
            chosen = words[rng.choice(len(words), size=n_words, p=zipf)]
            breaks = rng.random(n_words) < 0.07  # sentence ends, an occasional paragraph
            chosen = np.where(breaks, chosen + np.where(rng.random(n_words) < 0.15, ".\n\n", ". "), chosen + " ")
            text = "".join(chosen).strip().capitalize()
            lines.append(json.dumps({"text": text, "id": written}))
            written += len(text)
        out.write("\n".join(lines) + "\n")
    out.close()
    return written


class TreeMemory:
    """Peak resident memory of process `pid` and its children, summed (and each part's peak), sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.1):
        self.peak = self.peak_main = self.peak_children = self.peak_processes = 0
        self.pid, self.every_s, self._stop = pid, every_s, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process(self.pid)
        while not self._stop.is_set():
            sizes = []
            for process in [me, *me.children(recursive=True)]:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.Error:
                    pass
            if not sizes:  # the process has ended
                break
            self.peak = max(self.peak, sum(sizes))
            self.peak_main = max(self.peak_main, sizes[0])
            self.peak_children = max(self.peak_children, sum(sizes[1:]))
            self.peak_processes = max(self.peak_processes, len(sizes))
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed_phases():
    """Wrap the store's phase functions to time them (name -> seconds); returns the dict and an undo."""
    seconds: dict[str, float] = {}
    originals = {}

    def wrap(name, label_of):
        original = getattr(store_module, name)
        originals[name] = original

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                label = label_of(args)
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start

        setattr(store_module, name, timed)

    phase_of = {"_scan_shard": "read", "_shard_texts": "bpe_sample_read", "_tokenize_shard": "tokenize"}
    wrap("map_shards", lambda args: phase_of[args[0].__name__])
    wrap("train_bpe", lambda args: "bpe_train")
    wrap("_gather", lambda args: "gather_" + Path(args[0]).stem)
    wrap("corpus_fingerprint", lambda args: "fingerprint")

    def undo():
        for name, original in originals.items():
            setattr(store_module, name, original)

    return seconds, undo


def raw_encode_rate(tokenizer, corpus: Path, max_bytes: int) -> dict:
    """tokenizers' encode_batch_fast on up to max_bytes of the corpus's text, already in memory (all cores)."""
    texts, size = [], 0
    for text in iter_documents(str(corpus)):
        texts.append(text)
        size += len(text.encode())
        if size >= max_bytes:
            break
    start, tokens = time.perf_counter(), 0
    for i in range(0, len(texts), 512):
        tokens += sum(len(e.ids) for e in tokenizer.hf.encode_batch_fast(texts[i : i + 512], add_special_tokens=False))
    seconds = time.perf_counter() - start
    return {"text_bytes": size, "seconds": seconds, "mb_per_s": size / MB / seconds, "tokens_per_s": tokens / seconds}


def measure_prepare(work: Path, size_mb: float, workers: int, vocab_size: int, raw_bytes: int) -> dict:
    corpus = work / f"corpus-{size_mb:g}mb"
    start = time.perf_counter()
    # In a subprocess, so the generator's memory does not count as the prepare's.
    subprocess.run([sys.executable, "-c", "from pathlib import Path; from bench_prepare import generate_corpus; "
                    f"print(generate_corpus(Path({str(corpus)!r}), {int(size_mb * MB)}))"],
                   check=True, cwd=Path(__file__).parent, stdout=(corpus.parent / "generated.txt").open("w"))
    text_bytes = int((corpus.parent / "generated.txt").read_text())
    generate_s = time.perf_counter() - start
    load_before = os.getloadavg()
    # The prepare runs in a fresh process, as `scarce data prepare` does: this one's memory (the earlier
    # size's run, the raw encoder's texts) must not count, and its children are the pool's workers.
    child = subprocess.Popen([sys.executable, __file__, "_prepare", str(corpus), str(work / "data"), str(vocab_size),
                              str(workers)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent)
    with TreeMemory(child.pid) as memory:
        output, _ = child.communicate()
    if child.returncode != 0:
        sys.exit(f"error: preparing {corpus} failed (exit {child.returncode})")
    rusage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    timed = json.loads(output.strip().splitlines()[-1])
    seconds, total_s = timed["phase_s"], timed["total_s"]
    store = store_module.open_store(Path(timed["store"]))
    tokens = store.train_token_count + store.val_token_count
    raw = raw_encode_rate(store.tokenizer, corpus, raw_bytes)
    tokenize_mb_per_s = text_bytes / MB / seconds["tokenize"]
    result = {
        "text_mb": text_bytes / MB,
        "corpus_files_mb": sum(f.stat().st_size for f in corpus.iterdir()) / MB,
        "documents": store.meta["train_documents"] + store.meta["val_documents"],
        "tokens": tokens,
        "bytes_per_token": text_bytes / tokens,
        "store_mb": sum(f.stat().st_size for f in store.path.iterdir()) / MB,
        "bpe_sample_mb": store.meta["bpe_sample_text_bytes"] / MB,
        "generate_corpus_s": generate_s,
        "prepare_s": total_s,
        "phase_s": seconds,
        "prepare_mb_per_s": text_bytes / MB / total_s,
        "prepare_tokens_per_s": tokens / total_s,
        "tokenize_mb_per_s": tokenize_mb_per_s,
        "tokenize_tokens_per_s": tokens / seconds["tokenize"],
        "raw_encode": raw,
        "tokenize_vs_raw_encode": tokenize_mb_per_s / raw["mb_per_s"],
        "prepare_vs_raw_encode": text_bytes / MB / total_s / raw["mb_per_s"],
        "peak_rss_tree_mb": memory.peak / MB,
        "peak_rss_main_mb": memory.peak_main / MB,
        "peak_rss_workers_summed_mb": memory.peak_children / MB,
        "processes_at_most": memory.peak_processes,
        "max_rss_single_process_mb": rusage_children,  # the largest of this process's waited-for descendants so far
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    shutil.rmtree(corpus)
    shutil.rmtree(store.path)
    return result


def timed_prepare(corpus: str, root: str, vocab_size: int, workers: int) -> None:
    """In the child process: prepare the store, timing its phases; print them as JSON (the last line)."""
    seconds, undo = timed_phases()
    start = time.perf_counter()
    store = store_module.prepare_store(corpus, vocab_size=vocab_size, root=Path(root), workers=workers)
    total_s = time.perf_counter() - start
    undo()
    print(json.dumps({"phase_s": seconds, "total_s": total_s, "store": str(store.path)}))


def loader_share(work: Path, train_tokens: int = 600_000_000, steps: int = 50) -> dict:
    """EpochLoader batches over a sparse store of train_tokens, against bench_train's reference step."""
    import torch
    from bench_train import plain_loop_tokens_per_second

    from scarce.config import resolve_config
    from scarce.data.loader import EpochLoader
    from scarce.model import model_shape

    seq_len, batch_size = 256, 16
    path = work / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(train_tokens * 2)
    tokens = np.memmap(path, dtype=np.uint16, mode="r", shape=(train_tokens,))
    start = time.perf_counter()
    loader = EpochLoader(tokens, seq_len, batch_size, epochs=1, seed=0)
    loader.batch(0)
    first_batch_s = time.perf_counter() - start  # builds the epoch's permutation of 2.3M sequences
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for step in rng.integers(0, loader.steps, steps):
        loader.batch(int(step))
    batch_s = (time.perf_counter() - start) / steps
    config = resolve_config({"data": {"vocab_size": 4096}, "model": {"size": "small", "seq_len": seq_len}})
    shape = model_shape(vocab_size=4096, **config.model.model_dump())
    step_s = batch_size * seq_len / plain_loop_tokens_per_second(shape, config, batch_size, steps=6)
    path.unlink()
    return {"train_tokens": train_tokens, "batch": [batch_size, seq_len], "loader_first_batch_s": first_batch_s,
            "loader_batch_s": batch_s, "train_step_s": step_s, "loader_share_of_step": batch_s / (batch_s + step_s),
            "torch_threads": torch.get_num_threads()}


def main():
    if sys.argv[1:2] == ["_prepare"]:
        corpus, root, vocab_size, workers = sys.argv[2:]
        return timed_prepare(corpus, root, int(vocab_size), int(workers))
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=float, default=1024, help="MB of generated text (a quarter is run too)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--raw-mb", type=float, default=128, help="MB of text the raw encoder is timed on")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prepare.json")
    args = parser.parse_args()
    workers = args.workers or store_module.default_workers()
    work = Path(tempfile.mkdtemp(prefix="bench-prepare-", dir=args.work))
    try:
        sizes = {}
        for size in (args.size / 4, args.size):
            sizes[f"{size:g}"] = measure_prepare(work, size, workers, args.vocab_size, int(args.raw_mb * MB))
            print(json.dumps(sizes[f"{size:g}"], indent=2), file=sys.stderr)
        loader = loader_share(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    large = sizes[f"{args.size:g}"]
    tokens_per_s, bytes_per_token = large["prepare_tokens_per_s"], large["bytes_per_token"]
    projection = {
        f"{tokens / 1e9:g}B_tokens": {
            "text_gb": tokens * bytes_per_token / 1e9,
            "prepare_hours": tokens / tokens_per_s / 3600,
            "store_gb": tokens * 2 / 1e9,  # uint16 tokens (vocabularies up to 65536)
            "peak_disk_gb_during_build": tokens * 4 / 1e9,  # the shards' part files, then the store beside them
        }
        for tokens in (1.6e9, 10e9)
    }
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "workers": workers},
        "corpus": "generated English-like JSONL (Zipf words, 0.5-16 KB documents), 128 MB files",
        "vocab_size": args.vocab_size,
        "sizes_mb": sizes,
        "loader": loader,
        "projection_from_largest": projection,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
