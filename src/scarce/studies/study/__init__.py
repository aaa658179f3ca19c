"""`scarce study`: from a corpus and a compute budget to a measured recommendation.

"I have U unique tokens of this corpus and C FLOPs: what should I train, and what is each trick worth on my
data?" The study answers with its own small runs, in four steps:

1. **Design** (`design.py`): a grid of small models × nested unique-token budgets × epochs × weight
   decays, plus the interventions measured at the smallest size, sized so the predicted wall time fits the
   budget on this machine (throughput calibrated by timing a few training steps here).
2. **Runs** (`running.py`): all of them as one resumable study in `DIR/runs` through an executor; the
   design is kept in `DIR/design.json`, so re-running the command continues and never repeats a run.
3. **Estimates** (`estimates.py`): each intervention's loss change at matched compute, its effective-data
   multiplier read off the reference law at its own points, and one paired t-test for gains and losses.
4. **Fits and extrapolation** (`extrapolation.py`): data-constrained laws fitted to the runs, the form
   picked by held-out error, then the best (N, epochs, recipe) at the user's U and C, its loss, the
   asymptote as compute → ∞, and the data efficiency of the best recipe against the standard one.

Interventions are data (`interventions.py`): a name, config overrides, how the effect is measured and
what it is compared with. `report.py` renders results.json as report.md/html; `cli.py` is the command.
See docs/study.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import RunConfig
from scarce.errors import ScarceError
from scarce.executors import Executor
from scarce.runs_jsonl import RUNS_JSONL_FILE, write_runs_jsonl
from scarce.studies.study.design import (
    ANALYSIS_FRACTION,
    Design,
    Inputs,
    base_config,
    check_inputs,
    design_or_resume,
    design_study,
    step_tokens,
    write_design,
)
from scarce.studies.study.estimates import (
    NOT_DISTINGUISHABLE,
    Effect,
    calibration,
    estimate_multiplier,
    judge,
    measure_effects,
    pooled_sd,
    reference_law,
    seed_groups,
)
from scarce.studies.study.extrapolation import (
    asymptote_at,
    compare_forms,
    extrapolate,
    fit_laws,
    measured_scale,
    predict_recipe,
)
from scarce.studies.study.interventions import INTERVENTIONS, STANDARD_WEIGHT_DECAY, Intervention, select_interventions
from scarce.studies.study.running import StudyRuns, run_study

RESULTS_FILE = "results.json"

__all__ = [  # the whole study, and the pieces a notebook or a test reaches for
    "run", "conclude", "RESULTS_FILE", "INTERVENTIONS", "Intervention", "select_interventions", "STANDARD_WEIGHT_DECAY",
    "Inputs", "Design", "base_config", "design_study", "step_tokens", "ANALYSIS_FRACTION", "Effect", "judge",
    "NOT_DISTINGUISHABLE", "asymptote_at", "predict_recipe", "rejudge",
]


def conclude(study: StudyRuns, design: Design, interventions: Sequence[Intervention], inputs: Inputs,
             base: RunConfig, bootstrap: int) -> dict:
    """Effects (with multipliers and verdicts), laws and the recommendation, as one JSON-ready dict."""
    effects = measure_effects(study, design, interventions)
    comparison = compare_forms(study.rows)
    laws, problems = fit_laws(study.rows, comparison, bootstrap)
    for effect in effects:
        if effect.status == "measured":
            estimate_multiplier(effect, *reference_law(study.rows, effect.reference, design.sizes[0], laws, bootstrap))
    tuned_law = reference_law(study.rows, "tuned", design.sizes[0], laws, bootstrap)[0]
    extrapolation = extrapolate(study.rows, effects, inputs, base, comparison, laws, problems)
    sd, df = pooled_sd(seed_groups(study.ensembles))
    return {
        "schema": "scarce.study/2", "inputs": inputs.key(), "design": asdict(design),
        "noise": {"sd": sd, "df": df}, "calibration": calibration(study, tuned_law),
        "effects": [asdict(e) for e in effects], "extrapolation": extrapolation,
        "scale": measured_scale(study.rows, inputs),
        "ensembles": study.ensembles, "rows": [asdict(r) for r in study.rows], "failed": study.failed,
        "dropped_cells": study.dropped_cells, "bootstrap": bootstrap,
    }


def run(corpus: str, flops: float, out: Path, unique_tokens: int | None = None, hours: float = 1.0,
        executor: Executor | str = "local", workers: int | None = None, threads: int | None = None,
        overrides: Sequence[str] = (), interventions: Sequence[str] | None = None, bootstrap: int = 100,
        design: Design | None = None, console: Console | None = None, live: bool = True) -> dict:
    """The whole study: check, design (or continue), train, conclude, write results.json and the report.

    `executor` is an executor or its name (then built with `workers` and `threads`); `workers` is also the
    parallelism the design assumes. `design` replaces the calibrated design (tests, or a hand-made grid)."""
    from scarce.executors import make_executor, usable_cpus
    from scarce.studies.study.report import write_report

    console = console or Console(stderr=True)
    clock_started = time.perf_counter()  # the budget counts from here: preparing the corpus and calibrating too
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
    study_runs = run_study(base, design, chosen, executor, console, live, clock_started)
    results = conclude(study_runs, design, chosen, inputs, base, bootstrap)
    results["wall_seconds"] = {"runs": study_runs.wall_seconds, "total": time.perf_counter() - started}
    write_json_atomic(out / RESULTS_FILE, results)
    # the study's runs as one committable file: each run's config difference, summary and evaluation curve
    write_runs_jsonl(runs.run_dirs(base.runs_dir), base.model_dump(mode="json"), out / RUNS_JSONL_FILE)
    write_report(results, out)
    return results


def rejudge(out: Path, bootstrap: int | None = None) -> dict:
    """Conclude a finished study again from its committed record (results.json and runs.jsonl), without its
    run directories: the estimates, laws, report and figures with this version's code; nothing is retrained.
    The runs' FLOPs are re-read from runs.jsonl in the study's convention (running.flops_6nd)."""
    import json

    from scarce.runs_jsonl import RUNS_JSONL_FILE
    from scarce.studies.study.report import write_report
    from scarce.studies.study.running import Row, flops_6nd

    out = Path(out)
    old = json.loads((out / RESULTS_FILE).read_text())
    lines = [json.loads(line) for line in (out / RUNS_JSONL_FILE).read_text().splitlines() if line.strip()]
    summaries = {r["run_id"]: r["summary"] for r in lines if "run_id" in r}
    fields = Row.__dataclass_fields__
    rows = [Row(**{**{k: v for k, v in r.items() if k in fields},
                   "flops": flops_6nd(summaries[r["run_id"]]) if r["run_id"] in summaries else r["flops"]})
            for r in old["rows"]]
    inputs = Inputs(**old["inputs"])
    design = Design.from_dict(old["design"])
    design.full_sizes = old["design"].get("full_sizes", 2)
    skipped = {e["name"]: e["reason"] for e in old["effects"] if e["status"] == "skipped"}
    study = StudyRuns(rows, {}, old["ensembles"], skipped, 0.0, old["failed"], old.get("dropped_cells", {}))
    base = base_config(inputs.corpus, out, inputs.overrides)
    results = conclude(study, design, select_interventions(inputs.interventions), inputs, base,
                       old.get("bootstrap", 100) if bootstrap is None else bootstrap)
    results["wall_seconds"] = old.get("wall_seconds", {})
    write_json_atomic(out / RESULTS_FILE, results)
    write_report(results, out)
    return results
