"""Sweeps: bad input writes nothing; a sweep killed with kill -9 (driver and workers) and re-run finishes
every grid point exactly once; workers end with a driver killed on its own; a run killed before its first
checkpoint starts over; one driver per sweep."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scarce import runs
from scarce.cli import app
from scarce.config import resolve_config
from scarce.data.store import prepare_store
from scarce.errors import ScarceError
from scarce.executors import SerialExecutor
from scarce.runs import runs_by_key
from scarce.studies.sweep import SWEEPS_DIR, Study, grid_points, parse_grid, point_config, run_sweep

MICRO = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=4096",
         "data.eval_tokens=512", "train.batch_size=8"]  # 16 steps an epoch
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def kjv_store():
    """Tokenize once here, so worker processes find the store cached instead of each building it."""
    prepare_store("kjv", vocab_size=512)


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, (SystemExit, ScarceError)):
        raise result.exception
    return result


def base_config(tmp_path, *overrides):
    return resolve_config({"runs_dir": str(tmp_path / "runs")}, [*MICRO, *overrides])


def test_grid_is_the_product_of_typed_values(tmp_path):
    grid = parse_grid(["optim.weight_decay=0.1,0.4", "train.epochs=4,16", "optim.schedule=cosine,wsd"], base_config(tmp_path))
    assert grid == {"optim.weight_decay": [0.1, 0.4], "train.epochs": [4, 16], "optim.schedule": ["cosine", "wsd"]}
    points = grid_points(grid)
    assert len(points) == 8 and points[1] == {"optim.weight_decay": 0.1, "train.epochs": 4, "optim.schedule": "wsd"}
    config = point_config(base_config(tmp_path), points[1], "s1")
    assert (config.optim.weight_decay, config.train.epochs, config.optim.schedule) == (0.1, 4, "wsd")
    assert config.study == config.name == "s1"


@pytest.mark.parametrize("args,message", [
    ([], "a sweep needs at least one --grid KEY=V1,V2"),
    (["--grid", "optim.weight_decay="], "has an empty value"),
    (["--grid", "optim.weight_decay=0.1,,0.4"], "has an empty value"),
    (["--grid", "optim.wd=0.1,0.4"], "'optim.wd' is not a config key; did you mean optim.weight_decay"),
    (["--grid", "study=a,b"], "names or places runs and cannot be swept"),
    (["--grid", "train.epochs=1,2", "--grid", "train.epochs=4"], "train.epochs is given twice"),
    (["--grid", "train.epochs=1,2,1"], "lists a value twice"),
    (["--grid", "optim.weight_decay=-1,0.1"], "optim.weight_decay: Input should be greater than or equal to 0"),
    (["--grid", "train.epochs=1,2", "--executor", "dask"], "unknown executor 'dask'"),
    (["--grid", "train.epochs=1,2", "--workers", "0"], "--workers must be at least 1"),
    (["--grid", "train.epochs=1,2", "--name", "a/b"], "study name 'a/b' must be letters"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    result = invoke("sweep", f"runs_dir={tmp_path / 'runs'}", *MICRO, *args)
    assert isinstance(result.exception, ScarceError), result.output
    assert message in str(result.exception)
    assert not (tmp_path / "runs").exists()


def test_one_driver_per_sweep(tmp_path):
    with Study("busy", tmp_path / "runs", "sweep", {}):
        with pytest.raises(ScarceError, match=rf"study 'busy' in .* is being run by pid {os.getpid()}"):
            run_sweep(base_config(tmp_path), ["train.epochs=1"], SerialExecutor(threads=1), name="busy", live=False)
    assert not list((tmp_path / "runs").glob("busy-*"))


def test_a_run_killed_before_its_first_checkpoint_starts_over_and_a_finished_one_is_reused(tmp_path):
    runs_dir, base = tmp_path / "runs", base_config(tmp_path)
    # What a kill -9 right after the trainer made the run directory leaves: a "running" run, no checkpoint.
    config = point_config(base, {"optim.weight_decay": 0.1}, "s")
    stale = runs.create_run_dir(runs_dir, "s", config.model_dump(mode="json"))
    runs.write_summary(stale, {"run_id": stale.name, "name": "s", "status": "running"})
    runs.RunIndex(runs_dir).record(stale)

    (outcome,) = run_sweep(base, ["optim.weight_decay=0.1"], SerialExecutor(threads=1), name="s", live=False)
    assert outcome.status == "completed" and not outcome.reused and outcome.run_dir != stale
    assert not stale.exists()
    (row,) = runs.load_runs_table(runs_dir, ["study=s"])  # the stale row went with its directory
    assert row["run_id"] == outcome.run_dir.name and row["status"] == "completed"

    (again,) = run_sweep(base, ["optim.weight_decay=0.1"], SerialExecutor(threads=1), name="s", live=False)
    assert again.reused and again.run_dir == outcome.run_dir
    assert runs.read_summary(again.run_dir)["finished_at"] == runs.read_summary(outcome.run_dir)["finished_at"]
    manifest = json.loads((runs_dir / SWEEPS_DIR / "s" / "manifest.json").read_text())
    assert manifest["grid"] == {"optim.weight_decay": [0.1]}
    assert manifest["runs"][outcome.key]["run_dir"] == outcome.run_dir.name
    assert manifest["runs"][outcome.key]["status"] == "completed"


def _newest_step(run_dir):
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    return int(steps[-1].removeprefix("step_")) if steps else 0


def test_sweep_killed_with_its_workers_and_rerun_completes_each_point_exactly_once(tmp_path):
    runs_dir = tmp_path / "runs"
    args = ["sweep", f"runs_dir={runs_dir}", *MICRO, "train.checkpoint_every=4", "--grid", "train.epochs=1,2,4",
            "--workers", "2", "--threads", "1", "--name", "k", "--no-live"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen([sys.executable, "-m", "scarce.cli", *args], env=env, stdout=log, stderr=log,
                                  start_new_session=True)  # its own process group: the driver and all its workers
    deadline = time.monotonic() + 240
    completed, midway = [], []
    while time.monotonic() < deadline and driver.poll() is None:
        summaries = {d: runs.read_summary(d) for d in runs_dir.glob("k-*") if (d / "summary.json").exists()}
        completed = [d for d, s in summaries.items() if s["status"] == "completed"]
        midway = [d for d, s in summaries.items() if s["status"] == "running" and 0 < _newest_step(d) < s["steps_total"]]
        if completed and midway:
            os.killpg(driver.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert driver.wait() == -signal.SIGKILL, "the sweep ended before it could be killed:\n" + (tmp_path / "driver.log").read_text()
    finished_before = {d: runs.read_summary(d)["finished_at"] for d in completed}
    assert runs.read_summary(midway[0])["status"] == "running"  # killed: nobody marked it

    result = invoke(*args)  # the same command again
    assert result.exit_code == 0, result.output
    rows = runs.load_runs_table(runs_dir, ["study=k"])
    assert sorted(r["epochs"] for r in rows) == [1, 2, 4]  # no lost run, no duplicate row
    assert len({r["run_id"] for r in rows}) == 3 and all(r["status"] == "completed" for r in rows)
    by_key = runs_by_key(runs_dir, study="k")
    assert len(by_key) == 3 and all(len(dirs) == 1 for dirs in by_key.values())
    for run_dir, finished_at in finished_before.items():  # finished runs were not run again
        assert runs.read_summary(run_dir)["finished_at"] == finished_at
    assert midway[0].exists() and runs.read_summary(midway[0])["status"] == "completed"  # resumed in place
    steps = [r["step"] for r in runs.read_metrics(midway[0])]
    assert steps == sorted(set(steps))
    logs = "".join(p.read_text() for p in (runs_dir / SWEEPS_DIR / "k" / "logs").glob("*.log")).replace("\n", "")
    assert f"resuming {midway[0]}" in logs
    manifest = json.loads((runs_dir / SWEEPS_DIR / "k" / "manifest.json").read_text())
    assert sorted(entry["status"] for entry in manifest["runs"].values()) == ["completed"] * 3

    again = invoke(*args)
    assert again.exit_code == 0 and "3/3 done (3 from before)" in again.output


def _live_processes_in_session(sid: int) -> list[int]:
    """Linux: pids of the session's processes that are neither gone nor zombies."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, _pgrp, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue
        if int(session) == sid and state != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_workers_end_with_a_driver_killed_on_its_own(tmp_path):
    """kill -9 of the driver's pid alone: its workers stop instead of training on unattended (a re-run
    would resume the very runs they are still writing)."""
    runs_dir = tmp_path / "runs"
    args = ["sweep", f"runs_dir={runs_dir}", *MICRO, "--grid", "train.epochs=200,201", "--workers", "2",
            "--threads", "1", "--name", "orphans", "--no-live"]
    driver = subprocess.Popen([sys.executable, "-m", "scarce.cli", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(runs_dir.glob("orphans-*/metrics.jsonl")):
            time.sleep(0.05)  # a worker is training
        assert driver.poll() is None and len(_live_processes_in_session(driver.pid)) > 1
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _live_processes_in_session(driver.pid):
            time.sleep(0.1)
        assert _live_processes_in_session(driver.pid) == []
    finally:
        for pid in _live_processes_in_session(driver.pid):
            os.kill(pid, signal.SIGKILL)
