"""The hourly physics of ``docs/physics.md`` in plain NumPy (float64), for one environment.

This module is an independent second implementation of the park's physics: the tests drive it and
the JAX environment with the same actions and the same arrival draws and require every flow to
agree. It is also the simplest way to use the scenario outside JAX:
:class:`oe3jax.simulation.adapters.GymnasiumEnv` wraps it as a ``gymnasium.Env`` for
Stable-Baselines3, CleanRL and the like.

Reading order: the arrival draw, then :class:`ReferenceEnv` (constants, reset, the seven parts of
one step, the reward, the observation).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from oe3jax.simulation.checks import check_action
from oe3jax.simulation.scenario import HOURS_PER_YEAR, REWARD_TERMS, Scenario, get_scenario, scenario_profiles

DAYS_PER_YEAR = HOURS_PER_YEAR // 24
EVENING_PEAK_HOURS = range(18, 22)  # 18:00-21:59, the hours of the evening peak KPI

FLOW_NAMES = (
    "pv_kwh", "mall_kwh", "ev_kwh", "pv_to_load", "pv_to_bess", "grid_to_bess", "pv_used",
    "pv_curtailed", "grid_import", "bess_charge", "bess_discharge", "unmet_kwh",
)
VEHICLE_NAMES = ("arrived", "admitted", "rejected", "departed", "served")
EPISODE_NAMES = (
    "return", "grid_kwh", "co2_kg", "cost", "pv_kwh", "pv_used_kwh", "pv_curtailed_kwh", "mall_kwh",
    "ev_kwh", "unmet_kwh", "vehicles_arrived", "vehicles_admitted", "vehicles_rejected",
    "vehicles_departed", "vehicles_served", "peak_import_kw", "peak_import_evening_kw",
    "bess_charge_kwh", "bess_discharge_kwh", "grid_to_bess_kwh",
)


# --------------------------------------------------------------------------- arrival draws
def arrival_means(scn: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """Poisson means of arriving motos and mototaxis for each hour of day (24 values each)."""
    f = np.asarray(scn.operating_factor, dtype=np.float64)
    total = f.sum()
    shape = f / total if total > 0 else np.zeros(24)
    return scn.daily_moto * shape, scn.daily_taxi * shape


def _as_draw(arrivals: Any, n_sockets: int) -> dict[str, Any]:
    """An arrival draw from a dict or from any object with the four fields as attributes."""
    get = arrivals.get if isinstance(arrivals, Mapping) else lambda k: getattr(arrivals, k, None)
    fields = {k: get(k) for k in ("count_moto", "count_taxi", "u_need", "u_stay")}
    missing = [k for k, v in fields.items() if v is None]
    if missing:
        raise ValueError(f"arrivals: missing {', '.join(missing)}; expected count_moto, count_taxi, u_need, u_stay")
    draw: dict[str, Any] = {}
    for k in ("count_moto", "count_taxi"):
        c = np.asarray(fields[k])
        if c.shape != () or not np.isfinite(c) or c < 0 or float(c) != int(c):
            raise ValueError(f"arrivals.{k}: expected a non-negative integer, got {fields[k]!r}")
        draw[k] = int(c)
    for k in ("u_need", "u_stay"):
        u = np.asarray(fields[k], dtype=np.float64)
        if u.shape != (n_sockets,) or not np.all((u >= 0) & (u < 1)):
            raise ValueError(f"arrivals.{k}: expected {n_sockets} uniforms in [0, 1), got shape {u.shape}")
        draw[k] = u
    return draw


# --------------------------------------------------------------------------- the simulator
class ReferenceEnv:
    """One environment of the park, stepped in plain NumPy (float64).

    The state is readable as attributes: ``energy_kwh`` (battery), per socket ``occupied``,
    ``need_kwh`` and ``hours_left``, the hour index ``t`` and the step ``k`` of the episode, and
    ``episode`` (running KPI totals).
    """

    def __init__(
        self,
        scenario: Scenario | str = "iquitos-128",
        episode_hours: int = HOURS_PER_YEAR,
        start_hour: int = 0,
        random_start: bool = False,
        seed: int | None = None,
    ) -> None:
        scn = get_scenario(scenario)
        if isinstance(episode_hours, bool) or not isinstance(episode_hours, (int, np.integer)) or episode_hours < 1:
            raise ValueError(f"episode_hours = {episode_hours!r}; expected an integer >= 1")
        self.scenario = scn
        self.episode_hours = int(episode_hours)
        self.start_hour = self._check_start(start_hour)
        self.random_start = bool(random_start)
        self.rng = np.random.default_rng(seed)
        self.pv_kw, self.mall_kw = scenario_profiles(scn)

        # --- sockets: motos first, then mototaxis
        n_moto, n_taxi = scn.n_moto, scn.n_taxi
        self.n_moto, self.n_taxi, self.n_sockets = n_moto, n_taxi, scn.n_sockets
        self.is_taxi = np.arange(self.n_sockets) >= n_moto
        self.rating_kw = np.where(self.is_taxi, scn.taxi_kw, scn.moto_kw).astype(np.float64)
        self.battery_kwh = np.where(self.is_taxi, scn.taxi_battery_kwh, scn.moto_battery_kwh).astype(np.float64)

        # --- battery
        self.e_min_kwh = scn.soc_min * scn.capacity_kwh
        self.e_max_kwh = scn.soc_max * scn.capacity_kwh
        self.eta_c = math.sqrt(scn.round_trip_eff)
        self.eta_d = math.sqrt(scn.round_trip_eff)

        # --- arrivals, tariff, reward and observation scales
        self.mean_moto, self.mean_taxi = arrival_means(scn)
        self.stay_cum = np.cumsum(np.asarray(scn.stay_probs, dtype=np.float64))
        self.tariff = np.asarray(scn.tariff_per_kwh, dtype=np.float64)
        self.grid_ref_kw = float(self.mall_kw.max()) + scn.ev_installed_kw + scn.power_kw
        self.weights = dict(scn.reward_weights)
        if scn.peak_threshold_kw >= self.grid_ref_kw:
            raise ValueError(f"peak_threshold_kw = {scn.peak_threshold_kw}; expected below the largest "
                             f"possible import {self.grid_ref_kw:.0f} kW (max mall + EV installed + battery power)")
        # observation scales: the largest mall load, and the largest total need the park can hold
        self.mall_ref_kw = float(self.mall_kw.max()) if self.mall_kw.max() > 0 else 1.0
        self.ev_need_ref_kwh = float(self.battery_kwh.sum()) * scn.need_frac_max or 1.0

        self.reset(self.start_hour)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_start(start_hour: Any) -> int:
        if isinstance(start_hour, bool) or not isinstance(start_hour, (int, np.integer)) or not (
            0 <= start_hour < HOURS_PER_YEAR
        ):
            raise ValueError(f"start_hour = {start_hour!r}; expected an integer in [0, {HOURS_PER_YEAR})")
        return int(start_hour)

    @property
    def n_actions(self) -> int:
        return 1 + self.n_sockets

    @property
    def n_global(self) -> int:
        return 6 + 2 * len(self.scenario.forecast_offsets) + 5

    @property
    def n_obs(self) -> int:
        return self.n_global + 4 * self.n_sockets

    def sample_arrivals(self, t: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """A random arrival draw for hour ``t``: Poisson counts and one uniform pair per socket slot."""
        rng = self.rng if rng is None else rng
        h = t % 24
        return {
            "count_moto": int(rng.poisson(self.mean_moto[h])),
            "count_taxi": int(rng.poisson(self.mean_taxi[h])),
            "u_need": rng.random(self.n_sockets),
            "u_stay": rng.random(self.n_sockets),
        }

    # ------------------------------------------------------------------ reset
    def reset(
        self,
        start_hour: int | None = None,
        arrivals: Any = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Battery at ``soc_init``, sockets free, then the start hour's arrivals; the first observation."""
        rng = self.rng if rng is None else rng
        if start_hour is None:
            start_hour = int(rng.integers(DAYS_PER_YEAR)) * 24 if self.random_start else self.start_hour
        self.t = self._check_start(start_hour)
        self.k = 0
        self.energy_kwh = self.scenario.soc_init * self.scenario.capacity_kwh
        self.occupied = np.zeros(self.n_sockets, dtype=bool)
        self.need_kwh = np.zeros(self.n_sockets, dtype=np.float64)
        self.hours_left = np.zeros(self.n_sockets, dtype=np.int64)
        self.episode = {name: 0.0 for name in EPISODE_NAMES}
        draw = self.sample_arrivals(self.t, rng) if arrivals is None else _as_draw(arrivals, self.n_sockets)
        arrived, admitted, rejected = self._admit(self.t, draw)
        self.episode["vehicles_arrived"] += arrived
        self.episode["vehicles_admitted"] += admitted
        self.episode["vehicles_rejected"] += rejected
        return self.observation()

    # ------------------------------------------------------------------ step 7: admission
    def _admit(self, t: int, draw: Mapping[str, Any]) -> tuple[int, int, int]:
        """Admit the draw's vehicles at the start of hour ``t``; returns (arrived, admitted, rejected)."""
        scn = self.scenario
        h = t % 24
        arrived = admitted = 0
        for count, offset, is_taxi, battery_kwh in (
            (draw["count_moto"], 0, False, scn.moto_battery_kwh),
            (draw["count_taxi"], self.n_moto, True, scn.taxi_battery_kwh),
        ):
            if count > 0 and scn.operating_factor[h] <= 0:
                raise ValueError(f"arrivals: {count} vehicles at {h}:00, when the park is closed")
            free = np.flatnonzero((self.is_taxi == is_taxi) & ~self.occupied)  # increasing index
            n_in = min(count, free.size)
            for j in range(n_in):
                i = free[j]
                u_need = draw["u_need"][offset + j]
                u_stay = draw["u_stay"][offset + j]
                above = np.flatnonzero(self.stay_cum > u_stay)
                stay = int(above[0]) + 1 if above.size else len(self.stay_cum)
                stay = min(stay, scn.close_hour - h)
                self.occupied[i] = True
                self.need_kwh[i] = battery_kwh * (
                    scn.need_frac_min + (scn.need_frac_max - scn.need_frac_min) * u_need
                )
                self.hours_left[i] = stay
            arrived += count
            admitted += n_in
        return arrived, admitted, arrived - admitted

    # ------------------------------------------------------------------ one hour
    def step(
        self, action: Any, arrivals: Any = None
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one hour with ``action``; ``arrivals`` is the draw of the next hour (sampled if None)."""
        scn = self.scenario
        t, h = self.t, self.t % 24

        # 1. action: NaN -> 0, clipped to [-1, 1]
        try:
            a = np.asarray(action)
        except (TypeError, ValueError):
            raise TypeError(f"action: expected an array of real numbers of shape ({self.n_actions},) "
                            f"for scenario {scn.name!r}, got {type(action).__name__}") from None
        check_action(a.shape, a.dtype, self.n_sockets, scn.name)
        a = np.clip(np.nan_to_num(a.astype(np.float64), nan=0.0), -1.0, 1.0)

        # 2. EV charging: at most the rating, at most what the vehicle still wants
        ev_i = np.where(self.occupied, np.minimum(np.maximum(a[1:], 0.0) * self.rating_kw, self.need_kwh), 0.0)
        self.need_kwh = self.need_kwh - ev_i
        ev_kwh = float(ev_i.sum())

        # 3. loads and PV
        pv = float(self.pv_kw[t])
        mall = float(self.mall_kw[t])
        load = mall + ev_kwh
        pv_to_load = min(pv, load)
        surplus = pv - pv_to_load
        net_load = load - pv_to_load

        # 4. battery
        e = self.energy_kwh
        request_kw = a[0] * scn.power_kw
        charge = discharge = 0.0
        if request_kw > 0:
            charge = min(request_kw, (self.e_max_kwh - e) / self.eta_c)
        elif request_kw < 0:
            discharge = min(-request_kw, (e - self.e_min_kwh) * self.eta_d, net_load)
        e = e + self.eta_c * charge - discharge / self.eta_d
        self.energy_kwh = min(max(e, self.e_min_kwh), self.e_max_kwh)
        pv_to_bess = min(surplus, charge)
        grid_to_bess = charge - pv_to_bess

        # 5. grid and PV
        grid_import = net_load - discharge + grid_to_bess
        pv_used = pv_to_load + pv_to_bess
        pv_curtailed = pv - pv_used

        # 6. departures
        self.hours_left = np.where(self.occupied, self.hours_left - 1, self.hours_left)
        leaving = self.occupied & (self.hours_left <= 0)
        unmet_kwh = float(self.need_kwh[leaving].sum())
        departed = int(leaving.sum())
        served = int((leaving & (self.need_kwh <= scn.served_tol_kwh)).sum())
        self.occupied = self.occupied & ~leaving
        self.need_kwh = np.where(leaving, 0.0, self.need_kwh)
        self.hours_left = np.where(leaving, 0, self.hours_left)

        # 7. arrivals of the next hour
        t_next = (t + 1) % HOURS_PER_YEAR
        draw = self.sample_arrivals(t_next) if arrivals is None else _as_draw(arrivals, self.n_sockets)
        arrived, admitted, rejected = self._admit(t_next, draw)

        # 8. reward
        terms = {
            "co2": -grid_import / self.grid_ref_kw,
            "cost": -grid_import * self.tariff[h] / (self.grid_ref_kw * self.tariff.max()),
            "solar": (pv_used - pv_curtailed) / scn.pv_ac_kw,
            "ev": float(np.clip((ev_kwh - unmet_kwh) / scn.ev_installed_kw, -1.0, 1.0)),
            "peak": -max(grid_import - scn.peak_threshold_kw, 0.0) / (self.grid_ref_kw - scn.peak_threshold_kw),
        }
        terms = {name: float(value) for name, value in terms.items()}
        reward = float(sum(self.weights[name] * terms[name] for name in REWARD_TERMS))

        flows = {name: float(value) for name, value in zip(FLOW_NAMES, (
            pv, mall, ev_kwh, pv_to_load, pv_to_bess, grid_to_bess, pv_used, pv_curtailed,
            grid_import, charge, discharge, unmet_kwh))}
        vehicles = {"arrived": arrived, "admitted": admitted, "rejected": rejected,
                    "departed": departed, "served": served}

        # running totals
        ep = self.episode
        ep["grid_kwh"] += grid_import
        ep["co2_kg"] += grid_import * scn.co2_kg_per_kwh
        ep["cost"] += grid_import * self.tariff[h]
        ep["pv_kwh"] += pv
        ep["pv_used_kwh"] += pv_used
        ep["pv_curtailed_kwh"] += pv_curtailed
        ep["mall_kwh"] += mall
        ep["ev_kwh"] += ev_kwh
        ep["unmet_kwh"] += unmet_kwh
        for name in VEHICLE_NAMES:
            ep["vehicles_" + name] += vehicles[name]
        ep["peak_import_kw"] = max(ep["peak_import_kw"], grid_import)
        if h in EVENING_PEAK_HOURS:
            ep["peak_import_evening_kw"] = max(ep["peak_import_evening_kw"], grid_import)
        ep["bess_charge_kwh"] += charge
        ep["bess_discharge_kwh"] += discharge
        ep["grid_to_bess_kwh"] += grid_to_bess
        ep["return"] += reward

        self.t = t_next
        self.k += 1
        truncated = self.k >= self.episode_hours
        info = {"flows": flows, "vehicles": vehicles, "terms": terms, "reward": reward,
                "arrivals": draw, "totals": dict(ep)}
        return self.observation(), reward, False, truncated, info

    # ------------------------------------------------------------------ observation
    def observation(self) -> np.ndarray:
        """Calendar, PV and mall now and ahead, SOC, park summary, tariff; then 4 features per socket."""
        scn = self.scenario
        t = self.t
        h, day = t % 24, t // 24
        weekday = (scn.first_weekday + day) % 7
        calendar = [
            math.sin(2 * math.pi * h / 24), math.cos(2 * math.pi * h / 24),
            math.sin(2 * math.pi * weekday / 7), math.cos(2 * math.pi * weekday / 7),
            math.sin(2 * math.pi * day / DAYS_PER_YEAR), math.cos(2 * math.pi * day / DAYS_PER_YEAR),
        ]
        ahead = [(t + k) % HOURS_PER_YEAR for k in scn.forecast_offsets]
        forecast = [self.pv_kw[i] / scn.pv_ac_kw for i in ahead] + [self.mall_kw[i] / self.mall_ref_kw for i in ahead]
        park = [
            self.energy_kwh / scn.capacity_kwh,
            self.occupied[~self.is_taxi].sum() / max(self.n_moto, 1),
            self.occupied[self.is_taxi].sum() / max(self.n_taxi, 1),
            self.need_kwh.sum() / self.ev_need_ref_kwh,
            self.tariff[h] / self.tariff.max(),
        ]
        sockets = np.stack([
            self.occupied.astype(np.float64),
            self.need_kwh / self.battery_kwh,
            self.hours_left / scn.max_stay_hours,
            self.is_taxi.astype(np.float64),
        ], axis=1)
        return np.concatenate([np.asarray(calendar + forecast + park, dtype=np.float64), sockets.reshape(-1)])
