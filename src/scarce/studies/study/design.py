"""The study's inputs and design: check them, calibrate this machine's throughput, and pick the richest
grid of runs whose predicted wall time fits the budget (docs/study.md, "How it designs the runs")."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from scarce.atomic import write_json_atomic
from scarce.config import RunConfig, resolve_config
from scarce.errors import ScarceError
from scarce.studies.study.interventions import (
    DISTILL_WEIGHT,
    PROCEDURAL_FRACTION,
    STANDARD_WEIGHT_DECAY,
    Intervention,
    select_interventions,
)

STUDY_NAME = "study"  # the study's runs in DIR/runs carry study = "study"
DESIGN_FILE = "design.json"
# The recipe every run shares unless the user overrides it: CPU-sized context and batch, a vocabulary
# small enough that the output head does not dominate micro models, evaluation only at the end.
BASE_RECIPE = {
    "data": {"vocab_size": 4096, "eval_tokens": 16384},
    "model": {"seq_len": 128},
    "optim": {"lr": 3e-3, "weight_decay": STANDARD_WEIGHT_DECAY},
    "train": {"batch_size": 16, "eval_every": 0, "checkpoint_every": 500, "keep_checkpoints": 1},
}
RUN_OVERHEAD_SECONDS = 6.0  # per run: worker start, store and model set-up, final evaluation and checkpoint
# Of the budget kept for fitting and the report (scoring, sampling and students are predicted stages):
# the one-hour studies of docs/studies spent 2.0 and 3.6 minutes there.
ANALYSIS_FRACTION = 0.1
# While running, the study drops work only when the rest would end more than OVERRUN_TOLERANCE past the
# budget, less the fitting and report (58 s in the longer KJV study of docs/studies): the design's 10%
# margin absorbs an ordinary slowdown, such as two workers sharing a memory bus (with no tolerance, a
# first attempt at the 2-hour KJV study dropped three interventions and two grid cells 16 minutes in).
ANALYSIS_SECONDS = 120.0
OVERRUN_TOLERANCE = 0.05
MIR_COST = 2.0  # MIR's step ≈ two passes (docs/training.md); measured FLOPs replace it once runs exist
# A draw's cost over a training token's, used only for designs saved before sampling was timed
# (`calibrate_sampling`: 2.3× for four KV-cached micro teachers in docs/studies/kjv-long2/design.json).
TOKENS_PER_DRAW = 3.0
SAMPLING_BATCH = 64  # sample_synthetic's rows in flight: up to this many documents × context finish past the pool
DROP_ORDER = ("distill", "procedural", "mir")  # lowest priority first; the grid and the seeds are never dropped

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
    members: int  # seeds of the tuned setting: the grid's run + members − 1 fresh seeds (the reference's noise)
    min_steps: int  # the largest budget must be at least this many optimizer steps of tokens
    full_sizes: int = 2  # sizes after the first `full_sizes` run at the two largest budgets only (for their cost)


# Three sizes are the fewest that determine a law's N term (E + A/N^α has three parameters). Every size runs
# at the largest budget, where larger models can win, and at two budgets at least; the costliest size only at
# the two largest. Four seeds of each tuned setting: three fresh ones are the reference effects are judged on.
LEVELS = (
    Level("three sizes", ("micro", "tiny", "small"), 3, (1, 4, 16), (0.1, 0.8, 3.2), 4, 64),
    Level("three sizes, two weight decays", ("micro", "tiny", "small"), 3, (1, 4, 16), (0.1, 1.6), 4, 8),
    Level("one size", ("micro",), 2, (1, 4), (0.1, 1.6), 4, 4),
    Level("one size, one budget", ("micro",), 1, (1, 4), (0.1, 1.6), 4, 2),
)
IDENTIFIES_N = ("three sizes", "three sizes, two weight decays")  # the levels whose sizes can pin the N term


def grid_cells(sizes: Sequence[str], budgets: Sequence[int], full_sizes: int) -> list[tuple[str, int]]:
    """(size, budget) pairs of the grid: the first `full_sizes` sizes at every budget, the rest at the two
    largest (so every size has the largest budget and two budgets to separate N from U); most needed first.

    A study running behind drops cells from the end (`to_drop`): the first size at every budget comes first
    and is never dropped (every tuned setting, intervention and verdict builds on it), then each other size
    at the largest budget, at the second largest, and at the smaller budgets, largest first."""
    cells = [(sizes[0], d) for d in budgets]
    ranks = sorted(range(len(budgets)), key=lambda j: -budgets[j])
    for rank, j in enumerate(ranks):
        cells += [(size, budgets[j]) for i, size in enumerate(sizes[1:], 1) if i < full_sizes or rank < 2]
    return cells


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
    full_sizes: int = 2  # sizes after these run at the two largest budgets only
    # --budget-hours that would give a design able to identify the N term on this machine (its calibrated
    # throughput): the first N-identifying level at its smallest budget; and the next level up, 4× budgets
    hours_to_identify_n: float | None = None
    hours_for_4x_budget: float | None = None
    dropped: list[str] = field(default_factory=list)  # interventions the budget could not afford (DROP_ORDER)
    # calibrated seconds per draw of the `members` teachers sampling together (None: designed before it was timed)
    sampling_seconds_per_draw: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Design:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def calibrate(base: RunConfig, sizes: Sequence[str], threads: int | None = None, steps: int = 3) -> dict[str, float]:
    """Training seconds per token of each size, timed here over a few optimizer steps with the runs' thread
    count. (Scaling larger sizes from a smaller one by FLOPs per token overpredicted the small size's
    runs by 1.7× on a CPU, where larger matmuls run closer to peak; timing it costs about a second.)"""
    import torch

    from scarce.model import model_shape

    device = torch.device("cuda" if base.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads or 1)
    try:
        return {size: _time_steps(model_shape(size, vocab_size=base.data.vocab_size, seq_len=base.model.seq_len),
                                  base, device, steps) for size in sizes}
    finally:
        torch.set_num_threads(threads_before)


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


def calibrate_sampling(base: RunConfig, size: str, members: int, threads: int | None = None) -> float:
    """Seconds per draw of `members` freshly initialized models of `size` sampling together as distillation's
    teachers do (scarce.train.sample: KV-cached, SAMPLING_BATCH rows), timed here over one batch of whole
    contexts (about two seconds on a CPU). A constant ratio to training (20× per teacher) had overpredicted
    a study's sampling about 20×."""
    import torch

    from scarce.model import Transformer, model_shape
    from scarce.train.sample import sample_documents

    shape = model_shape(size, vocab_size=base.data.vocab_size, seq_len=base.model.seq_len)
    device = torch.device("cuda" if base.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        models = [Transformer(shape).to(device).eval() for _ in range(members)]
        stats: dict = {}
        with torch.no_grad():
            for _ in sample_documents(models, SAMPLING_BATCH, 0, batch_size=SAMPLING_BATCH, stats=stats):
                pass
        return stats["seconds"] / stats["draws"]
    finally:
        torch.set_num_threads(threads_before)


def step_tokens(base: RunConfig) -> int:
    return base.train.batch_size * base.model.seq_len


def nested_budgets(largest: int, count: int, step: int) -> list[int]:
    """largest, largest/2, ... rounded down to whole optimizer steps (at least one), ascending."""
    budgets = sorted({max(step, (largest >> i) // step * step) for i in range(count)})
    return budgets


def planning_epochs(level: Level) -> int:
    """The epochs the runs after the grid are budgeted at before the grid has tuned them: the middle of the
    grid's (4 of 1, 4, 16), what the grid chose at most budgets of docs/studies. Budgeting them at the
    largest had left half of a study's time unspent; a study whose tuned epochs come out larger re-plans
    with them after the grid (`to_drop`)."""
    return sorted(level.epochs)[len(level.epochs) // 2]


def planned_runs(level: Level, budgets: Sequence[int], interventions: Sequence[Intervention],
                 base: RunConfig, cells: Sequence[tuple[str, int]] | None = None,
                 tuned_epochs: Mapping[int, float] | None = None,
                 tokens_per_draw: float = TOKENS_PER_DRAW) -> list[list[tuple[str, float]]]:
    """What a design will compute, stage by stage, as (size, training-token equivalents): the grid (its
    `cells`, default all); the single-run interventions and ensemble members; the teachers' sampling (in the
    driver, one at a time; `tokens_per_draw`: a draw of all teachers in training tokens); the
    distillation students. The runs after the grid are budgeted at each budget's `tuned_epochs` once the
    grid has chosen them, before at `planning_epochs`; the evaluation as a third of a training step per
    evaluated token."""
    evaluation = (base.data.eval_tokens or 0) / 3
    small = level.sizes[0]
    epochs = {d: (tuned_epochs or {}).get(d, planning_epochs(level)) for d in budgets}
    cells = grid_cells(level.sizes, budgets, level.full_sizes) if cells is None else cells
    grid = [(size, d * e + evaluation) for size, d in cells for e in level.epochs for _ in level.weight_decays]
    after = [(small, d * epochs[d] * (MIR_COST if i.name == "mir" else 1 + PROCEDURAL_FRACTION) + evaluation)
             for i in interventions if i.measure == "single" for d in i.where(budgets)]
    ensembles = list(budgets)  # seeds of every tuned setting: the reference every verdict is judged against
    after += [(small, d * epochs[d] + evaluation) for d in ensembles for _ in range(level.members - 1)]
    scoring = [(small, level.members * evaluation) for _ in ensembles]
    distilled = [d for i in interventions if i.measure == "distill" for d in i.where(budgets)]
    # documents in flight finish past the pool: up to a batch of whole contexts more draws
    sampling = [(small, tokens_per_draw * (synthetic_tokens(d, epochs[d]) + SAMPLING_BATCH * base.model.seq_len))
                for d in distilled]
    students = [(small, d * epochs[d] / (1 - DISTILL_WEIGHT) + evaluation) for d in distilled]
    return [grid, after, scoring, sampling, students]


def synthetic_tokens(budget: int, epochs: float) -> int:
    """Tokens the teachers sample for a student at this budget and epochs: a pool it passes over at most
    3 times (scarce.studies.distill.pool_tokens; whole documents overshoot it a little)."""
    from scarce.studies.distill import pool_tokens

    return pool_tokens(budget, epochs, DISTILL_WEIGHT)


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


def draw_cost(seconds_per_token: Mapping[str, float], size: str, seconds_per_draw: float | None) -> float:
    """A draw of the teachers sampling together, in training tokens of `size`, as calibrated."""
    return seconds_per_draw / seconds_per_token[size] if seconds_per_draw else TOKENS_PER_DRAW


def design_study(inputs: Inputs, base: RunConfig, seconds_per_token: dict[str, float], workers: int,
                 interventions: Sequence[Intervention], sampling_seconds_per_draw: float | None = None) -> Design:
    """The richest level whose largest budget, the most that fits (1 − ANALYSIS_FRACTION) of the time,
    is at least its `min_steps`; budgets never exceed U."""
    step = step_tokens(base)
    seconds = inputs.hours * 3600 * (1 - ANALYSIS_FRACTION)
    everything = [i for i in interventions if i.requires(base) is None]
    names = [i.name for i in everything]
    # Within a level, the lowest-priority interventions are dropped before a poorer level is taken: the
    # sizes that identify N are worth more than distillation's sampling.
    drops = [[n for n in DROP_ORDER[:k] if n in names] for k in range(len(DROP_ORDER) + 1)]
    for level in LEVELS:
        if not all(size in seconds_per_token for size in level.sizes):
            continue
        per_draw = draw_cost(seconds_per_token, level.sizes[0], sampling_seconds_per_draw)
        for dropped in drops:
            active = [i for i in everything if i.name not in dropped]

            def fits(steps: int) -> bool:
                budgets = nested_budgets(steps * step, level.budgets, step)  # noqa: B023 (called in this iteration)
                stages = planned_runs(level, budgets, active, base, tokens_per_draw=per_draw)  # noqa: B023
                return predict_seconds(stages, seconds_per_token, workers) <= seconds

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
                predicted = predict_seconds(planned_runs(level, budgets, active, base, tokens_per_draw=per_draw),
                                            seconds_per_token, workers)
                return Design(level.name, list(level.sizes), budgets, list(level.epochs), list(level.weight_decays),
                              level.members, workers, dict(seconds_per_token), predicted, inputs.hours,
                              level.full_sizes, *_hours_to_identify(level, lo, step, everything, base,
                                                                    seconds_per_token, workers, per_draw),
                              dropped, sampling_seconds_per_draw)
    active = [i for i in everything if i.name not in DROP_ORDER]
    # Nothing fits: the smallest design at its smallest budget, if one run of it fits the time at all.
    smallest = LEVELS[-1]
    if inputs.unique_tokens < smallest.min_steps * step:
        raise ScarceError(f"the corpus gives {inputs.unique_tokens:,} unique tokens, fewer than the smallest study "
                          f"budget ({smallest.min_steps * step:,} tokens = {smallest.min_steps} steps of "
                          f"{step:,}); give more --unique-tokens or a larger corpus")
    budgets = nested_budgets(smallest.min_steps * step, smallest.budgets, step)
    per_draw = draw_cost(seconds_per_token, smallest.sizes[0], sampling_seconds_per_draw)
    stages = planned_runs(smallest, budgets, active, base, tokens_per_draw=per_draw)
    one_run = predict_seconds([stages[0][:1]], seconds_per_token, 1)
    if one_run > inputs.hours * 3600:
        raise ScarceError(f"--budget-hours {inputs.hours:g} is too small for even one run on this machine (predicted "
                          f"{one_run:.0f} s each); give at least --budget-hours {math.ceil(one_run * 20 / 3600 * 100) / 100:g}")
    predicted = predict_seconds(stages, seconds_per_token, workers)
    return Design(smallest.name, list(smallest.sizes), budgets, list(smallest.epochs), list(smallest.weight_decays),
                  smallest.members, workers, dict(seconds_per_token), predicted, inputs.hours, smallest.full_sizes,
                  *_hours_to_identify(smallest, smallest.min_steps, step, everything, base, seconds_per_token, workers,
                                      per_draw), [n for n in DROP_ORDER if n in names], sampling_seconds_per_draw)


def _hours_to_identify(level: Level, steps: int, step: int, interventions: Sequence[Intervention], base: RunConfig,
                       seconds_per_token: dict[str, float], workers: int, per_draw: float
                       ) -> tuple[float | None, float | None]:
    """The --budget-hours at which this machine's calibrated throughput runs (a) the first level that can
    identify the N term, at its smallest budget (when `level` cannot), and (b) an N-identifying level with
    4× the largest budget (for when the sizes ran but did not separate N from U at these budgets)."""

    def hours(lv: Level, largest_steps: int) -> float | None:
        if not all(size in seconds_per_token for size in lv.sizes):
            return None
        budgets = nested_budgets(largest_steps * step, lv.budgets, step)
        stages = planned_runs(lv, budgets, interventions, base, tokens_per_draw=per_draw)
        seconds = predict_seconds(stages, seconds_per_token, workers)
        return math.ceil(seconds / (1 - ANALYSIS_FRACTION) / 3600 * 100) / 100

    identifying = next(lv for lv in LEVELS if lv.name in IDENTIFIES_N[-1:])
    to_identify = None if level.name in IDENTIFIES_N else hours(identifying, identifying.min_steps)
    bigger = level if level.name in IDENTIFIES_N else identifying
    return to_identify, hours(bigger, max(4 * steps, 4 * bigger.min_steps))


# ---------------------------------------------------------------- keeping the budget while running

def level_of(design: Design) -> Level:
    return Level(design.level, tuple(design.sizes), len(design.budgets), tuple(design.epochs),
                 tuple(design.weight_decays), design.members, 0, design.full_sizes)


def seconds_for_runs(hours: float) -> float:
    """Seconds of the budget the runs may take while the study runs (the design plans for 90%)."""
    return hours * 3600 * (1 + OVERRUN_TOLERANCE) - min(ANALYSIS_FRACTION * hours * 3600, ANALYSIS_SECONDS)


def slowdown(rows: Sequence, design: Design) -> float:
    """Measured over predicted seconds of finished runs (their own wall time, so reused runs count as they
    ran): how much slower this machine is now than when it was calibrated."""
    predicted = sum(RUN_OVERHEAD_SECONDS + r.unique_tokens * r.epochs * design.seconds_per_token.get(r.size, 0.0)
                    for r in rows if r.wall_seconds)
    measured = sum(r.wall_seconds for r in rows if r.wall_seconds)
    return measured / predicted if predicted > 0 else 1.0


def to_drop(design: Design, interventions: Sequence[Intervention], base: RunConfig, from_stage: int,
            factor: float, seconds_left: float, cells_left: Sequence[tuple[str, int]] = (),
            tuned_epochs: Mapping[int, float] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """What to drop so that the rest (the grid's `cells_left`, then the stages after the grid, from
    `from_stage` on, at the grid's `tuned_epochs` once known), predicted at `factor` × the calibrated
    time, fits `seconds_left`: the fewest lowest-priority interventions (DROP_ORDER), then grid cells from
    the end of `cells_left` (never the first size's). Returns (interventions, cells); when even everything
    droppable does not fit, all of it."""
    level = level_of(design)
    names = [n for n in DROP_ORDER if n in {i.name for i in interventions}]
    cells = [c for c in cells_left if c[0] != design.sizes[0]][::-1]  # the first size's are never dropped
    per_draw = draw_cost(design.seconds_per_token, design.sizes[0], design.sampling_seconds_per_draw)
    for k in range(len(names) + len(cells) + 1):
        dropped, dropped_cells = names[:k], cells[:max(0, k - len(names))]
        keep = [i for i in interventions if i.name not in dropped]
        stages = planned_runs(level, design.budgets, keep, base, [c for c in cells_left if c not in dropped_cells],
                              tuned_epochs, per_draw)
        if predict_seconds([stages[0], *stages[from_stage:]], design.seconds_per_token, design.workers) * factor \
                <= seconds_left:
            break
    return dropped, dropped_cells


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
    teachers = max(level.members for level in LEVELS)  # every level's teachers are its first size, micro
    sampling = calibrate_sampling(base, LEVELS[0].sizes[0], teachers, threads)
    design = design_study(inputs, base, seconds_per_token, workers, interventions, sampling)
    write_design(out, inputs, design)
    return design


def write_design(out: Path, inputs: Inputs, design: Design) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(out) / DESIGN_FILE, {"schema": "scarce.study-design/1", "inputs": inputs.key(),
                                                "design": asdict(design)})
