"""Data-constrained laws fitted to the study's runs, the form picked by held-out error, and each recipe's
predicted best (N, epochs) and loss at the user's U and C."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scarce.config import RunConfig
from scarce.errors import ScarceError
from scarce.studies.study.design import Inputs
from scarce.studies.study.estimates import Effect, law_points
from scarce.studies.study.interventions import STANDARD_WEIGHT_DECAY
from scarce.studies.study.running import Row

MUENNIGHOFF_R_STAR_D = 15.4  # Muennighoff et al. 2023's fitted repetition constant

def law_candidates() -> dict[str, Any]:
    from scarce.laws import DataConstrained

    return {"data-constrained (R*_D fitted)": DataConstrained(),
            f"data-constrained (R*_D = {MUENNIGHOFF_R_STAR_D}, Muennighoff et al.)":
                DataConstrained(fixed={"R_star_D": MUENNIGHOFF_R_STAR_D})}


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


def fit_laws(rows: Sequence[Row], comparison: dict, bootstrap: int) -> tuple[dict, dict]:
    """The chosen form fitted to the standard and the tuned recipe (with bootstrap fits), and why a recipe
    could not be fitted."""
    laws, problems = {}, dict(comparison["problems"])
    if comparison["chosen"] is None:
        problems.setdefault("laws", "no recipe had enough runs to fit a data-constrained law")
        return laws, problems
    template = law_candidates()[comparison["chosen"]]
    for recipe in ("standard", "tuned"):
        try:
            laws[recipe] = fit_recipe(rows, recipe, template, bootstrap)
        except ScarceError as err:
            problems[recipe] = str(err)
    return laws, problems


def extrapolate(rows: Sequence[Row], effects: Sequence[Effect], inputs: Inputs, base: RunConfig,
                comparison: dict, laws: dict, problems: dict) -> dict:
    """The laws, and each recipe's predicted best (N, epochs) and loss at the user's U and C.

    Recipes: the standard one and the tuned one, each with its own law; every other measured intervention
    is the tuned law with U scaled by its multiplier k and its compute divided by its cost."""
    out: dict[str, Any] = {"comparison": comparison, "laws": {}, "recipes": [], "problems": dict(problems),
                           "best": None}
    for recipe, law in laws.items():
        intervals = getattr(law, "intervals_", None) or {}
        out["laws"][recipe] = {
            "form": comparison["chosen"], "formula": law.formula, "runs": law_points(rows, recipe)[2],
            "parameters": {n: {"value": _number(law.params_[n]),
                               "interval": [_number(v) for v in intervals[n]] if n in intervals else None}
                           for n in law.param_names},
            "unidentified": list(law.unidentified_ or []), "rmse_log": law.report_.rmse_log,
            "n_points": law.report_.n_points,
        }
    if not laws:
        return out
    by_name = {e.name: e for e in effects}
    plans = [("standard", "standard", 1.0, [], 1.0, True)]
    tuned = by_name.get("tuned")
    plans.append(("tuned", "tuned", 1.0, [], 1.0, tuned is not None and tuned.verdict == "gain"))
    for e in effects:
        if e.status == "measured" and e.name != "tuned" and e.multiplier:
            plans.append((e.name, "tuned", e.multiplier["capped"], e.multiplier["samples"], e.cost or 1.0,
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
