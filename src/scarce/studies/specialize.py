"""Split-model specialization: general models for many (N, D), each specialized on every domain for D'.

The grid, for every model size N:
1. a trunk: one WSD run on the domain mixture for the largest D, with checkpoints kept at the branch
   point of every smaller D (s = D − d, d = decay_fraction · D);
2. a decay branch from the trunk at each of those points: the general model for that D (init.mode =
   "continue": exactly the direct WSD run of D tokens, at the cost of its decay alone);
3. for every general model, domain and D': a specialist, started from the general model's weights and
   trained on that domain alone for D' tokens under a re-warmed schedule, evaluated on every domain.

Every run is in the run store with flat summary keys (domain, params, general_tokens, domain_tokens,
final_val_loss.NAME); `points` turns them into one row per (domain, N, D, D'), the general models giving
the D' = 0 points. The runs go through scarce.executors as a study (scarce.studies.sweep.Study), one
batch of jobs per stage, keyed by their resolved config (`scarce.runs.run_key`): running the study
again skips finished runs and resumes unfinished ones from their newest checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from scarce import runs
from scarce.atomic import write_bytes_atomic, write_json_atomic
from scarce.config import RunConfig, resolve_config
from scarce.errors import ScarceError
from scarce.executors import Executor, make_executor
from scarce.studies.sweep import Study, check_study_name

# A specialist re-warms: a fresh warm-up to the peak lr, then cosine to the floor over its D' tokens.
SPECIALIST_DEFAULTS = ["optim.schedule=cosine", "optim.warmup_fraction=0.1"]


@dataclass
class Grid:
    sizes: list[str]  # model sizes (scarce.model.SIZES)
    general_tokens: list[int]  # D
    domain_tokens: list[int] | dict[str, list[int]]  # D' for every domain specialized, or per domain {name: [D']}
    decay_fraction: float = 0.2  # of each D: the length of its decay branch
    warmup_tokens: int | None = None  # the general phase's warm-up; None: 1% of the smallest D
    specialist_overrides: list[str] = field(default_factory=list)  # e.g. optim.lr=1e-3
    domains: list[str] | None = None  # the domains to specialize on; None: every domain (or domain_tokens' keys)
    repeat: bool = True  # may a specialist repeat its domain (D' above the domain's unique tokens)?


@dataclass
class Point:
    domain: str
    params: int
    general_tokens: int  # D
    domain_tokens: int  # D' (0: the general model itself)
    loss: float  # on this domain's held-out documents, nats/token
    run_id: str


# ---------------------------------------------------------------- the grid


def _whole_steps(tokens: int, step_tokens: int, what: str) -> int:
    steps = round(tokens / step_tokens)
    if steps < 1:
        raise ScarceError(f"{what}={tokens} is below one optimizer step ({step_tokens} tokens = train.batch_size × "
                          f"model.seq_len): raise it")
    return steps


def _check(base: RunConfig, grid: Grid) -> dict[str, int]:
    """Validate the grid against the base config; returns each domain's unique training tokens."""
    from scarce.data.domains import domain_budgets, prepare_data
    from scarce.model import SIZES

    if base.data.domains is None:
        raise ScarceError("specialize needs a domain corpus: set data.domains in the config, e.g. "
                          "data.domains = {kjv = 1.0, python-stdlib = 1.0, pydoc-topics = 1.0}")
    for name, values in (("--sizes", grid.sizes), ("--general-tokens", grid.general_tokens),
                         ("--domain-tokens", grid.domain_tokens)):
        if not values:
            raise ScarceError(f"{name} needs at least one value")
    for size in grid.sizes:
        if size not in SIZES:
            raise ScarceError(f"--sizes: unknown size {size!r}; choose from {', '.join(SIZES)}")
    if not 0 < grid.decay_fraction < 1:
        raise ScarceError(f"--decay-fraction must be between 0 and 1, got {grid.decay_fraction}")
    named = list(grid.domain_tokens) if isinstance(grid.domain_tokens, dict) else []
    for name in (grid.domains or []) + named:
        if name not in base.data.domains:
            raise ScarceError(f"--domain {name!r} is not a domain of the config's data.domains "
                              f"({', '.join(base.data.domains)})")
    step_tokens = base.train.batch_size * base.model.seq_len
    for d in grid.general_tokens:  # before anything runs: whole steps, and a constant phase before each decay
        branch_point(d, grid.decay_fraction, step_tokens)
    budgets = domain_budgets(base.data, prepare_data(base.data))
    unique = {name: len(tokens) for name, tokens in budgets.items()}
    for name, values in specialist_tokens(base, grid).items():
        if not values:
            raise ScarceError(f"--domain-tokens needs at least one value for domain {name!r}")
        for d in values:
            _whole_steps(d, step_tokens, "--domain-tokens")
        over = [d for d in values if d > unique[name]]
        if over and not grid.repeat:
            raise ScarceError(f"--domain-tokens {over[0]} exceeds domain {name!r}'s {unique[name]} unique tokens and "
                              f"repetition is off: lower it, raise data.domains.{name}.unique_tokens, or pass --repeat")
    return unique


def _dump(config: RunConfig) -> dict:
    return config.model_dump(mode="json")


def trunk_configs(base: RunConfig, grid: Grid, study: str) -> list[RunConfig]:
    """One WSD run per size for the largest D, keeping a checkpoint at every smaller D's branch point."""
    step_tokens = base.train.batch_size * base.model.seq_len
    d_max = max(grid.general_tokens)
    steps = _whole_steps(d_max, step_tokens, "--general-tokens")
    warmup = grid.warmup_tokens if grid.warmup_tokens is not None else round(0.01 * min(grid.general_tokens))
    points = sorted({branch_point(d, grid.decay_fraction, step_tokens) for d in grid.general_tokens if d != d_max})
    configs = []
    for size in grid.sizes:
        configs.append(resolve_config(_dump(base), [
            f"name={study}-{size}-trunk", f"study={study}", f"model.size={size}", "optim.schedule=wsd",
            f"train.tokens={steps * step_tokens}",
            f"optim.decay_tokens={decay_steps(d_max, grid.decay_fraction, step_tokens) * step_tokens}",
            f"optim.warmup_tokens={warmup}", f"train.checkpoint_steps={points}", "train.keep_checkpoints=1",
        ]))
    return configs


def decay_steps(general_tokens: int, fraction: float, step_tokens: int) -> int:
    return max(1, round(fraction * general_tokens / step_tokens))


def branch_point(general_tokens: int, fraction: float, step_tokens: int) -> int:
    steps = _whole_steps(general_tokens, step_tokens, "--general-tokens")
    point = steps - decay_steps(general_tokens, fraction, step_tokens)
    if point < 1:
        raise ScarceError(f"--general-tokens {general_tokens}: its decay takes every step; raise it")
    return point


def branch_configs(trunks: list[Path], grid: Grid, study: str) -> list[RunConfig]:
    """A decay branch off each trunk for every D below the largest."""
    from scarce.train.init import branch_config

    configs = []
    for trunk in trunks:
        source = RunConfig.model_validate(runs.read_config(trunk))
        step_tokens = source.train.batch_size * source.model.seq_len
        for d in sorted(set(grid.general_tokens) - {max(grid.general_tokens)}):
            point = branch_point(d, grid.decay_fraction, step_tokens)
            configs.append(branch_config(f"{trunk}@{point}", [
                f"name={study}-{source.model.size}-D{d}", f"train.tokens={round(d / step_tokens) * step_tokens}",
                f"optim.decay_tokens={decay_steps(d, grid.decay_fraction, step_tokens) * step_tokens}"]))
    return configs


def specialist_tokens(base: RunConfig, grid: Grid) -> dict[str, list[int]]:
    """The D' values of each domain specialized on, in the config's domain order."""
    if isinstance(grid.domain_tokens, dict):
        chosen = [n for n in base.data.domains if n in grid.domain_tokens and (not grid.domains or n in grid.domains)]
        return {n: list(grid.domain_tokens[n]) for n in chosen}
    return {n: list(grid.domain_tokens) for n in base.data.domains if not grid.domains or n in grid.domains}


def specialist_configs(base: RunConfig, generals: list[Path], grid: Grid, study: str) -> list[RunConfig]:
    """Every general model continued on each domain alone for each D' (the other domains weighted 0: the
    same store and tokenizer, and evaluated on every domain)."""
    step_tokens = base.train.batch_size * base.model.seq_len
    configs = []
    for general in generals:
        source = RunConfig.model_validate(runs.read_config(general))
        d = runs.read_summary(general)["tokens_seen"]
        for domain, values in specialist_tokens(base, grid).items():
            weights = [f"data.domains.{name}.weight={1.0 if name == domain else 0.0}" for name in base.data.domains]
            for d_spec in values:
                steps = _whole_steps(d_spec, step_tokens, "--domain-tokens")
                data = _dump(base)
                # the general phase's absolute warm-up and decay are not the specialist's: it re-warms
                data["optim"] = {k: v for k, v in data["optim"].items() if k not in ("warmup_tokens", "decay_tokens")}
                data["init"] = {"from_run": str(general)}
                configs.append(resolve_config(data, [
                    f"name={study}-{source.model.size}-D{d}-{domain}-{d_spec}", f"study={study}",
                    f"model.size={source.model.size}", *weights, "train.checkpoint_steps=[]",
                    "train.keep_checkpoints=1", f"train.tokens={steps * step_tokens}",
                    *SPECIALIST_DEFAULTS, *grid.specialist_overrides,
                ]))
    return configs


def run_study(base: RunConfig, grid: Grid, study: str = "specialize", executor: Executor | str = "local",
              console: Console | None = None, live: bool = False) -> list[Point]:
    """Run (or finish) the whole grid and return its points; writes `<runs_dir>/<study>-points.csv` and
    `<runs_dir>/<study>-unique-tokens.json`.

    base: a config with `data.domains`; grid: what to run; study: the study's name (its runs carry
    `study = NAME`, its manifest is `<runs_dir>/sweeps/NAME/manifest.json`); executor: a
    `scarce.executors.Executor` or its name ("local", "serial", "submitit", "ray"). Each stage (trunks,
    decay branches, specialists) is one batch of jobs for the executor, since each starts from the last
    stage's runs. Calling it again skips finished runs and resumes unfinished ones (`Study.run`).
    """
    console = console or Console(stderr=True)
    check_study_name(study)
    unique = _check(base, grid)
    executor = make_executor(executor) if isinstance(executor, str) else executor
    spec = {"grid": asdict(grid), "base_config": base.model_dump(mode="json")}
    with Study(study, base.runs_dir, "specialize", spec) as runner:
        console.print(f"specialize {study}: {len(grid.sizes)} size(s) × {len(grid.general_tokens)} D × "
                      f"{sum(map(len, specialist_tokens(base, grid).values()))} (domain, D') on {executor.name}; "
                      f"manifest {runner.manifest_path}")
        stage = lambda what, configs: _run_stage(runner, what, configs, executor, console, live)
        trunks = stage("trunks", trunk_configs(base, grid, study))
        generals = trunks + stage("decay branches", branch_configs(trunks, grid, study))
        specialists = stage("specialists", specialist_configs(base, generals, grid, study))
    found = points(generals + specialists)
    write_points(found, Path(base.runs_dir) / f"{study}-points.csv")
    write_json_atomic(Path(base.runs_dir) / f"{study}-unique-tokens.json", unique)
    return found


def _run_stage(runner: Study, what: str, configs: list[RunConfig], executor: Executor, console: Console,
               live: bool) -> list[Path]:
    """One stage as one batch of jobs; the completed runs' directories, in order. A failed run stops the
    study before the stages that would start from it; a diverged one is left out of them."""
    console.rule(f"{runner.name}: {len(configs)} {what}")
    outcomes = runner.run(configs, [{"run": c.name} for c in configs], executor, console, live=live, keep_names=True)
    failed = [o for o in outcomes if o.status not in ("completed", "diverged")]
    if failed:
        raise ScarceError(f"{len(failed)} of the {what} failed ({', '.join(o.point['run'] for o in failed)}; logs in "
                          f"{runner.dir / 'logs'}): fix the cause and run the same study again to resume them")
    for o in outcomes:
        if o.status == "diverged":
            console.print(f"[yellow]{o.point['run']} diverged[/yellow]: nothing is built on it", highlight=False)
    return [o.run_dir for o in outcomes if o.status == "completed"]


# ---------------------------------------------------------------- points


def points(run_dirs: list[Path]) -> list[Point]:
    """One point per (run, domain it speaks for): a general model for every domain (D' = 0), a specialist
    for its own domain."""
    out = []
    for run_dir in run_dirs:
        s = runs.read_summary(run_dir)
        if s.get("status") != "completed":
            continue
        if s["domain"] == "mixture":
            names = [k.removeprefix("final_val_loss.") for k in s if k.startswith("final_val_loss.")]
            out += [Point(n, s["params"], s["tokens_seen"], 0, s[f"final_val_loss.{n}"], s["run_id"]) for n in names]
        else:
            out.append(Point(s["domain"], s["params"], s["general_tokens"], s["domain_tokens"], s["domain_val_loss"],
                             s["run_id"]))
    return out


def write_points(found: list[Point], path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f for f in Point.__dataclass_fields__])
    writer.writeheader()
    writer.writerows(asdict(p) for p in found)
    write_bytes_atomic(Path(path), buffer.getvalue().encode())
    return Path(path)


def read_points(path: Path) -> list[Point]:
    path = Path(path)
    if not path.is_file():
        raise ScarceError(f"points file {path} does not exist (run `scarce specialize` first)")
    with path.open(newline="") as f:
        return [Point(r["domain"], int(float(r["params"])), int(float(r["general_tokens"])),
                      int(float(r["domain_tokens"])), float(r["loss"]), r["run_id"]) for r in csv.DictReader(f)]


def fit_study(runs_dir: Path, study: str, law_names: list[str], bootstrap: int, tokens_per_step: int,
              holdout: str = "N") -> tuple[dict, Path, Path | None]:
    """Fit and compare the laws (default both specialization forms) on a study's points, per domain; write
    `<study>-fit.json` and `<study>-fit.png`. Returns the fit document and the two paths (no plot: None)."""
    from scarce.laws.forms import build_law
    from scarce.laws.io import write_json
    from scarce.laws.specialization import fit_domains, plot_domains

    found = read_points(runs_dir / f"{study}-points.csv")
    unique = json.loads((runs_dir / f"{study}-unique-tokens.json").read_text())
    laws = [build_law(name, ["N", "D", "D_spec"]) for name in law_names or
            ["specialization_transfer", "specialization_additive"]]
    document = fit_domains(found, laws, bootstrap=bootstrap, source=f"{runs_dir}/{study}-points.csv",
                           tokens_per_step=tokens_per_step, unique_tokens=unique, holdout=holdout)
    out = runs_dir / f"{study}-fit.json"
    write_json(document, out)
    return document, out, plot_domains(document, found, runs_dir / f"{study}-fit.png")
