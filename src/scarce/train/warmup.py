"""A procedural warm-up as a stage before a run (docs/procedural.md).

A config whose [procedural] section names a task in mode "warmup" describes two runs. The warm-up
(`warmup_config`) trains the same model shape, with the task's own vocabulary, on the task's stream
(data.source = "procedural") for procedural.tokens (or procedural.steps) with procedural.optim. The run
itself then starts from the warm-up's procedural.transfer groups (attention, MLP, norms; the embeddings
and head are fresh because the vocabularies differ, the input embeddings optionally set to the mean of
the warm-up's rows) and trains every weight on its own data: the initialization seam (scarce.train.init).

`scarce.train.trainer.train(config)` runs the warm-up first (`run_stages_before`), so `scarce train`,
sweeps, studies and every executor get both stages from one config. A finished warm-up is reused: it is
found by its run key (scarce.executors.run_key), which leaves out what only the run itself uses (transfer,
embedding init, the natural data), so runs that differ only there share one warm-up; an interrupted one
is resumed from its checkpoint. A file lock in the runs directory makes concurrent runs wait for one
warm-up rather than each train their own. The run's saved config is the one asked for (its key is the
one a study looks for); its summary's `init` names the warm-up run it started from.
"""

import fcntl
from pathlib import Path

from rich.console import Console

from scarce import runs
from scarce.config import InitConfig, ProceduralConfig, RunConfig
from scarce.errors import ScarceError
from scarce.executors import run_key, run_status, runs_by_key
from scarce.train.checkpoint import checkpoint_dirs

# Keys that shape a warm-up (besides the procedural section): the model, seeds and how it runs.
WARMUP_TRAIN_KEYS = {"seed", "data_seed", "grad_accum", "device", "compile", "log_every", "checkpoint_every", "keep_checkpoints"}


def check_procedural(config: RunConfig) -> None:
    """The rules tying the [procedural] section to the rest of a config; a ValueError naming the keys."""
    p = config.procedural
    if config.data.source == "procedural":
        if p.task is None:
            raise ValueError("data.source='procedural' trains on procedural.task's stream: name a task (scarce procedural list)")
        if config.train.tokens is None:
            raise ValueError("data.source='procedural' has no epochs: set train.tokens (the run's length)")
        staged = [k for k in ("tokens", "steps", "fraction", "batch_size") if getattr(p, k) is not None]
        if staged or p.mode != "warmup":
            raise ValueError(f"procedural.{(staged or ['mode'])[0]} describes procedural data added to a natural run; "
                             "with data.source='procedural' the run is the stream itself (its length is train.tokens)")
        return
    if p.task is None:
        given = [k for k in ("tokens", "steps", "batch_size", "fraction") if getattr(p, k) is not None]
        if given:
            raise ValueError(f"procedural.{given[0]} is set but procedural.task is not: name a task or drop it")
        return
    defaults = ProceduralConfig()
    if p.mode == "warmup":
        if (p.tokens is None) == (p.steps is None):
            raise ValueError("procedural.mode='warmup' needs the stage's length: set one of procedural.tokens, procedural.steps")
        if p.fraction is not None:
            raise ValueError("procedural.fraction is mode='mix''s front-loaded share; a warm-up's length is procedural.tokens or .steps")
        if config.init.from_run is not None:
            raise ValueError("a run with a procedural warm-up starts from the warm-up: leave init.from_run unset "
                             "(procedural.transfer names the groups copied)")
        batch = p.batch_size or config.train.batch_size
        if batch % config.train.grad_accum:
            raise ValueError(f"procedural.batch_size={batch} must be divisible by train.grad_accum={config.train.grad_accum}")
        return
    if p.fraction is None:
        raise ValueError("procedural.mode='mix' needs procedural.fraction: the share of training tokens front-loaded, in [0, 1)")
    warmup_only = [k for k in ("tokens", "steps", "batch_size") if getattr(p, k) is not None]
    warmup_only += [k for k in ("transfer", "embedding_init", "optim") if getattr(p, k) != getattr(defaults, k)]
    if warmup_only:
        raise ValueError(f"procedural.{warmup_only[0]} belongs to a warm-up stage; in mode='mix' the procedural batches "
                         "are the run's own (its optimizer and batch size), procedural.fraction of its tokens")
    if config.data.domains is not None:
        raise ValueError("procedural.mode='mix' front-loads into a single corpus's stream; with data.domains use mode='warmup'")


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


def run_stages_before(config: RunConfig, progress: bool = True) -> Path | None:
    """Train `config`'s warm-up stage, or reuse or resume it; returns its run directory (None: no stage)."""
    if not has_warmup(config):
        return None
    from scarce.train.trainer import broadcast, pick_device, resume, setup_distributed, train  # the trainer calls this module

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

