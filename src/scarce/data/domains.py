"""Labelled domains: one corpus made of several, sharing one tokenizer, mixed by weight at training time.

A domain corpus (`data.domains` in a run's config) names domains, each a catalog corpus or the user's
files. Its store is one directory holding a token store per domain (scarce.data.store's layout: a
train/validation split by whole documents, per domain) and the tokenizer they share, trained on the
training documents of all the domains together (a seeded sample of each, up to an equal share of
data.bpe_sample_bytes). Which domains, their sources and the tokenizer settings
key the store; weights and caps do not, so every run over the same domains (the general model and
every specialist) shares one tokenizer and one set of held-out documents.

`DomainMixture` is the batch source: each domain's capped budget is cut into sequences and visited in
seeded epochs of its own (repeated as often as the run needs), and the domains are interleaved
deterministically by weight (see `domain_counts`). Evaluation scores each domain on its own held-out
documents and reports their weighted mean as `val_loss`.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from scarce.config import DataConfig, RunConfig
from scarce.data.batch import Batch
from scarce.data.corpora import corpus_fingerprint
from scarce.data.store import (
    BPE_SAMPLE_BYTES,
    STORE_FORMAT_VERSION,
    EvalSample,
    TokenStore,
    build_into,
    check_store_options,
    default_workers,
    fit_tokenizer,
    open_store,
    prepare_store,
    scan_corpus,
    tokenizing_progress,
    work_dir,
    write_corpus,
)
from scarce.data.tokenizer import Tokenizer
from scarce.errors import ScarceError
from scarce.paths import scarce_home, writable_dir

# Bump when the domain store's layout changes, so stores built the old way are not reused.
DOMAIN_STORE_VERSION = 1


# ---------------------------------------------------------------- the store


@dataclass
class DomainStore:
    """Token stores of several domains with one tokenizer; quacks like a TokenStore where runs need it."""

    path: Path
    domains: dict[str, TokenStore]  # in the config's order

    @property
    def _first(self) -> TokenStore:
        return next(iter(self.domains.values()))

    @property
    def vocab_size(self) -> int:
        return self._first.vocab_size

    @property
    def eot_id(self) -> int:
        return self._first.eot_id

    @property
    def mask_id(self) -> int:
        return self._first.mask_id

    @property
    def tokenizer(self) -> Tokenizer:
        return self._first.tokenizer

    def eval_sample(self, max_tokens: int | None = None) -> dict[str, EvalSample]:
        """Each domain's evaluation sample: only that domain's held-out documents, `max_tokens` per domain."""
        return {name: store.eval_sample(max_tokens) for name, store in self.domains.items()}


def _domain_sources(data: DataConfig) -> dict[str, str]:
    return {name: domain.source or name for name, domain in data.domains.items()}


def prepare_domain_store(
    sources: dict[str, str],
    *,
    tokenizer: str = "bpe",
    vocab_size: int = 8192,
    val_fraction: float = 0.05,
    split_seed: int = 0,
    text_field: str = "text",
    bpe_sample_bytes: int = BPE_SAMPLE_BYTES,
    root: Path | None = None,
    workers: int | None = None,
) -> DomainStore:
    """Tokenize every domain (name -> source) with one shared tokenizer, or open the cached store."""
    check_store_options(tokenizer, val_fraction, text_field, bpe_sample_bytes)
    root = Path(root) if root is not None else scarce_home() / "data"
    prints = {name: corpus_fingerprint(source, text_field) for name, source in sources.items()}
    key_vocab = f"{vocab_size}:{bpe_sample_bytes}" if tokenizer == "bpe" else "gpt2"
    key = f"domains-v{DOMAIN_STORE_VERSION}-store-v{STORE_FORMAT_VERSION}:{sorted(prints.items())}:{tokenizer}:" \
          f"{key_vocab}:{val_fraction!r}:{split_seed}"
    target = root / f"domains-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (target / "complete").is_file():
        writable_dir(root, "the token store cache ($SCARCE_HOME/data)")
        _build(target, sources, prints, tokenizer, vocab_size, val_fraction, split_seed, text_field, bpe_sample_bytes,
               root, workers or default_workers())
    return DomainStore(target, {name: open_store(target / name) for name in sources})


def _build(target, sources, prints, tokenizer, vocab_size, val_fraction, split_seed, text_field, bpe_sample_bytes,
           root, workers) -> None:
    console = Console(stderr=True)
    with tokenizing_progress(console) as progress:
        corpora = {name: scan_corpus(source, val_fraction, split_seed, work_dir(target) / name, text_field=text_field,
                                     fingerprint=prints[name], workers=workers, progress=progress,
                                     where=f"data.domains.{name}: corpus")
                   for name, source in sources.items()}
    tok, sample = fit_tokenizer(tokenizer, vocab_size, list(corpora.values()), bpe_sample_bytes, root, console, workers,
                                f" of {len(corpora)} domains")

    def write(folder: Path) -> None:
        with tokenizing_progress(console) as progress:
            for name, corpus in corpora.items():
                (folder / name).mkdir()
                write_corpus(folder / name, corpus, tok, workers, progress, name, val_fraction, split_seed, domain=name,
                             **sample)
        (folder / "complete").write_text("")  # last: a store directory with this file is whole

    build_into(target, "complete", write)
    shutil.rmtree(work_dir(target), ignore_errors=True)
    console.print(f"prepared {target}: domains {', '.join(sources)}, vocab {tok.vocab_size}")


def prepare_data(data: DataConfig) -> TokenStore | DomainStore:
    """The store a run's data section names: a single corpus's, or a domain corpus's."""
    if data.domains is None:
        return prepare_store(data.corpus, **data.store_options())
    return prepare_domain_store(_domain_sources(data), **data.store_options())


# ---------------------------------------------------------------- the mixture


def domain_budgets(data: DataConfig, store: DomainStore) -> dict[str, np.ndarray]:
    """Each domain's training tokens: the first `unique_tokens` of its training order (all when uncapped)."""
    budgets = {}
    for name, domain in data.domains.items():
        available = store.domains[name].train_token_count
        if domain.unique_tokens is not None and domain.unique_tokens > available:
            raise ScarceError(f"data.domains.{name}.unique_tokens={domain.unique_tokens} exceeds the {available} "
                              f"training tokens of domain {name!r}: lower it or drop the cap")
        budgets[name] = store.domains[name].budget(domain.unique_tokens or available)
    return budgets


def mixture_weights(data: DataConfig, budgets: dict[str, np.ndarray]) -> dict[str, float]:
    """Normalized training weights: as configured, or proportional to each domain's (capped) token count."""
    raw = {name: (d.weight if d.weight is not None else float(len(budgets[name]))) for name, d in data.domains.items()}
    total = sum(raw.values())
    return {name: w / total for name, w in raw.items()}


def domain_counts(sequences: int, weights: list[float]) -> list[int]:
    """How many of the first `sequences` sequences of the stream come from each domain.

    Nested rounding: the first domain takes the nearest integer to its share of n, the second the nearest
    to its share of what is left, and so on; the last takes the rest. The counts sum to n and never
    decrease as n grows (each rounds a non-decreasing number): a deterministic interleave with no
    randomness, so any step's batch is known from the step alone. Rounding errors carry down the list:
    with E_i the summed error of domains 1..i and r_i = w_i / (w_i + … + w_k), E_i = (1 − r_i)·E_{i−1} + δ_i
    with |δ_i| ≤ ½, so |E_i| ≤ i/2 and domain i (1-based) of k stays within min(i, k − 1)/2 sequences of
    n·w_i at every n: one sequence for up to 3 domains, (k − 1)/2 at most (a search over random weights
    exceeds one sequence with 4 domains: tests/test_domains.py).
    """
    counts, left = [], sequences
    for i, w in enumerate(weights[:-1]):
        rest = sum(weights[i:])
        take = min(left, math.floor(left * (w / rest) + 0.5)) if rest > 0 else 0
        counts.append(take)
        left -= take
    return counts + [left]


def _stream_seed(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)


class DomainMixture:
    """Batches mixing domains by weight: the BatchSource of runs with `data.domains`.

    Each domain's budget is cut into sequences of seq_len + 1 tokens (as scarce.data.loader does) and read
    in its own stream of seeded epochs, permutation (data seed, domain, epoch), as long as the run needs:
    a domain asked for more sequences than it has is repeated. After n sequences of the run, domain i has
    contributed `domain_counts(n)[i]` sequences, its stream's first ones; a step's global batch is the next
    batch_size sequences, grouped by domain. The whole state is the step.
    """

    def __init__(self, budgets: dict[str, np.ndarray], weights: dict[str, float], seq_len: int, batch_size: int,
                 seed: int, *, epochs: int = 1, tokens: int | None = None, rank: int = 0, world_size: int = 1):
        self.names = list(budgets)
        self.weights = [weights[name] for name in self.names]
        self.seq_len, self.batch_size, self.seed, self.rank, self.world_size = seq_len, batch_size, seed, rank, world_size
        self.tokens = budgets
        self.n_sequences = {name: (len(t) - 1) // seq_len for name, t in budgets.items()}
        for name, w in zip(self.names, self.weights):
            if w > 0 and self.n_sequences[name] < 1:
                raise ScarceError(
                    f"data.domains.{name}: {len(budgets[name])} unique tokens hold no sequence of model.seq_len + 1 = "
                    f"{seq_len + 1} tokens: raise data.domains.{name}.unique_tokens or lower model.seq_len")
        self.trained_sequences = sum(n for name, n in self.n_sequences.items() if weights[name] > 0)
        # the run's length: `tokens` (whole steps), else `epochs` passes over the trained domains' sequences
        self.total_sequences = (-(-tokens // (seq_len * batch_size)) * batch_size) if tokens else epochs * self.trained_sequences
        self.steps = -(-self.total_sequences // batch_size)
        final = domain_counts(self.total_sequences, self.weights)
        self.epochs_per_domain = {name: c / self.n_sequences[name] if self.n_sequences[name] else 0.0
                                  for name, c in zip(self.names, final)}
        # as EpochLoader counts D: the trained domains' budgets (unique_tokens × epochs_completed = tokens seen)
        self.unique_tokens = sum(self.n_sequences[name] * seq_len + 1 for name, w in zip(self.names, self.weights) if w > 0)
        self._permutations: dict[tuple[str, int], np.ndarray] = {}
        self.step = 0

    def _permutation(self, name: str, epoch: int) -> np.ndarray:
        if (name, epoch) not in self._permutations:
            rng = np.random.default_rng((self.seed, _stream_seed(name), epoch))
            self._permutations = {k: v for k, v in self._permutations.items() if k[0] != name}
            self._permutations[name, epoch] = rng.permutation(self.n_sequences[name])
        return self._permutations[name, epoch]

    def sequences(self, step: int) -> list[tuple[str, int]]:
        """(domain, sequence index in its budget) of every sequence of the global batch at `step`."""
        start = step * self.batch_size
        stop = min(start + self.batch_size, self.total_sequences)
        out = []
        for name, a, b in zip(self.names, domain_counts(start, self.weights), domain_counts(stop, self.weights)):
            for position in range(a, b):
                epoch, offset = divmod(position, self.n_sequences[name])
                out.append((name, int(self._permutation(name, epoch)[offset])))
        return out

    def batch(self, step: int) -> Batch:
        chosen = self.sequences(step)
        mine = chosen[self.rank :: self.world_size]
        rows = np.zeros((len(mine), self.seq_len + 1), dtype=np.int64)
        for row, (name, index) in zip(rows, mine):
            start = index * self.seq_len
            row[:] = self.tokens[name][start : start + self.seq_len + 1]
        rows = torch.from_numpy(rows)
        return Batch(rows[:, :-1], rows[:, 1:], None, global_targets=len(chosen) * self.seq_len)

    def __iter__(self):
        while self.step < self.steps:
            batch = self.batch(self.step)
            self.step += 1
            yield batch

    def tokens_seen(self, steps_done: int) -> int:
        return min(steps_done * self.batch_size, self.total_sequences) * self.seq_len

    def epochs_completed(self, steps_done: int) -> float:
        return min(steps_done * self.batch_size, self.total_sequences) / max(1, self.trained_sequences)

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed,
                "domains": {name: [self.n_sequences[name], w] for name, w in zip(self.names, self.weights)}}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "domains"):
            if state.get(key) != mine[key]:
                raise ScarceError(f"checkpoint's domain mixture has {key}={state.get(key)} but this run has "
                                  f"{key}={mine[key]}: the config changed since the checkpoint was written")
        self.step = state["step"]



def mixture_source(config: RunConfig, store: DomainStore, rank: int = 0, world_size: int = 1) -> DomainMixture:
    return build_mixture(config, store, config.train.tokens, rank, world_size)


def build_mixture(config: RunConfig, store: DomainStore, steps_tokens: int | None, rank: int, world_size: int) -> DomainMixture:
    budgets = domain_budgets(config.data, store)
    return DomainMixture(budgets, mixture_weights(config.data, budgets), config.model.seq_len, config.train.batch_size,
                         config.train.data_seed, epochs=config.train.epochs, tokens=steps_tokens, rank=rank,
                         world_size=world_size)


# ---------------------------------------------------------------- evaluation and the summary


def trained_domain(source: DomainMixture) -> str:
    """The one domain a run trains on, or "mixture"."""
    trained = [name for name, w in zip(source.names, source.weights) if w > 0]
    return trained[0] if len(trained) == 1 else "mixture"


def domain_summary(source: DomainMixture, steps_done: int, last_eval: dict | None, init_record: dict | None) -> dict:
    """Flat summary keys of a domain run, for `scarce runs` and `scarce fit --runs`.

    domain: the one domain trained on, or "mixture". general_tokens (D) and domain_tokens (D'): a mixture
    run's own tokens and 0; a one-domain run started from another run's weights counts that run's tokens
    at its checkpoint as D and its own as D'; a one-domain run from scratch has D = 0.
    """
    domain = trained_domain(source)
    own = source.tokens_seen(steps_done)
    started_from = (init_record or {}).get("tokens_seen") or 0
    summary = {"domain": domain, "general_tokens": own if domain == "mixture" else started_from,
               "domain_tokens": 0 if domain == "mixture" else own}
    for name, epochs in source.epochs_per_domain.items():
        summary[f"epochs.{name}"] = epochs
    for key, value in (last_eval or {}).items():
        if key.startswith(("val_loss.", "val_bpb.")):
            summary[f"final_{key}"] = value
    if last_eval:
        summary["domain_val_loss"] = last_eval["val_loss"] if domain == "mixture" else last_eval[f"val_loss.{domain}"]
    return summary
