"""K ensemble members trained in one process: parameters stacked along a member axis, one vmapped step.

An alternative to one process (or one run after another) per member when members are small: the K
models' parameters are stacked (torch.func.stack_module_state), every forward and backward pass runs
all members at once under torch.func.vmap, and one AdamW steps the stacked tensors (AdamW is elementwise,
so that is K independent optimizers). Gradient clipping is per member. Each member reads its own batches
(its data_seed) and starts from its own init (its seed), so it trains to the weights its separate run
reaches, to float tolerance over a short run (tests/test_ensemble.py checks this). Not bit for bit, and
not for long: on CPU the batched step runs attention through torch's math kernel (vmap has no rule for
the flash kernel a separate run uses), so the two sum in another order and the weights drift apart as
training goes on, as any two runs on different kernels do.

Scope: members that differ only by seeds and name, plain next-token prediction over train.epochs of
data.unique_tokens of one corpus (the "epochs" source: no train.tokens, data.domains or procedural data,
which the loop's batch sources and stages would supply), from-scratch init, no dropout (vmap would share
or re-draw its masks), one process; anything else is refused naming the key. A member whose training loss
becomes non-finite is written "diverged" at its last good step, as the trainer writes it, and the others
train on (each member's loss and update touch only its own slice). Each member is written as an ordinary run
directory (config, final checkpoint of the weights, metrics, summary), so `scarce ensemble eval`, `scarce
runs` and `scarce sample` read it like any run; the checkpoint holds no optimizer state, so a batched run
cannot be resumed mid-way (it is written complete or not at all).
"""

import contextlib
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from scarce import runs
from scarce.checkpoint import save_checkpoint
from scarce.config import RunConfig
from scarce.data.loader import EpochLoader
from scarce.data.store import prepare_store
from scarce.errors import ScarceError
from scarce.evals.perplexity import evaluate
from scarce.model import Transformer, model_shape
from scarce.train.distributed import pick_device
from scarce.train.optim import build_optimizer, lr_at
from scarce.train.trainer import code_version, now, tokens_per_step

SEED_KEYS = ("seed", "data_seed")


def check_batchable(configs: list[RunConfig]) -> None:
    """Members must be one config but for seeds and name: else a ScarceError naming what differs."""
    if not configs:
        raise ScarceError("no members to train")

    def shared(config: RunConfig) -> dict:
        data = config.model_dump(mode="json")
        data.pop("name")
        for key in SEED_KEYS:
            data["train"].pop(key)
        return data

    first = configs[0]
    for config in configs[1:]:
        if shared(config) != shared(first):
            raise ScarceError(f"batched members must differ only by {', '.join(SEED_KEYS)} and name; "
                              f"{config.name} differs from {first.name}")
    if first.model.dropout > 0:
        raise ScarceError("batched members need model.dropout=0 (vmap cannot draw each member's own dropout masks as its run would)")
    if first.objective.kind != "ntp" or first.distill.kind != "none" or first.init.from_run is not None:
        raise ScarceError("batched members train from scratch with plain next-token loss (objective.kind='ntp', no [distill], no [init])")
    # the batched loop reads train.epochs of one corpus's budget itself; these keys would be silently ignored
    unsupported = {"train.tokens": first.train.tokens is not None, "data.source": first.data.source != "epochs",
                   "data.domains": first.data.domains is not None, "procedural.task": first.procedural.task is not None}
    named = [key for key, is_set in unsupported.items() if is_set]
    if named:
        raise ScarceError(f"batched members train train.epochs over data.unique_tokens of one corpus; {', '.join(named)} "
                          "is set: drop it or use --executor local")


def _stacked_optimizer(model: Transformer, params: dict, config: RunConfig) -> torch.optim.AdamW:
    """AdamW over the stacked parameters with the single-run optimizer's groups (which weights decay)."""
    single = build_optimizer(model, config.optim)
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [params[names[id(p)]] for p in g["params"]]}
              for g in single.param_groups]
    return torch.optim.AdamW(groups, fused=True)


def _clip_per_member(params: dict, max_norm: float) -> None:
    """clip_grad_norm_ of each member on its own slice of the stacked gradients."""
    grads = [p.grad for p in params.values()]
    norms = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()  # (K,)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def train_batched(configs: list[RunConfig], progress: bool = True) -> list[Path]:
    """Train the members together; returns their run directories in config order."""
    check_batchable(configs)
    first, console = configs[0], Console(stderr=True)
    device = pick_device(first.train.device, 0)
    store = prepare_store(first.data.corpus, **first.data.store_options())
    tokens = store.budget(first.data.unique_tokens or store.train_token_count)
    cfg = first.train
    loaders = [EpochLoader(tokens, first.model.seq_len, cfg.batch_size, cfg.epochs, c.train.data_seed) for c in configs]
    shape = model_shape(vocab_size=store.vocab_size, **first.model.model_dump())
    models = []
    for config in configs:  # each member's init from its own seed, as its run would draw it
        torch.manual_seed(config.train.seed)
        models.append(Transformer(shape).to(device))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    optimizer = _stacked_optimizer(models[0], params, first)

    def member_loss(member_params, member_buffers, inputs, targets):
        logits = functional_call(base, (member_params, member_buffers), (inputs,))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")

    step_losses = vmap(member_loss)
    diverged_at: dict[int, int] = {}  # member -> its first step with a non-finite training loss
    steps, started = loaders[0].steps, time.perf_counter()
    bar = Progress(TextColumn(f"{len(configs)} members, step {{task.completed}}/{steps}"), BarColumn(),
                   TimeRemainingColumn(), console=console, disable=not progress, transient=True)
    with bar:
        task = bar.add_task("train", total=steps)
        for step in range(steps):
            batches = [loader.batch(step) for loader in loaders]
            inputs = torch.stack([b.inputs for b in batches]).to(device)
            targets = torch.stack([b.targets for b in batches]).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, first.optim, tokens_per_step(first))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"), _batchable_attention(device):
                losses = step_losses(params, buffers, inputs, targets)
            (losses.sum() / batches[0].global_targets).backward()
            for i in torch.nonzero(~torch.isfinite(losses.detach())).flatten().tolist():
                diverged_at.setdefault(i, step)
            if first.optim.grad_clip > 0:
                _clip_per_member(params, first.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            bar.update(task, completed=step + 1)
    wall = time.perf_counter() - started
    return [_write_member(i, config, models[i], params, loaders[i], shape, store, device, wall, diverged_at.get(i))
            for i, config in enumerate(configs)]


def _batchable_attention(device: torch.device):
    """torch has no vmap rule for the CPU flash-attention kernel and would loop over the members (with a
    warning every step); its math backend is plain matmuls and a softmax, which vmap batches."""
    if device.type == "cpu":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _write_member(i, config, model, params, loader, shape, store, device, wall_seconds, diverged_step=None) -> Path:
    """Member i's weights into its model, evaluated and written as a completed run directory; or, when its
    training loss became non-finite at (0-based) `diverged_step`, a diverged one at its last good step, as
    the trainer writes it (scarce.train.trainer._diverged), with no weights: a batched run keeps no earlier
    checkpoint, and its last weights are not finite."""
    run_dir = runs.create_run_dir(config.runs_dir, config.name, config.model_dump(mode="json"))
    steps, result = loader.steps, {"val_loss": None, "val_bpb": None}
    if diverged_step is None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name][i])
        result = evaluate(model, store.eval_sample(config.data.eval_tokens), config.model.seq_len, config.train.batch_size, device)
        save_checkpoint(run_dir / runs.CHECKPOINTS_DIR, steps, model.state_dict(),
                        {"batched": True, "schedule": {"step": steps, "total_steps": steps}}, config.train.keep_checkpoints)
        runs.append_metrics(run_dir, {"step": steps, **result, "epochs_completed": loader.epochs_completed(steps)})
    else:
        steps = diverged_step  # steps 0 .. diverged_step - 1 were finite
    summary = {
        "run_id": run_dir.name, "name": config.name, "status": "completed" if diverged_step is None else "diverged",
        "created_at": now(), "finished_at": now(), "code_version": code_version(), "device": f"{device.type} x1 (batched)",
        "params": shape.total_params(), "non_embedding_params": shape.non_embedding_params(),
        "flops_per_token": shape.train_flops_per_token(), "unique_tokens": loader.unique_tokens,
        "unique_tokens_budget": len(loader.tokens), "epochs": config.train.epochs, "steps_total": loader.steps, "init": None,
        "steps": steps, "tokens_seen": loader.tokens_seen(steps), "epochs_completed": loader.epochs_completed(steps),
        "flops": shape.train_flops_per_token() * loader.tokens_seen(steps),
        "final_val_loss": result["val_loss"], "final_val_bpb": result["val_bpb"], "best_val_loss": result["val_loss"],
        "wall_seconds": wall_seconds,  # the whole batch's, shared by its members
    }
    runs.write_summary(run_dir, summary)
    runs.RunIndex(run_dir.parent).record(run_dir)
    return run_dir
