"""Ensembles of runs: members loaded, checked to share their data, scored on their shared validation sample.

Members are combined as scarce.evals.combine does (logit averaging, Kim et al. 2025); the K-law and its
plot are scarce.evals.ensemble_law.

`evaluate_ensemble(run_dirs)` scores every member, and for each k = 1..K the mean loss of k-member
sub-ensembles, then fits the ensemble law L(K) = E + A / K^alpha when there are at least 3 points.
Sub-ensembles of size k are all C(K, k) subsets when there are at most `max_subsets` of them, else a
fixed seeded sample of `max_subsets` distinct subsets: the same runs give the same numbers every time.
"""

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scarce.config import RunConfig
from scarce.data.store import EvalSample, TokenStore
from scarce.errors import ScarceError
from scarce.evals.combine import COMBINES, combine_log_probs
from scarce.evals.ensemble_law import fit_ensemble_law
from scarce.evals.perplexity import IGNORE, window_rows
from scarce.evals.run import load_run_model
from scarce.model import Transformer

DEFAULT_MAX_SUBSETS = 16  # sub-ensembles scored per k (beyond that a seeded sample)
SUBSET_SEED = 0
# Member logits of one evaluation batch are held together: bound them (bytes) by shrinking the batch.
LOGITS_BUDGET_BYTES = 256 * 2**20


@dataclass
class Member:
    run_dir: Path
    config: RunConfig
    model: Transformer


def _store_identity(config: RunConfig) -> dict:
    return {"data.corpus": config.data.corpus, **{f"data.{k}": v for k, v in config.data.store_options().items()}}


def check_same_data(configs: list[tuple[Path, RunConfig]], stores: list[TokenStore] | None = None, what: str = "members") -> None:
    """Runs must share one tokenizer and one validation split: the same data section (corpus, tokenizer,
    vocabulary, split) and, when `stores` are given, the same token store. Else a ScarceError."""
    first_dir, first = configs[0]
    for i, (run_dir, config) in enumerate(configs[1:], start=1):
        other = _store_identity(config)
        differ = {k: (v, other[k]) for k, v in _store_identity(first).items() if other[k] != v}
        if not differ and stores is not None and (
            stores[i].path != stores[0].path or stores[i].tokenizer.fingerprint != stores[0].tokenizer.fingerprint
        ):
            differ = {"token store": (str(stores[0].path), str(stores[i].path))}
        if differ:
            detail = ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in differ.items())
            raise ScarceError(
                f"{first_dir} and {run_dir} use different tokenizers or validation splits ({detail}); "
                f"{what} must be trained on one token store"
            )


def load_members(run_dirs: list[Path], device: torch.device) -> tuple[list[Member], TokenStore]:
    """The runs' newest checkpoints as eval-mode models on `device`, and their shared token store."""
    if len(run_dirs) < 1:
        raise ScarceError("an ensemble needs at least one run directory (K ≥ 1)")
    if len(set(map(str, run_dirs))) != len(run_dirs):
        raise ScarceError("a run directory is listed twice; an ensemble's members are distinct runs")
    members, stores = [], []
    for run_dir in run_dirs:
        config, model, store, _ = load_run_model(Path(run_dir))
        members.append(Member(Path(run_dir), config, model.to(device).eval()))
        stores.append(store)
    check_same_data([(m.run_dir, m.config) for m in members], stores)
    return members, stores[0]


def subsets_by_k(n_members: int, max_subsets: int = DEFAULT_MAX_SUBSETS, seed: int = SUBSET_SEED) -> dict[int, list[tuple]]:
    """For k = 1..K, the member subsets whose losses are averaged: all when few, else a seeded sample."""
    chosen = {}
    for k in range(1, n_members + 1):
        if math.comb(n_members, k) <= max(max_subsets, n_members):
            chosen[k] = list(itertools.combinations(range(n_members), k))
            continue
        rng, picked = np.random.default_rng((seed, n_members, k)), {}
        while len(picked) < max_subsets:
            subset = tuple(sorted(rng.choice(n_members, size=k, replace=False).tolist()))
            picked.setdefault(subset, None)
        chosen[k] = list(picked)  # in the order drawn: fixed by the seed
    return chosen


@torch.no_grad()
def subset_losses(
    models: list[torch.nn.Module], sample: EvalSample, seq_len: int, subsets: list[tuple], combine: str = "logits",
    batch_size: int = 16,
) -> np.ndarray:
    """Mean next-token loss (nats/token) on `sample` of the ensemble of each subset of `models`.

    The stream is cut into windows as `scarce.evals.perplexity.evaluate` cuts it, so a one-member subset
    gets exactly that member's `val_loss`.
    """
    device = next(models[0].parameters()).device
    vocab = models[0].head.out_features
    rows_fit = max(1, LOGITS_BUDGET_BYTES // (len(models) * seq_len * vocab * 4))
    batch_size = min(batch_size, rows_fit)
    starts = list(range(0, sample.scored_tokens, seq_len))
    sums, count = np.zeros(len(subsets)), 0
    for i in range(0, len(starts), batch_size):
        inputs, targets = (t.to(device) for t in window_rows(sample.tokens, starts[i : i + batch_size], seq_len))
        logits = []
        for model in models:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits.append(model(inputs).float())
        flat_targets = targets.flatten()
        for j, subset in enumerate(subsets):
            log_probs = combine_log_probs([logits[m] for m in subset], combine)
            sums[j] += F.nll_loss(log_probs.flatten(0, 1), flat_targets, ignore_index=IGNORE, reduction="sum").double().item()
        count += int((targets != IGNORE).sum())
    return sums / count


def evaluate_ensemble(
    run_dirs: list[Path], combine: str = "logits", eval_tokens: int | None = None,
    max_subsets: int = DEFAULT_MAX_SUBSETS, device: torch.device | None = None,
) -> dict:
    """Member losses, the mean loss of k-member sub-ensembles for k = 1..K, and the fitted K-law.

    `eval_tokens` defaults to the members' data.eval_tokens (they must agree): the validation sample
    each member was scored on while training.
    """
    if combine not in COMBINES:
        raise ScarceError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    members, store = load_members([Path(r) for r in run_dirs], device)
    seq_lens = {m.config.model.seq_len for m in members}
    if len(seq_lens) > 1:
        raise ScarceError(f"members have different contexts (model.seq_len {sorted(seq_lens)}); score them apart")
    if eval_tokens is None:
        budgets = {m.config.data.eval_tokens for m in members}
        if len(budgets) > 1:
            raise ScarceError(f"members were scored on different data.eval_tokens {sorted(budgets, key=str)}; pass --eval-tokens")
        eval_tokens = budgets.pop()
    sample = store.eval_sample(eval_tokens)
    chosen = subsets_by_k(len(members), max_subsets)
    flat = [s for k in chosen for s in chosen[k]]
    losses = dict(zip(flat, subset_losses([m.model for m in members], sample, seq_lens.pop(), flat, combine)))
    losses_by_k = [
        {"k": k, "loss": float(np.mean([losses[s] for s in chosen[k]])), "subsets": len(chosen[k])} for k in chosen
    ]
    full = losses[tuple(range(len(members)))]
    return {
        "combine": combine,
        "eval_tokens": eval_tokens,
        "scored_tokens": sample.scored_tokens,
        "members": [{"run": str(m.run_dir), "loss": float(losses[(i,)])} for i, m in enumerate(members)],
        "ensemble": {"k": len(members), "loss": float(full), "bpb": float(full * sample.scored_tokens / (sample.bytes * math.log(2)))},
        "losses_by_k": losses_by_k,
        "law": fit_ensemble_law(losses_by_k),
    }
