"""Held-out loss in nats/token and bits/byte."""

import math

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    val_tokens: np.ndarray,
    val_bytes: int,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict:
    """Mean next-token loss over the first `max_tokens` validation tokens, in non-overlapping windows.

    The windows are the same at every call, so losses are comparable across steps and runs. bits/byte
    uses the split's tokens-per-byte ratio, exact when the whole split is evaluated. Under data parallel,
    each rank takes every world_size-th window and the sums are all-reduced.
    """
    usable = len(val_tokens) if max_tokens is None else min(len(val_tokens), max_tokens + 1)
    n_windows = max(1, (usable - 1) // seq_len)
    window = min(seq_len, usable - 1)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    mine = list(range(rank, n_windows, world_size))
    for i in range(0, len(mine), batch_size):
        starts = [w * window for w in mine[i : i + batch_size]]
        rows = torch.from_numpy(np.stack([val_tokens[s : s + window + 1] for s in starts]).astype(np.int64)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(rows[:, :-1])
        loss_sum += F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum").double()
        count += rows[:, 1:].numel()
    if world_size > 1:
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    model.train(was_training)
    loss = (loss_sum / count).item()
    bits_per_byte = loss / math.log(2) * len(val_tokens) / val_bytes
    return {"val_loss": loss, "val_bpb": bits_per_byte, "val_tokens": int(count.item())}
