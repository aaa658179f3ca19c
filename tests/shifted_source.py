"""A batch source that exists only for tests: windows at random offsets of the budget, with a random loss
mask, rebuilt from (data seed, step) alone. Importing it adds data.source = "test-shifted" to the source table
and to the names a config accepts (as a new source is added to scarce), so the trainer's exact-resume test
covers a second source (and a loss mask) besides the epoch loader."""

import numpy as np
import torch

import scarce.config
import scarce.data.sources
from scarce.data.batch import Batch
from scarce.errors import ScarceError


class ShiftedWindows:
    def __init__(self, tokens, seq_len, batch_size, steps, seed, rank=0, world_size=1):
        self.tokens, self.seq_len, self.batch_size, self.steps = tokens, seq_len, batch_size, steps
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.unique_tokens, self.step = len(tokens), 0

    def batch(self, step):
        rng = np.random.default_rng((self.seed, step))
        starts = rng.integers(0, len(self.tokens) - self.seq_len - 1, self.batch_size)
        mask = torch.from_numpy(rng.random((self.batch_size, self.seq_len)) < 0.75)
        rows = torch.from_numpy(np.stack([self.tokens[s : s + self.seq_len + 1] for s in starts]).astype(np.int64))
        mine = slice(self.rank, None, self.world_size)
        return Batch(rows[mine, :-1], rows[mine, 1:], mask[mine], global_targets=int(mask.sum()))

    def __iter__(self):
        while self.step < self.steps:
            batch = self.batch(self.step)
            self.step += 1
            yield batch

    def tokens_seen(self, steps_done):
        return steps_done * self.batch_size * self.seq_len

    def epochs_completed(self, steps_done):
        return 0.0

    def state_dict(self):
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state):
        if state["seed"] != self.seed:
            raise ScarceError(f"checkpoint's source has seed={state['seed']} but this run has seed={self.seed}")
        self.step = state["step"]


def shifted_source(config, store, rank=0, world_size=1):
    tokens = store.budget(config.data.unique_tokens or store.train_token_count)
    steps = config.train.epochs * len(tokens) // (config.model.seq_len * config.train.batch_size)
    return ShiftedWindows(tokens, config.model.seq_len, config.train.batch_size, steps, config.train.data_seed, rank, world_size)


scarce.data.sources.SOURCES["test-shifted"] = shifted_source
scarce.config.SOURCE_NAMES = (*scarce.config.SOURCE_NAMES, "test-shifted")
