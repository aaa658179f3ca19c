"""Allocating a compute budget with a fitted law: compute-optimal N and D under C = 6·N·D, and the best
(N, epochs) when unique data is capped (data-constrained law)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy.optimize import minimize_scalar

from scarce.errors import ScarceError
from scarce.laws.derived import Estimate, _from_samples
from scarce.laws.forms import Chinchilla, DataConstrained, Law

FLOPS_PER_PARAM_TOKEN = 6.0
# Model sizes searched when no closed form exists: 1e3 .. 1e15 params covers any budget in practice.
LOG_PARAMS_RANGE = (np.log(1e3), np.log(1e15))


def _chinchilla_optimum(p: Mapping[str, float], flops: float) -> tuple[float, float]:
    """Closed form (Hoffmann et al., Approach 3): N = G·(C/6)^(β/(α+β)), G = (αA/(βB))^(1/(α+β))."""
    a, b = p["alpha"], p["beta"]
    g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
    params = g * (flops / FLOPS_PER_PARAM_TOKEN) ** (b / (a + b))
    return params, flops / (FLOPS_PER_PARAM_TOKEN * params)


def _search_params(loss_at_log_params, flops: float) -> float:
    """The model size minimizing loss along the budget: a coarse log grid, then a bounded 1-D search."""
    grid = np.linspace(*LOG_PARAMS_RANGE, 241)
    losses = np.array([loss_at_log_params(g) for g in grid])
    i = int(np.nanargmin(losses))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(loss_at_log_params, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _allocation(law: Law, p: Mapping[str, float], flops: float, unique_tokens: float | None) -> dict[str, float]:
    if isinstance(law, Chinchilla):
        params, tokens = _chinchilla_optimum(p, flops)
        return {"params": params, "tokens": tokens,
                "loss": float(law.predict({"N": [params], "D": [tokens]}, p)[0])}
    if isinstance(law, DataConstrained):
        if law.unique_params:
            raise ScarceError("planning with unique params (U_N) is not supported; fit data_constrained "
                              "without --unique-params to plan")

        def at(log_params):
            params = np.exp(log_params)
            tokens = flops / (FLOPS_PER_PARAM_TOKEN * params)
            seen = min(unique_tokens, tokens)
            return float(law.predict({"N": [params], "U": [seen], "epochs": [tokens / seen]}, p)[0])

        params = _search_params(at, flops)
        tokens = flops / (FLOPS_PER_PARAM_TOKEN * params)
        seen = min(unique_tokens, tokens)
        return {"params": params, "tokens": tokens, "epochs": tokens / seen, "loss": at(np.log(params))}
    if set(law.variables) == {"N", "D"}:
        def at(log_params):
            params = np.exp(log_params)
            return float(law.predict({"N": [params], "D": [flops / (FLOPS_PER_PARAM_TOKEN * params)]}, p)[0])

        params = _search_params(at, flops)
        return {"params": params, "tokens": flops / (FLOPS_PER_PARAM_TOKEN * params), "loss": at(np.log(params))}
    raise ScarceError(f"cannot plan with law {law.name!r}: planning needs params N and tokens D "
                      f"(chinchilla, softq) or data_constrained")


def plan(law: Law, flops: float, unique_tokens: float | None = None) -> dict[str, Estimate]:
    """Best allocation of `flops` training FLOPs (C = 6·N·D) under a fitted law, with bootstrap intervals.

    chinchilla and other (N, D) laws: compute-optimal params N and tokens D (closed form for chinchilla).
    data_constrained: needs `unique_tokens`; returns the best params N, total tokens, and epochs over the
    unique data (the model may see fewer than all unique tokens when the budget is small).
    Returns {"params", "tokens", ["epochs"], "loss"} as Estimates."""
    if not flops > 0:
        raise ScarceError(f"flops must be > 0, got {flops!r}")
    if isinstance(law, DataConstrained) and not (unique_tokens and unique_tokens > 0):
        raise ScarceError("data_constrained planning needs the unique-token cap (unique_tokens > 0)")
    p = law._require_fitted()
    point = _allocation(law, p, flops, unique_tokens)
    draws = [_allocation(law, dict(zip(law.param_names, row)), flops, unique_tokens)
             for row in law.bootstrap_params_]
    return {k: _from_samples(v, np.array([d[k] for d in draws]), law.interval_level_) for k, v in point.items()}
