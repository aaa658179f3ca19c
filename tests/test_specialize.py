"""The specialization study on micro models over three tiny domains, its laws and the compute planner."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from scarce import runs
from scarce.checkpoint import checkpoint_dirs
from scarce.cli import app
from scarce.config import resolve_config
from scarce.errors import ScarceError
from scarce.executors import make_executor
from scarce.laws import SpecializationAdditive, SpecializationTransfer
from scarce.laws.specialization import fit_domains, fitted_laws, plan_specialization
from scarce.studies.specialize import Grid, Point, run_study, specialist_configs
from scarce.train import trainer

GRID = dict(sizes=["micro"], general_tokens=[1280, 2560], domain_tokens=[256], domains=["code"])


@pytest.fixture(scope="module")
def study(tmp_path_factory, write_domains):
    folder = tmp_path_factory.mktemp("specialize")
    paths = write_domains(folder)
    base = resolve_config({"runs_dir": str(folder / "runs"), "data": {"domains": {n: {"source": p} for n, p in paths.items()}}},
                          ["model.seq_len=16", "data.vocab_size=300", "data.eval_tokens=256", "data.val_fraction=0.1",
                           "train.batch_size=8", "train.log_every=50"])
    return base, run_study(base, Grid(**GRID), executor=make_executor("local", workers=2))  # a process pool


def test_the_grid_records_every_point_with_domain_sizes_and_losses(study):
    base, found = study
    general = [p for p in found if p.domain_tokens == 0]
    special = [p for p in found if p.domain_tokens > 0]
    assert sorted({p.general_tokens for p in general}) == [1280, 2560] and len(general) == 2 * 3  # every domain
    assert sorted((p.general_tokens, p.domain_tokens, p.domain) for p in special) == [(1280, 256, "code"), (2560, 256, "code")]
    rows = runs.load_runs_table(base.runs_dir, ["study=specialize", "domain=code"])
    assert sorted(r["general_tokens"] for r in rows) == [1280, 2560] and all(r["domain_tokens"] == 256 for r in rows)
    assert all(math.isfinite(r["final_val_loss.verse"]) for r in rows)  # specialists are scored on every domain
    branch = next(r for r in runs.load_runs_table(base.runs_dir, ["name=specialize-micro-D1280"]))
    assert branch["init"]["mode"] == "continue" and branch["init"]["checkpoint_step"] == 8  # 10 steps, 2 of decay


def test_running_the_study_again_repeats_nothing_and_resumes_an_interrupted_run(study):
    base, found = study
    before = sorted(p.name for p in base.runs_dir.iterdir() if p.is_dir())
    interrupted = next(base.runs_dir.glob("specialize-micro-D1280-code-256-*"))
    summary = runs.read_summary(interrupted)
    runs.write_summary(interrupted, {**summary, "status": "failed"})
    again = run_study(base, Grid(**GRID), executor="serial")
    assert sorted(p.name for p in base.runs_dir.iterdir() if p.is_dir()) == before
    assert runs.read_summary(interrupted)["status"] == "completed" and len(runs.read_summary(interrupted)["resumes"]) == 1
    assert sorted((p.domain, p.general_tokens, p.domain_tokens) for p in again) == \
        sorted((p.domain, p.general_tokens, p.domain_tokens) for p in found)


def test_a_specialist_starts_from_exactly_the_general_models_weights(study):
    base, _ = study
    general = next(base.runs_dir.glob("specialize-micro-D1280-2*"))
    (config,) = specialist_configs(base, [general], Grid(**GRID), "check")
    run = trainer._set_up(config, None)
    final = load_file(checkpoint_dirs(general / "checkpoints")[0] / "model.safetensors")
    state = run.model.state_dict()
    assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in final)
    assert config.data.domains["code"].weight == 1.0 and config.data.domains["verse"].weight == 0.0
    assert config.optim.schedule == "cosine" and config.optim.warmup_fraction == 0.1  # re-warmed


def test_the_command_runs_the_study_through_an_executor_and_finds_it_done(study, tmp_path):
    base, _ = study
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    overrides = [f"runs_dir={base.runs_dir}", "model.seq_len=16", "data.vocab_size=300", "data.eval_tokens=256",
                 "data.val_fraction=0.1", "train.batch_size=8", "train.log_every=50",
                 *[f'data.domains.{n}.source="{d.source}"' for n, d in base.data.domains.items()]]
    before = sorted(p.name for p in base.runs_dir.iterdir())
    result = CliRunner().invoke(app, ["specialize", str(empty), *overrides, "--sizes", "micro", "--general-tokens",
                                      "1280,2560", "--domain-tokens", "256", "--domain", "code", "--executor", "serial",
                                      "--no-fit", "--no-live"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in base.runs_dir.iterdir()) == before  # every run found done, none repeated
    manifest = json.loads((base.runs_dir / "sweeps" / "specialize" / "manifest.json").read_text())
    assert manifest["kind"] == "specialize" and len(manifest["runs"]) == 4  # trunk, branch, two specialists
    assert all(r["status"] == "completed" for r in manifest["runs"].values())
    result = CliRunner().invoke(app, ["specialize", str(empty), *overrides, "--sizes", "micro", "--general-tokens",
                                      "1280", "--domain-tokens", "256", "--workers", "0"])
    assert isinstance(result.exception, ScarceError) and "--workers must be at least 1" in str(result.exception)


def test_each_domain_can_have_its_own_specialization_tokens(study):
    base, _ = study
    general = next(base.runs_dir.glob("specialize-micro-D1280-2*"))
    grid = Grid(sizes=["micro"], general_tokens=[1280], domain_tokens={"code": [128, 256], "verse": [384]})
    configs = specialist_configs(base, [general], grid, "check")
    assert sorted((c.name.split("-")[3], c.train.tokens) for c in configs) == [("code", 128), ("code", 256), ("verse", 384)]


@pytest.mark.parametrize("grid,message", [
    (dict(GRID, domain_tokens=[4]), "below one optimizer step"),
    (dict(GRID, domains=["latin"]), "'latin' is not a domain"),
    (dict(GRID, domain_tokens=[10**6], repeat=False), "exceeds domain 'code'.*repetition is off"),
    (dict(GRID, domain_tokens={"latin": [256]}), "'latin' is not a domain"),
    (dict(GRID, general_tokens=[1280, 4]), "below one optimizer step"),
])
def test_bad_grids_are_clear_errors(study, grid, message):
    base, _ = study
    with pytest.raises(ScarceError, match=message):
        run_study(base, Grid(**grid))


# ---------------------------------------------------------------- laws and planning (synthetic, no training)

TRUE = {"E": 1.5, "A": 300.0, "alpha": 0.4, "B": 900.0, "beta": 0.35, "kappa": 0.3, "eta": 0.9}


def synthetic_points(noise=0.003):
    rng = np.random.default_rng(0)
    law = SpecializationTransfer()
    found = []
    for domain, shift in (("code", 0.0), ("verse", 0.2)):
        for n in (1e6, 3e6, 1e7, 3e7):
            for d in (1e8, 4e8, 1.6e9):
                for d_spec in (1e7, 4e7, 1.6e8):
                    loss = law.predict({"N": [n], "D": [d], "D_spec": [d_spec]}, TRUE)[0] + shift
                    found.append(Point(domain, int(n), int(d), int(d_spec), loss * math.exp(rng.normal(0, noise)), "x"))
    return found


@pytest.fixture(scope="module")
def document():
    return fit_domains(synthetic_points(), [SpecializationTransfer(), SpecializationAdditive()], bootstrap=8,
                       tokens_per_step=4096, unique_tokens={"code": 5e8, "verse": 2e8})


def test_the_transfer_form_wins_on_transfer_data_with_intervals(document):
    for domain in ("code", "verse"):
        entry = document["domains"][domain]
        assert entry["chosen"] == "specialization_transfer"
        rows = {r["law"]: r for r in entry["comparison"]}
        assert rows["specialization_transfer"]["extrapolation_rmse_log"] < rows["specialization_additive"]["extrapolation_rmse_log"]
        fit = next(f for f in entry["fits"] if f["law"]["name"] == "specialization_transfer")
        assert fit["parameters"]["alpha"]["interval"] is not None


def test_the_planner_stays_within_the_budget_and_the_caps(document):
    laws = fitted_laws(document)
    unique = {"code": 5e8, "verse": 2e8}
    plans = plan_specialization(laws, 1e19, unique, {"code": 3, "verse": 1}, repeat=False, tokens_per_step=4096)
    assert set(plans) == {"shared", "independent", "general", "domain"}
    for name, p in plans.items():
        assert p["flops"] <= 1e19, name
        assert all(p["domain_tokens"][d] <= unique[d] + 1e-6 for d in unique), name
        assert p["repetition"] == {}
    shared = plans["shared"]
    assert shared["flops"] == pytest.approx(6 * shared["params"] * (shared["general_tokens"] + sum(shared["domain_tokens"].values())))
    predicted = shared["predicted_loss"]
    assert predicted["mean"] == pytest.approx(0.75 * predicted["code"] + 0.25 * predicted["verse"])
    assert plans["shared"]["predicted_loss"]["mean"] <= plans["domain"]["predicted_loss"]["mean"]
    # with repetition allowed a large budget repeats the small domain, and says so
    repeated = plan_specialization(laws, 1e21, unique, repeat=True, tokens_per_step=4096)["shared"]
    assert repeated["flops"] <= 1e21 and repeated["repetition"]


def test_the_shared_plan_leaves_a_domain_to_the_general_model_when_a_specialist_does_not_pay(document):
    laws, unique = fitted_laws(document), {"code": 5e8, "verse": 2e8}
    both = plan_specialization(laws, 1e17, unique, tokens_per_step=4096, params=3e6)["shared"]
    assert both["specialists"] == ["code", "verse"]
    # verse weighs nothing in the mean: a verse specialist is compute the general model or code could use
    code_only = plan_specialization(laws, 1e17, unique, {"code": 1, "verse": 0}, tokens_per_step=4096, params=3e6)["shared"]
    assert code_only["specialists"] == ["code"] and code_only["domain_tokens"]["verse"] == 0.0
    assert code_only["flops"] == pytest.approx(6 * 3e6 * (code_only["general_tokens"] + code_only["domain_tokens"]["code"]))


def test_specialists_stay_within_the_fitted_domain_tokens(document):
    assert document["domains"]["code"]["domain_tokens_fitted"] == [1e7, 1.6e8]
    floors = {"code": 1e7, "verse": 1e7}
    plans = plan_specialization(fitted_laws(document), 1e17, {"code": 5e8, "verse": 2e8}, tokens_per_step=4096,
                                params=3e6, fitted_minimum={d: {"D_spec": f, "D": 0.0} for d, f in floors.items()})
    for name, p in plans.items():
        assert p["flops"] <= 1e17, name
        assert all(p["domain_tokens"][d] == 0.0 or p["domain_tokens"][d] >= floors[d] for d in floors), name


def test_a_domain_with_too_few_points_is_reported_not_fitted_and_cannot_be_planned():
    found = [p for p in synthetic_points() if p.domain == "verse"][:4] + [p for p in synthetic_points() if p.domain == "code"]
    document = fit_domains(found, [SpecializationTransfer()])
    assert "cannot determine 7 free parameters" in document["domains"]["verse"]["error"]
    with pytest.raises(ScarceError, match="unknown domain 'verse'"):
        plan_specialization(fitted_laws(document), 1e19, {"verse": 1e8}, tokens_per_step=4096)


def test_the_additive_form_cannot_predict_general_only_or_domain_only_and_says_so(document):
    laws = fitted_laws(document, "specialization_additive")
    plans = plan_specialization(laws, 1e19, {"code": 5e8}, tokens_per_step=4096)
    for strategy in ("general", "domain"):  # B/D'^δ at D' = 0, B/D^β as D → 0: no finite limit
        assert plans[strategy]["predicted_loss"] is None and "cannot predict" in plans[strategy]["note"]
    assert plans["shared"]["predicted_loss"] is not None


def test_a_plan_for_a_fixed_model_size_spends_the_budget_on_tokens(document):
    plans = plan_specialization(fitted_laws(document), 1e17, {"code": 5e8, "verse": 2e8}, tokens_per_step=4096,
                                params=3e6)
    for name, p in plans.items():
        assert p["params"] == pytest.approx(3e6) and p["flops"] <= 1e17, name
    assert plans["general"]["general_tokens"] == pytest.approx(1e17 / (6 * 3e6), rel=1e-6)
    with pytest.raises(ScarceError, match="--params must be > 0"):
        plan_specialization(fitted_laws(document), 1e17, {"code": 5e8}, params=0.0)


@pytest.mark.parametrize("holdout,held", [("N", 9), ("D", 12), ("D_spec", 12), ("tokens", 4)])
def test_the_extrapolation_target_is_chosen_by_holdout(holdout, held):
    found = [p for p in synthetic_points() if p.domain == "code"]
    entry = fit_domains(found, [SpecializationTransfer()], holdout=holdout)["domains"]["code"]
    (row,) = entry["comparison"]
    assert row["extrapolation_points"] == held and row["extrapolation_rmse_log"] is not None


def test_an_unknown_holdout_is_a_clear_error():
    with pytest.raises(ScarceError, match="--holdout 'params'"):
        fit_domains(synthetic_points(), [SpecializationTransfer()], holdout="params")


@pytest.mark.parametrize("kwargs,message", [
    (dict(flops=1e6), "below one optimizer step"),
    (dict(unique={"latin": 1e8}), "unknown domain 'latin'"),
    (dict(weights={"code": 0.0}), "sum to a positive number"),
    (dict(weights={"code": -1.0, "verse": 2.0}), ">= 0"),
])
def test_bad_plans_are_clear_errors(document, kwargs, message):
    options = dict(flops=1e19, unique={"code": 5e8, "verse": 2e8}, weights=None)
    options.update(kwargs)
    with pytest.raises(ScarceError, match=message):
        plan_specialization(fitted_laws(document), options["flops"], options["unique"], options["weights"], tokens_per_step=4096)


@pytest.mark.parametrize("command", [["plan", "specialize"], ["plan-specialize"]])
def test_plan_specialize_command_writes_the_json(document, tmp_path, command):
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps(document))
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, [*command, str(fit), "--flops", "1e19", "--domain-tokens", "code=5e8",
                                      "--domain-tokens", "verse=2e8", "--weights", "code=1,verse=1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    plans = json.loads(out.read_text())["plans"]
    assert set(plans["shared"]) >= {"params", "general_tokens", "domain_tokens", "flops", "predicted_loss"}
    assert set(plans["shared"]["predicted_loss"]) == {"code", "verse", "mean"}


def test_plan_specialize_keeps_specialists_within_the_fit_unless_told(document, tmp_path):
    fit, out = tmp_path / "fit.json", tmp_path / "plan.json"
    fit.write_text(json.dumps(document))
    shared = {}
    for flag in ("--within-fit", "--beyond-fit"):  # 1.7e7 tokens of a 3e6 model: too few for two fitted specialists
        result = CliRunner().invoke(app, ["plan", "specialize", str(fit), "--flops", "3e14", "--params", "3e6",
                                          "--domain-tokens", "code=5e8", "--domain-tokens", "verse=2e8", flag, "--json", str(out)])
        assert result.exit_code == 0, result.output
        shared[flag] = json.loads(out.read_text())["plans"]["shared"]
    # within the fit, neither can be left to the general model either (D' = 0 was not fitted): no prediction
    assert shared["--within-fit"]["predicted_loss"] is None and "minimum" in shared["--within-fit"]["note"]
    assert shared["--beyond-fit"]["specialists"] == ["code", "verse"]
    assert min(shared["--beyond-fit"]["domain_tokens"].values()) < 1e7


def test_the_planner_predicts_no_strategy_at_a_zero_its_law_was_not_fitted_on(document):
    """fit_domains fits D' > 0 only: general-only (D' = 0), domain-only (D = 0) and a shared plan leaving a
    domain to the general model are outside the fit, unless planned beyond it."""
    from scarce.commands.specialize import _fitted_minimum

    assert document["domains"]["code"]["general_tokens_fitted"] == [1e8, 1.6e9]
    unique = {"code": 5e8, "verse": 2e8}
    within = plan_specialization(fitted_laws(document), 1e19, unique, tokens_per_step=4096,
                                 fitted_minimum=_fitted_minimum(document))
    for strategy in ("general", "domain"):
        assert within[strategy]["predicted_loss"] is None and "outside the fitted range" in within[strategy]["note"]
    assert within["shared"]["specialists"] == ["code", "verse"] and within["shared"]["predicted_loss"] is not None
    beyond = plan_specialization(fitted_laws(document), 1e19, unique, tokens_per_step=4096)
    assert beyond["general"]["predicted_loss"] is not None


def test_plan_specialize_plans_from_a_plain_fit_of_the_users_own_points(tmp_path):
    """`scarce fit` of the transfer form on a points table (D' = 0 points included) plans every strategy
    but domain-only (no D = 0 point was fitted)."""
    points = tmp_path / "points.csv"
    rows = [p for p in synthetic_points() if p.domain == "code"]
    general = [Point("code", p.params, p.general_tokens, 0, p.loss * 1.05, "x") for p in rows if p.domain_tokens == 1e7]
    points.write_text("params,general_tokens,domain_tokens,loss\n" +
                      "".join(f"{p.params},{p.general_tokens},{p.domain_tokens},{p.loss}\n" for p in rows + general))
    fit = tmp_path / "fit.json"
    result = CliRunner().invoke(app, ["fit", str(points), "--law", "specialization_transfer",
                                      "--x", "N=params,D=general_tokens,D_spec=domain_tokens", "--json", str(fit)])
    assert result.exit_code == 0, result.output
    assert json.loads(fit.read_text())["data"]["ranges"]["D_spec"] == [0.0, 1.6e8]
    out = tmp_path / "plan.json"
    for given in ([str(fit)], [f"code={fit}"]):
        result = CliRunner().invoke(app, ["plan", "specialize", *given, "--flops", "1e19", "--domain-tokens", "code=5e8",
                                          "--json", str(out)])
        assert result.exit_code == 0, result.output
        plans = json.loads(out.read_text())["plans"]
        assert plans["general"]["predicted_loss"] is not None and plans["shared"]["predicted_loss"] is not None
        assert plans["domain"]["predicted_loss"] is None and "D = 0" in plans["domain"]["note"]
    result = CliRunner().invoke(app, ["plan", "specialize", str(fit), "--flops", "1e19"])
    assert result.exit_code != 0 and "--domain-tokens" in str(result.exception)
