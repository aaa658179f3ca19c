"""Elementary cellular automata (ECA): a random row of cells, then its evolution under a Wolfram rule.

The published recipe uses rule 110 but not its sizes; scarce's choice (docs/procedural.md): `width`
cells (default 32) on a ring (periodic boundary), a uniformly random first row, `steps` updates
(default 31), each row followed by a row-end token. Tokens: dead 0, alive 1, row end 2, pad 3
(vocabulary 4). A formal language like Dyck, so plain next-token loss on every token; only the first
row is unpredictable.
"""

from typing import ClassVar

import numpy as np
from pydantic import Field

from scarce.procedural.base import TOKEN_DTYPE, Examples, Task

ROW_END, PAD = 2, 3


def eca_step(cells: np.ndarray, rule: int) -> np.ndarray:
    """One synchronous update of every row of `cells` (n, width) on a ring: the new cell is bit
    (4·left + 2·center + right) of the rule number."""
    table = ((rule >> np.arange(8)) & 1).astype(cells.dtype)
    return table[(np.roll(cells, 1, axis=1) << 2) | (cells << 1) | np.roll(cells, -1, axis=1)]


class ECA(Task):
    name: ClassVar[str] = "eca"
    description: ClassVar[str] = "elementary cellular automaton: a random row, then `steps` rows of its evolution"
    splittable: ClassVar[bool] = True

    rule: int = Field(110, ge=0, le=255, description="Wolfram rule number")
    width: int = Field(32, ge=3, description="cells per row (a ring)")
    steps: int = Field(31, ge=1, description="updates after the random first row")

    @property
    def example_tokens(self) -> int:
        return (self.steps + 1) * (self.width + 1)

    @property
    def vocab_size(self) -> int:
        return PAD + 1

    @property
    def pad(self) -> int:
        return PAD

    def evolve(self, first_row: np.ndarray) -> np.ndarray:
        """(n, steps + 1, width): the first row and every update."""
        rows = [first_row]
        for _ in range(self.steps):
            rows.append(eca_step(rows[-1], self.rule))
        return np.stack(rows, axis=1)

    def _layout(self, rows: np.ndarray) -> np.ndarray:
        n = len(rows)
        ends = np.full((n, self.steps + 1, 1), ROW_END, dtype=TOKEN_DTYPE)
        return np.concatenate([rows.astype(TOKEN_DTYPE), ends], axis=2).reshape(n, -1)

    def _mask(self, n):
        mask = np.ones((n, self.example_tokens), dtype=bool)
        mask[:, 0] = False
        return mask

    def _generate(self, rng, n):
        first = rng.integers(0, 2, size=(n, self.width), dtype=np.uint8)
        return Examples(self._layout(self.evolve(first)), self._mask(n))

    def check(self, examples):
        tokens = examples.tokens
        n = len(tokens)
        if tokens.shape[1] != self.example_tokens:
            return np.zeros(n, dtype=bool)
        first = tokens[:, : self.width]
        ok = ((first == 0) | (first == 1)).all(axis=1)
        expected = self._layout(self.evolve(np.clip(first, 0, 1).astype(np.uint8)))
        return ok & (tokens == expected).all(axis=1) & (examples.loss_mask == self._mask(n)).all(axis=1)
