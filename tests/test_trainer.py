"""The trainer end to end on micro models over a small KJV budget: metrics, summary, exact resume after a
real kill, data parallel on 2 CPU processes, divergence, damaged checkpoints, budgets that cannot work."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import scarce.train.trainer as trainer
from scarce import runs
from scarce.checkpoint import checkpoint_dirs, read_checkpoint
from scarce.config import resolve_config
from scarce.errors import ScarceError
from scarce.train.trainer import resume, train

# 12,288 unique tokens in 32-token sequences: 383 sequences, 48 steps an epoch at batch 8
MICRO = [
    "model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=12288",
    "data.eval_tokens=1024", "train.batch_size=8", "train.log_every=4",
]


def config(tmp_path, *overrides, name="run"):
    return resolve_config({"name": name, "runs_dir": str(tmp_path / "runs")}, [*MICRO, *overrides])


def final_weights(run_dir):
    (newest, *_) = checkpoint_dirs(run_dir / "checkpoints")
    return load_file(newest / "model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_writes_metrics_summary_index_and_learns(tmp_path):
    run_dir = train(config(tmp_path, "train.epochs=2", "train.eval_every=24"), progress=False)
    summary = runs.read_summary(run_dir)
    assert summary["status"] == "completed"
    sequences = (12288 - 1) // 32
    # the 31 budget tokens after the last whole sequence are never trained on: D counts what is
    assert summary["unique_tokens"] == sequences * 32 + 1 and summary["unique_tokens_budget"] == 12288
    assert summary["epochs"] == 2 and summary["epochs_completed"] == 2
    assert summary["tokens_seen"] == 2 * sequences * 32
    assert summary["flops"] == summary["flops_per_token"] * summary["tokens_seen"]
    assert summary["params"] > summary["non_embedding_params"] > 0
    assert summary["best_val_loss"] <= summary["final_val_loss"] < 6.0  # ln(512) = 6.24 is a uniform guess
    metrics = runs.read_metrics(run_dir)
    evals = [r for r in metrics if "val_loss" in r]
    assert [r["step"] for r in evals] == [24, 48, 72, summary["steps"]][: len(evals)] and evals[-1]["step"] == summary["steps"]
    assert metrics[0]["train_loss"] > metrics[-1]["train_loss"]
    assert all(r["tokens_per_second"] > 0 and 0 <= r["loader_fraction"] < 1 for r in metrics if "tokens_per_second" in r)
    (row,) = runs.load_runs_table(tmp_path / "runs")
    assert row["run_id"] == run_dir.name and row["final_val_loss"] == summary["final_val_loss"]


def test_same_seed_same_weights_other_data_seed_other_weights(tmp_path):
    a = final_weights(train(config(tmp_path, name="a"), progress=False))
    b = final_weights(train(config(tmp_path, name="b"), progress=False))
    c = final_weights(train(config(tmp_path, "train.data_seed=1", name="c"), progress=False))
    assert_same_weights(a, b)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def first_step_gradients(cfg):
    """The training loss and the gradients of a run's first optimizer step, before the update."""
    run = trainer._set_up(cfg, None)
    captured = {}

    def capture(*args, **kwargs):
        captured.update({name: p.grad.clone() for name, p in run.model.named_parameters()})

    run.optimizer.step = capture
    loss = trainer.train_step(run, next(iter(run.source)), lr=1e-3)
    return loss, captured


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    # Float sums in another order differ by a few ulps, so the gradients agree to ~1e-7 of their norm on any
    # CPU or BLAS; a micro-batch dropped or scaled wrongly is off by a factor, i.e. by orders of magnitude.
    loss, whole = first_step_gradients(config(tmp_path, name="whole"))
    accumulated_loss, accumulated = first_step_gradients(config(tmp_path, "train.grad_accum=4", name="accum"))
    assert accumulated_loss == pytest.approx(loss, rel=1e-6)
    for name, grad in whole.items():
        assert torch.linalg.norm(accumulated[name] - grad) <= 1e-5 * torch.linalg.norm(grad), name
    # After many steps Adam amplifies those ulps (its update divides by √v), so whole runs agree in loss, not bits.
    full = runs.read_summary(train(config(tmp_path, name="full"), progress=False))
    parts = runs.read_summary(train(config(tmp_path, "train.grad_accum=4", name="parts"), progress=False))
    assert parts["final_val_loss"] == pytest.approx(full["final_val_loss"], abs=1e-3)


# The CLI in a subprocess, with the test-local batch source registered (tests/shifted_source.py).
CLI = ["-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import shifted_source; "
             "from scarce.cli import main; sys.argv[0] = 'scarce'; main()"]


@pytest.mark.parametrize("variant", [
    [], ["data.source=test-shifted", "objective.kind=mir"],
    # killed inside the front-loaded procedural steps (the first 48 of 240), resumed across into the corpus
    ["procedural.task=sort", "procedural.params.length=8", "procedural.mode=mix", "procedural.fraction=0.2"],
    ["train.compile=true"],
], ids=["epochs", "shifted+mir", "front-loaded", "compiled"])
def test_run_killed_mid_way_and_resumed_ends_with_identical_weights(tmp_path, variant):
    overrides = [*MICRO, *variant, "train.epochs=4", "train.checkpoint_every=8", "train.keep_checkpoints=3"]
    args = lambda name: ["train", f"name={name}", f"runs_dir={tmp_path / 'runs'}", *overrides, "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *CLI, *args("whole")], env=env, check=True, capture_output=True)

    killed = subprocess.Popen([sys.executable, *CLI, *args("killed")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and killed.poll() is None:
        found = list((tmp_path / "runs").glob("killed-*/checkpoints/step_00000016"))
        if found:
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert killed.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    (run_dir,) = (tmp_path / "runs").glob("killed-*")
    assert runs.read_summary(run_dir)["status"] == "running"
    assert len(checkpoint_dirs(run_dir / "checkpoints")) < 3 + 1

    subprocess.run([sys.executable, *CLI, "train", "--resume", str(run_dir), "--no-progress"],
                   env=env, check=True, capture_output=True)
    (whole,) = (tmp_path / "runs").glob("whole-*")
    assert_same_weights(final_weights(whole), final_weights(run_dir))
    resumed, uninterrupted = runs.read_summary(run_dir), runs.read_summary(whole)
    assert resumed["status"] == "completed" and resumed["final_val_loss"] == uninterrupted["final_val_loss"]
    steps = [r["step"] for r in runs.read_metrics(run_dir)]
    assert steps == sorted(set(steps)) == [r["step"] for r in runs.read_metrics(whole)]


def test_data_parallel_with_a_one_row_last_batch_finishes(tmp_path):
    """377 sequences at batch 8 leave 1 row for the last step: one rank gets none and must still join in."""
    overrides = [*MICRO, "data.unique_tokens=12065", "train.epochs=1", "train.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*torchrun, "-m", "scarce.cli", "train", "name=short", f"runs_dir={tmp_path / 'runs'}", *overrides, "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").glob("short-*")
    summary = runs.read_summary(run_dir)
    assert summary["status"] == "completed" and summary["tokens_seen"] == 377 * 32 and summary["steps"] == 48


def test_two_process_data_parallel_matches_one_process(tmp_path):
    overrides = [*MICRO, "train.epochs=1", "train.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*torchrun, "-m", "scarce.cli", "train", "name=ddp", f"runs_dir={tmp_path / 'runs'}", *overrides, "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (ddp,) = (tmp_path / "runs").glob("ddp-*")
    single = train(config(tmp_path, "train.epochs=1", name="single"), progress=False)
    summary = runs.read_summary(ddp)
    assert summary["device"] == "cpu x2" and summary["status"] == "completed"
    assert summary["tokens_seen"] == runs.read_summary(single)["tokens_seen"]
    assert summary["final_val_loss"] == pytest.approx(runs.read_summary(single)["final_val_loss"], abs=1e-4)
    a, b = final_weights(ddp), final_weights(single)
    for key in a:  # Adam amplifies the ulps of another summation order in a few elements; the whole tensor agrees
        assert torch.linalg.norm(a[key] - b[key]) <= 1e-3 * torch.linalg.norm(b[key]), key


@pytest.mark.parametrize("checkpoint_every,message", [
    (1, r"(training loss became (nan|inf)|the weights became non-finite) at step \d+ .*"
        r"last good checkpoint is .*step_0000000\d"),
    (0, r"training loss became (nan|inf) at step \d+ .*no checkpoint had been written yet"),
])
def test_divergence_stops_and_names_the_last_good_checkpoint(tmp_path, checkpoint_every, message):
    cfg = config(tmp_path, "train.epochs=4", "optim.lr=1e6", "optim.grad_clip=0", "optim.warmup_fraction=0",
                 f"train.checkpoint_every={checkpoint_every}")
    with pytest.raises(ScarceError, match=message):
        train(cfg, progress=False)
    (run_dir,) = (tmp_path / "runs").glob("run-*")
    assert runs.read_summary(run_dir)["status"] == "diverged"
    for path in checkpoint_dirs(run_dir / "checkpoints"):
        model_state, _ = read_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in model_state.values())


def test_damaged_checkpoint_is_named_and_resume_falls_back(tmp_path, capsys):
    run_dir = train(config(tmp_path, "train.checkpoint_every=16", "train.keep_checkpoints=3"), progress=False)
    newest, previous, _ = checkpoint_dirs(run_dir / "checkpoints")
    runs.write_summary(run_dir, {**runs.read_summary(run_dir), "status": "running"})  # as if killed before the end
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ScarceError, match=f"{weights}.*truncated"):
        read_checkpoint(newest)

    resume(run_dir, progress=False)
    assert f"{weights}" in capsys.readouterr().err.replace("\n", "")
    assert runs.read_summary(run_dir)["status"] == "completed"
    read_checkpoint(checkpoint_dirs(run_dir / "checkpoints")[0])  # the re-done last step is whole again

    runs.write_summary(run_dir, {**runs.read_summary(run_dir), "status": "running"})
    for path in checkpoint_dirs(run_dir / "checkpoints"):
        state = path / "state.pt"
        state.write_bytes(b"x" + state.read_bytes()[1:])  # corrupt, same size
    with pytest.raises(ScarceError, match="(?s)no intact checkpoint.*state.pt is corrupt"):
        resume(run_dir, progress=False)


@pytest.mark.parametrize("overrides,message", [
    (["data.unique_tokens=10000000000"], "unique_tokens=10000000000 exceeds the .* training tokens"),
    (["model.seq_len=20000"], "model.seq_len=20000 needs at least 20001 tokens"),
    (["train.batch_size=6", "train.grad_accum=4"], "batch_size=6 must be divisible by train.grad_accum=4"),
])
def test_impossible_budgets_are_errors_and_write_no_run(tmp_path, overrides, message):
    with pytest.raises(ScarceError, match=message):
        train(config(tmp_path, *overrides), progress=False)
    assert not list((tmp_path / "runs").glob("run-*"))


def test_a_run_that_crashes_is_marked_failed_not_left_running(tmp_path, monkeypatch):
    def broken_evaluate(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer, "score", broken_evaluate)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(config(tmp_path, "train.eval_every=8"), progress=False)
    (run_dir,) = (tmp_path / "runs").glob("run-*")
    assert runs.read_summary(run_dir)["status"] == "failed"
    (row,) = runs.load_runs_table(tmp_path / "runs")
    assert row["status"] == "failed" and row["steps"] == 8


def test_resuming_a_completed_run_is_an_error_and_changes_nothing(tmp_path):
    run_dir = train(config(tmp_path), progress=False)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    row_before = runs.load_runs_table(tmp_path / "runs")
    with pytest.raises(ScarceError, match="already complete"):
        resume(run_dir, progress=False)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert runs.load_runs_table(tmp_path / "runs") == row_before


def test_resume_records_in_the_index_beside_the_run_and_keeps_its_start(tmp_path, monkeypatch):
    """A run copied elsewhere and resumed from another working directory updates its own index only."""
    cfg = config(tmp_path, "train.epochs=2", "train.checkpoint_every=48")
    original = train(cfg, progress=False)
    summary = runs.read_summary(original)
    moved_root = tmp_path / "elsewhere" / "runs"
    moved_root.mkdir(parents=True)
    copy = moved_root / original.name
    shutil.copytree(original, copy)
    newest = checkpoint_dirs(copy / "checkpoints")[0]
    shutil.rmtree(newest)  # as if killed before the final checkpoint
    runs.write_summary(copy, {**summary, "status": "running"})
    monkeypatch.chdir(tmp_path / "elsewhere")  # config.runs_dir is relative: it would point here
    index_before = runs.load_runs_table(tmp_path / "runs")
    resume(copy, progress=False)
    assert runs.load_runs_table(tmp_path / "runs") == index_before  # the original's index is untouched
    (row,) = runs.load_runs_table(moved_root)
    resumed = runs.read_summary(copy)
    assert row["status"] == resumed["status"] == "completed"
    assert resumed["created_at"] == summary["created_at"] and resumed["code_version"] == summary["code_version"]
    assert [r["step"] for r in resumed["resumes"]] == [48]
    assert not (tmp_path / "elsewhere" / "runs" / runs.INDEX_FILE).samefile(tmp_path / "runs" / runs.INDEX_FILE)

