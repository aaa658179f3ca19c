"""Scoring the diagnostic tasks of scarce.procedural.diagnostics: exact match on the counted targets
(the haystack's needle value, every answer digit and the stop token of arithmetic) and digit accuracy."""

import numpy as np
import torch

from scarce.data.batch import Batch
from scarce.errors import ScarceError
from scarce.procedural.base import Task
from scarce.procedural.diagnostics import STOP, ArithmeticTask, DiagnosticTask


def heldout_batch(task: DiagnosticTask) -> Batch:
    """The task's held-out set, one example per row, as a Batch a model can be scored on."""
    examples = task.heldout()
    tokens = torch.from_numpy(examples.tokens.astype(np.int64))
    mask = torch.from_numpy(examples.loss_mask[:, 1:].copy())
    return Batch(tokens[:, :-1], tokens[:, 1:], mask, int(mask.sum()))


def predictions(logits_or_predictions) -> torch.Tensor:
    """Predicted tokens (rows, T): the argmax of float logits (rows, T, vocab), or integer predictions as given."""
    values = torch.as_tensor(logits_or_predictions)
    if values.is_floating_point():
        if values.dim() != 3:
            raise ScarceError(f"logits must be (rows, positions, vocab), got shape {tuple(values.shape)}")
        return values.argmax(dim=-1)
    return values


def accuracy(logits_or_predictions, batch: Batch, task: Task) -> dict[str, float]:
    """Scores on the counted positions of `batch` (one example per row, as heldout_batch gives it).

    exact_match: the fraction of examples whose every counted target is predicted (for the haystack, the
    needle's value: the task's accuracy). digit_accuracy (arithmetic only): the fraction of answer digits
    predicted, every answer digit counted and the stop token not. examples: the rows scored."""
    predicted = predictions(logits_or_predictions).to(batch.targets.device)
    if predicted.shape != batch.targets.shape:
        raise ScarceError(
            f"predictions of shape {tuple(predicted.shape)} do not match the batch's targets {tuple(batch.targets.shape)}"
        )
    counted = torch.ones_like(batch.targets, dtype=torch.bool) if batch.loss_mask is None else batch.loss_mask
    hit = predicted == batch.targets
    scored = counted.any(dim=1)
    if not scored.any():
        raise ScarceError("the batch has no counted targets to score")
    scores = {"exact_match": (hit | ~counted).all(dim=1)[scored].float().mean().item(), "examples": int(scored.sum())}
    if isinstance(task, ArithmeticTask):
        digits = counted & (batch.targets != STOP)
        scores["digit_accuracy"] = hit[digits].float().mean().item()
    return scores
