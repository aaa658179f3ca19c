"""Diagnostics of a procedural warm-up (docs/procedural.md): the tiny model trained on a diagnostic task,
optionally starting from a warm-up run, scored on the task's 4000 held-out examples; and, for natural
data, the training tokens a run needed to reach a target validation loss (the paper's "percentage of
data": with a warm-up / without).

The diagnostic model and recipe are the paper's (Jiang et al. 2026, arXiv 2601.21725): 2 layers, 4 heads,
width 16, lr 1e-3 with a cosine schedule and a 5% warm-up (500 of its 10,000 steps), weight decay 0.001,
batch 1000. Every run is an ordinary run of the run store (data.source = "procedural"); its accuracy is
in its metrics (val_accuracy at every evaluation) and, once `record_diagnostic` has run, in its
summary (`accuracy`, `digit_accuracy`) and in diagnostic.json beside it.
"""

from pathlib import Path

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import TRANSFER_GROUPS, TRANSFER_OPTIONAL, TRANSFER_SELECTIONS, RunConfig, resolve_config
from scarce.errors import ScarceError
from scarce.procedural.diagnostics import DIAGNOSTICS, HELDOUT_EXAMPLES
from scarce.procedural.registry import TASKS, get_task

PAPER_STEPS, PAPER_BATCH = 10_000, 1000
TINY_MODEL = {"size": "micro", "n_layers": 2, "d_model": 16, "n_heads": 4, "ffn_hidden": 64}
# The reference's recipe where it is not the tiny model's (downstream/algorithmic_tasks/task_multiplication.py:
# 4 layers, 8 heads, width 512 with GPT-2's 4x MLP, batch 64, train_steps 250 x 40,000 examples / 64)
PRESETS = {"multiplication": {"model": {**TINY_MODEL, "n_layers": 4, "d_model": 512, "n_heads": 8, "ffn_hidden": 2048},
                              "steps": 156_250, "batch_size": 64}}
RECIPE = {"lr": 1e-3, "schedule": "cosine", "warmup_fraction": 0.05, "weight_decay": 0.001}
DIAGNOSTIC_FILE = "diagnostic.json"
# The paper's haystack accuracies at its protocol (Jiang et al. 2026, the needle-in-a-haystack figure), and
# two chance levels: a uniform guess over the 127 values; a uniform guess among the distinct values present
# in the context (E[1/distinct values] under the generator, by simulation of 200,000 examples).
PAPER_HAYSTACK = {"scratch": 0.113, "dyck": 0.969, "shuffled dyck": 0.103}
HAYSTACK_CHANCE = {"uniform over the values": 1 / 127, "a value present in the context": 0.137}


def diagnostic_config(task: str, params: dict | None = None, *, steps: int | None = None, batch_size: int | None = None,
                      seed: int = 0, warmup: Path | None = None, transfer: list[str] | None = None,
                      seq_len: int | None = None, runs_dir: Path = Path("runs"), name: str | None = None,
                      overrides: list[str] = ()) -> RunConfig:
    """The config of the tiny model trained on `task` for `steps` steps of `batch_size` examples' rows
    (default: the paper's 10,000 of 1000; multiplication: the reference's larger model, PRESETS).

    `warmup`: a run directory to start from (its `transfer` groups, default all of attention, MLP, norms;
    the embeddings are fresh). seq_len defaults to one example per row (the task's length − 1), capped at
    256 for tasks that can be cut into windows (Dyck, ECA). Any task works, so the same command makes a
    warm-up of the same shape (e.g. Dyck) to start a diagnostic from."""
    if task not in TASKS:
        raise ScarceError(f"unknown procedural task {task!r}; choose one of {', '.join(TASKS)}")
    chosen = get_task(task, params or {})
    preset = PRESETS.get(task, {})
    steps = preset.get("steps", PAPER_STEPS) if steps is None else steps
    batch_size = preset.get("batch_size", PAPER_BATCH) if batch_size is None else batch_size
    if steps < 1 or batch_size < 1:
        raise ScarceError(f"--steps ({steps}) and --batch-size ({batch_size}) must be at least 1")
    if transfer is not None and warmup is None:
        raise ScarceError("--transfer names the groups copied from a warm-up: give --warmup RUN_DIR with it")
    unknown = [g for g in transfer or [] if g not in TRANSFER_GROUPS + TRANSFER_OPTIONAL + TRANSFER_SELECTIONS]
    if unknown:
        raise ScarceError(f"--transfer: {unknown[0]!r} is not a weight group a warm-up hands on; choose from "
                          f"{', '.join(TRANSFER_GROUPS + TRANSFER_OPTIONAL + TRANSFER_SELECTIONS)}")
    if seq_len is None:
        seq_len = chosen.example_tokens - 1 if not chosen.splittable else min(chosen.example_tokens - 1, 256)
    base = {
        "name": name or f"diagnose-{task}", "runs_dir": str(runs_dir),
        "data": {"source": "procedural"},
        "model": {**preset.get("model", TINY_MODEL), "seq_len": seq_len},
        "optim": RECIPE,
        # compiled: the elementwise work of a width-16 model fuses (benchmarks/bench_diagnostic.py)
        "train": {"batch_size": batch_size, "tokens": steps * batch_size * seq_len, "seed": seed, "data_seed": seed,
                  "compile": True},
        "procedural": {"task": task, "params": chosen.params()},
    }
    if warmup is not None:
        runs.read_config(warmup)  # a clear error when it is not a run directory
        base["init"] = {"from_run": str(warmup), "groups": list(transfer or TRANSFER_GROUPS)}
    return resolve_config(base, list(overrides))


def record_diagnostic(run_dir: Path) -> dict:
    """The run's final held-out scores, written into its summary (accuracy, digit_accuracy) and diagnostic.json."""
    run_dir = Path(run_dir)
    config = RunConfig.model_validate(runs.read_config(run_dir))
    summary = runs.read_summary(run_dir)
    task = config.procedural.task
    if config.data.source != "procedural" or task not in DIAGNOSTICS:
        raise ScarceError(f"{run_dir} was not trained on a diagnostic task ({', '.join(DIAGNOSTICS)})")
    if summary.get("status") != "completed":
        raise ScarceError(f"{run_dir} has not completed (status {summary.get('status')!r}); nothing to score")
    final = [r for r in runs.read_metrics(run_dir) if "val_accuracy" in r][-1]
    init = summary.get("init") or {}
    result = {
        "task": task, "params": config.procedural.params, "accuracy": final["val_accuracy"],
        "digit_accuracy": final.get("val_digit_accuracy"), "examples": HELDOUT_EXAMPLES, "step": final["step"],
        "warmup": init.get("from_run"), "transfer": init.get("groups"),
    }
    write_json_atomic(run_dir / DIAGNOSTIC_FILE, result)
    summary.update(accuracy=result["accuracy"], digit_accuracy=result["digit_accuracy"])
    runs.write_summary(run_dir, summary)
    runs.RunIndex(run_dir.parent).record(run_dir)
    return result


def tokens_to_loss(run_dir: Path, target: float) -> int | None:
    """Training tokens the run had seen when its validation loss first reached `target` (None: never).

    Read from the evaluations in its metrics, linearly interpolated (in tokens) between the last
    evaluation above the target and the first at or below it; so its resolution is train.eval_every.
    The tokens are the run's own: a warm-up's are not included (its summary's init.tokens_seen has them),
    front-loaded procedural batches are (they are part of the run's stream)."""
    run_dir = Path(run_dir)
    config = runs.read_config(run_dir)
    per_step = config["train"]["batch_size"] * config["model"]["seq_len"]
    points = [(r.get("tokens_seen", r["step"] * per_step), r["val_loss"]) for r in runs.read_metrics(run_dir) if "val_loss" in r]
    if not points:
        raise ScarceError(f"{run_dir} has no evaluations in its metrics (train.eval_every sets how often it evaluates)")
    before = (0, float("inf"))
    for tokens, loss in points:
        if loss <= target:
            if before[1] == float("inf"):
                return int(tokens)
            return int(round(before[0] + (tokens - before[0]) * (before[1] - target) / (before[1] - loss)))
        before = (tokens, loss)
    return None


def _validation_data(config: RunConfig) -> dict:
    """What a validation loss is measured on: the corpus and its tokenization, or the procedural task."""
    identity = {f"data.{k}": v for k, v in config.data.model_dump(mode="json").items()
                if k in ("source", "corpus", "tokenizer", "vocab_size", "val_fraction", "split_seed", "eval_tokens")}
    if config.data.source == "procedural":
        identity["procedural"] = config.procedural.model_dump(mode="json")
    return identity


def data_fractions(run_dirs: list[Path], target: float | None = None) -> tuple[float, list[dict]]:
    """Tokens to reach `target` (default: the first run's final validation loss) for each run, and each as a
    fraction of the first run's: with the run without warm-up first, the paper's "percentage of data"."""
    if not run_dirs:
        raise ScarceError("name at least one run directory (the run without warm-up first)")
    data = {Path(run_dir): _validation_data(runs.load_run_config(run_dir)) for run_dir in run_dirs}
    first = Path(run_dirs[0])
    for run_dir, identity in data.items():
        if identity != data[first]:  # losses in different vocabularies (or on other text) do not compare
            differ = sorted(k for k in identity.keys() | data[first].keys() if identity.get(k) != data[first].get(k))
            raise ScarceError(f"{run_dir} was trained on other data than {first} (they differ in {', '.join(differ)}); "
                              "tokens to a loss compare only runs on the same data and vocabulary")
    if target is None:
        target = runs.read_summary(run_dirs[0]).get("final_val_loss")
        if target is None:
            raise ScarceError(f"{run_dirs[0]} has no final validation loss to use as the target; give --target")
    rows = []
    for run_dir in run_dirs:
        summary = runs.read_summary(run_dir)
        init = summary.get("init") or {}
        rows.append({"run": Path(run_dir).name, "warmup": init.get("from_run"), "warmup_tokens": init.get("tokens_seen"),
                     "tokens": tokens_to_loss(run_dir, target), "final_val_loss": summary.get("final_val_loss")})
    base = rows[0]["tokens"]
    for row in rows:
        row["fraction"] = row["tokens"] / base if base and row["tokens"] is not None else None
    return target, rows
