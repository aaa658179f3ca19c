"""A procedural warm-up as a stage before a run (docs/procedural.md).

A config whose [procedural] section names a task in mode "warmup" describes two runs. The warm-up
(`warmup_config`) trains the same model shape, with the task's own vocabulary, on the task's stream
(data.source = "procedural") for procedural.tokens (or procedural.steps) with procedural.optim. The run
itself then starts from the warm-up's procedural.transfer groups (attention, MLP, norms; the embeddings
and head are fresh because the vocabularies differ, the input embeddings optionally set to the mean of
the warm-up's rows) and trains every weight on its own data: the initialization seam (scarce.train.init).

`scarce.train.trainer.train(config)` runs the warm-up first (`run_stages_before`), so `scarce train`,
sweeps, studies and every executor get both stages from one config. A finished warm-up is reused: it is
found by its run key (scarce.runs.run_key), which leaves out what only the run itself uses (transfer,
embedding init, the natural data), so runs that differ only there share one warm-up; an interrupted one
is resumed from its checkpoint. A file lock in the runs directory makes concurrent runs wait for one
warm-up rather than each train their own. The run's saved config is the one asked for (its key is the
one a study looks for); its summary's `init` names the warm-up run it started from.
"""

import fcntl
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from scarce import runs
from scarce.checkpoint import checkpoint_dirs
from scarce.config import InitConfig, RunConfig
from scarce.errors import ScarceError
from scarce.runs import run_key, run_status, runs_by_key
from scarce.train.distributed import broadcast, pick_device, setup_distributed

# Keys that shape a warm-up (besides the procedural section): the model, seeds and how it runs.
WARMUP_TRAIN_KEYS = {"seed", "data_seed", "grad_accum", "device", "compile", "log_every", "checkpoint_every", "keep_checkpoints"}


def has_warmup(config: RunConfig) -> bool:
    p = config.procedural
    return p.task is not None and p.mode == "warmup" and config.data.source != "procedural"


def warmup_config(config: RunConfig) -> RunConfig:
    """The warm-up run of a config with a warm-up stage: independent of the natural data and of what is transferred."""
    p = config.procedural
    batch = p.batch_size or config.train.batch_size
    tokens = p.tokens if p.tokens is not None else p.steps * batch * config.model.seq_len
    return RunConfig.model_validate({
        "name": f"{config.name}-warmup", "runs_dir": str(config.runs_dir),
        "data": {"source": "procedural", "eval_tokens": config.data.eval_tokens},
        "model": config.model.model_dump(),
        "optim": p.optim.model_dump(),
        "train": {**config.train.model_dump(include=WARMUP_TRAIN_KEYS), "batch_size": batch, "tokens": tokens},
        "procedural": {"task": p.task, "params": p.params},
    })


def _warmup_runs(warmup: RunConfig) -> list[Path]:
    return runs_by_key(warmup.runs_dir).get(run_key(warmup), [])


def find_warmup(config: RunConfig) -> Path | None:
    """The finished warm-up run of `config` (the oldest, if several), or None."""
    return next((d for d in _warmup_runs(warmup_config(config)) if run_status(d) == "completed"), None)


def run_stages_before(config: RunConfig, train: Callable, resume: Callable, progress: bool = True) -> Path | None:
    """Train `config`'s warm-up stage, or reuse or resume it; returns its run directory (None: no stage).
    The trainer passes in its own `train(config, progress)` and `resume(run_dir, progress)`."""
    if not has_warmup(config):
        return None

    warmup = warmup_config(config)
    ctx = setup_distributed(pick_device(config.train.device, 0).type)
    if ctx.world_size > 1:  # every rank trains the warm-up together: rank 0 decides which, for all
        action, where = broadcast(_next_step(warmup) if ctx.is_main else None, ctx)
    else:
        runs_dir = Path(config.runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        with open(runs_dir / f".warmup-{run_key(warmup)}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent runs wait for one warm-up; released however this process ends
            action, where = _next_step(warmup)
            if action in ("resume", "train"):
                return resume(where, progress=progress) if action == "resume" else train(warmup, progress=progress)
    if action == "diverged":
        raise ScarceError(f"the procedural warm-up {where} diverged: lower procedural.optim.lr "
                          "(or remove that run to try the same settings again)")
    if action == "reuse":
        Console(stderr=True, quiet=not ctx.is_main).print(f"procedural warm-up: reusing {where}")
        return where
    return resume(where, progress=progress) if action == "resume" else train(warmup, progress=progress)


def _next_step(warmup: RunConfig) -> tuple[str, Path | None]:
    """("reuse", a finished warm-up), ("diverged", one that diverged), ("resume", the most advanced
    interrupted one) or ("train", None)."""
    dirs = _warmup_runs(warmup)
    statuses = {d: run_status(d) for d in dirs}
    done = [d for d in dirs if statuses[d] == "completed"]
    if done:
        return "reuse", done[0]
    diverged = [d for d in dirs if statuses[d] == "diverged"]
    if diverged:
        return "diverged", diverged[0]
    resumable = sorted((d for d in dirs if checkpoint_dirs(d / runs.CHECKPOINTS_DIR)),
                       key=lambda d: checkpoint_dirs(d / runs.CHECKPOINTS_DIR)[0].name)
    return ("resume", resumable[-1]) if resumable else ("train", None)


def stage_init(config: RunConfig) -> InitConfig:
    """Where `config`'s weights start: its init section, or for a run with a warm-up stage, the warm-up's
    procedural.transfer groups (the stage must have finished: `train` runs it first)."""
    if not has_warmup(config):
        return config.init
    found = find_warmup(config)
    if found is None:
        raise ScarceError("this run starts from its procedural warm-up, which has not finished: start it with "
                          "scarce.train.trainer.train (or `scarce train`), which runs the warm-up first")
    p = config.procedural
    return InitConfig(from_run=found, groups=list(p.transfer), embedding_init=p.embedding_init)

