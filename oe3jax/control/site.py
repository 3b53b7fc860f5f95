"""The constants a controller plans with, read from the environment's params.

A :class:`Site` holds what the step function uses (battery, sockets, tariff, reward scales and
weights) as plain floats and NumPy arrays, so the solvers need no JAX. :meth:`Site.from_env`
reads them from ``EnvParams`` (the values the environment itself steps with); tests may build a
Site by hand.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from oe3jax.simulation.scenario import REWARD_TERMS, Scenario


def socket_ratings_kw(scenario: Scenario) -> np.ndarray:
    """Power rating of every socket (kW): moto sockets first, then mototaxi sockets."""
    return np.concatenate(
        [np.full(scenario.n_moto, scenario.moto_kw), np.full(scenario.n_taxi, scenario.taxi_kw)]
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Site:
    """Battery, sockets, prices and reward constants (kW, kWh; one step = one hour)."""

    ratings_kw: np.ndarray  # (n_sockets,)
    power_kw: float
    e_min_kwh: float
    e_max_kwh: float
    e_init_kwh: float
    eta_charge: float
    eta_discharge: float
    tariff: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(24))  # price per kWh by hour of day
    co2_kg_per_kwh: float = 0.0
    weights: Mapping[str, float] = dataclasses.field(default_factory=dict)  # reward weight by term name
    grid_ref_kw: float = 1.0
    pv_ac_kw: float = 1.0
    ev_installed_kw: float = 1.0
    peak_threshold_kw: float = 0.0

    @property
    def n_sockets(self) -> int:
        return int(self.ratings_kw.shape[0])

    @classmethod
    def from_env(cls, env: Any, params: Any) -> "Site":
        """The constants the environment steps with (``params``), as float64."""
        f = lambda a: float(np.asarray(a, np.float64))  # noqa: E731
        weights = np.asarray(params.weights, np.float64)
        return cls(
            ratings_kw=np.asarray(params.socket_kw, np.float64),
            power_kw=f(params.power_kw),
            e_min_kwh=f(params.e_min_kwh),
            e_max_kwh=f(params.e_max_kwh),
            e_init_kwh=f(params.e_init_kwh),
            eta_charge=f(params.eta_charge),
            eta_discharge=f(params.eta_discharge),
            tariff=np.asarray(params.tariff, np.float64),
            co2_kg_per_kwh=f(params.co2_kg_per_kwh),
            weights=dict(zip(REWARD_TERMS, (float(w) for w in weights))),
            grid_ref_kw=f(params.grid_ref_kw),
            pv_ac_kw=f(params.pv_ac_kw),
            ev_installed_kw=f(params.ev_installed_kw),
            peak_threshold_kw=f(params.peak_threshold_kw),
        )

    @classmethod
    def from_scenario(cls, scenario: Scenario, mall_peak_kw: float = 0.0) -> "Site":
        """The constants of a scenario without building an environment (``grid_ref_kw`` needs the
        mall's annual peak, ``mall_peak_kw``; it only scales the reward)."""
        return cls(
            ratings_kw=socket_ratings_kw(scenario),
            power_kw=scenario.power_kw,
            e_min_kwh=scenario.soc_min * scenario.capacity_kwh,
            e_max_kwh=scenario.soc_max * scenario.capacity_kwh,
            e_init_kwh=scenario.soc_init * scenario.capacity_kwh,
            eta_charge=scenario.eta_charge,
            eta_discharge=scenario.eta_discharge,
            tariff=np.asarray(scenario.tariff_per_kwh, np.float64),
            co2_kg_per_kwh=scenario.co2_kg_per_kwh,
            weights=dict(scenario.reward_weights),
            grid_ref_kw=mall_peak_kw + scenario.ev_installed_kw + scenario.power_kw,
            pv_ac_kw=scenario.pv_ac_kw,
            ev_installed_kw=scenario.ev_installed_kw,
            peak_threshold_kw=scenario.peak_threshold_kw,
        )
