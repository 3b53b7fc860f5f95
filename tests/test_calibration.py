"""Preset calibration: four simulated weeks of the uncontrolled policy against the site's figures
(270 motos + 39 mototaxis a day, about 900-1,000 kWh a day) and against the expectation computed
in closed form from the arrival model (need uniform in a battery fraction, stay distribution cut
at closing, full power)."""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from oe3jax.control import baselines as B
from oe3jax.simulation.env import make_env
from oe3jax.evaluation.kpis import kpis

DAYS = 28
HOURS = DAYS * 24  # the same length as tests/test_baselines.py: one compiled rollout
SITE_VEHICLES_PER_DAY = 270 + 39
SITE_KWH_PER_DAY = 950.0  # centre of the site's 900-1,000 kWh a day
TOL = 0.10

def expected_per_day(scn) -> dict[str, float]:
    """Closed-form daily demand and full-power delivery of the arrival model (no rejections).

    A vehicle of battery ``b`` wants ``X ~ U[b * need_frac_min, b * need_frac_max]`` and arrives at
    hour ``h`` with probability ``f(h) / sum f``; it stays ``s`` hours with probability
    ``stay_probs[s - 1]``, cut at closing; at full power it gets ``min(X, rating * s)``, whose mean
    for ``c = rating * s`` is ``((c^2 - lo^2) / 2 + c (hi - c)) / (hi - lo)`` when ``lo < c < hi``.
    """
    f = np.asarray(scn.operating_factor, np.float64)
    w = f / f.sum()
    demand = delivered = 0.0
    for daily, rating, battery in ((scn.daily_moto, scn.moto_kw, scn.moto_battery_kwh),
                                   (scn.daily_taxi, scn.taxi_kw, scn.taxi_battery_kwh)):
        lo, hi = battery * scn.need_frac_min, battery * scn.need_frac_max

        def mean_min(c: float) -> float:
            if c >= hi:
                return (lo + hi) / 2
            if c <= lo:
                return c
            return ((c * c - lo * lo) / 2 + c * (hi - c)) / (hi - lo)

        per_vehicle = sum(
            w[h] * p * mean_min(rating * min(s, scn.close_hour - h))
            for h in range(24) if w[h] > 0
            for s, p in enumerate(scn.stay_probs, start=1)
        )
        demand += daily * (lo + hi) / 2
        delivered += daily * per_vehicle
    return {"demand_kwh": demand, "delivered_kwh": delivered}


@functools.lru_cache(maxsize=None)
def _weeks(name: str):
    env, params = make_env(name)
    sessions, trace = B.record_sessions(env, params, jax.random.key(11), HOURS)
    return env.scenario, sessions, kpis(trace, env.scenario)


def test_expectation_hand_worked():
    """The closed form on a case done by hand: one hour of arrivals at 09:00, stays of 1 h."""
    from oe3jax.simulation.scenario import get_scenario

    factor = [0.0] * 24
    factor[9] = 1.0
    scn = get_scenario("iquitos-128", operating_factor=factor, stay_probs=(1.0,), daily_taxi=0.0,
                       moto_kw=2.0, moto_battery_kwh=4.0, need_frac_min=0.25, need_frac_max=0.75)
    # X ~ U[1, 3], c = 2: E[min(X, 2)] = ((4 - 1) / 2 + 2 * 1) / 2 = 1.75
    out = expected_per_day(scn)
    assert out["demand_kwh"] == pytest.approx(270 * 2.0)
    assert out["delivered_kwh"] == pytest.approx(270 * 1.75)


@pytest.mark.parametrize("name", ["iquitos-128", "iquitos-38"])
def test_arrivals_per_day(name):
    scn, _, k = _weeks(name)
    assert k["vehicles_arrived"] / DAYS == pytest.approx(SITE_VEHICLES_PER_DAY, rel=TOL)
    assert k["vehicles_arrived"] / DAYS == pytest.approx(scn.daily_moto + scn.daily_taxi, rel=0.05)


@pytest.mark.parametrize("name", ["iquitos-128", "iquitos-38"])
def test_vehicles_charged_per_day(name):
    scn, sessions, k = _weeks(name)
    motos = np.sum(sessions.socket < scn.n_moto) / DAYS
    taxis = np.sum(sessions.socket >= scn.n_moto) / DAYS
    assert motos == pytest.approx(270, rel=TOL)
    assert taxis == pytest.approx(39, rel=TOL)
    assert k["vehicles_admitted"] / DAYS == pytest.approx(SITE_VEHICLES_PER_DAY, rel=TOL)


@pytest.mark.parametrize("name", ["iquitos-128", "iquitos-38"])
def test_daily_ev_energy(name):
    scn, _, k = _weeks(name)
    want = expected_per_day(scn)
    assert want["demand_kwh"] == pytest.approx(SITE_KWH_PER_DAY, rel=TOL)
    assert k["ev_demand_kwh"] / DAYS == pytest.approx(want["demand_kwh"], rel=TOL)
    assert k["ev_delivered_kwh"] / DAYS == pytest.approx(want["delivered_kwh"], rel=TOL)
    assert k["ev_delivered_kwh"] / DAYS == pytest.approx(SITE_KWH_PER_DAY, rel=TOL)
