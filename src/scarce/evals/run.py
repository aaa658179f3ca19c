"""Score a finished (or checkpointed) run on its validation split."""

from pathlib import Path

import torch

from scarce import runs
from scarce.checkpoint import load_latest_checkpoint
from scarce.config import RunConfig
from scarce.data.domains import DomainStore, domain_budgets, mixture_weights
from scarce.data.sources import prepare_run_data
from scarce.data.store import TokenStore
from scarce.errors import ScarceError
from scarce.evals.score import score
from scarce.model import Transformer, model_shape


def load_run_model(run_dir: Path) -> tuple[RunConfig, Transformer, TokenStore | DomainStore, Path]:
    """The run's config, its model with the newest intact checkpoint's weights (on the CPU), its token store
    and the checkpoint's path."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG_FILE).is_file():
        raise ScarceError(f"{run_dir} is not a run directory: it has no config.json")
    config = runs.load_run_config(run_dir)  # unreadable or invalid: an error naming the file and the keys
    found = load_latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise ScarceError(f"{run_dir} has no checkpoint to evaluate")
    path, model_state, _ = found
    store = prepare_run_data(config)
    extra = config.objective.extra_input_tokens  # MIR's mask token: an embedding row, never predicted
    model = Transformer(model_shape(vocab_size=store.vocab_size, extra_input_tokens=extra, **config.model.model_dump()))
    model.load_state_dict(model_state)
    return config, model, store, path


def evaluate_run(run_dir: Path, eval_tokens: int | None = None) -> dict:
    config, model, store, checkpoint = load_run_model(run_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sample = store.eval_sample(eval_tokens)
    # a domain run: every domain on its own held-out documents, and their mean weighted by the mixture
    weights = mixture_weights(config.data, domain_budgets(config.data, store)) if isinstance(store, DomainStore) else None
    result = score(model.to(device), sample, config.model.seq_len, config.train.batch_size, device, weights=weights)
    return {**result, "checkpoint": checkpoint.name}
