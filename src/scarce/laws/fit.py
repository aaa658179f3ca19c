"""Fitting a law: vectorized multi-start grid, batched Levenberg-Marquardt refinement with exact
gradients, bootstrap.

Procedure (Chinchilla's Approach 3, made fast):
1. evaluate the objective at every start of the law's initialization grid in one array operation
   (chunked to bound memory);
2. refine the `refine` best starts all at once (`refine_batch`: Levenberg-Marquardt on the Gauss-Newton
   matrix built from the form's exact gradients); a start that has not converged after the iteration
   limit, and could still win, is finished with scipy's L-BFGS-B;
3. keep the lowest objective, and name the parameters the data cannot determine (flat directions of
   the Jacobian at the optimum);
4. bootstrap by resampling points (as multiplicity weights) and refitting every resample at once from
   that optimum, and, when the search found more than one local optimum, also from the other optima and
   each resample's own best grid starts (`refit_rows`).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
from scipy.optimize import minimize

from scarce.errors import ScarceError
from scarce.laws.forms import Law, PointError

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
# ... and their L-BFGS-B finish stops sooner: a refit still crawling along a flat valley after this many
# iterations has its objective to ~1e-12 already (a bootstrap of 4-point groups spent 10 s there).
RESAMPLE_LBFGS_OPTIONS = {**LBFGS_OPTIONS, "maxiter": 500}
# Levenberg-Marquardt damping never falls below this (relative to the Gauss-Newton diagonal): without a
# floor it shrinks to ~1e-300 after many accepted steps and a rank-deficient problem (a sweep at one model
# size, a resample with few distinct points) makes the linear system exactly singular.
DAMPING_FLOOR = 1e-9
# A direction of the (column-normalized) Jacobian with a singular value below this fraction of the largest
# is flat: the data do not determine it. Exact flatness gives ~1e-15; the worst-conditioned well-posed
# fits in the tests give > 1e-4.
FLAT_TOLERANCE = 1e-7
# Restarted refits (see refit_rows) take this many iterations, then only those whose objective is below
# this factor times their row's best so far are refined to convergence.
SCREEN_ITERATIONS = 30
SCREEN_FACTOR = 3.0
# Starts of the full-data search whose objectives agree to this relative precision are one optimum.
SAME_OPTIMUM = 1e-7


@dataclass
class FitReport:
    """How a fit went. `objective` is the sum over points of the loss (Huber on log loss, or squared
    error on raw loss); `winning_start` is the grid start whose refinement gave the optimum;
    `unidentified` names the parameters the data cannot determine (their values are arbitrary)."""

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
    unidentified: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> FitReport:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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

    def pointwise(self, theta: np.ndarray) -> np.ndarray:
        """Per-point loss at every row of theta (rows × points); a huge finite value where the form is
        not finite, so that weighted sums stay ordered."""
        theta = np.atleast_2d(theta)
        chunk = max(1, GRID_CHUNK_ELEMENTS // max(len(self.y), 1))
        out = []
        for lo in range(0, theta.shape[0], chunk):
            log_pred, _ = self.law.log_predict(theta[lo : lo + chunk], self.x)
            with np.errstate(invalid="ignore", over="ignore"):
                value, _ = self._pointwise(log_pred)
            out.append(np.where(np.isfinite(value), value, 1e300))
        return np.concatenate(out)

    def row_values(self, theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Each row of theta's objective under its own row of point weights."""
        log_pred, _ = self.law.log_predict(theta, self.x)
        with np.errstate(invalid="ignore", over="ignore"):
            value, _ = self._pointwise(log_pred)
            total = (value * weights).sum(axis=1)
        return np.where(np.isfinite(total), total, np.inf)

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


    def rows(self, index: np.ndarray) -> Problem:
        """The problems of some rows: itself when every row shares y."""
        return self if self.y.ndim == 1 else replace(self, y=self.y[index])

    def row(self, i: int) -> Problem:
        """The single problem of row i (one y per point)."""
        return self if self.y.ndim == 1 else replace(self, y=self.y[i])

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
        rhs = (g[idx] * free)[..., None]
        try:
            step = -np.linalg.solve(system, rhs)[..., 0]
        except np.linalg.LinAlgError:  # numerically singular despite the floor: the least-squares step
            step = -np.matmul(np.linalg.pinv(system), rhs)[..., 0]
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
        damping[idx] = np.where(better, np.maximum(damping[idx] / 3, DAMPING_FLOOR), damping[idx] * 4)
        iterations[idx] += 1
    return theta, converged, iterations


def check_points(law: Law, x: Mapping, y, labels=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validate the points at the edge: shapes, finite positive losses, enough points. `labels` names each
    point in errors (e.g. its CSV line); default "point i" (0-based)."""
    try:
        arrays = law.check_x(x)
    except PointError as err:
        raise ScarceError(err.at(_label(labels, err.index))) from None
    y = np.atleast_1d(np.asarray(y, dtype=float))
    n = len(next(iter(arrays.values())))
    if y.ndim != 1 or len(y) != n:
        raise ScarceError(f"{law.name}: y has {len(y)} values but x has {n} points")
    bad = ~(np.isfinite(y) & (y > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ScarceError(f"{law.name}: loss values must be finite and > 0; {_label(labels, i)} has loss {y[i]:.6g}")
    free = sum(1 for p in law.parameters if p.bounds[0] < p.bounds[1])
    if n < free:
        raise ScarceError(f"{law.name}: {n} points cannot determine {free} free parameters "
                          f"({', '.join(law.param_names)}); give at least {free} points or pin some with fixed=")
    return arrays, y


def _label(labels, i: int) -> str:
    return f"point {i}" if labels is None else str(labels[i])


def check_options(loss: str, delta: float, bootstrap: int, level: float, refine: int) -> None:
    if loss not in LOSSES:
        raise ScarceError(f"unknown fit loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if not (np.isfinite(delta) and delta > 0):
        raise ScarceError(f"the Huber threshold delta must be > 0 (it is on log loss; default 1e-3), got {delta!r}")
    if not (isinstance(bootstrap, (int, np.integer)) and bootstrap >= 0):
        raise ScarceError(f"bootstrap must be a whole number of resamples >= 0 (0: no intervals), got {bootstrap!r}")
    if not 0 < level < 1:
        raise ScarceError(f"interval level must be in (0, 1), got {level!r}")
    if not (isinstance(refine, (int, np.integer)) and refine >= 1):
        raise ScarceError(f"refine (grid starts to refine) must be a whole number >= 1, got {refine!r}")


def _minimize(problem: Problem, theta0: np.ndarray, weights: np.ndarray | None = None, options=LBFGS_OPTIONS):
    with _one_blas_thread():
        return minimize(problem.value_and_grad, theta0, args=(weights,), jac=True, method="L-BFGS-B",
                        bounds=problem.law.fitted_bounds(), options=options)


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it L-BFGS-B runs with the BLAS's own thread count
        return None
    return ThreadpoolController()


def _one_blas_thread():
    """L-BFGS-B's BLAS calls are on vectors of a few parameters: extra BLAS threads only add start-up and
    spin-waiting, which on a busy machine made one small fit 20× slower (30 s instead of 1.5 s)."""
    controller = _blas_controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def fit_law(law: Law, x: Mapping, y, *, loss: str = "huber", delta: float = DEFAULT_DELTA,
            bootstrap: int = 0, level: float = 0.95, refine: int = 16, seed: int = 0,
            start: Mapping[str, float] | None = None, point_labels=None) -> Law:
    """Fit `law` to points (x: {variable: values}, y: losses in nats/token) and set its fitted attributes.

    loss:      "huber" (default; Huber with threshold `delta` > 0 on log loss, Chinchilla's Approach 3) or
               "mse" (least squares on raw loss, as Kim et al. fit).
    bootstrap: number of resamples of the points for intervals (0: none).
    level:     coverage of the percentile intervals.
    refine:    how many of the best grid starts are refined (all at once, see `refine_batch`).
    start:     natural-unit parameter values to refine from instead of the grid (warm start).
    point_labels: how errors name each point (e.g. "points.csv line 20"); default "point i".

    Sets params_, objective_, converged_, report_, unidentified_, intervals_, interval_level_,
    bootstrap_params_ (resamples × parameters, natural units; empty without bootstrap), local_optima_
    (the distinct optima the refined starts reached, best first, natural units), x_, y_.
    """
    check_options(loss, delta, bootstrap, level, refine)
    t0 = time.perf_counter()
    arrays, y = check_points(law, x, y, point_labels)
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
    chosen = finite[np.argsort(grid_values[finite], kind="stable")[:refine]]
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
    optima = _distinct_optima(thetas, values, converged | same)

    law.params_ = law.to_natural(thetas[best])
    law.objective_ = float(values[best])
    law.converged_ = bool(converged[same].any())
    law.local_optima_ = np.array([list(law.to_natural(t).values()) for t in optima])
    law.x_, law.y_ = arrays, y
    law.unidentified_ = unidentified_parameters(law, thetas[best], arrays)
    residual = law.log_predict(thetas[best][None, :], arrays)[0][0] - np.log(y)
    if bootstrap:
        counts = resample_counts(len(y), bootstrap, seed)
        samples, failed = refit_rows(problem, thetas[best], counts, optima=optima, starts=starts,
                                     grid_starts=refine)
    else:
        samples, failed = np.empty((0, starts.shape[1])), 0
    law.bootstrap_params_ = np.array([list(law.to_natural(s).values()) for s in samples]).reshape(
        len(samples), starts.shape[1])
    law.intervals_ = percentile_intervals(law.param_names, law.bootstrap_params_, level)
    for name in law.unidentified_ if bootstrap else ():  # any value in its range fits the data as well
        law.intervals_[name] = tuple(float(v) for v in law.parameters[law.param_names.index(name)].from_fitted(
            np.array(law.parameters[law.param_names.index(name)].bounds)))
    law.interval_level_ = level
    message = str(messages[best])
    if law.unidentified_:
        message += f"; not determined by the data: {', '.join(law.unidentified_)}"
    law.report_ = FitReport(
        law=law.name, loss=loss, delta=delta if loss == "huber" else None, n_points=len(y),
        objective=law.objective_, converged=law.converged_, message=message,
        iterations=int(iterations[best]), n_starts=len(starts), n_refined=len(chosen),
        winning_start=law.to_natural(starts[chosen[best]]),
        winning_start_objective=float(grid_values[chosen[best]]), rmse_log=float(np.sqrt(np.mean(residual ** 2))),
        max_abs_residual_log=float(np.abs(residual).max()), seconds=time.perf_counter() - t0,
        bootstrap_resamples=int(bootstrap), bootstrap_failed=int(failed), interval_level=level,
        unidentified=list(law.unidentified_),
    )
    return law


def _distinct_optima(thetas: np.ndarray, values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The refined starts' end points with distinct objectives, best first (fitted space)."""
    order = [i for i in np.argsort(values, kind="stable") if usable[i] and np.isfinite(values[i])]
    kept: list[int] = []
    for i in order:
        if all(abs(values[i] - values[k]) > SAME_OPTIMUM * abs(values[k]) for k in kept):
            kept.append(i)
    return thetas[kept]


def unidentified_parameters(law: Law, theta: np.ndarray, x: Mapping[str, np.ndarray]) -> list[str]:
    """Parameters along which the predictions at the points do not change: the flat directions of the
    Jacobian of log L̂ at theta (columns normalized, so units do not matter). A parameter that never
    enters (R*_D when every point is one epoch) is a zero column; a combination that only moves together
    (E, A and α when every point has the same N) is a near-zero singular value. Pinned parameters are
    left out."""
    _, grad = law.log_predict(np.asarray(theta, dtype=float)[None, :], x, with_gradient=True)
    free = [i for i, p in enumerate(law.parameters) if p.bounds[0] < p.bounds[1]]
    jac = grad[0][:, free]
    if not free or not np.isfinite(jac).all():
        return []
    norms = np.linalg.norm(jac, axis=0)
    flat = set(np.flatnonzero(norms <= FLAT_TOLERANCE * max(norms.max(), 1e-300)))
    live = [i for i in range(len(free)) if i not in flat]
    if live:
        _, singular, vt = np.linalg.svd(jac[:, live] / norms[live], full_matrices=False)
        for direction in vt[singular <= FLAT_TOLERANCE * singular[0]]:
            flat |= {live[j] for j in np.flatnonzero(np.abs(direction) > 0.1)}
    return [law.param_names[free[i]] for i in sorted(flat)]


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """The bootstrap's resamples of n points as multiplicities: multinomial draws from
    numpy.random.default_rng(seed), one row per resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def refit_rows(problem: Problem, theta_hat: np.ndarray, weights: np.ndarray, *, optima: np.ndarray | None = None,
               starts: np.ndarray | None = None, grid_starts: int = 16,
               xtol: float = RESAMPLE_XTOL) -> tuple[np.ndarray, int]:
    """Refit the problem under each row of point weights (bootstrap resamples, leave-one-out): all rows at
    once from the full-data optimum, stragglers finished with L-BFGS-B. Returns (optima, failed finishes).

    When the full-data search reached another local optimum that reweighting the points could plausibly
    make the best (`competitive_optima`), a warm start would stay in the old basin and narrow the
    intervals. Then every row is also refitted from the other optima and from its own `grid_starts` best
    `starts` (the multi-start search of a fit, under the row's weights), and keeps its lowest objective.
    Fits with one clear optimum, the usual case with enough points, pay nothing for this."""
    n_params = len(theta_hat)
    thetas, failed = _refit_from(problem, np.repeat(theta_hat[None, :], len(weights), 0), weights, xtol)
    others = competitive_optima(problem, optima)[1:] if optima is not None and len(optima) > 1 else []
    if len(others) == 0:
        return thetas, failed
    best = problem.row_values(thetas, weights)
    k = min(grid_starts, len(starts)) if starts is not None and len(starts) > 1 else 0
    grid_loss = problem.pointwise(starts) if k else None
    m = len(others) + k
    chunk = max(1, GRID_CHUNK_ELEMENTS // (problem.y.shape[-1] * n_params * m))
    for lo in range(0, len(weights), chunk):
        w = weights[lo : lo + chunk]
        candidates = [np.repeat(others[None], len(w), 0)]
        if k:
            own = np.argpartition(w @ grid_loss.T, k - 1, axis=1)[:, :k]
            candidates.append(starts[own])
        flat_w = np.repeat(w, m, 0)
        theta0 = np.concatenate(candidates, axis=1).reshape(-1, n_params)
        # A short first pass, then only candidates within reach of their row's best go on: most grid starts
        # lead to worse optima, and refining them to convergence would cost most of the time.
        head, _, _ = refine_batch(problem, theta0, flat_w, max_iterations=SCREEN_ITERATIONS, xtol=xtol)
        values = problem.row_values(head, flat_w)
        go_on = np.flatnonzero(values < SCREEN_FACTOR * np.repeat(best[lo : lo + chunk], m))
        refit = head
        if len(go_on):
            refit[go_on], _ = _refit_from(problem.rows(go_on), head[go_on], flat_w[go_on], xtol)
        values = problem.row_values(refit, flat_w).reshape(len(w), m)
        j = np.argmin(values, axis=1)
        won = np.flatnonzero(values[np.arange(len(w)), j] < best[lo : lo + chunk])
        thetas[lo + won] = refit.reshape(len(w), m, n_params)[won, j[won]]
        best[lo + won] = values[won, j[won]]
    return thetas, failed


def competitive_optima(problem: Problem, optima: np.ndarray, z: float = 5.0) -> np.ndarray:
    """The optima (best first) that resampling the points could plausibly make the best: the objective gap
    to the best, Σ d_i over per-point differences d_i, is within `z` standard deviations of its bootstrap
    spread √(n·var(d)). An optimum that fits almost every point worse never wins a resample."""
    per_point = problem.pointwise(optima)
    d = per_point[1:] - per_point[0]
    n = d.shape[1]
    spread = np.sqrt(n * np.maximum(np.mean(d * d, axis=1) - np.mean(d, axis=1) ** 2, 0.0))
    keep = d.sum(axis=1) < z * spread
    return optima[np.concatenate([[True], keep])]


def _refit_from(problem: Problem, theta0: np.ndarray, weights: np.ndarray, xtol: float) -> tuple[np.ndarray, int]:
    """refine_batch in chunks (the rows × points × parameters gradient arrays stay small), then each row
    that has not converged finished with L-BFGS-B (counted as failed if that does not converge either)."""
    n = problem.y.shape[-1]
    rows, n_params = theta0.shape
    out = np.empty_like(theta0, dtype=float)
    failed = 0
    chunk = max(1, GRID_CHUNK_ELEMENTS // (n * n_params))
    for lo in range(0, rows, chunk):
        index = np.arange(lo, min(lo + chunk, rows))
        sub = problem.rows(index)
        out[index], ok, _ = refine_batch(sub, theta0[index], weights[index], xtol=xtol)
        for i in index[~ok]:  # rare: finish them one by one
            res = _minimize(problem.row(i), out[i], weights[i], RESAMPLE_LBFGS_OPTIONS)
            out[i] = res.x
            failed += not res.success
    return out, failed


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
