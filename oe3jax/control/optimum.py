"""Perfect-foresight optima per objective: linear programs (and one MILP) solved by HiGHS.

With perfect foresight of PV, mall load and vehicles over a horizon of steps, :func:`solve` finds
the schedule that is best for one objective (:data:`OBJECTIVES`):

- ``grid``: least grid import (kWh), hence least CO2 (a constant factor per kWh);
- ``cost``: least energy cost ``sum_k tariff[h_k] * import_k``; charging from the grid is allowed
  (with a time-of-use tariff, storing cheap energy for the dear hours pays when the price ratio
  exceeds 1 / round-trip efficiency);
- ``monthly_peaks``: least sum over billing months of the highest hourly import (kW; what a
  demand charge bills), with epigraph variables ``M_m >= import_k`` for the hours of month m;
- ``evening_peak``: least highest hourly import over 18:00-21:59 (``env.EVENING_PEAK_HOURS``);
- ``reward``: the most total reward of the environment's configured weights, under the
  environment's own dispatch rules (a MILP: see below).

Vehicles. For ``grid``, ``cost``, ``monthly_peaks`` and ``evening_peak`` every vehicle session
receives exactly the energy it receives uncontrolled (full power while plugged), which is also the
most it can receive: ``min(need, rating * hours plugged)``; the optimum only moves it in time
within the stay. The ``reward`` objective trades EV energy against the other terms (its ``ev``
term), so there a session receives anything from 0 to that maximum.

Variables per step ``k``: PV to load ``u``, battery charge from PV ``cp`` and from the grid ``cg``,
discharge ``d``, grid import ``g``, battery energy after the step ``E``; per session and plugged
step the energy delivered ``x``. Constraints: balance ``u + g + d = mall + EV + cg``; PV
``u + cp <= pv``, ``u <= mall + EV``; battery ``E_k = E_{k-1} + eta_c (cp + cg) - d / eta_d``
within ``[E_min, E_max]``, ``cp + cg <= P``, ``d <= P``; sessions as above.

The environment's dispatch rules (docs/physics.md): PV serves the load first
(``u = min(pv, load)``), the battery never charges and discharges in the same hour, never exports,
and charges from PV surplus before the grid. Where the EV load cannot change which of PV and load
is larger (``pv <= mall`` or ``pv >= mall + most EV``) PV-first is a linear equality and always
imposed. In the other hours:

- the LP objectives (everything but ``reward``) penalise every kWh imported (the peak objectives
  through a secondary weight, :data:`SECONDARY_IMPORT_WEIGHT`), and a tiny throughput weight
  (:data:`THROUGHPUT_WEIGHT`) breaks the ties: charging and discharging in the same hour,
  discharging while PV is curtailed, serving the load from the battery instead of PV, and grid
  charging while PV is curtailed can each be undone without raising any import while lowering the
  throughput, so none of them happens at the optimum;
- the ``reward`` MILP imposes them with binaries (``scipy.optimize.milp``): ``y_k`` for
  charge-xor-discharge (``cp + cg <= P y``, ``d <= P (1 - y)``) and ``z_k`` for PV-first
  (``u >= pv - (pv - mall) z``, ``u >= load - (mall + EVmax - pv)(1 - z)``). PV-first with the
  balance and ``g >= 0`` implies no export. Grid charging before PV surplus is left to dominance
  (swapping it for curtailed PV lowers the import and raises the PV used): it needs a positive
  weight on the solar term or on an import term (co2, cost, peak), which every preset has.
  A relaxation without these rules (``relax=True``) overstates the reward: e.g. with the battery
  full at midday it charges PV and discharges at once, burning PV as battery losses that the
  solar term counts as PV used.

The schedule becomes environment actions per step: sockets ``x / rating``; battery from the net
energy change ``dE = eta_c (cp + cg) - d / eta_d``: ``dE / eta_c / P`` when charging, ``dE eta_d /
P`` when discharging. Replayed through the environment (:func:`optimum_plan`, :func:`check_plan`)
it reproduces the solver's objective; :func:`check_optimum` measures the dispatch-rule violations
of the solver's flows.

The reward objective is a sum over :data:`REWARD_TERM_MODELS`, one linear model per reward term
(see :func:`reward_term`); a new linear term of the environment is one more entry there.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import scipy.optimize
import scipy.sparse

from oe3jax.control.sessions import Sessions, record_sessions
from oe3jax.control.site import Site
from oe3jax.simulation.calendar import month_of_hour
from oe3jax.simulation.env import EVENING_PEAK_HOURS
from oe3jax.simulation.episode import Schedule, run_episode
from oe3jax.simulation.profiles import HOURS_PER_YEAR

OBJECTIVES: dict[str, str] = {
    "grid": "grid import (kWh), hence CO2",
    "cost": "energy cost: tariff x import (grid charging allowed)",
    "monthly_peaks": "sum over billing months of the highest hourly import (kW)",
    "evening_peak": "highest hourly import 18:00-21:59 (kW)",
    "reward": "total reward of the configured weights (maximised; MILP)",
}
#: Objectives that give every vehicle its full-power energy (the others trade it).
FIXED_EV_OBJECTIVES = ("grid", "cost", "monthly_peaks", "evening_peak")

#: Weight per kWh of battery throughput (charge + discharge) that breaks ties, relative to the
#: objective's weight per kWh imported (see the module docstring). A storage cycle saves
#: ``eta`` kWh of import per ``1 + eta`` kWh of throughput, so any weight below ``eta / (1 + eta)``
#: times the import weight leaves the import optimal; 1e-6 changes the reported import by less
#: than 1e-6 times the throughput.
THROUGHPUT_WEIGHT = 1e-6
#: ``solve(tie_ramp=r)`` raises the throughput weight of step ``k`` to ``THROUGHPUT_WEIGHT * (1 +
#: min(r k, TIE_RAMP_CAP))``: of schedules equal in every other respect the solver then picks the
#: one that charges PV surplus and discharges earliest, which an MPC needs (an LP indifferent to
#: timing puts both off to the end of its plan, hour after hour, and then loses surplus to vehicles
#: it did not foresee). ``r = 1`` per hour keeps consecutive hours 1e-6 apart, above HiGHS's
#: optimality tolerance (1e-7); the cap keeps the weight (at most 1.01e-4 per kWh) below
#: ``eta / (1 + eta)`` times the smallest import weight (1e-3, the peak objectives' secondary).
TIE_RAMP_CAP = 100.0
#: Secondary weight per kWh imported in the peak objectives (per kW of peak), so that the
#: peak-optimal schedule is also import-optimal where that costs no peak: trading 1 kW of peak
#: for import would need a saving of 1,000 kWh per kW, far beyond what one battery cycle moves.
SECONDARY_IMPORT_WEIGHT = 1e-3
#: Default limits of the MILP: wall time (s) and relative gap at which HiGHS stops.
MILP_TIME_LIMIT_S = 600.0
MILP_REL_GAP = 1e-6


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: unknown {objective!r}; accepted: {', '.join(OBJECTIVES)}")
    return objective


# ----------------------------------------------------------------------------- the data of a horizon
@dataclasses.dataclass(frozen=True)
class Horizon:
    """What the solver knows about the steps it plans: hours, profiles, vehicles, the battery.

    ``t`` are hours of the year (one per step), ``pv_kw`` and ``mall_kw`` the (forecast) profiles
    of those hours, ``sessions`` the vehicles (steps relative to the first), ``energy0_kwh`` the
    battery energy before the first step. ``month_peak0_kw`` is the peak import already set in the
    billing month of the first step and ``evening_peak0_kw`` the evening peak already set (both 0
    for a whole episode; an MPC passes its record).
    """

    t: np.ndarray
    pv_kw: np.ndarray
    mall_kw: np.ndarray
    sessions: Sessions
    energy0_kwh: float
    month_peak0_kw: float = 0.0
    evening_peak0_kw: float = 0.0

    @property
    def steps(self) -> int:
        return int(self.t.shape[0])


def billing_periods(t: np.ndarray) -> np.ndarray:
    """Billing period of every step: consecutive steps of the same calendar month share one.

    For an episode inside one calendar year the periods are the months
    (``oe3jax.simulation.calendar``); a month met again after the year wraps is a new period.
    """
    month = month_of_hour()[np.asarray(t) % HOURS_PER_YEAR]
    change = np.r_[False, month[1:] != month[:-1]]
    return np.cumsum(change)


def evening_mask(t: np.ndarray) -> np.ndarray:
    h = np.asarray(t) % 24
    return (h >= EVENING_PEAK_HOURS[0]) & (h < EVENING_PEAK_HOURS[1])


def objective_value(objective: str, site: Site, t: np.ndarray, grid_import_kwh: np.ndarray,
                    reward: np.ndarray | None = None, month_peak0_kw: float = 0.0,
                    evening_peak0_kw: float = 0.0) -> float:
    """An objective's value from hourly imports (and rewards), in its natural units.

    ``grid`` kWh; ``cost`` currency; ``monthly_peaks`` and ``evening_peak`` kW (the prior peaks
    of an MPC's record included); ``reward`` the sum of ``reward``.
    """
    g = np.asarray(grid_import_kwh, np.float64)
    t = np.asarray(t)
    if objective == "grid":
        return float(g.sum())
    if objective == "cost":
        return float((site.tariff[t % 24] * g).sum())
    if objective == "monthly_peaks":
        period = billing_periods(t)
        peaks = np.zeros(int(period[-1]) + 1 if period.size else 0)
        if peaks.size:
            peaks[0] = month_peak0_kw
        np.maximum.at(peaks, period, g)
        return float(peaks.sum())
    if objective == "evening_peak":
        ev = evening_mask(t)
        return float(max(evening_peak0_kw, g[ev].max() if ev.any() else 0.0))
    if objective == "reward":
        if reward is None:
            raise ValueError("reward: the hourly rewards are needed for the reward objective")
        return float(np.asarray(reward, np.float64).sum())
    raise ValueError(f"objective: unknown {objective!r}; accepted: {', '.join(OBJECTIVES)}")


# ----------------------------------------------------------------------------- a sparse model
class _Model:
    """Variables with bounds, rows of ``A x = b`` and ``A x <= b``, a cost vector (minimised)."""

    def __init__(self) -> None:
        self.n = 0
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._int: list[np.ndarray] = []
        self._cost: list[tuple[np.ndarray, np.ndarray]] = []
        self._rows = {"eq": [0, [], [], [], []], "le": [0, [], [], [], []]}  # count, r, c, v, rhs

    def var(self, n: int, lb: Any = 0.0, ub: Any = np.inf, integer: bool = False) -> np.ndarray:
        idx = np.arange(self.n, self.n + n)
        self.n += n
        self._lb.append(np.broadcast_to(np.asarray(lb, np.float64), (n,)))
        self._ub.append(np.broadcast_to(np.asarray(ub, np.float64), (n,)))
        self._int.append(np.full(n, 1 if integer else 0, np.uint8))
        return idx

    def cost(self, idx: np.ndarray, val: Any) -> None:
        idx = np.asarray(idx)
        self._cost.append((idx, np.broadcast_to(np.asarray(val, np.float64), idx.shape)))

    def rows(self, kind: str, m: int, terms: list[tuple[np.ndarray, np.ndarray, Any]], rhs: Any) -> np.ndarray:
        """Add ``m`` rows: each term ``(row, col, val)`` with ``row`` in ``0..m-1``; returns their ids."""
        block = self._rows[kind]
        base = block[0]
        for r, c, v in terms:
            r = np.asarray(r)
            block[1].append(base + r)
            block[2].append(np.asarray(c))
            block[3].append(np.broadcast_to(np.asarray(v, np.float64), r.shape))
        block[4].append(np.broadcast_to(np.asarray(rhs, np.float64), (m,)))
        block[0] += m
        return np.arange(base, base + m)

    def matrices(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, (m, r, c, v, rhs) in self._rows.items():
            cat = lambda xs, dt=np.float64: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
            out[kind] = (scipy.sparse.csr_matrix((cat(v), (cat(r, np.int64), cat(c, np.int64))), shape=(m, self.n)),
                         cat(rhs))
        c = np.zeros(self.n)
        for idx, val in self._cost:
            np.add.at(c, idx, val)
        out["c"] = c
        out["lb"] = np.concatenate(self._lb) if self._lb else np.zeros(0)
        out["ub"] = np.concatenate(self._ub) if self._ub else np.zeros(0)
        out["integrality"] = np.concatenate(self._int) if self._int else np.zeros(0, np.uint8)
        return out


@dataclasses.dataclass
class TermContext:
    """What a reward term's model sees: the model, the site, the horizon and the variable handles.

    Handles are index arrays into the model's variables: per step ``u``, ``cp``, ``cg``, ``d``,
    ``g``, ``E``; per (session, plugged step) ``x`` with ``x_step``, ``x_session``. ``reward(idx,
    coef)`` adds ``sum coef * var`` to the reward (the model minimises its negative).
    """

    model: _Model
    site: Site
    horizon: Horizon
    v: dict[str, np.ndarray]
    x_step: np.ndarray
    x_session: np.ndarray
    ev_max_kwh: np.ndarray
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.horizon.steps

    @property
    def hour_of_day(self) -> np.ndarray:
        return np.asarray(self.horizon.t) % 24

    def reward(self, idx: np.ndarray, coef: Any) -> None:
        self.model.cost(idx, -np.asarray(coef, np.float64))

    def import_upper_bound(self) -> np.ndarray:
        """The most import each step can have: the load PV leaves (EV at its most) + grid charging."""
        pv, mall = self.horizon.pv_kw, self.horizon.mall_kw
        return np.maximum(mall + self.ev_max_kwh - np.minimum(pv, mall), 0.0) + self.site.power_kw

    def month_peaks(self) -> np.ndarray:
        """One variable per billing period, ``>=`` every import of the period and the prior month
        peak; shared by every term and objective that asks (created on first use)."""
        if "month_peaks" not in self._cache:
            period = billing_periods(self.horizon.t)
            n_p = int(period[-1]) + 1
            lb = np.zeros(n_p)
            lb[0] = self.horizon.month_peak0_kw
            m_var = self.model.var(n_p, lb=lb)
            k = np.arange(self.steps)
            self.model.rows("le", self.steps, [(k, self.v["g"], 1.0), (k, m_var[period], -1.0)], 0.0)
            self._cache["month_peaks"] = m_var
        return self._cache["month_peaks"]

    def evening_peak(self) -> np.ndarray | None:
        """One variable ``>=`` every evening import and the prior evening peak (None without evening)."""
        if "evening_peak" not in self._cache:
            ev = np.nonzero(evening_mask(self.horizon.t))[0]
            if ev.size == 0:
                self._cache["evening_peak"] = None
            else:
                p = self.model.var(1, lb=self.horizon.evening_peak0_kw)
                r = np.arange(ev.size)
                self.model.rows("le", ev.size, [(r, self.v["g"][ev], 1.0), (r, np.repeat(p, ev.size), -1.0)], 0.0)
                self._cache["evening_peak"] = p
        return self._cache["evening_peak"]


# ----------------------------------------------------------------------------- reward terms
#: A reward term's linear model: ``term(ctx, weight) -> constant``. It adds ``weight`` times the
#: term's hourly values, summed over the horizon, to the reward through ``ctx.reward`` (adding
#: variables and rows if it needs them) and returns the part that no variable carries.
RewardTerm = Callable[[TermContext, float], float]


def _co2(ctx: TermContext, w: float) -> float:
    """``-import / grid_ref_kw`` each hour."""
    ctx.reward(ctx.v["g"], -w / ctx.site.grid_ref_kw)
    return 0.0


def _cost(ctx: TermContext, w: float) -> float:
    """``-import * tariff[h] / (grid_ref_kw * max(tariff))`` each hour."""
    s = ctx.site
    ctx.reward(ctx.v["g"], -w * s.tariff[ctx.hour_of_day] / (s.grid_ref_kw * s.tariff.max()))
    return 0.0


def _solar(ctx: TermContext, w: float) -> float:
    """``(pv_used - pv_curtailed) / pv_ac_kw = (2 (u + cp) - pv) / pv_ac_kw`` each hour."""
    a = 2.0 * w / ctx.site.pv_ac_kw
    ctx.reward(ctx.v["u"], a)
    ctx.reward(ctx.v["cp"], a)
    return -w * float(np.sum(ctx.horizon.pv_kw)) / ctx.site.pv_ac_kw


def _ev(ctx: TermContext, w: float) -> float:
    """``(ev - unmet) / ev_installed_kw`` each hour; unmet = need - delivered of a session that
    departs (at its last step). Exact while no hour's unmet exceeds its EV energy plus the
    installed EV power (the environment clips the term at -1 there; the replay would show it)."""
    s = ctx.horizon.sessions
    a = w / ctx.site.ev_installed_kw
    departs = s.departing
    ctx.reward(np.arange(ctx.x_step.size), a * (1.0 + departs[ctx.x_session]))
    return -a * float(np.sum(s.need_kwh[departs]))


def _peak(ctx: TermContext, w: float) -> float:
    """``-max(import - peak_threshold_kw, 0) / (grid_ref_kw - peak_threshold_kw)`` each hour
    (an epigraph variable per hour whose import can pass the threshold)."""
    s = ctx.site
    hours = np.nonzero(ctx.import_upper_bound() > s.peak_threshold_kw)[0]
    if hours.size:
        p = ctx.model.var(hours.size)
        r = np.arange(hours.size)
        ctx.model.rows("le", hours.size, [(r, ctx.v["g"][hours], 1.0), (r, p, -1.0)], s.peak_threshold_kw)
        ctx.reward(p, -w / (s.grid_ref_kw - s.peak_threshold_kw))
    return 0.0


def _demand(ctx: TermContext, w: float) -> float:
    """``-(max(import, month_peak) - month_peak) / grid_ref_kw`` each hour, where ``month_peak`` is
    the month-to-date peak import: over a billing month the terms add to ``-peak_m / grid_ref_kw``,
    so the model is the monthly-peak epigraph variables (docs/physics.md)."""
    ctx.reward(ctx.month_peaks(), -w / ctx.site.grid_ref_kw)
    return 0.0


#: The linear model of every reward term, by the environment's term name; a term the environment
#: adds later is one entry here.
REWARD_TERM_MODELS: dict[str, RewardTerm] = {
    "co2": _co2,
    "cost": _cost,
    "solar": _solar,
    "ev": _ev,
    "peak": _peak,
    "demand": _demand,
}


def reward_term(name: str) -> Callable[[RewardTerm], RewardTerm]:
    """Decorator that registers the linear model of a reward term under ``name``."""
    def register(fn: RewardTerm) -> RewardTerm:
        REWARD_TERM_MODELS[name] = fn
        return fn
    return register


# ----------------------------------------------------------------------------- the solution
@dataclasses.dataclass
class Optimum:
    """A solved horizon: the objective, the schedule and its hourly flows (kWh, one per step)."""

    objective: str
    value: float  # the objective of the solver's schedule, natural units (see objective_value)
    bound: float  # the best bound HiGHS proved (= value for an LP solved to optimality)
    t: np.ndarray
    grid_import_kwh: np.ndarray
    pv_kwh: np.ndarray
    pv_to_load_kwh: np.ndarray
    pv_to_bess_kwh: np.ndarray
    grid_to_bess_kwh: np.ndarray
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
    n_integers: int = 0
    relaxed: bool = False

    @property
    def gap(self) -> float:
        """Relative distance between the value and the proved bound (0 for an optimal LP)."""
        return abs(self.bound - self.value) / max(abs(self.value), 1e-12)

    def totals(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "value": self.value,
            "bound": self.bound,
            "gap": self.gap,
            "grid_import_kwh": float(self.grid_import_kwh.sum()),
            "pv_used_kwh": float((self.pv_to_load_kwh + self.pv_to_bess_kwh).sum()),
            "pv_curtailed_kwh": float(self.pv_curtailed_kwh.sum()),
            "ev_delivered_kwh": float(self.ev_kwh.sum()),
            "bess_charge_kwh": float(self.bess_charge_kwh.sum()),
            "bess_discharge_kwh": float(self.bess_discharge_kwh.sum()),
            "grid_to_bess_kwh": float(self.grid_to_bess_kwh.sum()),
            "solve_seconds": self.solve_seconds,
        }


def battery_action(site: Site, charge_kwh: np.ndarray, discharge_kwh: np.ndarray) -> np.ndarray:
    """The battery action (fraction of ``power_kw``) that moves the same net energy as a charge
    and a discharge in one hour: the environment never does both (see the module docstring)."""
    de = site.eta_charge * np.asarray(charge_kwh) - np.asarray(discharge_kwh) / site.eta_discharge
    return np.clip(np.where(de >= 0.0, de / site.eta_charge, de * site.eta_discharge) / site.power_kw, -1.0, 1.0)


# ----------------------------------------------------------------------------- the solver
def solve(site: Site, horizon: Horizon, objective: str = "grid", *, relax: bool = False,
          time_limit_s: float | None = None, mip_rel_gap: float = MILP_REL_GAP, tie_ramp: float = 0.0) -> Optimum:
    """The best schedule of ``horizon`` for ``objective`` (HiGHS; see the module docstring).

    ``relax=True`` (only for ``reward``) drops the dispatch rules (binaries and PV-first
    equalities): the LP relaxation, an upper bound that overstates the reward. ``time_limit_s``
    bounds the solve (default: none for LPs, :data:`MILP_TIME_LIMIT_S` for the MILP), which then
    returns its best schedule with ``bound``/``gap`` saying how far from optimal it may be.
    ``tie_ramp`` (per step, >= 0) makes the tie-breaking prefer early battery use (see
    :data:`TIE_RAMP_CAP`); the MPC uses 1.
    """
    _check_solve_args(objective, relax, time_limit_s, tie_ramp, mip_rel_gap)
    _check_horizon(horizon)
    milp = objective == "reward" and not relax
    ctx = _variables(site, horizon, relax)
    _physics_rows(ctx, relax)
    _session_rows(ctx, objective)
    n_int = _dispatch_binaries(ctx) if milp else 0
    constant = _objective_costs(ctx, objective, tie_ramp)
    run = _run_highs(ctx.model, objective, milp, time_limit_s, mip_rel_gap, horizon.steps)
    return _optimum(ctx, objective, relax, run, constant, n_int)


def _check_solve_args(objective: str, relax: bool, time_limit_s: float | None, tie_ramp: float,
                      mip_rel_gap: float) -> None:
    check_objective(objective)
    if relax and objective != "reward":
        raise ValueError(f"relax: only the reward objective has dispatch rules to relax, not {objective!r}")
    if time_limit_s is not None and not time_limit_s > 0:
        raise ValueError(f"time_limit_s: expected a positive number of seconds, got {time_limit_s!r}")
    if not (np.isfinite(tie_ramp) and tie_ramp >= 0.0):
        raise ValueError(f"tie_ramp: expected a number >= 0, got {tie_ramp!r}")
    if not 0.0 <= mip_rel_gap < 1.0:
        raise ValueError(f"mip_rel_gap: expected a number in [0, 1), got {mip_rel_gap!r}")


def _check_horizon(hz: Horizon) -> None:
    pv, mall, steps = np.asarray(hz.pv_kw, np.float64), np.asarray(hz.mall_kw, np.float64), hz.steps
    if steps < 1 or pv.shape != (steps,) or mall.shape != (steps,):
        raise ValueError(f"horizon: expected pv_kw and mall_kw of {steps} (>= 1) values like t, "
                         f"got shapes {pv.shape} and {mall.shape}")
    if np.any(pv < 0) or np.any(mall < 0) or not (np.all(np.isfinite(pv)) and np.all(np.isfinite(mall))):
        raise ValueError("horizon: pv_kw and mall_kw must be finite and >= 0")
    s = hz.sessions
    if np.any(s.stop - s.start < 1) or np.any(s.start < 0) or np.any(s.stop > steps):
        raise ValueError(f"sessions: expected 0 <= start < stop <= {steps}")


def _member_rows(members: np.ndarray, n: int, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows for a subset of owners (steps or sessions): for every variable whose owner is one of
    ``members`` (``owner`` maps variables to owners ``0..n-1``), its row ``0..members.size-1``;
    returns (rows, mask of those variables)."""
    pos = np.full(n, -1)
    pos[members] = np.arange(members.size)
    sel = pos[owner] >= 0
    return pos[owner[sel]], sel


def _pv_order(ctx: TermContext) -> tuple[np.ndarray, np.ndarray]:
    """Steps where the EV load cannot change the order of PV and load: PV short of the mall
    (``u = pv``, nothing to store) and PV ample for the mall and every vehicle (``u = load``)."""
    pv, mall = ctx.horizon.pv_kw, ctx.horizon.mall_kw
    return pv <= mall, pv >= mall + ctx.ev_max_kwh


def _variables(site: Site, hz: Horizon, relax: bool) -> TermContext:
    """The model's variables (see the module docstring), in a :class:`TermContext`."""
    hz = dataclasses.replace(hz, pv_kw=np.asarray(hz.pv_kw, np.float64), mall_kw=np.asarray(hz.mall_kw, np.float64),
                             t=np.asarray(hz.t))
    s, steps, ratings, p_kw = hz.sessions, hz.steps, site.ratings_kw, site.power_kw
    m = _Model()
    lengths = s.stop - s.start
    x_session = np.repeat(np.arange(s.n), lengths)
    x_step = (np.concatenate([np.arange(a, b) for a, b in zip(s.start, s.stop)]) if s.n
              else np.zeros(0, np.int64))
    x_rating = ratings[s.socket[x_session]]
    x = m.var(x_step.size, 0.0, x_rating)
    ev_max = np.zeros(steps)
    np.add.at(ev_max, x_step, x_rating)
    fix_short = (hz.pv_kw <= hz.mall_kw) & (not relax)
    v = {"x": x}
    v["u"] = m.var(steps, np.where(fix_short, hz.pv_kw, 0.0), hz.pv_kw)
    v["cp"] = m.var(steps, 0.0, np.where(fix_short, 0.0, p_kw))
    v["cg"] = m.var(steps, 0.0, p_kw)
    v["d"] = m.var(steps, 0.0, p_kw)
    v["g"] = m.var(steps, 0.0, np.inf)
    v["E"] = m.var(steps, site.e_min_kwh, site.e_max_kwh)
    return TermContext(m, site, hz, v, x_step, x_session, ev_max)


def _physics_rows(ctx: TermContext, relax: bool) -> None:
    """Energy balance, PV split, battery power and energy, and PV-first where it is linear."""
    m, hz, v, site = ctx.model, ctx.horizon, ctx.v, ctx.site
    steps, x_step = hz.steps, ctx.x_step
    k = np.arange(steps)
    u, cp, cg, d, g, e, x = v["u"], v["cp"], v["cg"], v["d"], v["g"], v["E"], v["x"]
    m.rows("eq", steps, [(k, u, 1.0), (k, g, 1.0), (k, d, 1.0), (k, cg, -1.0), (x_step, x, -1.0)], hz.mall_kw)
    m.rows("le", steps, [(k, u, 1.0), (k, cp, 1.0)], hz.pv_kw)
    m.rows("le", steps, [(k, u, 1.0), (x_step, x, -1.0)], hz.mall_kw)  # PV to load at most the load
    m.rows("le", steps, [(k, cp, 1.0), (k, cg, 1.0)], site.power_kw)
    rhs = np.zeros(steps)
    rhs[0] = hz.energy0_kwh
    m.rows("eq", steps, [(k, e, 1.0), (k[1:], e[:-1], -1.0), (k, cp, -site.eta_charge), (k, cg, -site.eta_charge),
                         (k, d, 1.0 / site.eta_discharge)], rhs)
    if not relax:
        pv_short, pv_ample = _pv_order(ctx)
        ample = np.nonzero(pv_ample & ~pv_short)[0]
        if ample.size:
            rows, sel = _member_rows(ample, steps, x_step)
            m.rows("eq", ample.size, [(np.arange(ample.size), u[ample], 1.0), (rows, x[sel], -1.0)], hz.mall_kw[ample])


def _session_rows(ctx: TermContext, objective: str) -> None:
    """What each vehicle session may receive: its uncontrolled energy exactly under the objectives
    that fix EV energy, anything up to the most it can take under the reward."""
    m, s, x, x_session = ctx.model, ctx.horizon.sessions, ctx.v["x"], ctx.x_session
    most = np.minimum(s.need_kwh, ctx.site.ratings_kw[s.socket] * (s.stop - s.start))
    if objective in FIXED_EV_OBJECTIVES:
        least = np.minimum(np.asarray(s.energy_kwh, np.float64), most)
    else:
        least = np.zeros(s.n)
    fixed = least >= most
    for kind, members, sign, rhs in (("eq", np.nonzero(fixed)[0], 1.0, most),
                                     ("le", np.nonzero(~fixed)[0], 1.0, most),
                                     ("le", np.nonzero(~fixed & (least > 0))[0], -1.0, -least)):
        rows, sel = _member_rows(members, s.n, x_session)
        m.rows(kind, members.size, [(rows, x[sel], sign)], rhs[members])


def _dispatch_binaries(ctx: TermContext) -> int:
    """The environment's dispatch rules with binaries (the reward MILP); returns their number."""
    m, hz, v, p_kw = ctx.model, ctx.horizon, ctx.v, ctx.site.power_kw
    steps, pv, mall = hz.steps, hz.pv_kw, hz.mall_kw
    k = np.arange(steps)
    y = m.var(steps, 0.0, 1.0, integer=True)  # charge xor discharge
    m.rows("le", steps, [(k, v["cp"], 1.0), (k, v["cg"], 1.0), (k, y, -p_kw)], 0.0)
    m.rows("le", steps, [(k, v["d"], 1.0), (k, y, p_kw)], p_kw)
    pv_short, pv_ample = _pv_order(ctx)
    amb = np.nonzero(~pv_short & ~pv_ample)[0]
    if amb.size:  # PV first where the EV load decides the order of PV and load
        z = m.var(amb.size, 0.0, 1.0, integer=True)
        r = np.arange(amb.size)
        m1 = pv[amb] - mall[amb]
        m2 = mall[amb] + ctx.ev_max_kwh[amb] - pv[amb]
        # u >= pv - m1 z
        m.rows("le", amb.size, [(r, v["u"][amb], -1.0), (r, z, -m1)], -pv[amb])
        # u >= mall + EV - m2 (1 - z)
        rows, sel = _member_rows(amb, steps, ctx.x_step)
        m.rows("le", amb.size, [(r, v["u"][amb], -1.0), (rows, v["x"][sel], 1.0), (r, z, m2)], m2 - mall[amb])
    return steps + amb.size


def _objective_costs(ctx: TermContext, objective: str, tie_ramp: float) -> float:
    """The objective's costs, and the throughput tie-break; returns the reward's constant part."""
    m, site, v = ctx.model, ctx.site, ctx.v
    g = v["g"]
    constant = 0.0
    if objective == "grid":
        m.cost(g, 1.0)
        tie = THROUGHPUT_WEIGHT
    elif objective == "cost":
        m.cost(g, site.tariff[ctx.horizon.t % 24])
        tie = THROUGHPUT_WEIGHT * float(np.mean(site.tariff))
    elif objective == "monthly_peaks":
        m.cost(ctx.month_peaks(), 1.0)
        m.cost(g, SECONDARY_IMPORT_WEIGHT)
        tie = THROUGHPUT_WEIGHT
    elif objective == "evening_peak":
        p = ctx.evening_peak()
        if p is not None:
            m.cost(p, 1.0)
        m.cost(g, SECONDARY_IMPORT_WEIGHT)
        tie = THROUGHPUT_WEIGHT
    else:  # reward
        tie = 0.0
        for name, w in site.weights.items():
            if w == 0.0:
                continue
            if name not in REWARD_TERM_MODELS:
                raise ValueError(f"reward term {name!r} (weight {w}) has no linear model; accepted: "
                                 f"{', '.join(REWARD_TERM_MODELS)} (add one to REWARD_TERM_MODELS)")
            constant += REWARD_TERM_MODELS[name](ctx, w)
    if tie:  # with tie_ramp, rising over the plan: of equal schedules, the one using the battery earliest
        ramp = tie * (1.0 + np.minimum(tie_ramp * np.arange(ctx.steps), TIE_RAMP_CAP))
        for name in ("cp", "cg", "d"):
            m.cost(v[name], ramp)
    return constant


@dataclasses.dataclass(frozen=True)
class _Run:
    mats: dict[str, Any]
    x: np.ndarray
    message: str
    dual: float | None
    seconds: float


def _run_highs(m: _Model, objective: str, milp: bool, time_limit_s: float | None, mip_rel_gap: float,
               steps: int) -> _Run:
    mats = m.matrices()
    a_eq, b_eq = mats["eq"]
    a_ub, b_ub = mats["le"]
    tic = time.perf_counter()
    if milp:
        limit = MILP_TIME_LIMIT_S if time_limit_s is None else float(time_limit_s)
        constraints = [scipy.optimize.LinearConstraint(a_eq, b_eq, b_eq)]
        if a_ub.shape[0]:
            constraints.append(scipy.optimize.LinearConstraint(a_ub, -np.inf, b_ub))
        res = scipy.optimize.milp(
            mats["c"], integrality=mats["integrality"], bounds=scipy.optimize.Bounds(mats["lb"], mats["ub"]),
            constraints=constraints, options={"time_limit": limit, "mip_rel_gap": mip_rel_gap, "disp": False},
        )
        solved = res.x is not None and res.status in (0, 1)
        dual = getattr(res, "mip_dual_bound", None)
    else:
        options = {} if time_limit_s is None else {"time_limit": float(time_limit_s)}
        res = scipy.optimize.linprog(
            mats["c"], A_ub=a_ub if a_ub.shape[0] else None, b_ub=b_ub if a_ub.shape[0] else None,
            A_eq=a_eq, b_eq=b_eq, bounds=np.stack([mats["lb"], mats["ub"]], axis=1), method="highs",
            options=options,
        )
        solved = res.status == 0
        dual = None
    seconds = time.perf_counter() - tic
    if not solved:
        raise RuntimeError(f"{objective} optimum not solved ({steps} steps): {res.message}")
    return _Run(mats, res.x, str(res.message), dual, seconds)


def _optimum(ctx: TermContext, objective: str, relax: bool, run: _Run, constant: float, n_int: int) -> Optimum:
    """The solution as hourly flows, environment actions and the objective's value."""
    site, hz, v, sol = ctx.site, ctx.horizon, ctx.v, run.x
    flow = {name: np.clip(sol[v[name]], 0.0, None) for name in ("x", "u", "cp", "cg", "d", "g")}
    socket_kwh = np.zeros((hz.steps, site.n_sockets))
    np.add.at(socket_kwh, (ctx.x_step, hz.sessions.socket[ctx.x_session]), flow["x"])
    actions = np.zeros((hz.steps, 1 + site.n_sockets))
    actions[:, 0] = battery_action(site, flow["cp"] + flow["cg"], flow["d"])
    actions[:, 1:] = np.clip(socket_kwh / site.ratings_kw[None, :], 0.0, 1.0)
    if objective == "reward":
        value = float(-run.mats["c"] @ sol + constant)
        bound = value if relax or run.dual is None or not np.isfinite(run.dual) else float(-run.dual + constant)
    else:
        value = objective_value(objective, site, hz.t, flow["g"], month_peak0_kw=hz.month_peak0_kw,
                                evening_peak0_kw=hz.evening_peak0_kw)
        bound = value
    pv, us, cps, cgs = hz.pv_kw, flow["u"], flow["cp"], flow["cg"]
    return Optimum(
        objective=objective, value=value, bound=bound, t=hz.t, grid_import_kwh=flow["g"], pv_kwh=pv,
        pv_to_load_kwh=us, pv_to_bess_kwh=cps, grid_to_bess_kwh=cgs,
        pv_curtailed_kwh=np.maximum(pv - us - cps, 0.0), mall_kwh=hz.mall_kw, ev_kwh=socket_kwh.sum(axis=1),
        bess_charge_kwh=cps + cgs, bess_discharge_kwh=flow["d"], energy_kwh=sol[v["E"]], socket_kwh=socket_kwh,
        actions=actions, solve_seconds=run.seconds, status=run.message, n_variables=ctx.model.n,
        n_constraints=int(run.mats["eq"][0].shape[0] + run.mats["le"][0].shape[0]), n_integers=n_int,
        relaxed=relax,
    )


# ----------------------------------------------------------------------------- checks
#: Flows above this (kWh) count as a dispatch-rule violation: far above the solver's feasibility
#: tolerance (1e-7 relative), far below anything that moves a KPI.
VIOLATION_TOL_KWH = 1e-4


def check_optimum(opt: Optimum) -> dict[str, float]:
    """Worst violations (kWh) of the environment's dispatch rules in the solver's own flows.

    - ``simultaneous``: ``max_k min(charge_k, discharge_k)``;
    - ``pv_first``: ``max_k min(curtailed_k, load_k - u_k)``: PV curtailed while part of the load
      is served by the grid or the battery;
    - ``export``: ``max_k (discharge_k - max(load_k - pv_k, 0))`` (discharge above the net load);
    - ``grid_before_pv``: ``max_k min(cg_k, curtailed_k)``: grid charging while PV is curtailed.

    PV to the battery with the grid serving the load is the same flow as PV to the load with the
    grid charging the battery (the environment's accounting): not a violation. All four are 0 up to
    the solver's tolerance at the optima (:data:`VIOLATION_TOL_KWH`).
    """
    load = opt.mall_kwh + opt.ev_kwh
    curtailed = opt.pv_kwh - opt.pv_to_load_kwh - opt.pv_to_bess_kwh
    return {
        "simultaneous": float(np.max(np.minimum(opt.bess_charge_kwh, opt.bess_discharge_kwh), initial=0.0)),
        "pv_first": float(np.max(np.minimum(curtailed, load - opt.pv_to_load_kwh), initial=0.0)),
        "export": float(np.max(opt.bess_discharge_kwh - np.maximum(load - opt.pv_kwh, 0.0), initial=0.0)),
        "grid_before_pv": float(np.max(np.minimum(opt.grid_to_bess_kwh, curtailed), initial=0.0)),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class Plan(Schedule):
    """An optimum as a policy: its schedule of actions (a :class:`Schedule`) and the solution."""

    optimum: Optimum | None = None

    @property
    def info(self) -> dict[str, Any]:
        o = self.optimum
        if o is None:
            return {}
        return {**o.totals(), "status": o.status, "n_variables": o.n_variables,
                "n_constraints": o.n_constraints, "n_integers": o.n_integers}


def episode_horizon(env: Any, params: Any, key: jax.Array, hours: int | None = None) -> tuple[Horizon, dict[str, Any]]:
    """The perfect-foresight horizon of the episode ``key`` draws (vehicles from one uncontrolled
    run, shared through :func:`~oe3jax.control.sessions.record_sessions`) and that run's trace."""
    sessions, trace = record_sessions(env, params, key, hours)
    t = np.asarray(trace["t"])
    year = np.asarray(trace["year"])
    hz = Horizon(
        t=t,
        pv_kw=np.asarray(params.pv_kw, np.float64)[year, t],
        mall_kw=np.asarray(params.mall_kw, np.float64)[year, t],
        sessions=sessions,
        energy0_kwh=float(trace["energy_kwh"][0]),
    )
    return hz, trace


def optimum_plan(env: Any, params: Any, key: jax.Array, hours: int | None = None, objective: str = "grid",
                 **options: Any) -> Plan:
    """The perfect-foresight optimum of the episode ``key`` draws, as a replayable policy.

    ``options`` go to :func:`solve` (``time_limit_s``, ``mip_rel_gap``, ``relax``).
    """
    check_objective(objective)
    hz, _ = episode_horizon(env, params, key, hours)
    opt = solve(Site.from_env(env, params), hz, objective, **options)
    return Plan(opt.actions.astype(np.float32), opt)


#: Tolerances of :func:`check_plan` (replayed objective against the solver's): relative to the
#: objective, plus an absolute floor per objective for the environment's float32 arithmetic.
CHECK_RTOL = 1e-7
CHECK_ATOL = {"grid": 1e-2, "cost": 1e-2, "monthly_peaks": 1e-2, "evening_peak": 1e-3, "reward": 1e-4}


def check_plan(env: Any, params: Any, key: jax.Array, plan: Plan, hours: int | None = None,
               trace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replay an optimum through the environment and compare it with the solver.

    Returns the solver's value, the replayed value (computed from the environment's hourly flows
    and rewards by :func:`objective_value`), their difference, the tolerance
    ``CHECK_RTOL * |value| + CHECK_ATOL[objective]``, the dispatch-rule violations of the solver's
    flows (:func:`check_optimum`), the largest hourly import difference (kWh), the EV energy
    per session short of the full-power energy (kWh; objectives that fix it) and ``ok``.
    """
    opt = plan.optimum
    if opt is None:
        raise ValueError("plan: expected a Plan made by optimum_plan (it carries the solution)")
    hours = opt.t.shape[0] if hours is None else hours
    if trace is None:
        trace = run_episode(env, params, plan, key, hours)
    site = Site.from_env(env, params)
    g = np.asarray(trace["flows"]["grid_import"], np.float64)
    replayed = objective_value(opt.objective, site, trace["t"], g, trace["reward"])
    tol = CHECK_RTOL * abs(opt.value) + CHECK_ATOL[opt.objective]
    violations = check_optimum(opt)
    sessions, _ = record_sessions(env, params, key, hours)
    delivered = session_energy(trace, site.ratings_kw, sessions)
    short = float(np.max(sessions.energy_kwh - delivered, initial=0.0))
    out = {
        "objective": opt.objective,
        "solver": opt.value,
        "replayed": replayed,
        "difference": replayed - opt.value,
        "tolerance": tol,
        "max_hourly_import_difference_kwh": float(np.max(np.abs(g - opt.grid_import_kwh), initial=0.0)),
        "violations_kwh": violations,
        "ev_short_kwh": short,
    }
    ev_ok = opt.objective not in FIXED_EV_OBJECTIVES or short <= 1e-3
    out["ok"] = bool(abs(replayed - opt.value) <= tol and max(violations.values()) <= VIOLATION_TOL_KWH and ev_ok)
    return out


def session_energy(trace: Mapping[str, Any], ratings_kw: np.ndarray, sessions: Sessions) -> np.ndarray:
    """Energy each session received in a trace (kWh): the socket's delivery over its steps,
    ``min(max(action, 0) * rating, need)`` while plugged, as the step computes it."""
    a = np.clip(np.nan_to_num(np.asarray(trace["action"], np.float64)[:, 1:]), 0.0, 1.0)
    need = np.asarray(trace["need_kwh"], np.float64)
    occ = np.asarray(trace["occupied"], bool)
    delivered = np.where(occ, np.minimum(a * ratings_kw[None, :], need), 0.0)
    csum = np.vstack([np.zeros((1, delivered.shape[1])), np.cumsum(delivered, axis=0)])
    return csum[sessions.stop, sessions.socket] - csum[sessions.start, sessions.socket]


def optimal_policy(env: Any, params: Any, key: jax.Array, hours: int | None = None,
                   objective: str = "grid", **options: Any) -> tuple[Plan, Optimum, dict[str, Any]]:
    """``(plan, optimum, uncontrolled trace)``: :func:`optimum_plan` plus the uncontrolled run
    that recorded the vehicles (the uncontrolled column of a comparison, for free)."""
    plan = optimum_plan(env, params, key, hours, objective, **options)
    _, trace = record_sessions(env, params, key, hours)
    return plan, plan.optimum, trace
