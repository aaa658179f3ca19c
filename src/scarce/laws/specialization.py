"""Specialization laws per domain, and the compute split between general pretraining and specialists.

`fit_domains` fits and compares laws of (N, D, D_spec) per domain (scarce.laws.compare: fit RMSE,
leave-one-out and extrapolation to the largest N, bootstrap intervals); `plan_specialization` picks N, D
and each D'_i minimizing the weighted mean predicted domain loss under a FLOP budget, for four strategies:

    shared       one general model, copied per domain:   C = 6·N·(D + Σ D'_i)  (D'_i = 0 allowed)
    independent  a general model per specialist:         C = 6·N·Σ (D_i + D'_i)
    general      the general model only (D'_i = 0):      C = 6·N·D
    domain       each domain from scratch (D = 0):       C = 6·N·Σ D'_i

Unique data is capped: the general mixture has Σ U_i unique tokens and domain i has U_i. With repetition
allowed, tokens past a cap count as Muennighoff et al.'s effective data (2023, arXiv 2305.16264):
U + U·R*·(1 − exp(−(tokens/U − 1)/R*)), R* = 15.4, and the plan says which phase repeats and how often;
without it, no phase may exceed its cap.

A law is trusted only where it was fitted (`fitted_minimum`, from `scarce plan specialize`: each domain's
smallest fitted D and D'): a specialist gets at least the smallest D' of its fit (below it the re-warmed
learning rate can raise the loss, which no form expresses), and a domain is predicted at D' = 0 (left to
the general model) or D = 0 (domain-only) only when its law was fitted on such points. `fit_domains` fits
the specialist points only (D' > 0, where both forms are defined), so with its fit the general and domain
strategies, and a shared plan that leaves a domain without a specialist, are outside the fit and get no
prediction; a law fitted on the general models' D' = 0 points too (`scarce fit` of the transfer form on
the points CSV) plans them. Without `fitted_minimum` every D' down to one step and both zeros are allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from scarce.errors import ScarceError
from scarce.laws.compare import compare_laws
from scarce.laws.derived import asymptote
from scarce.laws.forms import Law, law_from_dict
from scarce.laws.io import fit_to_json
from scarce.laws.plan import FLOPS_PER_PARAM_TOKEN

SCHEMA = "scarce.specialize-fit/1"
COLUMNS = {"N": "params", "D": "general_tokens", "D_spec": "domain_tokens"}
R_STAR_TOKENS = 15.4  # Muennighoff et al. 2023's fitted R*_D
STRATEGIES = ("shared", "independent", "general", "domain")
# extrapolation targets of the law comparison: fit on the other points, predict these
HOLDOUTS = {"N": "largest N", "D": "largest D", "D_spec": "largest D'", "tokens": "largest D + D'"}
NO_TOKENS = 1e-300  # "D = 0" for forms that take logarithms of D: κ·D^η vanishes (η > 0)

# the model sizes the allocation searches (log params), unless a smallest model is given
LOG_PARAMS_RANGE = (math.log(1e3), math.log(1e15))

# ---------------------------------------------------------------- fitting


def fit_domains(points: Sequence, laws: Sequence[Law], *, bootstrap: int = 0, holdout: str = "N", seed: int = 0,
                source: str = "points", tokens_per_step: int | None = None,
                unique_tokens: Mapping[str, int] | None = None) -> dict:
    """Fit and compare `laws` on each domain's specialist points (D' > 0: the forms all take D' there),
    returning the `scarce.specialize-fit/1` document (see docs/specialization.md).

    holdout: which points the extrapolation score predicts from a fit on the others (HOLDOUTS): those of
    the largest N, D or D', or of the largest D + D' ("tokens")."""
    if holdout not in HOLDOUTS:
        raise ScarceError(f"--holdout {holdout!r}: choose one of {', '.join(HOLDOUTS)}")
    domains = sorted({p.domain for p in points})
    if not domains:
        raise ScarceError(f"{source}: no points to fit")
    out = {"schema": SCHEMA, "points": source, "tokens_per_step": tokens_per_step, "holdout": holdout,
           "unique_tokens": dict(unique_tokens or {}), "domains": {}}
    for domain in domains:
        mine = [p for p in points if p.domain == domain and p.domain_tokens > 0]
        x = {"N": np.array([p.params for p in mine], float), "D": np.array([p.general_tokens for p in mine], float),
             "D_spec": np.array([p.domain_tokens for p in mine], float)}
        y = np.array([p.loss for p in mine], float)
        by = x["D"] + x["D_spec"] if holdout == "tokens" else x[holdout]
        try:
            rows = compare_laws(laws, x, y, holdout=HOLDOUTS[holdout], held=by == by.max(), bootstrap=bootstrap,
                                seed=seed)
        except ScarceError as e:  # too few points for this domain: say so, fit the others
            out["domains"][domain] = {"n_points": len(mine), "error": str(e)}
            continue
        best = min(rows, key=lambda r: (r.extrapolation_rmse_log if r.extrapolation_rmse_log is not None
                                        else r.loo_rmse_log, r.loo_rmse_log))
        out["domains"][domain] = {
            "n_points": len(mine),
            "domain_tokens_fitted": [float(x["D_spec"].min()), float(x["D_spec"].max())],
            "general_tokens_fitted": [float(x["D"].min()), float(x["D"].max())],
            "chosen": best.law,
            "comparison": [r.to_dict() for r in rows],
            "fits": [fit_to_json(r.fitted, columns={v: COLUMNS.get(v, v) for v in r.fitted.variables}, y_column="loss",
                                 source=f"{source} (domain {domain})", derived={"asymptote": asymptote(r.fitted)})
                     for r in rows],
        }
    return out


def fitted_laws(document: Mapping, law: str | None = None) -> dict[str, Law]:
    """Each domain's fitted law from a `scarce.specialize-fit/1` document: `law` by name, else the one the
    comparison chose (lowest extrapolation error)."""
    if document.get("schema") != SCHEMA:
        raise ScarceError(f"expected a fit with schema {SCHEMA!r} (from `scarce specialize --fit`), "
                          f"found {document.get('schema')!r}")
    laws = {}
    for domain, entry in document["domains"].items():
        if "error" in entry:  # planning for it is an error naming this (plan_specialization: unknown domain)
            continue
        name = law or entry["chosen"]
        fit = next((f for f in entry["fits"] if f["law"]["name"] == name), None)
        if fit is None:
            raise ScarceError(f"domain {domain!r} has no fit of law {name!r}; it has "
                              f"{', '.join(f['law']['name'] for f in entry['fits'])}")
        built = law_from_dict(fit["law"]["spec"])
        built.params_ = {k: float(v["value"]) for k, v in fit["parameters"].items()}
        laws[domain] = built
    return laws


# ---------------------------------------------------------------- planning


def effective_tokens(tokens: float, unique: float | None) -> float:
    """Tokens past the unique cap are worth less each repetition (Muennighoff et al. 2023)."""
    if unique is None or tokens <= unique:
        return tokens
    return unique + unique * R_STAR_TOKENS * (1.0 - math.exp(-(tokens / unique - 1.0) / R_STAR_TOKENS))


def _loss(law: Law, params: float, general: float, domain: float) -> float:
    predict = lambda d: float(law.predict({"N": [params], "D": [d], "D_spec": [domain]})[0])
    try:
        value = predict(max(general, NO_TOKENS))
        # D = 0 stands in as a vanishing D: a form whose prediction still moves there has no D → 0 limit
        # (the additive form's B/D^β grows without bound), so it cannot predict a domain-only model
        if general < NO_TOKENS and not math.isclose(value, predict(math.sqrt(NO_TOKENS)), rel_tol=1e-9):
            return math.inf
    except ScarceError:  # a form that cannot take this point (the additive form at D' = 0)
        return math.inf
    return value if np.isfinite(value) else math.inf


def plan_specialization(laws: Mapping[str, Law], flops: float, unique_tokens: Mapping[str, float],
                        weights: Mapping[str, float] | None = None, *, repeat: bool = True,
                        tokens_per_step: int = 1, min_params: float | None = None,
                        params: float | None = None, fitted_minimum: Mapping[str, Mapping[str, float]] | None = None,
                        ) -> dict[str, dict]:
    """The best allocation of `flops` for every strategy (see the module docstring), as JSON-ready dicts:
    {"params", "general_tokens", "domain_tokens": {name: D'}, "flops", "predicted_loss": {name, "mean"},
    "repetition": {phase: epochs}} (a strategy the law cannot predict has "predicted_loss": null).

    unique_tokens: every planned domain's cap U_i (the domains planned). weights: of the mean (default
    equal; must sum to a positive number). Each phase a strategy uses gets at least one optimizer step of
    `tokens_per_step` tokens; with `fitted_minimum` ({domain: {"D": smallest fitted D, "D_spec": smallest
    fitted D'}}) a specialist of domain i gets at least its smallest fitted D', and a plan that predicts a
    domain at D' = 0 or D = 0 below what its law was fitted on gets no prediction (see the module); models range
    from `min_params` (default 1e3) up, or have exactly `params` (planning the tokens for a model size one
    can train). The shared plan's "specialists" names the domains that get one: starting from all, a
    domain is left to the general model while that lowers the predicted mean (greedy backward elimination;
    with two domains it tries every non-empty subset, the empty one being the general strategy).
    """
    if not flops > 0:
        raise ScarceError(f"--flops must be > 0, got {flops!r}")
    names = list(unique_tokens)
    if not names:
        raise ScarceError("name at least one domain to plan for: --domain-tokens NAME=UNIQUE_TOKENS")
    for name in names:
        if name not in laws:
            raise ScarceError(f"unknown domain {name!r}: the fit has laws for domains {', '.join(laws) or 'none'}")
        if not unique_tokens[name] > 0:
            raise ScarceError(f"--domain-tokens {name}={unique_tokens[name]}: unique tokens must be > 0")
    weights = dict(weights or {name: 1.0 for name in names})
    for name in weights:
        if name not in names:
            raise ScarceError(f"--weights names {name!r}, which is not among the planned domains ({', '.join(names)})")
    if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise ScarceError(f"--weights must be >= 0 and sum to a positive number, got {weights}")
    total = sum(weights.values())
    weights = {name: weights.get(name, 0.0) / total for name in names}
    if params is not None and not params > 0:
        raise ScarceError(f"--params must be > 0, got {params!r}")
    low = math.log(params or min_params or math.exp(LOG_PARAMS_RANGE[0]))
    smallest = FLOPS_PER_PARAM_TOKEN * math.exp(low) * tokens_per_step
    if flops < smallest:
        raise ScarceError(f"--flops {flops:.3g} is below one optimizer step of the smallest model "
                          f"(6 × {math.exp(low):.3g} params × {tokens_per_step} tokens = {smallest:.3g})")
    fitted = {name: (fitted_minimum or {}).get(name, {}) for name in names}
    floors = {name: max(tokens_per_step, fitted[name].get("D_spec", 0.0)) for name in names}
    plan = lambda strategy, specialists=names: _plan(strategy, laws, flops, unique_tokens, weights, repeat,
                                                    tokens_per_step, low, floors, specialists, fitted,
                                                    fixed=params is not None)
    plans = {strategy: plan(strategy) for strategy in STRATEGIES}
    shared = plans["shared"]
    while len(shared["specialists"]) > 1:  # leave a domain to the general model while that helps
        fewer = [plan("shared", [n for n in shared["specialists"] if n != dropped]) for dropped in shared["specialists"]]
        best = min(fewer, key=_mean_loss)
        if _mean_loss(best) >= _mean_loss(shared):
            break
        shared = best
    plans["shared"] = shared
    return plans


def _mean_loss(plan: dict) -> float:
    return plan["predicted_loss"]["mean"] if plan["predicted_loss"] else math.inf


def _phases(strategy: str, names: list[str], specialists: list[str]) -> list[tuple[str, str | None]]:
    """The token phases a strategy spends compute on: (kind, domain) with kind general or domain."""
    if strategy == "shared":
        return [("general", None)] + [("domain", n) for n in specialists]
    if strategy == "independent":
        return [(kind, n) for n in names for kind in ("general", "domain")]
    if strategy == "general":
        return [("general", None)]
    return [("domain", n) for n in names]


def _phase_name(kind: str, domain: str | None) -> str:
    if kind == "domain":
        return domain
    return "general" if domain is None else f"general:{domain}"


def _outside_fit(fitted: Mapping[str, float], general: float, domain: float) -> str | None:
    """Which zero a prediction at (D, D') needs that its law was not fitted on, or None."""
    for value, key, what in ((domain, "D_spec", "D' = 0"), (general, "D", "D = 0")):
        if value == 0 and fitted.get(key, 0.0) > 0:
            return f"{what} (fitted from {key} = {fitted[key]:.3g})"
    return None


def _plan(strategy, laws, flops, unique, weights, repeat, tokens_per_step, low, floors, specialists, fitted,
          fixed=False) -> dict:
    names = list(unique)
    phases = _phases(strategy, names, specialists)
    caps = [(sum(unique.values()) if kind == "general" else unique[n]) for kind, n in phases]
    least = [tokens_per_step if kind == "general" else floors[n] for kind, n in phases]

    def allocate(z):
        """Tokens per phase from (log N, share logits): every phase at least its floor (one step; a
        specialist's fitted minimum), capped without repetition. With a fixed size, z holds the share
        logits alone."""
        if fixed:
            z = np.concatenate([[low], z])
        params = math.exp(z[0])
        # a hair under the budget, so rounding never takes the plan's FLOPs past it
        budget = flops * (1 - 1e-12) / (FLOPS_PER_PARAM_TOKEN * params) - sum(least)
        if not repeat and any(floor > cap for floor, cap in zip(least, caps)):
            budget = -1.0  # a specialist's minimum exceeds its unique data: infeasible without repetition
        shares = np.exp(z[1:] - np.max(z[1:]))
        tokens = [floor + budget * s / shares.sum() for floor, s in zip(least, shares)]
        if not repeat:
            tokens = [min(t, c) for t, c in zip(tokens, caps)]
        return params, tokens, budget

    def losses(params, tokens, outside=None):
        general, domain = {}, {}
        for (kind, n), t, cap in zip(phases, tokens, caps):
            (general if kind == "general" else domain)[n] = effective_tokens(t, cap)
        out = {}
        for n in names:
            d, d_spec = general.get(n, general.get(None, 0.0)), domain.get(n, 0.0)
            where = _outside_fit(fitted[n], d, d_spec)
            if where and outside is not None:
                outside[n] = where
            out[n] = math.inf if where else _loss(laws[n], params, d, d_spec)
        return out

    def objective(z):
        params, tokens, budget = allocate(z)
        if budget < 0:
            return 1e6 * (1 - budget)  # not even one step per phase: push the size down
        values = losses(params, tokens)
        mean = sum(weights[n] * values[n] for n in names if weights[n] > 0)
        return mean if np.isfinite(mean) else 1e6

    high = math.log(flops / (FLOPS_PER_PARAM_TOKEN * sum(least)))
    best = None
    for log_params in [low] if fixed else np.linspace(low, max(low, high), 5):
        start = np.zeros(len(phases)) if fixed else np.concatenate([[log_params], np.zeros(len(phases))])
        result = minimize(objective, start, method="Nelder-Mead",
                          options={"maxiter": 2000, "xatol": 1e-5, "fatol": 1e-10})
        if best is None or result.fun < best.fun:
            best = result
    params, tokens, budget = allocate(best.x)
    outside = {}
    values = losses(params, tokens, outside)
    mean = sum(weights[n] * values[n] for n in names if weights[n] > 0)
    general = [t for (kind, _), t in zip(phases, tokens) if kind == "general"]
    plan = {
        "strategy": strategy,
        "params": params,
        "general_tokens": (general[0] if strategy == "shared" or strategy == "general" else
                           {n: t for (kind, n), t in zip(phases, tokens) if kind == "general"}) if general else 0.0,
        "domain_tokens": {n: next((t for (kind, m), t in zip(phases, tokens) if kind == "domain" and m == n), 0.0)
                          for n in names},
        "specialists": [n for kind, n in phases if kind == "domain"],
        "flops": FLOPS_PER_PARAM_TOKEN * params * sum(tokens),
        # a domain of weight 0 may be unpredictable (null) in a plan whose mean is
        "predicted_loss": {**{n: v if math.isfinite(v) else None for n, v in values.items()}, "mean": mean}
        if budget >= 0 and np.isfinite(mean) else None,
        "repetition": {_phase_name(kind, n): t / cap for (kind, n), t, cap in zip(phases, tokens, caps) if t > cap},
    }
    if budget < 0:
        plan["note"] = ("the budget cannot give every phase its minimum (one optimizer step; a specialist the "
                        "smallest D' its law was fitted on)")
    elif outside:
        plan["note"] = ("outside the fitted range: " + ", ".join(f"{n} at {w}" for n, w in outside.items()) +
                        "; fit the general models' D' = 0 points too, or plan --beyond-fit")
    elif plan["predicted_loss"] is None:
        plan["note"] = "the fitted law cannot predict this strategy (e.g. the additive form at D' = 0 or D = 0)"
    return plan


# ---------------------------------------------------------------- the picture


def plot_domains(document: Mapping, points: Sequence, path) -> object:
    """Observed against predicted loss, one panel per domain, one colour per law (its fit on all points)."""
    import matplotlib.pyplot as plt

    from scarce.report import save_figure  # first: it selects matplotlib's file-only backend

    domains = [d for d, entry in document["domains"].items() if "error" not in entry]
    if not domains:
        return None
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        mine = [p for p in points if p.domain == domain and p.domain_tokens > 0]
        x = {"N": [p.params for p in mine], "D": [p.general_tokens for p in mine], "D_spec": [p.domain_tokens for p in mine]}
        observed = np.array([p.loss for p in mine])
        for i, fit in enumerate(document["domains"][domain]["fits"]):
            law = fitted_laws({**document, "domains": {domain: document["domains"][domain]}}, fit["law"]["name"])[domain]
            ax.scatter(law.predict(x), observed, s=16, color=f"C{i}", label=f"{law.name} (RMSE log {fit['fit']['rmse_log']:.3g})")
        ends = [observed.min() * 0.98, observed.max() * 1.02]
        ax.plot(ends, ends, color="grey", lw=1)
        ax.set_title(f"{domain}: {len(mine)} specialists", fontsize=9)
        ax.set_xlabel("predicted loss (nats/token)")
        ax.set_ylabel("observed loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
