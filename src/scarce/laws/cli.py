"""`scarce fit`, `scarce laws`, `scarce plan`: plain Typer command functions the main app registers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from scarce.errors import ScarceError
from scarce.laws.compare import compare_laws
from scarce.laws.derived import asymptote, estimate
from scarce.laws.fit import LOSSES, fit_law
from scarce.laws.forms import LAWS, Law, WithDataMultiplier, get_law
from scarce.laws.io import (best_per_x, fit_to_json, law_from_fit_json, parse_mapping, points_from_rows,
                            read_points_csv, write_json)
from scarce.laws.plan import plan as plan_budget

console = Console()


def _load_custom(spec: str) -> Law:
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
    options (the power law's variable; data_constrained with U_N mapped uses unique params)."""
    if ".py:" in name:
        law = _load_custom(name)
        if fixed:
            raise ScarceError("--fix applies to built-in laws; pin parameters in the custom law's code")
        return law
    if name == "power":
        if len(variables) != 1:
            raise ScarceError(f"the power law has one variable; map exactly one with --x (e.g. --x K=members), "
                              f"got {variables or 'none'}")
        return get_law(name, variable=variables[0], fixed=fixed)
    if name == "data_constrained":
        return get_law(name, unique_params="U_N" in variables, fixed=fixed)
    return get_law(name, fixed=fixed)


def _parse_fixed(items: list[str]) -> dict[str, float]:
    fixed = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            fixed[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ScarceError(f"bad --fix {item!r}; write PARAMETER=VALUE, e.g. gamma=1")
    return fixed


def _load_points(points: Optional[Path], runs: Optional[Path], where: list[str], columns: dict[str, str],
                 y: Optional[str]):
    if (points is None) == (runs is None):
        raise ScarceError("give either a POINTS.csv file or --runs RUNS_DIR (exactly one)")
    if points is not None:
        y = y or "loss"
        x, values = read_points_csv(points, columns, y)
        return x, values, str(points), y
    from scarce.runs import load_runs_table

    y = y or "final_val_loss"
    rows = load_runs_table(runs, where)
    if not rows:
        raise ScarceError(f"no runs under {runs} match {' and '.join(where) or 'any filter'}")
    x, values = points_from_rows(rows, columns, y, f"runs in {runs}")
    keep = ~(np.isnan(values) | np.any([np.isnan(v) for v in x.values()], axis=0))
    if not keep.any():
        raise ScarceError(f"no run under {runs} has all of {', '.join([*columns.values(), y])}")
    # Runs still training or failed have no loss yet; they are not points.
    return {k: v[keep] for k, v in x.items()}, values[keep], f"runs in {runs}", y


def _fmt(value: float, interval=None) -> str:
    text = f"{value:.6g}"
    if interval is not None:
        text += f"  [{interval[0]:.6g}, {interval[1]:.6g}]"
    return text


def _print_fit(law: Law, derived: dict) -> None:
    table = Table("parameter", "value  [interval]", title=f"{law.name}: {law.formula}")
    for name, value in law.params_.items():
        table.add_row(name, _fmt(value, law.intervals_.get(name)))
    for name, est in derived.items():
        table.add_row(f"[bold]{name}[/bold]", _fmt(est.value, est.interval))
    console.print(table)
    r = law.report_
    console.print(f"{r.loss} objective {r.objective:.6g}, {'converged' if r.converged else 'NOT converged: ' + r.message}"
                  f"; {r.n_points} points, RMSE(log loss) {r.rmse_log:.4g}; best of {r.n_refined} refined from "
                  f"{r.n_starts} starts; {r.seconds:.2f} s"
                  + (f"; {r.bootstrap_resamples} bootstrap resamples" if r.bootstrap_resamples else ""))


def fit(
    points: Annotated[Optional[Path], typer.Argument(help="CSV of points, one row per run; or use --runs")] = None,
    law: Annotated[Optional[list[str]], typer.Option(
        "--law", help="Law name (see `scarce laws`) or FILE.py:NAME; repeat to compare laws")] = None,
    x: Annotated[Optional[list[str]], typer.Option(
        "--x", help="Law variable = column, e.g. N=params,D=tokens (default: same-named columns)")] = None,
    y: Annotated[Optional[str], typer.Option(
        "--y", help="Loss column (default: loss; final_val_loss with --runs)")] = None,
    loss: Annotated[str, typer.Option(help="huber (on log loss, Chinchilla) or mse (on raw loss, Kim et al.)")] = "huber",
    delta: Annotated[float, typer.Option(help="Huber threshold on log loss")] = 1e-3,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for intervals (0: none)")] = 0,
    level: Annotated[float, typer.Option(help="Interval coverage")] = 0.95,
    fix: Annotated[Optional[list[str]], typer.Option(help="Pin a parameter, e.g. --fix gamma=1")] = None,
    best: Annotated[bool, typer.Option(
        "--best", help="Keep only the lowest loss per distinct x (the tuned optimum)")] = False,
    intervention: Annotated[Optional[str], typer.Option(
        help="0/1 column marking intervention points: fit the effective-data multiplier k")] = None,
    holdout: Annotated[str, typer.Option(help="Variable whose largest value is held out when comparing laws")] = "N",
    runs: Annotated[Optional[Path], typer.Option(help="Fit runs from this run store instead of a CSV")] = None,
    where: Annotated[Optional[list[str]], typer.Option(help="Run filter, e.g. status=completed (repeatable)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the fit as JSON (schema scarce.fit/1)")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG: curves per group and observed vs predicted")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed")] = 0,
):
    """Fit a scaling law to points from a CSV or the run store; with several --law, compare them."""
    if loss not in LOSSES:
        raise ScarceError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    names = law or ["chinchilla"]
    fixed = _parse_fixed(fix or [])
    mapping = parse_mapping(x or [])
    laws = [build_law(n, list(mapping), fixed) for n in names]
    if not mapping:  # no --x: every law variable is read from the column of the same name
        mapping = {v: v for built in laws for v in built.variables}
    if intervention:
        laws = [WithDataMultiplier(built, indicator="intervention") for built in laws]
        mapping["intervention"] = intervention
    x_values, y_values, source, y_column = _load_points(points, runs, where or [], mapping, y)
    if best:
        x_values, y_values = best_per_x(x_values, y_values)
    options = dict(loss=loss, delta=delta, level=level, seed=seed)

    if len(laws) > 1:
        _compare(laws, x_values, y_values, holdout, options, bootstrap, mapping, y_column, source, where, best,
                 json_out)
        return
    fitted = fit_law(laws[0], x_values, y_values, bootstrap=bootstrap, **options)
    derived = {"asymptote": asymptote(fitted)}
    if intervention:
        derived["effective_data_multiplier"] = estimate(fitted, lambda p: p["k"])
    _print_fit(fitted, derived)
    if json_out:
        write_json(fit_to_json(fitted, columns=mapping, y_column=y_column, source=source, filters=where or [],
                               best=best, derived=derived), json_out)
        console.print(f"wrote {json_out}")
    if plot:
        from scarce.laws.plot import plot_fit

        console.print(f"wrote {plot_fit(fitted, fitted.x_, fitted.y_, plot)}")


def _compare(laws, x_values, y_values, holdout, options, bootstrap, mapping, y_column, source, where, best,
             json_out):
    rows = compare_laws(laws, x_values, y_values, holdout=holdout, bootstrap=bootstrap if json_out else 0, **options)
    table = Table("law", "points", "fit RMSE", "leave-one-out RMSE", f"extrapolation RMSE (largest {holdout})",
                  title="RMSE of log loss")
    for row in rows:
        extra = "-" if row.extrapolation_rmse_log is None else f"{row.extrapolation_rmse_log:.4g} ({row.extrapolation_points} pts)"
        table.add_row(row.law, str(row.n_points), f"{row.fit_rmse_log:.4g}", f"{row.loo_rmse_log:.4g}", extra)
    console.print(table)
    if json_out:
        fits = [fit_to_json(row.fitted, columns={v: mapping[v] for v in row.fitted.variables}, y_column=y_column,
                            source=source, filters=where or [], best=best,
                            derived={"asymptote": asymptote(row.fitted)}) for row in rows]
        write_json({"schema": "scarce.compare/1", "fits": fits, "comparison": [r.to_dict() for r in rows]}, json_out)
        console.print(f"wrote {json_out}")


def laws():
    """List the scaling-law forms `scarce fit --law` accepts."""
    # One block per law, not a table: formulas are long and a table column would cut them off.
    for name, cls in LAWS.items():
        law = cls()
        console.print(f"[bold]{name}[/bold]  variables {', '.join(law.variables)};  "
                      f"parameters {', '.join(law.param_names)}", highlight=False)
        console.print(f"    {law.formula}\n    {cls.summary}", highlight=False)
    console.print("Custom forms: --law FILE.py:NAME, NAME a scarce.laws.CustomLaw defined in FILE.py.")


def plan(
    fit_json: Annotated[Path, typer.Argument(help="A fit written by `scarce fit --json` (chinchilla, softq or data_constrained)")],
    flops: Annotated[list[float], typer.Option(help="Training compute budget in FLOPs (repeatable)")],
    unique_tokens: Annotated[Optional[float], typer.Option(
        help="Unique-token cap (data_constrained: the best N and epochs over this much data)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the plan as JSON")] = None,
):
    """Best model size and tokens (and epochs, when unique data is capped) for compute budgets, C = 6·N·D."""
    law = law_from_fit_json(fit_json)
    results = [(c, plan_budget(law, c, unique_tokens)) for c in flops]
    keys = list(results[0][1])
    table = Table("FLOPs", *keys, title=f"{law.name}: best allocation" + (
        f" with {unique_tokens:.4g} unique tokens" if unique_tokens else ""))
    for c, result in results:
        table.add_row(f"{c:.3g}", *[_fmt(result[k].value, result[k].interval) for k in keys])
    console.print(table)
    if json_out:
        write_json({"schema": "scarce.plan/1", "fit": str(fit_json), "unique_tokens": unique_tokens,
                    "plans": [{"flops": c, **{k: e.to_dict() for k, e in r.items()}} for c, r in results]}, json_out)
        console.print(f"wrote {json_out}")

