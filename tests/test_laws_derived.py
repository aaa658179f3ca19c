"""Derived quantities: asymptotes (single and tiered), effective data and data efficiency, the
effective-data multiplier, compute-optimal allocations."""

import numpy as np
import pytest

from scarce.errors import ScarceError
from scarce.laws import (
    Chinchilla,
    DataConstrained,
    PowerLaw,
    SoftQ,
    SpecializationTransfer,
    asymptote,
    data_efficiency,
    effective_data,
    effective_data_multiplier,
    estimate,
    plan,
    tiered_asymptote,
)

DATA_LAW = dict(E=1.89, A=1.30, alpha=0.23)  # Kim et al.'s standard-recipe data law, D in billions


def _data_law(noise=0.0, bootstrap=0):
    tokens = np.geomspace(0.05, 5.0, 10)  # billions
    rng = np.random.default_rng(0)
    y = PowerLaw("D").predict({"D": tokens}, DATA_LAW) * np.exp(rng.normal(0, noise, len(tokens)))
    return PowerLaw("D").fit({"D": tokens}, y, loss="mse", bootstrap=bootstrap)


def test_asymptote_is_E_with_its_interval():
    law = _data_law(noise=0.002, bootstrap=50)
    e = asymptote(law)
    assert e.value == law.params_["E"] == pytest.approx(1.89, rel=0.05)
    assert e.interval == law.intervals_["E"] and e.interval[0] <= 1.89 <= e.interval[1]
    assert len(e.samples) == 50
    assert asymptote(_data_law()).interval is None  # no bootstrap, no interval


def test_tiered_asymptote_recovers_each_level_and_the_data_law_over_per_D_asymptotes():
    """L(K; N, D) = E_K(N, D) + 0.25/K^1.02, E_K(N, D) = E_N(D) + 0.05/N^0.5, E_N(D) = 2 + 1.3/D^0.3."""
    def e_n(d):
        return 2.0 + 1.3 * d ** -0.3

    def e_k(n, d):
        return e_n(d) + 0.05 * n ** -0.5

    rows = [(k, n, d) for d in (0.1, 0.2, 0.4, 0.8, 1.6) for n in (0.15, 0.3, 0.6, 1.2, 2.4) for k in range(1, 6)]
    k, n, d = (np.array(c, dtype=float) for c in zip(*rows))
    y = e_k(n, d) + 0.25 * k ** -1.02
    tiers = tiered_asymptote({"K": k, "N": n, "D": d}, y, levels=("K", "N", "D"))
    assert tiers.group_columns == {"K": ("N", "D"), "N": ("D",), "D": ()}
    for (n_value, d_value), e in tiers.asymptotes["K"].items():
        assert e.value == pytest.approx(e_k(n_value, d_value), rel=1e-6)
    for (d_value,), e in tiers.asymptotes["N"].items():
        assert e.value == pytest.approx(e_n(d_value), rel=1e-5)
    data_law = tiers.laws["D"][()]
    assert data_law.params_ == pytest.approx({"E": 2.0, "A": 1.3, "alpha": 0.3}, rel=1e-3)
    assert tiers.final[()].value == pytest.approx(2.0, rel=1e-4)


def test_tiered_asymptote_intervals_propagate_up_the_levels():
    rows = [(k, n) for n in (0.15, 0.3, 0.6, 1.2) for k in range(1, 6)]
    k, n = (np.array(c, dtype=float) for c in zip(*rows))
    noise = np.tile(np.random.default_rng(1).normal(0, 0.002, 5), 4)  # the same pattern in every N group
    y = 3.3 + 0.05 * n ** -0.8 + 0.25 * k ** -1.0 + noise
    tiers = tiered_asymptote({"K": k, "N": n}, y, levels=("K", "N"), bootstrap=30, seed=0)
    joint = tiers.final[()]
    assert joint.interval[0] <= joint.value <= joint.interval[1]
    assert joint.interval[0] <= 3.3 <= joint.interval[1]
    assert len(joint.samples) == 30
    # Each N group resamples its own points independently: groups whose points differ only by a constant
    # would move in lockstep if they shared resample draws.
    draws = [e.samples - e.value for e in tiers.asymptotes["K"].values()]
    assert np.corrcoef(draws[0], draws[1])[0, 1] < 0.9


def test_tiered_asymptote_names_a_missing_column():
    with pytest.raises(ScarceError, match="missing column.*K"):
        tiered_asymptote({"N": [1, 2, 3]}, [3, 2, 1], levels=("K", "N"))


def test_effective_data_and_data_efficiency_follow_the_closed_form():
    law = _published_data_law()  # exact parameters: the closed form, not a fit's last digits
    loss = 2.5
    d_eff = (1.30 / (loss - 1.89)) ** (1 / 0.23)
    assert effective_data(loss, law).value == pytest.approx(d_eff, rel=1e-6)
    # A recipe that reaches, on 0.2B tokens, the loss the baseline needs 2.29× as much data for.
    better = 1.89 + 1.30 * (2.29 * 0.2) ** -0.23
    assert data_efficiency(better, 0.2, law).value == pytest.approx(2.29, rel=1e-6)
    # Against an observed baseline loss instead of the law's prediction at 0.2B.
    observed = 1.89 + 1.30 * 0.25 ** -0.23
    assert data_efficiency(better, 0.2, law, baseline_loss=observed).value == pytest.approx(2.29 * 0.2 / 0.25,
                                                                                              rel=1e-6)
    assert effective_data(1.80, law).value == np.inf  # below the baseline's asymptote: no amount of data


def test_data_efficiency_has_a_bootstrap_interval():
    law = _data_law(noise=0.003, bootstrap=60)
    better = 1.89 + 1.30 * (2.29 * 0.2) ** -0.23
    ratio = data_efficiency(better, 0.2, law)
    assert ratio.interval[0] < ratio.value < ratio.interval[1]
    assert ratio.interval[0] <= 2.29 <= ratio.interval[1]
    assert len(ratio.samples) == 60


def test_data_efficiency_needs_a_one_variable_law():
    x = {"N": np.geomspace(1e7, 1e9, 8), "D": np.geomspace(1e9, 1e11, 8)}
    law = Chinchilla().fit(x, 2 + 400 / x["N"] ** 0.34 + 400 / x["D"] ** 0.28, start=dict(
        E=2, A=400, alpha=0.34, B=400, beta=0.28))
    with pytest.raises(ScarceError, match="one-variable data law"):
        data_efficiency(2.5, 1e9, law)


def test_effective_data_multiplier_recovers_a_known_k_with_an_interval():
    true = dict(E=1.8, A=300.0, alpha=0.35, B=800.0, beta=0.3, gamma=0.6)
    rng = np.random.default_rng(5)
    params = np.repeat(np.geomspace(7e7, 1.4e9, 5), 4)
    tokens = np.tile(np.array([1e8, 2e8, 3e8, 4e8]), 5)
    baseline = SoftQ().predict({"N": params, "D": tokens}, true) * np.exp(rng.normal(0, 0.002, 20))
    helped = SoftQ().predict({"N": params, "D": 1.3 * tokens}, true) * np.exp(rng.normal(0, 0.002, 20))
    k, joint = effective_data_multiplier(SoftQ(), ({"N": params, "D": tokens}, baseline),
                                         ({"N": params, "D": tokens}, helped), bootstrap=100)
    assert k.value == pytest.approx(1.3, rel=0.05)
    assert k.interval[0] <= 1.3 <= k.interval[1]
    assert k.interval[0] > 1.0  # the intervention does help, and the interval says so
    assert joint.params_["k"] == k.value and joint.report_.converged


def test_effective_data_multiplier_needs_every_variable():
    with pytest.raises(ScarceError, match="intervention points lack variable 'D'"):
        effective_data_multiplier(Chinchilla(), ({"N": [1.0], "D": [1.0]}, [3.0]), ({"N": [1.0]}, [3.0]))


# ---- planning ---------------------------------------------------------------------------------------


def _fitted_chinchilla(**fit):
    rng = np.random.default_rng(6)
    x = {"N": np.exp(rng.uniform(np.log(1e7), np.log(1e10), 60)),
         "D": np.exp(rng.uniform(np.log(1e8), np.log(1e12), 60))}
    y = Chinchilla().predict(x, dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)) \
        * np.exp(rng.normal(0, 0.002, 60))
    return x, y, Chinchilla().fit(x, y, **fit)


def _brute_force_params(loss_at, lo=1e5, hi=1e14):
    """The model size minimizing loss_at(params array) along a budget: a fine log grid, then a finer one."""
    grid = np.geomspace(lo, hi, 20001)
    best = grid[np.argmin(loss_at(grid))]
    fine = np.geomspace(best / 1.01, best * 1.01, 4001)
    return fine[np.argmin(loss_at(fine))]


def test_compute_optimal_allocation_matches_the_closed_form_and_brute_force():
    _, _, law = _fitted_chinchilla(bootstrap=30)
    p = law.params_
    flops = 1e21
    result = plan(law, flops)
    a, b = p["alpha"], p["beta"]
    closed_params = (a * p["A"] / (b * p["B"])) ** (1 / (a + b)) * (flops / 6) ** (b / (a + b))
    assert result["params"].value == pytest.approx(closed_params, rel=1e-9)
    assert result["tokens"].value == pytest.approx(flops / (6 * closed_params), rel=1e-9)

    def loss_at(n):
        return law.predict({"N": n, "D": flops / (6 * n)})

    assert result["params"].value == pytest.approx(_brute_force_params(loss_at), rel=1e-3)
    assert result["loss"].value == pytest.approx(loss_at(closed_params)[0], rel=1e-12)
    lo, hi = result["params"].interval
    assert lo < result["params"].value < hi


def test_numerical_allocation_of_softq_with_gamma_one_equals_chinchillas_closed_form():
    x, y, chinchilla = _fitted_chinchilla()
    softq = SoftQ(fixed={"gamma": 1.0}).fit(x, y)
    for flops in (1e18, 1e22):
        # Two fits of one optimum differ in the last digits of their scales; the optimum N follows.
        assert plan(softq, flops)["params"].value == pytest.approx(plan(chinchilla, flops)["params"].value,
                                                                   rel=1e-3)


def test_best_params_and_epochs_under_a_unique_data_cap():
    true = dict(E=1.9, A=400.0, alpha=0.34, B=1200.0, beta=0.3, R_star_D=15.4)
    rng = np.random.default_rng(7)
    x = {"N": np.exp(rng.uniform(np.log(1e7), np.log(1e10), 80)),
         "U": np.exp(rng.uniform(np.log(1e8), np.log(1e11), 80)),
         "epochs": np.exp(rng.uniform(0, np.log(100), 80))}
    law = DataConstrained().fit(x, DataConstrained().predict(x, true) * np.exp(rng.normal(0, 0.001, 80)))
    unique, flops = 1e9, 1e20

    def loss_at(n):
        tokens = flops / (6 * n)
        seen = np.minimum(unique, tokens)
        return law.predict({"N": n, "U": seen, "epochs": tokens / seen})

    result = plan(law, flops, unique_tokens=unique)
    best = _brute_force_params(loss_at)
    assert result["params"].value == pytest.approx(best, rel=1e-3)
    assert result["epochs"].value == pytest.approx(flops / (6 * best) / unique, rel=1e-3)
    assert result["epochs"].value > 1  # this budget repeats the capped data
    # The cap costs loss: the unconstrained (N, D) optimum of the same law would be lower.
    assert result["loss"].value > plan(law, flops, unique_tokens=1e15)["loss"].value
    with pytest.raises(ScarceError, match="unique-token cap"):
        plan(law, flops)


def test_planning_rejects_bad_budgets_and_laws():
    _, _, law = _fitted_chinchilla()
    with pytest.raises(ScarceError, match="flops must be > 0"):
        plan(law, 0)
    with pytest.raises(ScarceError, match="cannot plan with law 'power'"):
        plan(_data_law(), 1e20)


# ---- infinite draws, laws without a fit's extras, degenerate plans ------------------------------------


def test_an_interval_keeps_infinite_draws():
    """A loss just below the fitted E: about half the draws need infinite data. The interval must reach
    infinity (and contain the point estimate), not be the percentiles of the finite half."""
    law = _data_law(noise=0.003, bootstrap=60)
    draws_e = law.bootstrap_params_[:, 0]
    loss = float(np.median(draws_e))  # half the draws' E lie above it
    result = effective_data(loss, law)
    assert np.isinf(result.samples).mean() >= 0.4
    assert result.interval[1] == np.inf
    assert result.interval[0] <= result.value <= result.interval[1]
    assert result.to_dict()["interval"][1] is None  # strict JSON: an unbounded end is null


def _published_data_law():
    law = PowerLaw("D")
    law.params_ = dict(DATA_LAW)  # Kim et al.'s parameters, no fit behind them
    return law


def test_a_law_with_published_parameters_works_everywhere_without_intervals():
    law = _published_data_law()
    assert asymptote(law).value == 1.89 and asymptote(law).interval is None
    d_eff = effective_data(2.5, law)
    assert d_eff.value == pytest.approx((1.30 / (2.5 - 1.89)) ** (1 / 0.23), rel=1e-12) and d_eff.interval is None
    assert data_efficiency(2.5, 0.2, law).interval is None
    chinchilla = Chinchilla()
    chinchilla.params_ = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
    result = plan(chinchilla, 1e21)
    assert result["params"].value > 0 and result["params"].interval is None
    assert estimate(chinchilla, lambda p: p["A"]).value == 406.4


def test_upper_levels_of_a_tiered_asymptote_carry_draws_for_their_derived_quantities():
    rows = [(n, d) for d in (0.1, 0.2, 0.4, 0.8, 1.6) for n in (0.15, 0.3, 0.6, 1.2, 2.4)]
    n, d = (np.array(c, dtype=float) for c in zip(*rows))
    noise = np.random.default_rng(2).normal(0, 0.003, len(n))
    y = 2.0 + 1.3 * d ** -0.3 + 0.05 * n ** -0.5 + noise
    tiers = tiered_asymptote({"N": n, "D": d}, y, levels=("N", "D"), bootstrap=40, seed=0)
    data_law = tiers.laws["D"][()]
    assert data_law.bootstrap_params_.shape == (40, 3)
    assert set(data_law.intervals_) == {"E", "A", "alpha"}
    ratio = data_efficiency(2.0 + 1.3 * 0.4 ** -0.3, 0.2, data_law)
    assert ratio.interval is not None and ratio.interval[0] <= ratio.value <= ratio.interval[1]


def test_effective_data_multiplier_of_specialization_tokens():
    true = dict(E=1.7, A=400.0, alpha=0.34, B=600.0, beta=0.3, kappa=0.05, eta=0.9)
    rng = np.random.default_rng(8)
    x = {"N": np.exp(rng.uniform(np.log(1e7), np.log(1e10), 60)),
         "D": np.exp(rng.uniform(np.log(1e8), np.log(1e12), 60)),
         "D_spec": np.exp(rng.uniform(np.log(1e6), np.log(1e10), 60))}
    x["D_spec"][:3] = 0.0  # the general model itself
    law = SpecializationTransfer()
    base = law.predict(x, true) * np.exp(rng.normal(0, 0.001, 60))
    helped = law.predict({**x, "D_spec": 2.0 * x["D_spec"]}, true) * np.exp(rng.normal(0, 0.001, 60))
    k, _ = effective_data_multiplier(SpecializationTransfer(), (x, base), (x, helped), data_variable="D_spec",
                                     bootstrap=0)
    assert k.value == pytest.approx(2.0, rel=0.1)


def test_planning_in_billions_of_params_finds_the_optimum():
    """Units are the user's choice (docs): with N and D in billions the optimum is near N = 1, far below
    any absolute search floor."""
    true = dict(E=1.8, A=300.0, alpha=0.35, B=800.0, beta=0.3, gamma=0.5)
    rng = np.random.default_rng(0)
    x = {"N": np.exp(rng.uniform(np.log(1e7), np.log(1e10), 40)),
         "D": np.exp(rng.uniform(np.log(1e8), np.log(1e12), 40))}
    y = SoftQ().predict(x, true) * np.exp(rng.normal(0, 0.002, 40))
    law = SoftQ().fit({"N": x["N"] / 1e9, "D": x["D"] / 1e9}, y)
    for flops in (1e2, 1e5):  # 6·N·D in billions × billions

        def loss_at(n):
            return law.predict({"N": n, "D": flops / (6 * n)})  # noqa: B023 (used within this iteration)

        best = _brute_force_params(loss_at, lo=1e-6, hi=1e6)
        result = plan(law, flops)
        assert result["params"].value == pytest.approx(best, rel=1e-3)
        assert result["loss"].value == pytest.approx(loss_at(np.array([best]))[0], rel=1e-9)


def test_a_degenerate_bootstrap_draw_is_skipped_and_counted():
    _, _, law = _fitted_chinchilla(bootstrap=20)
    law.bootstrap_params_[3, law.param_names.index("alpha")] = 0.0  # the params term is flat: no optimum
    result = plan(law, 1e21)
    assert result["params"].dropped == 1 and len(result["params"].samples) == 20
    assert result["params"].interval[0] < result["params"].value < result["params"].interval[1]


def test_a_unique_token_cap_is_refused_by_laws_without_repetition():
    _, _, law = _fitted_chinchilla()
    with pytest.raises(ScarceError, match="unique.*data_constrained"):
        plan(law, 1e21, unique_tokens=1e9)
