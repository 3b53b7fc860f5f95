"""Reference controllers: uncontrolled, rule-based, and the perfect-foresight optimum.

Every policy is a jittable function ``act(obs, state, params) -> action`` with the action layout of
the environment: ``[battery, socket_0, ..., socket_{n-1}]`` in ``[-1, 1]`` (battery: + charge,
- discharge, as a fraction of its power rating; sockets: fraction of their rating). Policies see the
environment state and params, so a rule can read the hour, the PV and the mall load directly.

- :func:`uncontrolled`: every plugged vehicle charges at full socket power; the battery is idle.
- :func:`make_rule_based`: vehicles at full power; the battery stores the PV surplus (never grid
  energy) and discharges in the evening (18:00-22:59 by default: the evening peak and the hour after it).
- :func:`solve_optimum`: the lowest grid import achievable over an episode with perfect foresight
  of PV, mall load and the vehicles (a linear program solved by HiGHS), while every vehicle gets
  the energy it gets under the uncontrolled policy (the most it can get). :func:`optimal_policy`
  replays its schedule through the environment.

Why the optimum needs no binaries: the objective is ``sum(grid import) + eps * sum(charge +
discharge)``. Charging and discharging in the same hour, discharging while PV is curtailed, or
serving a load from the grid while PV is curtailed can each be undone without raising the import
(curtailing PV is free) while strictly lowering the throughput term, so none of them happens at the
optimum, and the LP's dispatch is one the environment's rules (PV serves the loads first, the
battery never exports) reproduce. Charging from the grid is left out of the LP: a kWh bought to be
stored returns at most ``round_trip_eff`` kWh, so it can never lower the total import.
``eps`` (1e-6 per kWh) changes the import by less than ``eps`` times the throughput (about 1 kWh
in a year). :func:`check_optimum` verifies these properties on a solution.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.sparse

from oe3jax.simulation.episode import Schedule, run_episode, session_starts
from oe3jax.simulation.scenario import Scenario

Act = Callable[[jax.Array, Any, Any], jax.Array]

#: Hours of day in which the rule-based battery discharges: 18:00-22:59, the evening peak of the
#: site (18:00-21:59, ``oe3jax.simulation.env.EVENING_PEAK_HOURS``) and the hour after it, which
#: together make the high-price block of the time-of-use tariff.
RULE_DISCHARGE_HOURS: tuple[int, ...] = (18, 19, 20, 21, 22)

#: Relative margin under the PV surplus at which the rule charges, so that float32 rounding in the
#: step can never turn a PV charge into a (tiny) grid charge.
_SURPLUS_MARGIN_FRAC = 1e-5


def socket_ratings_kw(scenario: Scenario) -> np.ndarray:
    """Power rating of every socket (kW): moto sockets first, then mototaxi sockets."""
    return np.concatenate(
        [np.full(scenario.n_moto, scenario.moto_kw), np.full(scenario.n_taxi, scenario.taxi_kw)]
    )


# ----------------------------------------------------------------------------- simple policies
def uncontrolled(obs: jax.Array, state: Any, params: Any) -> jax.Array:
    """Every socket at full power (a free socket delivers nothing); battery idle."""
    n_sockets = state.occupied.shape[-1]
    return jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.ones((n_sockets,), jnp.float32)])


def make_rule_based(scenario: Scenario, discharge_hours: tuple[int, ...] = RULE_DISCHARGE_HOURS) -> Act:
    """The rule-based dispatch: PV surplus into the battery, battery out in the evening.

    Each hour, with the vehicles charging at full power (EV load ``sum_i min(rating_i, need_i)``
    over plugged sockets) and ``load = mall + EV``:

    - if PV exceeds the load, the battery charges ``min(surplus, power_kw)`` (a fraction
      ``min(surplus, power_kw) / power_kw`` of its rating, minus a 1e-5 relative margin against
      rounding): it only ever stores PV that would otherwise be curtailed, never grid energy;
    - else, in the discharge hours (18:00-22:59 by default) the battery discharges at full rating;
      the step caps the discharge at the net load and the SOC window, so it never exports;
    - otherwise it is idle.
    """
    ratings = jnp.asarray(socket_ratings_kw(scenario), jnp.float32)
    power_kw = float(scenario.power_kw)
    evening = np.zeros(24, bool)
    for h in discharge_hours:
        if not (isinstance(h, int) and 0 <= h < 24):
            raise ValueError(f"discharge_hours: expected hours of day in 0..23, got {h!r}")
        evening[h] = True
    evening_j = jnp.asarray(evening)

    def act(obs: jax.Array, state: Any, params: Any) -> jax.Array:
        t = state.t
        ev_kwh = jnp.sum(jnp.where(state.occupied, jnp.minimum(ratings, state.need_kwh), 0.0))
        load_kwh = params.mall_kw[t] + ev_kwh
        surplus_kwh = jnp.maximum(params.pv_kw[t] - load_kwh, 0.0)
        charge_frac = jnp.minimum(surplus_kwh, power_kw) / power_kw * (1.0 - _SURPLUS_MARGIN_FRAC)
        battery = jnp.where(
            surplus_kwh > 0.0, charge_frac, jnp.where(evening_j[t % 24], -1.0, 0.0)
        )
        sockets = jnp.ones(ratings.shape, jnp.float32)
        return jnp.concatenate([battery[None].astype(jnp.float32), sockets])

    return act


def schedule_policy(actions: np.ndarray) -> Schedule:
    """A policy that plays a fixed schedule: action ``actions[k]`` at step ``k`` of the episode."""
    return Schedule(np.asarray(actions, np.float32))


def uncontrolled_schedule(scenario: Scenario, hours: int) -> Schedule:
    """:func:`uncontrolled` as a :class:`Schedule` (it does not depend on the state): same actions."""
    actions = np.ones((hours, 1 + scenario.n_sockets), np.float32)
    actions[:, 0] = 0.0
    return Schedule(actions)


# ----------------------------------------------------------------------------- vehicle sessions
@dataclasses.dataclass(frozen=True)
class Sessions:
    """The vehicle sessions of an episode: who is plugged where, when, and how much they get.

    Steps are episode steps ``k`` (hour ``t = (start_hour + k) % 8760``). A session occupies socket
    ``socket[s]`` for the steps ``start[s] <= k < stop[s]`` (clipped to the horizon) and receives
    ``energy_kwh[s]`` in total over them.
    """

    socket: np.ndarray  # int (n_sessions,)
    start: np.ndarray  # int (n_sessions,)
    stop: np.ndarray  # int (n_sessions,)
    need_kwh: np.ndarray  # energy wanted at the first step in the horizon
    energy_kwh: np.ndarray  # energy delivered under the uncontrolled policy

    @property
    def n(self) -> int:
        return int(self.socket.shape[0])


def extract_sessions(
    occupied: np.ndarray, need_kwh: np.ndarray, hours_left: np.ndarray, ratings_kw: np.ndarray
) -> Sessions:
    """Sessions from a recorded trajectory of the socket states *before* each step's action.

    ``occupied``, ``need_kwh``, ``hours_left`` have shape ``(steps, n_sockets)``; sessions start
    where :func:`~oe3jax.simulation.episode.session_starts` says. The energy of a session is what full
    power delivers: ``sum_k min(rating, need_k)`` (need_k is the need before step ``k``).
    """
    occupied = np.asarray(occupied, bool)
    hours_left = np.asarray(hours_left)
    need = np.asarray(need_kwh, np.float64)
    steps = occupied.shape[0]
    new = session_starts(occupied, hours_left)
    starts_k, starts_i = np.nonzero(new)
    order = np.lexsort((starts_k, starts_i))  # by socket, then time
    starts_k, starts_i = starts_k[order], starts_i[order]
    # a session lasts until the next start on the same socket or until the socket is free
    stop = np.empty_like(starts_k)
    energy = np.empty(starts_k.shape[0])
    delivered = np.where(occupied, np.minimum(ratings_kw[None, :], need), 0.0)
    for s, (k0, i) in enumerate(zip(starts_k, starts_i)):
        k = k0 + 1
        while k < steps and occupied[k, i] and not new[k, i]:
            k += 1
        stop[s] = k
        energy[s] = delivered[k0:k, i].sum()
    return Sessions(
        socket=starts_i.astype(np.int64),
        start=starts_k.astype(np.int64),
        stop=stop.astype(np.int64),
        need_kwh=need[starts_k, starts_i],
        energy_kwh=energy,
    )


# ----------------------------------------------------------------------------- the linear program
@dataclasses.dataclass
class Optimum:
    """The perfect-foresight schedule and its hourly flows (kWh, one entry per episode step)."""

    grid_import_kwh: np.ndarray
    pv_kwh: np.ndarray
    pv_to_load_kwh: np.ndarray
    pv_to_bess_kwh: np.ndarray
    pv_curtailed_kwh: np.ndarray
    mall_kwh: np.ndarray
    ev_kwh: np.ndarray
    bess_charge_kwh: np.ndarray
    bess_discharge_kwh: np.ndarray
    energy_kwh: np.ndarray  # battery energy after each step
    socket_kwh: np.ndarray  # (steps, n_sockets) energy delivered per socket
    actions: np.ndarray  # (steps, 1 + n_sockets) the schedule as environment actions
    solve_seconds: float
    status: str
    n_variables: int
    n_constraints: int

    def totals(self) -> dict[str, float]:
        return {
            "grid_import_kwh": float(self.grid_import_kwh.sum()),
            "pv_used_kwh": float((self.pv_to_load_kwh + self.pv_to_bess_kwh).sum()),
            "pv_curtailed_kwh": float(self.pv_curtailed_kwh.sum()),
            "ev_delivered_kwh": float(self.ev_kwh.sum()),
            "bess_charge_kwh": float(self.bess_charge_kwh.sum()),
            "bess_discharge_kwh": float(self.bess_discharge_kwh.sum()),
            "solve_seconds": self.solve_seconds,
        }


def solve_optimum(
    scenario: Scenario,
    pv_kw: np.ndarray,
    mall_kw: np.ndarray,
    sessions: Sessions,
    energy0_kwh: float | None = None,
    throughput_penalty: float = 1e-6,
) -> Optimum:
    """Minimise the grid import over ``len(pv_kw)`` steps with perfect foresight (HiGHS LP).

    ``pv_kw`` and ``mall_kw`` are the profiles of the episode's steps (already rotated to the
    start hour). Variables per step ``k``: PV to load ``u_k``, battery charge (from PV) ``c_k``,
    discharge ``d_k``, grid import ``g_k``, battery energy after the step ``E_k``; per session and
    step it is plugged, the energy delivered ``x_{s,k}``. Constraints:

    - load balance ``u_k + g_k + d_k = mall_k + sum_s x_{s,k}``; PV ``u_k + c_k <= pv_k``;
    - battery ``E_k = E_{k-1} + eta_c c_k - d_k / eta_d``, ``E_min <= E_k <= E_max``,
      ``0 <= c_k, d_k <= power_kw``, ``E_{-1} = energy0_kwh`` (default ``soc_init * capacity``);
    - vehicles ``0 <= x_{s,k} <= rating``, ``sum_k x_{s,k} = energy_kwh[s]``.

    Objective ``sum_k g_k + throughput_penalty * sum_k (c_k + d_k)`` (see the module docstring).
    """
    pv = np.asarray(pv_kw, np.float64)
    mall = np.asarray(mall_kw, np.float64)
    steps = pv.shape[0]
    if mall.shape != (steps,):
        raise ValueError(f"mall_kw: expected {steps} values like pv_kw, got shape {mall.shape}")
    ratings = socket_ratings_kw(scenario)
    n_sockets = ratings.shape[0]
    e_min = scenario.soc_min * scenario.capacity_kwh
    e_max = scenario.soc_max * scenario.capacity_kwh
    e0 = scenario.soc_init * scenario.capacity_kwh if energy0_kwh is None else float(energy0_kwh)
    eta_c, eta_d, p_kw = scenario.eta_charge, scenario.eta_discharge, scenario.power_kw

    # vehicle-hour variables: one per (session, plugged step)
    lengths = sessions.stop - sessions.start
    x_session = np.repeat(np.arange(sessions.n), lengths)
    x_step = np.concatenate([np.arange(a, b) for a, b in zip(sessions.start, sessions.stop)]) if sessions.n else np.zeros(0, np.int64)
    x_socket = sessions.socket[x_session]
    n_x = x_step.shape[0]

    # variable blocks: [x | u | c | d | g | E]
    off_u, off_c, off_d, off_g, off_e = n_x, n_x + steps, n_x + 2 * steps, n_x + 3 * steps, n_x + 4 * steps
    n_var = n_x + 5 * steps
    k = np.arange(steps)

    cost = np.zeros(n_var)
    cost[off_g : off_g + steps] = 1.0
    cost[off_c : off_c + steps] = throughput_penalty
    cost[off_d : off_d + steps] = throughput_penalty

    lower = np.zeros(n_var)
    upper = np.full(n_var, np.inf)
    upper[:n_x] = ratings[x_socket]
    upper[off_c : off_c + steps] = p_kw
    upper[off_d : off_d + steps] = p_kw
    lower[off_e : off_e + steps] = e_min
    upper[off_e : off_e + steps] = e_max

    # equality rows: load balance (steps), battery (steps), sessions (n_sessions)
    rows, cols, vals = [], [], []

    def add(r: np.ndarray, c: np.ndarray, v: np.ndarray | float) -> None:
        rows.append(np.asarray(r))
        cols.append(np.asarray(c))
        vals.append(np.broadcast_to(np.asarray(v, np.float64), np.shape(r)))

    add(k, off_u + k, 1.0)
    add(k, off_g + k, 1.0)
    add(k, off_d + k, 1.0)
    add(x_step, np.arange(n_x), -1.0)
    b_eq = [mall]
    r0 = steps
    add(r0 + k, off_e + k, 1.0)
    add(r0 + k[1:], off_e + k[1:] - 1, -1.0)
    add(r0 + k, off_c + k, -eta_c)
    add(r0 + k, off_d + k, 1.0 / eta_d)
    b_batt = np.zeros(steps)
    b_batt[0] = e0
    b_eq.append(b_batt)
    r1 = 2 * steps
    add(r1 + x_session, np.arange(n_x), 1.0)
    b_eq.append(sessions.energy_kwh)
    n_eq = 2 * steps + sessions.n
    a_eq = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_eq, n_var)
    )
    # inequality rows: PV split u_k + c_k <= pv_k
    a_ub = scipy.sparse.csr_matrix(
        (np.ones(2 * steps), (np.concatenate([k, k]), np.concatenate([off_u + k, off_c + k]))),
        shape=(steps, n_var),
    )

    tic = time.perf_counter()
    res = scipy.optimize.linprog(
        cost,
        A_ub=a_ub,
        b_ub=pv,
        A_eq=a_eq,
        b_eq=np.concatenate(b_eq),
        bounds=np.stack([lower, upper], axis=1),
        method="highs",
    )
    solve_seconds = time.perf_counter() - tic
    if res.status != 0:
        raise RuntimeError(f"perfect-foresight LP not solved: {res.message}")
    sol = res.x
    x = np.clip(sol[:n_x], 0.0, None)
    u = np.clip(sol[off_u : off_u + steps], 0.0, None)
    c = np.clip(sol[off_c : off_c + steps], 0.0, None)
    d = np.clip(sol[off_d : off_d + steps], 0.0, None)
    g = np.clip(sol[off_g : off_g + steps], 0.0, None)
    e = sol[off_e : off_e + steps]

    socket_kwh = np.zeros((steps, n_sockets))
    np.add.at(socket_kwh, (x_step, x_socket), x)
    ev = socket_kwh.sum(axis=1)
    actions = np.zeros((steps, 1 + n_sockets))
    actions[:, 0] = np.where(c >= d, c, -d) / p_kw
    actions[:, 1:] = socket_kwh / ratings[None, :]
    actions = np.clip(actions, -1.0, 1.0)
    return Optimum(
        grid_import_kwh=g,
        pv_kwh=pv,
        pv_to_load_kwh=u,
        pv_to_bess_kwh=c,
        pv_curtailed_kwh=np.maximum(pv - u - c, 0.0),
        mall_kwh=mall,
        ev_kwh=ev,
        bess_charge_kwh=c,
        bess_discharge_kwh=d,
        energy_kwh=e,
        socket_kwh=socket_kwh,
        actions=actions,
        solve_seconds=solve_seconds,
        status=res.message,
        n_variables=n_var,
        n_constraints=n_eq + steps,
    )


def check_optimum(opt: Optimum, tol_kwh: float = 1e-4) -> dict[str, float]:
    """Worst violations of the properties the environment needs to reproduce the schedule (kWh).

    - ``simultaneous``: ``max_k min(c_k, d_k)`` (charge and discharge in the same hour);
    - ``pv_first``: ``max_k (min(pv_k, load_k) - u_k)`` (PV not serving the load first);
    - ``export``: ``max_k (d_k - max(load_k - pv_k, 0))`` (discharge above the net load).
    All three are 0 at the optimum up to the solver's tolerance.
    """
    load = opt.mall_kwh + opt.ev_kwh
    return {
        "simultaneous": float(np.max(np.minimum(opt.bess_charge_kwh, opt.bess_discharge_kwh), initial=0.0)),
        "pv_first": float(np.max(np.minimum(opt.pv_kwh, load) - opt.pv_to_load_kwh, initial=0.0)),
        "export": float(np.max(opt.bess_discharge_kwh - np.maximum(load - opt.pv_kwh, 0.0), initial=0.0)),
    }


# ----------------------------------------------------------------------------- the optimum in the env
def record_sessions(env: Any, params: Any, key: jax.Array, hours: int | None = None) -> tuple[Sessions, dict[str, Any]]:
    """The episode's vehicle sessions, recorded by running it once with :func:`uncontrolled`.

    The arrivals depend on the key only (never on the actions), so these are the sessions of every
    policy evaluated with the same ``key`` and ``hours`` (see :func:`oe3jax.simulation.episode.run_episode`).
    """
    if hours is None:
        hours = int(params.max_steps_in_episode)
    trace = run_episode(env, params, uncontrolled_schedule(env.scenario, hours), key, hours)
    sessions = extract_sessions(
        trace["occupied"], trace["need_kwh"], trace["hours_left"], socket_ratings_kw(env.scenario)
    )
    return sessions, trace


def optimal_policy(
    env: Any, params: Any, key: jax.Array, hours: int | None = None, throughput_penalty: float = 1e-6
) -> tuple[Act, Optimum, dict[str, Any]]:
    """The perfect-foresight optimum of the episode that ``key`` draws, as a replayable policy.

    Returns ``(act, optimum, uncontrolled_trace)``: ``act`` plays the LP's schedule (battery
    ``c_k / power_kw`` or ``-d_k / power_kw``, sockets ``x_{i,k} / rating_i``) step by step, so
    ``episode_kpis(env, params, act, key, hours)`` replays it through the environment; ``optimum``
    holds the LP's own flows.
    """
    sessions, trace = record_sessions(env, params, key, hours)
    t = np.asarray(trace["t"])
    pv = np.asarray(params.pv_kw, np.float64)[t]
    mall = np.asarray(params.mall_kw, np.float64)[t]
    opt = solve_optimum(
        env.scenario, pv, mall, sessions, energy0_kwh=float(trace["energy_kwh"][0]),
        throughput_penalty=throughput_penalty,
    )
    return schedule_policy(opt.actions), opt, trace
