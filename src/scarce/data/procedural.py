"""A stream of procedural batches for the trainer: the BatchSource of scarce.data.sources.

Every row is seq_len + 1 tokens (inputs seq_len). The global batch at step s is generated from a
generator seeded by (seed, s) alone, so any batch can be rebuilt from its step and resume is exact; each
rank keeps rows rank::world_size of it, as EpochLoader does.

Fitting examples of L tokens into rows of R = seq_len + 1:
- L <= R: examples are laid end to end, R // L per row (pack=False: one per row), the rest of the row
  filled with the task's pad token. Each example's first token is never a target, so nothing is learnt
  across an example boundary, and pad never carries loss.
- L > R, for plain next-token tasks (Dyck, Dyck shuffle, ECA): each example is cut into windows of R
  tokens that share one boundary token (starts 0, seq_len, 2·seq_len, …; the last one padded), so every
  token after the first is a target exactly once. Tasks whose loss needs the whole example (an output
  computed from an input) refuse: raise seq_len or shorten the task.

`FrontLoaded` puts a procedural stream's batches before another source's (procedural.mode = "mix").
Both are in the table of scarce.data.sources: data.source = "procedural" trains on the stream of
procedural.task (with `ProceduralData` as its store), and procedural.mode = "mix" front-loads a source.

Accounting: tokens_seen counts the positions trained on (steps × batch_size × seq_len over all ranks,
what the FLOPs follow), counted_targets the positions whose loss counted. A stream has no fixed budget
of unique tokens: unique_tokens is 0, and epochs_completed is always 0.0.
"""

from collections.abc import Iterator
from functools import cached_property

import numpy as np
import torch

from scarce.data.batch import Batch, BatchSource
from scarce.errors import ScarceError
from scarce.procedural.base import Examples, Task
from scarce.procedural.diagnostics import DiagnosticTask
from scarce.procedural.registry import get_task

EVAL_SEED = 20_260_129  # the evaluation examples of a task without a held-out set of its own


class ProceduralSource:
    unique_tokens = 0

    def __init__(
        self,
        task: Task,
        seq_len: int,
        batch_size: int,
        steps: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pack: bool = True,
    ):
        if seq_len < 1 or batch_size < 1 or steps < 0:
            raise ScarceError(f"seq_len={seq_len} and batch_size={batch_size} must be >= 1 and steps={steps} >= 0")
        if not 0 <= rank < world_size:
            raise ScarceError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
        length, row = task.example_tokens, seq_len + 1
        if length > row and not task.splittable:
            raise ScarceError(
                f"task {task.name!r} makes examples of {length} tokens, longer than a row of model.seq_len + 1 = {row}, "
                f"and its loss needs the whole example: set model.seq_len >= {length - 1} or shorten the task"
            )
        self.task, self.seq_len, self.batch_size, self.steps, self.seed = task, seq_len, batch_size, steps, seed
        self.rank, self.world_size, self.pack = rank, world_size, pack
        self.step = 0
        self.counted_targets = 0  # loss positions in the batches handed out so far, over all ranks

    def _rows(self, examples: Examples) -> tuple[np.ndarray, np.ndarray]:
        """Examples fitted into rows of seq_len + 1 tokens: (tokens, loss_mask), at least batch_size rows."""
        n, length = examples.tokens.shape
        row, pad = self.seq_len + 1, self.task.pad
        if length > row:  # windows sharing one boundary token
            windows = -(-(length - 1) // self.seq_len)
            padded = windows * self.seq_len + 1
            tokens = np.full((n, padded), pad, dtype=examples.tokens.dtype)
            mask = np.zeros((n, padded), dtype=bool)
            tokens[:, :length], mask[:, :length] = examples.tokens, examples.loss_mask
            starts = np.arange(windows) * self.seq_len
            index = starts[:, None] + np.arange(row)
            return tokens[:, index].reshape(-1, row), mask[:, index].reshape(-1, row)
        per_row = self.examples_per_row
        tokens = np.full((n // per_row, row), pad, dtype=examples.tokens.dtype)
        mask = np.zeros((n // per_row, row), dtype=bool)
        tokens[:, : per_row * length] = examples.tokens.reshape(-1, per_row * length)
        mask[:, : per_row * length] = examples.loss_mask.reshape(-1, per_row * length)
        return tokens, mask

    @property
    def examples_per_row(self) -> int:
        return max(1, (self.seq_len + 1) // self.task.example_tokens) if self.pack else 1

    def examples_per_step(self) -> int:
        length = self.task.example_tokens
        if length > self.seq_len + 1:
            return -(-self.batch_size // -(-(length - 1) // self.seq_len))
        return self.batch_size * self.examples_per_row

    def global_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole global batch at `step`: tokens (batch_size, seq_len + 1) and the per-token loss mask."""
        rng = np.random.default_rng((self.seed, step))
        tokens, mask = self._rows(self.task.generate(rng, self.examples_per_step()))
        return tokens[: self.batch_size], mask[: self.batch_size]

    def batch(self, step: int) -> Batch:
        tokens, mask = self.global_rows(step)
        targets_mask = mask[:, 1:]
        mine = slice(self.rank, None, self.world_size)
        rows = torch.from_numpy(tokens[mine].astype(np.int64))
        return Batch(rows[:, :-1], rows[:, 1:], torch.from_numpy(np.ascontiguousarray(targets_mask[mine])), int(targets_mask.sum()))

    def __iter__(self) -> Iterator[Batch]:
        while self.step < self.steps:
            batch = self.batch(self.step)
            self.step += 1
            self.counted_targets += batch.global_targets
            yield batch

    def tokens_seen(self, steps_done: int) -> int:
        return steps_done * self.batch_size * self.seq_len

    def epochs_completed(self, steps_done: int) -> float:
        return 0.0

    def _config(self) -> dict:
        return {
            "task": self.task.name, "params": self.task.params(), "seed": self.seed, "seq_len": self.seq_len,
            "batch_size": self.batch_size, "pack": self.pack,
        }

    def state_dict(self) -> dict:
        return {"step": self.step, "counted_targets": self.counted_targets, **self._config()}

    def load_state_dict(self, state: dict) -> None:
        for key, value in self._config().items():
            if state.get(key) != value:
                raise ScarceError(
                    f"checkpoint's procedural source has {key}={state.get(key)!r} but this run has {key}={value!r}: "
                    "the config changed since the checkpoint was written"
                )
        self.step, self.counted_targets = state["step"], state["counted_targets"]


class FrontLoaded:
    """`procedural` batches first, then every batch of `natural`, as one source (procedural.mode = "mix").

    Procedural token t becomes id `offset` + t of the natural vocabulary (offset = natural vocabulary −
    task vocabulary: the last-learned, rarest BPE merges), so the one model reads both. Its accounting
    is the natural source's plus the procedural steps' tokens; resume is exact (both are addressable by step).
    """

    def __init__(self, procedural: ProceduralSource, natural: BatchSource, offset: int):
        self.procedural, self.natural, self.offset = procedural, natural, offset
        self.steps = procedural.steps + natural.steps
        self.unique_tokens = natural.unique_tokens
        self.step = 0

    def __iter__(self) -> Iterator[Batch]:
        first = self.procedural.steps
        while self.step < first:
            batch = self.procedural.batch(self.step)
            self.step += 1
            yield Batch(batch.inputs + self.offset, batch.targets + self.offset, batch.loss_mask, batch.global_targets)
        self.natural.step = self.step - first
        for batch in self.natural:
            self.step = first + self.natural.step
            yield batch

    def tokens_seen(self, steps_done: int) -> int:
        first = self.procedural.steps
        return self.procedural.tokens_seen(min(steps_done, first)) + self.natural.tokens_seen(max(0, steps_done - first))

    def epochs_completed(self, steps_done: int) -> float:
        return self.natural.epochs_completed(max(0, steps_done - self.procedural.steps))

    def _config(self) -> dict:
        return {"procedural": self.procedural._config(), "procedural_steps": self.procedural.steps, "offset": self.offset}

    def state_dict(self) -> dict:
        return {"step": self.step, "natural": self.natural.state_dict(), **self._config()}

    def load_state_dict(self, state: dict) -> None:
        for key, value in self._config().items():
            if state.get(key) != value:
                raise ScarceError(
                    f"checkpoint's front-loaded source has {key}={state.get(key)!r} but this run has {key}={value!r}: "
                    "the config changed since the checkpoint was written"
                )
        self.natural.load_state_dict(state["natural"])
        self.step = state["step"]


def task_of(config) -> Task:
    """The task a run's procedural section names, with its parameters."""
    return get_task(config.procedural.task, config.procedural.params)


class ProceduralData:
    """What the trainer needs of a procedural run's "store": the task's vocabulary and an evaluation sample.

    The examples are fixed for the run: a diagnostic's 4000 held-out examples (scarce.procedural.diagnostics),
    which its training stream never emits; for any other task, enough examples for data.eval_tokens drawn
    from a fixed seed (never one of the stream's, which are seeded by (data seed, step)).
    """

    train_token_count = 0  # a stream has no fixed budget of unique tokens

    def __init__(self, task: Task, seq_len: int):
        self.task, self.seq_len = task, seq_len
        self.vocab_size = task.vocab_size

    def eval_sample(self, max_tokens: int | None = None) -> "ProceduralSample":
        if isinstance(self.task, DiagnosticTask):
            examples = self.task.heldout()
        else:
            count = -(-(max_tokens or 65536) // self.task.example_tokens)
            examples = self.task.generate(np.random.default_rng(EVAL_SEED), count)
        return ProceduralSample(self.task, examples, self.seq_len)


class ProceduralSample:
    """Fixed examples of a task, one per row (pack=False), with the task's loss mask; scored by
    scarce.evals.procedural (loss on the counted targets, and a diagnostic's accuracy)."""

    def __init__(self, task: Task, examples: Examples, seq_len: int):
        self.task = task
        rows = ProceduralSource(task, seq_len, batch_size=1, steps=0, seed=0, pack=False)
        self.tokens, self.mask = rows._rows(examples)  # (rows, seq_len + 1): long examples cut into windows
        # accuracy needs whole examples, one per row
        self.scored = isinstance(task, DiagnosticTask) and examples.tokens.shape[1] <= seq_len + 1

    @cached_property
    def batch(self) -> Batch:
        tokens = torch.from_numpy(self.tokens.astype(np.int64))
        mask = torch.from_numpy(np.ascontiguousarray(self.mask[:, 1:]))
        return Batch(tokens[:, :-1], tokens[:, 1:], mask, int(mask.sum()))


def procedural_data(config) -> ProceduralData:
    return ProceduralData(task_of(config), config.model.seq_len)


def procedural_stream(config, store, rank: int = 0, world_size: int = 1) -> ProceduralSource:
    """train.tokens of procedural.task's stream (seeded by train.data_seed), in the task's own vocabulary."""
    train, seq_len = config.train, config.model.seq_len
    steps = -(-train.tokens // (train.batch_size * seq_len))
    return ProceduralSource(task_of(config), seq_len, train.batch_size, steps, train.data_seed, rank, world_size)



def front_load(source: BatchSource, config, store, rank: int = 0, world_size: int = 1) -> BatchSource:
    """procedural.mode = "mix": procedural batches making procedural.fraction of the run's training
    tokens, before the run's own; every other config: the source unchanged."""
    cfg = config.procedural
    if cfg.task is None or cfg.mode != "mix" or config.data.source == "procedural":
        return source
    task = task_of(config)
    if task.vocab_size > store.vocab_size:
        raise ScarceError(f"procedural.task={cfg.task!r} has {task.vocab_size} tokens, more than the corpus's vocabulary "
                          f"of {store.vocab_size}: front-loading maps them into it (raise data.vocab_size or shrink the task)")
    steps = round(cfg.fraction * source.steps / (1 - cfg.fraction))
    train = config.train
    procedural = ProceduralSource(task, config.model.seq_len, train.batch_size, steps, train.data_seed, rank, world_size)
    return FrontLoaded(procedural, source, store.vocab_size - task.vocab_size)
