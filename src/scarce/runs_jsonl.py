"""runs.jsonl: a study's runs as one committable file instead of a directory per run.

A first line holds the base config the runs share, then one JSON line per run, sorted by run_id:

    {"base_config": {the study's base config, nested as config.json}}
    {"run_id": ..., "run_key": ..., "config": {dotted key: value, only where it differs from the base config},
     "summary": {summary.json}, "curve": [the metrics.jsonl records that carry a val_loss, in step order]}

The file holds no absolute path, so it reads the same on every machine: a path inside the runs directory
becomes relative to it (a teacher run becomes its run id), any other becomes its last component, and
`runs_dir` is left out. `read_runs_jsonl` gives rows shaped like `scarce.runs.load_runs_table`'s, so the
runs table (`scarce runs FILE.jsonl`), filters and CSV export work on a runs.jsonl as on a runs directory.
"""

import json
import re
import warnings
from collections.abc import Iterable
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from scarce.atomic import write_bytes_atomic
from scarce.errors import ScarceError
from scarce.runs import flatten, read_config, read_metrics, read_summary, run_key, start_order

RUNS_JSONL_FILE = "runs.jsonl"
RECORD_KEYS = ("run_id", "run_key", "config", "summary", "curve")
DROPPED_KEYS = ("runs_dir",)  # where the runs lived on the machine that ran them: meaningless elsewhere
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")  # C:\... or \\server\share


def _pure_path(text: str) -> PurePath | None:
    """The path `text` names if it is absolute (POSIX or Windows), else None."""
    if _WINDOWS_ABSOLUTE.match(text):
        return PureWindowsPath(text)
    return PurePosixPath(text) if text.startswith("/") else None


def _portable(value: Any, roots: list[PurePath]) -> Any:
    """value with every absolute path made relative to the first root holding it, else cut to its name."""
    if isinstance(value, dict):
        return {k: _portable(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, roots) for v in value]
    path = _pure_path(value) if isinstance(value, str) else None
    if path is None:
        return value
    for root in roots:
        if type(root) is type(path) and path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def _config_diff(config: dict, base_config: dict) -> dict:
    """The run's dotted config keys whose value differs from the base's (or that the base lacks)."""
    flat, base = flatten(config), flatten(base_config)
    return {k: v for k, v in flat.items() if k not in DROPPED_KEYS and (k not in base or base[k] != v)}


def _record(run_dir: Path, base_config: dict) -> dict:
    config, summary = read_config(run_dir), read_summary(run_dir)
    run_id = summary.get("run_id") or run_dir.name
    try:
        key = run_key(config)
    except (ScarceError, ValueError) as e:  # a config this version no longer validates (pydantic's
        # ValidationError is a ValueError): keep the run's evidence, without a key
        warnings.warn(f"{run_dir}: no run_key, its config does not validate ({e})", stacklevel=3)
        key = None
    # The runs directory the run was made in, and the one it sits in now (a copied study): both are roots.
    roots = [_pure_path(str(Path(run_dir).resolve().parent))]
    if isinstance(config.get("runs_dir"), str) and _pure_path(config["runs_dir"]):
        roots.insert(0, _pure_path(config["runs_dir"]))
    curve = sorted((r for r in read_metrics(run_dir) if "val_loss" in r), key=lambda r: r.get("step", 0))
    record = {"run_id": run_id, "run_key": key, "config": dict(sorted(_config_diff(config, base_config).items())),
              "summary": dict(sorted(summary.items())), "curve": curve}
    return _portable(record, roots)


def write_runs_jsonl(run_dirs: Iterable[Path], base_config: dict, path: Path) -> int:
    """Write one line per readable run in run_dirs to `path` (atomically); returns the number of runs written.

    base_config: the nested config the runs share (e.g. `RunConfig.model_dump(mode="json")` of a study's
    base); each line keeps only what differs from it. A run whose config or summary cannot be read is
    skipped with a warning, so one damaged run does not block the rest.
    """
    records = []
    for run_dir in run_dirs:
        try:
            records.append(_record(Path(run_dir), base_config))
        except ScarceError as e:
            warnings.warn(f"runs.jsonl skipped {run_dir}: {e}", stacklevel=2)
    records.sort(key=lambda r: r["run_id"])
    runs_dir = _pure_path(str(base_config.get("runs_dir") or ""))
    header = _portable({k: v for k, v in base_config.items() if k not in DROPPED_KEYS}, [runs_dir] if runs_dir else [])
    # Keys in RECORD_KEYS order, so each line starts with its run_id; a line per run keeps git diffs per run.
    text = "".join(json.dumps(r, default=str) + "\n" for r in [{"base_config": header}, *records])
    write_bytes_atomic(Path(path), text.encode())
    return len(records)


def read_runs_jsonl_records(path: Path) -> tuple[dict, list[dict]]:
    """The base config and the run records of a runs.jsonl as written; a line that is not what it should be
    is a ScarceError naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # "\n" only: strings may hold U+2028
    except FileNotFoundError:
        raise ScarceError(f"{path} does not exist") from None
    except UnicodeDecodeError as e:
        raise ScarceError(f"{path} is not UTF-8 text ({e})") from e
    base, records = None, []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScarceError(f"{path}, line {number}: not valid JSON ({e})") from e
        if not isinstance(record, dict):
            raise ScarceError(f"{path}, line {number}: should hold a JSON object, not {type(record).__name__}")
        if base is None:
            if not isinstance(record.get("base_config"), dict):
                raise ScarceError(f"{path}, line {number}: should be the header {{\"base_config\": {{...}}}}")
            base = record["base_config"]
            continue
        missing = [k for k in RECORD_KEYS if k not in record]
        if missing:
            raise ScarceError(f"{path}, line {number}: missing key(s) {', '.join(missing)}")
        for key, kind in (("config", dict), ("summary", dict), ("curve", list)):
            if not isinstance(record[key], kind):
                raise ScarceError(f"{path}, line {number}: {key!r} should be a JSON {kind.__name__}")
        records.append(record)
    if base is None:
        raise ScarceError(f"{path} is empty: a runs.jsonl starts with its base config")
    return base, records


def read_runs_jsonl(path: Path) -> list[dict]:
    """Flat rows like `scarce.runs.load_runs_table`'s, oldest first: dotted config keys (the base config's,
    with each run's differences), summary keys (the summary wins on a clash, as there), `run_key`, and
    `path` (this file)."""
    base, records = read_runs_jsonl_records(path)
    flat_base = flatten(base)
    rows = []
    for record in records:
        row = {**flat_base, **record["config"], "run_key": record["run_key"]}
        row.update(record["summary"])
        row.setdefault("run_id", record["run_id"])
        row["path"] = str(path)
        rows.append(row)
    return sorted(rows, key=start_order)


__all__ = ["RUNS_JSONL_FILE", "read_runs_jsonl", "read_runs_jsonl_records", "write_runs_jsonl"]
