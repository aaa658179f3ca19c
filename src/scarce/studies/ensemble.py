"""Ensemble study: K members that differ only by seed, trained as runs, then scored together.

`member_configs` writes the members' configs (init seed `train.seed` and/or data-order seed
`train.data_seed` varied; optionally the member heuristic of Kim et al. 2025: 2× epochs, ½ weight decay);
`train_members` trains them as one resumable study (scarce.studies.sweep.Study: a finished member is
never trained twice) on any executor of scarce.executors, or all at once in one process with
"batched" (scarce.train.batched); `scarce.evals.ensemble` scores them.

    configs = member_configs(base, k=4, heuristic=True)
    run_dirs = train_members(configs, executor="local", workers=2)
"""

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from scarce.config import RunConfig
from scarce.errors import ScarceError
from scarce.executors import EXECUTORS as RUN_EXECUTORS
from scarce.executors import Executor, Job, RunResult, execute, make_executor
from scarce.runs import run_status

VARIABLE_SEEDS = ("seed", "data_seed")
EXECUTORS = ("auto", "batched", *RUN_EXECUTORS)  # auto, batched, local, serial, submitit, ray
# executor = "auto": the fastest in members/hour as benchmarks/bench_ensemble.py measured it at equal
# threads (benchmarks/results/ensemble.json): on CPU, single-threaded local workers, one per core, beat
# one process with all the threads, whether members train one after another or batched under vmap.
# CUDA has not been measured: one member per GPU (local) until bench_ensemble.py runs on one.
EXECUTOR_BY_DEVICE = {"cpu": "local", "cuda": "local"}
# The member heuristic's caps (Kim et al. 2025, arXiv 2509.14786, §ensembles): never past 128 epochs,
# never below weight decay 0.1 by halving.
MAX_MEMBER_EPOCHS = 128
MIN_MEMBER_WEIGHT_DECAY = 0.1


def member_heuristic(epochs: int, weight_decay: float) -> tuple[int, float]:
    """Members want less regularization than a single model: 2× epochs (at most 128) and ½ weight decay
    (at least 0.1). A cap never moves a setting the other way: 200 epochs stay 200, wd 0.05 stays 0.05."""
    return max(epochs, min(2 * epochs, MAX_MEMBER_EPOCHS)), min(weight_decay, max(weight_decay / 2, MIN_MEMBER_WEIGHT_DECAY))


def member_configs(
    base: RunConfig, k: int, vary: tuple[str, ...] = VARIABLE_SEEDS, heuristic: bool = False, study: str | None = None
) -> list[RunConfig]:
    """K configs equal to `base` but for member i's seeds (base + i for each varied seed), named after and
    belonging to `study` (default NAME-ensemble)."""
    if not isinstance(k, int) or k < 1:
        raise ScarceError(f"an ensemble needs K ≥ 1 members, got K={k!r}")
    unknown = [v for v in vary if v not in VARIABLE_SEEDS]
    if unknown or not vary:
        raise ScarceError(f"--vary takes a comma-separated subset of {', '.join(VARIABLE_SEEDS)}, got {','.join(vary) or '(empty)'}")
    study = study or f"{base.name}-ensemble"
    configs = []
    for i in range(k):
        data = base.model_dump(mode="json")
        data.update(name=study, study=study)  # as a study names its runs
        for seed in vary:
            data["train"][seed] = getattr(base.train, seed) + i
        if heuristic:
            data["train"]["epochs"], data["optim"]["weight_decay"] = member_heuristic(base.train.epochs, base.optim.weight_decay)
        configs.append(RunConfig.model_validate(data))
    return configs


class BatchedExecutor(Executor):
    """All members in this process at once (scarce.train.batched: stacked weights, one vmapped step).

    A member left unfinished by another executor, with a checkpoint to resume from, is resumed on its
    own in this process (a batched run has no optimizer state to resume from). `threads`: torch threads.
    """

    name = "batched"

    def __init__(self, workers: int | None = None, threads: int | None = None, progress: bool = True):
        if workers not in (None, 1):
            raise ScarceError(f"the batched executor trains all members in one process; --workers {workers} "
                              "needs --executor local")
        self.workers, self.threads, self.progress = 1, threads, progress

    def run(self, jobs: Sequence[Job | RunConfig], on_start=None, on_done=None) -> list[RunResult]:
        import torch

        from scarce.train.batched import train_batched

        jobs = [job if isinstance(job, Job) else Job(job) for job in jobs]
        results: list[RunResult | None] = [None] * len(jobs)
        for i, job in enumerate(jobs):
            if job.resume_dir is not None:
                if on_start:
                    on_start(i, job)
                results[i] = execute(job, self.threads)
                if on_done:
                    on_done(i, results[i])
        fresh = [i for i, job in enumerate(jobs) if job.resume_dir is None]
        if fresh:
            for i in fresh:
                if on_start:
                    on_start(i, jobs[i])
            threads_before = torch.get_num_threads()
            try:
                if self.threads:
                    torch.set_num_threads(self.threads)
                run_dirs = train_batched([jobs[i].config for i in fresh], self.progress)
                done = [RunResult(jobs[i].config, d, run_status(d) or "completed") for i, d in zip(fresh, run_dirs)]
            except Exception as e:  # nothing is written unless every member finished
                done = [RunResult(jobs[i].config, None, "failed", f"{type(e).__name__}: {e}") for i in fresh]
            finally:
                torch.set_num_threads(threads_before)
            for i, result in zip(fresh, done):
                results[i] = result
                if on_done:
                    on_done(i, result)
        return results


def member_executor(name: str, configs: Sequence[RunConfig], workers: int | None = None, threads: int | None = None,
                    progress: bool = True, **options) -> Executor:
    """The executor `name` for these members: "batched", one of scarce.executors (local, serial,
    submitit, ray; `options` go to it), or "auto", the fastest measured for the members' device
    (EXECUTOR_BY_DEVICE), falling back to "local" when the default is "batched" but members cannot be."""
    if name not in EXECUTORS:
        raise ScarceError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if name == "auto":
        name = _auto_executor(configs)
    if name == "batched":
        from scarce.train.batched import check_batchable

        check_batchable(list(configs))
        if options:
            raise ScarceError(f"the batched executor has no option {', '.join(sorted(options))}")
        return BatchedExecutor(workers, threads, progress)
    return make_executor(name, workers, threads, **options)


def train_members(configs: Sequence[RunConfig], executor: str | Executor = "auto", workers: int | None = None,
                  threads: int | None = None, progress: bool = True, console: Console | None = None) -> list[Path]:
    """Train the members as the study `configs[0].study`; returns their run directories in config order.

    Resumable like a sweep: a member whose resolved config already finished in runs_dir is reused, an
    unfinished one with a checkpoint is resumed, the rest are trained on `executor` (a name for
    member_executor, or an Executor). Raises a ScarceError naming the members that failed or diverged.
    """
    from scarce.studies.sweep import Study

    configs = list(configs)
    if not configs:
        raise ScarceError("no members to train")
    study_name, runs_dir = configs[0].study, configs[0].runs_dir
    if study_name is None or any(c.study != study_name or c.runs_dir != runs_dir for c in configs):
        raise ScarceError("members must share one study and runs_dir: build them with member_configs")
    console = console or Console(stderr=True, quiet=not progress)  # from Python without progress: silent
    points = [{"member": i, "train.seed": c.train.seed, "train.data_seed": c.train.data_seed} for i, c in enumerate(configs)]
    if isinstance(executor, str):
        executor = member_executor(executor, configs, workers, threads, progress)
    with Study(study_name, runs_dir, "ensemble", {"members": len(configs)}) as study:
        # the batched executor shows its own progress bar; rich allows one live display at a time
        outcomes = study.run(configs, points, executor, console, live=progress and executor.name != "batched")
    bad = [f"member {o.point['member']}: {o.status}" + (f" ({o.error})" if o.error else "") for o in outcomes if o.status != "completed"]
    if bad:
        raise ScarceError(f"{len(bad)} of {len(configs)} members did not complete: {'; '.join(bad)}; their logs are in "
                          f"{study.dir / 'logs'}; run the same command again to retry them")
    return [o.run_dir for o in outcomes]


def _auto_executor(configs: Sequence[RunConfig]) -> str:
    import torch

    from scarce.train.batched import check_batchable

    device = "cuda" if configs and configs[0].train.device != "cpu" and torch.cuda.is_available() else "cpu"
    choice = EXECUTOR_BY_DEVICE[device]
    if choice == "batched":
        try:
            check_batchable(list(configs))
        except ScarceError:
            return "local"
    return choice
