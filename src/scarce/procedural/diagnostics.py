"""Diagnostic tasks for procedural warm-ups: needle-in-a-haystack recall and arithmetic (scored by scarce.evals.diagnostics).

Each is a procedural task (scarce.procedural), so a model can train on its stream through
ProceduralSource, and each has a fixed held-out set of HELDOUT_EXAMPLES examples (drawn from its own
fixed seed, independent of any run's seed) that its training stream never emits.

Needle in a haystack (after Jiang et al. 2026, arXiv 2601.21725): n ~ Uniform{1..30} key/value pairs,
keys a random subset of {0..29} written 128 + key, values uniform in 1..127, then a query marker
158 + q for a key q among them and the target: q's value. `[k1+128, v1, …, kn+128, vn, q+158, v_q]`,
right-padded with 0 to 63 tokens. The loss and the accuracy count only the query position (the
target v_q).

Arithmetic, one token scheme: digits 0–9, `+`/`*` 10, `=` 11, pad 12, answer digits 20–29, stop 30.
`a + b = answer stop pad…`, as the reference code (task_forwardaddition.py, task_additionstream.py,
task_multiplication.py) writes it: operands of exactly `digits` digits (uniform over
10^(digits−1)..10^digits − 1, no leading zeros), the answer in its natural length (str(a + b)), then the
stop token and pad 12 up to the reference's length (3·digits + 4 for a sum, 5·digits + 4 for a product).
Forward addition and multiplication write every number most significant digit first; reversed addition
least significant first. The loss counts every answer digit and the stop token; exact match needs all of
them right; digit accuracy scores every answer digit (the first one included, which the reference's
scoring skips) and not the stop.
"""

from functools import cache
from typing import ClassVar

import numpy as np
from pydantic import Field

from scarce.procedural.base import TOKEN_DTYPE, Examples, Task

HELDOUT_EXAMPLES = 4000
HELDOUT_SEED = 2601_21725  # fixed: every run evaluates on the same examples, whatever its own seed


@cache
def _heldout(task: Task) -> Examples:
    return task._generate(np.random.default_rng(HELDOUT_SEED), HELDOUT_EXAMPLES)


class DiagnosticTask(Task):
    def heldout(self) -> Examples:
        return _heldout(self.model_copy(update={"shuffled": False}))


# ---- needle in a haystack ------------------------------------------------------------------------------

KEYS, KEY_BASE, QUERY_BASE, MAX_VALUE, HAYSTACK_TOKENS = 30, 128, 158, 127, 63


class Haystack(DiagnosticTask):
    name: ClassVar[str] = "haystack"
    description: ClassVar[str] = "needle in a haystack: key/value pairs, a query key, its value (context recall)"

    @property
    def example_tokens(self) -> int:
        return HAYSTACK_TOKENS

    @property
    def vocab_size(self) -> int:
        return QUERY_BASE + KEYS

    @property
    def pad(self) -> int:
        return 0

    def _generate(self, rng, n):
        pairs = rng.integers(1, KEYS + 1, size=n)
        keys = np.argsort(rng.random((n, KEYS)), axis=1)  # a random order of {0..29}: the first `pairs` are the subset
        values = rng.integers(1, MAX_VALUE + 1, size=(n, KEYS))
        query = (rng.random(n) * pairs).astype(np.int64)  # which of the n pairs is asked for
        tokens = np.zeros((n, HAYSTACK_TOKENS), dtype=TOKEN_DTYPE)
        body = np.stack([keys + KEY_BASE, values], axis=2).reshape(n, 2 * KEYS)
        tokens[:, : 2 * KEYS] = np.where(np.arange(2 * KEYS) < 2 * pairs[:, None], body, 0)
        rows = np.arange(n)
        tokens[rows, 2 * pairs] = QUERY_BASE + keys[rows, query]
        tokens[rows, 2 * pairs + 1] = values[rows, query]
        mask = np.zeros((n, HAYSTACK_TOKENS), dtype=bool)
        mask[rows, 2 * pairs + 1] = True
        return Examples(tokens, mask)

    def check(self, examples):
        tokens, mask = examples.tokens, examples.loss_mask
        n = len(tokens)
        if tokens.shape[1] != HAYSTACK_TOKENS:
            return np.zeros(n, dtype=bool)
        is_query = tokens >= QUERY_BASE
        at = is_query.argmax(axis=1)  # the query marker's position, 2·pairs
        pairs = at // 2
        ok = is_query.any(axis=1) & (at % 2 == 0) & (pairs >= 1) & (pairs <= KEYS)
        t = np.arange(HAYSTACK_TOKENS)
        in_body = t < at[:, None]
        keys = np.where(in_body[:, 0::2][:, :KEYS], tokens[:, 0 : 2 * KEYS : 2] - KEY_BASE, -1)
        values = np.where(in_body[:, 1::2][:, :KEYS], tokens[:, 1 : 2 * KEYS : 2], -1)
        real = keys >= 0
        ok &= np.where(real, (keys < KEYS) & (values >= 1) & (values <= MAX_VALUE), True).all(axis=1)
        distinct = np.sort(np.where(real, keys, -1 - np.arange(KEYS)), axis=1)  # absent pairs get distinct fillers
        ok &= (distinct[:, 1:] != distinct[:, :-1]).all(axis=1)
        rows = np.arange(n)
        q = tokens[rows, at] - QUERY_BASE
        asked = (keys == q[:, None]) & real
        ok &= asked.any(axis=1) & (q < KEYS)
        answer_at = np.minimum(at + 1, HAYSTACK_TOKENS - 1)
        ok &= tokens[rows, answer_at] == values[rows, asked.argmax(axis=1)]
        ok &= np.where(t > answer_at[:, None], tokens == 0, True).all(axis=1)
        return ok & (mask == (t == answer_at[:, None])).all(axis=1)


# ---- arithmetic -----------------------------------------------------------------------------------------

PLUS = TIMES = 10
EQUALS, PAD, ANSWER_BASE, STOP = 11, 12, 20, 30


def _digits(x: np.ndarray, width: int, least_first: bool) -> np.ndarray:
    """(n, width) decimal digits of x, most significant first unless least_first."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (x[:, None] // powers) % 10
    return digits[:, ::-1] if least_first else digits


def _value(digits: np.ndarray, least_first: bool) -> np.ndarray:
    if least_first:
        digits = digits[:, ::-1]
    return digits.astype(np.int64) @ (10 ** np.arange(digits.shape[1] - 1, -1, -1, dtype=np.int64))


class ArithmeticTask(DiagnosticTask):
    # digits >= 2: with one digit there are only 100 problems, and the held-out set would take them all
    operator: ClassVar[int]
    least_first: ClassVar[bool] = False

    @property
    def answer_digits(self) -> int:
        raise NotImplementedError

    def _combine(self, a, b):
        raise NotImplementedError

    @property
    def example_tokens(self) -> int:
        return self.padded_tokens

    @property
    def vocab_size(self) -> int:
        return STOP + 1

    @property
    def pad(self) -> int:
        return PAD

    def _layout(self, a, b) -> Examples:
        n, d, width = len(a), self.digits, self.answer_digits
        result = self._combine(a, b)
        length = (result[:, None] >= 10 ** np.arange(width, dtype=np.int64)).sum(axis=1)  # natural digits (result >= 1)
        digits = _digits(result, width, least_first=True)  # least significant first: its first `length` are the answer
        if not self.least_first:  # most significant first: the answer's j-th digit is digit length − 1 − j
            digits = np.take_along_axis(digits, np.clip(length[:, None] - 1 - np.arange(width), 0, width - 1), axis=1)
        j = np.arange(width + 1)
        answer = np.where(j < length[:, None], np.pad(digits, ((0, 0), (0, 1))) + ANSWER_BASE,
                          np.where(j == length[:, None], STOP, PAD))
        tokens = np.full((n, self.padded_tokens), PAD, dtype=TOKEN_DTYPE)
        tokens[:, : 2 * d + 2] = np.concatenate(
            [_digits(a, d, self.least_first), np.full((n, 1), self.operator), _digits(b, d, self.least_first),
             np.full((n, 1), EQUALS)], axis=1)
        tokens[:, 2 * d + 2 : 3 * d + 3 + width - d] = answer
        mask = np.zeros(tokens.shape, dtype=bool)
        mask[:, 2 * d + 2 : 3 * d + 3 + width - d] = j <= length[:, None]  # every answer digit and the stop token
        return Examples(tokens, mask)

    def _generate(self, rng, n):
        low, high = 10 ** (self.digits - 1), 10**self.digits
        return self._layout(rng.integers(low, high, size=n), rng.integers(low, high, size=n))

    def check(self, examples):
        tokens = examples.tokens
        d = self.digits
        if tokens.shape[1] != self.example_tokens:
            return np.zeros(len(tokens), dtype=bool)
        a, b = tokens[:, :d], tokens[:, d + 1 : 2 * d + 1]
        leading = d - 1 if self.least_first else 0
        ok = ((a >= 0) & (a <= 9)).all(axis=1) & ((b >= 0) & (b <= 9)).all(axis=1) & (a[:, leading] > 0) & (b[:, leading] > 0)
        expected = self._layout(_value(np.clip(a, 0, 9), self.least_first), _value(np.clip(b, 0, 9), self.least_first))
        return ok & (tokens == expected.tokens).all(axis=1) & (examples.loss_mask == expected.loss_mask).all(axis=1)


class Addition(ArithmeticTask):
    name: ClassVar[str] = "addition"
    description: ClassVar[str] = "a + b = sum, most significant digit first"
    operator: ClassVar[int] = PLUS

    digits: int = Field(5, ge=2, le=17, description="digits per operand")

    @property
    def answer_digits(self) -> int:
        return self.digits + 1

    @property
    def padded_tokens(self) -> int:
        return 3 * self.digits + 4  # the reference's max_lenl for a sum

    def _combine(self, a, b):
        return a + b


class ReversedAddition(Addition):
    name: ClassVar[str] = "addition_reversed"
    description: ClassVar[str] = "a + b = sum, every number least significant digit first"
    least_first: ClassVar[bool] = True

    digits: int = Field(10, ge=2, le=17, description="digits per operand")


class Multiplication(ArithmeticTask):
    name: ClassVar[str] = "multiplication"
    description: ClassVar[str] = "a * b = product, most significant digit first"
    operator: ClassVar[int] = TIMES

    digits: int = Field(5, ge=2, le=9, description="digits per operand")

    @property
    def answer_digits(self) -> int:
        return 2 * self.digits

    @property
    def padded_tokens(self) -> int:
        return 5 * self.digits + 4  # the reference's max_lenl for a product

    def _combine(self, a, b):
        return a * b


DIAGNOSTICS: dict[str, type[DiagnosticTask]] = {t.name: t for t in (Haystack, Addition, ReversedAddition, Multiplication)}
