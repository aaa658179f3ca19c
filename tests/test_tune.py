"""Locally optimal tuning: the coordinate descent on synthetic objectives (no training), and on micro runs
through the run store, where a second tuning reuses every trial."""

import json
import math

import pytest

from scarce import runs
from scarce.config import resolve_config
from scarce.errors import ScarceError
from scarce.executors import SerialExecutor
from scarce.studies.sweep import SWEEPS_DIR
from scarce.studies.tune import DEFAULT_AXES, check_axes, coordinate_descent, neighbours, snap, tune

MICRO = ["model.size=micro", "model.seq_len=32", "data.vocab_size=512", "data.unique_tokens=4096",
         "data.eval_tokens=512", "train.batch_size=8"]
LR, WD, EP = DEFAULT_AXES


def counting(objective):
    """An evaluate function over objective(point) that records every batch it is asked for."""
    batches = []

    def evaluate(points):
        batches.append(points)
        return [objective(p) for p in points]

    return evaluate, batches


def index_of(point):
    return tuple(DEFAULT_AXES[k].index(point[k]) for k in DEFAULT_AXES)


def bowl(center):
    return lambda p: sum((i - c) ** 2 for i, c in zip(index_of(p), center))


def assert_locally_optimal(result, objective):
    assert result.loss == objective(result.optimum)
    assert result.neighbours and all(loss >= result.loss for _, loss in result.neighbours)
    around = {index_of(p) for p, _ in result.neighbours}
    assert around == set(neighbours(index_of(result.optimum), [len(v) for v in DEFAULT_AXES.values()]))


def test_snap_to_the_nearest_grid_value_by_ratio():
    assert [snap(v, DEFAULT_AXES[LR]) for v in (3e-3, 2e-3, 1.5e-3, 1, 1e-9)] == [3, 3, 2, 5, 0]
    assert [snap(v, DEFAULT_AXES[WD]) for v in (0, 0.1, 0.05, 1.0, 100)] == [0, 1, 1, 4, 7]
    assert neighbours((0, 3), [6, 4]) == [(1, 3), (0, 2)]


def test_descends_to_the_minimum_of_a_bowl_evaluating_each_setting_once():
    objective = bowl((4, 5, 3))
    evaluate, batches = counting(objective)
    result = coordinate_descent(evaluate, DEFAULT_AXES, {LR: 1e-4, WD: 0.1, EP: 1})
    assert index_of(result.optimum) == (4, 5, 3) and result.loss == 0
    assert_locally_optimal(result, objective)
    asked = [index_of(p) for batch in batches for p in batch]
    assert len(asked) == len(set(asked)) == len(result.trials)  # never the same setting twice
    assert index_of(result.path[0]) == (0, 1, 0) and len(result.path) == 1 + 4 + 4 + 3  # one axis step per move
    assert [objective(p) for p in result.path] == sorted((objective(p) for p in result.path), reverse=True)
    assert len(batches) == len(result.path)  # each neighbourhood is one batch, for the executor to run in parallel


def test_an_optimum_on_the_grid_edge_says_so_and_which_way_to_extend():
    corner = coordinate_descent(counting(bowl((9, 4, 3)))[0], DEFAULT_AXES, {LR: 1e-2, WD: 0.1, EP: 8})
    assert index_of(corner.optimum) == (5, 4, 3)  # lr's bowl lies past the grid's largest value
    assert corner.edges == {LR: "above"} and corner.to_json()["edges"] == {LR: "above"}
    assert "optim.lr at the grid's largest value 0.03: extend the grid above it" == corner.extend()
    assert len(corner.neighbours) == 5  # the neighbour above was never tried
    low = coordinate_descent(counting(bowl((-1, 0, -1)))[0], DEFAULT_AXES, {LR: 1e-4, WD: 0, EP: 1})
    assert low.edges == {LR: "below", EP: "below"}  # weight decay 0 is an edge with nothing below it
    inside = coordinate_descent(counting(bowl((4, 5, 3)))[0], DEFAULT_AXES, {LR: 1e-4, WD: 0.1, EP: 1})
    assert inside.edges == {} and inside.extend() == ""


def test_stops_at_a_local_optimum_not_the_global_one():
    # two basins: a shallow one next to the start, a deeper one far away behind a ridge
    near, far = (1, 1, 1), (5, 7, 6)
    objective = lambda p: min(10 + sum((i - c) ** 2 for i, c in zip(index_of(p), near)),
                              sum((i - c) ** 2 for i, c in zip(index_of(p), far)) + 0.0)
    evaluate, _ = counting(objective)
    result = coordinate_descent(evaluate, DEFAULT_AXES, {LR: 3e-4, WD: 0.2, EP: 2})
    assert index_of(result.optimum) == near and result.loss == 10
    assert_locally_optimal(result, objective)


def test_failed_trials_never_win_and_ties_keep_the_current_setting():
    objective = lambda p: math.nan if p[WD] > 0.4 else (math.inf if p[EP] == 2 else 1.0)
    evaluate, _ = counting(objective)
    result = coordinate_descent(evaluate, DEFAULT_AXES, {LR: 3e-3, WD: 0.4, EP: 1})
    assert result.optimum == {LR: 3e-3, WD: 0.4, EP: 1} and len(result.path) == 1
    assert {loss for _, loss in result.neighbours} == {1.0, math.inf}


@pytest.mark.parametrize("axes,message", [
    ({LR: []}, "the optim.lr grid is empty"),
    ({WD: [0.1, 0.1]}, "lists a value twice"),
    ({LR: [1e-3, -1.0]}, "optim.lr: Input should be greater than 0"),
    ({"optim.learning_rate": [1e-3]}, "axis key 'optim.learning_rate' is not a config key"),
])
def test_bad_grids_are_clear_errors(tmp_path, axes, message):
    base = resolve_config({"runs_dir": str(tmp_path / "runs")}, MICRO)
    with pytest.raises(ScarceError, match=message):
        check_axes(axes, base)
    with pytest.raises(ScarceError, match="unknown metric 'loss'"):
        tune(base, SerialExecutor(), metric="loss")
    assert not (tmp_path / "runs").exists()


def test_tuning_micro_runs_ends_locally_optimal_and_a_second_tuning_reuses_every_trial(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    base = resolve_config({"name": "m", "runs_dir": str(runs_dir)},
                          [*MICRO, "data.unique_tokens=2048", "optim.lr=2e-3", "train.epochs=1"])  # 7 steps an epoch
    axes = {LR: [1e-3, 3e-3], WD: [0.1], EP: [1, 2]}
    result = tune(base, SerialExecutor(threads=1), axes, live=False)
    assert result.start == {LR: 3e-3, WD: 0.1, EP: 1}  # 2e-3 snapped to the nearer grid value by ratio
    trials = {tuple(p.values()): loss for p, loss in result.trials}
    assert all(loss >= result.loss for _, loss in result.neighbours)
    assert result.loss == trials[tuple(result.optimum.values())] and math.isfinite(result.loss)

    (study_dir,) = (runs_dir / SWEEPS_DIR).iterdir()
    rows = runs.load_runs_table(runs_dir, [f"study={study_dir.name}"])
    assert len(rows) == len(result.trials) and all(r["status"] == "completed" for r in rows)
    for row in rows:  # each trial's loss is its run's final validation loss
        assert trials[(row["optim.lr"], row["optim.weight_decay"], row["train.epochs"])] == row["final_val_loss"]
    manifest = json.loads((study_dir / "manifest.json").read_text())
    assert manifest["result"]["optimum"] == result.optimum and manifest["result"]["trials"] == len(result.trials)
    assert (study_dir / "heatmap.png").stat().st_size > 0
    capsys.readouterr()

    # Another start, same model and budget: the same study, and nothing is trained again.
    again = tune(base.model_copy(update={"optim": base.optim.model_copy(update={"lr": 1e-3})}), SerialExecutor(threads=1), axes,
                 live=False)
    assert again.optimum == result.optimum and again.loss == result.loss
    assert f"{len(again.trials)} trials (0 trained now" in capsys.readouterr().err.replace("\n", " ")
    assert len(runs.load_runs_table(runs_dir, [f"study={study_dir.name}"])) == len(rows)
    assert json.loads((study_dir / "manifest.json").read_text())["result"]["trained_this_time"] == 0
