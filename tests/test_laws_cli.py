"""`scarce fit`, `scarce laws`, `scarce plan` through the Typer app; the fit JSON and its round trip."""

import csv
import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from scarce.cli import app
from scarce.errors import ScarceError
from scarce.laws import LAWS, Chinchilla, law_from_fit_json
from scarce.runs import RunIndex, create_run_dir, write_summary

TRUE = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
runner = CliRunner()


def _points(n=40, seed=0):
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e12), n))
    loss = Chinchilla().predict({"N": params, "D": tokens}, TRUE) * np.exp(rng.normal(0, 0.002, n))
    return params, tokens, loss


def _write_csv(path, columns):
    names = list(columns)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows(zip(*(columns[k] for k in names)))
    return path


@pytest.fixture
def points_csv(tmp_path):
    params, tokens, loss = _points()
    return _write_csv(tmp_path / "points.csv", {"params": params, "tokens": tokens, "loss": loss,
                                                "note": ["sweep"] * len(loss)})


def _invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_fit_csv_writes_the_documented_json_and_a_plot(points_csv, tmp_path):
    out, png = tmp_path / "fit.json", tmp_path / "fit.png"
    result = _invoke("fit", points_csv, "--law", "chinchilla", "--x", "N=params,D=tokens", "--y", "loss",
                     "--bootstrap", 20, "--json", out, "--plot", png)
    assert "converged" in result.output and "asymptote" in result.output
    data = json.loads(out.read_text())
    assert set(data) == {"schema", "law", "data", "parameters", "objective", "fit", "derived", "bootstrap"}
    assert data["schema"] == "scarce.fit/1"
    assert data["law"]["name"] == "chinchilla" and data["law"]["variables"] == {"N": "params", "D": "tokens"}
    assert data["law"]["y"] == "loss" and data["law"]["formula"] == Chinchilla.formula
    ranges = data["data"].pop("ranges")
    assert data["data"] == {"source": str(points_csv), "n_points": 40, "filters": [], "best_per_x": False}
    assert set(ranges) == {"N", "D"} and 1e7 <= ranges["N"][0] < ranges["N"][1] <= 1e10
    assert set(data["parameters"]) == set(TRUE)
    for name, entry in data["parameters"].items():
        lo, hi = entry["interval"]
        assert lo <= entry["value"] <= hi
        assert entry["value"] == pytest.approx(TRUE[name], rel=0.3)
    assert {"loss", "delta", "converged", "message", "iterations", "n_starts", "n_refined", "winning_start",
            "winning_start_objective", "rmse_log", "max_abs_residual_log", "seconds", "bootstrap_resamples",
            "bootstrap_failed", "interval_level"} <= set(data["fit"])
    assert data["fit"]["converged"] and data["fit"]["n_starts"] == 4500 and data["fit"]["loss"] == "huber"
    assert data["objective"] == data["fit"]["objective"]
    assert data["derived"]["asymptote"]["value"] == data["parameters"]["E"]["value"]
    assert data["bootstrap"]["parameter_names"] == list(data["parameters"])
    assert np.array(data["bootstrap"]["samples"]).shape == (20, 5)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_fit_json_round_trips_to_a_fitted_law(points_csv, tmp_path):
    out = tmp_path / "fit.json"
    _invoke("fit", points_csv, "--x", "N=params,D=tokens", "--loss", "mse", "--bootstrap", 10, "--json", out)
    data = json.loads(out.read_text())
    law = law_from_fit_json(out)
    assert law.name == "chinchilla" and data["fit"]["loss"] == "mse" and data["fit"]["delta"] is None
    assert law.params_ == {k: v["value"] for k, v in data["parameters"].items()}
    assert law.intervals_ == {k: tuple(v["interval"]) for k, v in data["parameters"].items()}
    np.testing.assert_array_equal(law.bootstrap_params_, data["bootstrap"]["samples"])
    params, tokens, _ = _points()
    expected = Chinchilla().predict({"N": params, "D": tokens}, law.params_)
    np.testing.assert_allclose(law.predict({"N": params, "D": tokens}), expected, rtol=1e-15)


def test_law_from_fit_json_rejects_other_files(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"schema": "something/1"}))
    with pytest.raises(ScarceError, match="expected schema 'scarce.fit/1'"):
        law_from_fit_json(bad)
    bad.write_text(json.dumps({"schema": "scarce.fit/1", "law": {}}))
    with pytest.raises(ScarceError, match="malformed"):
        law_from_fit_json(bad)


def test_plan_from_a_fit(points_csv, tmp_path):
    fit_json, plan_json = tmp_path / "fit.json", tmp_path / "plan.json"
    _invoke("fit", points_csv, "--x", "N=params,D=tokens", "--bootstrap", 10, "--json", fit_json)
    result = _invoke("plan", fit_json, "--flops", "1e20", "--flops", "1e22", "--json", plan_json)
    assert "best allocation" in result.output
    plans = json.loads(plan_json.read_text())
    assert plans["schema"] == "scarce.plan/1" and [p["flops"] for p in plans["plans"]] == [1e20, 1e22]
    p = law_from_fit_json(fit_json).params_
    a, b = p["alpha"], p["beta"]
    for entry in plans["plans"]:
        params = (a * p["A"] / (b * p["B"])) ** (1 / (a + b)) * (entry["flops"] / 6) ** (b / (a + b))
        assert entry["params"]["value"] == pytest.approx(params, rel=1e-9)
        assert entry["tokens"]["value"] == pytest.approx(entry["flops"] / (6 * params), rel=1e-9)
        assert entry["params"]["interval"] is not None


def test_laws_lists_every_form():
    result = _invoke("laws")
    for name in LAWS:
        assert name in result.output


def test_comparing_laws(points_csv, tmp_path):
    out = tmp_path / "compare.json"
    result = _invoke("fit", points_csv, "--law", "chinchilla", "--law", "softq", "--x", "N=params,D=tokens",
                     "--json", out)
    assert "leave-one-out" in result.output
    data = json.loads(out.read_text())
    assert data["schema"] == "scarce.compare/1"
    assert [row["law"] for row in data["comparison"]] == ["chinchilla", "softq"]
    assert [fit["law"]["name"] for fit in data["fits"]] == ["chinchilla", "softq"]


def test_fit_from_the_run_store(tmp_path):
    runs_dir = tmp_path / "runs"
    params, tokens, loss = _points(n=24, seed=3)
    for i, (n, d, value) in enumerate(zip(params, tokens, loss)):
        run_dir = create_run_dir(runs_dir, f"sweep{i}", {"optim": {"weight_decay": 0.1 * (1 + i % 2)}})
        write_summary(run_dir, {"run_id": run_dir.name, "status": "completed", "params": int(n),
                                "tokens_seen": int(d), "final_val_loss": float(value)})
        RunIndex(runs_dir).record(run_dir)
    running = create_run_dir(runs_dir, "unfinished", {"optim": {"weight_decay": 0.1}})
    write_summary(running, {"run_id": running.name, "status": "running", "params": 10**8, "tokens_seen": 10**9,
                            "final_val_loss": None})
    RunIndex(runs_dir).record(running)

    out = tmp_path / "fit.json"
    _invoke("fit", "--runs", runs_dir, "--x", "N=params,D=tokens_seen", "--json", out)
    data = json.loads(out.read_text())
    assert data["data"]["n_points"] == 24 and data["law"]["y"] == "final_val_loss"  # the running run is no point
    assert data["parameters"]["E"]["value"] == pytest.approx(1.69, rel=0.05)

    _invoke("fit", "--runs", runs_dir, "--x", "N=params,D=tokens_seen", "--where", "optim.weight_decay>=0.15",
            "--json", out)
    data = json.loads(out.read_text())
    assert data["data"]["n_points"] == 12 and data["data"]["filters"] == ["optim.weight_decay>=0.15"]


def test_custom_law_from_a_python_file(points_csv, tmp_path):
    module = tmp_path / "mylaw.py"
    module.write_text(textwrap.dedent("""
        from scarce.laws import CustomLaw

        def params_only(x, E, A, alpha):
            return E + A * x["N"] ** -alpha

        LAW = CustomLaw(params_only, ["N"], {"E": (0.5, 5), "A": (1, 1e4), "alpha": (0.05, 1)},
                        log_params=("A",), name="params_only")
    """))
    out = tmp_path / "fit.json"
    _invoke("fit", points_csv, "--law", f"{module}:LAW", "--x", "N=params", "--json", out)
    data = json.loads(out.read_text())
    assert data["law"]["name"] == "params_only" and data["law"]["spec"]["custom"] is True
    with pytest.raises(ScarceError, match="custom law 'params_only' cannot be rebuilt"):
        law_from_fit_json(out)


def test_intervention_column_fits_the_effective_data_multiplier(tmp_path):
    params, tokens, loss = _points(n=40, seed=4)
    treated = np.arange(40) % 2
    loss = np.where(treated, Chinchilla().predict({"N": params, "D": 1.5 * tokens}, TRUE) * loss
                    / Chinchilla().predict({"N": params, "D": tokens}, TRUE), loss)
    points = _write_csv(tmp_path / "mir.csv", {"params": params, "tokens": tokens, "loss": loss, "mir": treated})
    out = tmp_path / "fit.json"
    _invoke("fit", points, "--x", "N=params,D=tokens", "--intervention", "mir", "--bootstrap", 20, "--json", out)
    data = json.loads(out.read_text())
    k = data["derived"]["effective_data_multiplier"]
    assert k["value"] == pytest.approx(1.5, rel=0.05) and k["interval"][0] <= 1.5 <= k["interval"][1]
    assert data["law"]["variables"]["intervention"] == "mir"
    law = law_from_fit_json(out)  # the joint law rebuilds from its description
    assert law.name == "chinchilla+k" and law.params_["k"] == k["value"]


@pytest.mark.parametrize("args,named", [
    (["--x", "N=parms,D=tokens"], "'parms'"),
    (["--x", "N=params,D=tokens", "--y", "val_loss"], "'val_loss'"),
    (["--x", "N=params,D=note"], "'note' has 'sweep'"),
    (["--x", "N=params,D=tokens", "--law", "chinchila"], "unknown law 'chinchila'"),
    (["--x", "N=params,D=tokens", "--loss", "l1"], "--loss must be one of huber, mse"),
])
def test_bad_input_fails_naming_the_problem(points_csv, args, named):
    result = runner.invoke(app, ["fit", str(points_csv), *args])
    assert result.exit_code != 0
    message = str(result.exception) + result.output
    assert isinstance(result.exception, ScarceError) and named in message


# ---- review fixes: laws without a fit's extras, validation, specific paths ---------------------------


def test_a_law_loaded_from_a_fit_json_works_everywhere(points_csv, tmp_path):
    from scarce.laws.io import fit_to_json
    from scarce.laws.plot import plot_fit

    out = tmp_path / "fit.json"
    _invoke("fit", points_csv, "--x", "N=params,D=tokens", "--bootstrap", 10, "--json", out)
    law = law_from_fit_json(out)
    assert law.converged_ and law.report_.n_points == 40 and law.objective_ == json.loads(out.read_text())["objective"]
    again = fit_to_json(law, columns={"N": "params", "D": "tokens"}, y_column="loss", source="again")
    assert again["parameters"] == json.loads(out.read_text())["parameters"]
    params, tokens, loss = _points()
    assert plot_fit(law, {"N": params, "D": tokens}, loss, tmp_path / "again.png").stat().st_size > 10_000
    # ... and one with published parameters and nothing else
    published = Chinchilla()
    published.params_ = dict(TRUE)
    data = fit_to_json(published, columns={"N": "params", "D": "tokens"}, y_column="loss", source="paper")
    assert data["parameters"]["E"] == {"value": 1.69, "interval": None} and data["fit"] is None
    assert plot_fit(published, {"N": params, "D": tokens}, loss, tmp_path / "paper.png").exists()


@pytest.mark.parametrize("args,named", [
    (["--delta", "0"], "delta"),
    (["--delta", "-1"], "delta"),
    (["--bootstrap", "-5"], "bootstrap"),
    (["--law", "softq", "--fix", "gamma=2"], "'gamma'"),
    (["--law", "softq", "--fix", "gamma=-0.5"], "'gamma'"),
    (["--fix", "alpha=-1"], "'alpha'"),
    (["--fix", "gamma=1"], "no law given has a parameter 'gamma'"),
])
def test_bad_options_fail_naming_the_option(points_csv, args, named):
    result = runner.invoke(app, ["fit", str(points_csv), "--x", "N=params,D=tokens", *args])
    assert isinstance(result.exception, ScarceError), result.output
    assert named in str(result.exception)


def test_a_fix_applies_to_the_laws_that_have_the_parameter(points_csv, tmp_path):
    out = tmp_path / "compare.json"
    _invoke("fit", points_csv, "--law", "chinchilla", "--law", "softq", "--fix", "gamma=1", "--x",
            "N=params,D=tokens", "--json", out)
    fits = json.loads(out.read_text())["fits"]
    assert fits[0]["law"]["spec"]["fixed"] == {} and fits[1]["law"]["spec"]["fixed"] == {"gamma": 1.0}


def test_a_bad_row_is_named_by_its_csv_line_in_every_error(tmp_path):
    params, tokens, loss = _points(n=30)
    header_and_rows = 1 + 19  # the 20th line of the file is the 19th data row (index 18)
    for bad_loss, expected in (("oops", "not a number"), ("-1", "must be finite and > 0")):
        column = [str(v) for v in loss]
        column[18] = bad_loss
        points = _write_csv(tmp_path / "bad.csv", {"params": params, "tokens": tokens, "loss": column})
        result = runner.invoke(app, ["fit", str(points), "--x", "N=params,D=tokens"])
        assert isinstance(result.exception, ScarceError)
        message = str(result.exception)
        assert f"line {header_and_rows}" in message and expected in message, message


def test_plan_refuses_a_unique_token_cap_the_law_cannot_use(points_csv, tmp_path):
    fit_json = tmp_path / "fit.json"
    _invoke("fit", points_csv, "--x", "N=params,D=tokens", "--json", fit_json)
    result = runner.invoke(app, ["plan", str(fit_json), "--flops", "1e20", "--unique-tokens", "1e9"])
    assert isinstance(result.exception, ScarceError) and "data_constrained" in str(result.exception)


def test_intervention_plot_of_a_scattered_design(tmp_path):
    params, tokens, loss = _points(n=40, seed=4)  # every point its own group: more than 12
    treated = np.arange(40) % 2
    points = _write_csv(tmp_path / "mir.csv", {"params": params, "tokens": tokens, "loss": loss, "mir": treated})
    png = tmp_path / "mir.png"
    _invoke("fit", points, "--x", "N=params,D=tokens", "--intervention", "mir", "--plot", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_custom_law_without_an_asymptote_fits_and_prints(points_csv, tmp_path):
    module = tmp_path / "noe.py"
    module.write_text(textwrap.dedent("""
        from scarce.laws import CustomLaw

        def pure_power(x, A, alpha):
            return A * x["N"] ** -alpha

        LAW = CustomLaw(pure_power, ["N"], {"A": (1, 1e4), "alpha": (0.001, 1)}, log_params=("A",),
                        name="pure_power")
    """))
    out = tmp_path / "fit.json"
    result = _invoke("fit", points_csv, "--law", f"{module}:LAW", "--x", "N=params", "--json", out)
    assert "alpha" in result.output and "asymptote" not in json.loads(out.read_text())["derived"]


def test_a_parameter_the_data_cannot_determine_is_named_in_output_and_json(tmp_path):
    rng = np.random.default_rng(0)
    x = {"N": np.exp(rng.uniform(np.log(1e7), np.log(1e10), 30)),
         "U": np.exp(rng.uniform(np.log(1e8), np.log(1e11), 30)), "epochs": np.ones(30)}
    from scarce.laws import DataConstrained

    loss = DataConstrained().predict(x, dict(E=1.9, A=400.0, alpha=0.34, B=1200.0, beta=0.3, R_star_D=15.4))
    points = _write_csv(tmp_path / "one_epoch.csv", {**x, "loss": loss})
    out = tmp_path / "fit.json"
    result = _invoke("fit", points, "--law", "data_constrained", "--json", out)
    assert "not determined by the data: R_star_D" in " ".join(result.output.split())
    data = json.loads(out.read_text())
    assert data["fit"]["unidentified"] == ["R_star_D"]


# ---- scarce fit --tiered -----------------------------------------------------------------------------


def _tiered_table(tmp_path, with_k=True):
    rows = [(k, n, d) for d in (0.05, 0.2, 0.8, 3.2, 12.8) for n in (0.15, 0.3, 0.6, 1.2) for k in range(1, 5)]
    k, n, d = (np.array(c, dtype=float) for c in zip(*rows))
    noise = np.random.default_rng(3).normal(0, 0.001, len(k))
    y = 2.0 + 1.3 * d ** -0.3 + 0.05 * n ** -0.5 + 0.25 * k ** -1.0 + noise
    if not with_k:
        keep = k == 1
        return _write_csv(tmp_path / "nd.csv", {"params": n[keep], "tokens": d[keep], "loss": y[keep]})
    return _write_csv(tmp_path / "knd.csv", {"members": k, "params": n, "tokens": d, "loss": y})


def test_tiered_asymptote_command_writes_levels_groups_and_the_joint_asymptote(tmp_path):
    from scarce.laws import tiered_asymptote

    points = _tiered_table(tmp_path)
    out, png = tmp_path / "tiers.json", tmp_path / "tiers.png"
    result = _invoke("fit", points, "--tiered", "K,N,D", "--x", "K=members,N=params,D=tokens", "--bootstrap", 10,
                     "--json", out, "--plot", png)
    assert "joint asymptote" in result.output
    data = json.loads(out.read_text())
    assert data["schema"] == "scarce.tiered/1"
    assert [level["variable"] for level in data["levels"]] == ["K", "N", "D"]
    k_level, n_level, d_level = data["levels"]
    assert len(k_level["groups"]) == 20 and set(k_level["groups"][0]) >= {"N", "D", "asymptote", "interval"}
    assert len(n_level["groups"]) == 5 and set(n_level["groups"][0]) >= {"D", "asymptote", "interval"}
    assert len(d_level["groups"]) == 1
    rows = list(csv.DictReader(points.open()))
    table = {c: np.array([float(r[c]) for r in rows]) for c in ("members", "params", "tokens", "loss")}
    tiers = tiered_asymptote({"K": table["members"], "N": table["params"], "D": table["tokens"]}, table["loss"],
                             levels=("K", "N", "D"), bootstrap=10, seed=0)
    for group in n_level["groups"]:
        expected = tiers.asymptotes["N"][(group["D"],)]
        assert group["asymptote"] == pytest.approx(expected.value, rel=1e-12)
        assert group["interval"] == pytest.approx(list(expected.interval), rel=1e-12)
    assert data["asymptote"] == pytest.approx(tiers.final[()].value, rel=1e-12)
    assert data["interval"][0] <= data["asymptote"] <= data["interval"][1]
    assert data["asymptote"] == pytest.approx(2.0, abs=0.3)  # three levels of fits amplify the noise
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiered_asymptote_of_a_table_already_at_infinite_k(tmp_path):
    out = tmp_path / "tiers.json"
    _invoke("fit", _tiered_table(tmp_path, with_k=False), "--tiered", "N,D", "--x", "N=params,D=tokens",
            "--json", out)
    data = json.loads(out.read_text())
    assert [level["variable"] for level in data["levels"]] == ["N", "D"] and data["interval"] is None


@pytest.mark.parametrize("tiered,named", [("N", "two or three"), ("N,X", "'X'"), ("N,N", "twice")])
def test_tiered_asymptote_rejects_bad_levels(tmp_path, tiered, named):
    result = runner.invoke(app, ["fit", str(_tiered_table(tmp_path, with_k=False)), "--tiered", tiered,
                                 "--x", "N=params,D=tokens"])
    assert isinstance(result.exception, ScarceError) and named in str(result.exception), result.output


# ---- scarce efficiency -------------------------------------------------------------------------------


def test_efficiency_with_published_parameters_is_the_closed_form(tmp_path):
    out = tmp_path / "eff.json"
    result = _invoke("efficiency", "--loss", 2.5, "--tokens", 0.2, "--law", "power", "--param", "E=1.89",
                     "--param", "A=1.30", "--param", "alpha=0.23", "--json", out)
    assert "effective tokens" in result.output
    data = json.loads(out.read_text())
    d_eff = (1.30 / (2.5 - 1.89)) ** (1 / 0.23)
    assert data["effective_tokens"]["value"] == pytest.approx(d_eff, rel=1e-12)
    assert data["ratio"]["value"] == pytest.approx(d_eff / 0.2, rel=1e-12)
    assert data["ratio"]["interval"] is None
    observed = 1.89 + 1.30 * 0.25 ** -0.23
    _invoke("efficiency", "--loss", 2.5, "--tokens", 0.2, "--baseline-loss", observed, "--param", "E=1.89",
            "--param", "A=1.30", "--param", "alpha=0.23", "--json", out)
    assert json.loads(out.read_text())["ratio"]["value"] == pytest.approx(d_eff / 0.25, rel=1e-9)


def test_efficiency_from_a_data_law_fit_has_intervals(tmp_path):
    tokens = np.geomspace(0.05, 5.0, 12)
    loss = 1.89 + 1.30 * tokens ** -0.23 * np.exp(np.random.default_rng(0).normal(0, 0.002, 12))
    points = _write_csv(tmp_path / "data_law.csv", {"tokens": tokens, "loss": loss})
    fit_json, out = tmp_path / "fit.json", tmp_path / "eff.json"
    _invoke("fit", points, "--law", "power", "--x", "D=tokens", "--loss", "mse", "--bootstrap", 30, "--json", fit_json)
    _invoke("efficiency", "--loss", 2.5, "--tokens", 0.2, "--fit", fit_json, "--json", out)
    ratio = json.loads(out.read_text())["ratio"]
    assert ratio["interval"][0] <= ratio["value"] <= ratio["interval"][1]


def test_efficiency_needs_a_data_law_with_its_parameters(points_csv, tmp_path):
    fit_json = tmp_path / "fit.json"
    _invoke("fit", points_csv, "--x", "N=params,D=tokens", "--json", fit_json)  # chinchilla: not a data law
    result = runner.invoke(app, ["efficiency", "--loss", "2.5", "--tokens", "1e9", "--fit", str(fit_json)])
    assert isinstance(result.exception, ScarceError) and "power" in str(result.exception)
    result = runner.invoke(app, ["efficiency", "--loss", "2.5", "--tokens", "0.2", "--param", "E=1.89",
                                 "--param", "A=1.30"])
    assert isinstance(result.exception, ScarceError) and "alpha" in str(result.exception)
    result = runner.invoke(app, ["efficiency", "--loss", "2.5", "--tokens", "0.2"])
    assert isinstance(result.exception, ScarceError) and "--fit" in str(result.exception)
