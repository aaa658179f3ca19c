"""The token store: a corpus tokenized once into flat memory-mapped arrays, split and ready for budgets.

Layout of a store directory:
    train.bin       training tokens, documents in a seeded shuffled order, each followed by eot
    val.bin         validation tokens, the held-out documents in corpus order, each followed by eot
    tokenizer.json  the tokenizer that produced them (HF format)
    *.npy           per document, in stored order: its index in the corpus (train/val_document_ids), the
                    token offset where it starts (train/val_document_offsets), and the UTF-8 bytes of each
                    validation document (val_document_bytes)
    meta.json       what was built from what: source, fingerprints, split, counts (written last)

The validation split is a set of whole documents picked by a seeded permutation, so it is the same for
every training budget. An evaluation scores a fixed, seeded sample of whole validation documents
(`TokenStore.eval_sample`), so bits per byte divides by the bytes of exactly the text it scored. The
tokenizer is trained on a bounded, seeded sample of training documents only (no peeking at val). A
budget of D unique tokens is the first D tokens of train.bin, so budgets are nested prefixes.

Building streams: the corpus is cut into shards (groups of corpora.Piece); a pool of processes scans
each shard (how many documents, their bytes) and later tokenizes it into a part file of its own, in a
work directory beside the target. Only then are the parts gathered, document by document, into the
split's order. No step holds the corpus in memory, a shard's parts are written atomically so a killed
prepare resumes with the shards it had not finished, and the result depends on neither the shards nor the
number of processes. The store is assembled in a temporary directory and renamed into place at the end:
a store directory that exists is complete.
"""

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache, cached_property
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from scarce.atomic import make_temp_dir, write_bytes_atomic, write_json_atomic
from scarce.data.corpora import DEFAULT_TEXT_FIELD, Piece, corpus_fingerprint, corpus_name, corpus_pieces, piece_documents
from scarce.data.tokenizer import Tokenizer, gpt2_tokenizer, train_bpe
from scarce.errors import ScarceError
from scarce.paths import scarce_home, writable_dir

# Bump when the layout or the split rule changes, so stores built the old way are not reused.
# 2: meta.json records each validation document's UTF-8 bytes (val_document_bytes), for exact bits/byte.
# 3: the per-document arrays are .npy files, not JSON lists; the BPE trains on a bounded sample.
STORE_FORMAT_VERSION = 3
READABLE_FORMATS = (2, 3)  # a format-2 store still opens: same split and tokens, its arrays in meta.json
TOKENIZER_KINDS = ("bpe", "gpt2")
ENCODE_BATCH_DOCUMENTS = 512  # documents per encode_batch call: big enough for all cores, bounded memory
ENCODE_BATCH_CHARACTERS = 8 * 2**20  # ... and at most this much text
SHARD_BYTES = 64 * 2**20  # corpus bytes per shard: the unit of parallel work and of resuming
BPE_SAMPLE_BYTES = 128 * 2**20  # the BPE trains on at most this much training text (a train-order prefix)
WRITE_BYTES = 16 * 2**20  # tokens gathered into memory before a write, when assembling train.bin
DOCUMENT_ARRAYS = ("train_document_ids", "train_document_offsets", "val_document_ids", "val_document_offsets",
                   "val_document_bytes")
META_KEYS = ("dtype", "eot_id", "mask_id", "vocab_size", "train_tokens", "val_tokens", "val_bytes",
             "train_documents", "val_documents")
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
        self._document_arrays: dict[str, np.ndarray] = {}

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

    def document_array(self, name: str) -> np.ndarray:
        """A per-document array (one of DOCUMENT_ARRAYS), in stored order, as int64."""
        if name not in self._document_arrays:
            if self.meta["format_version"] == 2:
                array = np.asarray(self.meta[name], dtype=np.int64)
            else:
                array = np.load(self.path / f"{name}.npy", mmap_mode="r")
            self._document_arrays[name] = array
        return self._document_arrays[name]

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
        starts = np.asarray(self.document_array("val_document_offsets"))
        ends = np.append(starts[1:], self.val_token_count)
        document_bytes = self.document_array("val_document_bytes")
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
    version = meta.get("format_version")
    if version not in READABLE_FORMATS:
        raise ScarceError(
            f"{path} is a token store of format {version}, this scarce reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}; delete it and prepare the store again"
        )
    missing = [key for key in META_KEYS if key not in meta]
    if version == 2:
        missing += [key for key in DOCUMENT_ARRAYS if key not in meta]
    if missing:
        raise ScarceError(f"{meta_file} lacks {', '.join(missing)}; delete {path} and prepare the store again")
    store = TokenStore(path, meta)
    for name in DOCUMENT_ARRAYS:
        documents = meta["val_documents" if name.startswith("val") else "train_documents"]
        try:
            found = len(store.document_array(name))
        except (OSError, ValueError) as e:
            found = f"unreadable ({e})"
        if found != documents:
            raise ScarceError(f"{path}: {name} holds {found} documents, meta.json says {documents}; "
                              "delete the store directory and prepare it again")
    return store


def split_documents(document_count: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices in shuffled order, val indices in corpus order), from one seeded permutation."""
    val_count = min(max(1, round(document_count * val_fraction)), document_count - 1)
    order = np.random.default_rng(split_seed).permutation(document_count)
    return order[val_count:], np.sort(order[:val_count])


# ---------------------------------------------------------------- shards: the unit of parallel, resumable work


@dataclass(frozen=True)
class Shard:
    """Consecutive pieces of a corpus, scanned and tokenized by one process into part files of their own."""

    pieces: tuple[Piece, ...]

    @cached_property
    def name(self) -> str:  # what its part files are called: the same pieces, the same files
        return hashlib.sha256(repr(self.pieces).encode()).hexdigest()[:16]

    @property
    def bytes(self) -> int:
        return sum(piece.bytes for piece in self.pieces)

    def documents(self):
        for piece in self.pieces:
            yield from piece_documents(piece)


def make_shards(pieces: Sequence[Piece], shard_bytes: int) -> list[Shard]:
    """Consecutive pieces grouped into shards of about `shard_bytes` each, in corpus order."""
    shards, group, size = [], [], 0
    for piece in pieces:
        group.append(piece)
        size += piece.bytes
        if size >= shard_bytes:
            shards.append(Shard(tuple(group)))
            group, size = [], 0
    return [*shards, Shard(tuple(group))] if group else shards


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes_atomic(path, buffer.getvalue())


def _scan_shard(shard: Shard, work: Path) -> None:
    """Part file <name>.bytes.npy: the UTF-8 bytes of each of the shard's documents."""
    sizes = [len(document.encode("utf-8")) for document in shard.documents()]
    _save_npy(work / f"{shard.name}.bytes.npy", np.asarray(sizes, dtype=np.int64))


@cache
def _load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.load(path)


def _tokenize_shard(shard: Shard, work: Path, tokenizer_file: Path) -> None:
    """Part files <name>-<tokenizer>.tokens.bin (each document's tokens, then eot) and, last, .tokens.npy
    (each document's token count, eot included): its presence means the shard is done."""
    tok = _load_tokenizer(tokenizer_file)
    dtype, stem = token_dtype(tok.vocab_size), work / f"{shard.name}-{tok.fingerprint}"
    counts, batch, batch_characters = [], [], 0
    tokens_file = stem.with_name(stem.name + ".tokens.bin")
    partial = tokens_file.with_name(f".{tokens_file.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as f:
        def flush():
            for ids in tok.encode_batch(batch):
                ids.append(tok.eot_id)
                f.write(np.asarray(ids, dtype=dtype).tobytes())
                counts.append(len(ids))
            batch.clear()

        for document in shard.documents():
            batch.append(document)
            batch_characters += len(document)
            if len(batch) >= ENCODE_BATCH_DOCUMENTS or batch_characters >= ENCODE_BATCH_CHARACTERS:
                flush()
                batch_characters = 0
        flush()
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, tokens_file)
    _save_npy(stem.with_name(stem.name + ".tokens.npy"), np.asarray(counts, dtype=np.int64))


def _shard_texts(shard: Shard, indices: Sequence[int]) -> list[str]:
    """The shard's documents at `indices` (ascending, counted within the shard)."""
    wanted, texts = iter(indices), []
    target = next(wanted, None)
    for i, document in enumerate(shard.documents()):
        if i == target:
            texts.append(document)
            target = next(wanted, None)
            if target is None:
                break
    return texts


def _one_thread_per_process() -> None:
    # The pool already runs one process per core: tokenizers' own thread pool would oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Runs `function(*job)` for each job elsewhere (e.g. scarce.executors.shard_mapper: Slurm jobs) and returns
# the results in job order. Every worker must see the store's root (a shared filesystem).
ShardMapper = Callable[[Callable, list[tuple]], list]


def map_shards(function: Callable, jobs: Sequence[tuple], workers: int, progress: Progress | None = None,
               label: str = "", mapper: ShardMapper | None = None) -> list:
    """`function(*job)` for every job (a tuple whose first item is a Shard), in a pool of `workers`
    processes (in this process, with tokenizers' own threads, when there is one worker or one job), or
    through `mapper`; results in job order. A failure stops the rest; the shards already done keep their
    part files."""
    task = progress.add_task(label, total=sum(job[0].bytes for job in jobs)) if progress else None
    if mapper is not None and jobs:
        results = mapper(function, list(jobs))
        if progress:
            progress.advance(task, sum(job[0].bytes for job in jobs))
        return results
    results = [None] * len(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            results[i] = function(*job)
            if progress:
                progress.advance(task, job[0].bytes)
        return results
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn"),
                               initializer=_one_thread_per_process)
    try:
        futures = {pool.submit(function, *job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except BrokenProcessPool:
                raise ScarceError(
                    f"a worker process died on a shard starting at {jobs[i][0].pieces[0].path} (out of memory? A script "
                    "that prepares a store needs the `if __name__ == \"__main__\":` guard process pools need, or "
                    "workers=1); the shards already done are kept, run it again to resume"
                ) from None
            if progress:
                progress.advance(task, jobs[i][0].bytes)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


# ---------------------------------------------------------------- a corpus scanned and split


@dataclass
class ScannedCorpus:
    """A corpus cut into shards and scanned: how many documents, their bytes, and the split."""

    source: str
    fingerprint: str
    text_field: str
    work: Path  # where its part files live until the store is assembled
    shards: list[Shard]
    document_bytes: np.ndarray  # UTF-8 bytes of each document, in corpus order
    shard_starts: np.ndarray  # index of each shard's first document, then the document count
    train_ids: np.ndarray  # in the seeded shuffled order train.bin stores them
    val_ids: np.ndarray  # in corpus order
    mapper: ShardMapper | None = None  # runs its shards elsewhere instead of in a local pool

    def training_sample(self, max_bytes: int, workers: int) -> list[str]:
        """The first training documents, in training order, whose bytes reach `max_bytes` (all if fewer):
        a seeded random sample of whole training documents."""
        reached = np.cumsum(self.document_bytes[self.train_ids]) >= max_bytes
        taken = self.train_ids[: int(np.argmax(reached)) + 1 if reached.any() else len(self.train_ids)]
        wanted = np.sort(taken)
        shard_of = np.searchsorted(self.shard_starts, wanted, side="right") - 1
        jobs = [(self.shards[i], (wanted[shard_of == i] - self.shard_starts[i]).tolist()) for i in np.unique(shard_of).tolist()]
        texts = map_shards(_shard_texts, jobs, workers, mapper=self.mapper)
        by_id = dict(zip(wanted.tolist(), (text for shard_texts in texts for text in shard_texts)))
        return [by_id[i] for i in taken.tolist()]


def scan_corpus(source: str, val_fraction: float, split_seed: int, work: Path, *, text_field: str = DEFAULT_TEXT_FIELD,
                fingerprint: str | None = None, workers: int = 1, shard_bytes: int = SHARD_BYTES,
                progress: Progress | None = None, where: str = "corpus", mapper: ShardMapper | None = None) -> ScannedCorpus:
    """Cut `source` into shards, count each one's documents and bytes (shards scanned before are reused),
    and split it by whole documents (`where` names it in the error for too few documents)."""
    work.mkdir(parents=True, exist_ok=True)
    shards = make_shards(corpus_pieces(source, text_field), shard_bytes)
    todo = [shard for shard in shards if not (work / f"{shard.name}.bytes.npy").is_file()]
    map_shards(_scan_shard, [(shard, work) for shard in todo], workers, progress, f"reading {source}", mapper)
    sizes = [np.load(work / f"{shard.name}.bytes.npy") for shard in shards]
    document_bytes = np.concatenate([np.zeros(0, np.int64), *sizes])
    if len(document_bytes) < 2:
        if not len(document_bytes):
            raise ScarceError(f"corpus {source!r} is empty: it has no documents with any non-whitespace text")
        raise ScarceError(
            f"{where} {source!r} has {len(document_bytes)} document; a held-out split needs at least 2 "
            "(give a directory of files, a JSONL file, or a text file larger than 64 KiB)"
        )
    shard_starts = np.concatenate([[0], np.cumsum([len(size) for size in sizes])]).astype(np.int64)
    train_ids, val_ids = split_documents(len(document_bytes), val_fraction, split_seed)
    return ScannedCorpus(source, fingerprint or corpus_fingerprint(source, text_field), text_field, work, shards,
                         document_bytes, shard_starts, train_ids, val_ids, mapper)


def fit_tokenizer(kind: str, vocab_size: int, corpora: Sequence[ScannedCorpus], sample_bytes: int, root: Path,
                  console: Console, workers: int, what: str) -> tuple[Tokenizer, dict]:
    """A BPE trained on a seeded sample of the corpora's training documents (each corpus's first training
    documents, up to an equal share of `sample_bytes`; cached under root/tokenizers), or GPT-2's.
    Returns it and what the store records about its training sample."""
    if kind != "bpe":
        return gpt2_tokenizer(), {}
    share = max(1, sample_bytes // len(corpora))
    with console.status(f"reading the BPE's training sample{what}"):
        documents = [text for corpus in corpora for text in corpus.training_sample(share, workers)]
    with console.status(f"training a {vocab_size}-token BPE on {len(documents)} documents{what}"):
        tok = train_bpe(documents, vocab_size, cache_dir=root / "tokenizers")
    return tok, {"bpe_sample_bytes": sample_bytes, "bpe_sample_documents": len(documents),
                 "bpe_sample_text_bytes": sum(len(text.encode("utf-8")) for text in documents)}


def tokenizing_progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


def _gather(file: Path, ids: np.ndarray, counts: np.ndarray, starts: np.ndarray, shard_of: np.ndarray,
            parts: list[Path], itemsize: int) -> None:
    """Write the documents `ids` (their tokens, in that order) from the shards' part files into `file`."""
    descriptors = [os.open(part, os.O_RDONLY) for part in parts]
    try:
        with open(file, "wb") as out:
            pending, pending_bytes = [], 0
            for shard, start, size in zip(shard_of[ids].tolist(), (starts[ids] * itemsize).tolist(),
                                          (counts[ids] * itemsize).tolist()):
                pending.append(os.pread(descriptors[shard], size, start))
                pending_bytes += size
                if pending_bytes >= WRITE_BYTES:
                    out.write(b"".join(pending))
                    pending, pending_bytes = [], 0
            out.write(b"".join(pending))
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def write_corpus(folder: Path, corpus: ScannedCorpus, tok: Tokenizer, workers: int, progress: Progress, label: str,
                 val_fraction: float, split_seed: int, **extra_meta) -> dict:
    """One store directory's files: tokenize the shards not yet tokenized into part files, gather them into
    train.bin and val.bin in the split's order, write tokenizer.json and the document arrays, then
    meta.json (last: its presence means the directory is whole). Returns the meta."""
    dtype = token_dtype(tok.vocab_size)
    tokenizer_file = corpus.work / f"tokenizer-{tok.fingerprint}.json"
    if not tokenizer_file.is_file():
        tok.save(tokenizer_file)
    stems = [corpus.work / f"{shard.name}-{tok.fingerprint}" for shard in corpus.shards]
    todo = [shard for shard, stem in zip(corpus.shards, stems) if not stem.with_name(stem.name + ".tokens.npy").is_file()]
    map_shards(_tokenize_shard, [(shard, corpus.work, tokenizer_file) for shard in todo], workers, progress, label,
               corpus.mapper)

    counts = [np.load(stem.with_name(stem.name + ".tokens.npy")) for stem in stems]
    for shard, shard_counts, first, end in zip(corpus.shards, counts, corpus.shard_starts, corpus.shard_starts[1:]):
        if len(shard_counts) != end - first:
            raise ScarceError(f"{shard.pieces[0].path}: {len(shard_counts)} documents tokenized but {end - first} "
                              "scanned; did the corpus change while preparing? Delete the work directory "
                              f"{corpus.work} and prepare again")
    starts = np.concatenate([np.cumsum(c) - c for c in counts]).astype(np.int64)  # within each shard's part
    counts = np.concatenate(counts).astype(np.int64)
    shard_of = np.repeat(np.arange(len(corpus.shards)), np.diff(corpus.shard_starts))
    parts = [stem.with_name(stem.name + ".tokens.bin") for stem in stems]
    _gather(folder / "train.bin", corpus.train_ids, counts, starts, shard_of, parts, dtype.itemsize)
    _gather(folder / "val.bin", corpus.val_ids, counts, starts, shard_of, parts, dtype.itemsize)
    tok.save(folder / "tokenizer.json")
    arrays = {
        # Index of each stored document in the corpus (corpora.iter_documents order), in stored order.
        "train_document_ids": corpus.train_ids,
        "val_document_ids": corpus.val_ids,
        # Token offset where each stored document starts; it ends with an eot just before the next.
        "train_document_offsets": np.cumsum(counts[corpus.train_ids]) - counts[corpus.train_ids],
        "val_document_offsets": np.cumsum(counts[corpus.val_ids]) - counts[corpus.val_ids],
        # UTF-8 bytes of each validation document's text, so an evaluation of some of them has exact bits/byte.
        "val_document_bytes": corpus.document_bytes[corpus.val_ids],
    }
    for name, array in arrays.items():
        _save_npy(folder / f"{name}.npy", np.asarray(array, dtype=np.int64))
    meta = {
        "format_version": STORE_FORMAT_VERSION,
        "source": corpus.source,
        **extra_meta,
        "corpus_fingerprint": corpus.fingerprint,
        "text_field": corpus.text_field,
        "tokenizer_kind": tok.kind,
        "tokenizer_fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size,
        "eot_id": tok.eot_id,
        "mask_id": tok.mask_id,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "split_seed": split_seed,
        "train_documents": len(corpus.train_ids),
        "val_documents": len(corpus.val_ids),
        "train_tokens": int(counts[corpus.train_ids].sum()),
        "val_tokens": int(counts[corpus.val_ids].sum()),
        "val_bytes": int(arrays["val_document_bytes"].sum()),
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


def check_store_options(tokenizer: str, val_fraction: float, text_field: str, bpe_sample_bytes: int) -> None:
    if tokenizer not in TOKENIZER_KINDS:
        raise ScarceError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZER_KINDS)}")
    if not 0 < val_fraction < 1:
        raise ScarceError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if not isinstance(text_field, str) or not text_field:
        raise ScarceError(f"text_field must be a column or JSON field name, got {text_field!r}")
    if not isinstance(bpe_sample_bytes, int) or bpe_sample_bytes < 1:
        raise ScarceError(f"bpe_sample_bytes must be a positive integer, got {bpe_sample_bytes!r}")


def work_dir(target: Path) -> Path:
    """Where a store's part files wait until it is assembled: kept by a failed or killed prepare, so the
    next one resumes; deleted once the store is complete."""
    return target.parent / f".{target.name}.parts"


def prepare_store(
    source: str,
    *,
    tokenizer: str = "bpe",
    vocab_size: int = 8192,
    val_fraction: float = 0.05,
    split_seed: int = 0,
    text_field: str = DEFAULT_TEXT_FIELD,
    bpe_sample_bytes: int = BPE_SAMPLE_BYTES,
    root: Path | None = None,
    workers: int | None = None,
    shard_bytes: int = SHARD_BYTES,
    mapper: ShardMapper | None = None,
) -> TokenStore:
    """Tokenize `source` into a store under `root` (default $SCARCE_HOME/data), or open the cached one.

    `workers` processes (default: every usable core) scan and tokenize shards of about `shard_bytes`, or
    `mapper` runs them elsewhere (scarce.executors.shard_mapper); none of these changes a byte of the store."""
    check_store_options(tokenizer, val_fraction, text_field, bpe_sample_bytes)
    root = Path(root) if root is not None else scarce_home() / "data"
    workers = workers or default_workers()
    fingerprint = corpus_fingerprint(source, text_field)
    # GPT-2's vocabulary is fixed, so the asked-for vocab_size and BPE sample must not split its cache.
    key_vocab = f"{vocab_size}:{bpe_sample_bytes}" if tokenizer == "bpe" else "gpt2"
    key = f"store-v{STORE_FORMAT_VERSION}:{fingerprint}:{tokenizer}:{key_vocab}:{val_fraction!r}:{split_seed}"
    target = root / f"{corpus_name(source)}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (target / "meta.json").is_file():
        return open_store(target)

    writable_dir(root, "the token store cache ($SCARCE_HOME/data)")
    console = Console(stderr=True)
    with tokenizing_progress(console) as progress:
        corpus = scan_corpus(source, val_fraction, split_seed, work_dir(target), text_field=text_field,
                             fingerprint=fingerprint, workers=workers, shard_bytes=shard_bytes, progress=progress,
                             mapper=mapper)
    tok, sample = fit_tokenizer(tokenizer, vocab_size, [corpus], bpe_sample_bytes, root, console, workers, "")
    meta = {}

    def write(folder: Path) -> None:
        with tokenizing_progress(console) as progress:
            meta.update(write_corpus(folder, corpus, tok, workers, progress, f"tokenizing {source}", val_fraction,
                                     split_seed, **sample))

    build_into(target, "meta.json", write)
    shutil.rmtree(work_dir(target), ignore_errors=True)
    console.print(
        f"prepared {target}: {meta['train_tokens']:,} train tokens, {meta['val_tokens']:,} val tokens, vocab {tok.vocab_size}"
    )
    return open_store(target)
