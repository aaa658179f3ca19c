"""The training loop: a batch source, an objective and an initialization, evaluated, checkpointed, resumable.

`train(config)` starts a run and returns its directory; `resume(run_dir)` continues one from its newest
intact checkpoint. The loop knows three seams and nothing behind them: where a step's tokens come from
(a batch source, scarce.data.sources), how a batch becomes a loss (an objective, scarce.train.objectives)
and where the weights start (scarce.train.init). Launched under torchrun, the same code runs data
parallel (DDP; gloo on CPU, nccl on CUDA): rank 0 owns the run directory, every rank reads its slice of
each batch.

Reading order: `train_step` (one optimizer step), `_run` (the loop), `_set_up` (building a run),
`_after_step` (logging, evaluation and checkpoint cadence), `_finish` (the summary).
"""

import json
import math
import subprocess
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

import scarce
from scarce import runs
from scarce.checkpoint import load_latest_checkpoint, save_checkpoint
from scarce.config import RunConfig
from scarce.data.batch import Batch, BatchSource
from scarce.data.domains import DomainMixture, DomainStore, domain_summary
from scarce.data.loader import EpochLoader
from scarce.data.sources import build_source, prepare_run_data
from scarce.data.store import EvalSample, TokenStore
from scarce.errors import ScarceError
from scarce.evals.score import score
from scarce.model import ModelShape, Transformer, model_shape
from scarce.paths import writable_dir
from scarce.train.distributed import Distributed, broadcast, pick_device, setup_distributed
from scarce.train.init import continuation, initialize
from scarce.train.objectives import build_objective
from scarce.train.optim import build_optimizer, lr_at
from scarce.train.warmup import run_stages_before, stage_init

# train.compile = "auto": compile where benchmarks/bench_train.py measured it faster (results/train.json).
COMPILE_BY_DEVICE = {"cpu": False, "cuda": True}


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except OSError:
        sha = ""
    return f"{scarce.__version__}+{sha}" if sha else scarce.__version__


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Run:
    """Everything one training run holds while it trains."""

    config: RunConfig
    ctx: Distributed
    device: torch.device
    store: TokenStore | DomainStore
    eval_sample: EvalSample | dict[str, EvalSample]  # the same validation documents at every evaluation (per domain)
    source: BatchSource
    shape: ModelShape
    model: Transformer  # the weights; evaluation and checkpoints use it
    wrapped: torch.nn.Module  # what a training step calls: the model, compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    objective: object
    run_dir: Path
    summary: dict
    console: Console
    best_val_loss: float = math.inf
    objective_loss: float = math.nan  # the last step's objective (e.g. MIR's combined loss), a global mean
    last_eval: dict | None = None
    started: float = 0.0  # perf_counter at step 0, shifted back by the wall time of earlier sessions
    throughput: dict = field(default_factory=lambda: {"tokens": 0, "since": time.perf_counter(), "fetch_seconds": 0.0})
    lock: object = None  # the run's lock file while this process writes it (rank 0)
    heartbeat: object = None

    def wall_seconds(self) -> float:
        return time.perf_counter() - self.started


def train_step(run: Run, batch: Batch, lr: float) -> float:
    """One optimizer step on this rank's share of a global batch; returns the global mean next-token loss."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batch = batch.to(run.device)
    ctx, cfg = run.ctx, run.config.train
    # Each rank's sum is scaled so DDP's gradient average is the mean over the global batch's counted tokens.
    scale = ctx.world_size / batch.global_targets
    passes = []
    for micro in batch.split(cfg.batch_size // (ctx.world_size * cfg.grad_accum)):
        weight = 1.0
        if len(micro.inputs) == 0:  # a short last batch left this rank nothing: a zero-weight pass keeps the
            micro, weight = _stand_in(micro), 0.0  # ranks' collectives in step (DDP hangs otherwise)
        passes += [(weight, loss_fn) for loss_fn in run.objective.passes(micro)]
    sums = torch.zeros(2, device=run.device)  # (objective, next-token) summed losses
    for i, (weight, loss_fn) in enumerate(passes):
        sync = i == len(passes) - 1 or ctx.world_size == 1  # DDP all-reduces gradients on the last pass only
        with nullcontext() if sync else run.wrapped.no_sync():
            with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.device.type == "cuda"):
                loss, ntp = loss_fn(run.wrapped)
            (loss * (scale * weight)).backward()
        sums[0] += loss.detach() * weight
        if ntp is not None:
            sums[1] += ntp.detach() * weight
    if ctx.world_size > 1:
        dist.all_reduce(sums)
    train_loss = sums[1].item() / batch.global_targets
    run.objective_loss = sums[0].item() / batch.global_targets
    if not math.isfinite(train_loss):
        _diverged(run, f"training loss became {train_loss}", run.source.step)
    if run.config.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.optim.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return train_loss


def _stand_in(empty: Batch) -> Batch:
    row = torch.zeros((1, empty.inputs.shape[1]), dtype=empty.inputs.dtype, device=empty.inputs.device)
    return Batch(row, row, None, empty.global_targets)


def train(config: RunConfig, progress: bool = True) -> Path:
    """Start a new run from `config`; returns the run directory. A stage the config asks for first (a
    procedural warm-up, scarce.train.warmup) is trained, or reused when it already has been."""
    writable_dir(config.runs_dir, "runs_dir")  # before any work, not a traceback after it
    run_stages_before(config, train, resume, progress)
    with _ordered_kernels(config):
        return _run(config, run_dir=None, progress=progress)


def resume(run_dir: Path, progress: bool = True) -> Path:
    """Continue the run in `run_dir` from its newest intact checkpoint, with its saved config."""
    run_dir = Path(run_dir)
    try:
        json.loads((run_dir / runs.CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScarceError(f"cannot resume {run_dir}: its config.json is missing or unreadable ({e})") from None
    summary = runs.read_summary(run_dir) if (run_dir / runs.SUMMARY_FILE).exists() else {}
    if summary.get("status") == "completed":
        raise ScarceError(
            f"{run_dir} is already complete (final val loss {summary.get('final_val_loss')}); nothing to resume"
        )
    config = runs.load_run_config(run_dir)
    with _ordered_kernels(config):
        return _run(config, run_dir=run_dir, progress=progress)


def restart(run_dir: Path, progress: bool = True) -> Path:
    """Start the run in `run_dir` over from step 0 with its saved config, as a new run; the old directory is
    set aside (`<runs_dir>/.set-aside/`), not deleted. For a run that crashed with no intact checkpoint."""
    run_dir = Path(run_dir)
    config = runs.load_run_config(run_dir)
    if runs.run_status(run_dir) in runs.FINAL_STATUSES:
        raise ScarceError(f"{run_dir} has finished ({runs.run_status(run_dir)}); a finished run is not started over")
    runs.lock_run(run_dir).close()  # a run some process is still writing is not set aside under it
    moved = runs.set_aside(run_dir, "started over with scarce train --restart")
    runs.RunIndex(run_dir.parent).reindex()  # its row goes with it
    Console(stderr=True).print(f"set {run_dir.name} aside in {moved.parent}; starting it over", highlight=False)
    return train(config, progress=progress)


@contextmanager
def _ordered_kernels(config: RunConfig):
    """Compiled CPU training runs in torch's deterministic mode; the caller's mode is restored afterwards.

    Inductor's CPU kernel for a scatter-add (the embedding's backward) accumulates with atomic adds in an
    order that varies from run to run, so two identical compiled runs drift apart by ulps from the first
    step. In deterministic mode inductor lowers it to torch's ordered kernel instead, and a compiled CPU
    run reproduces, and resumes, bit-exactly (tested). Eager CPU kernels are ordered already; on CUDA
    the mode would cost speed and compiled runs stay reproducible only to float tolerance.
    """
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    device = pick_device(config.train.device, 0)
    if device.type == "cpu" and _compiles(config.train, device):
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _compiles(cfg, device: torch.device) -> bool:
    return cfg.compile is True or (cfg.compile == "auto" and COMPILE_BY_DEVICE[device.type])


def _run(config: RunConfig, run_dir: Path | None, progress: bool) -> Path:
    run = _set_up(config, run_dir)
    try:
        return _train_loop(run, progress)
    finally:
        _release(run)


def _train_loop(run: Run, progress: bool) -> Path:
    config = run.config
    bar = Progress(
        TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(), console=run.console, disable=not (progress and run.ctx.is_main), transient=True,
    )
    task = bar.add_task("train", total=run.source.steps, completed=run.source.step, info="")
    run.model.train()
    batches = iter(run.source)
    try:
        with bar:
            while True:
                fetch_start = time.perf_counter()
                batch = next(batches, None)
                if batch is None:
                    break
                run.throughput["fetch_seconds"] += time.perf_counter() - fetch_start
                step = run.source.step  # steps done once this one finishes
                lr = lr_at(step - 1, run.source.steps, config.optim, tokens_per_step(config))
                train_loss = train_step(run, batch, lr)
                run.throughput["tokens"] += batch.global_targets
                info = _after_step(run, step, train_loss, lr)
                bar.update(task, completed=step, **({"info": info} if info else {}))
    except BaseException:  # an error or Ctrl-C: the index should not show the run as still running
        if run.ctx.is_main and run.summary["status"] == "running":
            _finish(run, "failed")
        raise
    if run.last_eval is None:  # resumed from the final checkpoint of a run killed before it finished
        _evaluate(run)
    if run.ctx.is_main:
        _finish(run, "completed")
        run.console.print(
            f"done: val loss {run.last_eval['val_loss']:.4f} nats/token ({run.last_eval['val_bpb']:.3f} bits/byte), "
            f"best {run.best_val_loss:.4f}, in {run.summary['wall_seconds']:.1f}s → {run.run_dir}"
        )
    if run.ctx.world_size > 1:
        dist.barrier()
    return run.run_dir


def _set_up(config: RunConfig, run_dir: Path | None) -> Run:
    """Build a run's pieces; for a new run create its directory, for a resumed one restore its checkpoint."""
    ctx = setup_distributed(pick_device(config.train.device, 0).type)
    device = pick_device(config.train.device, ctx.local_rank)
    console = Console(stderr=True, quiet=not ctx.is_main)
    torch.manual_seed(config.train.seed)
    cfg = config.train
    if cfg.batch_size < ctx.world_size * cfg.grad_accum:
        raise ScarceError(
            f"train.batch_size={cfg.batch_size} is smaller than processes × grad_accum = {ctx.world_size * cfg.grad_accum}"
        )

    # Data: rank 0 tokenizes (cached on disk), the others then open the same store.
    if not ctx.is_main:
        dist.barrier()
    store = prepare_run_data(config)
    if ctx.is_main and ctx.world_size > 1:
        dist.barrier()
    source = build_source(config, store, ctx.rank, ctx.world_size)
    # a decay branch: checked against its source before anything is written, loaded once the run is built
    continued = continuation(config, source.steps) if run_dir is None and config.init.mode == "continue" else None

    shape = model_shape(
        vocab_size=store.vocab_size, extra_input_tokens=config.objective.extra_input_tokens, **config.model.model_dump()
    )
    objective = build_objective(config, shape, ctx.rank, device)
    model = Transformer(shape)
    init_record = initialize(model, stage_init(config)) if run_dir is None else None
    model.to(device)
    optimizer = build_optimizer(model, config.optim)
    wrapped = model
    if _compiles(cfg, device):
        wrapped = torch.compile(model)
    if ctx.world_size > 1:  # the only buffers are RoPE tables, equal everywhere: no per-forward broadcast
        wrapped = torch.nn.parallel.DistributedDataParallel(wrapped, broadcast_buffers=False)

    summary = {
        "run_id": None, "name": config.name, "status": "running", "created_at": now(), "finished_at": None,
        "code_version": code_version(), "device": f"{device.type} x{ctx.world_size}",
        "params": shape.total_params(), "non_embedding_params": shape.non_embedding_params(),
        "flops_per_token": shape.train_flops_per_token(),
        "unique_tokens": source.unique_tokens,  # the tokens trained on: a budget's tail shorter than a sequence is not
        "unique_tokens_budget": _budget_tokens(config, store, source), "steps_total": source.steps,
        "epochs": cfg.epochs if isinstance(source, EpochLoader) and cfg.tokens is None else source.epochs_completed(source.steps),
        "init": init_record, "owner": runs.owner(),  # with the heartbeat file, tells a crashed run from a running one
    }
    eval_sample = store.eval_sample(config.data.eval_tokens)
    run = Run(config, ctx, device, store, eval_sample, source, shape, model, wrapped, optimizer, objective, run_dir, summary, console)
    if run_dir is None:
        run.run_dir = broadcast(
            runs.create_run_dir(config.runs_dir, config.name, config.model_dump(mode="json")) if ctx.is_main else None,
            ctx,
        )
    if ctx.is_main:  # one writer per run: a second resume stops here, before anything is written
        run.lock = runs.lock_run(run.run_dir)
    try:
        if run_dir is not None:
            _restore(run)
        if continued is not None:
            weights, state, step = continued
            _load_state(run, weights, state)
            run.source.step = step  # the source's data position (a source is addressable by step)
            run.summary["init"] = {"from_run": config.init.from_run.name, "from_path": str(config.init.from_run.resolve()),
                                   "checkpoint_step": step, "mode": "continue"}
        run.summary["run_id"] = run.run_dir.name
        run.started = time.perf_counter() - run.summary.get("wall_seconds", 0.0)
        if ctx.is_main:
            run.heartbeat = _Heartbeat(run.run_dir)
            runs.write_summary(run.run_dir, run.summary)
            runs.RunIndex(run.run_dir.parent).record(run.run_dir)
            console.print(
                f"run {run.run_dir}\n  {shape.total_params():,} params ({shape.non_embedding_params():,} non-embedding), "
                f"{source.unique_tokens:,} unique tokens × {summary['epochs']:g} epochs = {source.steps} steps on {summary['device']}"
            )
    except BaseException as e:  # the run does not stay "running" for ever: it failed to start
        if ctx.is_main:
            _failed_to_start(run, e)
        _release(run)
        raise
    return run


class _Heartbeat:
    """Touches the run's heartbeat file every runs.HEARTBEAT_SECONDS from a daemon thread, so `scarce runs`
    can tell a run whose process died on another host (its pid says so on this one)."""

    def __init__(self, run_dir: Path):
        self._stop = threading.Event()
        runs.touch_heartbeat(run_dir)
        threading.Thread(target=self._beat, args=(run_dir,), daemon=True, name="scarce-heartbeat").start()

    def _beat(self, run_dir: Path) -> None:
        while not self._stop.wait(runs.HEARTBEAT_SECONDS):
            try:
                runs.touch_heartbeat(run_dir)
            except OSError:
                pass  # the run directory went away (set aside, moved): nothing left to beat for

    def stop(self) -> None:
        self._stop.set()


def _release(run: Run) -> None:
    if run.heartbeat is not None:
        run.heartbeat.stop()
        run.heartbeat = None
    if run.lock is not None:
        run.lock.close()  # closing releases the flock
        run.lock = None


def _failed_to_start(run: Run, error: BaseException) -> None:
    """Mark a run whose set-up failed (new or resumed) as failed, in its summary and, if it can, the index."""
    path = run.run_dir / runs.SUMMARY_FILE
    try:
        summary = runs.read_summary(run.run_dir) if path.exists() else {**run.summary, "run_id": run.run_dir.name}
    except ScarceError:
        return  # a damaged summary stays as it is, for the sweep to set aside
    summary.update(status="failed", finished_at=now(), error=f"{type(error).__name__}: {error}")
    try:
        runs.write_summary(run.run_dir, summary)
        runs.RunIndex(run.run_dir.parent).record(run.run_dir)
    except (ScarceError, OSError):
        pass  # the summary says it; the index is rebuilt from it


def tokens_per_step(config: RunConfig) -> int:
    return config.train.batch_size * config.model.seq_len


def _budget_tokens(config: RunConfig, store, source: BatchSource) -> int:
    """D as asked for (before whole sequences are cut from it): every domain's budget for a mixture."""
    if isinstance(source, DomainMixture):
        return sum(len(tokens) for tokens in source.tokens.values())
    return config.data.unique_tokens or store.train_token_count


def _load_state(run: Run, model_state: dict, state: dict) -> None:
    """A checkpoint's weights, optimizer, objective, RNG and best loss into `run` (not the data position)."""
    run.model.load_state_dict(model_state)
    run.optimizer.load_state_dict(state["optimizer"])
    run.objective.load_state_dict(state.get("objective", {}))
    torch.set_rng_state(state["rng"]["torch"])
    if run.device.type == "cuda" and state["rng"].get("cuda") is not None:
        cuda_states = state["rng"]["cuda"]
        torch.cuda.set_rng_state(cuda_states[run.ctx.rank % len(cuda_states)], run.device)
    run.best_val_loss = state["best_val_loss"]


def _restore(run: Run) -> None:
    """Load the newest intact checkpoint of a resumed run; keep its summary's history."""
    try:
        found = load_latest_checkpoint(run.run_dir / runs.CHECKPOINTS_DIR,
                                       warn=lambda msg: run.console.print(f"[yellow]{escape(msg)}"))
    except ScarceError as e:
        raise ScarceError(f"cannot resume {run.run_dir}: {e}\nstart it over with: scarce train --restart {run.run_dir}") from None
    if found is None:
        raise ScarceError(f"cannot resume {run.run_dir}: it has no checkpoint; start it over with: "
                          f"scarce train --restart {run.run_dir}")
    path, model_state, state = found
    _load_state(run, model_state, state)
    run.source.load_state_dict(state["loader"])
    previous = runs.read_summary(run.run_dir) if (run.run_dir / runs.SUMMARY_FILE).exists() else {}
    # the run started when it first started, with the code it started with; resumes are listed after it
    for key in ("created_at", "code_version", "init"):
        if key in previous:
            run.summary[key] = previous[key]
    resumed = {"at": now(), "step": run.source.step, "code_version": code_version()}
    run.summary.update(resumes=[*previous.get("resumes", []), resumed], wall_seconds=state["wall_seconds"])
    if run.ctx.is_main:  # metrics logged after the checkpoint will be logged again
        kept = [r for r in runs.read_metrics(run.run_dir) if r.get("step", 0) <= run.source.step]
        runs.write_metrics(run.run_dir, kept)
    run.console.print(f"resuming {run.run_dir} from {path.name}")


def _after_step(run: Run, step: int, train_loss: float, lr: float) -> str | None:
    """Log, evaluate and checkpoint on their cadences; returns the progress bar's new info, if any."""
    cfg, source = run.config.train, run.source
    last_step = step == source.steps
    record = None
    if step % cfg.log_every == 0 or last_step:
        elapsed = time.perf_counter() - run.throughput["since"]
        record = {
            "step": step, "train_loss": train_loss, **run.objective.logged(run.objective_loss, train_loss),
            "lr": lr, "tokens_seen": source.tokens_seen(step),
            "unique_tokens": source.unique_tokens, "epochs_completed": source.epochs_completed(step),
            "tokens_per_second": run.throughput["tokens"] / elapsed,
            "loader_fraction": run.throughput["fetch_seconds"] / elapsed,  # share of step time spent fetching batches
        }
        run.throughput.update(tokens=0, since=time.perf_counter(), fetch_seconds=0.0)
    pause_start = time.perf_counter()  # evaluation and checkpoints stay out of tokens/s
    if (cfg.eval_every and step % cfg.eval_every == 0) or last_step:
        record = {**(record or {"step": step}), **_evaluate(run)}
    info = None
    if record and run.ctx.is_main:
        record["wall_seconds"] = run.wall_seconds()
        runs.append_metrics(run.run_dir, record)
        info = f"loss {train_loss:.3f}"
        if "tokens_per_second" in record:
            info += f"  {record['tokens_per_second']:,.0f} tok/s"
        if run.last_eval:
            info += f"  val {run.last_eval['val_loss']:.3f}"
    if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last_step or step in cfg.checkpoint_steps:
        # an update can overflow the weights before the loss shows it; such a checkpoint is not good
        if not all(torch.isfinite(p).all() for p in run.model.parameters()):
            _diverged(run, "the weights became non-finite", step)
        if run.ctx.is_main:
            save_checkpoint(run.run_dir / runs.CHECKPOINTS_DIR, step, run.model.state_dict(), _checkpoint_state(run, step),
                            cfg.keep_checkpoints, pinned=cfg.checkpoint_steps)
    run.throughput["since"] += time.perf_counter() - pause_start
    return info


def _evaluate(run: Run) -> dict:
    weights = dict(zip(run.source.names, run.source.weights)) if isinstance(run.source, DomainMixture) else None
    run.last_eval = score(run.model, run.eval_sample, run.config.model.seq_len, run.config.train.batch_size,
                          run.device, run.ctx.rank, run.ctx.world_size, weights)
    run.best_val_loss = min(run.best_val_loss, run.last_eval["val_loss"])
    return run.last_eval


def _checkpoint_state(run: Run, step: int) -> dict:
    return {
        "optimizer": run.optimizer.state_dict(),
        "loader": run.source.state_dict(),
        "objective": run.objective.state_dict(),
        "schedule": {"step": step, "total_steps": run.source.steps,
                     "lr": lr_at(step, run.source.steps, run.config.optim, tokens_per_step(run.config))},
        "tokens_seen": run.source.tokens_seen(step),
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else None},
        "best_val_loss": run.best_val_loss,
        "wall_seconds": run.wall_seconds(),
    }


def _finish(run: Run, status: str, step: int | None = None) -> None:
    """Write the summary (and its index row) with the run's state after `step` (default: steps taken)."""
    step = run.source.step if step is None else step
    flops = run.objective.flops_multiplier * run.shape.train_flops_per_token() * run.source.tokens_seen(step)
    run.summary.update(
        status=status, finished_at=now(), steps=step, tokens_seen=run.source.tokens_seen(step),
        epochs_completed=run.source.epochs_completed(step), flops=flops,
        final_val_loss=run.last_eval["val_loss"] if run.last_eval else None,
        final_val_bpb=run.last_eval["val_bpb"] if run.last_eval else None,
        best_val_loss=run.best_val_loss if math.isfinite(run.best_val_loss) else None,
        wall_seconds=run.wall_seconds(),
    )
    if isinstance(run.source, DomainMixture):
        run.summary.update(domain_summary(run.source, step, run.last_eval, run.summary.get("init")))
    runs.write_summary(run.run_dir, run.summary)
    runs.RunIndex(run.run_dir.parent).record(run.run_dir)  # the index beside the run, wherever it was moved


def _diverged(run: Run, what: str, step: int) -> None:
    """Stop at `step` (the first bad one): mark the run diverged and name the newest checkpoint before it."""
    if run.ctx.is_main:
        _finish(run, "diverged", step - 1)
    kept = load_latest_checkpoint(run.run_dir / runs.CHECKPOINTS_DIR, warn=lambda m: None)
    where = f"the last good checkpoint is {kept[0]}" if kept else "no checkpoint had been written yet"
    raise ScarceError(f"{what} at step {step} of {run.run_dir}; stopped, {where}. Lower optim.lr or check the data.")
