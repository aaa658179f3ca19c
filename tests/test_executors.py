"""Executors: run keys, choosing an executor, and the local pool, submitit and Ray each running micro runs,
with a failing run reported and not stopping the others."""

import json
import sys

import pytest

from scarce import runs
from scarce.config import resolve_config
from scarce.data.store import prepare_store
from scarce.errors import ScarceError
from scarce.executors import Job, LocalExecutor, RayExecutor, SubmititExecutor, make_executor
from scarce.runs import KEY_EXCLUDED, run_key, runs_by_key
from scarce.studies.sweep import run_sweep

MICRO = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=4096",
         "data.eval_tokens=512", "train.batch_size=8"]


@pytest.fixture(scope="module", autouse=True)
def kjv_store():
    """Tokenize once here, so worker processes find the store cached instead of each building it."""
    prepare_store("kjv", vocab_size=512)


def config(tmp_path, *overrides, name="run"):
    return resolve_config({"name": name, "runs_dir": str(tmp_path / "runs")}, [*MICRO, *overrides])


def test_run_key_ignores_labels_and_cadence_but_not_settings_or_study(tmp_path):
    base = config(tmp_path)
    assert "name" in KEY_EXCLUDED and "train.checkpoint_every" in KEY_EXCLUDED
    same = resolve_config({"name": "other", "runs_dir": "/elsewhere"},
                          [*MICRO, "train.log_every=3", "train.checkpoint_every=5", "train.keep_checkpoints=4"])
    assert run_key(same) == run_key(base)
    assert run_key(config(tmp_path, "optim.weight_decay=0.4")) != run_key(base)
    assert run_key(config(tmp_path, "train.eval_every=4")) != run_key(base)  # it moves best_val_loss
    assert run_key(config(tmp_path, "study=s")) != run_key(base)
    saved = json.loads(json.dumps(base.model_dump(mode="json")))
    del saved["optim"]["decay_norms"]  # a config.json written before this key existed: its default fills in
    assert run_key(saved) == run_key(base) and len(run_key(base)) == 16


@pytest.mark.parametrize("args,message", [
    (("dask",), "unknown executor 'dask'; choose one of local, serial, submitit, ray"),
    (("local", 0), "--workers must be at least 1, got 0"),
    (("local", 1, 0), "--threads must be at least 1, got 0"),
    (("serial", 2), "the serial executor runs one run at a time"),
])
def test_bad_executor_choices_are_clear_errors(args, message):
    with pytest.raises(ScarceError, match=message):
        make_executor(*args)


def test_unknown_executor_option_is_named():
    with pytest.raises(ScarceError, match="the ray executor has no option bogus"):
        make_executor("ray", bogus=1)


@pytest.mark.parametrize("name,extra", [("ray", "ray"), ("submitit", "slurm")])
def test_a_missing_optional_package_names_its_extra(monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, name, None)  # what `import name` sees when it is not installed
    with pytest.raises(ScarceError, match=rf"the {name} executor needs .* pip install 'scarce\[{extra}\]'"):
        make_executor(name)


def test_local_pool_runs_in_order_and_a_failing_run_does_not_stop_the_other(tmp_path):
    good = config(tmp_path, name="good")
    bad = config(tmp_path, "data.unique_tokens=10000000000", name="bad")  # more tokens than the corpus has
    started, finished = [], []
    results = LocalExecutor(workers=2, threads=1, gpus=[]).run(
        [bad, Job(good, log_path=tmp_path / "good.log")],
        on_start=lambda i, job: started.append(i), on_done=lambda i, result: finished.append(i),
    )
    assert sorted(started) == sorted(finished) == [0, 1]
    assert [r.config.name for r in results] == ["bad", "good"]
    assert results[0].status == "failed" and results[0].run_dir is None
    assert "unique_tokens=10000000000 exceeds" in results[0].error
    assert results[1].status == "completed" and results[1].error is None
    assert runs.read_summary(results[1].run_dir)["status"] == "completed"
    assert "done: val loss" in (tmp_path / "good.log").read_text()  # the run's output went to its log


def _micro_sweep(tmp_path, executor, name):
    base = config(tmp_path)
    outcomes = run_sweep(base, ["optim.weight_decay=0.1,0.8"], executor, name=name, live=False)
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert [o.point for o in outcomes] == [{"optim.weight_decay": 0.1}, {"optim.weight_decay": 0.8}]
    found = runs_by_key(tmp_path / "runs", study=name)
    assert sorted(found) == sorted(o.key for o in outcomes) and all(len(d) == 1 for d in found.values())
    rows = runs.load_runs_table(tmp_path / "runs", [f"study={name}"])
    assert sorted(r["optim.weight_decay"] for r in rows) == [0.1, 0.8]
    return outcomes


def test_submitit_runs_a_micro_sweep_through_its_local_executor(tmp_path):
    pytest.importorskip("submitit")
    executor = SubmititExecutor(cluster="local", folder=tmp_path / "submitit", poll_seconds=0.2)
    _micro_sweep(tmp_path, executor, "slurm-sweep")
    assert list((tmp_path / "submitit").glob("*/*_result.pkl"))  # it really went through submitit's jobs


def test_ray_runs_a_micro_sweep_on_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _micro_sweep(tmp_path, RayExecutor(workers=2, threads=1), "ray-sweep")
        assert ray.is_initialized()  # the executor leaves a Ray instance it did not start alone
    finally:
        ray.shutdown()


def test_each_local_worker_sees_only_its_own_gpu_and_its_share_of_threads():
    import os
    import time

    with pytest.raises(ScarceError, match="--workers 3 is more than the 2 visible GPUs"):
        LocalExecutor(workers=3, gpus=["4", "6"])
    pool = LocalExecutor(workers=2, threads=1, gpus=["4", "6"])._new_pool()  # no GPU needed: the env is the point
    try:
        for future in [pool.submit(time.sleep, 0.5) for _ in range(2)]:  # both workers up
            future.result()
        seen = {pool.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result() for _ in range(8)}
        assert seen <= {"4", "6"} and pool.submit(os.getenv, "OMP_NUM_THREADS").result() == "1"
    finally:
        pool.shutdown()
