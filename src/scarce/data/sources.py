"""The batch-source seam: where a training step's tokens come from.

The trainer consumes any object with this interface and knows nothing else about data. Implementations:
`EpochLoader` (E epochs over a D-token budget); procedural streams, real/synthetic and domain mixtures
plug in here too. A source is addressable by step, so `state_dict()` / `load_state_dict()` make resume
exact, and it reports its own accounting (tokens seen, unique tokens, epochs).
"""

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, runtime_checkable

import torch

from scarce.errors import ScarceError


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


# Sources by the name `data.source` gives. A factory builds this rank's source for a run:
# factory(config, store, rank, world_size) -> BatchSource. Modules register theirs with `register_source`.
SOURCES: dict[str, Callable] = {}
# Sources that bring their own data instead of a corpus (a procedural stream): data(config) -> a store,
# i.e. an object with vocab_size, train_token_count and eval_sample(max_tokens) as TokenStore has them.
OWN_DATA: dict[str, Callable] = {}
# Changes applied to every run's source after it is built, in registration order (procedural
# front-loading): transform(source, config, store, rank, world_size) -> BatchSource, the source itself
# when the config does not ask for the change.
TRANSFORMS: list[Callable] = []


def register_source(name: str, data: Callable | None = None):
    def register(factory: Callable) -> Callable:
        SOURCES[name] = factory
        if data is not None:
            OWN_DATA[name] = data
        return factory

    return register


def register_transform(transform: Callable) -> Callable:
    TRANSFORMS.append(transform)
    return transform


def _register_builtins() -> None:
    import scarce.data.domains  # noqa: F401  (registers the built-in sources: "epochs", "domains", "procedural")
    import scarce.data.loader  # noqa: F401
    import scarce.data.procedural.source  # noqa: F401


def prepare_run_data(config):
    """The store a run trains and evaluates on: its corpus's (scarce.data.domains.prepare_data), or the
    source's own data where the source brings it (a procedural stream: the task's vocabulary and held-out examples)."""
    _register_builtins()
    if config.data.domains is None and config.data.source in OWN_DATA:
        return OWN_DATA[config.data.source](config)
    from scarce.data.domains import prepare_data

    return prepare_data(config.data)


def build_source(config, store, rank: int = 0, world_size: int = 1) -> BatchSource:
    """The batch source `config.data.source` names, for this rank, with the registered transforms applied."""
    _register_builtins()
    name = "domains" if config.data.domains is not None else config.data.source  # a domain corpus is a mixture
    if name not in SOURCES:
        raise ScarceError(f"data.source={name!r} is not a known batch source; choose one of {', '.join(SOURCES)}")
    source = SOURCES[name](config, store, rank, world_size)
    for transform in TRANSFORMS:
        source = transform(source, config, store, rank, world_size)
    return source
