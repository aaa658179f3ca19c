"""What every procedural generator shares: a batch of examples, the task interface, the shuffled control.

A generator makes `Examples`: `tokens` (n, L) and a per-token `loss_mask` (n, L). The training row of a
sequence is inputs = tokens[:-1], targets = tokens[1:], so `loss_mask[i, t]` says whether token t is a
target whose loss counts (it is predicted from tokens[:t]). `loss_mask[:, 0]` is always False: the first
token is never a target. Pad tokens never carry loss.
"""

from dataclasses import dataclass
from functools import cache
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scarce.errors import ScarceError, format_validation_error

TOKEN_DTYPE = np.int32  # narrow enough to generate fast; the batch source hands torch int64


@dataclass(frozen=True)
class Examples:
    tokens: np.ndarray  # TOKEN_DTYPE (n, L)
    loss_mask: np.ndarray  # bool (n, L): True where this token is a target whose loss counts

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, rows) -> "Examples":
        return Examples(self.tokens[rows], self.loss_mask[rows])

    @staticmethod
    def concat(parts: list["Examples"]) -> "Examples":
        return Examples(np.concatenate([p.tokens for p in parts]), np.concatenate([p.loss_mask for p in parts]))


class Task(BaseModel):
    """A generator family with its parameters (the pydantic fields). Subclasses define `_generate`,
    `check` (is each example a correct instance of the task?) and the token layout properties."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    description: ClassVar[str]
    # A plain next-token task (Dyck, ECA) can be cut into context windows shorter than one example; a task
    # whose counted targets depend on the whole example (input → output) cannot.
    splittable: ClassVar[bool] = False

    shuffled: bool = Field(False, description="the control: each example's tokens in a random order")

    @property
    def example_tokens(self) -> int:
        """Tokens per example (L)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def pad(self) -> int:
        """The token that fills rows past an example's end (never a counted target)."""
        raise NotImplementedError

    def _generate(self, rng: np.random.Generator, n: int) -> Examples:
        raise NotImplementedError

    def check(self, examples: Examples) -> np.ndarray:
        """bool (n,): True where the example is a correct instance of the (unshuffled) task, mask included."""
        raise NotImplementedError

    def heldout(self) -> Examples | None:
        """A fixed evaluation set that training streams must never emit, or None."""
        return None

    def generate(self, rng: np.random.Generator, n: int) -> Examples:
        """n training examples drawn with `rng` (the same generator state gives the same examples).

        None of them is in the task's held-out set: a drawn example that is gets redrawn in its place."""
        if n < 0:
            raise ScarceError(f"number of examples must be >= 0, got {n}")
        examples = self._generate(rng, n)
        excluded = _heldout_keys(self)
        if excluded:
            examples = _redraw_excluded(self, rng, examples, excluded)
        return shuffle_examples(examples, rng) if self.shuffled else examples

    def params(self) -> dict:
        return self.model_dump()


def make_task(cls: type[Task], params: dict) -> Task:
    """Build a task from user parameters, turning every validation failure into a ScarceError naming it."""
    unknown = sorted(set(params) - set(cls.model_fields))
    if unknown:
        raise ScarceError(
            f"task {cls.name!r} has no parameter {unknown[0]!r}; its parameters are {', '.join(cls.model_fields)}"
        )
    try:
        return cls(**params)
    except ValidationError as e:
        raise ScarceError(f"invalid parameters for task {cls.name!r}:\n" + format_validation_error(e)) from None


@cache
def _heldout_keys(task: Task) -> frozenset:
    """The task's held-out examples as a set of row bytes (empty without a held-out set)."""
    heldout = task.heldout()
    return frozenset() if heldout is None else frozenset(_row_bytes(heldout.tokens))


def _row_bytes(tokens: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)]


def _redraw_excluded(task: Task, rng: np.random.Generator, examples: Examples, excluded: frozenset) -> Examples:
    tokens, mask = examples.tokens.copy(), examples.loss_mask.copy()
    redraw = np.array([row in excluded for row in _row_bytes(tokens)], dtype=bool)
    for _ in range(1000):
        if not redraw.any():
            return Examples(tokens, mask)
        fresh = task._generate(rng, int(redraw.sum()))
        tokens[redraw], mask[redraw] = fresh.tokens, fresh.loss_mask
        redraw[redraw] = [row in excluded for row in _row_bytes(fresh.tokens)]
    raise ScarceError(
        f"task {task.name!r} with {task.params()} has almost no examples outside its held-out set: make it larger"
    )


def shuffle_examples(examples: Examples, rng: np.random.Generator) -> Examples:
    """The shuffled control: in each example, tokens 1..L-1 are permuted at random and the loss mask moves
    with its token; token 0 stays. So each example keeps its token multiset, the multiset of counted
    targets and their number (an equal-budget control), pad never carries loss, and position 0 (never a
    target) stays out of the loss."""
    if examples.tokens.shape[1] < 3:
        return examples
    # one value per token carries its mask bit along, so a single row-wise shuffle moves both
    combined = (examples.tokens.astype(TOKEN_DTYPE) << 1) | examples.loss_mask
    combined[:, 1:] = rng.permuted(combined[:, 1:], axis=1)
    return Examples(combined >> 1, (combined & 1).astype(bool))


def first_occurrences(values: np.ndarray) -> np.ndarray:
    """bool, same shape as the 2-D `values`: True at the first occurrence of each value in its row."""
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    new = np.ones_like(ordered, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.empty_like(new)
    np.put_along_axis(first, order, new, axis=1)
    return first


def left_align(values: np.ndarray, keep: np.ndarray, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's kept values moved to the front in their order, the rest `fill`; and the kept-slot mask."""
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(values, order, axis=1)
    kept = np.arange(values.shape[1]) < keep.sum(axis=1, keepdims=True)
    return np.where(kept, out, fill), kept


def rows_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b).all(axis=1)
