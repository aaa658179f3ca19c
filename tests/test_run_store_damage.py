"""The run store under damage (issue 21): damaged files are set aside and never stop the other runs, a
damaged index is rebuilt, dead runs show as crashed and can start over, one writer per run, checkpoint
fallbacks are said, half-written checkpoints of dead writers are cleaned, read-only stores list."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from typer.testing import CliRunner

from scarce import runs
from scarce.checkpoint import checkpoint_dirs, load_latest_checkpoint, read_checkpoint, save_checkpoint
from scarce.cli import app
from scarce.config import resolve_config
from scarce.data.store import prepare_store
from scarce.errors import ScarceError
from scarce.executors import SerialExecutor
from scarce.studies.sweep import run_sweep
from scarce.train.trainer import restart, resume, train

MICRO = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=4096",
         "data.eval_tokens=512", "train.batch_size=8"]  # 16 steps an epoch
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def kjv_store():
    prepare_store("kjv", vocab_size=512)


def config(tmp_path, *overrides, name="run"):
    return resolve_config({"name": name, "runs_dir": str(tmp_path / "runs")}, [*MICRO, *overrides])


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, (SystemExit, ScarceError)):
        raise result.exception
    return result


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _sweep(tmp_path, values="0.1,0.4"):
    return run_sweep(config(tmp_path), [f"optim.weight_decay={values}"], SerialExecutor(threads=1), name="s", live=False)


# ---------------------------------------------------------------- 1. damaged summaries


def test_damaged_summaries_are_set_aside_never_deleted_and_the_sweep_finishes(tmp_path):
    first = _sweep(tmp_path)
    r1, r2 = (o.run_dir for o in first)
    os.truncate(r1 / runs.SUMMARY_FILE, 50)
    shutil.rmtree(r2 / runs.CHECKPOINTS_DIR)
    os.truncate(r2 / runs.SUMMARY_FILE, 10)

    again = _sweep(tmp_path)  # no error, twice
    again = _sweep(tmp_path)
    assert [o.status for o in again] == ["completed", "completed"]
    assert all(o.run_dir not in (r1, r2) for o in again)
    aside = tmp_path / "runs" / runs.SET_ASIDE_DIR
    for old in (r1, r2):  # kept whole, with a note of why, out of the listing
        assert not old.exists()
        kept = aside / old.name
        assert (kept / runs.METRICS_FILE).stat().st_size > 0 and (kept / runs.CONFIG_FILE).is_file()
        assert "summary.json is unreadable" in (kept / "SET_ASIDE.txt").read_text()
    assert {row["run_id"] for row in runs.load_runs_table(tmp_path / "runs")} == {o.run_dir.name for o in again}


def test_a_run_whose_checkpoints_are_all_damaged_is_set_aside_and_starts_over(tmp_path):
    (done,) = _sweep(tmp_path, "0.1")
    runs.write_summary(done.run_dir, {**runs.read_summary(done.run_dir), "status": "failed"})
    for path in checkpoint_dirs(done.run_dir / runs.CHECKPOINTS_DIR):
        state = path / "state.pt"
        state.write_bytes(b"x" + state.read_bytes()[1:])
    (again,) = _sweep(tmp_path, "0.1")
    assert again.status == "completed" and again.run_dir != done.run_dir
    assert "no intact checkpoint" in (tmp_path / "runs" / runs.SET_ASIDE_DIR / done.run_dir.name / "SET_ASIDE.txt").read_text()


def test_the_sweep_exits_non_zero_when_runs_failed(tmp_path):
    # a budget larger than the corpus passes the config and fails when the run is built
    result = invoke("sweep", f"runs_dir={tmp_path / 'runs'}", *MICRO, "--grid", "data.unique_tokens=4096,10000000000",
                    "--executor", "serial", "--no-live")
    assert isinstance(result.exception, ScarceError) and "1 of 2 runs failed" in str(result.exception)


# ---------------------------------------------------------------- 2. a damaged index


def test_training_with_a_damaged_index_rebuilds_it_and_leaves_no_orphan(tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / runs.INDEX_FILE).write_bytes(b"garbage" * 200)
    with pytest.warns(UserWarning, match="was damaged"):
        run_dir = train(config(tmp_path), progress=False)
    (row,) = runs.load_runs_table(runs_dir)
    assert row["run_id"] == run_dir.name and row["status"] == "completed"


def test_a_run_whose_set_up_fails_after_its_directory_exists_is_marked_failed(tmp_path, monkeypatch):
    def broken(self, run_dir):
        raise ScarceError("the index cannot be written")

    monkeypatch.setattr(runs.RunIndex, "record", broken)
    with pytest.raises(ScarceError, match="cannot be written"):
        train(config(tmp_path), progress=False)
    (run_dir,) = (tmp_path / "runs").glob("run-*")
    summary = runs.read_summary(run_dir)
    assert summary["status"] == "failed" and "cannot be written" in summary["error"]


def test_the_damaged_index_message_names_the_command(tmp_path):
    index = runs.RunIndex(tmp_path)
    (tmp_path / runs.INDEX_FILE).write_bytes(b"garbage" * 200)
    with pytest.raises(ScarceError, match=f"scarce runs {tmp_path} --reindex"):
        with index._open():
            pass


# ---------------------------------------------------------------- 3. crashed runs


def test_a_run_records_its_owner_and_a_heartbeat(tmp_path):
    run_dir = train(config(tmp_path), progress=False)
    summary = runs.read_summary(run_dir)
    assert summary["owner"] == {"pid": os.getpid(), "host": socket.gethostname()}
    assert (run_dir / runs.HEARTBEAT_FILE).is_file()


def _running(runs_dir, owner, heartbeat_age=None):
    run_dir = runs.create_run_dir(runs_dir, "r", {"name": "r"})
    runs.write_summary(run_dir, {"run_id": run_dir.name, "status": "running", "owner": owner})
    if heartbeat_age is not None:
        runs.touch_heartbeat(run_dir)
        then = time.time() - heartbeat_age
        os.utime(run_dir / runs.HEARTBEAT_FILE, (then, then))
    runs.RunIndex(runs_dir).record(run_dir)
    return run_dir


def test_runs_whose_process_is_gone_show_as_crashed(tmp_path):
    here = socket.gethostname()
    dead = _running(tmp_path, {"pid": dead_pid(), "host": here})
    alive = _running(tmp_path, {"pid": os.getpid(), "host": here})
    silent = _running(tmp_path, {"pid": 1, "host": "elsewhere"}, heartbeat_age=runs.STALE_HEARTBEAT_SECONDS + 60)
    beating = _running(tmp_path, {"pid": 1, "host": "elsewhere"}, heartbeat_age=5)
    status = {row["run_id"]: row["status"] for row in runs.load_runs_table(tmp_path)}
    assert status == {dead.name: "crashed", alive.name: "running", silent.name: "crashed", beating.name: "running"}
    assert {r["run_id"] for r in runs.load_runs_table(tmp_path, ["status=crashed"])} == {dead.name, silent.name}


def test_a_resume_that_fails_in_set_up_marks_the_run_failed_and_restart_starts_it_over(tmp_path):
    run_dir = train(config(tmp_path), progress=False)
    runs.write_summary(run_dir, {**runs.read_summary(run_dir), "status": "running",
                                 "owner": {"pid": dead_pid(), "host": socket.gethostname()}})
    for path in checkpoint_dirs(run_dir / runs.CHECKPOINTS_DIR):
        state = path / "state.pt"
        state.write_bytes(b"x" + state.read_bytes()[1:])
    with pytest.raises(ScarceError, match=f"scarce train --restart {run_dir}"):
        resume(run_dir, progress=False)
    assert runs.read_summary(run_dir)["status"] == "failed"  # not "running" for ever

    result = invoke("train", "--restart", run_dir, "--no-progress")
    assert result.exit_code == 0, result.output
    (new,) = (tmp_path / "runs").glob("run-*")
    assert new != run_dir and runs.read_summary(new)["status"] == "completed"
    assert (tmp_path / "runs" / runs.SET_ASIDE_DIR / run_dir.name / runs.CONFIG_FILE).is_file()
    with pytest.raises(ScarceError, match="finished"):
        restart(new, progress=False)


# ---------------------------------------------------------------- 4. one writer per run


def test_a_second_writer_of_a_run_is_refused_naming_the_holder(tmp_path):
    run_dir = train(config(tmp_path, "train.checkpoint_every=4"), progress=False)
    runs.write_summary(run_dir, {**runs.read_summary(run_dir), "status": "running"})
    before = (run_dir / runs.METRICS_FILE).read_bytes()
    lock = runs.lock_run(run_dir)
    try:
        with pytest.raises(ScarceError, match=f"being written by pid {os.getpid()} on {socket.gethostname()}"):
            resume(run_dir, progress=False)
    finally:
        lock.close()
    assert (run_dir / runs.METRICS_FILE).read_bytes() == before
    resume(run_dir, progress=False)  # the lock is released with its holder
    assert runs.read_summary(run_dir)["status"] == "completed"


# ---------------------------------------------------------------- 5. weight transfer falls back aloud


def test_weight_transfer_from_a_damaged_newest_checkpoint_says_so(tmp_path, capsys):
    source = train(config(tmp_path, "train.checkpoint_every=8", name="source"), progress=False)
    newest = checkpoint_dirs(source / runs.CHECKPOINTS_DIR)[0]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    run_dir = train(config(tmp_path, f"init.from_run={source}", name="student"), progress=False)
    err = capsys.readouterr().err.replace("\n", "")
    assert "warning: init.from_run:" in err and "truncated" in err and "falling back" in err
    assert runs.read_summary(run_dir)["init"]["checkpoint_step"] == 8


# ---------------------------------------------------------------- 6. half-written checkpoints of dead writers


def test_stale_temp_dirs_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    stale = tmp_path / f".tmp-step_00000004-{dead_pid()}"
    live = tmp_path / ".tmp-step_00000004-1"  # pid 1 is alive
    for path in (stale, live):
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"x" * 1000)
    save_checkpoint(tmp_path, 8, {"w": torch.zeros(2)}, {"step": 8}, keep=2)
    assert not stale.exists() and live.exists()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_00000008"]


# ---------------------------------------------------------------- 9. unreadable files fall back or are skipped


def test_an_unreadable_state_pt_falls_back_like_a_bad_weights_file(tmp_path):
    for step in (4, 8):
        save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {"step": step}, keep=2)
    newest = tmp_path / "step_00000008"
    blob = b"this is not a pickle"  # a manifest that agrees: only unpickling can tell
    (newest / "state.pt").write_bytes(blob)
    manifest = json.loads((newest / "manifest.json").read_text())
    manifest["files"]["state.pt"] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    (newest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ScarceError, match="state.pt is unreadable"):
        read_checkpoint(newest)
    warnings = []
    path, _, state = load_latest_checkpoint(tmp_path, warn=warnings.append)
    assert path.name == "step_00000004" and state == {"step": 4} and "state.pt is unreadable" in warnings[0]


def test_non_utf8_bytes_in_metrics_are_skipped_and_the_run_resumes(tmp_path):
    run_dir = train(config(tmp_path, "train.checkpoint_every=8", "train.log_every=4"), progress=False)
    with open(run_dir / runs.METRICS_FILE, "ab") as f:
        f.write(b'{"step": 3, "note": "\xff\xfe"}\n')
    with pytest.warns(UserWarning, match="not valid JSON"):
        runs.read_metrics(run_dir)
    runs.write_summary(run_dir, {**runs.read_summary(run_dir), "status": "running"})
    shutil.rmtree(checkpoint_dirs(run_dir / runs.CHECKPOINTS_DIR)[0])  # resume from step 8
    resume(run_dir, progress=False)
    assert runs.read_summary(run_dir)["status"] == "completed"


def test_a_run_config_that_no_longer_validates_is_named(tmp_path):
    run_dir = train(config(tmp_path), progress=False)
    saved = runs.read_config(run_dir)
    saved["optim"]["lr"] = -1
    (run_dir / runs.CONFIG_FILE).write_text(json.dumps(saved))
    for command in (["eval", run_dir], ["sample", run_dir, "--tokens", 8, "--out", tmp_path / "s.jsonl"],
                    ["export", run_dir, "--hf", tmp_path / "hf"]):
        result = invoke(*command)
        assert result.exit_code != 0 and f"{run_dir / 'config.json'} is not a valid run config" in str(result.exception)
        assert "optim.lr" in str(result.exception)
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "hf").exists()


# ---------------------------------------------------------------- 7. read-only places


@contextmanager
def read_only(*paths):
    """Make paths immutable (even root cannot write them): chattr +i, undone afterwards."""
    done = []
    try:
        for path in paths:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                pytest.skip("chattr +i is not available here")
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["chattr", "-i", str(path)], check=False)


def test_a_read_only_run_store_lists_exports_and_fits(tmp_path):
    runs_dir = tmp_path / "runs"
    for wd in (0.1, 0.4, 1.6):
        run_dir = runs.create_run_dir(runs_dir, "r", {"name": "r", "optim": {"weight_decay": wd}})
        runs.write_summary(run_dir, {"run_id": run_dir.name, "status": "completed", "final_val_loss": 3 + wd,
                                     "params": 1e6, "unique_tokens": 1e6 * (1 + wd)})
        runs.RunIndex(runs_dir).record(run_dir)
    files = [p for p in runs_dir.iterdir() if p.is_file()]
    with read_only(*files, runs_dir):
        for listing in (["runs", runs_dir], ["runs", runs_dir, "--csv", tmp_path / "out.csv"]):
            result = invoke(*listing)
            assert result.exit_code == 0, result.output
        assert len((tmp_path / "out.csv").read_text().splitlines()) == 4
        result = invoke("fit", "--runs", runs_dir, "--law", "power", "--x", "D=unique_tokens")
        assert result.exit_code == 0, result.output
        result = invoke("train", f"runs_dir={runs_dir}", *MICRO, "--no-progress")
        assert isinstance(result.exception, ScarceError) and f"runs_dir {runs_dir} is read-only" in str(result.exception)
        result = invoke("sweep", f"runs_dir={runs_dir}", *MICRO, "--grid", "optim.lr=0.001,0.002", "--no-live")
        assert isinstance(result.exception, ScarceError) and f"runs_dir {runs_dir} is read-only" in str(result.exception)
    # without its index, too: the run directories are read directly
    (runs_dir / runs.INDEX_FILE).unlink()
    with read_only(runs_dir):
        assert len(runs.load_runs_table(runs_dir)) == 3
        assert not (runs_dir / runs.INDEX_FILE).exists()


def test_a_scarce_home_that_is_a_file_or_read_only_is_named(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("SCARCE_HOME", str(home))
    result = invoke("data", "prepare", "kjv", "--vocab-size", 300)
    assert isinstance(result.exception, ScarceError) and f"SCARCE_HOME {home} is a file" in str(result.exception)
    home.unlink()
    home.mkdir()
    with read_only(home):
        result = invoke("data", "prepare", "kjv", "--vocab-size", 300)
        assert isinstance(result.exception, ScarceError) and f"{home / 'data'} cannot be created" in str(result.exception)
