"""Sequence tasks: an input, a separator, and the output the model must produce; loss on the output only.

Tokens: data 1..99 (uniform), separator 100, pad 101 (vocabulary 102); the stack task also uses 0 for
"pop". Every task is `prefix SEP output`, the output padded with 101 to `length` tokens; the loss mask is
True on the output tokens and False everywhere else (the input, the separators, the pad).

| task     | example (L tokens)                                   | output                                       |
| identity | x SEP x                        (2·length + 1)        | the input                                    |
| reverse  | x SEP reversed(x)              (2·length + 1)        |                                              |
| sort     | x SEP sorted(x)                (2·length + 1)        | ascending, duplicates kept                   |
| set      | x SEP dedup(x)                 (2·length + 1)        | unique tokens in order of first occurrence   |
| union    | A SEP B SEP dedup(A + B)       (2·length + 2)        | A, B of length/2 tokens each                 |
| delete   | x SEP r SEP x − first r        (2·length + 3)        | x without the first occurrence of r          |
| stack    | ops SEP final stack            (2·length + 1)        | the stack after the ops, top first           |
"""

from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from scarce.procedural.base import TOKEN_DTYPE, Examples, Task, first_occurrences, left_align

DATA_TOKENS = 99  # data tokens are 1..99
SEP, PAD, POP = 100, 101, 0


class SequenceTask(Task):
    """`prefix output`: subclasses say how to draw the prefix (ending in SEP) and compute the output."""

    length: int = Field(64, ge=1, description="input tokens (the output is padded to this length)")

    @property
    def prefix_tokens(self) -> int:
        return self.length + 1

    @property
    def example_tokens(self) -> int:
        return self.prefix_tokens + self.length

    @property
    def vocab_size(self) -> int:
        return PAD + 1

    @property
    def pad(self) -> int:
        return PAD

    def _data(self, rng, n, width):
        return rng.integers(1, DATA_TOKENS + 1, size=(n, width), dtype=TOKEN_DTYPE)

    def _prefix(self, rng, n) -> np.ndarray:
        """x SEP by default."""
        return self._join(self._data(rng, n, self.length))

    @staticmethod
    def _join(*parts) -> np.ndarray:
        """The parts with a SEP after each."""
        n = len(parts[0])
        sep = np.full((n, 1), SEP, dtype=TOKEN_DTYPE)
        return np.concatenate([piece for part in parts for piece in (part, sep)], axis=1)

    def _sep_positions(self) -> list[int]:
        return [self.length]

    def _valid_prefix(self, prefix) -> np.ndarray:
        data = np.ones(prefix.shape[1], dtype=bool)
        data[self._sep_positions()] = False
        ok = (prefix[:, ~data] == SEP).all(axis=1)
        return ok & ((prefix[:, data] >= 1) & (prefix[:, data] <= DATA_TOKENS)).all(axis=1)

    def _answer(self, prefix) -> tuple[np.ndarray, np.ndarray]:
        """The output (n, length) and its loss mask (True on real output tokens, False on pad)."""
        raise NotImplementedError

    def _generate(self, rng, n):
        prefix = self._prefix(rng, n)
        output, counted = self._answer(prefix)
        mask = np.concatenate([np.zeros(prefix.shape, dtype=bool), counted], axis=1)
        return Examples(np.concatenate([prefix, output.astype(TOKEN_DTYPE)], axis=1), mask)

    def check(self, examples):
        tokens, mask = examples.tokens, examples.loss_mask
        if tokens.shape[1] != self.example_tokens:
            return np.zeros(len(tokens), dtype=bool)
        prefix = tokens[:, : self.prefix_tokens]
        output, counted = self._answer(prefix)
        ok = self._valid_prefix(prefix) & (tokens[:, self.prefix_tokens :] == output).all(axis=1)
        return ok & (~mask[:, : self.prefix_tokens]).all(axis=1) & (mask[:, self.prefix_tokens :] == counted).all(axis=1)


def _full(output):
    return output, np.ones(output.shape, dtype=bool)


class Identity(SequenceTask):
    name: ClassVar[str] = "identity"
    description: ClassVar[str] = "copy the input"

    def _answer(self, prefix):
        return _full(prefix[:, : self.length])


class Reverse(SequenceTask):
    name: ClassVar[str] = "reverse"
    description: ClassVar[str] = "the input reversed"

    def _answer(self, prefix):
        return _full(prefix[:, self.length - 1 :: -1])


class Sort(SequenceTask):
    name: ClassVar[str] = "sort"
    description: ClassVar[str] = "the input in ascending order, duplicates kept"

    def _answer(self, prefix):
        return _full(np.sort(prefix[:, : self.length], axis=1))


class Set(SequenceTask):
    name: ClassVar[str] = "set"
    description: ClassVar[str] = "the input's distinct tokens in order of first occurrence, padded"

    def _answer(self, prefix):
        x = prefix[:, : self.length]
        return left_align(x, first_occurrences(x), PAD)


class Union(SequenceTask):
    name: ClassVar[str] = "union"
    description: ClassVar[str] = "A SEP B SEP: the distinct tokens of A then B in order of first occurrence, padded"

    length: int = Field(64, ge=2, description="tokens of A and B together (even; the output is padded to this length)")

    @model_validator(mode="after")
    def _even(self):
        if self.length % 2:
            raise ValueError(f"length={self.length} must be even: A and B have length/2 tokens each")
        return self

    @property
    def prefix_tokens(self) -> int:
        return self.length + 2

    def _sep_positions(self):
        return [self.length // 2, self.length + 1]

    def _prefix(self, rng, n):
        half = self.length // 2
        both = self._data(rng, n, self.length)
        return self._join(both[:, :half], both[:, half:])

    def _answer(self, prefix):
        half = self.length // 2
        both = np.concatenate([prefix[:, :half], prefix[:, half + 1 : self.length + 1]], axis=1)
        return left_align(both, first_occurrences(both), PAD)


class Delete(SequenceTask):
    name: ClassVar[str] = "delete"
    description: ClassVar[str] = "x SEP r SEP: x without the first occurrence of token r (r uniform, present or not), padded"

    length: int = Field(64, ge=2, description="input tokens (the output is padded to this length)")

    @property
    def prefix_tokens(self) -> int:
        return self.length + 3

    def _sep_positions(self):
        return [self.length, self.length + 2]

    def _prefix(self, rng, n):
        x = self._data(rng, n, self.length)
        r = self._data(rng, n, 1)  # as the reference: uniform over the data tokens, in x or not (then nothing is deleted)
        return self._join(x, r)

    def _answer(self, prefix):
        x, r = prefix[:, : self.length], prefix[:, self.length + 1 : self.length + 2]
        hit = x == r
        first = hit.argmax(axis=1)  # the first occurrence (row without r: argmax 0 and no hit, nothing removed)
        keep = np.ones_like(hit)
        keep[np.arange(len(x)), first] = ~hit[np.arange(len(x)), first]
        return left_align(x, keep, PAD)


class Stack(SequenceTask):
    name: ClassVar[str] = "stack"
    description: ClassVar[str] = "push/pop operations (pop = 0), then the final stack top first, padded"

    # at most 99 pushes in a row, so a token not already on the stack always exists
    length: int = Field(64, ge=1, le=DATA_TOKENS, description="operations (the output is padded to this length)")

    def _valid_prefix(self, prefix):
        return (prefix[:, self.length] == SEP) & self._replay(prefix)[2]

    def _prefix(self, rng, n):
        ops = np.empty((n, self.length), dtype=TOKEN_DTYPE)
        on_stack = np.zeros((n, DATA_TOKENS + 1), dtype=bool)
        stack = np.zeros((n, self.length), dtype=TOKEN_DTYPE)
        size = np.zeros(n, dtype=np.int64)
        rows = np.arange(n)
        for step in range(self.length):
            # as the reference: push-heavy before step ⌊2L/3⌋, pop-heavy from it, the last operation a pop;
            # push whenever the stack holds <= 1
            p_push = 0.75 if step < 2 * self.length // 3 else 0.25 if step < self.length - 1 else 0.0
            push = (size <= 1) | (rng.random(n) < p_push)
            pushing = rows[push]
            token = rng.integers(1, DATA_TOKENS + 1, size=len(pushing), dtype=TOKEN_DTYPE)
            taken = on_stack[pushing, token]
            while taken.any():  # redraw tokens already on the stack (at most 98 of 99 are)
                token[taken] = rng.integers(1, DATA_TOKENS + 1, size=int(taken.sum()), dtype=TOKEN_DTYPE)
                taken = on_stack[pushing, token]
            popping = rows[~push]
            top = stack[popping, size[popping] - 1]
            on_stack[popping, top] = False
            size[popping] -= 1
            stack[pushing, size[pushing]] = token
            on_stack[pushing, token] = True
            size[pushing] += 1
            ops[:, step] = POP
            ops[pushing, step] = token
        return self._join(ops)

    def _replay(self, prefix):
        """The final stack (top first, padded), its mask, and whether every operation was legal."""
        ops = prefix[:, : self.length]
        n = len(ops)
        rows, slot = np.arange(n), np.arange(self.length)
        stack = np.zeros((n, self.length), dtype=TOKEN_DTYPE)
        size = np.zeros(n, dtype=np.int64)
        legal = ((ops >= 0) & (ops <= DATA_TOKENS)).all(axis=1)
        for step in range(self.length):
            op = ops[:, step]
            pop = op == POP
            legal &= ~pop | (size > 1)  # the generator always pushes onto a stack of 0 or 1
            if step == self.length - 1:
                legal &= pop | (size <= 1)  # and pops last whenever it can
            push = rows[~pop]
            legal[push] &= ~((stack[push] == op[push, None]) & (slot < size[push, None])).any(axis=1)
            stack[push, np.minimum(size[push], self.length - 1)] = op[push]
            size += np.where(pop, -1, 1)
            size = np.maximum(size, 0)
        counted = slot < size[:, None]
        top_first = np.take_along_axis(stack, np.clip(size[:, None] - 1 - slot, 0, None), axis=1)
        return np.where(counted, top_first, PAD), counted, legal

    def _answer(self, prefix):
        output, counted, _ = self._replay(prefix)
        return output, counted
