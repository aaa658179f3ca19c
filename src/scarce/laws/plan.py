"""Allocating a compute budget with a fitted law: compute-optimal N and D under C = 6·N·D, and the best
(N, epochs) when unique data is capped (data-constrained law)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar

from scarce.errors import ScarceError
from scarce.laws.derived import Estimate, bootstrap_draws, from_samples, interval_level
from scarce.laws.forms import Chinchilla, DataConstrained, Law

FLOPS_PER_PARAM_TOKEN = 6.0
# The numerical search over log N: a window of this many decades around a starting size, moved outward
# while the best size lies on its edge (the loss along a budget is unimodal in N for these forms).
SEARCH_DECADES = 12.0
MAX_WINDOW_MOVES = 25


def _chinchilla_optimum(p: Mapping[str, float], flops: float) -> tuple[float, float]:
    """Closed form (Hoffmann et al., Approach 3): N = G·(C/6)^(β/(α+β)), G = (αA/(βB))^(1/(α+β))."""
    a, b = p["alpha"], p["beta"]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
        params = g * (flops / FLOPS_PER_PARAM_TOKEN) ** (b / (a + b))
    if not (np.isfinite(params) and params > 0):
        raise Degenerate(f"α = {a:.3g}, β = {b:.3g}: the loss does not trade params against tokens")
    return params, flops / (FLOPS_PER_PARAM_TOKEN * params)


class Degenerate(ScarceError):
    """Parameters for which no best allocation exists (a flat params or data term)."""


def _start_params(law: Law, p: Mapping[str, float], flops: float) -> float:
    """Where the search starts: the Chinchilla closed form for the law's A, α, B, β (close to the optimum of
    these forms), else the middle of the fitted data's N. Units are the user's (params or billions)."""
    try:
        return _chinchilla_optimum(p, flops)[0]
    except (Degenerate, KeyError):
        pass
    data = getattr(law, "x_", {}).get("N")
    return float(np.exp(np.mean(np.log(data)))) if data is not None else 1.0


def _search_params(loss_at_log_params, start_params: float) -> float:
    """The model size minimizing loss along the budget: a log grid over SEARCH_DECADES around the start,
    moved outward while the best point is on its edge, then a bounded 1-D search around the best."""
    half = SEARCH_DECADES / 2 * np.log(10)
    center = np.log(start_params)
    for _ in range(MAX_WINDOW_MOVES):
        grid = np.linspace(center - half, center + half, 241)
        losses = np.array([loss_at_log_params(g) for g in grid])
        if not np.isfinite(losses).any():
            raise Degenerate("the law gives no finite loss along the budget")
        i = int(np.nanargmin(losses))
        if 0 < i < len(grid) - 1:
            break
        center = grid[i]  # on the edge: the optimum lies further out
    else:
        raise Degenerate(f"the loss keeps falling towards N = {np.exp(grid[i]):.3g}: no best model size")
    res = minimize_scalar(loss_at_log_params, bounds=(grid[i - 1], grid[i + 1]), method="bounded",
                          options={"xatol": 1e-6})
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

        params = _search_params(at, _start_params(law, p, flops))
        tokens = flops / (FLOPS_PER_PARAM_TOKEN * params)
        seen = min(unique_tokens, tokens)
        return {"params": params, "tokens": tokens, "epochs": tokens / seen, "loss": at(np.log(params))}
    if set(law.variables) == {"N", "D"}:
        def at(log_params):
            params = np.exp(log_params)
            return float(law.predict({"N": [params], "D": [flops / (FLOPS_PER_PARAM_TOKEN * params)]}, p)[0])

        params = _search_params(at, _start_params(law, p, flops))
        return {"params": params, "tokens": flops / (FLOPS_PER_PARAM_TOKEN * params), "loss": at(np.log(params))}
    raise ScarceError(f"cannot plan with law {law.name!r}: planning needs params N and tokens D "
                      f"(chinchilla, softq) or data_constrained")


def plan(law: Law, flops: float, unique_tokens: float | None = None) -> dict[str, Estimate]:
    """Best allocation of `flops` training FLOPs (C = 6·N·D) under a fitted law, with bootstrap intervals.

    chinchilla and other (N, D) laws: compute-optimal params N and tokens D (closed form for chinchilla).
    data_constrained: needs `unique_tokens`; returns the best params N, total tokens, and epochs over the
    unique data (the model may see fewer than all unique tokens when the budget is small). Only
    data_constrained models repeated data, so only it takes a unique-token cap.
    Returns {"params", "tokens", ["epochs"], "loss"} as Estimates. A bootstrap draw with no best allocation
    (e.g. α = 0: the params term is flat) is left out of the intervals and counted in `dropped`."""
    if not flops > 0:
        raise ScarceError(f"flops must be > 0, got {flops!r}")
    if isinstance(law, DataConstrained):
        if not (unique_tokens and unique_tokens > 0):
            raise ScarceError("data_constrained planning needs the unique-token cap (unique_tokens > 0)")
    elif unique_tokens is not None:
        raise ScarceError(f"{law.name} does not model repeated data, so it cannot plan under a unique-token cap; "
                          f"fit data_constrained (N, U, epochs) to plan with unique_tokens, or leave the cap out")
    p = law._require_fitted()
    try:
        point = _allocation(law, p, flops, unique_tokens)
    except Degenerate as err:
        raise ScarceError(f"{law.name}: no best allocation for the fitted parameters: {err}") from None
    draws = []
    for row in bootstrap_draws(law):
        try:
            draws.append(_allocation(law, dict(zip(law.param_names, row)), flops, unique_tokens))
        except ScarceError:  # Degenerate, or a search that ran off every representable size
            draws.append(dict.fromkeys(point, np.nan))
    return {k: from_samples(v, np.array([d[k] for d in draws]), interval_level(law)) for k, v in point.items()}
