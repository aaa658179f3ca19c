"""Sweeps: every combination of a few values of a few config keys, run through an executor, resumable.

A *study* is a named set of runs in one runs directory. Its runs carry `study = <name>` in their
config, so `scarce runs --where study=<name>` lists them, and it keeps its bookkeeping in
`<runs_dir>/sweeps/<name>/`: `manifest.json` (what was asked for and how each run ended), `lock` (one
driver at a time) and `logs/<key>.log` (each run's console output).

Running a study never repeats a finished run. Runs are found by their key (`scarce.runs.run_key`,
a hash of the resolved config without `name` and `runs_dir`; `study` is part of it, so two studies
never share runs). For each requested config:

- a run with that key that completed or diverged is a result, read back and not run again;
- an unfinished run (killed, failed, interrupted) with an intact checkpoint is resumed from its newest one;
- an unfinished run without a checkpoint yet is deleted (and dropped from the index) and started over;
- a run whose summary.json is unreadable, or whose checkpoints are all damaged, is set aside whole
  (`scarce.runs.set_aside`, never deleted) and started over; it never stops the other runs.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from scarce import runs
from scarce.atomic import write_json_atomic
from scarce.config import RunConfig, parse_override, resolve_config
from scarce.errors import ScarceError
from scarce.executors import Executor, Job, RunResult
from scarce.paths import writable_dir
from scarce.runs import DAMAGED, FINAL_STATUSES, run_key, run_status, runs_by_key

SWEEPS_DIR = "sweeps"
NOT_SWEEPABLE = ("name", "runs_dir", "study")  # labels and places, not settings
METRICS = ("final_val_loss", "best_val_loss")
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Outcome:
    """How one run of a study ended (or stands)."""

    key: str
    point: dict[str, Any]  # the swept values of this run, e.g. {"optim.weight_decay": 0.4}
    status: str  # pending, running, completed, diverged, failed
    run_dir: Path | None = None
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    error: str | None = None
    reused: bool = False  # finished before this invocation

    def loss(self, metric: str) -> float:
        """The metric, or +inf for a run without one (failed, diverged): never the best."""
        value = getattr(self, metric)
        return value if self.status == "completed" and value is not None and math.isfinite(value) else math.inf


# ---------------------------------------------------------------- grids


def _leaf_keys(config: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config.items():
        keys |= _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return keys


def check_config_key(key: str, base: RunConfig, flag: str = "--grid") -> None:
    """A ScarceError unless `key` names one setting of the config (e.g. optim.weight_decay)."""
    if key in NOT_SWEEPABLE:
        raise ScarceError(f"{flag} {key}: {key!r} names or places runs and cannot be swept; sweep a setting instead")
    keys = _leaf_keys(base.model_dump(mode="json")) - set(NOT_SWEEPABLE)
    if key not in keys:
        section, _, leaf = key.rpartition(".")
        initials = lambda k: "".join(word[:1] for word in k.rpartition(".")[2].split("_"))  # weight_decay: wd
        close = [k for k in sorted(keys) if k.rpartition(".")[0] == section and leaf in (initials(k), k.rpartition(".")[2][:len(leaf)])]
        close = list(dict.fromkeys(close + difflib.get_close_matches(key, sorted(keys), n=3)))[:3]
        hint = f"did you mean {' or '.join(close)}?" if close else "see the sections of examples/micro.toml"
        raise ScarceError(f"{flag} key {key!r} is not a config key; {hint}")


def parse_grid(specs: Sequence[str], base: RunConfig) -> dict[str, list[Any]]:
    """`["optim.weight_decay=0.1,0.4", "train.epochs=4,16"]` -> {"optim.weight_decay": [0.1, 0.4], "train.epochs": [4, 16]}.

    Values read as TOML (numbers, booleans), else as strings. Every key must be a config key, given
    once, with distinct non-empty values.
    """
    if not specs:
        raise ScarceError("a sweep needs at least one --grid KEY=V1,V2,..., e.g. --grid optim.weight_decay=0.1,0.4,1.6")
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ScarceError(f"--grid {spec!r} must look like KEY=V1,V2,..., e.g. optim.weight_decay=0.1,0.4,1.6")
        key, raw = (part.strip() for part in spec.split("=", 1))
        texts = [text.strip() for text in raw.split(",")]
        if any(not text for text in texts):
            raise ScarceError(f"--grid {spec!r} has an empty value; list the values as {key}=V1,V2,...")
        check_config_key(key, base)
        if key in grid:
            raise ScarceError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2,...")
        values = [parse_override(f"{key}={text}")[1] for text in texts]
        if len({json.dumps(v) for v in values}) != len(values):
            raise ScarceError(f"--grid {spec!r} lists a value twice")
        grid[key] = values
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The product of the value lists, the first key varying slowest."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def point_config(base: RunConfig, point: dict[str, Any], study: str) -> RunConfig:
    """`base` with the dotted keys of `point` set, belonging to `study` (and named after it)."""
    data = base.model_dump(mode="json")
    for key, value in point.items():
        *sections, leaf = key.split(".")
        node = data
        for section in sections:
            node = node[section]
        node[leaf] = value
    data.update(study=study, name=study)
    return resolve_config(data)


def check_study_name(name: str) -> str:
    if not _STUDY_NAME.fullmatch(name):
        raise ScarceError(f"study name {name!r} must be letters, digits, '.', '_' or '-' (it names a directory)")
    return name


def default_name(prefix: str, base: RunConfig, extra: Any) -> str:
    """`<prefix>-<8 hex>`: the same base config and grid always give the same name, so re-running the
    same command picks the study up where it stopped."""
    digest = hashlib.sha256(json.dumps([run_key(base), extra], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return check_study_name(f"{prefix}-{digest}")


# ---------------------------------------------------------------- a study: lock, manifest, resume


class Study:
    """A named set of runs under runs_dir; use as a context manager (it holds the study's lock).

    `spec` is what the study was asked for (its grid, base config, ...), stored in the manifest.
    """

    def __init__(self, name: str, runs_dir: Path, kind: str, spec: dict):
        self.name, self.runs_dir, self.kind, self.spec = check_study_name(name), Path(runs_dir), kind, spec
        self.dir = self.runs_dir / SWEEPS_DIR / name
        self.manifest_path = self.dir / "manifest.json"
        self._lock = None
        self._noted = False  # the checkpoint_every note is said once per study, not once per tuning step

    def __enter__(self) -> Study:
        writable_dir(self.runs_dir, "runs_dir")
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.dir / "lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the OS however this process ends
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ScarceError(
                f"study {self.name!r} in {self.runs_dir} is being run by {holder}; wait for it to finish "
                "(two drivers would train the same runs twice) or give this one another --name"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        self._lock = lock
        try:
            previous = json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}  # none yet (or unreadable): the run directories are the truth, it is rebuilt from them
        now = _now()
        self.manifest = {
            "name": self.name, "kind": self.kind, "created_at": previous.get("created_at", now), "updated_at": now,
            **self.spec, "runs": previous.get("runs", {}),
        }
        if "result" in previous and self.kind == previous.get("kind"):
            self.manifest.setdefault("result", previous["result"])
        self.write_manifest()
        return self

    def __exit__(self, *exc) -> None:
        self.write_manifest()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        self._lock = None

    def write_manifest(self) -> None:
        self.manifest["updated_at"] = _now()
        write_json_atomic(self.manifest_path, self.manifest)

    def _record(self, outcome: Outcome) -> None:
        entry = asdict(outcome)
        entry["run_dir"] = outcome.run_dir.name if outcome.run_dir else None  # run dirs live in runs_dir
        del entry["reused"]
        self.manifest["runs"][outcome.key] = entry

    def run(self, configs: Sequence[RunConfig], points: Sequence[dict], executor: Executor,
            console: Console | None = None, metric: str = "final_val_loss", live: bool = True,
            keep_names: bool = False) -> list[Outcome]:
        """Run the configs (as runs of this study) that have not finished yet; return every outcome, in order.

        Runs are named after the study unless `keep_names` (names change no run key, only run directories)."""
        if self._lock is None:
            raise RuntimeError("use the study as a context manager: with Study(...) as study: study.run(...)")
        console = console or Console(stderr=True)
        label = {"study": self.name} if keep_names else {"study": self.name, "name": self.name}
        configs = [config.model_copy(update=label) for config in configs]
        keys = [run_key(config) for config in configs]
        existing = runs_by_key(self.runs_dir, self.name)
        outcomes: dict[str, Outcome] = {}
        jobs: list[Job] = []
        stale: list[Path] = []
        damaged: dict[Path, str] = {}  # run dir: what is wrong with it
        for key, config, point in zip(keys, configs, points):
            if key in outcomes:
                continue  # the same run asked for twice
            dirs = existing.get(key, [])
            for d in dirs:
                if run_status(d) == DAMAGED:
                    damaged[d] = f"{runs.SUMMARY_FILE} is unreadable"
            dirs = [d for d in dirs if d not in damaged]
            finished = [d for d in dirs if run_status(d) in FINAL_STATUSES]
            if finished:
                outcomes[key] = _outcome_of(key, point, finished[0], reused=True)
                continue
            # Unfinished: resume the most advanced run with an intact checkpoint; the rest start over. A run
            # whose checkpoints are all damaged is set aside (kept), one without any is deleted.
            intact = {d: _newest_intact_checkpoint(d) for d in dirs}
            resumable = sorted((d for d in dirs if intact[d]), key=intact.get)
            resume_dir = resumable[-1] if resumable else None
            for d in dirs:
                if d != resume_dir and not intact[d] and _newest_checkpoint(d):
                    damaged[d] = "no intact checkpoint"
                elif d != resume_dir:
                    stale.append(d)
            outcomes[key] = Outcome(key, dict(point), "pending", resume_dir)
            jobs.append(Job(config, resume_dir, log_path=self.dir / "logs" / f"{key}.log"))
        if any(job.config.train.checkpoint_every == 0 for job in jobs) and not self._noted:
            self._noted = True
            console.print("[yellow]note:[/yellow] train.checkpoint_every=0, so a run interrupted mid-way starts over; "
                          "set it (in steps) to resume such runs mid-way")
        index = runs.RunIndex(self.runs_dir)
        for path, problem in damaged.items():
            moved = runs.set_aside(path, f"{problem}; study {self.name} started this run over")
            console.print(f"[yellow]set aside[/yellow] damaged run {escape(path.name)} ({problem}) in "
                          f"{escape(str(moved.parent))}; it starts over", highlight=False)
        for path in stale:
            shutil.rmtree(path)
        if stale:
            console.print(f"removed {len(stale)} unfinished run(s) of {self.name} with no checkpoint to resume from; "
                          "they start over")
        if stale or damaged:
            index.reindex()  # their rows go with them
        # A run killed between writing its summary and recording it leaves a stale index row; the run
        # directory is the truth, so finished runs are re-recorded where the index disagrees.
        indexed = {row["run_id"]: row.get("status") for row in index.rows()}
        for outcome in outcomes.values():
            if outcome.reused and indexed.get(outcome.run_dir.name) != outcome.status:
                index.record(outcome.run_dir)
        for outcome in outcomes.values():
            self._record(outcome)
        self.write_manifest()

        board = _Board(self.name, list(outcomes.values()), metric)
        job_keys = [run_key(job.config) for job in jobs]

        def on_start(i: int, job: Job) -> None:
            outcome = outcomes[job_keys[i]]
            outcome.status = "running"
            self._record(outcome)
            self.write_manifest()
            board.refresh()

        def on_done(i: int, result: RunResult) -> None:
            outcome = _outcome_of(job_keys[i], outcomes[job_keys[i]].point, result.run_dir, result=result)
            outcomes[outcome.key] = outcome
            board.outcomes[board.index[outcome.key]] = outcome
            self._record(outcome)
            self.write_manifest()
            board.log(outcome)

        with board.show(console, live):
            executor.run(jobs, on_start=on_start, on_done=on_done)
        return [outcomes[key] for key in keys]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _newest_checkpoint(run_dir: Path) -> str:
    """Name of the newest checkpoint directory (step_00000100 sorts by step), or "" if none."""
    from scarce.checkpoint import checkpoint_dirs

    found = checkpoint_dirs(Path(run_dir) / runs.CHECKPOINTS_DIR)
    return found[0].name if found else ""


def _newest_intact_checkpoint(run_dir: Path) -> str:
    """Name of the newest checkpoint whose files match their manifest, or "" if none does."""
    from scarce.checkpoint import checkpoint_dirs, verify_checkpoint

    for path in checkpoint_dirs(Path(run_dir) / runs.CHECKPOINTS_DIR):
        try:
            verify_checkpoint(path)
        except ScarceError:
            continue
        return path.name
    return ""


def _outcome_of(key: str, point: dict, run_dir: Path | None, reused: bool = False,
                result: RunResult | None = None) -> Outcome:
    summary, error = {}, result.error if result else None
    if run_dir is not None and (Path(run_dir) / runs.SUMMARY_FILE).is_file():
        try:
            summary = runs.read_summary(run_dir)
        except ScarceError as e:  # damaged since: this run failed; the next invocation sets it aside
            summary, error = {"status": "failed"}, str(e)
    status = summary.get("status") or (result.status if result else "failed")
    if result is not None and result.status == "failed" and status == "running":
        status = "failed"  # the worker died before the trainer could say so
    return Outcome(key, dict(point), status, Path(run_dir) if run_dir else None, summary.get("final_val_loss"),
                   summary.get("best_val_loss"), error, reused)


# ---------------------------------------------------------------- the live display


def _point_text(point: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in point.items())


@dataclass
class _Board:
    """Runs done / running / failed and the best loss so far, kept live while a study runs."""

    name: str
    outcomes: list[Outcome]
    metric: str
    index: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.index = {o.key: i for i, o in enumerate(self.outcomes)}
        self._live: Live | None = None
        self._console: Console | None = None

    def render(self) -> Group:
        count = lambda *statuses: sum(o.status in statuses for o in self.outcomes)
        reused = sum(o.reused for o in self.outcomes)
        line = Text.assemble(
            (f"{self.name}: ", "bold"), f"{count(*FINAL_STATUSES)}/{len(self.outcomes)} done",
            f" ({reused} from before)" if reused else "", f", {count('running')} running",
            (f", {count('failed')} failed", "red") if count("failed") else "",
            (f", {count('diverged')} diverged", "yellow") if count("diverged") else "",
        )
        best = min(self.outcomes, key=lambda o: o.loss(self.metric), default=None)
        if best is not None and math.isfinite(best.loss(self.metric)):
            line.append(f"; best {self.metric} {best.loss(self.metric):.4f} at {_point_text(best.point)}")
        running = [o for o in self.outcomes if o.status == "running"]
        table = Table.grid(padding=(0, 2))
        for outcome in running:
            table.add_row("  running", _point_text(outcome.point), "(resumed)" if outcome.run_dir else "")
        return Group(line, table)

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def log(self, outcome: Outcome) -> None:
        loss = outcome.loss(self.metric)
        detail = f"{self.metric} {loss:.4f}" if math.isfinite(loss) else (outcome.error or "no loss")
        style = {"completed": "green", "diverged": "yellow"}.get(outcome.status, "red")
        self._console.print(f"[{style}]{outcome.status}[/{style}] {_point_text(outcome.point)}: {detail}"
                            + (f" → {outcome.run_dir}" if outcome.run_dir else ""), highlight=False)
        self.refresh()

    @contextlib.contextmanager
    def show(self, console: Console, live: bool) -> Iterator[None]:
        """Live while the study runs; without `live`, one line per finished run and the tally at the end."""
        self._console = console
        if live:
            with Live(self.render(), console=console, refresh_per_second=2, transient=False) as self._live:
                yield
            self._live = None
        else:
            yield
            console.print(self.render())


def outcomes_table(outcomes: Sequence[Outcome], metric: str = "final_val_loss", title: str | None = None) -> Table:
    """One row per run, best first: the swept values, status, losses and run directory."""
    keys = list(dict.fromkeys(key for o in outcomes for key in o.point))
    table = Table(title=title, header_style="bold")
    for header in [*keys, "status", "final_val_loss", "best_val_loss", "run"]:
        table.add_column(header.replace(".", ".\n").replace("_val_", "_val\n"), overflow="fold")
    best = min((o.loss(metric) for o in outcomes), default=math.inf)
    for outcome in sorted(outcomes, key=lambda o: o.loss(metric)):
        cells = [str(outcome.point.get(key, "")) for key in keys]
        losses = [f"{v:.4f}" if v is not None else "-" for v in (outcome.final_val_loss, outcome.best_val_loss)]
        style = "bold green" if math.isfinite(best) and outcome.loss(metric) == best else None
        table.add_row(*cells, outcome.status, *losses, outcome.run_dir.name if outcome.run_dir else "-", style=style)
    return table


# ---------------------------------------------------------------- scarce sweep


def run_sweep(base: RunConfig, grid_specs: Sequence[str], executor: Executor, name: str | None = None,
              console: Console | None = None, live: bool = True) -> list[Outcome]:
    """Run the product grid over `base` as the study `name` (default: derived from base and grid).

    Everything is checked before anything is written; re-running the same call resumes it.
    """
    console = console or Console(stderr=True)
    grid = parse_grid(grid_specs, base)
    name = check_study_name(name) if name else default_name(f"{base.name}-sweep", base, grid)
    points = grid_points(grid)
    configs = [point_config(base, point, name) for point in points]
    spec = {"grid": grid, "base_config": base.model_dump(mode="json")}
    with Study(name, base.runs_dir, "sweep", spec) as study:
        console.print(f"sweep {name}: {len(points)} runs in {base.runs_dir} on {executor.name}; "
                      f"manifest {study.manifest_path}")
        outcomes = study.run(configs, points, executor, console, live=live)
    console.print(outcomes_table(outcomes, title=f"sweep {name}"))
    return outcomes


__all__ = [
    "METRICS", "NOT_SWEEPABLE", "SWEEPS_DIR", "Outcome", "Study", "check_config_key", "check_study_name",
    "default_name", "grid_points", "outcomes_table", "parse_grid", "point_config", "run_sweep",
]
