"""Epochs over a fixed budget of unique tokens, addressable by step so resume is exact.

The budget is cut into sequences of seq_len + 1 tokens (consecutive sequences share one boundary token,
so every token is an input and every token but the first is a target). Each epoch visits every sequence
exactly once, in a permutation seeded by (data seed, epoch). Epochs are laid end to end as one stream
of sequence indices and batches are consecutive slices of it, so E epochs are exactly E passes and a
batch may straddle an epoch boundary; only the very last batch can be short.

The loader's whole state is the next step: any batch can be rebuilt from (seed, step) alone. It is the
default batch source (scarce.data.sources): the trainer sees only Batches and the accounting below.
"""

import numpy as np
import torch

from scarce.data.batch import Batch
from scarce.errors import ScarceError


class EpochLoader:
    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        batch_size: int,
        epochs: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if epochs < 1:
            raise ScarceError(f"train.epochs must be at least 1, got {epochs}")
        if len(tokens) < seq_len + 1:
            raise ScarceError(
                f"model.seq_len={seq_len} needs at least {seq_len + 1} tokens per sequence, but the training "
                f"budget has only {len(tokens)} unique tokens: lower model.seq_len or raise data.unique_tokens"
            )
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.epochs, self.seed, self.rank, self.world_size = epochs, seed, rank, world_size
        self.n_sequences = (len(tokens) - 1) // seq_len
        self.total_sequences = self.n_sequences * epochs
        self.steps = -(-self.total_sequences // batch_size)
        # the tokens the sequences cover: up to seq_len - 1 at the end of the budget fit no whole sequence
        self.unique_tokens = self.n_sequences * seq_len + 1
        self._permutations: dict[int, np.ndarray] = {}
        self.step = 0

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng((self.seed, epoch)).permutation(self.n_sequences)}
        return self._permutations[epoch]

    def sequence_indices(self, step: int) -> np.ndarray:
        """Indices (into the budget's sequences) of the whole global batch at `step`."""
        start = step * self.batch_size
        return self.stream_indices(start, min(start + self.batch_size, self.total_sequences))

    def stream_indices(self, start: int, stop: int) -> np.ndarray:
        """Indices of the stream's sequences start..stop-1, the stream being the seeded epochs one after another."""
        parts = [np.zeros(0, dtype=np.int64)]
        while start < stop:
            epoch, offset = divmod(start, self.n_sequences)
            take = min(stop - start, self.n_sequences - offset)
            parts.append(self._permutation(epoch)[offset : offset + take])
            start += take
        return np.concatenate(parts)

    def batch(self, step: int) -> Batch:
        """This rank's share of the batch at `step`."""
        indices = self.sequence_indices(step)
        mine = np.sort(indices[self.rank :: self.world_size])  # sorted: sequential reads from the memmap
        rows = np.zeros((len(mine), self.seq_len + 1), dtype=np.int64)
        for row, start in zip(rows, mine * self.seq_len):
            row[:] = self.tokens[start : start + self.seq_len + 1]
        rows = torch.from_numpy(rows)
        return Batch(rows[:, :-1], rows[:, 1:], None, global_targets=len(indices) * self.seq_len)

    def __iter__(self):
        while self.step < self.steps:
            batch = self.batch(self.step)
            self.step += 1
            yield batch

    def epochs_completed(self, steps_done: int) -> float:
        return min(steps_done * self.batch_size, self.total_sequences) / self.n_sequences

    def tokens_seen(self, steps_done: int) -> int:
        return min(steps_done * self.batch_size, self.total_sequences) * self.seq_len

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "n_sequences": self.n_sequences, "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "n_sequences", "epochs"):
            if state[key] != mine[key]:
                raise ScarceError(
                    f"checkpoint's data loader has {key}={state[key]} but this run has {key}={mine[key]}: "
                    "the config changed since the checkpoint was written"
                )
        self.step = state["step"]



def epoch_source(config, store, rank: int = 0, world_size: int = 1) -> EpochLoader:
    """E epochs (train.epochs) over the first D tokens (data.unique_tokens) of the store's training split."""
    tokens = store.budget(config.data.unique_tokens or store.train_token_count)
    train, seq_len = config.train, config.model.seq_len
    if train.tokens is None:
        return EpochLoader(tokens, seq_len, train.batch_size, train.epochs, train.data_seed, rank, world_size)
    # train.tokens sets the length in whole steps, over as many epochs as it takes (a WSD branch's length)
    steps = -(-train.tokens // (train.batch_size * seq_len))
    sequences = max(1, (len(tokens) - 1) // seq_len)
    epochs = -(-steps * train.batch_size // sequences)
    loader = EpochLoader(tokens, seq_len, train.batch_size, epochs, train.data_seed, rank, world_size)
    loader.steps = steps  # the same stream of epochs, cut after `steps` whole batches
    return loader
