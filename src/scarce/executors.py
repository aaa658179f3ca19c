"""Executors: run many training runs at once, here (a process pool), on Slurm (submitit) or on Ray.

A study (a sweep, a tuning, an ensemble) writes run configs, hands them to an executor as `Job`s and
reads the results back from the run store. An executor decides only *where* runs happen:

    executor = make_executor("local", workers=2)
    results = executor.run([config_a, config_b])      # -> [RunResult(config, run_dir, status, error), ...]

`run` returns one `RunResult` per job, in the order given, once all have ended. A run that fails is a
result with status "failed" and its error, never an exception that stops the others. At most `workers`
runs are in flight at a time; `on_start(i, job)` and `on_done(i, result)` report progress as it happens.

A run is identified by its resolved config (scarce.runs.run_key); studies use it to never repeat a
finished run.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scarce.config import RunConfig
from scarce.errors import ScarceError
from scarce.processes import pid_alive
from scarce.runs import run_key, run_status, runs_by_key

# ---------------------------------------------------------------- jobs and results


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one job, one run
class Job:
    """One run to execute: start `config`, or continue the run in `resume_dir` from its newest checkpoint."""

    config: RunConfig
    resume_dir: Path | None = None
    log_path: Path | None = None  # the run's console output is appended here (None: the worker's stderr)


@dataclass
class RunResult:
    config: RunConfig
    run_dir: Path | None  # None when the run failed before it had a directory
    status: str  # completed, diverged or failed (as in the run's summary.json)
    error: str | None = None


def execute(job: Job, threads: int | None = None) -> RunResult:
    """Run one job in this process; what every executor's workers call. Returns, never raises, for a
    failed run (the trainer has already marked it failed or diverged in its summary)."""
    import torch

    from scarce.train.trainer import resume, train

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    with _output_to(job.log_path), _restore_threads(torch, threads_before):
        try:
            run_dir = resume(job.resume_dir, progress=False) if job.resume_dir else train(job.config, progress=False)
            return RunResult(job.config, Path(run_dir), run_status(run_dir) or "completed")
        except Exception as e:
            traceback.print_exc()
            run_dir = job.resume_dir or _newest_run_dir(job.config)
            status = run_status(run_dir)
            return RunResult(job.config, run_dir, status if status in ("diverged", "failed") else "failed",
                             f"{type(e).__name__}: {e}")


@contextlib.contextmanager
def _restore_threads(torch, threads: int) -> Iterator[None]:
    # The serial executor runs jobs in the caller's process: leave its thread count as it was.
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _output_to(log_path: Path | None) -> Iterator[None]:
    if log_path is None:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def _newest_run_dir(config: RunConfig) -> Path | None:
    """The most recently created directory holding `config` (the one a failed train() made), if any."""
    dirs = runs_by_key(config.runs_dir, config.study).get(run_key(config), [])
    return max(dirs, key=lambda p: p.stat().st_mtime, default=None)


def _failed(job: Job, error: str) -> RunResult:
    """A run whose worker died: find the directory it was writing, if it got that far."""
    run_dir = job.resume_dir or _newest_run_dir(job.config)
    return RunResult(job.config, run_dir, "failed", error)


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, which Slurm and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


# ---------------------------------------------------------------- the interface


OnStart = Callable[[int, Job], None]
OnDone = Callable[[int, RunResult], None]


class Executor:
    """Runs jobs, at most `workers` at once (None: all of them), and returns their results in order.

    Subclasses say how to start one job (`_submit` → a handle) and how to wait for some to end
    (`_wait` → [(handle, RunResult)]); this class keeps the window of runs in flight.
    """

    name = "executor"
    workers: int | None = None

    def run(self, jobs: Sequence[Job | RunConfig], on_start: OnStart | None = None,
            on_done: OnDone | None = None) -> list[RunResult]:
        jobs = [job if isinstance(job, Job) else Job(job) for job in jobs]
        results: list[RunResult | None] = [None] * len(jobs)
        if not jobs:
            return []
        window = self.workers or len(jobs)
        queue = deque(enumerate(jobs))
        in_flight: dict[Any, tuple[int, Job]] = {}
        self._start(len(jobs))
        interrupted = True
        try:
            while queue or in_flight:
                while queue and len(in_flight) < window:
                    i, job = queue.popleft()
                    in_flight[self._submit(job)] = (i, job)
                    if on_start:
                        on_start(i, job)
                for handle, result in self._wait(list(in_flight)):
                    i, job = in_flight.pop(handle)
                    results[i] = result
                    if on_done:
                        on_done(i, result)
            interrupted = False
        finally:
            self._stop(list(in_flight), interrupted)
        return results

    def _start(self, job_count: int) -> None:
        pass

    def _submit(self, job: Job) -> Any:
        raise NotImplementedError

    def _wait(self, handles: list) -> list[tuple[Any, RunResult]]:
        raise NotImplementedError

    def _stop(self, handles: list, interrupted: bool) -> None:
        """Release resources; on an interruption (Ctrl-C, an error) also stop the runs still going."""


# ---------------------------------------------------------------- serial: this process, one at a time


class SerialExecutor(Executor):
    """Each run in this process, one after another: for debugging, tests, and as the baseline the
    benchmark compares pools against. `threads` (default: torch's own choice) applies to this process."""

    name = "serial"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        if workers not in (None, 1):
            raise ScarceError(f"the serial executor runs one run at a time; --workers {workers} needs --executor local")
        self.workers, self.threads = 1, threads

    def _submit(self, job: Job):
        return job

    def _wait(self, handles: list) -> list[tuple[Any, RunResult]]:
        return [(handles[0], execute(handles[0], self.threads))]


# ---------------------------------------------------------------- local: a process pool


def _init_local_worker(threads: int, gpu_ids, driver_pid: int) -> None:
    # Before the job imports torch: one share of the cores, and at most one GPU, per worker.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if gpu_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids.get()
    threading.Thread(target=_exit_with, args=(driver_pid,), daemon=True).start()


def _exit_with(driver_pid: int, every_seconds: float = 0.5) -> None:
    """End this worker once the driver is gone. A driver killed on its own (SIGTERM or SIGKILL of its pid,
    not of its process group) would otherwise leave its workers training unattended, and a re-run of
    the study would resume the very runs they are still writing. The run in flight stays `running` in
    its summary and resumes from its newest checkpoint on the re-run."""
    while pid_alive(driver_pid):
        time.sleep(every_seconds)
    os._exit(1)


def _worker_context():
    """forkserver where there is one (Linux, macOS): a clean server process imports torch and the trainer
    once, and each worker forks from it, so workers start in a fraction of a second instead of importing
    torch each; fork itself is unsafe once the parent has run torch. Elsewhere spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["scarce.train.trainer"])  # no effect once the server has started
    return context


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


class LocalExecutor(Executor):
    """A pool of worker processes on this machine (forked from a clean forkserver, never from this process).

    CPU: `workers` processes with `threads` torch threads each (defaults: one single-threaded worker
    per core, what measured fastest for small models; see docs/sweeps.md). CUDA: one worker per visible
    GPU, each seeing only its own (CUDA_VISIBLE_DEVICES), with the cores shared out between them.
    A worker that dies (killed, out of memory) fails the runs then in flight and the pool is restarted
    for the rest.
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None, gpus: list[str] | None = None):
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        if self.gpus and workers is not None and workers > len(self.gpus):
            raise ScarceError(f"--workers {workers} is more than the {len(self.gpus)} visible GPUs; "
                              "the local executor runs one run per GPU")
        self.workers = workers or len(self.gpus) or usable_cpus()
        # CPU: one thread per run measured fastest by far (benchmarks/bench_sweep.py); on CUDA the GPU
        # does the work and the cores are shared out for the rest.
        self.threads = threads or (max(1, usable_cpus() // self.workers) if self.gpus else 1)
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        context = _worker_context()
        gpu_ids = None
        if self.gpus:
            gpu_ids = context.Queue()
            for gpu in self.gpus[: self.workers]:
                gpu_ids.put(gpu)
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_local_worker,
                                   initargs=(self.threads, gpu_ids, os.getpid()))

    def _start(self, job_count: int) -> None:
        self._pool = self._new_pool()

    def _submit(self, job: Job):
        try:
            future = self._pool.submit(execute, job, self.threads)
        except BrokenProcessPool:  # a worker died; its runs are reported failed, the rest go on
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            future = self._pool.submit(execute, job, self.threads)
        return future, job

    def _wait(self, handles: list) -> list[tuple[Any, RunResult]]:
        by_future = dict(handles)
        done, _ = wait(by_future, return_when=FIRST_COMPLETED)
        finished = []
        for future in done:
            handle = (future, by_future[future])
            try:
                finished.append((handle, future.result()))
            except BrokenProcessPool:
                finished.append((handle, _failed(handle[1], "the worker process died (killed, or out of memory)")))
            except Exception as e:  # e.g. a job that could not be sent to the worker
                finished.append((handle, _failed(handle[1], f"{type(e).__name__}: {e}")))
        return finished

    def _stop(self, handles: list, interrupted: bool) -> None:
        if self._pool is None:
            return
        if interrupted:
            # Ctrl-C reaches the workers too (same process group) and the trainer marks their runs
            # failed; anything still alive is stopped here rather than left training unattended.
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.terminate()
        else:
            self._pool.shutdown(wait=True)
        self._pool = None


# ---------------------------------------------------------------- Slurm (or local) jobs via submitit


class SubmititExecutor(Executor):
    """One Slurm job per run through submitit (`pip install 'scarce[slurm]'`).

    `cluster=None` lets submitit pick (Slurm where `sbatch` exists, else local processes); "local" and
    "debug" are submitit's stand-ins for tests. `parameters` go to `update_parameters` (e.g.
    slurm_partition="gpu", timeout_min=600). `workers` caps the jobs queued or running at once
    (None: all). Job logs go to `folder` (default `<runs_dir>/.submitit/`). Ctrl-C cancels the jobs in
    flight; a driver killed outright leaves them running, so `scancel` them before re-running a sweep.
    """

    name = "submitit"

    def __init__(self, workers: int | None = None, threads: int | None = None, gpus: int = 0,
                 folder: Path | None = None, cluster: str | None = None, poll_seconds: float = 1.0, **parameters):
        self.submitit = _import_extra("submitit", "slurm")
        self.workers, self.threads, self.gpus = workers, threads or 1, gpus
        self.folder, self.cluster, self.poll_seconds, self.parameters = folder, cluster, poll_seconds, parameters
        self._executor = None

    def _start(self, job_count: int) -> None:
        self._executor = None  # made on the first submit, when the runs directory is known

    def _submit(self, job: Job):
        if self._executor is None:
            folder = self.folder or Path(job.config.runs_dir) / ".submitit"
            self._executor = self.submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=self.cluster)
            resources = {"cpus_per_task": self.threads, "timeout_min": 24 * 60}
            if self.gpus:
                resources["gpus_per_node"] = self.gpus
            self._executor.update_parameters(**{**resources, **self.parameters})
        return self._executor.submit(execute, job, self.threads), job

    def _wait(self, handles: list) -> list[tuple[Any, RunResult]]:
        while True:
            done = [h for h in handles if h[0].done()]
            if done:
                break
            time.sleep(self.poll_seconds)
        finished = []
        for handle in done:
            submitted, job = handle
            try:
                finished.append((handle, submitted.result()))
            except Exception as e:  # the job itself died: timeout, preemption, node failure
                finished.append((handle, _failed(job, f"submitit job {submitted.job_id}: {type(e).__name__}: {e}")))
        return finished

    def _stop(self, handles: list, interrupted: bool) -> None:
        if interrupted:
            for submitted, _ in handles:
                submitted.cancel(check=False)


# ---------------------------------------------------------------- Ray


class RayExecutor(Executor):
    """One Ray task per run (`pip install 'scarce[ray]'`), each asking for `threads` CPUs and `gpus` GPUs.

    Connects to `address` (None: RAY_ADDRESS or a new local instance) unless Ray is already
    initialized; Ray then runs as many tasks at once as the resources allow, capped by `workers`.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, threads: int | None = None, gpus: float = 0, address: str | None = None):
        self.ray = _import_extra("ray", "ray")
        self.workers, self.threads, self.gpus, self.address = workers, threads or 1, gpus, address
        self._started_ray = False

    def _start(self, job_count: int) -> None:
        if not self.ray.is_initialized():
            self.ray.init(address=self.address, include_dashboard=False)
            self._started_ray = True
        self._remote = self.ray.remote(execute).options(num_cpus=self.threads, num_gpus=self.gpus, max_retries=0)

    def _submit(self, job: Job):
        return self._remote.remote(job, self.threads), job

    def _wait(self, handles: list) -> list[tuple[Any, RunResult]]:
        by_ref = {ref: (ref, job) for ref, job in handles}
        ready, _ = self.ray.wait(list(by_ref), num_returns=1)
        finished = []
        for ref in ready:
            handle = by_ref[ref]
            try:
                finished.append((handle, self.ray.get(ref)))
            except Exception as e:  # the worker crashed or the task was cancelled
                finished.append((handle, _failed(handle[1], f"ray task: {type(e).__name__}: {e}")))
        return finished

    def _stop(self, handles: list, interrupted: bool) -> None:
        if interrupted:
            for ref, _ in handles:
                self.ray.cancel(ref, force=True)
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False


# ---------------------------------------------------------------- choosing one


EXECUTORS = {"local": LocalExecutor, "serial": SerialExecutor, "submitit": SubmititExecutor, "ray": RayExecutor}


def _import_extra(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ScarceError(
            f"the {module} executor needs the optional package {module!r}: pip install 'scarce[{extra}]'"
        ) from None


def shard_mapper(name: str, folder: Path, cluster: str | None = None, address: str | None = None,
                 **parameters) -> Callable:
    """What `prepare_store(mapper=...)` takes to run a token store's shards elsewhere than a local process
    pool, one batch of jobs per step (read, BPE sample, tokenize); every job must see the store's root.

    - "submitit": a job array per step, Slurm where `sbatch` exists, else local processes (`cluster="local"`);
      `parameters` go to update_parameters (e.g. slurm_partition, timeout_min, cpus_per_task); job logs go
      to `folder`.
    - "ray": one Ray task per shard (1 CPU each) on the cluster at `address` (None: RAY_ADDRESS or a new local
      instance) unless Ray is already initialized; every node needs scarce installed."""
    if name == "ray":
        ray = _import_extra("ray", "ray")

        def run_on_ray(function: Callable, jobs: list[tuple]) -> list:
            started = not ray.is_initialized()
            if started:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            try:
                # one tokenizer thread per task: Ray already runs one task per CPU
                remote = ray.remote(function).options(num_cpus=1, max_retries=0,
                                                      runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
                return ray.get([remote.remote(*job) for job in jobs])
            finally:
                if started:
                    ray.shutdown()

        return run_on_ray
    if name != "submitit":
        raise ScarceError(f"shards of a token store run locally, on submitit or on ray, not on {name!r}")
    submitit = _import_extra("submitit", "slurm")

    def run(function: Callable, jobs: list[tuple]) -> list:
        executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster)
        if parameters:
            executor.update_parameters(**parameters)
        return [job.result() for job in executor.map_array(function, *zip(*jobs))]

    return run


def make_executor(name: str, workers: int | None = None, threads: int | None = None, **options) -> Executor:
    """An executor by name ("local", "serial", "submitit", "ray"), checked before anything runs."""
    if name not in EXECUTORS:
        raise ScarceError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    for flag, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise ScarceError(f"--{flag} must be at least 1, got {value}")
    executor_class = EXECUTORS[name]
    accepted = set(inspect.signature(executor_class).parameters) - {"workers", "threads", "parameters"}
    unknown = set(options) - accepted
    if unknown and not (name == "submitit"):  # submitit passes the rest to update_parameters
        raise ScarceError(f"the {name} executor has no option {', '.join(sorted(unknown))}; "
                          f"it takes {', '.join(sorted(accepted)) or 'none'}")
    return executor_class(workers=workers, threads=threads, **options)


__all__ = [
    "EXECUTORS", "Executor", "Job", "LocalExecutor", "RayExecutor", "RunResult",
    "SerialExecutor", "SubmititExecutor",
    "execute", "make_executor", "usable_cpus", "visible_gpus",
]
