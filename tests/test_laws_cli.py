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
    assert data["data"] == {"source": str(points_csv), "n_points": 40, "filters": [], "best_per_x": False}
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
