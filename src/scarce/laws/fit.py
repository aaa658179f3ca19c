"""Fitting a law: vectorized multi-start grid, batched Levenberg-Marquardt refinement with exact
gradients, bootstrap.

Procedure (Chinchilla's Approach 3, made fast):
1. evaluate the objective at every start of the law's initialization grid in one array operation
   (chunked to bound memory);
2. refine the `refine` best starts all at once (`refine_batch`: Levenberg-Marquardt on the Gauss-Newton
   matrix built from the form's exact gradients); a start that has not converged after the iteration
   limit, and could still win, is finished with scipy's L-BFGS-B;
3. keep the lowest objective; bootstrap by resampling points (as multiplicity weights) and refitting
   every resample at once from that optimum.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

import numpy as np
from scipy.optimize import minimize

from scarce.errors import ScarceError
from scarce.laws.forms import Law

LOSSES = ("huber", "mse")
DEFAULT_DELTA = 1e-3
# Bounds the (starts × points) arrays of one grid chunk, hence the memory of the grid search.
GRID_CHUNK_ELEMENTS = 2_000_000
# The objective is a sum of tiny terms (Huber with δ = 1e-3 on log loss), far below scipy's default
# scale of 1, so the stopping tolerances must be absolute and tight to reach the true optimum.
LBFGS_OPTIONS = {"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 20}
# Refits of resampled or left-out points stop at a relative step of 1e-8: their spread is orders of
# magnitude larger, and the last digits cost half the iterations (Huber IRLS converges linearly).
RESAMPLE_XTOL = 1e-8


@dataclass
class FitReport:
    """How a fit went. `objective` is the sum over points of the loss (Huber on log loss, or squared
    error on raw loss); `winning_start` is the grid start whose refinement gave the optimum."""

    law: str
    loss: str
    delta: float | None
    n_points: int
    objective: float
    converged: bool
    message: str
    iterations: int
    n_starts: int
    n_refined: int
    winning_start: dict[str, float]
    winning_start_objective: float
    rmse_log: float
    max_abs_residual_log: float
    seconds: float
    bootstrap_resamples: int = 0
    bootstrap_failed: int = 0
    interval_level: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Problem:
    """A law, its points and a loss: the objective and its exact gradient in the law's fitted space.

    y is one loss per point, or (rows × points) to pose one problem per row of theta (e.g. a law refitted
    to every bootstrap draw of the level below, see `derived.tiered_asymptote`)."""

    law: Law
    x: dict[str, np.ndarray]
    y: np.ndarray
    loss: str = "huber"
    delta: float = DEFAULT_DELTA
    log_y: np.ndarray = field(init=False)

    def __post_init__(self):
        self.log_y = np.log(self.y)

    def _pointwise(self, log_pred: np.ndarray, curvature: bool = False):
        """Per-point loss, its derivative with respect to log L̂ and, if asked, a non-negative curvature
        for Gauss-Newton steps (Huber: the IRLS weight min(1, δ/|r|); squared error: 2·L̂²)."""
        if self.loss == "huber":
            r = log_pred - self.log_y
            a = np.abs(r)
            inside = a <= self.delta
            value = np.where(inside, 0.5 * r * r, self.delta * (a - 0.5 * self.delta))
            slope = np.clip(r, -self.delta, self.delta)
            if curvature:
                return value, slope, np.where(inside, 1.0, self.delta / np.maximum(a, self.delta))
            return value, slope
        pred = np.exp(log_pred)
        r = pred - self.y
        if curvature:
            return r * r, 2.0 * r * pred, 2.0 * pred * pred
        return r * r, 2.0 * r * pred

    def values(self, theta: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Objective at every row of theta (starts × parameters); inf where the form is not finite."""
        theta = np.atleast_2d(theta)
        n = len(self.y)
        chunk = max(1, GRID_CHUNK_ELEMENTS // max(n, 1))
        out = np.empty(theta.shape[0])
        for lo in range(0, theta.shape[0], chunk):
            log_pred, _ = self.law.log_predict(theta[lo : lo + chunk], self.x)
            with np.errstate(invalid="ignore", over="ignore"):
                value, _ = self._pointwise(log_pred)
                total = value.sum(axis=1) if weights is None else value @ weights
            out[lo : lo + chunk] = np.where(np.isfinite(total), total, np.inf)
        return out

    def value_and_grad(self, theta: np.ndarray, weights: np.ndarray | None = None):
        log_pred, grad = self.law.log_predict(theta[None, :], self.x, with_gradient=True)
        with np.errstate(invalid="ignore", over="ignore"):
            value, slope = self._pointwise(log_pred[0])
        if weights is not None:
            value, slope = value * weights, slope * weights
        total = float(value.sum())
        if not np.isfinite(total):
            # A finite, large value steers the line search back instead of aborting the optimizer.
            return 1e30, np.zeros_like(theta)
        return total, slope @ grad[0]


    def rows(self, index: np.ndarray) -> "Problem":
        """The problems of some rows: itself when every row shares y."""
        return self if self.y.ndim == 1 else replace(self, y=self.y[index])

    def batch(self, theta: np.ndarray, weights: np.ndarray):
        """For rows of theta each with its own point weights (rows × points): objective, gradient and
        Gauss-Newton matrix, all rows in one array operation."""
        log_pred, grad = self.law.log_predict(theta, self.x, with_gradient=True)
        with np.errstate(invalid="ignore", over="ignore"):
            value, slope, curv = self._pointwise(log_pred, curvature=True)
            total = (value * weights).sum(axis=1)
            g = np.einsum("bn,bnp->bp", slope * weights, grad)
            h = np.matmul((grad * (curv * weights)[..., None]).transpose(0, 2, 1), grad)
        return np.where(np.isfinite(total), total, np.inf), g, h


def refine_batch(problem: Problem, theta: np.ndarray, weights: np.ndarray, max_iterations: int = 500,
                 xtol: float = 1e-10):
    """Minimize many weighted problems at once (rows of theta, rows of weights): Levenberg-Marquardt on
    the Gauss-Newton matrix (IRLS weights for Huber) built from the form's exact gradients, with simple
    bounds handled by holding parameters that sit at a bound and are pushed outward.

    Every row takes its step in the same array operation, so refining 16 grid starts, or 1,000
    bootstrap resamples, costs about as much as a few single fits. Returns (optima, converged flags,
    iterations per row); callers finish rows that did not converge with L-BFGS-B."""
    bounds = np.array(problem.law.fitted_bounds())
    lo, hi = bounds[:, 0], bounds[:, 1]
    theta = np.clip(theta.astype(float).copy(), lo, hi)
    rows, n_params = theta.shape
    damping = np.full(rows, 1e-3)
    iterations = np.zeros(rows, dtype=int)
    f, g, h = problem.batch(theta, weights)
    converged = np.zeros(rows, dtype=bool)
    eye = np.eye(n_params)
    for _ in range(max_iterations):
        idx = np.flatnonzero(~converged)
        if len(idx) == 0:
            break
        held = (hi - lo <= 0) | ((theta[idx] <= lo) & (g[idx] > 0)) | ((theta[idx] >= hi) & (g[idx] < 0))
        free = (~held).astype(float)
        hh = h[idx] * free[:, :, None] * free[:, None, :]
        diag = np.einsum("bpp->bp", hh)
        system = hh + (damping[idx, None] * np.maximum(diag, 1e-12) + (1 - free) + 1e-30)[:, :, None] * eye
        step = -np.linalg.solve(system, (g[idx] * free)[..., None])[..., 0]
        candidate = np.clip(theta[idx] + step, lo, hi)
        f_new, g_new, h_new = problem.rows(idx).batch(candidate, weights[idx])
        better = f_new < f[idx]
        # Converged: a nearly undamped (Gauss-Newton) step is negligible, i.e. the model's own minimum is
        # where we stand; or no step is accepted even when the damping makes it a tiny gradient step
        # (rounding, not distance, limits progress). A tiny step that is tiny only because it is heavily
        # damped says nothing about being at the optimum, so it does not count. The test is on the step,
        # not on the objective's decrease: along the flat directions of these laws (log A against α) a
        # decrease of 1e-13 can still leave 1e-5 in the parameters.
        tiny = (np.abs(step) <= xtol * np.maximum(1.0, np.abs(theta[idx]))).all(axis=1)
        converged[idx] = (tiny & (damping[idx] <= 1.0)) | (~better & (damping[idx] > 1e12))
        take = idx[better]
        theta[take], f[take], g[take], h[take] = candidate[better], f_new[better], g_new[better], h_new[better]
        damping[idx] = np.where(better, damping[idx] / 3, damping[idx] * 4)
        iterations[idx] += 1
    return theta, converged, iterations


def check_points(law: Law, x: Mapping, y) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validate the points at the edge: shapes, finite positive losses, enough points."""
    arrays = law.check_x(x)
    y = np.atleast_1d(np.asarray(y, dtype=float))
    n = len(next(iter(arrays.values())))
    if y.ndim != 1 or len(y) != n:
        raise ScarceError(f"{law.name}: y has {len(y)} values but x has {n} points")
    bad = ~(np.isfinite(y) & (y > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ScarceError(f"{law.name}: loss values must be finite and > 0; point {i} has loss {y[i]:.6g}")
    free = sum(1 for p in law.parameters if p.bounds[0] < p.bounds[1])
    if n < free:
        raise ScarceError(f"{law.name}: {n} points cannot determine {free} free parameters "
                          f"({', '.join(law.param_names)}); give at least {free} points or pin some with fixed=")
    return arrays, y


def _minimize(problem: Problem, theta0: np.ndarray, weights: np.ndarray | None = None):
    return minimize(problem.value_and_grad, theta0, args=(weights,), jac=True, method="L-BFGS-B",
                    bounds=problem.law.fitted_bounds(), options=LBFGS_OPTIONS)


def fit_law(law: Law, x: Mapping, y, *, loss: str = "huber", delta: float = DEFAULT_DELTA,
            bootstrap: int = 0, level: float = 0.95, refine: int = 16, seed: int = 0,
            start: Mapping[str, float] | None = None) -> Law:
    """Fit `law` to points (x: {variable: values}, y: losses in nats/token) and set its fitted attributes.

    loss:      "huber" (default; Huber with threshold `delta` on log loss, Chinchilla's Approach 3) or
               "mse" (least squares on raw loss, as Kim et al. fit).
    bootstrap: number of resamples of the points for intervals (0: none).
    level:     coverage of the percentile intervals.
    refine:    how many of the best grid starts are refined (all at once, see `refine_batch`).
    start:     natural-unit parameter values to refine from instead of the grid (warm start).

    Sets params_, objective_, converged_, report_, intervals_, interval_level_, bootstrap_params_
    (resamples × parameters, natural units; empty without bootstrap), x_, y_.
    """
    if loss not in LOSSES:
        raise ScarceError(f"unknown fit loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if not 0 < level < 1:
        raise ScarceError(f"interval level must be in (0, 1), got {level!r}")
    t0 = time.perf_counter()
    arrays, y = check_points(law, x, y)
    problem = Problem(law, arrays, y, loss, delta)

    if start is not None:
        starts = law.to_fitted(start)[None, :]
    else:
        starts = law.start_grid()
    grid_values = problem.values(starts)
    finite = np.flatnonzero(np.isfinite(grid_values))
    if len(finite) == 0:
        raise ScarceError(f"{law.name}: the form gives no finite, positive prediction at any initialization "
                          f"start; check the form and its bounds")
    chosen = finite[np.argsort(grid_values[finite], kind="stable")[: max(1, refine)]]
    thetas, converged, iterations = refine_batch(problem, starts[chosen], np.ones((len(chosen), len(y))))
    messages = np.where(converged, "converged (Levenberg-Marquardt)", "iteration limit").astype(object)
    values = problem.values(thetas)
    # Rare: a start still moving after the iteration limit is finished with L-BFGS-B, unless an optimum
    # found by a converged start is already lower (then it is a losing start, not worth the time).
    beaten = values >= values[converged].min() if converged.any() else np.zeros(len(values), dtype=bool)
    for i in np.flatnonzero(~converged & ~beaten):
        res = _minimize(problem, thetas[i])
        thetas[i], values[i], converged[i], messages[i] = res.x, res.fun, res.success, f"L-BFGS-B: {res.message}"
        iterations[i] += res.nit
    best = int(np.argmin(values))
    # Starts often reach the same optimum by different paths; it counts as converged when any of the
    # refinements that reached it (to rounding) converged.
    same = values <= values[best] + 1e-9 * abs(values[best])

    law.params_ = law.to_natural(thetas[best])
    law.objective_ = float(values[best])
    law.converged_ = bool(converged[same].any())
    law.x_, law.y_ = arrays, y
    residual = law.log_predict(thetas[best][None, :], arrays)[0][0] - np.log(y)
    samples, failed = _bootstrap(problem, thetas[best], bootstrap, seed) if bootstrap \
        else (np.empty((0, starts.shape[1])), 0)
    law.bootstrap_params_ = np.array([list(law.to_natural(s).values()) for s in samples]).reshape(
        len(samples), starts.shape[1])
    law.intervals_ = percentile_intervals(law.param_names, law.bootstrap_params_, level)
    law.interval_level_ = level
    law.report_ = FitReport(
        law=law.name, loss=loss, delta=delta if loss == "huber" else None, n_points=len(y),
        objective=law.objective_, converged=law.converged_, message=str(messages[best]),
        iterations=int(iterations[best]), n_starts=len(starts), n_refined=len(chosen),
        winning_start=law.to_natural(starts[chosen[best]]),
        winning_start_objective=float(grid_values[chosen[best]]), rmse_log=float(np.sqrt(np.mean(residual ** 2))),
        max_abs_residual_log=float(np.abs(residual).max()), seconds=time.perf_counter() - t0,
        bootstrap_resamples=int(bootstrap), bootstrap_failed=int(failed), interval_level=level,
    )
    return law


def _bootstrap(problem: Problem, theta_hat: np.ndarray, resamples: int, seed: int):
    """Refit on `resamples` resamples of the points, each warm-started at the full-data optimum."""
    rng = np.random.default_rng(seed)
    n = len(problem.y)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    samples = np.empty((resamples, len(theta_hat)))
    failed = 0
    # Chunked so that the (resamples × points × parameters) gradient arrays stay small.
    chunk = max(1, GRID_CHUNK_ELEMENTS // (n * len(theta_hat)))
    for lo in range(0, resamples, chunk):
        w = counts[lo : lo + chunk]
        samples[lo : lo + chunk], ok, _ = refine_batch(problem, np.repeat(theta_hat[None, :], len(w), 0), w,
                                                       xtol=RESAMPLE_XTOL)
        for i in np.flatnonzero(~ok):  # rare stragglers: finish them one by one
            res = _minimize(problem, samples[lo + i], w[i])
            samples[lo + i] = res.x
            failed += not res.success
    return samples, failed


def percentile_intervals(names, samples: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    if len(samples) == 0:
        return {}
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return {name: (float(a), float(b)) for name, a, b in zip(names, lo, hi)}


def law_copy(law: Law) -> Law:
    """An unfitted law with the same form and settings."""
    import copy

    clone = copy.copy(law)
    for attr in [a for a in vars(clone) if a.endswith("_") and not a.startswith("_")]:
        delattr(clone, attr)
    return clone
