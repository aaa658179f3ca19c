"""Run directories, the SQLite index of all runs under a runs directory, filters, and run identity.

A run is a directory `<runs_dir>/<run_id>/` holding `config.json` (the resolved config), `metrics.jsonl`
(one JSON record per line), `summary.json` (written by the trainer) and `checkpoints/`. The run
directories are the truth; `<runs_dir>/index.sqlite` is a cache of their summaries and configs that
`reindex()` can always rebuild. This module must stay torch-free: the scaling-law code reads its tables. A run is identified by its
resolved config: `run_key(config)`, and `runs_by_key(runs_dir)` finds the directories holding each key.
"""

import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scarce.atomic import make_temp_dir, write_bytes_atomic
from scarce.config import RunConfig
from scarce.errors import ScarceError, format_validation_error
from scarce.processes import pid_alive

INDEX_FILE = "index.sqlite"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
LOCK_FILE = "lock"  # held by the process writing the run (scarce.runs.lock_run)
HEARTBEAT_FILE = "heartbeat"  # touched every HEARTBEAT_SECONDS by that process
SET_ASIDE_DIR = ".set-aside"  # runs moved out of the way (damaged, or started over), never deleted
HEARTBEAT_SECONDS = 30.0
# A run on another host is taken for dead once its heartbeat is this old (on its own host its pid says).
STALE_HEARTBEAT_SECONDS = 600.0

# The trainer's summary.json keys, in the order tables and CSVs show them.
SUMMARY_KEYS = (
    "run_id", "name", "status", "created_at", "finished_at", "code_version", "device",
    "params", "non_embedding_params", "flops_per_token", "flops", "unique_tokens", "epochs",
    "epochs_completed", "tokens_seen", "steps", "final_val_loss", "best_val_loss", "final_val_bpb",
    "wall_seconds",
)
STATUSES = ("running", "completed", "diverged", "failed")
CRASHED = "crashed"  # shown, never written: a run still "running" whose process is gone
DAMAGED = "damaged"  # run_status of a run whose summary.json cannot be read

# Bump when the table's columns change: an index with another version is rebuilt from the run dirs.
_SCHEMA_VERSION = 1
_TEXT_KEYS = {"run_id", "name", "status", "created_at", "finished_at", "code_version", "device"}
# FLOP counts pass 2**63 at research scale, so every non-text column is REAL (exact up to 2**53).
_COLUMNS = [f"{k} {'TEXT' if k in _TEXT_KEYS else 'REAL'}" for k in SUMMARY_KEYS if k != "run_id"]
_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, "
    + ", ".join(_COLUMNS)
    + ", summary_json TEXT NOT NULL, config_json TEXT NOT NULL, path TEXT NOT NULL)"
)
_INSERT = (
    f"INSERT OR REPLACE INTO runs ({', '.join(SUMMARY_KEYS)}, summary_json, config_json, path) "
    f"VALUES ({', '.join('?' * (len(SUMMARY_KEYS) + 3))})"
)
_BUSY_TIMEOUT_SECONDS = 30.0

# ---------------------------------------------------------------- run directories


_last_start_ms = 0
_RUN_ID_STAMP = re.compile(r"-(\d{8}-\d{6}(?:\.\d+)?)-[0-9a-f]+$")


def new_run_id(name: str) -> str:
    """`<name>-<YYYYmmdd-HHMMSS.mmm UTC>-<4 hex>`: unique, safe as a dir name, and its time orders runs.

    Milliseconds, strictly increasing within a process, so runs a sweep starts in the same second still
    list in the order they started; the random suffix only separates processes starting in the same ms.
    """
    global _last_start_ms
    _last_start_ms = max(time.time_ns() // 1_000_000, _last_start_ms + 1)
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "run"
    start = datetime.fromtimestamp(_last_start_ms / 1000, UTC)
    return f"{safe_name}-{start:%Y%m%d-%H%M%S}.{_last_start_ms % 1000:03d}-{secrets.token_hex(2)}"


def start_order(row: dict) -> tuple[str, str, str]:
    """Oldest first: by created_at, then by the start time in the run id (created_at has whole seconds),
    then by id. Imported runs with other ids or no created_at still get a fixed place."""
    run_id = str(row.get("run_id", ""))
    stamp = _RUN_ID_STAMP.search(run_id)
    return str(row.get("created_at") or ""), stamp.group(1) if stamp else "", run_id


def _json_bytes(obj: Any, what: str) -> bytes:
    def default(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    try:
        return (json.dumps(obj, indent=2, sort_keys=True, default=default) + "\n").encode()
    except (TypeError, ValueError) as e:
        raise ScarceError(f"cannot write {what}: {e}") from e


def create_run_dir(runs_dir: Path, name: str, config: dict) -> Path:
    """Make `runs_dir/<run_id>/` with config.json and an empty checkpoints/, all at once.

    The directory is built under a hidden temporary name and renamed into place, so other processes
    (and reindex) never see a run without its config.
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    config_bytes = _json_bytes(config, f"{CONFIG_FILE} for run {name!r}")
    tmp = make_temp_dir(runs_dir, ".new-run-")
    try:
        write_bytes_atomic(tmp / CONFIG_FILE, config_bytes)
        (tmp / CHECKPOINTS_DIR).mkdir()
        for _ in range(10):
            run_dir = runs_dir / new_run_id(name)
            try:
                # rename refuses a non-empty target, so two processes can never claim one id.
                os.rename(tmp, run_dir)
                return run_dir
            except OSError:
                if not run_dir.exists():
                    raise
        raise ScarceError(f"could not find a free run id for {name!r} in {runs_dir}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one JSON line to metrics.jsonl and flush it, so a crash loses at most this line."""
    line = json.dumps(record, default=str) + "\n"
    with open(Path(run_dir) / METRICS_FILE, "a+b") as f:
        # A process killed mid-write leaves a line without its newline; start on a fresh line so
        # the torn line stays the only bad one instead of swallowing this record too.
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()


def read_metrics(run_dir: Path) -> list[dict]:
    """All records in metrics.jsonl (empty if none), skipping lines torn by a killed process."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    # "\n" only: splitlines() would also split inside strings holding U+2028, U+2029 or NEL.
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):  # a torn line, or bytes written by something else
            # A kill tears the last line; a resumed run then appends after it (append_metrics starts
            # a fresh line), so a torn line can also sit mid-file. Say so unless it is simply the last.
            if number != len(lines):
                warnings.warn(f"{path}, line {number}: skipped a line that is not valid JSON", stacklevel=2)
    return records


def write_metrics(run_dir: Path, records: list[dict]) -> None:
    """Replace metrics.jsonl with records, atomically (a resumed run drops what it will log again)."""
    text = "".join(json.dumps(record, default=str) + "\n" for record in records)
    write_bytes_atomic(Path(run_dir) / METRICS_FILE, text.encode())


def write_summary(run_dir: Path, summary: dict) -> None:
    """Write summary.json atomically: readers see the old summary or the new one, never half."""
    write_bytes_atomic(Path(run_dir) / SUMMARY_FILE, _json_bytes(summary, f"{SUMMARY_FILE} in {run_dir}"))


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScarceError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScarceError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise ScarceError(f"{path} should hold a JSON object, not {type(obj).__name__}")
    return obj


def read_summary(run_dir: Path) -> dict:
    """summary.json of a run, or a ScarceError naming the file when it is missing or unreadable."""
    return _read_json(Path(run_dir) / SUMMARY_FILE)


def read_config(run_dir: Path) -> dict:
    """The resolved config (nested sections) a run was started with."""
    return _read_json(Path(run_dir) / CONFIG_FILE)


def load_run_config(run_dir: Path) -> RunConfig:
    """The validated config of a run; a ScarceError naming its config.json and the bad keys otherwise."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return RunConfig.model_validate(read_config(run_dir))
    except ValidationError as e:
        raise ScarceError(f"{path} is not a valid run config (written by another version of scarce?):\n"
                          f"{format_validation_error(e)}") from None


# ---------------------------------------------------------------- who writes a run, and runs set aside


def owner() -> dict:
    """This process, as a run's summary records its writer: {"pid", "host"}."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def lock_run(run_dir: Path):
    """Take the run's lock (one writer per run directory); returns the open lock file, which holds it
    until closed (or the process ends, however it ends). A ScarceError naming the holder if it is taken."""
    lock = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ScarceError(f"run {run_dir} is being written by {holder}; wait for it to finish "
                          "(two writers would corrupt the run)") from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    return lock


def touch_heartbeat(run_dir: Path) -> None:
    (Path(run_dir) / HEARTBEAT_FILE).touch()


def owner_alive(run_dir: Path, summary: dict) -> bool:
    """Whether the process that wrote a "running" summary may still be running it: on this host its pid
    must be alive; elsewhere its heartbeat must be younger than STALE_HEARTBEAT_SECONDS. Runs from before
    owners were recorded count as alive (nothing says otherwise)."""
    who = summary.get("owner")
    if not isinstance(who, dict):
        return True
    if who.get("host") == socket.gethostname() and isinstance(who.get("pid"), int):
        return pid_alive(who["pid"])
    try:
        age = time.time() - (Path(run_dir) / HEARTBEAT_FILE).stat().st_mtime
    except OSError:
        return True
    return age < STALE_HEARTBEAT_SECONDS


def shown_status(run_dir: Path, summary: dict) -> str | None:
    """The status to show: "crashed" for a run still marked running whose process is gone."""
    status = summary.get("status")
    if status == "running" and not owner_alive(run_dir, summary):
        return CRASHED
    return status


def set_aside(run_dir: Path, reason: str) -> Path:
    """Move a run out of the runs directory's listing, into `<runs_dir>/.set-aside/`, with a note of why.
    Nothing is deleted: its files can be inspected or recovered there."""
    run_dir = Path(run_dir)
    target_dir = run_dir.parent / SET_ASIDE_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / run_dir.name
    suffix = 1
    while target.exists():
        suffix += 1
        target = target_dir / f"{run_dir.name}.{suffix}"
    os.rename(run_dir, target)
    (target / "SET_ASIDE.txt").write_text(f"{datetime.now(UTC).isoformat(timespec='seconds')}: {reason}\n")
    return target


def run_dirs(runs_dir: Path) -> Iterator[Path]:
    """The run directories under runs_dir: not hidden (runs being created), with a summary.json."""
    for path in sorted(Path(runs_dir).iterdir()):
        if path.is_dir() and not path.name.startswith(".") and (path / SUMMARY_FILE).exists():
            yield path


def flatten(config: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.003}} -> {"optim.lr": 0.003}; lists stay whole values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------- the index


class RunIndex:
    """The SQLite index at `<runs_dir>/index.sqlite`, safe to write from many processes at once.

    Every operation opens its own connection (so forked or spawned processes never share one), and
    every write is one short `BEGIN IMMEDIATE` transaction in WAL mode, waiting up to 30 s for others.
    """

    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self.path = self.runs_dir / INDEX_FILE

    # -- connections

    @contextmanager
    def _open(self, check_schema: bool = True) -> Iterator[sqlite3.Connection]:
        """A fresh connection for one operation; an index from another schema version is rebuilt."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN ourselves, so each write is exactly one transaction.
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_SECONDS * 1000)}")
            self._ensure_wal(conn)
            # NORMAL is crash-safe in WAL mode; a power cut may drop the last commits, which reindex restores.
            conn.execute("PRAGMA synchronous = NORMAL")
            if check_schema and not self._schema_current(conn):
                self.reindex()
            yield conn
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):
                raise  # locked, disk full, ...: not the file's fault
            raise _CorruptIndex(
                f"the run index {self.path} is damaged ({e}); rebuild it from the run directories "
                f"with: scarce runs {self.runs_dir} --reindex"
            ) from e
        finally:
            conn.close()

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout instead
        # of both reading and then failing to upgrade.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _ensure_wal(conn: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive lock and can report "locked" without waiting when
        # several processes create the file at once, so retry within the busy timeout.
        deadline = time.monotonic() + _BUSY_TIMEOUT_SECONDS
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @staticmethod
    def _schema_current(conn: sqlite3.Connection) -> bool:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_table = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone()
        return version == _SCHEMA_VERSION and has_table is not None

    # -- rows

    def _stored_path(self, run_dir: Path) -> str:
        # Runs inside runs_dir are stored by name, so the whole directory can move or be copied.
        run_dir = Path(run_dir).resolve()
        return run_dir.name if run_dir.parent == self.runs_dir.resolve() else str(run_dir)

    def _row_values(self, run_dir: Path) -> tuple:
        run_dir = Path(run_dir)
        summary = read_summary(run_dir)
        # Runs imported from elsewhere may carry only a summary; they still belong in the table.
        config = read_config(run_dir) if (run_dir / CONFIG_FILE).exists() else {}
        summary.setdefault("run_id", run_dir.name)
        columns = [_sql_value(summary.get(k)) for k in SUMMARY_KEYS]
        return (*columns, json.dumps(summary), json.dumps(config), self._stored_path(run_dir))

    def record(self, run_dir: Path) -> None:
        """Read run_dir's summary.json and config.json and upsert its row (keyed by run_id). A damaged
        index is rebuilt from the run directories first (it is a cache of them)."""
        values = self._row_values(run_dir)
        try:
            self._insert(values)
        except _CorruptIndex as e:
            self._rebuild_damaged(e)
            self._insert(values)  # a run recorded from outside runs_dir is not found by the rebuild

    def _rebuild_damaged(self, error: Exception) -> None:
        """The index is a cache of the run directories: a damaged one is rebuilt from them, as a schema change is."""
        cause = str(error.__cause__ or error)
        warnings.warn(f"the run index {self.path} was damaged ({cause}); rebuilt it from the run directories",
                      stacklevel=3)
        self.reindex()

    def _insert(self, values: tuple) -> None:
        with self._open() as conn, self._transaction(conn):
            conn.execute(_INSERT, values)

    def writable(self) -> bool:
        """Whether this index can be written (an archived run store may be read-only)."""
        return os.access(self.runs_dir, os.W_OK) and (not self.path.exists() or os.access(self.path, os.W_OK))

    def reindex(self) -> int:
        """Rebuild the index from the run directories (each non-hidden dir with a summary.json).

        A runs directory that does not exist is an error (nothing is created).
        Returns the number of runs indexed. A damaged index file is replaced; a run whose files are
        unreadable is skipped with a warning rather than blocking the rest. The scan happens inside
        the write transaction, so a run recorded concurrently is either seen by the scan or written
        after it, never lost. Runs recorded from outside runs_dir are not found again.
        """
        _require_runs_dir(self.runs_dir)
        if not self.writable():
            raise ScarceError(f"cannot rebuild the run index in {self.runs_dir}: the directory is read-only "
                              "(listing its runs needs no index)")
        try:
            return self._rebuild()
        except _CorruptIndex:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._rebuild()

    def _rebuild(self) -> int:
        count = 0
        with self._open(check_schema=False) as conn, self._transaction(conn):
            conn.execute("DROP TABLE IF EXISTS runs")
            conn.execute(_CREATE_TABLE)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            for run_dir in run_dirs(self.runs_dir):
                try:
                    conn.execute(_INSERT, self._row_values(run_dir))
                    count += 1
                except ScarceError as e:
                    warnings.warn(f"reindex skipped {run_dir}: {e}", stacklevel=3)
        return count

    def rows(self, where: Iterable[str] = ()) -> list[dict]:
        """Every indexed run as a flat dict (summary keys, dotted config keys, `path`), oldest first,
        keeping those that pass every filter in `where` (see `filter_rows`)."""
        if not self.writable():
            stored = self._read_only_rows()
        elif not self.path.exists():
            return []
        else:
            try:
                stored = self._stored_rows()
            except _CorruptIndex as e:
                self._rebuild_damaged(e)
                stored = self._stored_rows()
        rows = []
        for summary_json, config_json, path in stored:
            row = flatten(json.loads(config_json))
            # On a clash (a top-level config key such as "name") the summary's value wins.
            summary = json.loads(summary_json)
            row.update(summary)
            row["path"] = str(self.runs_dir / path)
            row["status"] = shown_status(Path(row["path"]), summary)
            rows.append(row)
        return filter_rows(sorted(rows, key=start_order), where)

    def _stored_rows(self) -> list[tuple[str, str, str]]:
        with self._open() as conn:
            return conn.execute("SELECT summary_json, config_json, path FROM runs").fetchall()

    def _read_only_rows(self) -> list[tuple[str, str, str]]:
        """The rows of a read-only run store: from its index opened immutable (nothing written, not even
        WAL files), or, with no usable index, read from the run directories themselves."""
        if self.path.exists():
            try:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True)
                try:
                    if self._schema_current(conn):
                        return conn.execute("SELECT summary_json, config_json, path FROM runs").fetchall()
                finally:
                    conn.close()
            except sqlite3.DatabaseError:
                pass  # damaged: the run directories are the truth
        stored = []
        for run_dir in run_dirs(self.runs_dir):
            try:
                stored.append(self._row_values(run_dir)[-3:])
            except ScarceError as e:
                warnings.warn(f"skipped {run_dir}: {e}", stacklevel=3)
        return stored


class _CorruptIndex(ScarceError):
    """index.sqlite is not a readable database; reindex replaces it."""


def _sql_value(value: Any) -> Any:
    # SQLite integers stop at 2**63; FLOP counts do not, and the columns are REAL anyway.
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return float(value)
    return json.dumps(value)


# ---------------------------------------------------------------- filters


# the value may not start with an operator character: "epochs>>3" is a typo, not a text comparison
_FILTER = re.compile(r"^\s*([^=!<>\s][^=!<>]*?)\s*(!=|>=|<=|=|>|<)\s*((?![=!<>]).*?)\s*$")
_COMPARE = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def as_text(value: Any) -> str:
    """How a value reads in a filter or a CSV cell: JSON spelling for booleans, null and lists."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def available_keys(rows: list[dict]) -> list[str]:
    """Every key seen in any row: known summary keys first, then the rest sorted, then `path`."""
    seen = {k for row in rows for k in row} | set(SUMMARY_KEYS) | {"path"}
    rest = sorted(seen - set(SUMMARY_KEYS) - {"path"})
    return [*SUMMARY_KEYS, *rest, "path"]


def check_keys(keys: Iterable[str], rows: list[dict], what: str) -> None:
    if not rows:
        return  # nothing indexed yet, so no key can be called unknown (config keys come from runs)
    known = available_keys(rows)
    for key in keys:
        if key not in known:
            raise ScarceError(f"unknown {what} key {key!r}; available keys: {', '.join(known)}")


def parse_filter(text: str) -> tuple[str, str, str]:
    """`"optim.weight_decay>=0.1"` -> ("optim.weight_decay", ">=", "0.1")."""
    match = _FILTER.match(text)
    if not match:
        raise ScarceError(
            f"malformed filter {text!r}; write KEY=VALUE, KEY!=VALUE, KEY>=VALUE, KEY<=VALUE, "
            "KEY>VALUE or KEY<VALUE, e.g. status=completed or optim.weight_decay>=0.1"
        )
    return match.group(1), match.group(2), match.group(3)


def _matches(value: Any, op: str, wanted: str) -> bool:
    a, b = as_number(value), as_number(wanted)
    if a is not None and b is not None and not (math.isnan(a) or math.isnan(b)):
        return _COMPARE[op](a, b)
    if op not in ("=", "!=") and value is None:
        return False  # a missing value is neither above nor below anything
    # Text compares as text, so ISO timestamps order correctly: created_at>=2026-01-01.
    return _COMPARE[op](as_text(value), wanted)


def filter_rows(rows: list[dict], where: Iterable[str] = ()) -> list[dict]:
    """Rows passing every filter. Numbers compare numerically, everything else as text.

    An unknown key is an error listing the available keys; a row lacking a known key has no value
    there (it matches `key=` and `key!=x`, and no ordering).
    """
    if isinstance(where, str):
        where = [where]
    filters = [parse_filter(w) for w in where]
    check_keys((key for key, _, _ in filters), rows, "filter")
    return [row for row in rows if all(_matches(row.get(k), op, v) for k, op, v in filters)]


# ---------------------------------------------------------------- tables and CSV


def _require_runs_dir(runs_dir: Path) -> None:
    if not Path(runs_dir).is_dir():
        raise ScarceError(f"runs directory {runs_dir} does not exist; train a run first or pass another directory")


def load_runs_table(runs_dir: Path, where: Iterable[str] = ()) -> list[dict]:
    """The flat rows of every run under runs_dir passing `where`, oldest first; builds the index if it is missing."""
    runs_dir = Path(runs_dir)
    _require_runs_dir(runs_dir)
    index = RunIndex(runs_dir)
    if not index.path.exists() and index.writable() and any(run_dirs(runs_dir)):
        index.reindex()
    return index.rows(where)


def export_csv(rows: list[dict], path: Path, columns: list[str] | None = None) -> None:
    """Write rows as CSV (atomically). Default columns: every key, summary keys first, then config keys
    sorted, then path. Missing values are empty cells; floats keep full precision."""
    if columns is None:
        present = {k for row in rows for k in row}
        columns = [k for k in available_keys(rows) if k in present]
    else:
        check_keys(columns, rows, "column")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([as_text(row.get(k)) for k in columns])
    write_bytes_atomic(Path(path), buffer.getvalue().encode())




# ---------------------------------------------------------------- run identity

# Config keys that change no result: what a run is called, where it lives, how often it logs and saves.
# (Resume is exact, so checkpointing more often changes nothing; eval_every is kept: it moves best_val_loss.)
KEY_EXCLUDED = ("name", "runs_dir", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints")
FINAL_STATUSES = ("completed", "diverged")  # a run that ended like this is a result; it is never re-run


def run_key(config: RunConfig | dict) -> str:
    """A stable 16-hex-digit hash of the resolved config, without the keys in KEY_EXCLUDED (`study` is in it).

    A dict (a saved config.json) is validated first, so keys added to the config since it was saved
    take their defaults and the key stays the same.
    """
    if isinstance(config, dict):
        config = RunConfig.model_validate(config)
    data = config.model_dump(mode="json")
    for key in KEY_EXCLUDED:
        *sections, leaf = key.split(".")
        node = data
        for section in sections:
            node = node.get(section, {})
        node.pop(leaf, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def runs_by_key(runs_dir: Path, study: str | None = None) -> dict[str, list[Path]]:
    """Run directories under runs_dir (those with a config.json), grouped by run_key; only the runs of
    `study` when given. A directory whose config no longer validates is skipped."""
    found: dict[str, list[Path]] = {}
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return found
    for path in sorted(runs_dir.iterdir()):
        if path.name.startswith(".") or not (path / CONFIG_FILE).is_file():
            continue
        try:
            saved = read_config(path)
            if study is not None and saved.get("study") != study:
                continue
            found.setdefault(run_key(saved), []).append(path)
        except (ScarceError, ValidationError):
            continue
    return found


def run_status(run_dir: Path | None) -> str | None:
    """The status in a run's summary.json, None when it has none (yet), DAMAGED when it cannot be read."""
    if run_dir is None or not (Path(run_dir) / SUMMARY_FILE).is_file():
        return None
    try:
        return read_summary(run_dir).get("status")
    except (ScarceError, OSError):
        return DAMAGED


__all__ = [
    "CRASHED", "DAMAGED", "FINAL_STATUSES", "KEY_EXCLUDED", "STATUSES", "SUMMARY_KEYS", "RunIndex", "append_metrics",
    "available_keys", "create_run_dir", "export_csv", "filter_rows", "load_run_config", "load_runs_table", "lock_run",
    "new_run_id", "owner", "owner_alive", "parse_filter", "read_config", "read_metrics", "read_summary", "run_key",
    "run_status", "runs_by_key", "set_aside", "shown_status", "touch_heartbeat", "write_metrics", "write_summary",
]
