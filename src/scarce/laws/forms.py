"""Scaling-law forms: named parameters with bounds, a printed formula, `predict`, and a registry.

Every built-in form writes log L̂ once, with the operations of `scarce.laws.dual`, so the same code gives
plain values for the vectorized grid search and exact gradients for the refinement. Parameters that are
scales (E, A, B, κ, R*) are fitted as their logarithms, as in Chinchilla's Approach 3; exponents are
fitted as they are. A law's `params_` always holds the natural values (A, not log A).
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from scarce.errors import ScarceError
from scarce.laws import dual
from scarce.laws.dual import Dual, exp, expm1, log, logsumexp

# Wide enough that a change of units (params vs billions of params) never pushes an optimum onto a bound.
LOG_SCALE_BOUNDS = (-60.0, 120.0)
LOG_ASYMPTOTE_BOUNDS = (-20.0, 10.0)
EXPONENT_BOUNDS = (0.0, 10.0)

# Chinchilla Approach 3's initialization grid (docs/methods.md §5), in the fitted (log) space.
GRID_LOG_SCALE = tuple(np.arange(0.0, 25.1, 5.0))
GRID_LOG_ASYMPTOTE = tuple(np.arange(-1.0, 1.01, 0.5))
GRID_EXPONENT = tuple(np.arange(0.0, 2.01, 0.5))


class PointError(ScarceError):
    """A bad value at one point. The message names it "point i" (0-based) unless the caller knows a better
    name for it (a CSV line, a run): see `at`."""

    def __init__(self, template: str, index: int):
        self.template, self.index = template, index
        super().__init__(self.at(f"point {index}"))

    def at(self, label: str) -> str:
        return self.template.format(point=label)


@dataclass(frozen=True)
class Parameter:
    """One fitted parameter. `log=True` means it is fitted as log(value); bounds and grid are in that space."""

    name: str
    log: bool
    bounds: tuple[float, float]
    grid: tuple[float, ...]
    description: str = ""

    def to_fitted(self, value: float) -> float:
        if self.log:
            if not value > 0:
                raise ScarceError(f"parameter {self.name!r} is fitted on a log scale and must be > 0, got {value!r}")
            return float(np.log(value))
        return float(value)

    def from_fitted(self, value):
        return np.exp(value) if self.log else value


def scale(name: str, description: str, grid=GRID_LOG_SCALE) -> Parameter:
    return Parameter(name, True, LOG_SCALE_BOUNDS, tuple(grid), description)


def asymptote() -> Parameter:
    return Parameter("E", True, LOG_ASYMPTOTE_BOUNDS, GRID_LOG_ASYMPTOTE, "irreducible loss (nats/token)")


def exponent(name: str, description: str, grid=GRID_EXPONENT) -> Parameter:
    return Parameter(name, False, EXPONENT_BOUNDS, tuple(grid), description)


class Law:
    """Base of every form. Subclasses set `name`, `variables`, `parameters`, `formula` and `_log_predict`.

    Keyword arguments common to all forms:
      fixed:  {parameter: value} pins a parameter (e.g. SoftQ(fixed={"gamma": 1}) is Chinchilla).
      bounds: {parameter: (low, high)} in natural units, narrowing the defaults.
      grid:   {parameter: [values]} in natural units, replacing the default initialization grid.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    variables: tuple[str, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    formula: str = ""

    def __init__(self, *, fixed: Mapping[str, float] | None = None,
                 bounds: Mapping[str, tuple[float, float]] | None = None,
                 grid: Mapping[str, list[float]] | None = None):
        self.fixed = dict(fixed or {})
        self.user_bounds = dict(bounds or {})
        self.user_grid = dict(grid or {})
        known = self.param_names
        for option, given in (("fixed", self.fixed), ("bounds", self.user_bounds), ("grid", self.user_grid)):
            for key in given:
                if key not in known:
                    raise ScarceError(f"{self.name}: {option} names unknown parameter {key!r}; "
                                      f"its parameters are {', '.join(known)}")
        self.parameters = tuple(self._configured(p) for p in self.parameters)

    def _configured(self, p: Parameter) -> Parameter:
        if p.name in self.fixed:
            v = p.to_fitted(self.fixed[p.name])
            self._check_domain(p, (v,), f"fixed {p.name!r} = {self.fixed[p.name]!r}")
            return Parameter(p.name, p.log, (v, v), (v,), p.description)
        bounds, grid = p.bounds, p.grid
        if p.name in self.user_bounds:
            lo, hi = self.user_bounds[p.name]
            bounds = (p.to_fitted(lo), p.to_fitted(hi))
            if not bounds[0] <= bounds[1]:
                raise ScarceError(f"{self.name}: bounds for {p.name!r} have low > high: {(lo, hi)}")
            self._check_domain(p, bounds, f"bounds for {p.name!r} {(lo, hi)}")
            grid = tuple(float(np.clip(g, *bounds)) for g in grid)
        if p.name in self.user_grid:
            grid = tuple(p.to_fitted(g) for g in self.user_grid[p.name])
        return Parameter(p.name, p.log, bounds, tuple(dict.fromkeys(grid)), p.description)

    def _check_domain(self, p: Parameter, fitted: tuple[float, ...], what: str) -> None:
        """Pinned values and narrowed bounds must lie in the form's own range (e.g. 0 < γ ≤ 1, α ≥ 0)."""
        lo, hi = p.bounds
        if not all(lo <= v <= hi for v in fitted):
            natural = tuple(float(p.from_fitted(b)) for b in p.bounds)
            raise ScarceError(f"{self.name}: {what} is outside the form's range for {p.name!r}, "
                              f"[{natural[0]:.6g}, {natural[1]:.6g}]")

    # ---- parameter spaces -------------------------------------------------------------------------

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    def fitted_bounds(self) -> list[tuple[float, float]]:
        return [p.bounds for p in self.parameters]

    def start_grid(self) -> np.ndarray:
        """Every combination of the per-parameter grids, as (starts, parameters) in the fitted space."""
        return np.array(list(itertools.product(*[p.grid for p in self.parameters])), dtype=float)

    def to_natural(self, theta) -> dict[str, float]:
        return {p.name: float(p.from_fitted(t)) for p, t in zip(self.parameters, np.asarray(theta, dtype=float))}

    def to_fitted(self, params: Mapping[str, float]) -> np.ndarray:
        missing = [n for n in self.param_names if n not in params]
        if missing:
            raise ScarceError(f"{self.name}: missing parameter(s) {', '.join(missing)}")
        return np.array([p.to_fitted(params[p.name]) for p in self.parameters])

    # ---- evaluation -------------------------------------------------------------------------------

    def _log_predict(self, p: list[Dual], x: Mapping[str, np.ndarray]) -> Dual:
        raise NotImplementedError

    def log_predict(self, theta: np.ndarray, x: Mapping[str, np.ndarray], with_gradient: bool = False):
        """log L̂ for every start (rows of theta, fitted space) at every point: (starts, points) and,
        with gradient, d log L̂ / d theta as (starts, points, parameters)."""
        out = self._log_predict(dual.parameters(theta, with_gradient), x)
        n = len(next(iter(x.values())))
        values = np.broadcast_to(out.v, (np.atleast_2d(theta).shape[0], n))
        grad = None
        if with_gradient:
            grad = np.zeros(values.shape + (np.atleast_2d(theta).shape[1],)) if out.d is None \
                else np.broadcast_to(out.d, values.shape + out.d.shape[-1:])
        return values, grad

    def validate_x(self, x: Mapping[str, np.ndarray], names: tuple[str, ...] | None = None) -> None:
        """Variables (`names`, default all) must be finite and > 0: they enter through logarithms. Forms
        that allow other values check those variables themselves."""
        for name in self.variables if names is None else names:
            self._require(x, name, np.isfinite(x[name]) & (x[name] > 0), "finite and > 0")

    def _require(self, x: Mapping[str, np.ndarray], name: str, ok: np.ndarray, requirement: str) -> None:
        """An error naming the variable, the first point where `ok` fails, and its value."""
        if not ok.all():
            i = int(np.argmin(ok))
            raise PointError(f"{self.name}: variable {name!r} must be {requirement}; {{point}} has {x[name][i]:.6g}",
                             i)

    def check_x(self, x: Mapping[str, object]) -> dict[str, np.ndarray]:
        if not isinstance(x, Mapping):
            raise ScarceError(f"{self.name}: x must be a mapping from variable name to values, "
                              f"with variables {', '.join(self.variables)}")
        missing = [v for v in self.variables if v not in x]
        if missing:
            raise ScarceError(f"{self.name}: x is missing variable(s) {', '.join(missing)}; "
                              f"this law needs {', '.join(self.variables)}")
        arrays = {v: np.atleast_1d(np.asarray(x[v], dtype=float)) for v in self.variables}
        lengths = {v: len(a) for v, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ScarceError(f"{self.name}: variables have different lengths: {lengths}")
        self.validate_x(arrays)
        return arrays

    def predict(self, x: Mapping[str, object], params: Mapping[str, float] | None = None) -> np.ndarray:
        """Predicted loss at x, with the fitted parameters unless `params` (natural units) is given."""
        if params is None:
            params = self._require_fitted()
        theta = self.to_fitted(params)
        values, _ = self.log_predict(theta[None, :], self.check_x(x))
        return np.exp(values[0])

    def _require_fitted(self) -> dict[str, float]:
        if not hasattr(self, "params_"):
            raise ScarceError(f"{self.name}: the law is not fitted yet; call fit() or pass params=")
        return self.params_

    def fit(self, x, y, **options) -> Law:
        """Fit to points; see `scarce.laws.fit.fit_law` for the options (loss, delta, bootstrap, ...)."""
        from scarce.laws.fit import fit_law

        fit_law(self, x, y, **options)
        return self

    def describe(self) -> str:
        return f"{self.name}: {self.formula}"

    def __repr__(self) -> str:
        pinned = f", fixed={self.fixed}" if self.fixed else ""
        return f"{type(self).__name__}({pinned.lstrip(', ')})"

    def to_dict(self) -> dict:
        """What is needed to rebuild the (unfitted) law: see `law_from_dict`."""
        return {"name": self.name, "options": self.options(), "fixed": self.fixed}

    def options(self) -> dict:
        return {}


# ---- built-in forms ---------------------------------------------------------------------------------


class PowerLaw(Law):
    name = "power"
    summary = "one variable with an asymptote: params, tokens or ensemble members"
    parameters = (asymptote(), scale("A", "scale", grid=(-5.0,) + GRID_LOG_SCALE),
                  exponent("alpha", "exponent of x"))

    def __init__(self, variable: str = "x", **kw):
        self.variables = (variable,)
        self.formula = f"L = E + A · {variable}^(−alpha)"
        super().__init__(**kw)

    def options(self):
        return {"variable": self.variables[0]}

    def _log_predict(self, p, x):
        e, a, alpha = p
        return logsumexp(e, a - alpha * log(x[self.variables[0]]))


class Chinchilla(Law):
    name = "chinchilla"
    summary = "Hoffmann et al. 2022: additive in params N and tokens D"
    variables = ("N", "D")
    formula = "L = E + A / N^alpha + B / D^beta"
    parameters = (asymptote(), scale("A", "params term scale"), exponent("alpha", "params exponent"),
                  scale("B", "data term scale"), exponent("beta", "data exponent"))

    def _log_predict(self, p, x):
        e, a, alpha, b, beta = p
        return logsumexp(e, a - alpha * log(x["N"]), b - beta * log(x["D"]))


class SoftQ(Law):
    name = "softq"
    summary = "scarce's soft-minimum quanta law (docs/methods.md §2); gamma = 1 is Chinchilla"
    variables = ("N", "D")
    formula = "L = E + ((A / N^alpha)^(1/gamma) + (B / D^beta)^(1/gamma))^gamma"
    parameters = Chinchilla.parameters + (
        Parameter("gamma", False, (0.02, 1.0), (0.3, 0.6, 1.0), "coupling: 1 additive, → 0 hard minimum"),)

    def _log_predict(self, p, x):
        e, a, alpha, b, beta, gamma = p
        coupled = gamma * logsumexp((a - alpha * log(x["N"])) / gamma, (b - beta * log(x["D"])) / gamma)
        return logsumexp(e, coupled)


def _log_effective(log_unique: Dual, repeats, log_r_star: Dual) -> Dual:
    """log of U + U·R*·(1 − exp(−R/R*)): repeated tokens (or params) are worth less each time (docs/methods.md §5)."""
    r_star = exp(log_r_star)
    return log_unique + log(1.0 - r_star * expm1(-(repeats / r_star)))


class DataConstrained(Law):
    name = "data_constrained"
    summary = "Muennighoff et al. 2023: unique tokens U and epochs, optionally unique params U_N"

    def __init__(self, unique_params: bool = False, **kw):
        self.unique_params = unique_params
        self.variables = ("N", "U", "epochs") + (("U_N",) if unique_params else ())
        r_star = [Parameter("R_star_D", True, (np.log(1e-2), np.log(1e4)), (np.log(5.0), np.log(15.0), np.log(50.0)),
                            "repetitions of data after which more epochs stop helping")]
        if unique_params:
            r_star.append(Parameter("R_star_N", True, (np.log(1e-2), np.log(1e4)), (np.log(2.0), np.log(8.0)),
                                    "excess-params decay constant"))
        self.parameters = Chinchilla.parameters + tuple(r_star)
        n_eff = "N' = U_N + U_N·R*_N·(1 − exp(−R_N/R*_N)), R_N = N/U_N − 1" if unique_params else "N' = N"
        self.formula = ("L = E + A / N'^alpha + B / D'^beta;  D' = U + U·R*_D·(1 − exp(−(epochs−1)/R*_D));  "
                        + n_eff)
        super().__init__(**kw)

    def options(self):
        return {"unique_params": self.unique_params}

    def validate_x(self, x):
        super().validate_x(x)
        self._require(x, "epochs", x["epochs"] >= 1, ">= 1 (one pass over U)")

    def _log_predict(self, p, x):
        e, a, alpha, b, beta, log_r_d = p[:6]
        log_d = _log_effective(log(x["U"]), x["epochs"] - 1.0, log_r_d)
        log_n = log(x["N"])
        if self.unique_params:
            unique_n = np.minimum(x["U_N"], x["N"])
            log_n = _log_effective(log(unique_n), x["N"] / unique_n - 1.0, p[6])
        return logsumexp(e, a - alpha * log_n, b - beta * log_d)


class SpecializationTransfer(Law):
    name = "specialization_transfer"
    summary = "scarce's effective-transfer form (docs/methods.md §4): general tokens D count as κ·D^η domain tokens"
    variables = ("N", "D", "D_spec")
    formula = "L = E + A / N^alpha + B / (D_spec + kappa · D^eta)^beta"
    parameters = Chinchilla.parameters + (
        Parameter("kappa", True, LOG_SCALE_BOUNDS, (-10.0, -5.0, 0.0), "transfer coefficient"),
        Parameter("eta", False, (0.0, 2.0), (0.5, 1.0), "transfer exponent"),
    )

    def validate_x(self, x):
        # Zero specialization tokens is the general model itself: a legitimate point.
        super().validate_x(x, names=("N", "D"))
        self._require(x, "D_spec", np.isfinite(x["D_spec"]) & (x["D_spec"] >= 0), "finite and >= 0")

    def _log_predict(self, p, x):
        e, a, alpha, b, beta, log_kappa, eta = p
        # log(0) = −inf: that term vanishes from the sum. D_spec is a Dual when an effective-data
        # multiplier scales it (WithDataMultiplier), so `log` from scarce.laws.dual, not NumPy's.
        log_tokens = logsumexp(log(x["D_spec"]), log_kappa + eta * log(x["D"]))
        return logsumexp(e, a - alpha * log(x["N"]), b - beta * log_tokens)


class SpecializationAdditive(Law):
    name = "specialization_additive"
    summary = "scarce's additive specialization form (docs/methods.md §4)"
    variables = ("N", "D", "D_spec")
    formula = "L = E + A / N^alpha + B / D^beta + C / D_spec^delta"
    parameters = Chinchilla.parameters + (
        scale("C", "specialization term scale", grid=(0.0, 10.0, 20.0)),
        exponent("delta", "specialization exponent", grid=(0.25, 0.75)),
    )

    def _log_predict(self, p, x):
        e, a, alpha, b, beta, c, delta = p
        return logsumexp(e, a - alpha * log(x["N"]), b - beta * log(x["D"]), c - delta * log(x["D_spec"]))


class WithDataMultiplier(Law):
    """A law fitted jointly to baseline and intervention points, the intervention's data scaled by k.

    The intervention's points carry `indicator` = 1 (baseline 0); their `data_variable` enters the law as
    k·D. k is the intervention's effective-data multiplier (docs/methods.md §2).
    """

    name = "with_data_multiplier"
    summary = "any law plus an effective-data multiplier k for points flagged by an indicator"

    def __init__(self, base: Law, data_variable: str | None = None, indicator: str = "treated", **kw):
        data_variable = data_variable or _default_data_variable(base)
        if data_variable not in base.variables:
            raise ScarceError(f"{base.name}: has no variable {data_variable!r} to scale; "
                              f"its variables are {', '.join(base.variables)}")
        self.base, self.data_variable, self.indicator = base, data_variable, indicator
        self.name = f"{base.name}+k"
        self.variables = base.variables + (indicator,)
        self.parameters = base.parameters + (
            Parameter("k", True, (np.log(1e-3), np.log(1e3)), (-0.5, 0.0, 0.5), "effective-data multiplier"),)
        self.formula = f"{base.formula};  {data_variable} → k^{indicator} · {data_variable}"
        super().__init__(**kw)

    def to_dict(self):
        return {"name": self.name, "base": self.base.to_dict(), "data_variable": self.data_variable,
                "indicator": self.indicator, "fixed": self.fixed}

    def validate_x(self, x):
        self.base.validate_x(x)
        if not np.isin(x[self.indicator], (0.0, 1.0)).all():
            raise ScarceError(f"{self.name}: indicator column {self.indicator!r} must be 0 (baseline) or 1 "
                              f"(intervention)")

    def _log_predict(self, p, x):
        scaled = dict(x)
        scaled[self.data_variable] = x[self.data_variable] * exp(x[self.indicator] * p[-1])
        return self.base._log_predict(p[:-1], scaled)


def _default_data_variable(law: Law) -> str:
    for candidate in ("D", "U", "D_spec", "x"):
        if candidate in law.variables:
            return candidate
    return law.variables[-1]


class CustomLaw(Law):
    """A user-defined form: `fn(x, **params) -> loss`, x a dict of arrays, usable like a built-in form.

    `parameters` maps each name to (low, high) bounds in natural units, or to a full `Parameter`. fn is
    first called with parameters shaped (starts, 1) so that NumPy broadcasting evaluates all starts at
    once; if that fails it is called once per start. Gradients are central finite differences (there is
    no formula to differentiate), so fits are slower and a little less precise than for built-in forms.
    """

    name = "custom"
    summary = "a Python callable with named parameters and bounds"

    def __init__(self, fn: Callable[..., np.ndarray], variables: list[str] | tuple[str, ...],
                 parameters: Mapping[str, tuple[float, float] | Parameter], *, name: str = "custom",
                 formula: str = "", log_params: tuple[str, ...] = (), points_per_axis: int = 3, **kw):
        if not callable(fn):
            raise ScarceError(f"custom law {name!r}: fn must be callable, got {type(fn).__name__}")
        if not parameters:
            raise ScarceError(f"custom law {name!r}: needs at least one parameter")
        self.fn, self.name, self.variables = fn, name, tuple(variables)
        self.formula = formula or f"L = {getattr(fn, '__name__', 'fn')}({', '.join(variables)}; "\
                                  f"{', '.join(parameters)})"
        built = []
        for pname, spec in parameters.items():
            if isinstance(spec, Parameter):
                built.append(spec)
                continue
            lo, hi = spec
            is_log = pname in log_params
            if is_log and not (lo > 0 and hi > 0):
                raise ScarceError(f"custom law {name!r}: log-scale parameter {pname!r} needs positive bounds")
            flo, fhi = (np.log(lo), np.log(hi)) if is_log else (float(lo), float(hi))
            if not flo <= fhi:
                raise ScarceError(f"custom law {name!r}: bounds for {pname!r} have low > high: {spec}")
            grid = tuple(np.linspace(flo, fhi, points_per_axis + 2)[1:-1]) if np.isfinite([flo, fhi]).all() \
                else (0.0,)
            built.append(Parameter(pname, is_log, (flo, fhi), grid))
        self.parameters = tuple(built)
        super().__init__(**kw)

    def to_dict(self):
        # Recorded so a fit's JSON says what was fitted; rebuilding needs the user's Python code.
        return {"name": self.name, "custom": True, "variables": list(self.variables), "formula": self.formula}

    def _call(self, params: dict, x) -> np.ndarray:
        try:
            with np.errstate(all="ignore"):
                return np.asarray(self.fn(dict(x), **params), dtype=float)
        except ScarceError:
            raise
        except Exception as err:  # the user's code: any failure means the form cannot be evaluated here
            raise ScarceError(f"custom law {self.name!r} could not be evaluated: "
                              f"{type(err).__name__}: {err}") from err

    def _values(self, theta: np.ndarray, x) -> np.ndarray:
        n = len(next(iter(x.values())))
        natural = {p.name: p.from_fitted(theta[:, i : i + 1]) for i, p in enumerate(self.parameters)}
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(self.fn(dict(x), **natural), dtype=float)
            if out.shape in ((theta.shape[0], n), (n,)) or (out.shape == (1, n)):
                values = np.broadcast_to(out, (theta.shape[0], n))
            else:
                raise ValueError("does not broadcast")
        except Exception:  # not written for broadcasting: one start at a time
            values = np.empty((theta.shape[0], n))
            for s in range(theta.shape[0]):
                row = self._call({k: float(v[s, 0]) for k, v in natural.items()}, x)
                if row.shape not in ((n,), ()):
                    raise ScarceError(f"custom law {self.name!r} returned shape {row.shape} for {n} points") from None
                values[s] = row
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)

    def log_predict(self, theta, x, with_gradient=False):
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        values = self._values(theta, x)
        if not with_gradient:
            return values, None
        grad = np.empty(values.shape + (theta.shape[1],))
        for i in range(theta.shape[1]):
            step = 1e-6 * max(1.0, float(np.abs(theta[:, i]).max()))
            up, down = theta.copy(), theta.copy()
            up[:, i] += step
            down[:, i] -= step
            grad[..., i] = (self._values(up, x) - self._values(down, x)) / (2 * step)
        return values, grad


LAWS: dict[str, type[Law]] = {cls.name: cls for cls in (
    PowerLaw, Chinchilla, DataConstrained, SoftQ, SpecializationTransfer, SpecializationAdditive)}


def get_law(name: str, **options) -> Law:
    """A built-in law by registry name (see `LAWS`), e.g. get_law("power", variable="K")."""
    if name not in LAWS:
        raise ScarceError(f"unknown law {name!r}; known laws: {', '.join(LAWS)}")
    return LAWS[name](**options)


def law_from_dict(spec: Mapping) -> Law:
    """Inverse of `Law.to_dict`, for laws saved in a fit's JSON."""
    if spec.get("custom"):
        raise ScarceError(f"custom law {spec.get('name')!r} cannot be rebuilt from its description; "
                          f"build it again from its Python code (CustomLaw)")
    try:
        if "base" in spec:
            return WithDataMultiplier(law_from_dict(spec["base"]), spec["data_variable"], spec["indicator"],
                                      fixed=spec.get("fixed"))
        return get_law(spec["name"], fixed=spec.get("fixed"), **spec.get("options", {}))
    except (KeyError, TypeError) as err:
        raise ScarceError(f"malformed law description {dict(spec)!r}: {err}") from err


def load_custom_law(spec: str) -> Law:
    """`path/to/file.py:name`: a Law instance (or a function returning one) defined in a Python file."""
    file, _, attr = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise ScarceError(f"custom law file {path} does not exist (write --law FILE.py:NAME)")
    module_spec = importlib.util.spec_from_file_location(f"scarce_user_law_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, attr):
        raise ScarceError(f"custom law file {path} defines no {attr!r}")
    obj = getattr(module, attr)
    law = obj if isinstance(obj, Law) else obj()
    if not isinstance(law, Law):
        raise ScarceError(f"{spec} is not a scarce law (make it a scarce.laws.CustomLaw)")
    return law


def build_law(name: str, variables: list[str], fixed: dict[str, float] | None = None) -> Law:
    """A law from its registry name or FILE.py:NAME, shaped by the mapped variables where the form has
    options (the power law's variable; data_constrained with U_N mapped uses unique params). Of `fixed`,
    only the parameters this law has are pinned (one --fix serves several --law)."""
    if ".py:" in name:
        law = load_custom_law(name)
    elif name == "power":
        if len(variables) != 1:
            raise ScarceError(f"the power law has one variable; map exactly one with --x (e.g. --x K=members), "
                              f"got {variables or 'none'}")
        law = get_law(name, variable=variables[0])
    elif name == "data_constrained":
        law = get_law(name, unique_params="U_N" in variables)
    else:
        law = get_law(name)
    mine = {k: v for k, v in (fixed or {}).items() if k in law.param_names}
    if not mine:
        return law
    if isinstance(law, CustomLaw):
        return CustomLaw(law.fn, law.variables, {p.name: p for p in law.parameters}, name=law.name,
                         formula=law.formula, fixed=mine)
    return law_from_dict({**law.to_dict(), "fixed": mine})
