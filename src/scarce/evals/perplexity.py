"""Held-out loss in nats/token and bits/byte."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from scarce.data.store import EvalSample

IGNORE = -100  # cross_entropy's ignore_index: the padding at the end of the last window


def window_rows(tokens: np.ndarray, starts: list[int], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of the windows starting at `starts`; a window cut short by the end of the stream
    is padded, and its padded targets are ignored."""
    inputs = np.zeros((len(starts), seq_len), dtype=np.int64)
    targets = np.full((len(starts), seq_len), IGNORE, dtype=np.int64)
    for row, start in enumerate(starts):
        window = np.asarray(tokens[start : start + seq_len + 1], dtype=np.int64)
        inputs[row, : len(window) - 1] = window[:-1]
        targets[row, : len(window) - 1] = window[1:]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    sample: EvalSample,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> dict:
    """Mean next-token loss over an evaluation sample, and its bits per byte.

    `sample` is `store.eval_sample(eval_tokens)`: whole validation documents, the same at every call, so
    losses compare across steps and runs, and
    bits/byte divides by the bytes of exactly the text scored. The stream is cut into windows of `seq_len`
    predictions; every token after the first is scored once. Under data parallel each rank takes every
    world_size-th window and the sums are all-reduced.
    """
    starts = list(range(0, sample.scored_tokens, seq_len))
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    mine = starts[rank::world_size]
    for i in range(0, len(mine), batch_size):
        inputs, targets = (t.to(device) for t in window_rows(sample.tokens, mine[i : i + batch_size], seq_len))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(inputs)
        loss_sum += F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
        ).double()
        count += (targets != IGNORE).sum()
    if world_size > 1:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    model.train(was_training)
    loss = (loss_sum / count).item()
    bits_per_byte = (loss_sum / (sample.bytes * math.log(2))).item()
    return {"val_loss": loss, "val_bpb": bits_per_byte, "val_tokens": int(count.item())}
