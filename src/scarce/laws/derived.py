"""Quantities derived from fitted laws, each with a bootstrap interval: asymptotes (single and tiered),
effective data and data efficiency (docs/methods.md §1), and the effective-data multiplier of an intervention
(docs/methods.md §2)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from scarce.errors import ScarceError
from scarce.laws.fit import Problem, fit_law, percentile_intervals, refit_rows
from scarce.laws.forms import Law, PowerLaw, WithDataMultiplier


@dataclass
class Estimate:
    """A number with its bootstrap interval (None without draws) and the resampled values behind it.

    Draws that are infinite (e.g. effective data for a loss below a draw's asymptote) stay in the
    percentiles, so an interval may end at ±inf; `dropped` counts draws that have no value at all (NaN: a
    degenerate draw, e.g. a plan for a draw whose params term is flat), which are left out."""

    value: float
    interval: tuple[float, float] | None = None
    samples: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    dropped: int = 0

    def to_dict(self) -> dict:
        out = {"value": _json_float(self.value),
               "interval": None if self.interval is None else [_json_float(v) for v in self.interval]}
        if self.dropped:
            out["dropped_draws"] = self.dropped
        return out

    def __str__(self) -> str:
        if self.interval is None:
            return f"{self.value:.6g}"
        return f"{self.value:.6g} [{self.interval[0]:.6g}, {self.interval[1]:.6g}]"


def _json_float(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def bootstrap_draws(law: Law) -> np.ndarray:
    """The law's bootstrap draws (draws × parameters, natural units); none for a law whose parameters were
    set by hand (published values) or fitted without bootstrap."""
    draws = getattr(law, "bootstrap_params_", None)
    return np.empty((0, len(law.param_names))) if draws is None else draws


def interval_level(law: Law) -> float:
    return getattr(law, "interval_level_", 0.95)


def estimate(law: Law, quantity: Callable[[Mapping[str, float]], float], level: float | None = None) -> Estimate:
    """quantity(params) at the fitted parameters, with the percentile interval over the law's bootstrap
    (no interval when the law has no draws)."""
    value = float(quantity(law._require_fitted()))
    names = law.param_names
    samples = np.array([quantity(dict(zip(names, row))) for row in bootstrap_draws(law)], dtype=float)
    return from_samples(value, samples, level if level is not None else interval_level(law))


def from_samples(value: float, samples: np.ndarray, level: float) -> Estimate:
    """An Estimate whose interval is the percentile interval of the draws, infinite draws included."""
    samples = np.asarray(samples, dtype=float)
    usable = samples[~np.isnan(samples)]
    dropped = len(samples) - len(usable)
    if len(usable) == 0:
        return Estimate(value, None, samples, dropped)
    lo, hi = percentile_with_infinities(usable, [50 * (1 - level), 50 * (1 + level)])
    return Estimate(value, (lo, hi), samples, dropped)


def percentile_with_infinities(values: np.ndarray, percents) -> list[float]:
    """numpy's linear-interpolation percentiles, except that interpolating towards an infinite draw gives
    that infinity (numpy's arithmetic would give NaN for inf − inf)."""
    ordered = np.sort(values)
    out = []
    for q in percents:
        position = q / 100 * (len(ordered) - 1)
        below, above = ordered[int(np.floor(position))], ordered[int(np.ceil(position))]
        fraction = position - np.floor(position)
        if np.isfinite(below) and np.isfinite(above):
            out.append(float(below + (above - below) * fraction))
        else:
            out.append(float(below if fraction == 0 or below == above else (above if np.isfinite(below) else below)))
    return out


def asymptote(law: Law) -> Estimate:
    """The loss as every variable goes to infinity: E (every built-in form has one). When the data do not
    determine E (see `unidentified_`), its interval is E's whole range."""
    if "E" not in law.param_names:
        raise ScarceError(f"{law.name}: has no asymptote parameter 'E'")
    result = estimate(law, lambda p: p["E"])
    if "E" in getattr(law, "unidentified_", ()) and result.interval is not None:
        result.interval = law.intervals_["E"]
    return result


# ---- tiered asymptote -------------------------------------------------------------------------------


@dataclass
class TieredAsymptote:
    """Results of fitting one-variable laws level by level (docs/methods.md §1's joint asymptote).

    laws[level][group] is the PowerLaw fitted over `level` for the group (a tuple of the values of the
    remaining levels and `by` columns, in `group_columns[level]` order); asymptotes[level][group] is its E.
    With no `by` columns the last level has a single group `()`: its E is the joint asymptote, and if the
    last level is unique tokens D its law is the data law over per-D asymptotes."""

    levels: tuple[str, ...]
    group_columns: dict[str, tuple[str, ...]]
    laws: dict[str, dict[tuple, PowerLaw]]
    asymptotes: dict[str, dict[tuple, Estimate]]

    @property
    def final(self) -> dict[tuple, Estimate]:
        return self.asymptotes[self.levels[-1]]


def tiered_asymptote(x: Mapping[str, Sequence[float]], y, levels: Sequence[str] = ("K", "N"),
                     by: Sequence[str] = (), *, loss: str = "mse", bootstrap: int = 0, level: float = 0.95,
                     seed: int = 0) -> TieredAsymptote:
    """For each group of the other levels fit L = E + A·v^(−α) over the first level v and keep E; then
    fit those E over the next level, and so on. E.g. levels=("K", "N"): per N the ensemble law over K,
    then the N-law over the per-N asymptotes; levels=("K", "N", "D") adds the data law over D.

    The default loss is least squares on raw loss, as Kim et al. fit these laws. Intervals: the first
    level bootstraps its points; each later level is refit to every bootstrap draw of the level below
    (warm-started), so uncertainty propagates up the tiers."""
    columns = tuple(levels) + tuple(by)
    missing = [c for c in columns if c not in x]
    if missing:
        raise ScarceError(f"tiered asymptote: x is missing column(s) {', '.join(missing)}")
    table = {c: np.asarray(x[c], dtype=float) for c in columns}
    values = np.asarray(y, dtype=float)
    samples = None  # (rows, resamples) once the first level has bootstrapped
    laws, asymptotes, group_columns = {}, {}, {}
    for depth, var in enumerate(levels):
        rest = tuple(levels[depth + 1:]) + tuple(by)
        group_columns[var] = rest
        keys = list(zip(*(table[c] for c in rest))) if rest else [()] * len(values)
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(tuple(float(k) for k in key), []).append(i)
        laws[var], asymptotes[var] = {}, {}
        next_rows = {c: [] for c in rest}
        next_values, next_samples = [], []
        for key, rows in groups.items():
            law = PowerLaw(variable=var)
            where = f"tiered asymptote, level {var!r}" + (f" at {dict(zip(rest, key))}" if rest else "")
            try:
                # Each group resamples its own points independently (its own seed): groups are separate
                # experiments, and shared draws would correlate their asymptotes at the next level.
                fit_law(law, {var: table[var][rows]}, values[rows], loss=loss,
                        bootstrap=bootstrap if samples is None else 0, level=level, seed=seed + len(laws[var]))
            except ScarceError as err:
                raise ScarceError(f"{where}: {err}") from err
            if samples is not None:  # a level above the first: its draws are refits to the draws below
                law.bootstrap_params_ = _refit_each_draw(law, table[var][rows], samples[rows], loss)
                finite = law.bootstrap_params_[np.isfinite(law.bootstrap_params_).all(axis=1)]
                law.intervals_ = percentile_intervals(law.param_names, finite, level)
            e_samples = law.bootstrap_params_[:, 0]
            laws[var][key] = law
            asymptotes[var][key] = from_samples(law.params_["E"], e_samples, level)
            for c, k in zip(rest, key):
                next_rows[c].append(k)
            next_values.append(law.params_["E"])
            next_samples.append(e_samples)
        table = {c: np.array(v) for c, v in next_rows.items()}
        values = np.array(next_values)
        samples = np.array(next_samples) if bootstrap else None
    return TieredAsymptote(tuple(levels), group_columns, laws, asymptotes)


def _refit_each_draw(law: PowerLaw, x: np.ndarray, draws: np.ndarray, loss: str) -> np.ndarray:
    """The law refitted to each bootstrap draw of the level below (columns of draws), all draws at once
    from the fitted optimum: draws × parameters in natural units, NaN rows for draws that failed below."""
    usable = np.isfinite(draws).all(axis=0) & (draws > 0).all(axis=0)
    out = np.full((draws.shape[1], len(law.param_names)), np.nan)
    if usable.any():
        y = draws[:, usable].T  # one problem per draw
        problem = Problem(law, {law.variables[0]: x}, y, loss)
        theta, _ = refit_rows(problem, law.to_fitted(law.params_), np.ones_like(y))
        out[usable] = [list(law.to_natural(t).values()) for t in theta]
    return out


# ---- data efficiency --------------------------------------------------------------------------------


def _check_data_law(data_law: Law) -> None:
    if not isinstance(data_law, PowerLaw):
        raise ScarceError(f"data efficiency needs a one-variable data law (power), got {data_law.name!r}")
    data_law._require_fitted()


def _effective_tokens(loss: float, p: Mapping[str, float]) -> float:
    """D_eff(L) = (A / (L − E))^(1/α): the data the baseline needs to reach L (inf if L ≤ E)."""
    gap = loss - p["E"]
    if gap <= 0 or p["alpha"] <= 0:
        return np.inf
    return (p["A"] / gap) ** (1.0 / p["alpha"])


def _paired(loss: float | Estimate, n: int) -> np.ndarray:
    """The loss for each bootstrap draw: its own draws when it has as many, else its value."""
    if isinstance(loss, Estimate) and len(loss.samples) == n:
        return loss.samples
    return np.full(n, float(loss.value if isinstance(loss, Estimate) else loss))


def effective_data(loss: float | Estimate, data_law: PowerLaw) -> Estimate:
    """Tokens the baseline recipe (its data law L(D) = E + A/D^α) needs to reach `loss`."""
    _check_data_law(data_law)
    value = float(loss.value if isinstance(loss, Estimate) else loss)
    draws = bootstrap_draws(data_law)
    losses = _paired(loss, len(draws))
    names = data_law.param_names
    samples = np.array([_effective_tokens(l, dict(zip(names, row))) for l, row in zip(losses, draws)])
    return from_samples(_effective_tokens(value, data_law.params_), samples, interval_level(data_law))


def data_efficiency(loss: float | Estimate, tokens: float, data_law: PowerLaw,
                    baseline_loss: float | None = None) -> Estimate:
    """How many times more data-efficient a recipe reaching `loss` on `tokens` unique tokens is than the
    baseline: D_eff(loss) / D_eff(L_std(tokens)) (docs/methods.md §1). L_std defaults to the data law's own
    prediction at `tokens` (then the ratio is D_eff(loss) / tokens); pass the baseline's observed best
    loss as `baseline_loss` to use that instead."""
    _check_data_law(data_law)
    names = data_law.param_names
    value = float(loss.value if isinstance(loss, Estimate) else loss)

    def ratio(l, p):
        reference = baseline_loss if baseline_loss is not None else p["E"] + p["A"] * tokens ** (-p["alpha"])
        return _effective_tokens(l, p) / _effective_tokens(reference, p)

    draws = bootstrap_draws(data_law)
    samples = np.array([ratio(l, dict(zip(names, row))) for l, row in zip(_paired(loss, len(draws)), draws)])
    return from_samples(ratio(value, data_law.params_), samples, interval_level(data_law))


# ---- effective-data multiplier ----------------------------------------------------------------------


def effective_data_multiplier(law: Law, baseline: tuple[Mapping, Sequence[float]],
                              intervention: tuple[Mapping, Sequence[float]], *, data_variable: str | None = None,
                              bootstrap: int = 200, **fit_options) -> tuple[Estimate, WithDataMultiplier]:
    """k such that the intervention's points lie on the baseline's law with their data scaled to k·D,
    from one joint fit (docs/methods.md §2), with a bootstrap interval over all points. `law` is an unfitted
    form (e.g. SoftQ()); returns (k, the fitted joint law)."""
    joint = WithDataMultiplier(law, data_variable=data_variable, indicator="intervention")
    (xb, yb), (xi, yi) = baseline, intervention
    x = {}
    for v in law.variables:
        for which, table in (("baseline", xb), ("intervention", xi)):
            if v not in table:
                raise ScarceError(f"effective-data multiplier: {which} points lack variable {v!r}")
        x[v] = np.concatenate([np.asarray(xb[v], dtype=float), np.asarray(xi[v], dtype=float)])
    yb, yi = np.asarray(yb, dtype=float), np.asarray(yi, dtype=float)
    x["intervention"] = np.concatenate([np.zeros(len(yb)), np.ones(len(yi))])
    fit_law(joint, x, np.concatenate([yb, yi]), bootstrap=bootstrap, **fit_options)
    return estimate(joint, lambda p: p["k"]), joint
