"""Real/synthetic mixtures for sequence-level distillation, and the synthetic token files they read.

A synthetic token file is what teachers sampled (`scarce sample`, `scarce distill`), laid out like a token
store's train.bin: flat token ids, each document followed by end-of-text. `<name>.bin` holds the tokens,
`<name>.json` beside it what they are: dtype, count, the tokenizer and store they belong to, and how they
were sampled. A file is written once (atomically) and reused by every student that names it.

`MixtureSource` is a batch source (scarce.data.sources). With `per="example"` (distill.mix, the default),
of its ⌈real sequences / (1 − w)⌉ sequences a seeded random subset of exactly (that − real sequences) is
synthetic: every sequence is synthetic with probability w, drawn per example as levanter's mixtures draw
their source, so a batch mixes both. With `per="batch"`, of its ⌈real steps / (1 − w)⌉ steps a seeded
subset of exactly (that − real steps) is synthetic, whole batches of one kind. Either way the student still
makes exactly the configured passes over the real data (Kim et al. 2025, arXiv 2509.14786), and what is
synthetic depends on (seed, length, w) alone, so any step's batch can be rebuilt from the step number and
resume is exact.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch

from scarce.atomic import write_bytes_atomic, write_json_atomic
from scarce.data.batch import Batch, BatchSource
from scarce.data.loader import EpochLoader
from scarce.data.store import TokenStore, token_dtype
from scarce.errors import ScarceError

SYNTHETIC_FORMAT = "scarce.synthetic/1"
MIXTURE_SEED_SALT = 0x5EED  # keeps the synthetic-step draw apart from the data-order permutations


def write_synthetic(path: Path, documents: list[list[int]], store: TokenStore, about: dict) -> Path:
    """Write documents (token lists without end-of-text) as `path` (.bin) and its .json description."""
    path = Path(path)
    dtype = token_dtype(store.vocab_size)
    pieces = [np.asarray([*doc, store.eot_id], dtype=dtype) for doc in documents]
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, tokens.tobytes())
    meta = {
        "format": SYNTHETIC_FORMAT, "dtype": dtype.name, "tokens": int(tokens.size), "documents": len(documents),
        "vocab_size": store.vocab_size, "eot_id": store.eot_id, "tokenizer_fingerprint": store.tokenizer.fingerprint,
        "store": str(store.path), **about,
    }
    write_json_atomic(path.with_suffix(".json"), meta)  # last: its presence means the .bin is complete
    return path


def open_synthetic(path: Path, store: TokenStore) -> tuple[np.ndarray, dict]:
    """The tokens of a synthetic file (a read-only memmap) and its description; they must be in `store`'s vocabulary."""
    path = Path(path)
    meta_file = path.with_suffix(".json")
    if not path.is_file() or not meta_file.is_file():
        raise ScarceError(f"distill.synthetic={path}: no synthetic token file there (it needs {path.name} and {meta_file.name}); "
                          "sample one with `scarce distill --mode sequence`")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ScarceError(f"{meta_file} is not valid JSON ({e}); sample the synthetic tokens again") from None
    if meta.get("format") != SYNTHETIC_FORMAT:
        raise ScarceError(f"{meta_file} is not a synthetic token description ({SYNTHETIC_FORMAT})")
    if meta["tokenizer_fingerprint"] != store.tokenizer.fingerprint or meta["vocab_size"] != store.vocab_size:
        raise ScarceError(
            f"distill.synthetic={path} was sampled in another vocabulary (tokenizer {meta['tokenizer_fingerprint']}, "
            f"{meta['vocab_size']} tokens) than this run's store {store.path} (tokenizer {store.tokenizer.fingerprint}, "
            f"{store.vocab_size} tokens): the teachers and the student must share one tokenizer"
        )
    dtype = np.dtype(meta["dtype"])
    if path.stat().st_size != meta["tokens"] * dtype.itemsize:
        raise ScarceError(f"{path}: expected {meta['tokens']} tokens per {meta_file.name}, found {path.stat().st_size} bytes")
    return np.memmap(path, dtype=dtype, mode="r", shape=(meta["tokens"],)), meta


class MixtureSource:
    """Real sequences (an EpochLoader's stream) and synthetic ones (epochs over the synthetic tokens), mixed
    per example or per batch.

    Both modes lay out one stream of positions, each real or synthetic (`is_synthetic`), and cut it into
    steps (`step_starts`); a real position takes the real stream's next sequence, a synthetic one the
    synthetic stream's next."""

    def __init__(self, real: EpochLoader, synthetic: np.ndarray | None, weight: float, seed: int, rank: int = 0,
                 world_size: int = 1, per: str = "example"):
        if not 0 <= weight < 1:
            raise ScarceError(f"distill.weight={weight}: the synthetic fraction w must be in [0, 1)")
        if per not in ("example", "batch"):
            raise ScarceError(f"distill.mix={per!r}: choose example or batch")
        self.real, self.weight, self.seed, self.per, self.rank, self.world_size = real, weight, seed, per, rank, world_size
        batch_size = real.batch_size
        real_sequences = min(real.steps * batch_size, real.total_sequences)
        rng = np.random.default_rng([seed, MIXTURE_SEED_SALT])
        # rounded: 150 / (1 − 0.9) is 1500, not 1501
        if per == "example":
            positions = math.ceil(round(real_sequences / (1 - weight), 6))
            self.is_synthetic = np.zeros(positions, dtype=bool)
            self.is_synthetic[rng.choice(positions, positions - real_sequences, replace=False)] = True
            self.steps = -(-positions // batch_size)
            sizes = np.full(self.steps, batch_size)
            sizes[-1] = positions - (self.steps - 1) * batch_size
        else:
            self.steps = math.ceil(round(real.steps / (1 - weight), 6))
            synthetic_step = np.zeros(self.steps, dtype=bool)
            synthetic_step[rng.choice(self.steps, self.steps - real.steps, replace=False)] = True
            real_sizes = np.diff(np.minimum(np.arange(real.steps + 1) * batch_size, real_sequences))
            sizes = np.where(synthetic_step, batch_size, 0)
            sizes[~synthetic_step] = real_sizes  # the real batches as the real loader cuts them (a short last one)
            self.is_synthetic = np.repeat(synthetic_step, sizes)
        self.step_starts = np.concatenate([[0], np.cumsum(sizes)])
        # each position's index within its own stream
        synthetic_before = np.cumsum(self.is_synthetic) - self.is_synthetic
        self.index = np.where(self.is_synthetic, synthetic_before, np.arange(len(self.is_synthetic)) - synthetic_before)
        synthetic_sequences = int(self.is_synthetic.sum())
        self.synthetic = None
        if synthetic_sequences:
            if synthetic is None:
                raise ScarceError("distill.weight > 0 needs synthetic tokens (distill.synthetic)")
            if len(synthetic) < real.seq_len + 1:
                raise ScarceError(
                    f"the synthetic tokens ({len(synthetic)}) do not fill one sequence of model.seq_len={real.seq_len}; "
                    "sample more of them"
                )
            per_epoch = (len(synthetic) - 1) // real.seq_len
            self.synthetic = EpochLoader(synthetic, real.seq_len, batch_size, max(1, math.ceil(synthetic_sequences / per_epoch)),
                                         seed, rank, world_size)
        self.unique_tokens = real.unique_tokens  # D counts the real data; the synthetic text is derived from it
        self.step = 0

    def batch(self, step: int) -> Batch:
        """This rank's rows of the step's positions: real ones, then synthetic ones, each in sequence order
        (a step of one kind reads exactly as its stream's loader would)."""
        start, stop = self.step_starts[step], self.step_starts[step + 1]
        mine = np.arange(start, stop)[self.rank :: self.world_size]
        rows = []
        for stream, flag in ((self.real, False), (self.synthetic, True)):
            chosen = mine[self.is_synthetic[mine] == flag]
            if len(chosen):
                first, last = self.index[chosen].min(), self.index[chosen].max() + 1
                indices = np.sort(stream.stream_indices(first, last)[self.index[chosen] - first])
                rows += [stream.tokens[i * stream.seq_len: i * stream.seq_len + stream.seq_len + 1] for i in indices]
        rows = torch.from_numpy(np.asarray(rows, dtype=np.int64).reshape(-1, self.real.seq_len + 1))
        return Batch(rows[:, :-1], rows[:, 1:], None, global_targets=int(stop - start) * self.real.seq_len)

    def __iter__(self):
        while self.step < self.steps:
            batch = self.batch(self.step)
            self.step += 1
            yield batch

    def _counts(self, steps_done: int) -> tuple[int, int]:
        """(real, synthetic) sequences among the first `steps_done` steps."""
        positions = int(self.step_starts[min(steps_done, self.steps)])
        synthetic = int(self.is_synthetic[:positions].sum())
        return positions - synthetic, synthetic

    def tokens_seen(self, steps_done: int) -> int:
        return sum(self._counts(steps_done)) * self.real.seq_len

    def epochs_completed(self, steps_done: int) -> float:
        """Passes over the real data."""
        return self._counts(steps_done)[0] / self.real.n_sequences

    def state_dict(self) -> dict:
        return {"step": self.step, "weight": self.weight, "seed": self.seed, "steps": self.steps, "per": self.per,
                "real": self.real.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("weight", "seed", "steps", "per"):
            if state.get(key, "batch" if key == "per" else None) != getattr(self, key):  # older checkpoints: per batch
                raise ScarceError(
                    f"checkpoint's mixture has {key}={state.get(key)} but this run has {key}={getattr(self, key)}: "
                    "the config changed since the checkpoint was written"
                )
        self.real.load_state_dict(state["real"])
        self.step = state["step"]


def mix_synthetic(real: EpochLoader, config, store: TokenStore, rank: int = 0, world_size: int = 1) -> BatchSource:
    """distill.kind = "sequence": the run's real batches mixed with distill.synthetic's; otherwise `real` unchanged."""
    if config.distill.kind != "sequence":
        return real
    synthetic, _ = open_synthetic(config.distill.synthetic, store)
    return MixtureSource(real, synthetic, config.distill.weight, config.train.data_seed, rank, world_size,
                         per=config.distill.mix)
