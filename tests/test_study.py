"""`scarce study`: the design fits its time budget, a tiny study writes a report naming its runs and
re-running it trains nothing, the honesty guard, the recommendation's compute and data, and bad input."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from scarce import runs
from scarce.cli import app
from scarce.config import RunConfig
from scarce.data.store import prepare_store
from scarce.errors import ScarceError
from scarce.executors import make_executor
from scarce.laws import DataConstrained
from scarce.runs_jsonl import read_runs_jsonl
from scarce.studies import study as S
from scarce.studies.study.extrapolation import _with_params

runner = CliRunner()
RECIPE = ["model.seq_len=32", "data.vocab_size=512", "data.eval_tokens=512", "train.batch_size=8"]  # 256-token steps


@pytest.fixture(scope="module", autouse=True)
def kjv_store():
    prepare_store("kjv", vocab_size=512)


def _inputs(hours, unique_tokens=1_000_000):
    return S.Inputs("kjv", 1e17, unique_tokens, unique_tokens, hours, 2, [], [])


SECONDS_PER_TOKEN = {"micro": 1 / 5000, "tiny": 1 / 2000, "small": 1 / 600}


@pytest.mark.parametrize("hours", [0.05, 0.3, 1.0, 4.0])
def test_design_fits_the_time_budget(tmp_path, hours):
    base = S.base_config("kjv", tmp_path, [])
    design = S.design_study(_inputs(hours), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    assert design.predicted_seconds <= hours * 3600 * (1 - S.ANALYSIS_FRACTION)
    step = S.step_tokens(base)
    assert all(d % step == 0 for d in design.budgets) and design.budgets == sorted(design.budgets)
    assert S.STANDARD_WEIGHT_DECAY in design.weight_decays


def test_more_time_buys_a_richer_design_and_budgets_stay_within_u(tmp_path):
    base = S.base_config("kjv", tmp_path, [])
    small = S.design_study(_inputs(0.05), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    large = S.design_study(_inputs(4.0), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    assert len(large.sizes) >= len(small.sizes) and large.predicted_seconds > small.predicted_seconds
    capped = S.design_study(_inputs(4.0, unique_tokens=20_000), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    assert max(capped.budgets) <= 20_000


def test_the_design_can_identify_n_or_names_the_budget_that_would(tmp_path):
    """Every size at the largest budget and at two budgets at least; a budget too small for three sizes names
    the --budget-hours at which the same machine's throughput gives a design that has them."""
    from scarce.studies.study.design import IDENTIFIES_N, grid_cells

    base = S.base_config("kjv", tmp_path, [])
    rich = S.design_study(_inputs(4.0), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    cells = grid_cells(rich.sizes, rich.budgets, rich.full_sizes)
    assert len(rich.sizes) == 3 and rich.level in IDENTIFIES_N and rich.hours_to_identify_n is None
    for size in rich.sizes:
        mine = [d for s_, d in cells if s_ == size]
        assert max(rich.budgets) in mine and len(mine) >= 2
    poor = S.design_study(_inputs(0.05), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    assert poor.level not in IDENTIFIES_N and poor.hours_to_identify_n > 0.05
    enough = S.design_study(_inputs(poor.hours_to_identify_n), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    assert enough.level in IDENTIFIES_N
    assert rich.hours_for_4x_budget > 4.0 * 0.9


def test_a_study_behind_its_budget_drops_its_lowest_priority_interventions_then_grid_cells(tmp_path):
    """Runs 3× slower than calibrated (another process on the cores): the fewest lowest-priority
    interventions are dropped so the rest fits the time left, distillation first; on time, none. Far
    behind, grid cells go too, from the end of the priority order, never the first size's."""
    from scarce.studies.study.design import grid_cells, level_of, planned_runs, predict_seconds, slowdown, to_drop
    from scarce.studies.study.running import Row

    base = S.base_config("kjv", tmp_path, [])
    active = [i for i in S.INTERVENTIONS if i.requires(base) is None]
    design = S.design_study(_inputs(4.0), base, SECONDS_PER_TOKEN, 2, active)
    level = level_of(design)
    rest = predict_seconds(planned_runs(level, design.budgets, active, base)[1:], SECONDS_PER_TOKEN, 2)
    assert to_drop(design, active, base, 1, 1.0, rest * 1.01) == ([], [])
    dropped, cells = to_drop(design, active, base, 1, 3.0, rest * 1.5)
    assert dropped and dropped[0] == "distill" and cells == []
    kept = [i for i in active if i.name not in dropped]
    assert predict_seconds(planned_runs(level, design.budgets, kept, base)[1:], SECONDS_PER_TOKEN, 2) * 3 \
        <= rest * 1.5
    ran = [Row("r", "grid", "micro", 1, 1024, 1024, 4.0, 0.1, 0, 5.0, 1.0, 3 * (6 + 4096 / 5000), "completed")]
    assert slowdown(ran, design) == pytest.approx(3.0)

    # Far behind after the grid's first cell: the interventions go, then grid cells from the end of the priority
    # order (never the first size's), the fewest that make the rest fit.
    cells = grid_cells(design.sizes, design.budgets, design.full_sizes)
    assert cells[:len(design.budgets)] == [(design.sizes[0], d) for d in design.budgets]
    left, droppable = cells[1:], ("distill", "procedural", "mir")

    def predicted(names, kept_cells):
        return predict_seconds(planned_runs(level, design.budgets, [i for i in active if i.name not in names], base,
                                            kept_cells), SECONDS_PER_TOKEN, 2)

    seconds = 3.0 * predicted(droppable, [c for c in left if c[0] == design.sizes[0]]) * 1.05
    names, gone = to_drop(design, active, base, 1, 3.0, seconds, left)
    assert set(names) == {i.name for i in active if i.name in droppable}
    assert gone and gone == [c for c in left[::-1] if c[0] != design.sizes[0]][:len(gone)]
    assert 3.0 * predicted(names, [c for c in left if c not in gone]) <= seconds
    assert 3.0 * predicted(names, [c for c in left if c not in gone[:-1]]) > seconds  # the fewest


def test_an_ordinary_slowdown_drops_nothing_and_a_large_one_still_drops(tmp_path):
    """The design fills 90% of the budget; running 1.1× slower than calibrated (two workers sharing a memory
    bus) still ends within 5% of the budget, so nothing is dropped; 1.3× would end far past it."""
    from scarce.studies.study.design import grid_cells, seconds_for_runs, to_drop

    base = S.base_config("kjv", tmp_path, [])
    active = [i for i in S.INTERVENTIONS if i.requires(base) is None]
    design = S.design_study(_inputs(2.0), base, SECONDS_PER_TOKEN, 2, active)
    assert design.predicted_seconds > 0.85 * 2 * 3600  # filled, so only the tolerance can absorb a slowdown
    cells = grid_cells(design.sizes, design.budgets, design.full_sizes)  # before the grid: all of it is left
    assert to_drop(design, active, base, 1, 1.1, seconds_for_runs(2.0), cells) == ([], [])
    assert to_drop(design, active, base, 1, 1.3, seconds_for_runs(2.0), cells)[0][:1] == ["distill"]
    assert seconds_for_runs(2.0) <= 2.0 * 3600 * 1.05


def test_runs_after_the_grid_are_planned_at_the_middle_epochs_and_re_planned_at_the_tuned_ones(tmp_path):
    """Before the grid the interventions, seeds and students are budgeted at the middle of the grid's epochs;
    once the grid has chosen its epochs the re-plan uses them, so a study whose grid chose the largest
    epochs drops what no longer fits, and one that chose the middle ones drops nothing."""
    from scarce.studies.study.design import level_of, planned_runs, planning_epochs, predict_seconds, to_drop

    base = S.base_config("kjv", tmp_path, [])
    active = [i for i in S.INTERVENTIONS if i.requires(base) is None]
    design = S.design_study(_inputs(4.0), base, SECONDS_PER_TOKEN, 2, active)
    level = level_of(design)
    middle, most = planning_epochs(level), max(design.epochs)
    assert middle == sorted(design.epochs)[1] < most
    at = {e: planned_runs(level, design.budgets, active, base, tuned_epochs=dict.fromkeys(design.budgets, e))
          for e in (middle, most)}
    assert planned_runs(level, design.budgets, active, base) == at[middle]
    assert at[most][0] == at[middle][0]  # the grid does not depend on them
    members = [t for _, t in at[most][1]][-1], [t for _, t in at[middle][1]][-1]
    assert members[0] - members[1] == pytest.approx(max(design.budgets) * (most - middle))
    rest = predict_seconds(at[middle][1:], SECONDS_PER_TOKEN, 2)
    assert predict_seconds(at[most][1:], SECONDS_PER_TOKEN, 2) > 1.5 * rest
    assert to_drop(design, active, base, 1, 1.0, rest * 1.01, tuned_epochs=dict.fromkeys(design.budgets, middle)) \
        == ([], [])
    dropped, cells = to_drop(design, active, base, 1, 1.0, rest * 1.01, tuned_epochs=dict.fromkeys(design.budgets, most))
    assert dropped[:1] == ["distill"] and cells == []


def test_sampling_is_timed_here_and_predicted_per_draw(tmp_path):
    """The design times the teachers' sampling (calibrate_sampling) instead of assuming a ratio to training;
    the sampling stage is that time per draw × (the pool + a batch of whole contexts that finish past it)."""
    from scarce.studies.study.design import (
        SAMPLING_BATCH,
        calibrate_sampling,
        draw_cost,
        level_of,
        planned_runs,
        planning_epochs,
        synthetic_tokens,
    )

    base = S.base_config("kjv", tmp_path, RECIPE)
    seconds_per_draw = calibrate_sampling(base, "micro", 2, threads=1)
    assert 0 < seconds_per_draw < 1
    active = [i for i in S.INTERVENTIONS if i.requires(base) is None]
    cheap = S.design_study(_inputs(1.0), base, SECONDS_PER_TOKEN, 2, active, 1e-6)
    dear = S.design_study(_inputs(1.0), base, SECONDS_PER_TOKEN, 2, active, 1e-2)
    assert cheap.sampling_seconds_per_draw == 1e-6 and max(dear.budgets) < max(cheap.budgets)
    level = level_of(cheap)
    per_draw = draw_cost(SECONDS_PER_TOKEN, "micro", 1e-6)
    sampling = planned_runs(level, cheap.budgets, active, base, tokens_per_draw=per_draw)[3]
    distilled = next(i for i in active if i.name == "distill").where(cheap.budgets)
    draws = [synthetic_tokens(d, planning_epochs(level)) + SAMPLING_BATCH * base.model.seq_len for d in distilled]
    assert [t * SECONDS_PER_TOKEN["micro"] for _, t in sampling] == pytest.approx([1e-6 * n for n in draws])


def test_budget_too_small_for_one_run_and_corpus_too_small_are_errors(tmp_path):
    base = S.base_config("kjv", tmp_path, [])
    with pytest.raises(ScarceError, match="--budget-hours 1e-05 is too small for even one run"):
        S.design_study(_inputs(1e-5), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))
    with pytest.raises(ScarceError, match="gives 1,000 unique tokens, fewer than the smallest study budget"):
        S.design_study(_inputs(1.0, unique_tokens=1000), base, SECONDS_PER_TOKEN, 2, list(S.INTERVENTIONS))


def test_interventions_are_data_and_guarded():
    assert [i.name for i in S.select_interventions(["mir"])] == ["tuned", "mir"]
    with pytest.raises(ScarceError, match="unknown intervention 'dropout'"):
        S.select_interventions(["dropout"])
    procedural = next(i for i in S.INTERVENTIONS if i.name == "procedural")
    reason = procedural.requires(S.base_config("kjv", "/tmp/unused", []))
    assert (reason is None) == ("procedural" in RunConfig.model_fields)
    specialize = next(i for i in S.INTERVENTIONS if i.name == "specialize")
    assert "domain corpus" in specialize.requires(S.base_config("kjv", "/tmp/unused", []))


def _effect(difference, se, df=6):
    test = {"difference": difference, "se": se, "t": difference / se, "df": df, "critical": 2.447, "sd": se,
            "level": 0.95, "interval": [difference - 2.447 * se, difference + 2.447 * se]}
    return S.Effect("mir", "MIR", "tuned", "measured", delta_data=difference, test=test)


@pytest.mark.parametrize("difference,se,verdict", [
    (-0.004, 0.01, S.NOT_DISTINGUISHABLE),
    (-0.03, 0.01, "gain"),
    (0.03, 0.01, "loss"),  # the same threshold both ways: one test for gains and losses
    (0.02, 0.01, S.NOT_DISTINGUISHABLE),  # |t| = 2 < 2.447: a harm the noise can make is not a loss
])
def test_one_test_decides_gains_and_losses(difference, se, verdict):
    effect = _effect(difference, se)
    S.judge(effect)
    assert effect.verdict == verdict, effect.verdict_reason


def test_no_reference_seeds_is_not_distinguishable():
    effect = S.Effect("mir", "MIR", "tuned", "measured", delta_data=-0.5)
    S.judge(effect)
    assert effect.verdict == S.NOT_DISTINGUISHABLE and "noise is unknown" in effect.verdict_reason


def test_recommendation_spends_c_flops_and_at_most_u_unique_tokens():
    law = _with_params(DataConstrained(), {"E": 2.0, "A": 40.0, "alpha": 0.3, "B": 300.0, "beta": 0.3, "R_star_D": 15.0})
    flops, unique = 1e17, 2e6
    plain = S.predict_recipe(law, 1.0, [], 1.0, flops, unique)
    n, tokens, epochs = plain["params"]["value"], plain["tokens"]["value"], plain["epochs"]["value"]
    assert 6 * n * tokens == pytest.approx(flops, rel=1e-6)
    assert tokens / epochs <= unique * (1 + 1e-9)
    costly = S.predict_recipe(law, 1.0, [], 2.0, flops, unique)  # twice the FLOPs per token: half the tokens
    assert 6 * costly["params"]["value"] * costly["tokens"]["value"] == pytest.approx(flops / 2, rel=1e-6)
    worth_more = S.predict_recipe(law, 2.0, [], 1.0, flops, unique)  # k = 2: as if U were doubled
    assert worth_more["loss"]["value"] < plain["loss"]["value"]
    assert plain["asymptote"]["value"] == pytest.approx(S.asymptote_at(law.params_, unique))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "kjv"
    design = S.Design("test", ["micro"], [1024], [1, 2], [0.1, 1.6], 2, 1, {"micro": 1e-4}, 0.0, 0.01)
    kwargs = dict(hours=0.01, executor=make_executor("serial", threads=1), overrides=RECIPE,
                  interventions=["tuned", "mir", "ensemble", "distill"], bootstrap=10, design=design, live=False)
    results = S.run("kjv", 1e15, out, **kwargs)
    return out, results, kwargs


def test_tiny_study_writes_a_report_naming_its_runs(tiny_study):
    out, results, _ = tiny_study
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    run_dirs = [p for p in (out / "runs").iterdir() if (p / "summary.json").is_file()]
    assert len(run_dirs) == 4 + 1 + 1 + 1  # grid, MIR, a second ensemble member, the student
    for run_dir in run_dirs:
        assert run_dir.name in md and run_dir.name in page
        loss = runs.read_summary(run_dir)["final_val_loss"]
        row = next(r for r in results["rows"] if r["run_id"] == run_dir.name)
        assert row["loss"] == loss and f"{loss:.4f}" in md  # the report's numbers are the runs' numbers
    first = md.split("\n\n")[1]  # the first paragraph: the answer, at most 200 characters
    assert first.startswith(("**No ", "**Train ")) and len(first) <= 200 + 4
    assert "Calibration: a placebo" in md and "Published" in md and "C = 6·N·D" in md
    prose = [line for line in md.splitlines() if not line.startswith(("|", "![", "#"))]
    assert max(map(len, prose)) <= 100
    # the committable record: every run once, with the numbers of its directory and no machine path
    rows = read_runs_jsonl(out / "runs.jsonl")
    assert sorted(r["run_id"] for r in rows) == sorted(d.name for d in run_dirs)
    assert all(r["final_val_loss"] == runs.read_summary(out / "runs" / r["run_id"])["final_val_loss"] for r in rows)
    assert str(out) not in (out / "runs.jsonl").read_text() and str(out) not in md
    assert "data:image/png;base64," in page and "src='http" not in page and "figures/" not in page
    assert "not distinguishable from zero at this scale" in md
    effects = {e["name"]: e for e in results["effects"]}
    assert effects["ensemble"]["status"] == "measured" and len(effects["ensemble"]["runs"]) == 2
    assert effects["distill"]["status"] == "measured" and effects["mir"]["cost"] == pytest.approx(2, rel=0.05)
    assert json.loads((out / S.RESULTS_FILE).read_text())["schema"] == "scarce.study/2"


def _run_ids(out):
    return sorted(p.name for p in (out / "runs").iterdir() if (p / "summary.json").is_file())


def test_rerunning_reuses_every_finished_run(tiny_study):
    out, first, kwargs = tiny_study
    before = _run_ids(out)
    again = S.run("kjv", 1e15, out, **kwargs)
    assert _run_ids(out) == before
    ids = [row["run_id"] for row in runs.RunIndex(out / "runs").rows()]
    assert sorted(ids) == before  # one index row per run, none twice
    assert [r["loss"] for r in again["rows"]] == [r["loss"] for r in first["rows"]]


def test_an_interrupted_study_finishes_without_repeating_runs(tiny_study):
    """The student killed right after it started (status running, no checkpoint): a re-run trains only it."""
    out, first, kwargs = tiny_study
    student = next(r["run_id"] for r in first["rows"] if r["part"] == "distill")
    summary = runs.read_summary(out / "runs" / student)
    runs.write_summary(out / "runs" / student, {**summary, "status": "running"})
    for checkpoint in (out / "runs" / student / runs.CHECKPOINTS_DIR).iterdir():
        shutil.rmtree(checkpoint)
    before = _run_ids(out)
    again = S.run("kjv", 1e15, out, **kwargs)
    after = _run_ids(out)
    assert set(before) - set(after) == {student} and len(set(after) - set(before)) == 1  # only the student again
    assert sorted(row["run_id"] for row in runs.RunIndex(out / "runs").rows()) == after
    new_student = next(r["run_id"] for r in again["rows"] if r["part"] == "distill")
    assert new_student in (out / "report.md").read_text() and student not in (out / "report.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["kjv", "--flops", "0"], "--flops must be a finite number above 0, got 0"),
    (["kjv", "--flops", "-1e18"], "--flops must be a finite number above 0, got -1e+18"),
    (["no-such-corpus", "--flops", "1e18"], "unknown corpus 'no-such-corpus'"),
    (["kjv", "--flops", "1e18", "--unique-tokens", "1e12"], "--unique-tokens 1,000,000,000,000 exceeds the"),
    (["kjv", "--flops", "1e18", "--workers", "0"], "--workers must be at least 1, got 0"),
    (["kjv", "--flops", "1e18", "--intervention", "dropout"], "unknown intervention 'dropout'"),
    (["kjv", "--flops", "1e18", "--budget-hours", "0"], "--budget-hours must be a finite number above 0, got 0"),
])
def test_bad_input_is_one_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = runner.invoke(app, ["study", *args, "--out", str(out), *RECIPE])
    assert isinstance(result.exception, ScarceError) and message in str(result.exception)
    assert not out.exists()


def test_the_recommendation_says_why_a_distinguishable_gain_lost_to_the_standard_recipe():
    from scarce.studies.study.report import recommendation

    estimate = {"value": 1.0, "interval": [0.5, 2.0]}
    best = {"recipe": "standard", "params": estimate, "epochs": estimate, "tokens": estimate, "loss": estimate,
            "asymptote": estimate, "data_efficiency": None, "weight_decay": 0.1, "nearest_size": "micro",
            "params_factor": 1.0}
    results = {"inputs": {"unique_tokens": 1000, "corpus": "kjv", "flops": 1e15}, "design": {"hours": 1.0},
               "extrapolation": {"best": best, "problems": {}}, "scale": None, "failed": [],
               "effects": [{"name": "ensemble", "verdict": "gain", "multiplier": None}]}
    text = " ".join(block[1] for block in recommendation(results))
    assert "no intervention was a distinguishable gain" not in text
    assert "the distinguishable gains (ensemble) are predicted through the tuned recipe's law" in text
    results["effects"] = [{"name": "mir", "verdict": S.NOT_DISTINGUISHABLE, "multiplier": None}]
    assert "no intervention was a distinguishable gain" in " ".join(block[1] for block in recommendation(results))
