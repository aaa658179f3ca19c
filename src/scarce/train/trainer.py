"""The training loop: E epochs over D unique tokens, evaluated, checkpointed and resumable exactly.

`train(config)` starts a run and returns its directory; `resume(run_dir)` continues one from its newest
intact checkpoint. Launched under torchrun, the same code runs data parallel (DDP; gloo on CPU, nccl on
CUDA): rank 0 owns the run directory, every rank reads its slice of each batch.
"""

import json
import math
import os
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

import scarce
from scarce import runs
from scarce.config import RunConfig
from scarce.data.loader import EpochLoader
from scarce.data.store import prepare_store
from scarce.errors import ScarceError
from scarce.evals.perplexity import evaluate
from scarce.model import Transformer, model_shape
from scarce.train.checkpoint import load_latest_checkpoint, save_checkpoint
from scarce.train.optim import build_optimizer, lr_at


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> Distributed:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ScarceError("train.device='cuda' but no CUDA device is available; use train.device=auto or cpu")
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except OSError:
        sha = ""
    return f"{scarce.__version__}+{sha}" if sha else scarce.__version__


def broadcast(value, ctx: Distributed):
    """Rank 0's value on every rank."""
    if ctx.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train(config: RunConfig, progress: bool = True) -> Path:
    """Start a new run from `config`; returns the run directory."""
    return _run(config, run_dir=None, progress=progress)


def resume(run_dir: Path, progress: bool = True) -> Path:
    """Continue the run in `run_dir` from its newest intact checkpoint, with its saved config."""
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ScarceError(f"cannot resume {run_dir}: its config.json is missing or unreadable ({e})") from None
    return _run(RunConfig.model_validate(saved), run_dir=run_dir, progress=progress)


def _run(config: RunConfig, run_dir: Path | None, progress: bool) -> Path:
    ctx = setup_distributed(pick_device(config.train.device, 0).type)
    device = pick_device(config.train.device, ctx.local_rank)
    console = Console(stderr=True, quiet=not ctx.is_main)
    torch.manual_seed(config.train.seed)

    # Data: rank 0 tokenizes (cached on disk), the others then open the same store.
    data = config.data
    if not ctx.is_main:
        dist.barrier()
    store = prepare_store(data.corpus, **data.store_options())
    if ctx.is_main and ctx.world_size > 1:
        dist.barrier()
    unique_tokens = data.unique_tokens or store.train_token_count
    tokens = store.budget(unique_tokens)
    cfg = config.train
    loader = EpochLoader(tokens, config.model.seq_len, cfg.batch_size, cfg.epochs, cfg.data_seed, ctx.rank, ctx.world_size)
    if cfg.batch_size < ctx.world_size * cfg.grad_accum:
        raise ScarceError(
            f"train.batch_size={cfg.batch_size} is smaller than processes × grad_accum = {ctx.world_size * cfg.grad_accum}"
        )

    shape = model_shape(vocab_size=store.vocab_size, **config.model.model_dump())
    model = Transformer(shape).to(device)
    optimizer = build_optimizer(model, config.optim)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if ctx.world_size > 1 else model

    # Run directory: new, or the one being resumed (after restoring its newest intact checkpoint).
    best_val_loss, wall_offset = math.inf, 0.0
    if run_dir is None:
        run_dir = broadcast(
            runs.create_run_dir(config.runs_dir, config.name, config.model_dump(mode="json")) if ctx.is_main else None,
            ctx,
        )
    else:
        found = load_latest_checkpoint(run_dir / "checkpoints", warn=lambda msg: console.print(f"[yellow]{msg}"))
        if found is None:
            raise ScarceError(f"cannot resume {run_dir}: it has no checkpoint")
        path, model_state, state = found
        model.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"][ctx.rank % len(state["rng"]["cuda"])], device)
        best_val_loss, wall_offset = state["best_val_loss"], state["wall_seconds"]
        if ctx.is_main:
            # metrics logged after the checkpoint will be logged again
            kept = [r for r in runs.read_metrics(run_dir) if r.get("step", 0) <= loader.step]
            runs.write_metrics(run_dir, kept)
        console.print(f"resuming {run_dir} from {path.name}")

    summary = {
        "run_id": run_dir.name,
        "name": config.name,
        "status": "running",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "finished_at": None,
        "code_version": code_version(),
        "device": f"{device.type} x{ctx.world_size}",
        "params": shape.total_params(),
        "non_embedding_params": shape.non_embedding_params(),
        "flops_per_token": shape.train_flops_per_token(),
        "unique_tokens": unique_tokens,
        "epochs": cfg.epochs,
        "steps_total": loader.steps,
    }

    def checkpoint_state(step: int, wall_seconds: float) -> dict:
        return {
            "optimizer": optimizer.state_dict(),
            "loader": loader.state_dict(),
            "schedule": {"step": step, "total_steps": loader.steps, "lr": lr_at(min(step, loader.steps - 1), loader.steps, config.optim)},
            "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None},
            "best_val_loss": best_val_loss,
            "wall_seconds": wall_seconds,
        }

    def finish(status: str, step: int, wall_seconds: float, last_eval: dict | None) -> None:
        summary.update(
            status=status,
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            steps=step,
            tokens_seen=loader.tokens_seen(step),
            epochs_completed=loader.epochs_completed(step),
            flops=shape.train_flops_per_token() * loader.tokens_seen(step),
            final_val_loss=last_eval["val_loss"] if last_eval else None,
            final_val_bpb=last_eval["val_bpb"] if last_eval else None,
            best_val_loss=best_val_loss if math.isfinite(best_val_loss) else None,
            wall_seconds=wall_seconds,
        )
        runs.write_summary(run_dir, summary)
        runs.RunIndex(config.runs_dir).record(run_dir)

    def diverged(what: str, step: int) -> None:
        """Stop at `step` (the first bad one): mark the run diverged and name the newest checkpoint before it."""
        if ctx.is_main:
            finish("diverged", step - 1, time.perf_counter() - started, last_eval)
        kept = load_latest_checkpoint(run_dir / "checkpoints", warn=lambda m: None)
        where = f"the last good checkpoint is {kept[0]}" if kept else "no checkpoint had been written yet"
        raise ScarceError(f"{what} at step {step} of {run_dir}; stopped, {where}. Lower optim.lr or check the data.")

    if ctx.is_main:
        finish("running", loader.step, wall_offset, None)
        console.print(
            f"run {run_dir}\n  {shape.total_params():,} params ({shape.non_embedding_params():,} non-embedding), "
            f"{unique_tokens:,} unique tokens × {cfg.epochs} epochs = {loader.steps} steps on {summary['device']}"
        )

    started = time.perf_counter() - wall_offset
    rows_per_micro = cfg.batch_size // (ctx.world_size * cfg.grad_accum)
    bar = Progress(
        TextColumn("step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (progress and ctx.is_main),
        transient=True,
    )
    task = bar.add_task("train", total=loader.steps, completed=loader.step, info="")
    last_eval, window_tokens, window_start, window_loader_seconds = None, 0, time.perf_counter(), 0.0
    model.train()
    batches = iter(loader)
    try:
        with bar:
            while True:
                fetch_start = time.perf_counter()
                batch, global_rows = next(batches, (None, 0))
                if batch is None:
                    break
                window_loader_seconds += time.perf_counter() - fetch_start
                step = loader.step  # steps done once this one finishes
                lr = lr_at(step - 1, loader.steps, config.optim)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = batch.to(device, non_blocking=True)
                # each rank's loss is scaled so the DDP gradient average is the mean over the global batch's tokens
                scale = ctx.world_size / (global_rows * config.model.seq_len)
                micro_batches = batch.split(rows_per_micro) if len(batch) else [batch]
                loss_sum = torch.zeros((), device=device)
                for i, micro in enumerate(micro_batches):
                    sync = i == len(micro_batches) - 1 or ctx.world_size == 1
                    with wrapped.no_sync() if not sync else nullcontext():
                        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                            if len(micro):
                                logits = wrapped(micro[:, :-1])
                                loss = F.cross_entropy(logits.flatten(0, 1), micro[:, 1:].flatten(), reduction="sum")
                            else:  # a short last batch left this rank nothing; it still joins the gradient all-reduce
                                loss = sum(p.sum() for p in model.parameters()) * 0.0
                        (loss * scale).backward()
                    loss_sum += loss.detach()
                if ctx.world_size > 1:
                    dist.all_reduce(loss_sum)
                train_loss = loss_sum.item() / (global_rows * config.model.seq_len)
                if not math.isfinite(train_loss):
                    diverged(f"training loss became {train_loss}", step)
                if config.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

                window_tokens += global_rows * config.model.seq_len
                last_step = step == loader.steps
                record = None
                if step % cfg.log_every == 0 or last_step:
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "step": step,
                        "train_loss": train_loss,
                        "lr": lr,
                        "tokens_seen": loader.tokens_seen(step),
                        "unique_tokens": unique_tokens,
                        "epochs_completed": loader.epochs_completed(step),
                        "tokens_per_second": window_tokens / elapsed,
                        "loader_fraction": window_loader_seconds / elapsed,  # share of step time spent fetching batches
                    }
                    window_tokens, window_start, window_loader_seconds = 0, time.perf_counter(), 0.0
                pause_start = time.perf_counter()  # evaluation and checkpoints stay out of tokens/s
                if (cfg.eval_every and step % cfg.eval_every == 0) or last_step:
                    last_eval = evaluate(
                        model, store.val_tokens, store.val_bytes, config.model.seq_len, cfg.batch_size, device,
                        data.eval_tokens, ctx.rank, ctx.world_size,
                    )
                    best_val_loss = min(best_val_loss, last_eval["val_loss"])
                    record = {**(record or {"step": step}), **last_eval}
                if record and ctx.is_main:
                    record["wall_seconds"] = time.perf_counter() - started
                    runs.append_metrics(run_dir, record)
                    info = f"loss {train_loss:.3f}"
                    if "tokens_per_second" in record:
                        info += f"  {record['tokens_per_second']:,.0f} tok/s"
                    if last_eval:
                        info += f"  val {last_eval['val_loss']:.3f}"
                    bar.update(task, info=info)
                bar.update(task, completed=step)
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last_step:
                    # an update can overflow the weights before the loss shows it; such a checkpoint is not good
                    if not all(torch.isfinite(p).all() for p in model.parameters()):
                        diverged("the weights became non-finite", step)
                    if ctx.is_main:
                        save_checkpoint(
                            run_dir / "checkpoints", step, model.state_dict(),
                            checkpoint_state(step, time.perf_counter() - started), cfg.keep_checkpoints,
                        )
                window_start += time.perf_counter() - pause_start
    except BaseException:  # an error or Ctrl-C: the index should not show the run as still running
        if ctx.is_main and summary["status"] == "running":
            finish("failed", loader.step, time.perf_counter() - started, last_eval)
        raise

    if ctx.is_main:
        finish("completed", loader.step, time.perf_counter() - started, last_eval)
        console.print(
            f"done: val loss {last_eval['val_loss']:.4f} nats/token ({last_eval['val_bpb']:.3f} bits/byte), "
            f"best {best_val_loss:.4f}, in {summary['wall_seconds']:.1f}s → {run_dir}"
        )
    if ctx.world_size > 1:
        dist.barrier()
    return run_dir
