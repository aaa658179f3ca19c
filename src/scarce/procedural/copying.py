"""WW: a string followed by its copy.

The published recipe names the task but not its sizes; scarce's choice (docs/procedural.md): a string w of
m ~ Uniform{1..max_len} symbols drawn uniformly from `alphabet` symbols, then a separator, then w again,
right-padded to 2·max_len + 1 tokens. Tokens: symbols 0..alphabet-1, separator alphabet, pad alphabet + 1.
A formal language like Dyck and ECA, so plain next-token loss on every non-pad token (w itself is
unpredictable; the separator's position and the copy are not).
"""

from typing import ClassVar

import numpy as np
from pydantic import Field

from scarce.procedural.base import TOKEN_DTYPE, Examples, Task


class WW(Task):
    name: ClassVar[str] = "ww"
    description: ClassVar[str] = "a random string, a separator, and the string again (the copy language ww)"

    alphabet: int = Field(16, ge=1, description="distinct symbols")
    max_len: int = Field(64, ge=1, description="longest string w (its length is uniform in 1..max_len)")

    @property
    def sep(self) -> int:
        return self.alphabet

    @property
    def pad(self) -> int:
        return self.alphabet + 1

    @property
    def vocab_size(self) -> int:
        return self.alphabet + 2

    @property
    def example_tokens(self) -> int:
        return 2 * self.max_len + 1

    def _layout(self, w: np.ndarray, m: np.ndarray) -> Examples:
        """w (n, max_len) with lengths m (n,) → `w SEP w PAD…` and its loss mask."""
        n, t = len(w), np.arange(self.example_tokens)
        m = m[:, None]
        copy_at = np.clip(t - m - 1, 0, self.max_len - 1)  # position t of the copy holds w[t - m - 1]
        tokens = np.where(t < m, w[:, np.minimum(t, self.max_len - 1)], np.take_along_axis(w, copy_at, axis=1))
        tokens = np.where(t == m, self.sep, tokens)
        tokens = np.where(t > 2 * m, self.pad, tokens).astype(TOKEN_DTYPE)
        mask = (t >= 1) & (t <= 2 * m)
        return Examples(tokens, np.broadcast_to(mask, (n, self.example_tokens)).copy())

    def _generate(self, rng, n):
        w = rng.integers(0, self.alphabet, size=(n, self.max_len), dtype=TOKEN_DTYPE)
        m = rng.integers(1, self.max_len + 1, size=n)
        return self._layout(w, m)

    def check(self, examples):
        tokens = examples.tokens
        if tokens.shape[1] != self.example_tokens:
            return np.zeros(len(tokens), dtype=bool)
        is_sep = tokens == self.sep
        m = is_sep.argmax(axis=1)
        ok = is_sep.any(axis=1) & (m >= 1) & (m <= self.max_len)
        w = np.where(np.arange(self.max_len) < m[:, None], tokens[:, : self.max_len], 0)
        ok &= ((w >= 0) & (w < self.alphabet)).all(axis=1)
        expected = self._layout(np.clip(w, 0, self.alphabet - 1), np.clip(m, 1, self.max_len))
        ok &= (tokens == expected.tokens).all(axis=1)
        return ok & (examples.loss_mask == expected.loss_mask).all(axis=1)
