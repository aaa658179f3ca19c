"""`scarce study`: from a corpus and a compute budget to a measured recommendation.

"I have U unique tokens of this corpus and C FLOPs: what should I train, and what is each trick worth on my
data?" The study answers with its own small runs, in four steps:

1. **Design** (`design_study`): a grid of small models × nested unique-token budgets × epochs × weight
   decays, plus the interventions measured at the smallest size, sized so the predicted wall time fits the
   budget on this machine (throughput calibrated by timing a few training steps here).
2. **Runs** (`run_study`): all of them as one resumable study in `DIR/runs` through an executor; the
   design is kept in `DIR/design.json`, so re-running the command continues and never repeats a run.
3. **Estimates** (`estimate`): each intervention's loss change at matched compute, its effective-data
   multiplier with a bootstrap interval, and an honesty verdict against the seed-to-seed spread.
4. **Fits and extrapolation** (`extrapolate`): data-constrained laws fitted to the runs, the form picked
   by held-out error, then the best (N, epochs, recipe) at the user's U and C, its loss, the asymptote as
   compute → ∞, and the data efficiency of the best recipe against the standard one.

Interventions are data (`Intervention`): a name, config overrides, how the effect is measured and what
it is compared with. See docs/study.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import RunConfig, resolve_config
from scarce.errors import ScarceError
from scarce.executors import Executor
from scarce.studies.sweep import Outcome, Study, point_config

STUDY_NAME = "study"  # the study's runs in DIR/runs carry study = "study"
DESIGN_FILE, RESULTS_FILE = "design.json", "results.json"
STANDARD_WEIGHT_DECAY = 0.1  # the standard recipe (Kim et al. 2025): weight decay 0.1, only epochs tuned
# The recipe every run shares unless the user overrides it: CPU-sized context and batch, a vocabulary
# small enough that the output head does not dominate micro models, evaluation only at the end.
BASE_RECIPE = {
    "data": {"vocab_size": 4096, "eval_tokens": 16384},
    "model": {"seq_len": 128},
    "optim": {"lr": 3e-3, "weight_decay": STANDARD_WEIGHT_DECAY},
    "train": {"batch_size": 16, "eval_every": 0, "checkpoint_every": 500, "keep_checkpoints": 1},
}
RUN_OVERHEAD_SECONDS = 6.0  # per run: worker start, store and model set-up, final evaluation and checkpoint
ANALYSIS_FRACTION = 0.25  # of the budget kept for ensemble scoring, sampling, fits and the report
MIR_COST = 2.0  # MIR's step ≈ two passes (docs/training.md); measured FLOPs replace it once runs exist
DISTILL_WEIGHT = 0.75  # synthetic batch fraction: Kim et al.'s best for self-distillation; student steps ×4
SYNTHETIC_FRACTION = 0.5  # teachers sample half the budget's tokens (whole documents: about the budget in the end)
# Sampling, per requested token and teacher, measured ~18× a training token's time (micro teachers on a CPU,
# KV-cached, batch 64; documents in flight finish, so about twice the requested tokens come out).
SAMPLING_SLOWDOWN = 20.0
PROCEDURAL_FRACTION = 0.03  # warm-up tokens as a fraction of the natural training tokens (Jiang et al.: 0.1-3%)
MUENNIGHOFF_R_STAR_D = 15.4  # Muennighoff et al. 2023's fitted repetition constant


# ---------------------------------------------------------------- interventions, as data


@dataclass(frozen=True)
class Intervention:
    """One trick the study measures.

    `measure` says how its effect is measured: "grid" (the best of the weight-decay × epochs grid),
    "single" (one run per budget at the reference setting plus `overrides`), "ensemble" (K seeds of the
    reference setting, logits averaged), "distill" (a student of the ensemble) or "specialize".
    `reference` is the recipe it is compared with: "standard" (wd 0.1, epochs tuned) or "tuned".
    `overrides` are dotted config keys, or a function of the reference run's config returning them.
    `requires(base)` returns why it cannot run on this study (None when it can).
    """

    name: str
    title: str
    measure: str
    reference: str = "tuned"
    overrides: dict[str, Any] | Callable[[RunConfig], dict[str, Any]] = field(default_factory=dict)
    budgets: str = "all"  # "all" budgets, or only the "smallest" (costly ones)
    requires: Callable[[RunConfig], str | None] = lambda base: None

    def overrides_for(self, config: RunConfig) -> dict[str, Any]:
        return self.overrides(config) if callable(self.overrides) else dict(self.overrides)

    def where(self, budgets: Sequence[int]) -> list[int]:
        """The budgets it is measured at."""
        return list(budgets) if self.budgets == "all" else list(budgets[:1])


def _procedural_overrides(config: RunConfig) -> dict[str, Any]:
    natural = (config.data.unique_tokens or 0) * config.train.epochs
    step = config.train.batch_size * config.model.seq_len
    return {"procedural.task": "dyck", "procedural.transfer": ["attention", "mlp"],
            "procedural.tokens": max(step, int(PROCEDURAL_FRACTION * natural) // step * step)}


def _needs_domains(base: RunConfig) -> str | None:
    if base.data.domains is None:
        return "needs a domain corpus (data.domains); this corpus is a single domain"
    return "domain corpora are studied with `scarce specialize` (docs/specialization.md); `scarce study` takes one corpus"


INTERVENTIONS: tuple[Intervention, ...] = (
    Intervention("tuned", "tuned weight decay and epochs", "grid", reference="standard"),
    Intervention("mir", "masked-input regularization (MIR)", "single", overrides={"objective.kind": "mir"}),
    Intervention("ensemble", "ensemble of K seeds (logits averaged)", "ensemble"),
    Intervention("distill", "sequence distillation from the ensemble", "distill",
                 overrides={"distill.weight": DISTILL_WEIGHT}, budgets="smallest"),
    Intervention("procedural", "procedural warm-up (k-Dyck; attention and MLP transferred)", "single",
                 overrides=_procedural_overrides),
    Intervention("specialize", "domain specialization", "specialize", requires=_needs_domains),
)


def select_interventions(names: Sequence[str] | None) -> list[Intervention]:
    known = {i.name: i for i in INTERVENTIONS}
    if not names:
        return list(INTERVENTIONS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ScarceError(f"unknown intervention {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    # Every other intervention is measured on top of the tuned grid, which is always run and reported.
    return [known[n] for n in dict.fromkeys(["tuned", *names])]


# ---------------------------------------------------------------- inputs


@dataclass
class Inputs:
    corpus: str
    flops: float
    unique_tokens: int  # U: the user's unique tokens (default: the corpus's training split)
    corpus_tokens: int  # training tokens in the corpus's store
    hours: float
    workers: int
    interventions: list[str]
    overrides: list[str]

    def key(self) -> dict:
        return asdict(self)


def base_config(corpus: str, out: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The recipe every run of the study shares (BASE_RECIPE, then the user's overrides)."""
    data = json.loads(json.dumps(BASE_RECIPE))
    data["data"]["corpus"] = corpus
    data.update(name=STUDY_NAME, runs_dir=str(Path(out) / "runs"), study=STUDY_NAME)
    config = resolve_config(data, list(overrides))
    for key in ("data.unique_tokens", "model.size", "train.epochs", "optim.weight_decay", "train.seed"):
        if any(o.split("=", 1)[0].strip() == key for o in overrides):
            raise ScarceError(f"override {key}: the study sets it per run; leave it out")
    if config.data.domains is not None:
        raise ScarceError("data.domains: `scarce study` studies one corpus; use `scarce specialize` for domain corpora")
    return config


def check_inputs(corpus: str, flops: float, unique_tokens: int | None, hours: float, workers: int | None,
                 out: Path, overrides: Sequence[str] = (), interventions: Sequence[str] | None = None,
                 ) -> tuple[Inputs, RunConfig]:
    """Every input checked before anything is written in `out` (tokenizing the corpus fills only the cache)."""
    if not (isinstance(flops, int | float) and math.isfinite(flops) and flops > 0):
        raise ScarceError(f"--flops must be a positive number of training FLOPs, got {flops!r}")
    if not (math.isfinite(hours) and hours > 0):
        raise ScarceError(f"--budget-hours must be positive, got {hours!r}")
    if workers is not None and workers < 1:
        raise ScarceError(f"--workers must be at least 1, got {workers}")
    if unique_tokens is not None and unique_tokens < 2:
        raise ScarceError(f"--unique-tokens must be at least 2, got {unique_tokens}")
    chosen = select_interventions(interventions)
    from scarce.data.corpora import list_corpora
    from scarce.data.store import prepare_store

    if corpus not in list_corpora():
        if not Path(corpus).exists():
            raise ScarceError(f"unknown corpus {corpus!r}: not a catalog name ({', '.join(list_corpora())}) "
                              "and no such file or directory")
        corpus = str(Path(corpus).resolve())  # runs are keyed by their config: the same path from any directory
    base = base_config(corpus, out, overrides)
    store = prepare_store(corpus, **base.data.store_options())
    available = store.train_token_count
    if unique_tokens is not None and unique_tokens > available:
        raise ScarceError(f"--unique-tokens {unique_tokens:,} exceeds the {available:,} training tokens of corpus "
                          f"{corpus!r}; give at most {available:,} (or omit it to use them all)")
    if Path(out).exists() and any(Path(out).iterdir()) and not (Path(out) / DESIGN_FILE).is_file():
        raise ScarceError(f"--out {out} exists and holds no study ({DESIGN_FILE}); give an empty or new directory")
    inputs = Inputs(corpus, float(flops), int(unique_tokens or available), available, float(hours), workers or 0,
                    [i.name for i in chosen], list(overrides))
    return inputs, base


# ---------------------------------------------------------------- design


@dataclass(frozen=True)
class Level:
    """A design shape, from richest to poorest; the richest whose budgets stay useful in the time is used."""

    name: str
    sizes: tuple[str, ...]
    budgets: int  # nested unique-token budgets: the largest D and D/2, D/4, ...
    epochs: tuple[int, ...]
    weight_decays: tuple[float, ...]  # always includes the standard 0.1
    members: int  # ensemble members = seeds at the tuned setting (the seed-to-seed spread)
    min_steps: int  # the largest budget must be at least this many optimizer steps of tokens
    full_sizes: int = 2  # sizes after the first `full_sizes` run at the smallest budget only (for their cost)


# Three sizes are the fewest that determine a law's N term (E + A/N^α has three parameters); the third,
# costliest size runs at the smallest budget only, which is enough for that.
LEVELS = (
    Level("three sizes", ("micro", "tiny", "small"), 3, (1, 4, 16), (0.1, 0.8, 3.2), 3, 64),
    Level("three sizes, two weight decays", ("micro", "tiny", "small"), 3, (1, 4, 16), (0.1, 1.6), 2, 8),
    Level("one size", ("micro",), 2, (1, 4), (0.1, 1.6), 2, 4),
    Level("one size, one budget", ("micro",), 1, (1, 4), (0.1, 1.6), 2, 2),
)


def grid_cells(sizes: Sequence[str], budgets: Sequence[int], full_sizes: int) -> list[tuple[str, int]]:
    """(size, budget) pairs of the grid: the first `full_sizes` sizes at every budget, the rest at the smallest."""
    return [(size, d) for i, size in enumerate(sizes) for d in (budgets if i < full_sizes else budgets[:1])]


@dataclass
class Design:
    level: str
    sizes: list[str]
    budgets: list[int]  # unique tokens, ascending, nested (each a prefix of the next)
    epochs: list[int]
    weight_decays: list[float]
    members: int
    workers: int
    seconds_per_token: dict[str, float]  # calibrated training seconds per token, per size
    predicted_seconds: float
    hours: float
    full_sizes: int = 2  # sizes after these run at the smallest budget only

    @classmethod
    def from_dict(cls, d: dict) -> Design:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def calibrate(base: RunConfig, sizes: Sequence[str], threads: int | None = None, steps: int = 3,
              measured: int = 2) -> dict[str, float]:
    """Training seconds per token, timed here over a few optimizer steps with the runs' thread count, for
    the first `measured` sizes; larger ones scaled from the last measured by FLOPs per token
    (conservative: larger models use a CPU better, so they run faster than this predicts)."""
    import torch

    from scarce.model import model_shape

    device = torch.device("cuda" if base.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    shapes = {s: model_shape(s, vocab_size=base.data.vocab_size, seq_len=base.model.seq_len) for s in sizes}
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads or 1)
    seconds: dict[str, float] = {}
    try:
        for size in sizes[:measured]:
            seconds[size] = _time_steps(shapes[size], base, device, steps)
    finally:
        torch.set_num_threads(threads_before)
    last = sizes[min(measured, len(sizes)) - 1]
    for size in sizes[measured:]:
        seconds[size] = seconds[last] * shapes[size].train_flops_per_token() / shapes[last].train_flops_per_token()
    return seconds


def _time_steps(shape, base: RunConfig, device, steps: int) -> float:
    """Seconds per training token of one model shape: forward, backward and AdamW step, first step excluded."""
    import torch

    from scarce.model import Transformer
    from scarce.train.optim import build_optimizer

    model = Transformer(shape).to(device)
    optimizer = build_optimizer(model, base.optim)
    tokens = torch.randint(0, base.data.vocab_size, (base.train.batch_size, base.model.seq_len + 1), device=device)
    for i in range(steps + 1):
        if i == 1:  # the first step pays one-time costs
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(tokens[:, :-1])
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / (steps * base.train.batch_size * base.model.seq_len)


def step_tokens(base: RunConfig) -> int:
    return base.train.batch_size * base.model.seq_len


def nested_budgets(largest: int, count: int, step: int) -> list[int]:
    """largest, largest/2, ... rounded down to whole optimizer steps (at least one), ascending."""
    budgets = sorted({max(step, (largest >> i) // step * step) for i in range(count)})
    return budgets


def planned_runs(level: Level, budgets: Sequence[int], interventions: Sequence[Intervention],
                 base: RunConfig) -> list[list[tuple[str, float]]]:
    """What a design will compute, stage by stage, as (size, training-token equivalents): the grid; the
    single-run interventions and ensemble members; the teachers' sampling (in the driver, one at a time);
    the distillation students. Interventions are budgeted at the grid's largest epochs (their tuned epochs
    are not known yet), the evaluation as a third of a training step per evaluated token."""
    evaluation = (base.data.eval_tokens or 0) / 3
    most, small = max(level.epochs), level.sizes[0]
    grid = [(size, d * e + evaluation) for size, d in grid_cells(level.sizes, budgets, level.full_sizes)
            for e in level.epochs for _ in level.weight_decays]
    after = [(small, d * most * (MIR_COST if i.name == "mir" else 1 + PROCEDURAL_FRACTION) + evaluation)
             for i in interventions if i.measure == "single" for d in i.where(budgets)]
    ensembles = list(budgets)  # seeds of every tuned setting: the spread every verdict is judged against
    after += [(small, d * most + evaluation) for d in ensembles for _ in range(level.members - 1)]
    scoring = [(small, level.members * evaluation) for _ in ensembles]
    distilled = [d for i in interventions if i.measure == "distill" for d in i.where(budgets)]
    sampling = [(small, SAMPLING_SLOWDOWN * level.members * synthetic_tokens(d)) for d in distilled]
    students = [(small, d * most / (1 - DISTILL_WEIGHT) + evaluation) for d in distilled]
    return [grid, after, scoring, sampling, students]


def synthetic_tokens(budget: int) -> int:
    """Tokens the teachers sample for a student at this budget (whole documents overshoot it)."""
    return max(1, int(budget * SYNTHETIC_FRACTION))


def predict_seconds(stages: Sequence[Sequence[tuple[str, float]]], seconds_per_token: dict[str, float],
                    workers: int) -> float:
    """Wall time of the stages one after another, each spread over the workers longest-first."""
    total = 0.0
    for stage in stages:
        loads = [0.0] * max(1, workers)
        for duration in sorted((RUN_OVERHEAD_SECONDS + tokens * seconds_per_token[size] for size, tokens in stage),
                               reverse=True):
            loads[loads.index(min(loads))] += duration
        total += max(loads) if stage else 0.0
    return total


def design_study(inputs: Inputs, base: RunConfig, seconds_per_token: dict[str, float], workers: int,
                 interventions: Sequence[Intervention]) -> Design:
    """The richest level whose largest budget, the most that fits (1 − ANALYSIS_FRACTION) of the time,
    is at least its `min_steps`; budgets never exceed U."""
    step = step_tokens(base)
    seconds = inputs.hours * 3600 * (1 - ANALYSIS_FRACTION)
    active = [i for i in interventions if i.requires(base) is None]
    for level in LEVELS:
        if not all(size in seconds_per_token for size in level.sizes):
            continue

        def fits(steps: int) -> bool:
            budgets = nested_budgets(steps * step, level.budgets, step)
            return predict_seconds(planned_runs(level, budgets, active, base), seconds_per_token, workers) <= seconds

        cap = inputs.unique_tokens // step
        lo, hi = 0, 1
        while hi <= cap and fits(hi):
            lo, hi = hi, hi * 2
        hi = min(hi, cap + 1)
        while hi - lo > 1:  # largest steps in [lo, hi) that fits
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        if lo >= level.min_steps:
            budgets = nested_budgets(lo * step, level.budgets, step)
            predicted = predict_seconds(planned_runs(level, budgets, active, base), seconds_per_token, workers)
            return Design(level.name, list(level.sizes), budgets, list(level.epochs), list(level.weight_decays),
                          level.members, workers, dict(seconds_per_token), predicted, inputs.hours, level.full_sizes)
    # Nothing fits: the smallest design at its smallest budget, if one run of it fits the time at all.
    smallest = LEVELS[-1]
    if inputs.unique_tokens < smallest.min_steps * step:
        raise ScarceError(f"the corpus gives {inputs.unique_tokens:,} unique tokens, fewer than the smallest study "
                          f"budget ({smallest.min_steps * step:,} tokens = {smallest.min_steps} steps of "
                          f"{step:,}); give more --unique-tokens or a larger corpus")
    budgets = nested_budgets(smallest.min_steps * step, smallest.budgets, step)
    stages = planned_runs(smallest, budgets, active, base)
    one_run = predict_seconds([stages[0][:1]], seconds_per_token, 1)
    if one_run > inputs.hours * 3600:
        raise ScarceError(f"--budget-hours {inputs.hours:g} is too small for even one run on this machine (predicted "
                          f"{one_run:.0f} s each); give at least --budget-hours {math.ceil(one_run * 20 / 3600 * 100) / 100:g}")
    predicted = predict_seconds(stages, seconds_per_token, workers)
    return Design(smallest.name, list(smallest.sizes), budgets, list(smallest.epochs), list(smallest.weight_decays),
                  smallest.members, workers, dict(seconds_per_token), predicted, inputs.hours, smallest.full_sizes)


def design_or_resume(inputs: Inputs, base: RunConfig, out: Path, threads: int | None, workers: int,
                     interventions: Sequence[Intervention], console: Console) -> Design:
    """The design kept in DIR/design.json when the inputs are the same (a re-run continues the study);
    otherwise calibrate and design anew (runs whose configs recur are still reused)."""
    path = Path(out) / DESIGN_FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("inputs") == inputs.key():
            console.print(f"continuing the study in {out} (design from {path.name})")
            return Design.from_dict(saved["design"])
        console.print(f"[yellow]note:[/yellow] the inputs differ from {path}'s; designing anew (finished runs with "
                      "the same settings are reused)")
    sizes = sorted({s for level in LEVELS for s in level.sizes}, key=lambda s: ["micro", "tiny", "small"].index(s))
    seconds_per_token = calibrate(base, sizes, threads)
    design = design_study(inputs, base, seconds_per_token, workers, interventions)
    write_design(out, inputs, design)
    return design


def write_design(out: Path, inputs: Inputs, design: Design) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / DESIGN_FILE, {"schema": "scarce.study-design/1", "inputs": inputs.key(),
                                                "design": asdict(design)})


# ---------------------------------------------------------------- running


@dataclass
class Row:
    """One finished run, as the estimates and the report see it."""

    run_id: str
    part: str  # grid, or the intervention's name (ensemble members: "member")
    size: str
    params: int  # non-embedding parameters: N in the laws
    budget: int  # data.unique_tokens asked for (the nested budget)
    unique_tokens: int  # U: the unique tokens trained on (a budget's tail shorter than a sequence is not)
    epochs: float
    weight_decay: float
    seed: int
    loss: float | None  # final validation loss (nats/token); None if the run failed or diverged
    flops: float
    wall_seconds: float
    status: str


def _point(part: str, config: RunConfig) -> dict:
    return {"part": part, "size": config.model.size, "unique_tokens": config.data.unique_tokens,
            "epochs": config.train.epochs, "weight_decay": config.optim.weight_decay, "seed": config.train.seed}


def grid_configs(base: RunConfig, design: Design) -> list[RunConfig]:
    return [point_config(base, {"model.size": size, "data.unique_tokens": d, "train.epochs": e,
                                "optim.weight_decay": wd}, STUDY_NAME)
            for size, d in grid_cells(design.sizes, design.budgets, design.full_sizes)
            for e in design.epochs for wd in design.weight_decays]


def _row(outcome: Outcome, part: str) -> Row | None:
    if outcome.run_dir is None or not (Path(outcome.run_dir) / runs.SUMMARY_FILE).is_file():
        return None
    s, c = runs.read_summary(outcome.run_dir), runs.read_config(outcome.run_dir)
    loss = s.get("final_val_loss") if s.get("status") == "completed" else None
    return Row(s["run_id"], part, c["model"]["size"], s["non_embedding_params"], c["data"]["unique_tokens"],
               s["unique_tokens"],
               float(s.get("epochs") or c["train"]["epochs"]), c["optim"]["weight_decay"], c["train"]["seed"],
               loss if loss is not None and math.isfinite(loss) else None, float(s.get("flops") or 0.0),
               float(s.get("wall_seconds") or 0.0), s.get("status", "failed"))


def tuned_config(rows: Sequence[Row], configs: dict[str, RunConfig], size: str, budget: int) -> RunConfig | None:
    """The grid run with the lowest loss at (size, budget): the tuned setting its interventions build on."""
    cell = [r for r in rows if r.part == "grid" and r.size == size and r.budget == budget and r.loss is not None]
    best = min(cell, key=lambda r: r.loss, default=None)
    return configs[best.run_id] if best else None


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    return point_config(config, overrides, STUDY_NAME)


def member_config(config: RunConfig, i: int) -> RunConfig:
    """Member i of the ensemble of `config`: the same settings, init and data-order seeds + i."""
    return point_config(config, {"train.seed": config.train.seed + i, "train.data_seed": config.train.data_seed + i},
                        STUDY_NAME)


@dataclass
class StudyRuns:
    rows: list[Row]
    configs: dict[str, RunConfig]  # run_id -> config
    ensembles: list[dict]  # per budget: members (run ids), ensemble loss, flops
    skipped: dict[str, str]  # intervention -> why it was not run
    wall_seconds: float  # this invocation's time in run_study
    failed: list[str]  # run ids (or points) that failed


def run_study(base: RunConfig, design: Design, interventions: Sequence[Intervention], executor: Executor,
              console: Console | None = None, live: bool = True) -> StudyRuns:
    """Train the grid, then the interventions on the tuned settings, then the distillation students: one
    resumable study in base.runs_dir."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    rows: list[Row] = []
    configs: dict[str, RunConfig] = {}
    failed: list[str] = []
    skipped = {i.name: reason for i in interventions if (reason := i.requires(base)) is not None}
    active = [i for i in interventions if i.name not in skipped]
    spec = {"design": asdict(design), "interventions": [i.name for i in interventions]}

    def train(study: Study, batch: list[tuple[str, RunConfig]]) -> list[Row | None]:
        if not batch:
            return []
        outcomes = study.run([c for _, c in batch], [_point(p, c) for p, c in batch], executor, console, live=live)
        found = []
        for (part, config), outcome in zip(batch, outcomes):
            row = _row(outcome, part)
            if row is None or outcome.status != "completed":
                failed.append(row.run_id if row else f"{part} {_point(part, config)}")
            if row is not None:
                rows.append(row)
                configs[row.run_id] = RunConfig.model_validate(runs.read_config(outcome.run_dir))
            found.append(row)
        return found

    with Study(STUDY_NAME, base.runs_dir, "study", spec) as study:
        console.print(f"[bold]grid[/bold]: {len(grid_configs(base, design))} runs")
        train(study, [("grid", c) for c in grid_configs(base, design)])
        small = design.sizes[0]
        tuned = {d: tuned_config(rows, configs, small, d) for d in design.budgets}
        second: list[tuple[str, RunConfig]] = []
        # Seeds of the tuned setting at every budget: the ensembles, and the seed-to-seed spread every verdict needs.
        wants_members = set(design.budgets)
        for intervention in active:
            if intervention.measure != "single":
                continue
            try:
                second += [(intervention.name, with_overrides(tuned[d], intervention.overrides_for(tuned[d])))
                           for d in intervention.where(design.budgets) if tuned[d] is not None]
            except ScarceError as err:  # overrides this version's config does not accept: say so, run the rest
                skipped[intervention.name] = f"its config overrides do not validate: {err}"
        for d in sorted(wants_members):
            if tuned[d] is not None:
                second += [("member", member_config(tuned[d], i)) for i in range(1, design.members)]
        if second:
            console.print(f"[bold]interventions[/bold]: {len(second)} runs")
        train(study, second)
        ensembles = []
        for d in sorted(wants_members):
            if tuned[d] is None:
                continue
            member_ids = [r.run_id for r in rows if r.part in ("grid", "member") and _same_setting(configs[r.run_id], tuned[d])]
            ensembles.append(score_ensemble(base.runs_dir, member_ids, rows, d))
        students = []
        distill = next((i for i in active if i.measure == "distill"), None)
        for ensemble in ensembles:
            if distill is None or ensemble["budget"] not in distill.where(design.budgets):
                continue
            if len(ensemble["members"]) < 2:
                skipped.setdefault("distill", "the ensemble teacher has fewer than two finished members")
                continue
            students.append(("distill", student_config(tuned[ensemble["budget"]], ensemble, distill, console)))
        train(study, students)
    return StudyRuns(rows, configs, ensembles, skipped, time.perf_counter() - started, failed)


def _same_setting(config: RunConfig, tuned: RunConfig) -> bool:
    """Whether `config` is a seed of `tuned` (all settings equal but the seeds)."""
    strip = lambda c: {**c.model_dump(mode="json"), "train": {k: v for k, v in c.train.model_dump(mode="json").items()
                                                              if k not in ("seed", "data_seed")}}
    return strip(config) == strip(tuned)


def score_ensemble(runs_dir: Path, member_ids: Sequence[str], rows: Sequence[Row], budget: int) -> dict:
    """The logit-averaged loss of the members (scarce.evals.ensemble), cached beside the runs by member ids."""
    member_ids = sorted(member_ids)
    cache = Path(runs_dir) / "sweeps" / STUDY_NAME / "ensembles" / f"{budget}-{'_'.join(m[-4:] for m in member_ids)}.json"
    by_id = {r.run_id: r for r in rows}
    entry = {"budget": budget, "members": member_ids, "flops": sum(by_id[m].flops for m in member_ids),
             "member_losses": [by_id[m].loss for m in member_ids]}
    if cache.is_file() and json.loads(cache.read_text()).get("members") == member_ids:
        return json.loads(cache.read_text())
    if len(member_ids) >= 2 and all(loss is not None for loss in entry["member_losses"]):
        from scarce.evals.ensemble import evaluate_ensemble

        result = evaluate_ensemble([Path(runs_dir) / m for m in member_ids])
        entry.update(loss=result["ensemble"]["loss"], losses_by_k=result["losses_by_k"])
    else:
        entry.update(loss=None, losses_by_k=[])
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, entry)
    return entry


def student_config(tuned: RunConfig, ensemble: dict, intervention: Intervention, console: Console) -> RunConfig:
    """A student trained from scratch on real batches mixed with the ensemble's samples (sequence level)."""
    from scarce.studies.distill import SYNTHETIC_DIR, distill_config, sample_synthetic

    weight = intervention.overrides_for(tuned).get("distill.weight", DISTILL_WEIGHT)
    teachers = [Path(tuned.runs_dir) / m for m in ensemble["members"]]
    synthetic = sample_synthetic(teachers, synthetic_tokens(ensemble["budget"]), Path(tuned.runs_dir) / SYNTHETIC_DIR, seed=0,
                                 progress=False, console=console)
    return point_config(distill_config(tuned, "sequence", teachers, weight, synthetic), {}, STUDY_NAME)


# ---------------------------------------------------------------- estimates

NOT_DISTINGUISHABLE = "not distinguishable from zero at this scale"


@dataclass
class Effect:
    """What the study concluded about one intervention."""

    name: str
    title: str
    reference: str
    status: str  # measured, skipped, failed
    reason: str | None = None  # why skipped or failed
    points: list[dict] = field(default_factory=list)  # per budget (and size, for tuning)
    delta_compute: float | None = None  # mean loss change at matched compute (negative: lower loss)
    delta_data: float | None = None  # mean loss change at the same model, budget and epochs
    spread: float | None = None  # seed-to-seed range of the tuned setting's loss (the noise floor)
    multiplier: dict | None = None  # {"value", "interval", "law"} or None
    multiplier_reason: str | None = None
    cost: float | None = None  # FLOPs relative to the reference run it was built on
    verdict: str = NOT_DISTINGUISHABLE
    verdict_reason: str = ""
    runs: list[str] = field(default_factory=list)


def seed_spread(ensembles: Sequence[dict]) -> float | None:
    """The largest range (max − min) of the member losses of one setting across seeds: the loss change
    that seeds alone produce. None without at least two finished seeds of some setting."""
    ranges = [max(e["member_losses"]) - min(e["member_losses"]) for e in ensembles
              if len(e["member_losses"]) >= 2 and all(v is not None for v in e["member_losses"])]
    return max(ranges) if ranges else None


def _matched(reference: Sequence[Row], flops: float) -> Row | None:
    """The reference recipe's best run that used no more compute than `flops`."""
    affordable = [r for r in reference if r.loss is not None and r.flops <= flops * (1 + 1e-9)]
    return min(affordable, key=lambda r: r.loss, default=None)


def _grid(rows: Sequence[Row], size: str, budget: int, standard: bool = False) -> list[Row]:
    return [r for r in rows if r.part == "grid" and r.size == size and r.budget == budget and r.loss is not None
            and (not standard or r.weight_decay == STANDARD_WEIGHT_DECAY)]


def law_points(rows: Sequence[Row], recipe: str) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """(N, U, epochs) -> loss for a recipe's grid runs: "standard" (weight decay 0.1) or "tuned" (the best
    weight decay at each (N, U, epochs)); with the run ids behind each point."""
    cells: dict[tuple, Row] = {}
    for r in rows:
        if r.part != "grid" or r.loss is None or (recipe == "standard" and r.weight_decay != STANDARD_WEIGHT_DECAY):
            continue
        key = (r.params, r.unique_tokens, r.epochs)
        if key not in cells or r.loss < cells[key].loss:
            cells[key] = r
    chosen = [cells[k] for k in sorted(cells)]
    x = {"N": np.array([r.params for r in chosen], float), "U": np.array([r.unique_tokens for r in chosen], float),
         "epochs": np.array([r.epochs for r in chosen], float)}
    return x, np.array([r.loss for r in chosen], float), [r.run_id for r in chosen]


def _as_points(chosen: Sequence[tuple[Row, float]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return ({"N": np.array([r.params for r, _ in chosen], float), "U": np.array([r.unique_tokens for r, _ in chosen], float),
             "epochs": np.array([r.epochs for r, _ in chosen], float)}, np.array([loss for _, loss in chosen], float))


def measure_effects(study: StudyRuns, design: Design, interventions: Sequence[Intervention]) -> tuple[list[Effect], float | None]:
    """Per intervention: its points (loss, compute, reference at matched compute and at the same setting)."""
    rows, small = study.rows, design.sizes[0]
    spread = seed_spread(study.ensembles)
    by_id = {r.run_id: r for r in rows}
    effects = []
    for intervention in interventions:
        effect = Effect(intervention.name, intervention.title, intervention.reference, "measured", spread=spread)
        effects.append(effect)
        if intervention.name in study.skipped:
            effect.status, effect.reason = "skipped", study.skipped[intervention.name]
            continue
        measured: list[tuple[Row, float, float, list[str], Row | None]] = []  # (setting row, loss, flops, runs, same-setting reference)
        if intervention.measure == "grid":
            for size in design.sizes:
                for d in design.budgets:
                    best = min(_grid(rows, size, d), key=lambda r: r.loss, default=None)
                    if best is not None:
                        measured.append((best, best.loss, best.flops, [best.run_id], min(
                            _grid(rows, size, d, standard=True), key=lambda r: r.loss, default=None)))
        elif intervention.measure == "single":
            for r in rows:
                if r.part == intervention.name and r.loss is not None:
                    base = min(_grid(rows, small, r.budget), key=lambda g: g.loss, default=None)
                    measured.append((r, r.loss, r.flops, [r.run_id], base))
        elif intervention.measure == "ensemble":
            for e in study.ensembles:
                if e.get("loss") is not None:
                    member = by_id[e["members"][0]]
                    base = min(_grid(rows, small, e["budget"]), key=lambda g: g.loss, default=None)
                    measured.append((member, e["loss"], e["flops"], list(e["members"]), base))
        elif intervention.measure == "distill":
            for r in rows:
                if r.part == "distill" and r.loss is not None:
                    teachers = next((e for e in study.ensembles if e["budget"] == r.budget), {"members": [], "flops": 0})
                    base = min(_grid(rows, small, r.budget), key=lambda g: g.loss, default=None)
                    measured.append((r, r.loss, r.flops + teachers["flops"], [r.run_id, *teachers["members"]], base))
        if not measured:
            effect.status = "failed"
            effect.reason = "no finished runs (see the failed runs below)" if study.failed else "no runs in this design"
            continue
        for setting, loss, flops, run_ids, same in measured:
            reference = (_grid(rows, setting.size, setting.budget, standard=True) if intervention.reference == "standard"
                         else _grid(rows, setting.size, setting.budget))
            matched = _matched(reference, flops)
            effect.points.append({
                "size": setting.size, "budget": setting.budget, "unique_tokens": setting.unique_tokens,
                "epochs": setting.epochs, "loss": loss, "flops": flops, "runs": run_ids,
                "matched_compute_loss": matched.loss if matched else None, "matched_compute_run": matched.run_id if matched else None,
                "same_setting_loss": same.loss if same else None, "same_setting_run": same.run_id if same else None,
                "cost": flops / same.flops if same and same.flops else None,
            })
            effect.runs += run_ids
        deltas = [p["loss"] - p["matched_compute_loss"] for p in effect.points if p["matched_compute_loss"] is not None]
        same = [p["loss"] - p["same_setting_loss"] for p in effect.points if p["same_setting_loss"] is not None]
        costs = [p["cost"] for p in effect.points if p["cost"]]
        effect.delta_compute = float(np.mean(deltas)) if deltas else None
        effect.delta_data = float(np.mean(same)) if same else None
        effect.cost = float(np.mean(costs)) if costs else None
        effect.runs = list(dict.fromkeys(effect.runs))
    return effects, spread


def intervention_points(effect: Effect, by_id: dict[str, Row]) -> list[tuple[Row, float]]:
    """(the run whose N, U and epochs describe the point, the point's loss) for the multiplier fit."""
    return [(by_id[p["runs"][0]], p["loss"]) for p in effect.points]


def _joint_multiplier(template, baseline, intervention, bootstrap: int) -> dict:
    """k from one joint fit, refusing designs with no residual degree of freedom to spare: a law that passes
    exactly through its points has bootstrap draws that agree perfectly, an interval of width zero that
    measures nothing."""
    from scarce.laws import effective_data_multiplier

    free = len([p for p in template.param_names if p not in template.fixed]) + 1  # + k
    n = len(baseline[1]) + len(intervention[1])
    if n < free + 2:
        raise ScarceError(f"{n} points for {free} free parameters; a multiplier with an interval needs at least {free + 2}")
    k, _ = effective_data_multiplier(template, baseline, intervention, data_variable="U", bootstrap=bootstrap)
    return {**k.to_dict(), "samples": k.samples.tolist()}


def estimate_multiplier(effect: Effect, rows: Sequence[Row], law_template, bootstrap: int) -> None:
    """k: the intervention's points on the reference recipe's law with their unique tokens scaled by k
    (one joint fit, methods.md §2), with a bootstrap interval. Falls back to a power law in U at the
    intervention's model size when the data-constrained law cannot be fitted."""
    from scarce.laws import PowerLaw

    by_id = {r.run_id: r for r in rows}
    x_int, y_int = _as_points(intervention_points(effect, by_id))
    reasons = []
    if law_template is not None:
        x_ref, y_ref, _ = law_points(rows, effect.reference)
        try:
            effect.multiplier = {**_joint_multiplier(law_template, (x_ref, y_ref), (x_int, y_int), bootstrap),
                                 "law": "data-constrained law + k"}
            return
        except ScarceError as err:
            reasons.append(f"data-constrained law: {err}")
    # One size, one epoch count per budget: L = E + A / U^α over the reference's best per budget there.
    size = by_id[effect.points[0]["runs"][0]].size
    best: dict[int, Row] = {}
    for r in rows:
        if r.part == "grid" and r.size == size and r.loss is not None and \
                (effect.reference == "tuned" or r.weight_decay == STANDARD_WEIGHT_DECAY):
            if r.budget not in best or r.loss < best[r.budget].loss:
                best[r.budget] = r
    try:
        baseline = ({"U": [r.unique_tokens for r in best.values()]}, [r.loss for r in best.values()])
        effect.multiplier = {**_joint_multiplier(PowerLaw(variable="U"), baseline, ({"U": x_int["U"]}, y_int), bootstrap),
                             "law": f"power law in U at {size}"}
    except ScarceError as err:
        reasons.append(f"power law in U: {err}")
        effect.multiplier_reason = "; ".join(reasons)


def judge(effect: Effect) -> None:
    """The honesty guard: an effect is a gain (or a loss) only when its multiplier's interval excludes 1
    and its loss change at the same setting exceeds the seed-to-seed spread; otherwise it is not
    distinguishable from zero at this scale, and the reason says which test it failed."""
    if effect.status != "measured":
        effect.verdict, effect.verdict_reason = effect.status, effect.reason or ""
        return
    delta = effect.delta_data if effect.delta_data is not None else effect.delta_compute
    k = effect.multiplier
    if effect.spread is None:
        effect.verdict_reason = "no seed replicates finished, so the seed-to-seed spread is unknown"
    elif delta is None:
        effect.verdict_reason = "no reference run to compare with"
    elif abs(delta) <= effect.spread:
        effect.verdict_reason = (f"its loss change {delta:+.4f} is within the seed-to-seed spread "
                                 f"{effect.spread:.4f}")
    elif k is None:
        effect.verdict_reason = f"no effective-data multiplier could be fitted ({effect.multiplier_reason})"
    elif k["interval"] is None or None in k["interval"]:
        effect.verdict_reason = "the multiplier has no finite bootstrap interval"
    elif k["interval"][0] <= 1 <= k["interval"][1]:
        effect.verdict_reason = f"its multiplier's interval [{k['interval'][0]:.3g}, {k['interval'][1]:.3g}] includes 1×"
    elif (k["interval"][0] > 1) != (delta < 0):
        effect.verdict_reason = "its multiplier and its loss change disagree in direction"
    else:
        effect.verdict = "gain" if delta < 0 else "loss"
        effect.verdict_reason = (f"loss change {delta:+.4f} beyond the seed-to-seed spread {effect.spread:.4f}; "
                                 f"multiplier interval [{k['interval'][0]:.3g}, {k['interval'][1]:.3g}] excludes 1×")


# ---------------------------------------------------------------- fits and extrapolation


def law_candidates() -> dict[str, Any]:
    from scarce.laws import DataConstrained

    return {"data-constrained (R*_D fitted)": DataConstrained(),
            f"data-constrained (R*_D = {MUENNIGHOFF_R_STAR_D}, Muennighoff et al.)": DataConstrained(fixed={"R_star_D": MUENNIGHOFF_R_STAR_D})}


def compare_forms(rows: Sequence[Row]) -> dict:
    """Every candidate form fitted to the standard and the tuned recipe's points and scored by held-out
    error (extrapolation to the largest model size when every candidate has it, else leave-one-out).
    Returns the table rows, the chosen form's label, and why a recipe could not be fitted."""
    from scarce.laws import compare_laws

    candidates = law_candidates()
    table, problems, scores = [], {}, {label: [] for label in candidates}
    for recipe in ("standard", "tuned"):
        x, y, ids = law_points(rows, recipe)
        try:
            compared = compare_laws(list(candidates.values()), x, y, holdout="N", point_labels=ids)
        except ScarceError as err:
            problems[recipe] = str(err)
            continue
        for label, c in zip(candidates, compared):
            table.append({**c.to_dict(), "recipe": recipe, "law": label,
                          "unidentified": list(getattr(c.fitted, "unidentified_", []) or [])})
    for label in candidates:
        mine = [t for t in table if t["law"] == label]
        use_extrapolation = table and all(t["extrapolation_rmse_log"] is not None for t in table)
        scores[label] = sum(t["extrapolation_rmse_log"] if use_extrapolation else t["loo_rmse_log"] for t in mine)
    chosen = min(scores, key=scores.get) if table else None
    held_out = ("extrapolation to the largest model" if table and all(t["extrapolation_rmse_log"] is not None for t in table)
                else "leave-one-out")
    return {"table": table, "chosen": chosen, "score": held_out, "problems": problems}


def fit_recipe(rows: Sequence[Row], recipe: str, template, bootstrap: int):
    """The chosen form fitted to a recipe's points with bootstrap draws (or a ScarceError)."""
    from scarce.laws.fit import fit_law, law_copy

    x, y, ids = law_points(rows, recipe)
    return fit_law(law_copy(template), x, y, bootstrap=bootstrap, point_labels=ids)


def _with_params(template, params: dict):
    from scarce.laws.fit import law_copy

    law = law_copy(template)
    law.params_ = dict(params)
    return law


def _interval(samples: Sequence[float], level: float = 0.95) -> list[float | None] | None:
    from scarce.laws.derived import percentile_with_infinities

    values = np.asarray([s for s in samples if not np.isnan(s)], float)
    if len(values) < 2:
        return None
    low, high = percentile_with_infinities(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(v) if np.isfinite(v) else None for v in (low, high)]


def _number(v) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def asymptote_at(params: dict, unique_tokens: float) -> float:
    """The data-constrained law's loss as compute → ∞ at U unique tokens: N → ∞ and epochs → ∞ leave
    E + B / (U·(1 + R*_D))^β (repeated data saturates at U·(1 + R*_D) effective tokens)."""
    return params["E"] + params["B"] / (unique_tokens * (1 + params["R_star_D"])) ** params["beta"]


def unique_tokens_for(params: dict, loss: float) -> float:
    """The unique tokens the law needs to reach `loss` as compute → ∞ (inf at or below E)."""
    if loss <= params["E"]:
        return math.inf
    return (params["B"] / (loss - params["E"])) ** (1 / params["beta"]) / (1 + params["R_star_D"])


def predict_recipe(law, k_value: float, k_samples: Sequence[float], cost: float, flops: float,
                   unique_tokens: float) -> dict:
    """Best (N, epochs) and loss of a recipe at `flops` FLOPs and U unique tokens: the law with U scaled
    by the recipe's multiplier k, on flops / cost (a recipe costing 2× per token gets half the tokens);
    intervals from the law's bootstrap draws, each paired with a draw of k."""
    from scarce.laws import plan
    from scarce.laws.derived import bootstrap_draws

    def one(params: dict, k: float) -> dict:
        try:
            found = plan(_with_params(law, params), flops / cost, unique_tokens=unique_tokens * k)
            out = {name: e.value for name, e in found.items()}
        except ScarceError:
            out = dict.fromkeys(("params", "tokens", "epochs", "loss"), math.nan)
        out["asymptote"] = asymptote_at(params, unique_tokens * k)
        return out

    point = one(law.params_, k_value)
    draws = bootstrap_draws(law)
    samples = [one(dict(zip(law.param_names, row)), k_samples[i] if i < len(k_samples) else k_value)
               for i, row in enumerate(draws)]
    result = {}
    for name, value in point.items():
        values = [s[name] for s in samples]
        result[name] = {"value": _number(value), "interval": _interval(values), "samples": values}
    return result


def nearest_size(params: float, vocab_size: int, seq_len: int) -> str:
    """The ladder size whose non-embedding parameter count is nearest (by ratio) to `params`."""
    from scarce.model import SIZES, model_shape

    counts = {s: model_shape(s, vocab_size=vocab_size, seq_len=seq_len).non_embedding_params() for s in SIZES}
    return min(counts, key=lambda s: abs(math.log(counts[s] / params)))


def extrapolate(rows: Sequence[Row], effects: Sequence[Effect], inputs: Inputs, base: RunConfig,
                bootstrap: int, comparison: dict) -> dict:
    """The laws, and each recipe's predicted best (N, epochs) and loss at the user's U and C.

    Recipes: the standard one and the tuned one, each with its own law; every other measured intervention
    is the tuned law with U scaled by its multiplier k and its compute divided by its cost."""
    out: dict[str, Any] = {"comparison": comparison, "laws": {}, "recipes": [], "problems": dict(comparison["problems"]),
                           "best": None}
    if comparison["chosen"] is None:
        out["problems"].setdefault("laws", "no recipe had enough runs to fit a data-constrained law")
        return out
    template = law_candidates()[comparison["chosen"]]
    laws = {}
    for recipe in ("standard", "tuned"):
        try:
            laws[recipe] = law = fit_recipe(rows, recipe, template, bootstrap)
        except ScarceError as err:
            out["problems"][recipe] = str(err)
            continue
        intervals = getattr(law, "intervals_", None) or {}
        out["laws"][recipe] = {
            "form": comparison["chosen"], "formula": law.formula, "runs": law_points(rows, recipe)[2],
            "parameters": {n: {"value": _number(law.params_[n]),
                               "interval": [_number(v) for v in intervals[n]] if n in intervals else None}
                           for n in law.param_names},
            "unidentified": list(law.unidentified_ or []), "rmse_log": law.report_.rmse_log,
            "n_points": law.report_.n_points,
        }
    by_name = {e.name: e for e in effects}
    plans = [("standard", "standard", 1.0, [], 1.0, True)]
    tuned = by_name.get("tuned")
    plans.append(("tuned", "tuned", 1.0, [], 1.0, tuned is not None and tuned.verdict == "gain"))
    for e in effects:
        if e.status == "measured" and e.name != "tuned" and e.multiplier and e.multiplier["value"] is not None:
            plans.append((e.name, "tuned", e.multiplier["value"], e.multiplier["samples"], e.cost or 1.0,
                          e.verdict == "gain"))
    for name, recipe, k, k_samples, cost, eligible in plans:
        if recipe in laws:
            predicted = predict_recipe(laws[recipe], k, k_samples, cost, inputs.flops, inputs.unique_tokens)
            efficiency = data_efficiency(laws.get("standard"), predicted["asymptote"], inputs.unique_tokens)
            out["recipes"].append({"recipe": name, "law": recipe, "k": k, "cost": cost, "eligible": eligible,
                                   **predicted, "data_efficiency": efficiency})
    undetermined = sorted({p for law in laws.values() for p in (law.unidentified_ or []) if p in ("E", "A", "alpha")})
    if undetermined:
        sizes = len({r.params for r in rows if r.loss is not None})
        why = (f"{sizes} model size(s) measured; E + A/N^α needs three" if sizes < 3 else
               "at this scale the losses do not separate a model-size term from the data term (larger models did "
               "not lower the loss in a way the law can pin down); more unique tokens per run would help")
        out["problems"]["recommendation"] = (
            f"the runs do not determine the law's model-size term ({', '.join(undetermined)} unidentified: {why}), "
            f"so no model size can be recommended; the predictions below are not conclusions")
    else:
        out["best"] = recommend(out["recipes"], rows, inputs, base)
    return out


def data_efficiency(standard, asymptote: dict, unique_tokens: float) -> dict | None:
    """How many times U the standard recipe's law needs to reach a recipe's compute → ∞ loss at U (Kim et
    al.'s D_eff ratio on asymptotes), with an interval from the paired bootstrap draws."""
    from scarce.laws.derived import bootstrap_draws

    if standard is None or asymptote["value"] is None:
        return None
    value = unique_tokens_for(standard.params_, asymptote["value"]) / unique_tokens
    samples = [unique_tokens_for(dict(zip(standard.param_names, row)), a) / unique_tokens
               for row, a in zip(bootstrap_draws(standard), asymptote["samples"]) if a is not None and not np.isnan(a)]
    return {"value": _number(value), "interval": _interval(samples)}


def recommend(recipes: list[dict], rows: Sequence[Row], inputs: Inputs, base: RunConfig) -> dict | None:
    """The eligible recipe with the lowest predicted loss (the standard one unless an intervention is a
    distinguishable gain), with the ladder size nearest its N and the scale it extrapolates from."""
    usable = [r for r in recipes if r["eligible"] and r["loss"]["value"] is not None and r["params"]["value"]]
    if not usable:
        return None
    best = min(usable, key=lambda r: r["loss"]["value"])
    measured = [r for r in rows if r.loss is not None]
    grid = [r for r in measured if r.part == "grid"]
    wd = STANDARD_WEIGHT_DECAY
    if best["recipe"] != "standard":  # the tuned weight decay at the largest size and budget measured
        top = max(grid, key=lambda r: (r.params, r.budget))
        wd = min((r for r in grid if r.params == top.params and r.budget == top.budget), key=lambda r: r.loss).weight_decay
    return {
        **{k: best[k] for k in ("recipe", "params", "tokens", "epochs", "loss", "asymptote", "data_efficiency")},
        "nearest_size": nearest_size(best["params"]["value"], base.data.vocab_size, base.model.seq_len),
        "weight_decay": wd,
        "params_factor": best["params"]["value"] / max(r.params for r in measured),
    }


def measured_scale(rows: Sequence[Row], inputs: Inputs) -> dict | None:
    """The range the study measured, and how far the user's U and C lie beyond it."""
    measured = [r for r in rows if r.loss is not None]
    if not measured:
        return None
    return {
        "params_measured": [min(r.params for r in measured), max(r.params for r in measured)],
        "unique_tokens_measured": [min(r.unique_tokens for r in measured), max(r.unique_tokens for r in measured)],
        "flops_largest_run": max(r.flops for r in measured),
        "unique_tokens_factor": inputs.unique_tokens / max(r.unique_tokens for r in measured),
        "flops_factor": inputs.flops / max(r.flops for r in measured),
    }


# ---------------------------------------------------------------- the whole study


def conclude(study: StudyRuns, design: Design, interventions: Sequence[Intervention], inputs: Inputs,
             base: RunConfig, bootstrap: int) -> dict:
    """Effects (with multipliers and verdicts), laws and the recommendation, as one JSON-ready dict."""
    effects, spread = measure_effects(study, design, interventions)
    comparison = compare_forms(study.rows)
    template = law_candidates()[comparison["chosen"]] if comparison["chosen"] else None
    for effect in effects:
        if effect.status == "measured":
            estimate_multiplier(effect, study.rows, template, bootstrap)
        judge(effect)
    extrapolation = extrapolate(study.rows, effects, inputs, base, bootstrap, comparison)
    return {
        "schema": "scarce.study/1", "inputs": inputs.key(), "design": asdict(design), "spread": spread,
        "effects": [asdict(e) for e in effects], "extrapolation": extrapolation,
        "scale": measured_scale(study.rows, inputs),
        "ensembles": study.ensembles, "rows": [asdict(r) for r in study.rows], "failed": study.failed,
        "bootstrap": bootstrap,
    }


def run(corpus: str, flops: float, out: Path, unique_tokens: int | None = None, hours: float = 1.0,
        executor: Executor | str = "local", workers: int | None = None, threads: int | None = None,
        overrides: Sequence[str] = (), interventions: Sequence[str] | None = None, bootstrap: int = 100,
        design: Design | None = None, console: Console | None = None, live: bool = True) -> dict:
    """The whole study: check, design (or continue), train, conclude, write results.json and the report.

    `executor` is an executor or its name (then built with `workers` and `threads`); `workers` is also the
    parallelism the design assumes. `design` replaces the calibrated design (tests, or a hand-made grid)."""
    from scarce.executors import make_executor, usable_cpus
    from scarce.studies.study_report import write_report

    console = console or Console(stderr=True)
    out = Path(out).resolve()
    if bootstrap < 0:
        raise ScarceError(f"--bootstrap must be ≥ 0, got {bootstrap}")
    inputs, base = check_inputs(corpus, flops, unique_tokens, hours, workers, out, overrides, interventions)
    if isinstance(executor, str):
        executor = make_executor(executor, workers=workers, threads=threads)
    chosen = select_interventions(inputs.interventions)
    parallel = executor.workers or workers or usable_cpus()
    if design is None:
        design = design_or_resume(inputs, base, out, threads, parallel, chosen, console)
    else:
        write_design(out, inputs, design)
    console.print(f"design: {design.level}; sizes {', '.join(design.sizes)}; budgets "
                  f"{', '.join(f'{d:,}' for d in design.budgets)} unique tokens; epochs {design.epochs}; "
                  f"weight decay {design.weight_decays}; {design.members} seeds; predicted "
                  f"{design.predicted_seconds / 60:.1f} min of runs on {design.workers} worker(s)")
    started = time.perf_counter()
    study_runs = run_study(base, design, chosen, executor, console, live)
    results = conclude(study_runs, design, chosen, inputs, base, bootstrap)
    results["wall_seconds"] = {"runs": study_runs.wall_seconds, "total": time.perf_counter() - started}
    write_json_atomic(out / RESULTS_FILE, results)
    write_report(results, out)
    return results
