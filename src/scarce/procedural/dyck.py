"""k-Dyck and k-Dyck shuffle: bracket sequences, trained with plain next-token loss.

Tokens: open brackets 0..k-1, close = open + k, pad 2k (vocabulary 2k + 1).

The walk, one token at a time: with an empty stack, open a uniform type; when the remaining length is
at most the depth, close (so the sequence ends balanced at exactly `length` tokens); otherwise open with
probability 1/2, else close. k-Dyck closes the top of the stack; k-Dyck shuffle closes a uniformly random
currently-open type (nesting not enforced) and never lets the depth pass `max_depth`.

Vectorized without a per-token Python loop for k-Dyck: the depth before each step is |S_t| for a simple
±1 random walk S (|S| steps up from 0 with certainty and by ±1 with probability 1/2 elsewhere, exactly the
walk above) until the first step where the depth reaches the remaining length, then it falls by one per
step. The shuffle's depth cap folds S between 0 and max_depth the same way. Brackets are matched by
sorting each row's events by level: at every level, opens and closes alternate, so a close's partner is
the event just before it in that order.
"""

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from scarce.procedural.base import TOKEN_DTYPE, Examples, Task


def _plain_loss_mask(n: int, length: int) -> np.ndarray:
    mask = np.ones((n, length), dtype=bool)
    mask[:, 0] = False  # the first token is never a target
    return mask


def depth_profile(steps: np.ndarray, length: int, max_depth: int | None = None, balanced: bool = True) -> np.ndarray:
    """Depth before each token (n, length + 1) from ±1 steps (n, length).

    Unconstrained, the depth is the walk folded into [0, max_depth] (|S| without a cap); balanced, from the
    first position t where depth >= length - t on, every token closes (and the last column is 0)."""
    walk = np.zeros((len(steps), length + 1), dtype=np.int32)
    np.cumsum(steps, axis=1, out=walk[:, 1:])
    if max_depth is None or max_depth >= (length // 2 if balanced else length):
        depth = np.abs(walk, out=walk)
    else:
        depth = np.abs((walk + max_depth) % (2 * max_depth) - max_depth)
    if not balanced:
        return depth
    remaining = np.arange(length, -1, -1, dtype=np.int32)
    close_out = (depth >= remaining).argmax(axis=1)  # exists: at the end the remaining length is 0
    # from there on every token closes, and the depth equals the remaining length
    np.copyto(depth, remaining, where=np.arange(length + 1) >= close_out[:, None])
    return depth


def _random_steps(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """±1 with probability 1/2 each, (n, length) int8: eight steps per random byte."""
    bits = np.unpackbits(rng.integers(0, 256, size=(n, -(-length // 8)), dtype=np.uint8), axis=1)[:, :length]
    return bits.view(np.int8) * 2 - 1


def _levels(depth: np.ndarray) -> np.ndarray:
    """Level of each event: an open's depth before it, a close's depth after it (equal for a matched pair)."""
    level = np.minimum(depth[:, 1:], depth[:, :-1])
    return level.astype(np.int16) if level.shape[1] < 2**15 else level  # int16: numpy sorts it by radix


class Dyck(Task):
    name: ClassVar[str] = "dyck"
    description: ClassVar[str] = "k-Dyck: balanced, properly nested brackets of k types; plain next-token loss"
    splittable: ClassVar[bool] = True

    k: int = Field(64, ge=1, description="bracket types")
    length: int = Field(2048, ge=2, description="tokens per sequence (even, so it can end balanced)")

    @model_validator(mode="after")
    def _even(self):
        if self.length % 2:
            raise ValueError(f"length={self.length} must be even: a balanced bracket sequence has even length")
        return self

    @property
    def example_tokens(self) -> int:
        return self.length

    @property
    def vocab_size(self) -> int:
        return 2 * self.k + 1

    @property
    def pad(self) -> int:
        return 2 * self.k

    def _generate(self, rng, n):
        depth = depth_profile(_random_steps(rng, n, self.length), self.length)
        opens = depth[:, 1:] > depth[:, :-1]
        order = np.argsort(_levels(depth), axis=1, kind="stable")
        is_close = ~np.take_along_axis(opens, order, axis=1)
        # sorted by level, each close follows its own open: give it that open's type + k
        kinds = rng.integers(0, self.k, size=(n, self.length), dtype=TOKEN_DTYPE)
        is_close[:, 0] = False  # cannot happen (a level starts with an open); keeps the shift in bounds
        kinds[is_close] = kinds[:, :-1][is_close[:, 1:]] + self.k
        tokens = np.empty_like(kinds)
        np.put_along_axis(tokens, order, kinds, axis=1)
        return Examples(tokens, _plain_loss_mask(n, self.length))

    def check(self, examples):
        tokens = examples.tokens
        n, length = tokens.shape
        ok = np.full(n, length == self.length) & ((tokens >= 0) & (tokens < 2 * self.k)).all(axis=1)
        opens = tokens < self.k
        depth = np.zeros((n, length + 1), dtype=np.int64)
        np.cumsum(np.where(opens, 1, -1), axis=1, out=depth[:, 1:])
        ok &= (depth >= 0).all(axis=1) & (depth[:, -1] == 0)
        order = np.argsort(np.minimum(depth[:, 1:], depth[:, :-1]), axis=1, kind="stable")
        ordered = np.take_along_axis(tokens, order, axis=1)
        closes = ordered[:, 1:] >= self.k
        ok &= ~closes.any(axis=1) | (np.where(closes, ordered[:, 1:] - self.k == ordered[:, :-1], True)).all(axis=1)
        return ok & (examples.loss_mask == _plain_loss_mask(n, length)).all(axis=1)


class DyckShuffle(Dyck):
    name: ClassVar[str] = "dyck_shuffle"
    description: ClassVar[str] = ("k-Dyck shuffle: a close picks a uniformly random open type (no nesting); depth capped; "
                                  "stops at the length, brackets left open")

    max_depth: int = Field(16, ge=1, description="most brackets open at once")

    def _generate(self, rng, n):
        length, cap = self.length, min(self.max_depth, self.length)
        # as the reference: the walk stops at `length` tokens without closing what is open
        depth = depth_profile(_random_steps(rng, n, length), length, cap, balanced=False)
        opens = np.ascontiguousarray((depth[:, 1:] > depth[:, :-1]).T)
        depth_t = np.ascontiguousarray(depth[:, :-1].T)
        kinds = rng.integers(0, self.k, size=(length, n), dtype=TOKEN_DTYPE)
        tokens = np.empty((length, n), dtype=TOKEN_DTYPE)
        # the open brackets of each row, unordered, in slots 0..depth-1 (flat: row * cap + slot)
        slots = np.zeros(n * cap, dtype=TOKEN_DTYPE)
        base = np.arange(n) * cap
        slot_index = np.arange(cap)
        for t in range(length):
            d, opening = depth_t[t], opens[t]
            rows = np.flatnonzero(opening)
            slots[base[rows] + d[rows]] = kinds[t, rows]
            tokens[t, rows] = kinds[t, rows]
            rows = np.flatnonzero(~opening)
            if len(rows) == 0:
                continue
            pick = self._pick_type_uniform(rng, slots.reshape(n, cap)[rows], d[rows], slot_index)
            tokens[t, rows] = slots[base[rows] + pick] + self.k
            slots[base[rows] + pick] = slots[base[rows] + d[rows] - 1]  # swap-remove
        return Examples(np.ascontiguousarray(tokens.T), _plain_loss_mask(n, length))

    @staticmethod
    def _pick_type_uniform(rng, open_slots, depth, slot_index):
        """A slot per row whose type is uniform over the row's distinct open types: draw a uniform slot and
        keep it with probability 1 / (open brackets of its type), else draw again (rejection sampling)."""
        pick = np.zeros(len(depth), dtype=np.int64)
        todo = np.arange(len(depth))
        while len(todo):
            d = depth[todo]
            slot = (rng.random(len(todo)) * d).astype(np.int64)
            held = open_slots[todo]
            chosen = held[np.arange(len(todo)), slot]
            same = ((held == chosen[:, None]) & (slot_index < d[:, None])).sum(axis=1)
            accept = rng.random(len(todo)) * same < 1
            pick[todo[accept]] = slot[accept]
            todo = todo[~accept]
        return pick

    def check(self, examples):
        tokens = examples.tokens
        n, length = tokens.shape
        ok = np.full(n, length == self.length) & ((tokens >= 0) & (tokens < 2 * self.k)).all(axis=1)
        steps = np.where(tokens < self.k, 1, -1)
        depth = np.cumsum(steps, axis=1)
        ok &= (depth >= 0).all(axis=1) & (depth <= self.max_depth).all(axis=1)
        # per type, the running count of open brackets never goes negative
        kind = tokens % self.k
        order = np.argsort(kind, axis=1, kind="stable")
        per_kind = np.cumsum(np.take_along_axis(steps, order, axis=1), axis=1)
        ok &= (per_kind >= 0).all(axis=1)
        return ok & (examples.loss_mask == _plain_loss_mask(n, length)).all(axis=1)
