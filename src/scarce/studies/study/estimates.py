"""Each intervention's effect: its loss change against the reference's seeds at the same setting, judged by
one paired t-test (the same for gains and losses), and its effective-data multiplier k read off the
reference recipe's law at the intervention's own points, so the law's misfit cancels (docs/study.md,
"How an effect is estimated")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scarce.studies.study.design import Design
from scarce.studies.study.interventions import STANDARD_WEIGHT_DECAY, Intervention
from scarce.studies.study.running import Row, StudyRuns

NOT_DISTINGUISHABLE = "not distinguishable from zero at this scale"
LEVEL = 0.95  # the test's two-sided confidence: a false-positive rate of 5% under no effect
MULTIPLIER_BOUND = 100.0  # k is solved within [1/100, 100]; an end beyond it is reported as "> 100×" or "< 0.01×"
MULTIPLIER_DRAWS = 400  # Monte Carlo draws of k's interval (the law's bootstrap fits are reused cyclically)


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
    delta_data: float | None = None  # mean loss change against the reference's seeds at the same setting
    test: dict | None = None  # the paired t-test of delta_data (paired_test)
    multiplier: dict | None = None  # {"value", "interval", "samples", "bound", "law"} or None
    multiplier_reason: str | None = None
    cost: float | None = None  # FLOPs relative to the reference run it was built on
    verdict: str = NOT_DISTINGUISHABLE
    verdict_reason: str = ""
    runs: list[str] = field(default_factory=list)
    published: str = ""  # the published figure it corresponds to


# ---------------------------------------------------------------- noise and the test


def pooled_sd(groups: Sequence[Sequence[float | None]]) -> tuple[float | None, int]:
    """The seed-to-seed standard deviation pooled over groups of seeds of one setting, and its degrees of
    freedom Σ(n − 1); (None, 0) without a group of two finished seeds."""
    usable = [np.asarray(g, float) for g in groups if len(g) >= 2 and all(v is not None for v in g)]
    df = sum(len(g) - 1 for g in usable)
    if df == 0:
        return None, 0
    return float(math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in usable) / df)), df


def paired_test(points: Sequence[dict], sd: float | None, df: int, level: float = LEVEL) -> dict | None:
    """The one test for gains and losses. d_i = mean(losses) − mean(reference_losses) at each point (the
    same model, budget and epochs); d̄ = their mean, SE = sd·√(Σ(1/n_i + 1/m_i))/B with the pooled seed SD;
    t = d̄/SE against Student's t with the pooled degrees of freedom, two-sided at `level`. Exact under
    no effect when the seeds are independent; when an intervention run shares a seed with a reference
    run their correlation only lowers the difference's variance, so the test is then conservative."""
    from scipy import stats

    usable = [p for p in points if p.get("losses") and p.get("reference_losses")]
    if not usable or sd is None or df < 1:
        return None
    differences = [float(np.mean(p["losses"]) - np.mean(p["reference_losses"])) for p in usable]
    difference = float(np.mean(differences))
    se = sd * math.sqrt(sum(1 / len(p["losses"]) + 1 / len(p["reference_losses"]) for p in usable)) / len(usable)
    critical = float(stats.t.ppf(0.5 + level / 2, df))
    t = difference / se if se > 0 else math.copysign(math.inf, difference) if difference else 0.0
    return {"difference": difference, "se": se, "t": t, "df": df, "critical": critical, "sd": sd, "level": level,
            "points": len(usable), "p_value": float(2 * stats.t.sf(abs(t), df)),
            "interval": [difference - critical * se, difference + critical * se]}


def verdict_of(test: dict | None) -> str:
    if test is None or abs(test["t"]) <= test["critical"]:
        return NOT_DISTINGUISHABLE
    return "gain" if test["t"] < 0 else "loss"


# ---------------------------------------------------------------- the multiplier


def _law_inputs(law, points: Sequence[dict], scale: np.ndarray) -> dict[str, np.ndarray]:
    """The law's variables at every point × every multiplier in `scale` (U scaled), flattened."""
    columns = {"N": "params", "U": "unique_tokens", "epochs": "epochs"}
    x = {}
    for v in law.variables:
        values = np.asarray([p[columns[v]] for p in points], float)[:, None]
        x[v] = (values * scale[None, :] if v == "U" else np.broadcast_to(values, (len(points), len(scale)))).ravel()
    return x


def multiplier_for(law, params: dict, points: Sequence[dict], difference: float) -> float:
    """k such that the law, at the intervention's own points with U scaled by k, changes its mean loss by
    `difference`: mean_i L(N_i, k·U_i, e_i) − mean_i L(N_i, U_i, e_i) = d̄. Only the law's slope in U enters;
    its level at the points (its misfit there) cancels. inf when even MULTIPLIER_BOUND × the data would not
    lower the loss that much, 0 when 1/MULTIPLIER_BOUND would not raise it that much."""
    scale = np.geomspace(1 / MULTIPLIER_BOUND, MULTIPLIER_BOUND, 201)  # k = 1 is the middle point
    predicted = law.predict(_law_inputs(law, points, scale), params).reshape(len(points), len(scale)).mean(axis=0)
    change = np.minimum.accumulate(predicted - predicted[len(scale) // 2])  # non-increasing in k
    if difference < change[-1]:
        return math.inf
    if difference > change[0]:
        return 0.0
    drop = -change  # non-decreasing: interpolate log k against it; a flat stretch gives its lowest k
    return float(np.exp(np.interp(-difference, drop, np.log(scale))))


def multiplier(law, points: Sequence[dict], test: dict, draws: int = MULTIPLIER_DRAWS, seed: int = 0) -> dict:
    """k at d̄ under the law's fit, and its interval from draws that propagate both sources of error: d̄
    drawn from the test's own sampling distribution (d̄ + SE·t_df, so the interval excludes 1× exactly when
    the test calls a gain or a loss under the point law) and the law's slope from its bootstrap fits (the
    reference's runs resampled on their own: an intervention point can never drop out of a resample)."""
    from scarce.laws.derived import bootstrap_draws

    rng = np.random.default_rng(seed)
    fits = bootstrap_draws(law)
    fits = [dict(zip(law.param_names, row)) for row in fits] if len(fits) else [law.params_]
    differences = test["difference"] + test["se"] * rng.standard_t(test["df"], size=draws)
    # past the bounds a draw is 0 or inf; clipped to the bounds first, so a percentile between a finite draw and
    # an infinite one is the bound (reported "> 100×"), not inf − inf = nan
    samples = np.clip([multiplier_for(law, fits[i % len(fits)], points, d) for i, d in enumerate(differences)],
                      1 / MULTIPLIER_BOUND, MULTIPLIER_BOUND)
    low, high = np.percentile(samples, [50 * (1 - test["level"]), 50 * (1 + test["level"])])
    value = multiplier_for(law, law.params_, points, test["difference"])
    return {"value": _bounded(value), "interval": [_bounded(low), _bounded(high)], "bound": MULTIPLIER_BOUND,
            "beyond": [_side(value), _side(low), _side(high)],  # value, low, high: ">" or "<" past the bound
            # for predictions: capped at the bound (a k past it is not measured, only bounded)
            "capped": float(np.clip(value, 1 / MULTIPLIER_BOUND, MULTIPLIER_BOUND)), "samples": samples.tolist()}


def _side(k: float) -> str | None:
    return ">" if k >= MULTIPLIER_BOUND else "<" if k <= 1 / MULTIPLIER_BOUND else None


def _bounded(k: float) -> float | None:
    """k within the solver's bounds, else None: an end at the bound is a bound, never a measurement."""
    return None if _side(k) else float(k)


def format_multiplier(k: dict | None) -> str:
    """"1.3× [1.1×, 1.6×]"; an end beyond the bound is "> 100×" or "< 0.01×", never the bound itself."""
    if not k:
        return "–"
    bound = k.get("bound", MULTIPLIER_BOUND)
    beyond = k.get("beyond") or [None, None, None]

    def one(v, side):
        if v is not None:
            return f"{v:.3g}×"
        return f"> {bound:g}×" if side == ">" else f"< {1 / bound:g}×" if side == "<" else "–"

    if not k.get("interval"):
        return one(k["value"], beyond[0])
    return f"{one(k['value'], beyond[0])} [{one(k['interval'][0], beyond[1])}, {one(k['interval'][1], beyond[2])}]"


# ---------------------------------------------------------------- the study's effects


def law_points(rows: Sequence[Row], recipe: str) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Kim et al.'s protocol: the best loss over epochs (and, for the "tuned" recipe, over weight decays) at
    each (N, U) of the grid, with the epochs it took; "standard" is weight decay 0.1 only. Epochs are a
    choice the fit sees at its optimum, not an axis the law must follow into overfitting."""
    cells: dict[tuple, Row] = {}
    for r in rows:
        if r.part != "grid" or r.loss is None or (recipe == "standard" and r.weight_decay != STANDARD_WEIGHT_DECAY):
            continue
        key = (r.params, r.unique_tokens)
        if key not in cells or r.loss < cells[key].loss:
            cells[key] = r
    chosen = [cells[k] for k in sorted(cells)]
    x = {"N": np.array([r.params for r in chosen], float), "U": np.array([r.unique_tokens for r in chosen], float),
         "epochs": np.array([r.epochs for r in chosen], float)}
    return x, np.array([r.loss for r in chosen], float), [r.run_id for r in chosen]


def _matched(reference: Sequence[Row], flops: float) -> Row | None:
    """The reference recipe's best run that used no more compute than `flops`."""
    affordable = [r for r in reference if r.loss is not None and r.flops <= flops * (1 + 1e-9)]
    return min(affordable, key=lambda r: r.loss, default=None)


def _grid(rows: Sequence[Row], size: str, budget: int, standard: bool = False) -> list[Row]:
    return [r for r in rows if r.part == "grid" and r.size == size and r.budget == budget and r.loss is not None
            and (not standard or r.weight_decay == STANDARD_WEIGHT_DECAY)]


def _best(rows: Sequence[Row]) -> Row | None:
    return min(rows, key=lambda r: r.loss, default=None)


def seed_groups(ensembles: Sequence[dict]) -> list[list[float | None]]:
    """The losses of the seeds of each tuned setting (the ensembles' members): the noise every test uses."""
    return [list(e["member_losses"]) for e in ensembles]


def measure_effects(study: StudyRuns, design: Design, interventions: Sequence[Intervention]) -> list[Effect]:
    """Per intervention: its points (its losses, the reference's seed losses at the same setting, and the
    reference at matched compute), the paired test and the verdict. k is added by `estimate_multiplier`."""
    rows, small = study.rows, design.sizes[0]
    sd, df = pooled_sd(seed_groups(study.ensembles))
    by_id = {r.run_id: r for r in rows}
    seeds = {e["budget"]: e for e in study.ensembles if all(v is not None for v in e["member_losses"])}

    def tuned_seeds(budget: int) -> tuple[list[float], list[str]]:
        """The reference's seeds at the tuned setting: its fresh seeds when there are two or more (the grid's
        run won the selection, so its noise is biased low; the fresh seeds' is not), else all of them."""
        e = seeds.get(budget)
        if e is not None:
            fresh = [(loss, m) for loss, m in zip(e["member_losses"], e["members"]) if by_id[m].part == "member"]
            chosen = fresh if len(fresh) >= 2 else list(zip(e["member_losses"], e["members"]))
            return [loss for loss, _ in chosen], [m for _, m in chosen]
        best = _best(_grid(rows, small, budget))
        return ([best.loss], [best.run_id]) if best else ([], [])

    effects = []
    for intervention in interventions:
        effect = Effect(intervention.name, intervention.title, intervention.reference, "measured",
                        published=intervention.published)
        effects.append(effect)
        if intervention.name in study.skipped:
            effect.status, effect.reason = "skipped", study.skipped[intervention.name]
            judge(effect)
            continue
        # (the run whose N, U and epochs place the point, its losses, FLOPs, run ids, reference seed losses and runs)
        measured: list[tuple[Row, list[float], float, list[str], list[float], list[str]]] = []
        if intervention.measure == "grid":
            for size in design.sizes:
                for d in design.budgets:
                    best, standard = _best(_grid(rows, size, d)), _best(_grid(rows, size, d, standard=True))
                    if best is None or standard is None:
                        continue
                    losses, ids = tuned_seeds(d) if size == small else ([best.loss], [best.run_id])
                    measured.append((best, losses, best.flops, ids, [standard.loss], [standard.run_id]))
        elif intervention.measure == "single":
            measured = [(r, [r.loss], r.flops, [r.run_id], *tuned_seeds(r.budget))
                        for r in rows if r.part == intervention.name and r.loss is not None]
        elif intervention.measure == "ensemble":
            measured = [(by_id[e["members"][0]], [e["loss"]], e["flops"], list(e["members"]), *tuned_seeds(e["budget"]))
                        for e in study.ensembles if e.get("loss") is not None]
        elif intervention.measure == "distill":
            for r in rows:
                if r.part == "distill" and r.loss is not None:
                    teachers = next((e for e in study.ensembles if e["budget"] == r.budget), {"members": [], "flops": 0})
                    measured.append((r, [r.loss], r.flops + teachers["flops"], [r.run_id, *teachers["members"]],
                                     *tuned_seeds(r.budget)))
        if not measured:
            effect.status = "failed"
            effect.reason = "no finished runs (see the failed runs below)" if study.failed else "no runs in this design"
            judge(effect)
            continue
        for setting, losses, flops, run_ids, reference_losses, reference_runs in measured:
            reference = (_grid(rows, setting.size, setting.budget, standard=True) if intervention.reference == "standard"
                         else _grid(rows, setting.size, setting.budget))
            matched = _matched(reference, flops)
            same = by_id.get(reference_runs[0]) if reference_runs else None
            effect.points.append({
                "size": setting.size, "budget": setting.budget, "unique_tokens": setting.unique_tokens,
                "params": setting.params, "epochs": setting.epochs, "loss": float(np.mean(losses)), "losses": losses,
                "flops": flops, "runs": run_ids, "reference_losses": reference_losses, "reference_runs": reference_runs,
                "matched_compute_loss": matched.loss if matched else None, "matched_compute_run": matched.run_id if matched else None,
                "same_setting_loss": float(np.mean(reference_losses)) if reference_losses else None,
                "cost": flops / same.flops if same and same.flops else None,
            })
            effect.runs += run_ids
        deltas = [p["loss"] - p["matched_compute_loss"] for p in effect.points if p["matched_compute_loss"] is not None]
        costs = [p["cost"] for p in effect.points if p["cost"]]
        effect.delta_compute = float(np.mean(deltas)) if deltas else None
        effect.cost = float(np.mean(costs)) if costs else None
        effect.runs = list(dict.fromkeys(effect.runs))
        effect.test = paired_test(effect.points, sd, df)
        effect.delta_data = effect.test["difference"] if effect.test else None
        judge(effect)
    return effects


def placebo_points(study: StudyRuns) -> list[dict]:
    """The calibration: at each tuned setting, its last seed treated as an "intervention" and the others as
    its reference. There is no effect by construction, so a correct estimator gives k ≈ 1."""
    by_id = {r.run_id: r for r in study.rows}
    points = []
    for e in study.ensembles:
        if len(e["member_losses"]) >= 2 and all(v is not None for v in e["member_losses"]):
            seeds = list(zip(e["member_losses"], e["members"]))
            fresh = [s for s in seeds if by_id[s[1]].part == "member"]
            seeds = fresh if len(fresh) >= 2 else seeds  # the selected grid run only when there is no other
            row = by_id[seeds[-1][1]]
            points.append({"params": row.params, "unique_tokens": row.unique_tokens, "epochs": row.epochs,
                           "losses": [seeds[-1][0]], "reference_losses": [loss for loss, _ in seeds[:-1]],
                           "runs": [m for _, m in seeds]})
    return points


def calibration(study: StudyRuns, law, seed: int = 0) -> dict | None:
    """The placebo's test and k (with the tuned recipe's law), printed in every report."""
    points = placebo_points(study)
    test = paired_test(points, *pooled_sd(seed_groups(study.ensembles)))
    if test is None:
        return None
    return {"test": test, "verdict": verdict_of(test), "points": len(points),
            "multiplier": multiplier(law, points, test, seed=seed) if law is not None else None}


def reference_law(rows: Sequence[Row], recipe: str, size: str, laws: dict, bootstrap: int):
    """The law an effect's k is read from: the recipe's fitted data-constrained law, or, when that could not
    be fitted, a power law in U over the recipe's best loss per budget at `size` (returns (law, label) or
    (None, why))."""
    from scarce.errors import ScarceError
    from scarce.laws import PowerLaw
    from scarce.laws.fit import fit_law

    if laws.get(recipe) is not None:
        return laws[recipe], "data-constrained law"
    best: dict[int, Row] = {}
    for r in rows:
        if r.part == "grid" and r.size == size and r.loss is not None and \
                (recipe == "tuned" or r.weight_decay == STANDARD_WEIGHT_DECAY):
            if r.budget not in best or r.loss < best[r.budget].loss:
                best[r.budget] = r
    try:
        law = fit_law(PowerLaw(variable="U"), {"U": [r.unique_tokens for r in best.values()]},
                      [r.loss for r in best.values()], bootstrap=bootstrap)
    except ScarceError as err:
        return None, f"no law in U could be fitted ({err})"
    return law, f"power law in U at {size}"


def estimate_multiplier(effect: Effect, law, label: str) -> None:
    """k and its interval from the paired difference and the reference law's slope (`multiplier`)."""
    if law is None:
        effect.multiplier_reason = label
    elif effect.test is None:
        effect.multiplier_reason = "no paired difference (no reference seeds at its settings)"
    else:
        effect.multiplier = {**multiplier(law, effect.points, effect.test), "law": label}


def judge(effect: Effect) -> None:
    """The verdict: one paired t-test decides gain, loss or not distinguishable (`paired_test`)."""
    if effect.status != "measured":
        effect.verdict, effect.verdict_reason = effect.status, effect.reason or ""
        return
    test = effect.test
    effect.verdict = verdict_of(test)
    if test is None:
        effect.verdict_reason = "no seed replicates of the reference finished, so its noise is unknown"
        return
    low, high = test["interval"]
    effect.verdict_reason = (f"mean paired loss change {test['difference']:+.4f} ± {test['se']:.4f} (SE), t = "
                             f"{test['t']:+.2f} against ±{test['critical']:.2f} (t, {test['df']} df, pooled seed SD "
                             f"{test['sd']:.4f}); {test['level']:.0%} interval [{low:+.4f}, {high:+.4f}]")
