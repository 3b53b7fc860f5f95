"""Statistics over evaluation conditions: the bootstrap interval against an enumeration of every
resample, shares and the strongest baseline by hand, and a small evaluation of two "training
seeds" beside the baselines on the same vehicles."""
from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oe3jax.control import baselines as B
from oe3jax.evaluation import statistics as S
from oe3jax.evaluation.compare import (
    SHARE_KPIS, evaluate_conditions, statistics_markdown, statistics_report,
)
from oe3jax.evaluation.kpis import episode_kpis
from oe3jax.learning.policy import Policy
from oe3jax.simulation.env import make_env


# ----------------------------------------------------------------------------- the interval by hand
def _enumerated_means(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every stratified resample of ``x`` (runs x conditions) with its probability: the conditions
    drawn with replacement, then in each drawn column the runs with replacement."""
    runs, conds = x.shape
    values, probs = [], []
    for tasks in itertools.product(range(conds), repeat=conds):
        for picks in itertools.product(range(runs), repeat=runs * conds):
            sample = [x[picks[j * runs + i], tasks[j]] for j in range(conds) for i in range(runs)]
            values.append(sum(sample) / len(sample))
            probs.append(1.0 / (conds ** conds * runs ** (runs * conds)))
    order = np.argsort(values, kind="stable")
    return np.asarray(values)[order], np.asarray(probs)[order]


def _quantile(values: np.ndarray, probs: np.ndarray, q: float) -> float:
    """The q-quantile of a discrete distribution, checked to lie well inside a step of its CDF
    (so that a percentile of many resamples lands exactly on it)."""
    cdf = np.cumsum(probs)
    i = int(np.searchsorted(cdf, q))
    below = cdf[i - 1] if i > 0 else 0.0
    assert below < q - 0.005 and cdf[i] > q + 0.005
    return float(values[i])


def test_interval_matches_the_enumerated_bootstrap():
    # 2 runs x 2 conditions: 4 draws of the conditions x 16 of the runs, 64 equally likely resamples
    x = np.array([[0.0, 10.0], [1.0, 30.0]])
    values, probs = _enumerated_means(x)
    assert len(values) == 64 and np.isclose(probs.sum(), 1.0)
    # by hand: the lowest mean is 0 (both columns condition 0, every pick run 0): p = 1/4 * 1/16;
    # next is 0.25 (one pick of run 1): p = 1/4 * 4/16, so the 2.5 % quantile is 0.25
    assert values[0] == 0.0 and np.isclose(probs[0], 1 / 64) and values[1] == 0.25
    lo, hi = _quantile(values, probs, 0.025), _quantile(values, probs, 0.975)
    assert lo == 0.25
    out = S.interval(x, reps=40_000, seed=3)
    assert out["mean"] == pytest.approx(41.0 / 4)
    assert out["ci"] == pytest.approx([lo, hi])
    assert (out["n_runs"], out["n_conditions"]) == (2, 2)


def test_interval_of_one_run_spans_the_conditions():
    # a deterministic baseline: one row; resampling 2 conditions gives 10, 15, 20 with p 1/4, 1/2, 1/4
    out = S.interval([10.0, 20.0], reps=20_000, seed=1)
    assert out["mean"] == 15.0 and out["ci"] == [10.0, 20.0]
    assert (out["n_runs"], out["n_conditions"]) == (1, 2)
    assert S.interval([[7.0]], reps=100)["ci"] == [7.0, 7.0]


def test_iqm_by_hand():
    # 8 values: the 2 lowest and 2 highest are dropped, the mean of 3, 4, 5, 6 is 4.5
    assert S.iqm([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == 4.5
    # 5 values: floor(1.25) = 1 dropped at each end
    assert S.iqm([1.0, 2.0, 3.0, 4.0, 50.0]) == 3.0


def test_interval_rejects_bad_scores():
    with pytest.raises(ValueError, match="scores: expected a non-empty matrix"):
        S.interval(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="scores: expected finite values"):
        S.interval([1.0, np.nan])


# ----------------------------------------------------------------------------- shares by hand
def test_shares_by_hand():
    agent = np.array([[90.0, 45.0], [80.0, 50.0]])  # 2 runs x 2 conditions
    uncontrolled = np.array([100.0, 50.0])
    rule = np.array([70.0, 50.0])
    optimum = np.array([60.0, 50.0])  # condition 2: nothing to gain, the share is undefined there
    share = S.shares(agent, uncontrolled, optimum, reps=2000)
    # condition 1: (100 - 90) / (100 - 60) = 0.25 and (100 - 80) / 40 = 0.5
    assert share["defined"] and share["undefined_conditions"] == 1
    assert share["mean"] == pytest.approx(0.375)
    assert (share["n_runs"], share["n_conditions"]) == (2, 1)
    gap = S.shares(agent, rule, optimum, reps=2000)
    # (70 - 90) / (70 - 60) = -2 and (70 - 80) / 10 = -1: worse than the rule is negative
    assert gap["mean"] == pytest.approx(-1.5)
    none = S.shares(agent, optimum, optimum)
    assert none == {"defined": False, "undefined_conditions": 2,
                    "reason": "the optimum gains nothing over the reference in any condition"}
    json.dumps(none, allow_nan=False)
    # the tolerance is 1e-4 of the reference: a gain of 0.02 on 100 counts, one of 0.005 does not
    assert S.share_matrix([[99.99]], [100.0], [99.98])[1].tolist() == [True]
    assert S.share_matrix([[99.99]], [100.0], [99.995])[1].tolist() == [False]


def test_strongest_is_the_lowest_mean():
    assert S.strongest({"uncontrolled": 5.0, "rule": 3.0, "greedy": 4.0}) == "rule"
    assert S.strongest({"a": 1.0, "b": 1.0}) == "a"


# ----------------------------------------------------------------------------- a small evaluation
HOURS = 48
ARRIVAL_SEEDS = (1000, 1001)
POWERS = (1.0, 0.5)  # two "training seeds": full socket power (= uncontrolled) and half power


@pytest.fixture(scope="module")
def evaluated():
    env, params = make_env("iquitos-38")

    def apply(p, obs):  # battery idle, every socket at the fraction p of its rating
        return jnp.concatenate([jnp.zeros((1,)), jnp.full((env.n_sockets,), p)])

    policies = [Policy(algo="fixed", step=0, config={}, scenario="iquitos-38", seed=i,
                       params=jnp.asarray(p, jnp.float32), apply=apply, env=env, env_params=params)
                for i, p in enumerate(POWERS)]
    results = evaluate_conditions({"fixed": policies}, lambda year: make_env("iquitos-38"), ARRIVAL_SEEDS,
                                  hours=HOURS)
    return env, params, results, statistics_report(results, reps=2000)


def test_every_policy_sees_the_same_vehicles(evaluated):
    _, _, results, _ = evaluated
    arrived = results.values["fixed"]["vehicles_arrived"]
    assert arrived.shape == (2, 2)
    assert arrived[0, 0] != arrived[0, 1]  # the two arrival seeds draw different vehicles
    assert list(results.values) == ["fixed", "uncontrolled", "rule", "greedy", "ratchet", "optimum_grid",
                                    "optimum_cost", "optimum_monthly_peaks"]
    for name in list(results.values)[1:]:
        assert np.array_equal(results.values[name]["vehicles_arrived"][0], arrived[0])
        assert np.array_equal(results.values[name]["vehicles_arrived"][0], arrived[1])
    assert results.conditions == [{"year": None, "arrival_seed": s} for s in ARRIVAL_SEEDS]


def test_full_power_seed_is_the_uncontrolled_baseline(evaluated):
    env, params, results, report = evaluated
    for c, seed in enumerate(ARRIVAL_SEEDS):
        # an independent path: one episode through run_episode and kpis (the uncontrolled actions
        # as a schedule, whose program the optimum's replay has compiled already)
        alone = episode_kpis(env, params, B.uncontrolled_schedule(env.scenario, HOURS), jax.random.key(seed), HOURS)
        for kpi in ("co2_kg", "ev_delivered_kwh", "monthly_peaks_sum_kw", "vehicles_served"):
            assert results.values["fixed"][kpi][0, c] == pytest.approx(alone[kpi], rel=1e-9)
            assert results.values["uncontrolled"][kpi][0, c] == pytest.approx(alone[kpi], rel=1e-9)
    # half power leaves energy unmet, which the full-power seed never does
    assert np.all(results.values["fixed"]["ev_unmet_kwh"][1] > results.values["fixed"]["ev_unmet_kwh"][0])


def test_report_shares_recomputed_from_the_values(evaluated):
    _, _, results, report = evaluated
    values = report["values"]
    entry = report["kpis"]["co2_kg"]
    unc = np.array(values["uncontrolled"]["co2_kg"][0])
    opt = np.array(values["optimum_grid"]["co2_kg"][0])
    rule = np.array(values["rule"]["co2_kg"][0])
    means = {n: np.mean(values[n]["co2_kg"]) for n in ("uncontrolled", "rule", "greedy")}  # no foresight
    best = min(means, key=means.get)
    assert entry["optimum"] == "optimum_grid" and entry["strongest_baseline"] == best
    strongest = np.array(values[best]["co2_kg"][0])
    agent = np.array(values["fixed"]["co2_kg"])
    fixed = entry["policies"]["fixed"]
    assert fixed["share_of_gain"]["mean"] == pytest.approx(np.mean((unc - agent) / (unc - opt)))
    assert fixed["gap_closed_rule"]["mean"] == pytest.approx(np.mean((rule - agent) / (rule - opt)))
    assert fixed["difference"]["mean"] == pytest.approx(np.mean(agent - strongest))
    # the greedy rule reaches the grid optimum on these two days: nothing left to close from it
    assert best == "greedy" and np.allclose(strongest, opt, rtol=1e-6)
    assert fixed["gap_closed_strongest"]["defined"] is False
    # cost: the gap from the strongest baseline to the cost optimum, by hand
    cost = report["kpis"]["cost"]
    by_cost = {n: np.mean(values[n]["cost"]) for n in ("uncontrolled", "rule", "greedy")}
    b = min(by_cost, key=by_cost.get)
    assert cost["strongest_baseline"] == b and cost["optimum"] == "optimum_cost"
    b_cost, o_cost = np.array(values[b]["cost"][0]), np.array(values["optimum_cost"]["cost"][0])
    a_cost = np.array(values["fixed"]["cost"])
    assert cost["policies"]["fixed"]["gap_closed_strongest"]["mean"] == pytest.approx(
        np.mean((b_cost - a_cost) / (b_cost - o_cost)))
    # the full-power seed reaches none of the optimum's gain
    assert np.allclose((unc - agent[0]) / (unc - opt), 0.0)
    assert entry["policies"]["optimum_grid"]["share_of_gain"]["mean"] == pytest.approx(1.0)
    assert entry["policies"]["rule"]["gap_closed_rule"]["mean"] == pytest.approx(0.0)
    # each KPI's optimum is the optimum of that objective; no baseline minimises the annual peak
    assert report["kpis"]["cost"]["optimum"] == "optimum_cost"
    peaks = report["kpis"]["monthly_peaks_sum_kw"]
    assert peaks["optimum"] == "optimum_monthly_peaks"
    assert peaks["policies"]["optimum_monthly_peaks"]["share_of_gain"]["mean"] == pytest.approx(1.0)
    assert all(np.mean(values[n]["monthly_peaks_sum_kw"]) >= np.mean(values["optimum_monthly_peaks"]["monthly_peaks_sum_kw"]) - 1e-6
               for n in values)
    assert report["kpis"]["peak_import_kw"]["optimum"] is None
    assert report["kpis"]["peak_import_kw"]["policies"]["fixed"]["share_of_gain"]["defined"] is False
    assert set(report["kpis"]) >= set(SHARE_KPIS)
    json.dumps(report, allow_nan=False)


def test_markdown_names_the_strongest_baseline(evaluated):
    *_, report = evaluated
    text = statistics_markdown(report)
    best = report["kpis"]["co2_kg"]["strongest_baseline"]
    assert f"Strongest baseline: **{best}**; optimum: **optimum_grid**." in text
    assert "| fixed | " in text and "| 2 x 2 |" in text and "| 1 x 2 |" in text
    assert "inf" not in text and "nan" not in text


def test_best_steps_picks_each_seeds_highest_return_and_the_later_step_on_a_tie():
    from oe3jax.evaluation.selection import best_steps

    steps = [500, 1000, 1500, 2000]
    returns = np.array([[-5.0, -1.0, -3.0],    # seed 0 best at 1000; seed 1 at 500 and 1500 tie -> 1500
                        [-2.0, -4.0, -3.0],    # seed 2 constant -> the last step
                        [-2.5, -1.0, -3.0],
                        [-9.0, -7.0, -3.0]])
    assert best_steps(steps, returns) == [1000, 1500, 2000]
    with pytest.raises(ValueError, match=r"returns: expected shape \(steps=4, seeds\)"):
        best_steps(steps, returns[:3])
    with pytest.raises(ValueError, match="steps: expected ascending"):
        best_steps([500, 500, 1500, 2000], returns)
    with pytest.raises(ValueError, match="not finite"):
        best_steps(steps, np.where(returns == -7.0, np.nan, returns))
