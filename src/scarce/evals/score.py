"""Score a model on a run's evaluation sample, whatever its kind: the one place that tells them apart.

- a corpus's validation tokens (scarce.data.store.EvalSample): perplexity (scarce.evals.perplexity);
- a procedural task's held-out examples (scarce.data.procedural.ProceduralSample): loss on the counted
  targets and a diagnostic's accuracy (scarce.evals.procedural);
- a domain corpus's samples, {domain: EvalSample}: each domain on its own held-out documents, and
  `val_loss`/`val_bpb` their means weighted by the training mixture (`weights`).
"""

import torch

from scarce.data.procedural import ProceduralSample
from scarce.evals.perplexity import evaluate
from scarce.evals.procedural import evaluate_procedural


def score(model: torch.nn.Module, sample, seq_len: int, batch_size: int, device: torch.device,
          rank: int = 0, world_size: int = 1, weights: dict[str, float] | None = None) -> dict:
    """val_loss (nats/token), val_bpb, val_tokens, and what the sample's kind adds (`val_loss.DOMAIN`, `val_accuracy`)."""
    args = (seq_len, batch_size, device, rank, world_size)
    if isinstance(sample, dict):
        out = {"val_loss": 0.0, "val_bpb": 0.0, "val_tokens": 0}
        for name, part in sample.items():
            result = evaluate(model, part, *args)
            out[f"val_loss.{name}"], out[f"val_bpb.{name}"] = result["val_loss"], result["val_bpb"]
            out["val_loss"] += (weights or {}).get(name, 0.0) * result["val_loss"]
            out["val_bpb"] += (weights or {}).get(name, 0.0) * result["val_bpb"]
            out["val_tokens"] += result["val_tokens"]
        return out
    if isinstance(sample, ProceduralSample):
        return evaluate_procedural(model, sample, *args)
    return evaluate(model, sample, *args)
