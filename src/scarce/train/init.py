"""The initialization seam: where a new run's weights start.

From scratch (the model's own init, seeded by train.seed), or with named weight groups (scarce.model
.weight_group: attention, mlp, norms, embeddings, head) copied from another run's checkpoint and the rest
freshly initialized. Procedural warm-up transfer and continued pretraining are both this. Or, with
init.mode = "continue", a run that carries on another run's whole training state from one of its
checkpoints under its own length and schedule (a WSD decay branch): `continuation` checks the two runs
agree on everything that shapes the trajectory, and the trainer loads the state.
"""

from pathlib import Path

import torch
from rich.console import Console
from rich.text import Text

from scarce import runs
from scarce.checkpoint import checkpoint_dirs, load_latest_checkpoint, read_checkpoint
from scarce.config import InitConfig, RunConfig
from scarce.errors import ScarceError
from scarce.model import Transformer, transferred, weight_group
from scarce.train.optim import lr_at


def load_source_checkpoint(cfg: InitConfig) -> tuple[dict, dict, int]:
    """(weights, training state, step) of the source run's chosen checkpoint."""
    source = Path(cfg.from_run)
    runs.read_config(source)  # a clear error when it is not a run directory
    if cfg.checkpoint_step is None:
        # the newest checkpoint is damaged: say so where the user looks, not only in init.checkpoint_step
        found = load_latest_checkpoint(source / runs.CHECKPOINTS_DIR, warn=_warn)
        if found is None:
            raise ScarceError(f"init.from_run={source} has no checkpoint to start from")
        path, weights, state = found
    else:
        path = source / runs.CHECKPOINTS_DIR / f"step_{cfg.checkpoint_step:08d}"
        if not path.is_dir():
            kept = ", ".join(p.name for p in checkpoint_dirs(source / runs.CHECKPOINTS_DIR)) or "none"
            raise ScarceError(f"init.checkpoint_step={cfg.checkpoint_step}: {source} has no checkpoint {path.name} "
                              f"(it has {kept}; train.checkpoint_steps keeps a step's checkpoint)")
        weights, state = read_checkpoint(path)
    return weights, state, int(path.name.removeprefix("step_"))


def _warn(message: str) -> None:
    Console(stderr=True).print(Text.assemble(("warning: ", "yellow"), f"init.from_run: {message}"))


def tokens_seen_at(source: Path, state: dict, step: int) -> int:
    """Training tokens the source run had seen at its checkpoint (older checkpoints do not record it)."""
    if "tokens_seen" in state:
        return int(state["tokens_seen"])
    config = runs.read_config(source)
    return step * config["train"]["batch_size"] * config["model"]["seq_len"]


def _copied(own: dict, source: dict, groups, from_run) -> dict:
    """The weights of `groups` from `source` (a checkpoint's weights), checked against the model's `own`."""
    vocab_rows = source["head.weight"].shape[0] if "head.weight" in source else None
    copied = {}
    for name, tensor in own.items():
        group = weight_group(name)
        if not transferred(name, groups):
            continue
        if name not in source:
            raise ScarceError(
                f"init.groups: group {group!r} needs weight {name!r}, which run {from_run} does not have "
                "(another architecture: a different number of layers or no QK-norm)"
            )
        value, target = source[name], tensor
        if name == "embed.weight":  # input-only rows (MIR's mask token) after the vocabulary are never copied
            value, target = value[:vocab_rows], tensor[: own["head.weight"].shape[0]]
        if name == "pos_embed.weight" and len(value) > len(target):  # a longer context: its first positions
            value = value[: len(target)]
        if value.shape != target.shape:
            raise ScarceError(
                f"init.groups: group {group!r} weight {name!r} has shape {tuple(value.shape)} in run {from_run} "
                f"but {tuple(target.shape)} in this model"
            )
        copied[name] = torch.cat([value, tensor[len(value):]]) if name == "embed.weight" else value
    missing = sorted(n for n in source if transferred(n, groups) and n not in own)
    if missing:
        raise ScarceError(f"init.groups: run {from_run} has weights this model lacks: {', '.join(missing)}")
    return copied


def _record(from_run, state: dict, step: int, groups) -> dict:
    return {"from_run": Path(from_run).name, "from_path": str(Path(from_run).resolve()), "checkpoint_step": step,
            "tokens_seen": tokens_seen_at(Path(from_run), state, step), "groups": list(groups)}


def initialize(model: Transformer, cfg: InitConfig) -> dict | None:
    """Apply `cfg` to a freshly initialized model; returns what the run records (None: from scratch)."""
    if cfg.from_run is None or cfg.mode == "continue":  # a continued run's whole state is loaded by the trainer
        return None
    source, state, step = load_source_checkpoint(cfg)
    own = model.state_dict()
    copied = _copied(own, source, cfg.groups, cfg.from_run)
    more = []
    for extra in cfg.sources:  # further runs' groups: e.g. a set warm-up's attention, an ECA warm-up's MLP
        weights, extra_state, extra_step = load_source_checkpoint(extra)
        theirs = _copied(own, weights, extra.groups, extra.from_run)
        twice = sorted(set(theirs) & set(copied))
        if twice:
            raise ScarceError(f"init.sources: {', '.join(twice)} would come from {extra.from_run} and from an "
                              "earlier run too; copy each weight from one run")
        copied.update(theirs)
        more.append(_record(extra.from_run, extra_state, extra_step, extra.groups))
    if cfg.embedding_init == "mean":
        rows = source["embed.weight"][: source["head.weight"].shape[0]]
        if rows.shape[1] != own["embed.weight"].shape[1]:
            raise ScarceError(
                f"init.embedding_init='mean': run {cfg.from_run} has d_model {rows.shape[1]}, "
                f"this model {own['embed.weight'].shape[1]}"
            )
        mean = rows.mean(dim=0)
        copied["embed.weight"] = mean.expand_as(own["embed.weight"]).clone()
        if "head" not in cfg.groups:  # as the reference's "average" init does: the output head's rows too
            copied["head.weight"] = mean.expand_as(own["head.weight"]).clone()
    model.load_state_dict({**own, **copied})
    record = {**_record(cfg.from_run, state, step, cfg.groups),
              "embedding_init": cfg.embedding_init if "embeddings" not in cfg.groups else "copied"}
    return {**record, "sources": more} if more else record


# Keys a continued run may change: its name and place, its length and the schedule after the branch
# point (checked step by step below), and how it logs, evaluates, checkpoints and runs.
CONTINUE_MAY_DIFFER = {
    "name", "runs_dir", "study", "train.epochs", "train.tokens", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.checkpoint_steps", "train.device", "train.log_every", "train.compile",
    "optim.schedule", "optim.decay_fraction", "optim.decay_tokens", "optim.final_lr_fraction", "optim.warmup_fraction",
    "optim.warmup_tokens",
}


def continuation(config: RunConfig, total_steps: int) -> tuple[dict, dict, int]:
    """(weights, training state, step) to continue from, after checking this run is a continuation of the
    source: the same data, model, objective, seeds and optimizer, and the same learning rate at every
    step before the branch point (so the source's trajectory up to there is this run's own)."""
    cfg = config.init
    weights, state, step = load_source_checkpoint(cfg)
    source_config = RunConfig.model_validate(runs.read_config(Path(cfg.from_run)))
    ours, theirs = runs.flatten(config.model_dump(mode="json")), runs.flatten(source_config.model_dump(mode="json"))
    changed = [k for k in sorted(set(ours) | set(theirs))
               if k not in CONTINUE_MAY_DIFFER and not k.startswith("init.") and ours.get(k) != theirs.get(k)]
    if changed:
        raise ScarceError(f"init.mode='continue': this run must train exactly as {cfg.from_run} did up to its step "
                          f"{step}, but " + "; ".join(f"{k} is {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in changed))
    tokens_per_step = config.train.batch_size * config.model.seq_len
    source_steps = state["schedule"]["total_steps"]
    for k in range(step):
        before, now = lr_at(k, source_steps, source_config.optim, tokens_per_step), lr_at(k, total_steps, config.optim, tokens_per_step)
        if before != now:
            raise ScarceError(
                f"init.mode='continue': the learning rate at step {k} would be {now:.6g} here but was {before:.6g} in "
                f"{cfg.from_run}; before the branch point (step {step}) the schedules must agree: set optim.warmup_tokens "
                f"to the source's warm-up and make the decay start at or after step {step} (optim.decay_tokens)")
    return weights, state, step



def branch_config(spec: str, overrides: list[str] = ()) -> RunConfig:
    """The config of a decay branch `RUN_DIR@STEP` (`scarce train --branch-from`): the source run's config,
    continued from its checkpoint at STEP, with `overrides`.

    The source's warm-up is pinned in tokens (so the branch's schedule agrees with it before STEP whatever
    the branch's length), and `optim.decay_tokens=d` alone makes a WSD branch of STEP steps plus d tokens:
    it sets the schedule to wsd and, unless given, train.tokens to STEP · batch_size · seq_len + d.
    """
    from scarce.config import parse_override, resolve_config

    where, _, step_text = spec.rpartition("@")
    if not where or not step_text.isdigit() or int(step_text) < 1:
        raise ScarceError(f"--branch-from {spec!r}: write RUN_DIR@STEP, e.g. runs/trunk-20260101-120000.000-ab12@400")
    source, step = Path(where), int(step_text)
    base = runs.read_config(source)
    summary = runs.read_summary(source) if (source / runs.SUMMARY_FILE).exists() else {}
    given = {".".join(parse_override(item)[0]) for item in overrides}
    tokens_per_step = base["train"]["batch_size"] * base["model"]["seq_len"]
    optim = dict(base["optim"])
    if optim.get("warmup_tokens") is None and "steps_total" in summary:
        optim["warmup_tokens"] = round(optim["warmup_fraction"] * summary["steps_total"]) * tokens_per_step
    if "optim.decay_tokens" in given:
        optim["schedule"] = "wsd"
    base.update(name=f"{base['name']}-branch{step}", optim=optim, init={"from_run": str(source), "checkpoint_step": step,
                                                                         "mode": "continue"})
    base["train"] = {**base["train"], "checkpoint_steps": []}
    config = resolve_config(base, overrides)
    if "train.tokens" not in given and "optim.decay_tokens" in given:
        config = resolve_config(base, [*overrides, f"train.tokens={step * tokens_per_step + config.optim.decay_tokens}"])
    return config
