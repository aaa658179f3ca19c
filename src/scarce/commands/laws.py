"""`scarce fit` (and --tiered), `scarce laws`, `scarce plan`, `scarce efficiency`: laws from any table of runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from scarce.commands.options import PLOT_SUFFIXES, check_number, check_output_file, console
from scarce.errors import ScarceError
from scarce.laws.compare import compare_laws
from scarce.laws.derived import asymptote, data_efficiency, effective_data, estimate, tiered_asymptote
from scarce.laws.fit import LOSSES, check_options, fit_law
from scarce.laws.forms import LAWS, Law, PowerLaw, WithDataMultiplier, build_law
from scarce.laws.io import (
    best_per_x,
    fit_to_json,
    law_from_fit_json,
    parse_mapping,
    points_from_rows,
    read_points_csv,
    tiered_to_json,
    write_json,
)
from scarce.laws.plan import plan as plan_budget


def _parse_assignments(items: list[str], option: str) -> dict[str, float]:
    """NAME=NUMBER items (--fix, --param)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ScarceError(f"bad {option} {item!r}; write PARAMETER=VALUE, e.g. {option} gamma=1")
    return out


def _load_points(points: Optional[Path], runs: Optional[Path], where: list[str], columns: dict[str, str],
                 y: Optional[str]):
    """(x, y, point labels, source, y column): labels name each point in errors by its CSV line or run."""
    if (points is None) == (runs is None):
        raise ScarceError("give either a POINTS.csv file or --runs RUNS_DIR (exactly one)")
    if points is not None:
        y = y or "loss"
        x, values, labels = read_points_csv(points, columns, y)
        return x, values, labels, str(points), y
    from scarce.runs import load_runs_table

    y = y or "final_val_loss"
    rows = load_runs_table(runs, where)
    if not rows:
        raise ScarceError(f"no runs under {runs} match {' and '.join(where) or 'any filter'}")
    labels = [f"run {row.get('run_id', i + 1)}" for i, row in enumerate(rows)]
    x, values = points_from_rows(rows, columns, y, f"runs in {runs}", labels)
    keep = ~(np.isnan(values) | np.any([np.isnan(v) for v in x.values()], axis=0))
    if not keep.any():
        raise ScarceError(f"no run under {runs} has all of {', '.join([*columns.values(), y])}")
    # Runs still training or failed have no loss yet; they are not points.
    return ({k: v[keep] for k, v in x.items()}, values[keep], [l for l, k in zip(labels, keep) if k],
            f"runs in {runs}", y)


def _fmt(value: float, interval=None) -> str:
    text = f"{value:.6g}"
    if interval is not None:
        text += f"  [{interval[0]:.6g}, {interval[1]:.6g}]"
    return text


def _print_fit(law: Law, derived: dict) -> None:
    table = Table("parameter", "value  [interval]", title=f"{law.name}: {law.formula}")
    for name, value in law.params_.items():
        text = _fmt(value, law.intervals_.get(name))
        table.add_row(name, text + ("  (not determined by the data)" if name in law.unidentified_ else ""))
    for name, est in derived.items():
        table.add_row(f"[bold]{name}[/bold]", _fmt(est.value, est.interval))
    console.print(table)
    r = law.report_
    console.print(f"{r.loss} objective {r.objective:.6g}, {'converged' if r.converged else 'NOT converged: ' + r.message}"
                  f"; {r.n_points} points, RMSE(log loss) {r.rmse_log:.4g}; best of {r.n_refined} refined from "
                  f"{r.n_starts} starts; {r.seconds:.2f} s"
                  + (f"; {r.bootstrap_resamples} bootstrap resamples" if r.bootstrap_resamples else ""))
    if law.unidentified_:
        console.print(f"[yellow]warning:[/yellow] not determined by the data: {', '.join(law.unidentified_)} "
                      f"(other values fit these points as well, at most a combination of them is fixed; add points "
                      f"that vary what they describe, or pin one with --fix)", highlight=False)


def fit(
    points: Annotated[Optional[Path], typer.Argument(help="CSV of points, one row per run; or use --runs")] = None,
    law: Annotated[Optional[list[str]], typer.Option(
        "--law", help="Law name (see `scarce laws`) or FILE.py:NAME; repeat to compare laws")] = None,
    x: Annotated[Optional[list[str]], typer.Option(
        "--x", help="Law variable = column, e.g. N=params,D=tokens (default: same-named columns)")] = None,
    y: Annotated[Optional[str], typer.Option(
        "--y", help="Loss column (default: loss; final_val_loss with --runs)")] = None,
    loss: Annotated[Optional[str], typer.Option(
        help="huber (on log loss, Chinchilla; default) or mse (on raw loss, Kim et al.; default with --tiered)")] = None,
    delta: Annotated[float, typer.Option(help="Huber threshold on log loss (> 0)")] = 1e-3,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for intervals (0: none)")] = 0,
    level: Annotated[float, typer.Option(help="Interval coverage")] = 0.95,
    fix: Annotated[Optional[list[str]], typer.Option(
        help="Pin a parameter, e.g. --fix gamma=1 (applies to each --law that has it)")] = None,
    best: Annotated[bool, typer.Option(
        "--best", help="Keep only the lowest loss per distinct x (the tuned optimum)")] = False,
    intervention: Annotated[Optional[str], typer.Option(
        help="0/1 column marking intervention points: fit the effective-data multiplier k")] = None,
    tiered: Annotated[Optional[str], typer.Option(
        help="Tiered asymptote over these levels, innermost first, e.g. K,N,D or N,D (docs/methods.md: per group "
             "the power law over the first level, then its asymptotes over the next)")] = None,
    holdout: Annotated[str, typer.Option(help="Variable whose largest value is held out when comparing laws")] = "N",
    runs: Annotated[Optional[Path], typer.Option(help="Fit runs from this run store instead of a CSV")] = None,
    where: Annotated[Optional[list[str]], typer.Option(help="Run filter, e.g. status=completed (repeatable)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the fit as JSON (schema scarce.fit/1)")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG: curves per group and observed vs predicted")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed")] = 0,
):
    """Fit a scaling law to points from a CSV or the run store; with several --law, compare them; with
    --tiered, the tiered asymptote."""
    check_output_file(json_out, "--json")
    check_output_file(plot, "--plot", PLOT_SUFFIXES)
    loss = loss or ("mse" if tiered else "huber")
    if loss not in LOSSES:
        raise ScarceError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    check_options(loss, delta, bootstrap, level, refine=16)  # before reading or fitting anything
    mapping = parse_mapping(x or [])
    if tiered:
        if law or intervention or fix:
            raise ScarceError("--tiered fits power laws level by level; it takes no --law, --fix or --intervention")
        levels = _tiered_levels(tiered)
        mapping = {v: mapping.get(v, v) for v in levels}
        x_values, y_values, labels, source, y_column = _load_points(points, runs, where or [], mapping, y)
        _check_finite(x_values, y_values, labels, mapping, y_column)
        _tiered(levels, x_values, y_values, loss, bootstrap, level, seed, mapping, y_column, source, json_out, plot)
        return
    names = law or ["chinchilla"]
    fixed = _parse_assignments(fix or [], "--fix")
    laws = [build_law(n, list(mapping), fixed) for n in names]
    for name in fixed:
        if not any(name in built.param_names for built in laws):
            raise ScarceError(f"--fix {name}: no law given has a parameter {name!r}; their parameters are "
                              + "; ".join(f"{b.name}: {', '.join(b.param_names)}" for b in laws))
    if not mapping:  # no --x: every law variable is read from the column of the same name
        mapping = {v: v for built in laws for v in built.variables}
    if intervention:
        laws = [WithDataMultiplier(built, indicator="intervention") for built in laws]
        mapping["intervention"] = intervention
    x_values, y_values, labels, source, y_column = _load_points(points, runs, where or [], mapping, y)
    if best:
        x_values, y_values, kept = best_per_x(x_values, y_values)
        labels = [labels[i] for i in kept]
    options = dict(loss=loss, delta=delta, level=level, seed=seed, point_labels=labels)

    if len(laws) > 1:
        _compare(laws, x_values, y_values, holdout, options, bootstrap, mapping, y_column, source, where, best,
                 json_out)
        return
    fitted = fit_law(laws[0], x_values, y_values, bootstrap=bootstrap, **options)
    derived = _derived(fitted)
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


def _check_finite(x_values: dict, y_values, labels: list[str], mapping: dict, y_column: str) -> None:
    """Every point's values finite and positive, naming the first bad point by its CSV line or run
    (a tiered fit groups points first, and a bad value would otherwise surface as a count of points)."""
    columns = {mapping.get(var, var): values for var, values in x_values.items()} | {y_column: y_values}
    for column, values in columns.items():
        bad = ~(np.isfinite(values) & (np.asarray(values) > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise ScarceError(f"{labels[i]}: {column} must be finite and > 0, got {values[i]:.6g}")


def _derived(law: Law) -> dict:
    """The asymptote, for laws that have one (a custom form need not)."""
    return {"asymptote": asymptote(law)} if "E" in law.param_names else {}


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
                            derived=_derived(row.fitted)) for row in rows]
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
    check_output_file(json_out, "--json")
    for c in flops:
        check_number(c, "--flops")
    check_number(unique_tokens, "--unique-tokens")
    law = law_from_fit_json(fit_json)
    results = [(c, plan_budget(law, c, unique_tokens)) for c in flops]
    keys = list(results[0][1])
    table = Table("FLOPs", *keys, title=f"{law.name}: best allocation" + (
        f" with {unique_tokens:.4g} unique tokens" if unique_tokens else ""))
    for c, result in results:
        table.add_row(f"{c:.3g}", *[_fmt(result[k].value, result[k].interval) for k in keys])
    console.print(table)
    for c, result in results:
        if result[keys[0]].dropped:
            console.print(f"{c:.3g} FLOPs: {result[keys[0]].dropped} bootstrap draws have no best allocation "
                          f"(a flat params or data term) and are left out of the intervals", highlight=False)
    if json_out:
        write_json({"schema": "scarce.plan/1", "fit": str(fit_json), "unique_tokens": unique_tokens,
                    "plans": [{"flops": c, **{k: e.to_dict() for k, e in r.items()}} for c, r in results]}, json_out)
        console.print(f"wrote {json_out}")



# ---- scarce fit --tiered ----------------------------------------------------------------------------------


def _tiered_levels(spec: str) -> tuple[str, ...]:
    levels = tuple(v.strip() for v in spec.split(",") if v.strip())
    if not 2 <= len(levels) <= 3:
        raise ScarceError(f"--tiered takes two or three levels, innermost first (e.g. K,N,D or N,D), got {spec!r}")
    if len(set(levels)) != len(levels):
        raise ScarceError(f"--tiered names a level twice: {spec!r}")
    return levels


def _tiered(levels, x_values, y_values, loss, bootstrap, level, seed, mapping, y_column, source, json_out, plot):
    tiers = tiered_asymptote(x_values, y_values, levels=levels, loss=loss, bootstrap=bootstrap, level=level,
                             seed=seed)
    for var in levels:
        rest = tiers.group_columns[var]
        table = Table(*rest, "asymptote  [interval]", "A", "alpha",
                      title=f"level {var}: L = E + A · {var}^(−alpha) per {', '.join(rest) or 'table'}")
        for key, law in sorted(tiers.laws[var].items()):
            est = tiers.asymptotes[var][key]
            table.add_row(*[f"{k:.6g}" for k in key], _fmt(est.value, est.interval), f"{law.params_['A']:.4g}",
                          f"{law.params_['alpha']:.4g}")
        console.print(table)
    joint = tiers.final[()]
    console.print(f"[bold]joint asymptote[/bold] ({' → '.join(levels)} → ∞): {_fmt(joint.value, joint.interval)}"
                  f"  ({loss} fits; {bootstrap} bootstrap resamples)", highlight=False)
    if json_out:
        write_json(tiered_to_json(tiers, columns=mapping, y_column=y_column, source=source, loss=loss,
                                  bootstrap=bootstrap, level=level), json_out)
        console.print(f"wrote {json_out}")
    if plot:
        from scarce.laws.plot import plot_tiered

        console.print(f"wrote {plot_tiered(tiers, plot)}")


# ---- scarce efficiency ----------------------------------------------------------------------------------


def efficiency(
    loss: Annotated[float, typer.Option(help="The recipe's loss (nats/token) on --tokens unique tokens")],
    tokens: Annotated[float, typer.Option(help="Unique tokens the recipe trained on, in the data law's units")],
    baseline_loss: Annotated[Optional[float], typer.Option(
        help="The baseline's observed best loss at --tokens (default: the data law's prediction there)")] = None,
    fit_json: Annotated[Optional[Path], typer.Option(
        "--fit", help="The baseline's data law: a `scarce fit --law power --json` file")] = None,
    law: Annotated[str, typer.Option(help="Data law form when given by --param (only power)")] = "power",
    param: Annotated[Optional[list[str]], typer.Option(
        help="Published data-law parameter, e.g. --param E=1.89 --param A=1.30 --param alpha=0.23")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the result as JSON")] = None,
):
    """Data efficiency of a loss: the baseline's effective data D_eff(L) = (A/(L − E))^(1/alpha) and the
    ratio D_eff(L) / D_eff(L_baseline(D)), from a fitted or published data law L(D) = E + A·D^(−alpha)."""
    check_number(loss, "--loss")
    check_number(tokens, "--tokens")
    check_number(baseline_loss, "--baseline-loss")
    check_output_file(json_out, "--json")
    data_law = _data_law(fit_json, law, param or [])
    floor = data_law.params_["E"]
    for option, value in (("--loss", loss), ("--baseline-loss", baseline_loss)):
        if value is not None and value <= floor:  # no amount of data reaches the asymptote, let alone below it
            raise ScarceError(f"{option} {value:g} is not above the data law's asymptote E = {floor:.6g}; "
                              "no amount of data reaches it")
    ratio = data_efficiency(loss, tokens, data_law, baseline_loss=baseline_loss)
    effective = effective_data(loss, data_law)
    source = str(fit_json) if fit_json else "published parameters"
    console.print(f"data law ({source}): {data_law.formula} with "
                  + ", ".join(f"{k} = {v:.6g}" for k, v in data_law.params_.items()), highlight=False)
    console.print(f"effective tokens of loss {loss:g}: {_fmt(effective.value, effective.interval)}", highlight=False)
    console.print(f"data efficiency at {tokens:g} tokens: {_fmt(ratio.value, ratio.interval)} ×", highlight=False)
    if json_out:
        write_json({"schema": "scarce.efficiency/1", "loss": loss, "tokens": tokens, "baseline_loss": baseline_loss,
                    "data_law": {"source": source, "name": data_law.name,
                                 "parameters": dict(data_law.params_)},
                    "ratio": ratio.to_dict(), "effective_tokens": effective.to_dict()}, json_out)
        console.print(f"wrote {json_out}")


def _data_law(fit_json: Optional[Path], name: str, params: list[str]) -> PowerLaw:
    """The data law from a fit file, or built from published parameters."""
    if (fit_json is None) == (not params):
        raise ScarceError("give the baseline's data law either as --fit FIT.json or as --param NAME=VALUE "
                          "(E, A, alpha), exactly one of them")
    if fit_json is not None:
        data_law = law_from_fit_json(fit_json)
        if not isinstance(data_law, PowerLaw):
            raise ScarceError(f"{fit_json} holds a {data_law.name!r} fit; data efficiency needs a data law fitted "
                              f"with --law power (L = E + A · D^(−alpha), parameters E, A, alpha)")
        return data_law
    if name != "power":
        raise ScarceError(f"--law {name!r}: data efficiency needs the one-variable data law, --law power")
    data_law = PowerLaw("D")
    given = _parse_assignments(params, "--param")
    missing = [p for p in data_law.param_names if p not in given]
    unknown = [p for p in given if p not in data_law.param_names]
    if missing or unknown:
        raise ScarceError("the power data law needs --param for each of E, A, alpha; "
                          + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"))
    for name, value in given.items():
        check_number(value, f"--param {name}", inclusive=name == "E")  # E ≥ 0; A and alpha > 0
    data_law.to_fitted(given)  # scales must be > 0
    data_law.params_ = given
    return data_law
