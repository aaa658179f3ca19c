"""Combining ensemble members' next-token predictions; used by scoring, sampling and token distillation.

Kim et al. 2025 (arXiv 2509.14786): the ensemble's next-token distribution is the softmax of the mean of
the members' logits, a normalized geometric mean of their distributions. `combine="probs"` averages the
distributions instead (the arithmetic mean), for comparison.
"""

import math

import torch
import torch.nn.functional as F

from scarce.errors import ScarceError

COMBINES = ("logits", "probs")


def combine_log_probs(logits: list[torch.Tensor], combine: str = "logits") -> torch.Tensor:
    """Members' logits (each (..., vocab)) → the ensemble's next-token log-probabilities."""
    if combine == "logits":
        return F.log_softmax(torch.stack(logits).float().mean(dim=0), dim=-1)
    if combine == "probs":
        log_probs = F.log_softmax(torch.stack(logits).float(), dim=-1)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))
    raise ScarceError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")


@torch.no_grad()
def ensemble_log_probs(models: list[torch.nn.Module], tokens: torch.Tensor, combine: str = "logits") -> torch.Tensor:
    """(B, T) tokens → (B, T, vocab) log-probabilities of the ensemble of `models` (all on tokens' device)."""
    device = tokens.device
    logits = []
    for model in models:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits.append(model(tokens).float())
    return combine_log_probs(logits, combine)
