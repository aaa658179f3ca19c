"""The token store: a corpus tokenized once into flat memory-mapped arrays, split and ready for budgets.

Layout of a store directory:
    train.bin       training tokens, documents in a seeded shuffled order, each followed by eot
    val.bin         validation tokens, the held-out documents in corpus order, each followed by eot
    tokenizer.json  the tokenizer that produced them (HF format)
    meta.json       what was built from what: source, fingerprints, split, counts, document offsets and
                    the UTF-8 bytes of each validation document

The validation split is a set of whole documents picked by a seeded permutation, so it is the same for
every training budget. An evaluation scores a fixed, seeded sample of whole validation documents
(`TokenStore.eval_sample`), so bits per byte divides by the bytes of exactly the text it scored. The
tokenizer is trained on the training documents only (no peeking at val). A
budget of D unique tokens is the first D tokens of train.bin, so budgets are nested prefixes.

A store is built in a temporary directory beside its target and renamed into place at the end: a store
directory that exists is complete.
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from scarce.atomic import make_temp_dir, write_json_atomic
from scarce.data.corpora import corpus_fingerprint, corpus_name, load_documents
from scarce.data.tokenizer import Tokenizer, gpt2_tokenizer, train_bpe
from scarce.errors import ScarceError
from scarce.paths import scarce_home, writable_dir

# Bump when the layout or the split rule changes, so stores built the old way are not reused.
# 2: meta.json records each validation document's UTF-8 bytes (val_document_bytes), for exact bits/byte.
STORE_FORMAT_VERSION = 2
TOKENIZER_KINDS = ("bpe", "gpt2")
ENCODE_BATCH_DOCUMENTS = 512  # documents per encode_batch call: big enough for all cores, bounded memory
META_KEYS = (
    "dtype", "eot_id", "mask_id", "vocab_size", "train_tokens", "val_tokens", "val_bytes",
    "val_document_offsets", "val_document_bytes",
)
# Which validation documents an evaluation scores: one fixed permutation, so every step, run and budget
# that shares a store scores the same documents (and a larger token budget scores a superset).
EVAL_SAMPLE_SEED = 0


@dataclass(frozen=True)
class EvalSample:
    """The validation text one evaluation scores: whole documents, as one token stream.

    `tokens` is an end-of-text token followed by each sampled document and its own end-of-text token, so
    every token after the first (each document's tokens and its closing eot) is predicted exactly once,
    with the preceding document as context as in training. `bytes` is the UTF-8 size of the sampled
    documents' text (end-of-text tokens add none): bits/byte = nats summed over the scored tokens / (bytes · ln 2).
    """

    tokens: np.ndarray
    bytes: int
    document_ids: np.ndarray  # indices into the validation split (its stored order), ascending

    @property
    def scored_tokens(self) -> int:
        return len(self.tokens) - 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


class TokenStore:
    """A prepared store on disk. Token arrays are read-only memmaps: opening a store costs nothing."""

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self.vocab_size: int = meta["vocab_size"]
        self.eot_id: int = meta["eot_id"]
        self.mask_id: int = meta["mask_id"]
        self.val_bytes: int = meta["val_bytes"]  # UTF-8 bytes of the validation text, for bits per byte
        self.train_token_count: int = meta["train_tokens"]
        self.val_token_count: int = meta["val_tokens"]
        dtype = np.dtype(meta["dtype"])
        self.train_tokens = self._memmap("train.bin", dtype, self.train_token_count)
        self.val_tokens = self._memmap("val.bin", dtype, self.val_token_count)

    def _memmap(self, name: str, dtype: np.dtype, count: int) -> np.memmap:
        file = self.path / name
        expected_bytes = count * dtype.itemsize
        if not file.is_file() or file.stat().st_size != expected_bytes:
            found = f"{file.stat().st_size} bytes" if file.is_file() else "no file"
            raise ScarceError(
                f"{file}: expected {expected_bytes} bytes ({count} tokens) per meta.json, found {found}; "
                "delete the store directory and prepare it again"
            )
        return np.memmap(file, dtype=dtype, mode="r", shape=(count,))

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.load(self.path / "tokenizer.json")

    def budget(self, unique_tokens: int) -> np.ndarray:
        """The first `unique_tokens` training tokens (a memmap view): the training data for budget D."""
        if not isinstance(unique_tokens, (int, np.integer)) or unique_tokens < 2:
            raise ScarceError(f"unique_tokens must be an integer of at least 2, got {unique_tokens!r}")
        if unique_tokens > self.train_token_count:
            raise ScarceError(
                f"unique_tokens={unique_tokens} exceeds the {self.train_token_count} training tokens in the store "
                f"{self.path} ({self.meta.get('source')!r}): lower it or use a larger corpus"
            )
        return self.train_tokens[:unique_tokens]

    def eval_sample(self, max_tokens: int | None = None, seed: int = EVAL_SAMPLE_SEED) -> EvalSample:
        """The validation documents an evaluation with a budget of `max_tokens` scores.

        Documents are taken whole, in one seeded permutation of the split, until their tokens (each with
        its eot) reach `max_tokens`: the last one may run past the budget, by less than one document. They
        are then laid out in split order. `None`, or a budget of at least the split, scores every document.
        The same arguments give the same sample at every call.
        """
        if max_tokens is not None and (not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1):
            raise ScarceError(f"eval tokens must be a positive integer or None (all), got {max_tokens!r}")
        starts = np.asarray(self.meta["val_document_offsets"], dtype=np.int64)
        ends = np.append(starts[1:], self.val_token_count)
        document_bytes = np.asarray(self.meta["val_document_bytes"], dtype=np.int64)
        if max_tokens is None or max_tokens >= self.val_token_count:
            chosen = np.arange(len(starts))
        else:
            order = np.random.default_rng(seed).permutation(len(starts))
            reached = np.cumsum(ends[order] - starts[order]) >= max_tokens
            chosen = np.sort(order[: int(np.argmax(reached)) + 1])
        pieces = [np.array([self.eot_id], dtype=self.val_tokens.dtype)]
        pieces += [self.val_tokens[starts[i] : ends[i]] for i in chosen]
        return EvalSample(np.concatenate(pieces), int(document_bytes[chosen].sum()), chosen)

    def __repr__(self) -> str:
        return (
            f"TokenStore({str(self.path)!r}, train_tokens={self.train_token_count}, "
            f"val_tokens={self.val_token_count}, vocab_size={self.vocab_size})"
        )


def open_store(path: Path) -> TokenStore:
    """Open a prepared store directory; a missing or damaged meta.json is a clear error."""
    meta_file = Path(path) / "meta.json"
    if not meta_file.is_file():
        raise ScarceError(f"{path} is not a token store: {meta_file} is missing (prepare it with prepare_store)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScarceError(f"{meta_file} is corrupt ({e}); delete {path} and prepare the store again") from None
    if not isinstance(meta, dict):
        raise ScarceError(f"{meta_file} is corrupt (not a JSON object); delete {path} and prepare the store again")
    if meta.get("format_version") != STORE_FORMAT_VERSION:
        raise ScarceError(
            f"{path} is a token store of format {meta.get('format_version')}, this scarce reads format "
            f"{STORE_FORMAT_VERSION}; delete it and prepare the store again"
        )
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise ScarceError(f"{meta_file} lacks {', '.join(missing)}; delete {path} and prepare the store again")
    return TokenStore(path, meta)


def split_documents(document_count: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices in shuffled order, val indices in corpus order), from one seeded permutation."""
    val_count = min(max(1, round(document_count * val_fraction)), document_count - 1)
    order = np.random.default_rng(split_seed).permutation(document_count)
    return order[val_count:], np.sort(order[:val_count])


def _write_tokens(file: Path, tokenizer: Tokenizer, documents: list[str], dtype: np.dtype, progress, label: str):
    """Tokenize documents in batches, append eot after each; returns each document's start offset."""
    task = progress.add_task(label, total=sum(len(doc.encode("utf-8")) for doc in documents))
    offsets, tokens_written = [], 0
    with open(file, "wb") as f:
        for start in range(0, len(documents), ENCODE_BATCH_DOCUMENTS):
            batch = documents[start : start + ENCODE_BATCH_DOCUMENTS]
            for ids in tokenizer.encode_batch(batch):
                offsets.append(tokens_written)
                ids.append(tokenizer.eot_id)
                f.write(np.asarray(ids, dtype=dtype).tobytes())
                tokens_written += len(ids)
            progress.advance(task, sum(len(doc.encode("utf-8")) for doc in batch))
    return offsets, tokens_written


@dataclass
class CorpusSplit:
    """A corpus's documents split into training and held-out documents: what a store directory holds."""

    source: str
    fingerprint: str
    train: list[str]  # in the seeded shuffled order train.bin stores them
    val: list[str]  # in corpus order
    train_ids: np.ndarray  # index of each into load_documents(source)
    val_ids: np.ndarray


def split_corpus(source: str, val_fraction: float, split_seed: int, where: str = "corpus",
                 fingerprint: str | None = None) -> CorpusSplit:
    """Load `source` and split it by whole documents (`where` names it in the error for too few documents)."""
    documents = load_documents(source)
    if len(documents) < 2:
        raise ScarceError(
            f"{where} {source!r} has {len(documents)} document; a held-out split needs at least 2 "
            "(give a directory of files, a JSONL file, or a text file larger than 64 KiB)"
        )
    train_ids, val_ids = split_documents(len(documents), val_fraction, split_seed)
    return CorpusSplit(source, fingerprint or corpus_fingerprint(source), [documents[i] for i in train_ids],
                       [documents[i] for i in val_ids], train_ids, val_ids)


def fit_tokenizer(kind: str, vocab_size: int, documents: list[str], root: Path, console: Console, what: str) -> Tokenizer:
    """A BPE trained on `documents` (cached under root/tokenizers), or GPT-2's."""
    if kind != "bpe":
        return gpt2_tokenizer()
    with console.status(f"training a {vocab_size}-token BPE on {len(documents)} documents{what}"):
        return train_bpe(documents, vocab_size, cache_dir=root / "tokenizers")


def tokenizing_progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


def write_split(folder: Path, split: CorpusSplit, tok: Tokenizer, progress: Progress, label: str,
                val_fraction: float, split_seed: int, **extra_meta) -> dict:
    """One store directory's files: train.bin, val.bin, tokenizer.json, then meta.json (last: its presence
    means the directory is whole). Returns the meta."""
    dtype = token_dtype(tok.vocab_size)
    train_offsets, train_tokens = _write_tokens(folder / "train.bin", tok, split.train, dtype, progress, f"{label} (train)")
    val_offsets, val_tokens = _write_tokens(folder / "val.bin", tok, split.val, dtype, progress, f"{label} (val)")
    tok.save(folder / "tokenizer.json")
    val_document_bytes = [len(doc.encode("utf-8")) for doc in split.val]
    meta = {
        "format_version": STORE_FORMAT_VERSION,
        "source": split.source,
        **extra_meta,
        "corpus_fingerprint": split.fingerprint,
        "tokenizer_kind": tok.kind,
        "tokenizer_fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "mask_id": tok.mask_id,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "split_seed": split_seed,
        "train_documents": len(split.train),
        "val_documents": len(split.val),
        "train_tokens": train_tokens,
        "val_tokens": val_tokens,
        "val_bytes": sum(val_document_bytes),
        # Index into load_documents(source) of each stored document, in stored order.
        "train_document_ids": split.train_ids.tolist(),
        "val_document_ids": split.val_ids.tolist(),
        # Token offset where each stored document starts; it ends with an eot just before the next.
        "train_document_offsets": train_offsets,
        "val_document_offsets": val_offsets,
        # UTF-8 bytes of each validation document's text, so an evaluation of some of them has exact bits/byte.
        "val_document_bytes": val_document_bytes,
    }
    write_json_atomic(folder / "meta.json", meta)
    return meta


def build_into(target: Path, complete: str, write) -> None:
    """Build a store directory with `write(folder)` in a temporary sibling, then rename it to `target`.
    `complete`: the file whose presence means a directory is whole (a concurrent build may finish first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    building = make_temp_dir(target.parent, f".{target.name}.building-")
    try:
        write(building)
        try:
            os.rename(building, target)
        except OSError:
            if not (target / complete).is_file():  # not a concurrent prepare that finished first
                raise ScarceError(f"{target} exists but is not a complete token store; delete it and retry") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)  # gone after a successful rename; a leftover otherwise


def prepare_store(
    source: str,
    *,
    tokenizer: str = "bpe",
    vocab_size: int = 8192,
    val_fraction: float = 0.05,
    split_seed: int = 0,
    root: Path | None = None,
) -> TokenStore:
    """Tokenize `source` into a store under `root` (default $SCARCE_HOME/data), or open the cached one."""
    if tokenizer not in TOKENIZER_KINDS:
        raise ScarceError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    if not 0 < val_fraction < 1:
        raise ScarceError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    root = Path(root) if root is not None else scarce_home() / "data"
    fingerprint = corpus_fingerprint(source)
    # GPT-2's vocabulary is fixed, so the asked-for vocab_size must not split its cache.
    key_vocab = vocab_size if tokenizer == "bpe" else "gpt2"
    key = f"store-v{STORE_FORMAT_VERSION}:{fingerprint}:{tokenizer}:{key_vocab}:{val_fraction!r}:{split_seed}"
    target = root / f"{corpus_name(source)}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (target / "meta.json").is_file():
        return open_store(target)

    writable_dir(root, "the token store cache ($SCARCE_HOME/data)")
    split = split_corpus(source, val_fraction, split_seed, fingerprint=fingerprint)
    console = Console(stderr=True)
    tok = fit_tokenizer(tokenizer, vocab_size, split.train, root, console, "")
    meta = {}

    def write(folder: Path) -> None:
        with tokenizing_progress(console) as progress:
            meta.update(write_split(folder, split, tok, progress, f"tokenizing {source}", val_fraction, split_seed))

    build_into(target, "meta.json", write)
    console.print(
        f"prepared {target}: {meta['train_tokens']:,} train tokens, {meta['val_tokens']:,} val tokens, vocab {tok.vocab_size}"
    )
    return open_store(target)
