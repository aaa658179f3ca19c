"""Law forms: each recovers its own parameters from noisy synthetic data; exact gradients; units."""

import subprocess
import sys

import numpy as np
import pytest

from scarce.errors import ScarceError
from scarce.laws import (
    LAWS,
    Chinchilla,
    CustomLaw,
    DataConstrained,
    PowerLaw,
    SoftQ,
    SpecializationAdditive,
    SpecializationTransfer,
    get_law,
    law_from_dict,
)
from scarce.laws.fit import Problem

NOISE = 0.001  # multiplicative noise on loss, about what repeated seeds give on a validation set


def _log_uniform(rng, lo, hi, n):
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _design(name, rng, n=120):
    """Points spanning enough of each variable that every parameter is identified."""
    if name == "power":
        return {"K": np.repeat(np.arange(1.0, 9.0), 3)}
    if name in ("chinchilla", "softq"):
        return {"N": _log_uniform(rng, 1e7, 1e10, n), "D": _log_uniform(rng, 1e8, 1e12, n)}
    if name == "data_constrained":
        return {"N": _log_uniform(rng, 1e7, 1e10, n), "U": _log_uniform(rng, 1e8, 1e11, n),
                "epochs": np.exp(rng.uniform(0, np.log(200), n))}
    if name == "data_constrained_un":
        x = _design("data_constrained", rng, n)
        x["U_N"] = _log_uniform(rng, 1e6, 1e9, n)
        return x
    return {"N": _log_uniform(rng, 1e7, 1e10, n), "D": _log_uniform(rng, 1e8, 1e12, n),
            "D_spec": _log_uniform(rng, 1e6, 1e10, n)}


CASES = [
    ("power", lambda: PowerLaw(variable="K"), dict(E=3.34, A=0.25, alpha=1.02)),
    ("chinchilla", Chinchilla, dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)),
    ("softq", SoftQ, dict(E=1.8, A=300.0, alpha=0.35, B=800.0, beta=0.3, gamma=0.5)),
    ("data_constrained", DataConstrained,
     dict(E=1.9, A=400.0, alpha=0.34, B=1200.0, beta=0.3, R_star_D=15.4)),
    ("data_constrained_un", lambda: DataConstrained(unique_params=True),
     dict(E=1.9, A=400.0, alpha=0.34, B=1200.0, beta=0.3, R_star_D=15.4, R_star_N=5.3)),
    ("specialization_transfer", SpecializationTransfer,
     dict(E=1.7, A=400.0, alpha=0.34, B=600.0, beta=0.3, kappa=0.05, eta=0.9)),
    ("specialization_additive", SpecializationAdditive,
     dict(E=1.7, A=400.0, alpha=0.34, B=400.0, beta=0.28, C=30.0, delta=0.25)),
]


@pytest.mark.parametrize("name,make,true", CASES, ids=[c[0] for c in CASES])
def test_form_recovers_its_parameters_from_noisy_data(name, make, true):
    rng = np.random.default_rng(0)
    law = make()
    x = _design(name, rng)
    y = law.predict(x, true) * np.exp(rng.normal(0, NOISE, len(next(iter(x.values())))))
    law.fit(x, y)
    assert law.converged_
    for key, value in true.items():
        # Exponents and E are well determined; scales and decay constants less so, as in the papers.
        tolerance = 0.03 if key in ("E", "alpha", "beta", "gamma", "eta", "delta") else 0.25
        assert law.params_[key] == pytest.approx(value, rel=tolerance), key
    assert law.report_.rmse_log < 2 * NOISE


def test_custom_law_recovers_parameters_with_numerical_gradients():
    def exp_decay(x, E, A, tau):
        return E + A * np.exp(-x["steps"] / tau)

    law = CustomLaw(exp_decay, ["steps"], {"E": (0.5, 10), "A": (0.01, 10), "tau": (10, 1e5)},
                    log_params=("tau",))
    rng = np.random.default_rng(1)
    steps = np.linspace(100, 20000, 40)
    y = exp_decay({"steps": steps}, 2.0, 1.5, 3000.0) * np.exp(rng.normal(0, NOISE, 40))
    law.fit({"steps": steps}, y, bootstrap=20)
    assert law.params_ == pytest.approx({"E": 2.0, "A": 1.5, "tau": 3000.0}, rel=0.03)
    assert set(law.intervals_) == {"E", "A", "tau"}


def test_custom_law_that_does_not_broadcast_is_evaluated_per_start():
    def scalar_only(x, E, A):
        assert np.ndim(E) == 0, "written for scalars"
        return E + A / x["N"]

    law = CustomLaw(scalar_only, ["N"], {"E": (0.1, 5), "A": (0.1, 100)})
    n = np.geomspace(1, 100, 12)
    law.fit({"N": n}, 2 + 10 / n)
    assert law.params_ == pytest.approx({"E": 2, "A": 10}, rel=1e-3)


@pytest.mark.parametrize("name,make,true", CASES, ids=[c[0] for c in CASES])
def test_exact_gradient_matches_finite_differences(name, make, true):
    rng = np.random.default_rng(2)
    law = make()
    x = _design(name, rng, n=30)
    y = law.predict(x, true) * np.exp(rng.normal(0, 0.02, 30 if name != "power" else 24))
    theta = law.to_fitted(true) + rng.normal(0, 0.05, len(true))
    for loss in ("huber", "mse"):
        problem = Problem(law, x, y, loss=loss)
        _, grad = problem.value_and_grad(theta)
        for i in range(len(theta)):
            step = np.zeros_like(theta)
            step[i] = 1e-6
            numeric = (problem.value_and_grad(theta + step)[0] - problem.value_and_grad(theta - step)[0]) / 2e-6
            assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-9), (loss, law.param_names[i])


def test_parameters_transform_under_a_change_of_units():
    """Params in billions: A/N^α = A·1e-9^(-α)... so A_billions = A·1e9^(−α); everything else is unchanged."""
    rng = np.random.default_rng(3)
    x = _design("chinchilla", rng, n=80)
    true = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
    y = Chinchilla().predict(x, true) * np.exp(rng.normal(0, NOISE, 80))
    raw = Chinchilla().fit(x, y)
    billions = Chinchilla().fit({"N": x["N"] / 1e9, "D": x["D"] / 1e9}, y)
    p, q = raw.params_, billions.params_
    # Two separate fits stop at slightly different points of the optimum's flat valley (log A against α);
    # these tolerances allow that and still fail a wrong transformation by orders of magnitude.
    for key in ("E", "alpha", "beta"):
        assert q[key] == pytest.approx(p[key], rel=1e-4)
    assert q["A"] == pytest.approx(p["A"] * 1e9 ** (-p["alpha"]), rel=1e-3)
    assert q["B"] == pytest.approx(p["B"] * 1e9 ** (-p["beta"]), rel=1e-3)
    assert billions.objective_ == pytest.approx(raw.objective_, rel=1e-7)
    np.testing.assert_allclose(billions.predict({"N": x["N"] / 1e9, "D": x["D"] / 1e9}), raw.predict(x), rtol=1e-5)


def test_softq_with_gamma_pinned_to_one_is_the_chinchilla_fit():
    rng = np.random.default_rng(4)
    x = _design("chinchilla", rng, n=60)
    y = SoftQ().predict(x, dict(E=1.8, A=300.0, alpha=0.35, B=800.0, beta=0.3, gamma=0.6)) \
        * np.exp(rng.normal(0, 0.003, 60))
    chinchilla = Chinchilla().fit(x, y)
    softq = SoftQ(fixed={"gamma": 1.0}).fit(x, y)
    assert softq.params_["gamma"] == 1.0
    # The same optimum: equal objectives and predictions. Not the sixth digit of a scale: along the flat
    # direction of log A against α an objective equal to 1e-12 leaves ~1e-6 in A, and which point of that
    # valley an optimizer stops at differs between BLAS builds and CPUs. A wrong term would change the
    # objective by orders of magnitude more than these tolerances.
    assert softq.objective_ == pytest.approx(chinchilla.objective_, rel=1e-8)
    grid = _design("chinchilla", np.random.default_rng(5), n=200)  # also far outside the points
    np.testing.assert_allclose(softq.predict(grid), chinchilla.predict(grid), rtol=1e-5)
    for key, value in chinchilla.params_.items():
        assert softq.params_[key] == pytest.approx(value, rel=1e-3), key
    # ... and a free gamma finds the coupling the data came from, with a lower objective.
    free = SoftQ().fit(x, y)
    assert free.params_["gamma"] == pytest.approx(0.6, abs=0.1)
    assert free.objective_ < chinchilla.objective_


def test_registry_and_round_trip():
    assert {"power", "chinchilla", "data_constrained", "softq", "specialization_transfer",
            "specialization_additive"} <= set(LAWS)
    law = get_law("data_constrained", unique_params=True, fixed={"R_star_N": 5.3})
    again = law_from_dict(law.to_dict())
    assert again.variables == law.variables and again.fitted_bounds() == law.fitted_bounds()
    assert "R*_D" in law.formula


def test_importing_laws_does_not_import_torch():
    code = "import sys, scarce.laws, scarce.commands.laws; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---- bad input --------------------------------------------------------------------------------------


def _points(n=10):
    n_params = np.geomspace(1e7, 1e9, n)
    tokens = np.geomspace(1e9, 1e11, n)[::-1]
    return {"N": n_params, "D": tokens}, 2 + 400 / n_params ** 0.34 + 400 / tokens ** 0.28


def test_fewer_points_than_parameters_is_an_error():
    x, y = _points(4)
    with pytest.raises(ScarceError, match="4 points cannot determine 5 free parameters"):
        Chinchilla().fit(x, y)


@pytest.mark.parametrize("bad", [np.nan, 0.0, -1.0, np.inf])
def test_nan_or_non_positive_loss_is_an_error(bad):
    x, y = _points()
    y[3] = bad
    with pytest.raises(ScarceError, match=f"point 3 has loss {bad:.6g}$"):
        Chinchilla().fit(x, y)


def test_non_positive_variable_is_an_error():
    x, y = _points()
    x["N"][2] = 0
    with pytest.raises(ScarceError, match="'N' must be finite and > 0; point 2"):
        Chinchilla().fit(x, y)


def test_missing_variable_is_an_error():
    x, y = _points()
    with pytest.raises(ScarceError, match="missing variable.*D"):
        Chinchilla().fit({"N": x["N"]}, y)


def test_epochs_below_one_is_an_error():
    x = {"N": np.full(8, 1e8), "U": np.full(8, 1e9), "epochs": np.linspace(0.5, 4, 8)}
    with pytest.raises(ScarceError, match="'epochs' must be >= 1"):
        DataConstrained().fit(x, np.full(8, 3.0))


def test_a_form_that_cannot_be_evaluated_is_an_error():
    def broken(x, E, A):
        raise KeyError("tokens")

    with pytest.raises(ScarceError, match="could not be evaluated: KeyError"):
        CustomLaw(broken, ["N"], {"E": (1, 2), "A": (1, 2)}).fit({"N": np.arange(1.0, 6)}, np.full(5, 2.0))

    def negative(x, E, A):
        return -E - A * x["N"]

    with pytest.raises(ScarceError, match="no finite, positive prediction"):
        CustomLaw(negative, ["N"], {"E": (1, 2), "A": (1, 2)}).fit({"N": np.arange(1.0, 6)}, np.full(5, 2.0))


def test_unknown_names_are_errors():
    with pytest.raises(ScarceError, match="unknown law 'chinchila'"):
        get_law("chinchila")
    with pytest.raises(ScarceError, match="unknown parameter 'gama'"):
        SoftQ(fixed={"gama": 1})
    with pytest.raises(ScarceError, match="not fitted"):
        Chinchilla().predict({"N": [1e9], "D": [1e10]})


def test_specialization_transfer_takes_zero_domain_tokens_but_not_negative():
    law = SpecializationTransfer()
    true = dict(E=1.7, A=400.0, alpha=0.34, B=600.0, beta=0.3, kappa=0.05, eta=0.9)
    general = law.predict({"N": [1e8], "D": [1e10], "D_spec": [0.0]}, true)[0]
    # With no domain tokens the general tokens alone count, as κ·D^η.
    expected = 1.7 + 400 * 1e8 ** -0.34 + 600 * (0.05 * 1e10 ** 0.9) ** -0.3
    assert general == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ScarceError, match="'D_spec' must be finite and >= 0; point 1 has -1$"):
        law.predict({"N": [1e8, 1e8], "D": [1e10, 1e10], "D_spec": [0.0, -1.0]}, true)


@pytest.mark.parametrize("make,fixed", [
    (SoftQ, {"gamma": -0.5}), (SoftQ, {"gamma": 2.0}), (Chinchilla, {"alpha": -1.0}),
    (Chinchilla, {"E": -1.0}),
])
def test_a_pinned_value_outside_the_forms_domain_is_an_error(make, fixed):
    (name,) = fixed
    with pytest.raises(ScarceError, match=f"{name!r}"):
        make(fixed=fixed)
