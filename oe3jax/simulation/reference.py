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

from scipy import special

from oe3jax.simulation.calendar import MONTH_START_HOURS
from oe3jax.simulation.checks import check_action
from oe3jax.simulation.scenario import (HOURS_PER_YEAR, REWARD_TERMS, Scenario, get_scenario, mall_peak_kw,
                                        scenario_profiles)

DAYS_PER_YEAR = HOURS_PER_YEAR // 24
EVENING_PEAK_HOURS = range(18, 22)  # 18:00-21:59, the hours of the evening peak KPI

FLOW_NAMES = (
    "pv_kwh", "mall_kwh", "ev_kwh", "pv_to_load", "pv_to_bess", "grid_to_bess", "pv_used",
    "pv_curtailed", "grid_import", "bess_charge", "bess_discharge", "unmet_kwh",
    "limit_ev_cut", "limit_bess_cut", "grid_limit_violation",
)
VEHICLE_NAMES = ("arrived", "admitted", "rejected", "departed", "served")
EPISODE_NAMES = (
    "return", "grid_kwh", "co2_kg", "cost", "pv_kwh", "pv_used_kwh", "pv_curtailed_kwh", "mall_kwh",
    "ev_kwh", "unmet_kwh", "vehicles_arrived", "vehicles_admitted", "vehicles_rejected",
    "vehicles_departed", "vehicles_served", "peak_import_kw", "peak_import_evening_kw",
    "bess_charge_kwh", "bess_discharge_kwh", "grid_to_bess_kwh",
    "monthly_peaks_sum_kw", "grid_limit_violation_kwh", "limit_ev_cut_kwh", "limit_bess_cut_kwh",
)
MONTH_FIRST_HOURS = frozenset(MONTH_START_HOURS[:12])


# --------------------------------------------------------------------------- arrival draws
def arrival_means(scn: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """Poisson means of arriving motos and mototaxis for each hour of day (24 values each)."""
    f = np.asarray(scn.operating_factor, dtype=np.float64)
    total = f.sum()
    shape = f / total if total > 0 else np.zeros(24)
    return scn.daily_moto * shape, scn.daily_taxi * shape


def _as_draw(arrivals: Any, n_sockets: int, n_forecasts: int) -> dict[str, Any]:
    """An arrival draw from a dict or from any object with the fields as attributes.

    ``forecast_z`` (standard normals ``[2, n_forecasts]`` of the next observation's forecast
    errors) is optional: without it the reference draws its own where the errors are not zero.
    """
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
    z = get("forecast_z")
    if z is not None:
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (2, n_forecasts) or not np.all(np.isfinite(z)):
            raise ValueError(f"arrivals.forecast_z: expected [2, {n_forecasts}] finite standard normals "
                             f"(PV row, mall row), got shape {z.shape}")
    draw["forecast_z"] = z
    return draw


# --------------------------------------------------------------------------- the simulator
class ReferenceEnv:
    """One environment of the park, stepped in plain NumPy (float64).

    The state is readable as attributes: ``energy_kwh`` (battery), per socket ``occupied``,
    ``need_kwh`` and ``hours_left``, the hour index ``t`` and the step ``k`` of the episode, the
    weather ``year`` (index into ``scenario.weather_years``), ``month_peak_kw`` (highest import of
    the month so far), ``forecast_z`` (the current observation's forecast errors) and ``episode``
    (running KPI totals).
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
        self.pv_kw, self.mall_kw = scenario_profiles(scn)  # [years, 8760]
        self.n_years = self.pv_kw.shape[0]
        self.n_forecasts = len(scn.forecast_offsets)
        # forecast errors: log-normal sigma per offset, noise_frac * sqrt(lead / 24 h), lead = k + 1 h
        lead_days = (np.asarray(scn.forecast_offsets, np.float64) + 1.0) / 24.0
        self.pv_sigma = scn.pv_forecast_noise_frac * np.sqrt(lead_days)
        self.mall_sigma = scn.mall_forecast_noise_frac * np.sqrt(lead_days)

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
        # the largest mall load of every packaged year (the same scales whatever years are drawn)
        mall_peak = mall_peak_kw(scn)
        self.grid_ref_kw = mall_peak + scn.ev_installed_kw + scn.power_kw
        self.grid_limit_kw = math.inf if scn.grid_limit_kw is None else scn.grid_limit_kw
        self.weights = dict(scn.reward_weights)
        if scn.peak_threshold_kw >= self.grid_ref_kw:
            raise ValueError(f"peak_threshold_kw = {scn.peak_threshold_kw}; expected below the largest "
                             f"possible import {self.grid_ref_kw:.0f} kW (max mall + EV installed + battery power)")
        # observation scales: the largest mall load, and the largest total need the park can hold
        self.mall_ref_kw = mall_peak if mall_peak > 0 else 1.0
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
        return 6 + 2 * len(self.scenario.forecast_offsets) + 5 + 2

    @property
    def n_obs(self) -> int:
        return self.n_global + 4 * self.n_sockets

    def sample_arrivals(self, t: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """A random draw for hour ``t``: Poisson counts and one uniform pair per socket slot (and the
        forecast errors' normals, drawn only when the scenario has forecast errors)."""
        rng = self.rng if rng is None else rng
        h = t % 24
        draw = {
            "count_moto": int(rng.poisson(self.mean_moto[h])),
            "count_taxi": int(rng.poisson(self.mean_taxi[h])),
            "u_need": rng.random(self.n_sockets),
            "u_stay": rng.random(self.n_sockets),
            "forecast_z": None,
        }
        if self._noisy():
            draw["forecast_z"] = rng.standard_normal((2, self.n_forecasts))
        return draw

    def _noisy(self) -> bool:
        return bool(self.pv_sigma.any() or self.mall_sigma.any())

    def _take_draw(self, t: int, arrivals: Any, rng: np.random.Generator | None = None) -> dict[str, Any]:
        draw = self.sample_arrivals(t, rng) if arrivals is None else _as_draw(arrivals, self.n_sockets, self.n_forecasts)
        if draw["forecast_z"] is None:  # a draw without errors: the forecasts are perfect only without noise
            if self._noisy():
                draw["forecast_z"] = (self.rng if rng is None else rng).standard_normal((2, self.n_forecasts))
            else:
                draw["forecast_z"] = np.zeros((2, self.n_forecasts))
        return draw

    # ------------------------------------------------------------------ reset
    def reset(
        self,
        start_hour: int | None = None,
        arrivals: Any = None,
        rng: np.random.Generator | None = None,
        year: int | None = None,
    ) -> np.ndarray:
        """Battery at ``soc_init``, sockets free, then the start hour's arrivals; the first observation.

        ``year`` is the index of the weather year in ``scenario.weather_years``; by default one is
        drawn uniformly (with a single year, nothing is drawn).
        """
        rng = self.rng if rng is None else rng
        if start_hour is None:
            start_hour = int(rng.integers(DAYS_PER_YEAR)) * 24 if self.random_start else self.start_hour
        if year is None:
            year = int(rng.integers(self.n_years)) if self.n_years > 1 else 0
        if isinstance(year, bool) or not isinstance(year, (int, np.integer)) or not 0 <= year < self.n_years:
            raise ValueError(f"year = {year!r}; expected an index in [0, {self.n_years - 1}] into weather_years "
                             f"{list(self.scenario.weather_years)!r}")
        self.t = self._check_start(start_hour)
        self.k = 0
        self.year = int(year)
        self.month_peak_kw = 0.0
        self.energy_kwh = self.scenario.soc_init * self.scenario.capacity_kwh
        self.occupied = np.zeros(self.n_sockets, dtype=bool)
        self.need_kwh = np.zeros(self.n_sockets, dtype=np.float64)
        self.hours_left = np.zeros(self.n_sockets, dtype=np.int64)
        self.episode = {name: 0.0 for name in EPISODE_NAMES}
        draw = self._take_draw(self.t, arrivals, rng)
        self.forecast_z = draw["forecast_z"]
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
        ev_kwh = float(ev_i.sum())

        # 3. loads and PV
        pv = float(self.pv_kw[self.year, t])
        mall = float(self.mall_kw[self.year, t])
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
        pv_to_bess = min(surplus, charge)
        grid_to_bess = charge - pv_to_bess

        # 5. grid connection limit: above it the battery's grid charging goes first, then EV charging
        # (all sockets by the same fraction); the rest is still imported, as a violation
        limit = self.grid_limit_kw
        bess_cut = ev_cut = 0.0
        over = net_load - discharge + grid_to_bess - limit
        if over > 0:
            bess_cut = min(over, grid_to_bess)
            over -= bess_cut
            charge -= bess_cut
            grid_to_bess -= bess_cut
            if over > 0 and ev_kwh > 0:
                # here net load > discharge + limit: PV covers less than the load and the discharge
                # was not capped by the net load, so neither changes when the EV load drops
                ev_cut = min(over, ev_kwh)
                ev_i = ev_i * (1.0 - ev_cut / ev_kwh)
                ev_kwh -= ev_cut
                net_load -= ev_cut
        self.need_kwh = self.need_kwh - ev_i
        e = e + self.eta_c * charge - discharge / self.eta_d
        self.energy_kwh = min(max(e, self.e_min_kwh), self.e_max_kwh)

        # 6. grid and PV
        grid_import = net_load - discharge + grid_to_bess
        violation = max(grid_import - limit, 0.0)
        pv_used = pv_to_load + pv_to_bess
        pv_curtailed = pv - pv_used

        # 7. departures
        self.hours_left = np.where(self.occupied, self.hours_left - 1, self.hours_left)
        leaving = self.occupied & (self.hours_left <= 0)
        unmet_kwh = float(self.need_kwh[leaving].sum())
        departed = int(leaving.sum())
        served = int((leaving & (self.need_kwh <= scn.served_tol_kwh)).sum())
        self.occupied = self.occupied & ~leaving
        self.need_kwh = np.where(leaving, 0.0, self.need_kwh)
        self.hours_left = np.where(leaving, 0, self.hours_left)

        # 8. arrivals of the next hour
        t_next = (t + 1) % HOURS_PER_YEAR
        draw = self._take_draw(t_next, arrivals)
        arrived, admitted, rejected = self._admit(t_next, draw)
        self.forecast_z = draw["forecast_z"]

        # 9. reward; the demand term charges the rise of the month-to-date peak import
        peak_rise = max(grid_import - self.month_peak_kw, 0.0)
        month_peak = self.month_peak_kw + peak_rise
        terms = {
            "co2": -grid_import / self.grid_ref_kw,
            "cost": -grid_import * self.tariff[h] / (self.grid_ref_kw * self.tariff.max()),
            "solar": (pv_used - pv_curtailed) / scn.pv_ac_kw,
            "ev": float(np.clip((ev_kwh - unmet_kwh) / scn.ev_installed_kw, -1.0, 1.0)),
            "peak": -max(grid_import - scn.peak_threshold_kw, 0.0) / (self.grid_ref_kw - scn.peak_threshold_kw),
            "demand": -peak_rise / self.grid_ref_kw,
            "grid_limit": -violation / self.grid_ref_kw,
        }
        terms = {name: float(value) for name, value in terms.items()}
        reward = float(sum(self.weights[name] * terms[name] for name in REWARD_TERMS))
        reward += scn.grid_limit_penalty * terms["grid_limit"]
        self.month_peak_kw = 0.0 if t_next in MONTH_FIRST_HOURS else month_peak

        flows = {name: float(value) for name, value in zip(FLOW_NAMES, (
            pv, mall, ev_kwh, pv_to_load, pv_to_bess, grid_to_bess, pv_used, pv_curtailed,
            grid_import, charge, discharge, unmet_kwh, ev_cut, bess_cut, violation))}
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
        ep["monthly_peaks_sum_kw"] += peak_rise
        ep["grid_limit_violation_kwh"] += violation
        ep["limit_ev_cut_kwh"] += ev_cut
        ep["limit_bess_cut_kwh"] += bess_cut
        ep["return"] += reward

        self.t = t_next
        self.k += 1
        truncated = self.k >= self.episode_hours
        info = {"flows": flows, "vehicles": vehicles, "terms": terms, "reward": reward,
                "arrivals": draw, "totals": dict(ep)}
        return self.observation(), reward, False, truncated, info

    # ------------------------------------------------------------------ observation
    def observation(self) -> np.ndarray:
        """Calendar, PV and mall now and ahead, SOC, park summary, tariff, month-to-date peak and the
        month's elapsed fraction; then 4 features per socket."""
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
        # forecast = profile x exp(sigma z - sigma^2 / 2): a log-normal error of mean one
        pv_err = np.exp(self.pv_sigma * self.forecast_z[0] - 0.5 * self.pv_sigma**2)
        mall_err = np.exp(self.mall_sigma * self.forecast_z[1] - 0.5 * self.mall_sigma**2)
        forecast = ([self.pv_kw[self.year, i] * pv_err[j] / scn.pv_ac_kw for j, i in enumerate(ahead)]
                    + [self.mall_kw[self.year, i] * mall_err[j] / self.mall_ref_kw for j, i in enumerate(ahead)])
        month = int(np.searchsorted(MONTH_START_HOURS, t, side="right")) - 1
        month_first, month_end = MONTH_START_HOURS[month], MONTH_START_HOURS[month + 1]
        park = [
            self.energy_kwh / scn.capacity_kwh,
            self.occupied[~self.is_taxi].sum() / max(self.n_moto, 1),
            self.occupied[self.is_taxi].sum() / max(self.n_taxi, 1),
            self.need_kwh.sum() / self.ev_need_ref_kwh,
            self.tariff[h] / self.tariff.max(),
            self.month_peak_kw / self.grid_ref_kw,
            (t - month_first) / (month_end - month_first),
        ]
        sockets = np.stack([
            self.occupied.astype(np.float64),
            self.need_kwh / self.battery_kwh,
            self.hours_left / scn.max_stay_hours,
            self.is_taxi.astype(np.float64),
        ], axis=1)
        return np.concatenate([np.asarray(calendar + forecast + park, dtype=np.float64), sockets.reshape(-1)])
