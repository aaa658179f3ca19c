"""Real/synthetic mixtures for sequence-level distillation, and the synthetic token files they read.

A synthetic token file is what teachers sampled (`scarce sample`, `scarce distill`), laid out like a token
store's train.bin: flat token ids, each document followed by end-of-text. `<name>.bin` holds the tokens,
`<name>.json` beside it what they are: dtype, count, the tokenizer and store they belong to, and how they
were sampled. A file is written once (atomically) and reused by every student that names it.

`MixtureSource` is a batch source (scarce.data.sources): of its steps = ⌈real steps / (1 − w)⌉, a seeded
random subset of exactly steps − real steps is synthetic, so every step is synthetic with probability w
and the student still makes exactly the configured passes over the real data (Kim et al. 2025, arXiv
2509.14786). Which steps are synthetic depends on (seed, steps, w) alone, so any step's batch can be
rebuilt from the step number and resume is exact.
"""

import json
import math
from pathlib import Path

import numpy as np

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
    """Real batches (an EpochLoader) and synthetic batches (epochs over the synthetic tokens), mixed per step."""

    def __init__(self, real: EpochLoader, synthetic: np.ndarray | None, weight: float, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= weight < 1:
            raise ScarceError(f"distill.weight={weight}: the synthetic fraction w must be in [0, 1)")
        self.real, self.weight, self.seed = real, weight, seed
        self.steps = math.ceil(round(real.steps / (1 - weight), 6))  # rounded: 150 / (1 − 0.9) is 1500, not 1501
        synthetic_steps = self.steps - real.steps
        self.is_synthetic = np.zeros(self.steps, dtype=bool)
        rng = np.random.default_rng([seed, MIXTURE_SEED_SALT])
        self.is_synthetic[rng.choice(self.steps, synthetic_steps, replace=False)] = True
        # the index of each step's batch within its own stream
        self.index = np.where(self.is_synthetic, np.cumsum(self.is_synthetic) - 1, np.cumsum(~self.is_synthetic) - 1)
        self.synthetic = None
        if synthetic_steps:
            if synthetic is None:
                raise ScarceError("distill.weight > 0 needs synthetic tokens (distill.synthetic)")
            if len(synthetic) < real.seq_len + 1:
                raise ScarceError(
                    f"the synthetic tokens ({len(synthetic)}) do not fill one sequence of model.seq_len={real.seq_len}; "
                    "sample more of them"
                )
            per_epoch = (len(synthetic) - 1) // real.seq_len
            epochs = max(1, math.ceil(synthetic_steps * real.batch_size / per_epoch))
            self.synthetic = EpochLoader(synthetic, real.seq_len, real.batch_size, epochs, seed, rank, world_size)
        self.unique_tokens = real.unique_tokens  # D counts the real data; the synthetic text is derived from it
        self.step = 0

    def batch(self, step: int) -> Batch:
        stream = self.synthetic if self.is_synthetic[step] else self.real
        return stream.batch(int(self.index[step]))

    def __iter__(self):
        while self.step < self.steps:
            batch = self.batch(self.step)
            self.step += 1
            yield batch

    def _counts(self, steps_done: int) -> tuple[int, int]:
        """(real, synthetic) steps among the first `steps_done`."""
        synthetic = int(self.is_synthetic[:steps_done].sum())
        return min(steps_done, self.steps) - synthetic, synthetic

    def tokens_seen(self, steps_done: int) -> int:
        real, synthetic = self._counts(steps_done)
        return self.real.tokens_seen(real) + (self.synthetic.tokens_seen(synthetic) if self.synthetic else 0)

    def epochs_completed(self, steps_done: int) -> float:
        """Passes over the real data."""
        return self.real.epochs_completed(self._counts(steps_done)[0])

    def state_dict(self) -> dict:
        self.real.step = self._counts(self.step)[0]
        return {"step": self.step, "weight": self.weight, "seed": self.seed, "steps": self.steps, "real": self.real.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("weight", "seed", "steps"):
            if state.get(key) != getattr(self, key):
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
    return MixtureSource(real, synthetic, config.distill.weight, config.train.data_seed, rank, world_size)
