"""Points in (CSV files, run-store rows) and fits out (the JSON schema `scarce.fit/1`).

JSON schema of one fit (`fit_to_json`); every interval is [low, high] at `interval_level`, or null when
the fit had no bootstrap:

    {
      "schema": "scarce.fit/1",
      "law": {"name", "formula", "variables": {law variable: column}, "y": column, "spec": {...}},
      "data": {"source", "n_points", "filters": [...], "best_per_x": bool},
      "parameters": {name: {"value", "interval"}},
      "objective": float,
      "fit": FitReport fields (loss, delta, converged, message, iterations, n_starts, n_refined,
             winning_start, winning_start_objective, rmse_log, max_abs_residual_log, seconds,
             bootstrap_resamples, bootstrap_failed, interval_level, unidentified),
      "derived": {name: {"value", "interval"}},
      "bootstrap": {"parameter_names": [...], "samples": [[...], ...]}
    }
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from scarce.atomic import write_bytes_atomic
from scarce.errors import ScarceError
from scarce.laws.derived import Estimate, TieredAsymptote, bootstrap_draws
from scarce.laws.fit import FitReport
from scarce.laws.forms import Law, law_from_dict

SCHEMA = "scarce.fit/1"


def parse_mapping(items: Iterable[str]) -> dict[str, str]:
    """`N=params,D=tokens` (or repeated) → {"N": "params", "D": "tokens"}; a bare `members` maps a
    variable of that name to the column of that name."""
    mapping = {}
    for item in items:
        for part in filter(None, (p.strip() for p in item.split(","))):
            variable, _, column = part.partition("=")
            variable, column = variable.strip(), (column.strip() or variable.strip())
            if not variable:
                raise ScarceError(f"bad column mapping {part!r}; write VARIABLE=COLUMN, e.g. N=params")
            mapping[variable] = column
    return mapping


def _number(value, column: str, where: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ScarceError(f"{where}: column {column!r} has {value!r}, not a number") from None


def points_from_rows(rows: list[Mapping], columns: Mapping[str, str], y_column: str, source: str,
                     labels: list[str] | None = None):
    """x ({variable: array}) and y from dict rows, naming the source and column in every error. `labels`
    names each row in errors (a CSV line, a run id); default "SOURCE row i" (1-based)."""
    if not rows:
        raise ScarceError(f"{source}: no rows to fit")
    labels = labels or [f"{source} row {i + 1}" for i in range(len(rows))]
    present = set().union(*(r.keys() for r in rows))
    for column in [*columns.values(), y_column]:
        if column not in present:
            raise ScarceError(f"{source}: no column {column!r}; columns are {', '.join(sorted(present))}")
    x = {v: np.array([_number(r.get(c), c, label) for r, label in zip(rows, labels)]) for v, c in columns.items()}
    y = np.array([_number(r.get(y_column), y_column, label) for r, label in zip(rows, labels)])
    return x, y


def read_points_csv(path: Path, columns: Mapping[str, str], y_column: str):
    """Points from a CSV file with a header row: (x, y, labels), each point labelled by the line of the
    file it is on ("points.csv line 20"), the numbering every later error about it uses."""
    path = Path(path)
    if not path.is_file():
        raise ScarceError(f"points file {path} does not exist")
    rows, labels = [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            rows.append(row)
            labels.append(f"{path} line {reader.line_num}")
    x, y = points_from_rows(rows, columns, y_column, str(path), labels)
    return x, y, labels


def best_per_x(x: Mapping[str, np.ndarray], y: np.ndarray):
    """Keep, for each distinct x, only the lowest loss: the tuned optimum over the other settings
    (weight decay, epochs, ...) that the table also varies. Returns (x, y, indices kept)."""
    keys = list(zip(*x.values()))
    best: dict[tuple, int] = {}
    for i, key in enumerate(keys):
        if key not in best or y[i] < y[best[key]]:
            best[key] = i
    keep = np.array(sorted(best.values()))
    return {k: v[keep] for k, v in x.items()}, y[keep], keep


def fit_to_json(law: Law, *, columns: Mapping[str, str], y_column: str, source: str,
                filters: list[str] = (), best: bool = False, derived: Mapping[str, Estimate] | None = None) -> dict:
    """The `scarce.fit/1` document of a law: fitted, loaded from such a document, or given published
    parameters by hand (then `objective` and `fit` are null and there are no draws)."""
    intervals = getattr(law, "intervals_", {})
    report = getattr(law, "report_", None)
    draws = bootstrap_draws(law)
    return {
        "schema": SCHEMA,
        "law": {"name": law.name, "formula": law.formula, "variables": dict(columns), "y": y_column,
                "spec": law.to_dict()},
        "data": {"source": source, "n_points": report.n_points if report else None, "filters": list(filters),
                 "best_per_x": best,
                 # where the law was fitted, per variable: a planner trusts it only there
                 "ranges": {v: [float(np.min(values)), float(np.max(values))] for v, values in law.x_.items()}
                 if getattr(law, "x_", None) is not None else None},
        "parameters": {k: {"value": v, "interval": list(intervals[k]) if k in intervals else None}
                       for k, v in law.params_.items()},
        "objective": getattr(law, "objective_", None),
        "fit": report.to_dict() if report else None,
        "derived": {k: e.to_dict() for k, e in (derived or {}).items()},
        "bootstrap": {"parameter_names": list(law.param_names), "samples": draws.tolist()},
    }


def tiered_to_json(tiers: TieredAsymptote, *, columns: Mapping[str, str], y_column: str, source: str, loss: str,
                   bootstrap: int, level: float) -> dict:
    """The `scarce.tiered/1` document: per level, each group's values of the outer levels, its asymptote
    with interval and its power-law parameters; then the joint asymptote (the last level's E)."""
    levels = []
    for var in tiers.levels:
        groups = []
        for key, law in sorted(tiers.laws[var].items()):
            est = tiers.asymptotes[var][key]
            intervals = getattr(law, "intervals_", {})
            groups.append({**dict(zip(tiers.group_columns[var], key)), **{
                "asymptote": est.value,
                "interval": est.to_dict()["interval"],
                "parameters": {k: {"value": v, "interval": list(intervals[k]) if k in intervals else None}
                               for k, v in law.params_.items()}}})
        levels.append({"variable": var, "column": columns.get(var, var), "groups": groups})
    joint = tiers.final[()]
    return {"schema": "scarce.tiered/1", "source": source, "y": y_column, "loss": loss, "bootstrap_resamples": bootstrap,
            "interval_level": level, "levels": levels, "asymptote": joint.value, "interval": joint.to_dict()["interval"]}


def write_json(data: dict, path: Path) -> None:
    """Strict JSON (no NaN), written atomically: a plan never reads half a fit."""
    write_bytes_atomic(Path(path), (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


def law_from_fit_json(path: Path) -> Law:
    """A fitted law (parameters and bootstrap draws) rebuilt from a `scarce fit --json` file."""
    path = Path(path)
    if not path.is_file():
        raise ScarceError(f"fit file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ScarceError(f"fit file {path} is not JSON: {err}") from err
    if data.get("schema") != SCHEMA:
        raise ScarceError(f"fit file {path}: expected schema {SCHEMA!r}, found {data.get('schema')!r}")
    try:
        law = law_from_dict(data["law"]["spec"])
        law.params_ = {k: float(v["value"]) for k, v in data["parameters"].items()}
        law.bootstrap_params_ = np.array(data["bootstrap"]["samples"], dtype=float).reshape(-1, len(law.param_names))
        law.interval_level_ = float(data["fit"]["interval_level"]) if data.get("fit") else 0.95
        law.intervals_ = {k: tuple(v["interval"]) for k, v in data["parameters"].items() if v["interval"]}
        if data.get("fit") is not None:  # a fit's record; null for published parameters
            law.report_ = FitReport.from_dict(data["fit"])
            law.objective_ = law.report_.objective
            law.converged_ = law.report_.converged
            law.unidentified_ = list(law.report_.unidentified)
    except (KeyError, TypeError, ValueError) as err:
        raise ScarceError(f"fit file {path} is malformed ({type(err).__name__}: {err}); write it again with "
                          f"`scarce fit --json`") from err
    return law
