"""What a batch source hands the trainer: `Batch`, and the `BatchSource` interface every source implements.

The trainer consumes any object with this interface and knows nothing else about data. A source is
addressable by step, so `state_dict()` / `load_state_dict()` make resume exact, and it reports its own
accounting (tokens seen, unique tokens, epochs). The sources by name: scarce.data.sources.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Batch:
    """This rank's share of one optimizer step's global batch.

    inputs, targets: int64 (rows, T); targets[i, t] is the token that follows inputs[i, t].
    loss_mask: bool (rows, T), True where the loss counts; None means every position counts.
    global_targets: positions whose loss counts, summed over every rank's rows of this step (the trainer
    divides the summed loss by it, so the step's loss is the mean over the global batch's counted tokens).
    rows may be 0 on some ranks (a short last batch); every rank still takes part in the step.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor | None
    global_targets: int

    def to(self, device: torch.device) -> "Batch":
        mask = None if self.loss_mask is None else self.loss_mask.to(device, non_blocking=True)
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True), mask, self.global_targets)

    def split(self, rows: int) -> list["Batch"]:
        """Micro-batches of at most `rows` rows (one empty micro-batch when this rank has no rows)."""
        if len(self.inputs) == 0:
            return [self]
        masks = [None] * -(-len(self.inputs) // rows) if self.loss_mask is None else self.loss_mask.split(rows)
        return [Batch(i, t, m, self.global_targets) for i, t, m in zip(self.inputs.split(rows), self.targets.split(rows), masks)]


@runtime_checkable
class BatchSource(Protocol):
    steps: int  # optimizer steps in the whole run
    step: int  # steps already taken (the next batch is batch `step`)
    unique_tokens: int  # distinct tokens the run trains on (D), for the run's summary and law fits

    def __iter__(self) -> Iterator[Batch]:
        """Batches from `step` on; each one advances `step` by one."""
        ...

    def tokens_seen(self, steps_done: int) -> int:
        """Training tokens (counted targets) in the first `steps_done` steps, over all ranks."""
        ...

    def epochs_completed(self, steps_done: int) -> float:
        """Passes over the unique tokens after `steps_done` steps (a stream without repetition reports 0 or its own count)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None:
        """Restore the position; a state from a differently configured source is a ScarceError naming the key."""
        ...
