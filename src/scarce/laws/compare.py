"""Comparing laws by held-out error: leave-one-out, and extrapolation to the largest value of a variable
(fit on all but the largest N, predict the largest). Errors are RMSE of log loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from scarce.errors import ScarceError
from scarce.laws.fit import DEFAULT_DELTA, Problem, fit_law, law_copy, refit_rows
from scarce.laws.forms import Law


@dataclass
class Comparison:
    law: str
    n_points: int
    fit_rmse_log: float
    loo_rmse_log: float
    extrapolation_rmse_log: float | None
    extrapolation_points: int
    holdout: str
    fitted: Law = field(repr=False, compare=False)  # the law fitted to all points

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "fitted"}


def _rmse_log(predicted: np.ndarray, observed: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.log(predicted) - np.log(observed)) ** 2)))


def _subset(x: Mapping[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[keep] for k, v in x.items()}


def compare_laws(laws: Sequence[Law], x: Mapping[str, Sequence[float]], y, *, holdout: str = "N",
                 loss: str = "huber", bootstrap: int = 0, held: Sequence[bool] | None = None,
                 **fit_options) -> list[Comparison]:
    """Fit every law to all points (with `bootstrap` resamples for its intervals), then score it by
    leave-one-out and by extrapolation to the points with the largest `holdout` value (a variable in x),
    or to the points `held` marks (then `holdout` only labels them, e.g. "D+D_spec").

    Leave-one-out refits start from the all-points optimum rather than repeating the grid search: one
    point moves the optimum a little, and this keeps n refits cheap; when the all-points search found
    another optimum that dropping a point could make the best, each refit also restarts from that optimum
    and from its own best grid starts (see `refit_rows`), so every refit is its subset's best fit. The
    extrapolation fit repeats the full multi-start search, since dropping the largest models can move
    the optimum far. `point_labels` (how errors name points) applies to the all-points fit."""
    x = {k: np.asarray(v, dtype=float) for k, v in x.items()}
    y = np.asarray(y, dtype=float)
    labels = fit_options.pop("point_labels", None)
    if held is None:
        if holdout not in x:
            raise ScarceError(f"compare: holdout variable {holdout!r} is not among the columns {', '.join(x)}")
        held = x[holdout] == x[holdout].max()
    held = np.asarray(held, bool)
    rows = []
    for template in laws:
        law = law_copy(template)
        fit_law(law, x, y, loss=loss, bootstrap=bootstrap, point_labels=labels, **fit_options)
        n = len(y)
        loo = _leave_one_out_predictions(law)
        extrapolation, n_held = None, int(held.sum())
        if n_held < n:
            try:
                small = fit_law(law_copy(law), _subset(x, ~held), y[~held], loss=loss, **fit_options)
                extrapolation = _rmse_log(small.predict(_subset(x, held)), y[held])
            except ScarceError:  # too few smaller points to fit: no extrapolation score
                extrapolation = None
        rows.append(Comparison(law.name, n, _rmse_log(law.predict(x), y), _rmse_log(loo, y), extrapolation,
                               n_held, holdout, law))
    return rows


def _leave_one_out_predictions(law: Law) -> np.ndarray:
    """Each point's loss predicted by the law refitted without it: all n refits as one batched problem
    (point weights 1 − I), started from the all-points optimum, stragglers finished, and restarted like
    the fit itself when the all-points search found competing optima (`refit_rows`)."""
    report = law.report_
    problem = Problem(law, law.x_, law.y_, report.loss, report.delta or DEFAULT_DELTA)
    n = len(law.y_)
    optima = np.array([law.to_fitted(dict(zip(law.param_names, row))) for row in law.local_optima_])
    thetas, _ = refit_rows(problem, law.to_fitted(law.params_), 1.0 - np.eye(n), optima=optima,
                           starts=law.start_grid(), grid_starts=report.n_refined)
    log_pred, _ = law.log_predict(thetas, law.x_)
    return np.exp(np.diag(log_pred))
