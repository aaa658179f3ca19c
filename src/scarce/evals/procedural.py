"""Scoring a procedural run's held-out examples (scarce.data.procedural.ProceduralSample).

Evaluation scores the loss on the counted targets only (the task's loss mask: output tokens for an
input → output task, every token for a formal language), in nats per token; `val_bpb` is that loss in
bits per token (a procedural token is one symbol; there are no bytes). A diagnostic's examples also get
their accuracy (scarce.evals.diagnostics).
"""

import math

import torch
import torch.nn.functional as F

from scarce.data.batch import Batch
from scarce.data.procedural import ProceduralSample
from scarce.evals.diagnostics import accuracy
from scarce.procedural.diagnostics import STOP, ArithmeticTask


@torch.no_grad()
def evaluate_procedural(model: torch.nn.Module, sample: ProceduralSample, seq_len: int, batch_size: int,
                        device: torch.device, rank: int = 0, world_size: int = 1) -> dict:
    """val_loss (nats per counted target), val_bpb (bits per counted target), val_tokens; for a
    diagnostic also val_accuracy (examples with every counted target right) and, for arithmetic,
    val_digit_accuracy (answer digits right). Under data parallel each rank scores every
    world_size-th row and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    batch = sample.batch
    mine = torch.arange(rank, len(batch.inputs), world_size)
    sums = torch.zeros(6, dtype=torch.float64, device=device)  # loss, targets, exact, examples, digits right, digits
    for chunk in mine.split(batch_size):
        inputs, targets, mask = (t[chunk].to(device) for t in (batch.inputs, batch.targets, batch.loss_mask))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(inputs)
        losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        sums[0] += losses[mask.flatten()].double().sum()
        sums[1] += mask.sum()
        if sample.scored:
            part = Batch(inputs, targets, mask, int(mask.sum()))
            scores = accuracy(logits.argmax(dim=-1), part, sample.task) if mask.any() else None
            if scores is not None:
                digits = int((mask & (targets != STOP)).sum())
                sums[2:6] += torch.tensor([scores["exact_match"] * scores["examples"], scores["examples"],
                                           scores.get("digit_accuracy", 0.0) * digits, digits], dtype=torch.float64, device=device)
    if world_size > 1:
        torch.distributed.all_reduce(sums)
    model.train(was_training)
    loss = (sums[0] / sums[1]).item()
    result = {"val_loss": loss, "val_bpb": loss / math.log(2), "val_tokens": int(sums[1].item())}
    if sample.scored:
        result["val_accuracy"] = (sums[2] / sums[3]).item()
        if isinstance(sample.task, ArithmeticTask):
            result["val_digit_accuracy"] = (sums[4] / sums[5]).item()
    return result
