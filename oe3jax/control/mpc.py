"""Model-predictive control: the optimum of a short horizon, re-solved every hour.

Each hour the MPC solves :func:`oe3jax.control.optimum.solve` for its objective over the next
``horizon`` hours (36 by default) and applies the first hour's action. What it knows:

- PV and mall load over the horizon from ``forecast(t, hours) -> (pv_kw, mall_kw)``; the default
  is the environment's own profiles (a perfect forecast, as the observation's forecast features
  are); a noisy forecast is a function of the same signature;
- the battery energy and the vehicles plugged now (their remaining need and departure hour, from
  the environment state); future arrivals are unknown, unless ``expected_ev_kw`` (24 values, kW by
  hour of day) adds an expected EV load to the forecast hours after the current one, or
  ``sessions`` (recorded with :func:`~oe3jax.control.sessions.record_sessions`) reveals every
  vehicle of the episode (a perfect-foresight MPC, for checks);
- its own record of the imports it caused: the peak import so far in the current month (a lower
  bound of that month's peak in the ``monthly_peaks`` objective, and of a month-to-date reward
  term) and the evening peak so far (``evening_peak``).

A plugged vehicle gets, by its departure, the most it can (``min(need, rating * hours left)``) in
the objectives that fix the EV energy (see :mod:`~oe3jax.control.optimum`); the reward objective
trades it. With ``clip_to_episode`` (default) the plan never looks past the episode's last step.

How it runs: :class:`MPC` is a policy ``act(obs, state, params)`` like any other; the solve runs on
the host through ``jax.pure_callback``, so the MPC plays inside :func:`~oe3jax.simulation.episode.run_episode`
(one compiled ``lax.scan``), ``episode_kpis`` and every comparison, with the same arrivals as every
other controller of the same key. A host loop of its own would duplicate the rollout and its trace
format. The callback keeps the record per episode, restarted at step 0; steps must come in order
(an episode at a time, or a batch of episodes in lock-step under ``jax.vmap``, one record per row).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from oe3jax.control.optimum import OBJECTIVES, Horizon, check_objective, evening_mask, solve
from oe3jax.control.sessions import Sessions, record_sessions
from oe3jax.control.site import Site
from oe3jax.simulation.calendar import month_of_hour
from oe3jax.simulation.profiles import HOURS_PER_YEAR

DEFAULT_HORIZON = 36

Forecast = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class _Record:
    """One episode's memory: the last step seen and the peaks so far."""

    k: int
    prev: tuple | None = None  # (t, energy, occupied, need, action) of the last step
    month: int = -1
    month_peak_kw: float = 0.0
    evening_peak_kw: float = 0.0
    imports: list = dataclasses.field(default_factory=list)


class MPC:
    """Rolling-horizon optimum as a policy (see the module docstring).

    >>> mpc = MPC(env, params, "monthly_peaks", horizon=36)
    >>> trace = run_episode(env, params, mpc, key)
    """

    def __init__(self, env: Any, params: Any, objective: str = "monthly_peaks", horizon: int = DEFAULT_HORIZON, *,
                 forecast: Forecast | None = None, expected_ev_kw: Sequence[float] | None = None,
                 sessions: Sessions | None = None, clip_to_episode: bool = True,
                 time_limit_s: float | None = None) -> None:
        self.objective = check_objective(objective)
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon: expected an integer >= 1 (hours), got {horizon!r}")
        if forecast is not None and not callable(forecast):
            raise ValueError(f"forecast: expected a function (t, hours) -> (pv_kw, mall_kw), got {forecast!r}")
        if expected_ev_kw is not None:
            ev = np.asarray(expected_ev_kw, np.float64)
            if ev.shape != (24,) or not np.all(np.isfinite(ev)) or np.any(ev < 0):
                raise ValueError(f"expected_ev_kw: expected 24 finite values >= 0 (kW by hour of day), got {expected_ev_kw!r}")
            expected_ev_kw = ev
        self.horizon = int(horizon)
        self.site = Site.from_env(env, params)
        self.n_sockets = env.n_sockets
        # profiles of every weather year [Y, 8760]; an episode's own year is chosen per decision
        self._pv_years = np.asarray(params.pv_kw, np.float64).reshape(-1, HOURS_PER_YEAR)
        self._mall_years = np.asarray(params.mall_kw, np.float64).reshape(-1, HOURS_PER_YEAR)
        self._pv, self._mall = self._pv_years[0], self._mall_years[0]
        self.forecast = forecast
        self.expected_ev_kw = expected_ev_kw
        self.sessions = sessions
        self.clip_to_episode = bool(clip_to_episode)
        self.time_limit_s = time_limit_s
        self._records: dict[int, _Record] = {}
        self._months = month_of_hour()
        self.reset_stats()

    def __repr__(self) -> str:
        return f"MPC(objective={self.objective!r}, horizon={self.horizon})"

    # ----------------------------------------------------------------- statistics
    def reset_stats(self) -> None:
        self.stats = {"solves": 0, "solve_seconds": 0.0, "host_seconds": 0.0, "max_solve_seconds": 0.0}

    @property
    def info(self) -> dict[str, Any]:
        s = dict(self.stats)
        s["mean_solve_seconds"] = s["solve_seconds"] / max(s["solves"], 1)
        return {"objective": self.objective, "horizon": self.horizon, **s}

    # ----------------------------------------------------------------- the policy
    def __call__(self, obs: jax.Array, state: Any, params: Any) -> jax.Array:
        out = jax.ShapeDtypeStruct((1 + self.n_sockets,), jnp.float32)
        return jax.pure_callback(
            self._host, out, state.t, state.k, state.energy_kwh, state.occupied, state.need_kwh, state.hours_left,
            jnp.asarray(params.max_steps_in_episode, jnp.int32), jnp.asarray(getattr(state, "year", 0), jnp.int32),
            vmap_method="broadcast_all",
        )

    def _host(self, t, k, energy, occupied, need, hours_left, episode_len, year) -> np.ndarray:
        tic = time.perf_counter()
        occupied = np.asarray(occupied, bool)
        batched = occupied.ndim == 2
        rows = occupied.shape[0] if batched else 1
        flat = lambda a: np.broadcast_to(np.asarray(a), (rows,)) if batched else np.asarray(a).reshape(1)  # noqa: E731
        t, k, energy, episode_len, year = flat(t), flat(k), flat(energy), flat(episode_len), flat(year)
        occupied = occupied.reshape(rows, -1)
        need = np.asarray(need, np.float64).reshape(rows, -1)
        hours_left = np.asarray(hours_left).reshape(rows, -1)
        out = np.stack([
            self.decide(r, int(t[r]), int(k[r]), float(energy[r]), occupied[r], need[r], hours_left[r],
                        int(episode_len[r]), int(year[r]))
            for r in range(rows)
        ]).astype(np.float32)
        self.stats["host_seconds"] += time.perf_counter() - tic
        return out if batched else out[0]

    # ----------------------------------------------------------------- one decision
    def _record(self, row: int, t: int, k: int, energy: float, occupied: np.ndarray, need: np.ndarray) -> _Record:
        rec = self._records.get(row)
        if k == 0:
            rec = self._records[row] = _Record(k=0)
            return rec
        if rec is None or k != rec.k + 1:
            last = None if rec is None else rec.k
            raise RuntimeError(f"MPC: step {k} of an episode after step {last}; the MPC plays an episode's "
                               f"steps in order from step 0")
        rec.k = k
        g = self._realised_import(*rec.prev)
        t_prev = rec.prev[0]
        rec.imports.append(g)
        month = int(self._months[t_prev % HOURS_PER_YEAR])
        if month != rec.month:
            rec.month, rec.month_peak_kw = month, g
        else:
            rec.month_peak_kw = max(rec.month_peak_kw, g)
        if evening_mask(np.asarray([t_prev]))[0]:
            rec.evening_peak_kw = max(rec.evening_peak_kw, g)
        return rec

    def _realised_import(self, t: int, energy: float, occupied: np.ndarray, need: np.ndarray, action: np.ndarray) -> float:
        """The import of an hour the MPC played, computed as the step does (docs/physics.md)."""
        s = self.site
        a = np.clip(np.nan_to_num(np.asarray(action, np.float64)), -1.0, 1.0)
        ev = float(np.sum(np.where(occupied, np.minimum(np.maximum(a[1:], 0.0) * s.ratings_kw, need), 0.0)))
        pv, load = self._pv[t], self._mall[t] + ev
        to_load = min(pv, load)
        surplus, net = pv - to_load, load - to_load
        req = a[0] * s.power_kw
        charge = min(req, max(s.e_max_kwh - energy, 0.0) / s.eta_charge) if req > 0 else 0.0
        discharge = min(-req, max(energy - s.e_min_kwh, 0.0) * s.eta_discharge, net) if req < 0 else 0.0
        return net - discharge + max(charge - surplus, 0.0)

    def horizon_at(self, t: int, k: int, energy: float, occupied: np.ndarray, need: np.ndarray,
                   hours_left: np.ndarray, episode_len: int, rec: _Record | None = None) -> Horizon:
        """What the MPC plans at step ``k`` (hour ``t``): forecasts, plugged (and known) vehicles, record."""
        hz_len = self.horizon
        if self.clip_to_episode:
            hz_len = max(1, min(hz_len, episode_len - k))
        ts = (t + np.arange(hz_len)) % HOURS_PER_YEAR
        if self.forecast is None:
            pv, mall = self._pv[ts], self._mall[ts].copy()
        else:
            pv, mall = (np.asarray(a, np.float64).copy() for a in self.forecast(t, hz_len))
            if pv.shape != (hz_len,) or mall.shape != (hz_len,):
                raise ValueError(f"forecast: expected two arrays of {hz_len} values (pv_kw, mall_kw), "
                                 f"got shapes {pv.shape} and {mall.shape}")
        if self.expected_ev_kw is not None:
            mall[1:] += self.expected_ev_kw[ts[1:] % 24]
        ratings = self.site.ratings_kw
        plugged = np.nonzero(occupied & (hours_left > 0))[0]
        hl = hours_left[plugged].astype(np.int64)
        stop = np.minimum(hl, hz_len)
        full = np.minimum(need[plugged], ratings[plugged] * hl)
        least = np.maximum(full - ratings[plugged] * (hl - stop), 0.0)
        socket, start, stops, needs, energy_least, departs = [plugged], [np.zeros_like(hl)], [stop], [need[plugged]], [least], [hl <= hz_len]
        if self.sessions is not None:
            s = self.sessions
            fut = np.nonzero((s.start > k) & (s.start < k + hz_len))[0]
            f_stop = np.minimum(s.stop[fut] - k, hz_len)
            over = np.maximum(s.stop[fut] - k - hz_len, 0)
            socket.append(s.socket[fut])
            start.append(s.start[fut] - k)
            stops.append(f_stop)
            needs.append(s.need_kwh[fut])
            energy_least.append(np.maximum(s.energy_kwh[fut] - ratings[s.socket[fut]] * over, 0.0))
            departs.append(s.departing[fut] & (over == 0))
        sessions = Sessions(
            socket=np.concatenate(socket).astype(np.int64), start=np.concatenate(start).astype(np.int64),
            stop=np.concatenate(stops).astype(np.int64), need_kwh=np.concatenate(needs).astype(np.float64),
            energy_kwh=np.concatenate(energy_least), departs=np.concatenate(departs),
        )
        month_peak0 = evening_peak0 = 0.0
        if rec is not None and k > 0:
            if int(self._months[t % HOURS_PER_YEAR]) == rec.month:
                month_peak0 = rec.month_peak_kw
            evening_peak0 = rec.evening_peak_kw
        return Horizon(t=ts, pv_kw=pv, mall_kw=mall, sessions=sessions, energy0_kwh=energy,
                       month_peak0_kw=month_peak0, evening_peak0_kw=evening_peak0)

    def decide(self, row: int, t: int, k: int, energy: float, occupied: np.ndarray, need: np.ndarray,
               hours_left: np.ndarray, episode_len: int, year: int = 0) -> np.ndarray:
        """The action at step ``k`` of the episode in batch row ``row`` (host side); ``year`` is the
        index of the episode's weather year (its profiles are the MPC's perfect forecasts)."""
        self._pv, self._mall = self._pv_years[year], self._mall_years[year]
        rec = self._record(row, t, k, energy, occupied, need)
        hz = self.horizon_at(t, k, energy, occupied, need, hours_left, episode_len, rec)
        opt = solve(self.site, hz, self.objective, time_limit_s=self.time_limit_s, tie_ramp=1.0)
        self.stats["solves"] += 1
        self.stats["solve_seconds"] += opt.solve_seconds
        self.stats["max_solve_seconds"] = max(self.stats["max_solve_seconds"], opt.solve_seconds)
        action = opt.actions[0].copy()
        action[1:] = np.where(occupied, action[1:], 0.0)
        rec.prev = (t, energy, occupied.copy(), need.copy(), action)
        return action


def expected_ev_by_hour(env: Any, params: Any, key: jax.Array, hours: int | None = None) -> np.ndarray:
    """Mean EV load (kW) by hour of day of an uncontrolled episode: an MPC's expected EV load.

    Pass a key other than the evaluated episode's (e.g. ``jax.random.fold_in(key, 1)``, another
    year of the same fleet) so that the expectation is history, not foresight. It counts every
    vehicle charging at that hour, including those already plugged when the MPC plans, so it
    errs on the high side in the first hours of a plan.
    """
    _, trace = record_sessions(env, params, key, hours)
    hod = np.asarray(trace["t"]) % 24
    ev = np.asarray(trace["flows"]["ev_kwh"], np.float64)
    total = np.bincount(hod, weights=ev, minlength=24)
    count = np.bincount(hod, minlength=24)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


__all__ = ["DEFAULT_HORIZON", "MPC", "OBJECTIVES", "expected_ev_by_hour"]
