"""Each intervention's effect: loss change at matched compute and at the same setting, its effective-data
multiplier with a bootstrap interval, and the honesty verdict against the seed-to-seed spread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scarce.errors import ScarceError
from scarce.studies.study.design import Design
from scarce.studies.study.interventions import STANDARD_WEIGHT_DECAY, Intervention
from scarce.studies.study.running import Row, StudyRuns

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
    """The honesty guard: an effect is a gain only when its loss change at the same setting exceeds the
    seed-to-seed spread and its multiplier's interval excludes 1; otherwise it is not distinguishable from
    zero at this scale, and the reason says which test it failed. A loss change beyond the spread in the
    harmful direction is a loss whatever the multiplier (a law fitted with k can miss a harm the runs
    show plainly; calling it a loss never overclaims a gain)."""
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
    elif delta > 0:
        effect.verdict = "loss"
        effect.verdict_reason = f"loss change {delta:+.4f} beyond the seed-to-seed spread {effect.spread:.4f}"
        if k is not None and k.get("interval") and None not in k["interval"]:
            effect.verdict_reason += f"; multiplier interval [{k['interval'][0]:.3g}, {k['interval'][1]:.3g}]"
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
