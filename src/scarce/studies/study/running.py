"""Running a design: the grid, then the interventions on the tuned settings, then the distillation
students, as one resumable study in DIR/runs; finished runs become `Row`s."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import RunConfig
from scarce.errors import ScarceError
from scarce.executors import Executor
from scarce.studies.study.design import (
    STUDY_NAME,
    Design,
    grid_cells,
    seconds_for_runs,
    slowdown,
    synthetic_tokens,
    to_drop,
)
from scarce.studies.study.interventions import DISTILL_WEIGHT, Intervention
from scarce.studies.sweep import Outcome, Study, point_config


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


def grid_configs(base: RunConfig, design: Design, cells: Sequence[tuple[str, int]] | None = None) -> list[RunConfig]:
    """The grid's runs (of `cells`, default all), longest first within a cell (so the workers end together)."""
    cells = grid_cells(design.sizes, design.budgets, design.full_sizes) if cells is None else cells
    return [point_config(base, {"model.size": size, "data.unique_tokens": d, "train.epochs": e,
                                "optim.weight_decay": wd}, STUDY_NAME)
            for size, d in cells for e in sorted(design.epochs, reverse=True) for wd in design.weight_decays]


def _row(outcome: Outcome, part: str) -> Row | None:
    if outcome.run_dir is None or not (Path(outcome.run_dir) / runs.SUMMARY_FILE).is_file():
        return None
    s, c = runs.read_summary(outcome.run_dir), runs.read_config(outcome.run_dir)
    loss = s.get("final_val_loss") if s.get("status") == "completed" else None
    return Row(s["run_id"], part, c["model"]["size"], s["non_embedding_params"], c["data"]["unique_tokens"],
               s["unique_tokens"],
               float(s.get("epochs") or c["train"]["epochs"]), c["optim"]["weight_decay"], c["train"]["seed"],
               loss if loss is not None and math.isfinite(loss) else None, flops_6nd(s),
               float(s.get("wall_seconds") or 0.0), s.get("status", "failed"))


def flops_6nd(summary: dict) -> float:
    """The run's training FLOPs in the study's one convention, C = 6·N·D with N non-embedding parameters (the
    laws', the planner's and --flops'): the run counts the output head and attention too, so rescale."""
    flops, per_token = float(summary.get("flops") or 0.0), summary.get("flops_per_token")
    return flops * 6 * summary["non_embedding_params"] / per_token if per_token else flops


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
    dropped_cells: dict[str, str] = field(default_factory=dict)  # grid cell ("tiny at 65,536 tokens") -> why


def run_study(base: RunConfig, design: Design, interventions: Sequence[Intervention], executor: Executor,
              console: Console | None = None, live: bool = True, clock_started: float | None = None) -> StudyRuns:
    """Train the grid, then the interventions on the tuned settings, then the distillation students: one
    resumable study in base.runs_dir. The budget counts from `clock_started` (time.perf_counter(); default
    now): the command's start, so that preparing the corpus and calibrating count too."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    clock_started = started if clock_started is None else clock_started
    rows: list[Row] = []
    configs: dict[str, RunConfig] = {}
    failed: list[str] = []
    skipped = {i.name: reason for i in interventions if (reason := i.requires(base)) is not None}
    skipped.update({name: f"dropped by the design: the {design.hours:g} h budget could not afford it on this machine"
                    for name in design.dropped if name in {i.name for i in interventions}})
    active = [i for i in interventions if i.name not in skipped]
    dropped_cells: dict[str, str] = {}
    spec = {"design": asdict(design), "interventions": [i.name for i in interventions]}

    def keep_the_budget(from_stage: int, cells_left: Sequence[tuple[str, int]] = (),
                        tuned_epochs: dict[int, float] | None = None) -> list[tuple[str, int]]:
        """Re-measure the throughput on the runs so far; when the rest (at the grid's tuned epochs once
        known) would overrun the budget, drop the lowest-priority interventions, then grid cells (each named
        in the report with the reason). Returns the grid cells still to run."""
        nonlocal active
        factor = slowdown(rows, design)
        left = seconds_for_runs(design.hours) - (time.perf_counter() - clock_started)
        names, cells = to_drop(design, active, base, from_stage, factor, left, cells_left, tuned_epochs)
        why = (f"dropped to keep the {design.hours:g} h budget: the runs so far took {factor:.2g}× their calibrated "
               "time, and the rest would not have fit")
        for name in names:
            skipped[name] = why
            console.print(f"[yellow]note:[/yellow] {name} {why}")
        for size, d in cells:
            dropped_cells[f"{size} at {d:,} tokens"] = why
            console.print(f"[yellow]note:[/yellow] the grid's {size} runs at {d:,} tokens were {why}")
        active = [i for i in active if i.name not in skipped]
        return [c for c in cells_left if c not in cells]

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
        # One (size, budget) cell at a time, most needed first: behind its budget, the study re-plans between cells.
        cells = grid_cells(design.sizes, design.budgets, design.full_sizes)
        while cells:
            train(study, [("grid", c) for c in grid_configs(base, design, cells[:1])])
            cells = keep_the_budget(from_stage=1, cells_left=cells[1:]) if len(cells) > 1 else []
        small = design.sizes[0]
        tuned = {d: tuned_config(rows, configs, small, d) for d in design.budgets}
        # The design budgeted the runs after the grid at the middle epochs; re-plan with the ones it chose.
        tuned_epochs = {d: c.train.epochs for d, c in tuned.items() if c is not None}
        keep_the_budget(from_stage=1, tuned_epochs=tuned_epochs)
        second: list[tuple[str, RunConfig]] = []
        # Interventions run at a seed no reference run used: the grid's run at the tuned setting won a selection
        # (its noise is biased low), and a shared seed would carry that luck into the intervention.
        fresh = {d: member_config(c, design.members) if c is not None else None for d, c in tuned.items()}
        # Seeds of the tuned setting at every budget: the ensembles, and the reference every verdict needs.
        wants_members = set(design.budgets)
        for intervention in active:
            if intervention.measure != "single":
                continue
            try:
                second += [(intervention.name, with_overrides(fresh[d], intervention.overrides_for(fresh[d])))
                           for d in intervention.where(design.budgets) if tuned[d] is not None]
            except ScarceError as err:  # overrides this version's config does not accept: say so, run the rest
                skipped[intervention.name] = f"its config overrides do not validate: {err}"
        for d in sorted(wants_members):
            if tuned[d] is not None:
                second += [("member", member_config(tuned[d], i)) for i in range(1, design.members)]
        if second:
            console.print(f"[bold]interventions[/bold]: {len(second)} runs")
        train(study, second)
        keep_the_budget(from_stage=2, tuned_epochs=tuned_epochs)
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
            students.append(("distill", student_config(fresh[ensemble["budget"]], ensemble, distill, console)))
        train(study, students)
    return StudyRuns(rows, configs, ensembles, skipped, time.perf_counter() - started, failed, dropped_cells)


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
    synthetic = sample_synthetic(teachers, synthetic_tokens(ensemble["budget"], tuned.train.epochs),
                                 Path(tuned.runs_dir) / SYNTHETIC_DIR, seed=0,
                                 progress=False, console=console)
    return point_config(distill_config(tuned, "sequence", teachers, weight, synthetic), {}, STUDY_NAME)
