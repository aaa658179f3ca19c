"""`scarce specialize` (the grid, its points and fits) and `scarce plan specialize` (the compute split; also
spelled `scarce plan-specialize`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from scarce.commands.options import (
    ExecutorName,
    ExecutorOptions,
    Live,
    Threads,
    Workers,
    build_executor,
    check_number,
    check_output_file,
    console,
    resumable,
)
from scarce.errors import ScarceError


def _numbers(values: list[str], what: str) -> list[int]:
    """`--general-tokens 1e5,2e5 --general-tokens 4e5` -> [100000, 200000, 400000]."""
    out = []
    for item in values:
        for part in filter(None, (p.strip() for p in item.split(","))):
            try:
                out.append(int(float(part)))
            except ValueError:
                raise ScarceError(f"{what}: {part!r} is not a number") from None
    return out


def _named(values: list[str], what: str) -> dict[str, float]:
    """`kjv=1e6 python-stdlib=2e6` -> {"kjv": 1e6, "python-stdlib": 2e6}."""
    out = {}
    for item in values:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, value = part.partition("=")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise ScarceError(f"{what}: write NAME=NUMBER, got {part!r}")
    return out


def specialize(
    config: Annotated[Path, typer.Argument(help="TOML config with data.domains (the general mixture)")],
    sizes: Annotated[list[str], typer.Option(help="Model sizes, e.g. --sizes micro,tiny")],
    general_tokens: Annotated[list[str], typer.Option(help="General-phase tokens D (comma-separated or repeated)")],
    domain_tokens: Annotated[list[str], typer.Option(help="Specialization tokens D' per domain")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides of the config")] = None,
    decay_fraction: Annotated[float, typer.Option(help="Each D's WSD decay branch, as a share of D")] = 0.2,
    warmup_tokens: Annotated[Optional[int], typer.Option(help="General-phase warm-up (default 1% of the smallest D)")] = None,
    domain: Annotated[Optional[list[str]], typer.Option(help="Specialize on these domains only (default all)")] = None,
    specialist: Annotated[Optional[list[str]], typer.Option(
        help="Override for the specialists only, e.g. --specialist optim.lr=1e-3 (default: re-warmed cosine)")] = None,
    repeat: Annotated[bool, typer.Option(help="Allow D' above a domain's unique tokens (repeated epochs)")] = True,
    study: Annotated[str, typer.Option(help="Study name: run names and the study column")] = "specialize",
    executor: ExecutorName = "local",
    workers: Workers = None,
    threads: Threads = None,
    executor_option: ExecutorOptions = None,
    live: Live = True,
    law: Annotated[Optional[list[str]], typer.Option(
        help="Laws to fit and compare (default both specialization forms; FILE.py:NAME for your own)")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the fits' intervals")] = 100,
    holdout: Annotated[str, typer.Option(
        help="Extrapolation score: predict the points of the largest N, D, D_spec or tokens (D + D') from the rest")] = "N",
    fit: Annotated[bool, typer.Option(help="Fit and compare the laws once the grid is done")] = True,
):
    """Split-model specialization: trunks, WSD decay branches and specialists over an (N, D, D') grid; then laws."""
    from scarce.config import load_config
    from scarce.studies.specialize import Grid, run_study

    base = load_config(config, list(overrides or []))
    grid = Grid(sizes=[s.strip() for item in sizes for s in item.split(",") if s.strip()],
                general_tokens=_numbers(general_tokens, "--general-tokens"),
                domain_tokens=_numbers(domain_tokens, "--domain-tokens"), decay_fraction=decay_fraction,
                warmup_tokens=warmup_tokens, specialist_overrides=list(specialist or []), domains=domain, repeat=repeat)
    with resumable():
        found = run_study(base, grid, study, build_executor(executor, workers, threads, executor_option), console, live)
    table = Table("domain", "params", "D", "D'", "loss", title=f"{study}: {len(found)} points")
    for p in sorted(found, key=lambda p: (p.domain, p.params, p.general_tokens, p.domain_tokens)):
        table.add_row(p.domain, f"{p.params:,}", f"{p.general_tokens:,}", f"{p.domain_tokens:,}", f"{p.loss:.4f}")
    console.print(table)
    console.print(f"points: {Path(base.runs_dir) / f'{study}-points.csv'}")
    if fit:
        from scarce.studies.specialize import fit_study

        document, out, plot = fit_study(Path(base.runs_dir), study, law or [], bootstrap,
                                        base.train.batch_size * base.model.seq_len, holdout)
        _print_fits(document, holdout)
        console.print(f"wrote {out}" + (f" and {plot}" if plot else ""))


def _fitted_minimum(document: dict) -> dict[str, dict[str, float]]:
    """Each domain's smallest fitted D' and D (fits written before D's range was recorded: D > 0, as every
    trunk has; before D''s range: none)."""
    return {name: {"D_spec": entry["domain_tokens_fitted"][0], "D": entry.get("general_tokens_fitted", [1.0])[0]}
            for name, entry in document["domains"].items() if "domain_tokens_fitted" in entry}


def _plain_fits(items: list[str], domains: list[str]) -> tuple[dict, dict]:
    """Laws and fitted minimums from `scarce fit` files (scarce.fit/1) of a specialization law: NAME=FIT.json
    per domain, or one FIT.json for the one domain --domain-tokens names."""
    from scarce.laws.io import law_from_fit_json

    named = {}
    for item in items:
        name, sep, path = item.rpartition("=")
        if not sep:
            if len(items) > 1 or len(domains) != 1:
                raise ScarceError(f"{item}: a plain `scarce fit` file is one domain's law: name it with exactly one "
                                  "--domain-tokens NAME=U, or give NAME=FIT.json per domain")
            name = domains[0]
        named[name] = Path(path)
    laws, minimum = {}, {}
    for name, path in named.items():
        law = law_from_fit_json(path)
        if set(law.variables) != {"N", "D", "D_spec"}:
            raise ScarceError(f"fit file {path} holds law {law.name!r} of {', '.join(law.variables)}; planning a "
                              "specialization needs one of N, D, D_spec (specialization_transfer or specialization_additive)")
        ranges = (json.loads(path.read_text()).get("data") or {}).get("ranges")
        if ranges:
            minimum[name] = {"D": ranges["D"][0], "D_spec": ranges["D_spec"][0]}
        laws[name] = law
    return laws, minimum


def _print_fits(document: dict, holdout: str) -> None:
    from scarce.laws.specialization import HOLDOUTS

    for name, entry in document["domains"].items():
        if "error" in entry:
            console.print(f"[yellow]{name}: not fitted: {entry['error']}[/yellow]", highlight=False)
            continue
        table = Table("law", "points", "fit RMSE", "leave-one-out RMSE", f"extrapolation RMSE ({HOLDOUTS[holdout]})",
                      title=f"{name}: RMSE of log loss (chosen: {entry['chosen']})")
        for row in entry["comparison"]:
            extra = row["extrapolation_rmse_log"]
            table.add_row(row["law"], str(row["n_points"]), f"{row['fit_rmse_log']:.4g}", f"{row['loo_rmse_log']:.4g}",
                          "-" if extra is None else f"{extra:.4g}")
        console.print(table)


def plan_specialize(
    fit_json: Annotated[list[str], typer.Argument(help=(
        "A fit written by `scarce specialize` (<study>-fit.json); or `scarce fit --json` files of a specialization "
        "law: NAME=FIT.json per domain, or one FIT.json for the one domain --domain-tokens names"))],
    flops: Annotated[float, typer.Option(help="Training compute budget in FLOPs")],
    domain_tokens: Annotated[Optional[list[str]], typer.Option(
        help="NAME=UNIQUE_TOKENS per domain planned (default: every fitted domain at its study cap)")] = None,
    weights: Annotated[Optional[list[str]], typer.Option(help="NAME=WEIGHT of the mean loss (default equal)")] = None,
    law: Annotated[Optional[str], typer.Option(help="The law to plan with (default: each domain's chosen law)")] = None,
    repeat: Annotated[bool, typer.Option(help="Allow phases past their unique data (repeated epochs)")] = True,
    params: Annotated[Optional[float], typer.Option(help="Plan for a model of exactly this many parameters")] = None,
    within_fit: Annotated[bool, typer.Option("--within-fit/--beyond-fit", help=(
        "A specialist gets no D' or at least the smallest D' its law was fitted on; --beyond-fit: one step"))] = True,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the plans as JSON")] = None,
):
    """Choose N, D and each D' for a FLOP budget: shared general phase, independent ones, general only, domain only."""
    from scarce.laws.io import write_json
    from scarce.laws.specialization import SCHEMA, fitted_laws, plan_specialization

    check_number(flops, "--flops")
    check_number(params, "--params")
    check_output_file(json_out, "--json")
    first = Path(fit_json[0].rpartition("=")[2])
    if not first.is_file():
        raise ScarceError(f"fit file {first} does not exist (write it with `scarce specialize` or `scarce fit --json`)")
    try:
        document = json.loads(first.read_text())
    except json.JSONDecodeError as e:
        raise ScarceError(f"fit file {first} is not JSON: {e}") from None
    named = _named(domain_tokens, "--domain-tokens") if domain_tokens else None
    if document.get("schema") == SCHEMA:
        if len(fit_json) > 1 or "=" in fit_json[0]:
            raise ScarceError(f"{first} is a `scarce specialize` fit of every domain: give it alone")
        laws, minimum = fitted_laws(document, law), _fitted_minimum(document)
        unique, tokens_per_step = named or dict(document.get("unique_tokens") or {}), document.get("tokens_per_step") or 1
    else:
        if named is None:
            raise ScarceError("a `scarce fit` file has no domain caps: give --domain-tokens NAME=UNIQUE_TOKENS")
        if law is not None:
            raise ScarceError("--law chooses among a `scarce specialize` fit's laws; a `scarce fit` file holds one")
        laws, minimum = _plain_fits(fit_json, list(named))
        unique, tokens_per_step = named, 1
    missing = [name for name in unique if name in laws and name not in minimum]
    if within_fit and missing:
        raise ScarceError(f"the fit of {', '.join(missing)} records no fitted range (written by an older scarce): "
                          "fit it again, or plan --beyond-fit")
    plans = plan_specialization(laws, flops, unique, _named(weights, "--weights") if weights else None, repeat=repeat,
                                tokens_per_step=tokens_per_step, params=params,
                                fitted_minimum=minimum if within_fit else None)
    table = Table("strategy", "params", "general tokens", *[f"D' {n}" for n in unique], "FLOPs", "mean loss", "repeats",
                  title=f"best split of {flops:.3g} FLOPs")
    for name, p in plans.items():
        general = p["general_tokens"]
        general = f"{general:.3g}" if isinstance(general, float | int) else ", ".join(f"{v:.3g}" for v in general.values())
        loss = "n/a" if p["predicted_loss"] is None else f"{p['predicted_loss']['mean']:.4f}"
        repeats = ", ".join(f"{k} ×{v:.2f}" for k, v in p["repetition"].items()) or "-"
        table.add_row(name, f"{p['params']:.3g}", general, *[f"{p['domain_tokens'][n]:.3g}" for n in unique],
                      f"{p['flops']:.3g}", loss, repeats)
    console.print(table)
    for name, p in plans.items():
        if "note" in p:
            console.print(f"[yellow]{name}: {p['note']}[/yellow]", highlight=False)
    if json_out:
        write_json({"schema": "scarce.specialize-plan/1", "fit": " ".join(fit_json), "flops_budget": flops,
                    "unique_tokens": unique, "plans": plans}, json_out)
        console.print(f"wrote {json_out}")
