"""Rule-based controllers: uncontrolled charging, the evening, greedy and ratchet rules.

Every controller is a jittable ``act(obs, state, params) -> action`` with the environment's action
layout ``[battery, socket_0, ..., socket_{n-1}]`` in ``[-1, 1]`` (battery: + charge, - discharge,
as a fraction of its power rating; sockets: fraction of their rating). The rules read the hour,
PV and mall load from the state and params, and charge every plugged vehicle at full power.

- :func:`uncontrolled`: vehicles at full power, battery idle.
- :func:`make_rule_based` (the evening rule): PV surplus into the battery (never grid energy),
  discharge at full rating in the evening (18:00-22:59 by default).
- :func:`make_greedy` (the greedy rule): PV surplus into the battery, discharge whenever there is
  net load, at any hour. The step caps every discharge at the load PV leaves and at the SOC
  window, so the battery never exports.
- :func:`make_ratchet` (the ratchet rule, for a demand charge): PV surplus into the battery; by
  day it holds the import at the month-to-date peak (at least a floor), at night it discharges.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from oe3jax.control.site import socket_ratings_kw
from oe3jax.simulation.env import mall_peak_kw
from oe3jax.simulation.episode import Schedule
from oe3jax.simulation.scenario import Scenario

Act = Callable[[jax.Array, Any, Any], jax.Array]

#: Hours of day in which the evening rule discharges: 18:00-22:59, the evening peak of the site
#: (18:00-21:59, ``oe3jax.simulation.env.EVENING_PEAK_HOURS``) and the hour after it, which
#: together make the high-price block of the time-of-use tariff.
RULE_DISCHARGE_HOURS: tuple[int, ...] = (18, 19, 20, 21, 22)

#: Relative margin under the PV surplus at which the rules charge, so that float32 rounding in the
#: step can never turn a PV charge into a (tiny) grid charge.
_SURPLUS_MARGIN_FRAC = 1e-5


def uncontrolled(obs: jax.Array, state: Any, params: Any) -> jax.Array:
    """Every socket at full power (a free socket delivers nothing); battery idle."""
    n_sockets = state.occupied.shape[-1]
    return jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.ones((n_sockets,), jnp.float32)])


def uncontrolled_schedule(scenario: Scenario, hours: int) -> Schedule:
    """:func:`uncontrolled` as a :class:`Schedule` (it does not depend on the state): same actions."""
    actions = np.ones((hours, 1 + scenario.n_sockets), np.float32)
    actions[:, 0] = 0.0
    return Schedule(actions)


def schedule_policy(actions: np.ndarray) -> Schedule:
    """A policy that plays a fixed schedule: action ``actions[k]`` at step ``k`` of the episode."""
    return Schedule(np.asarray(actions, np.float32))


def _net_load_full_power(ratings: jax.Array, state: Any, params: Any) -> jax.Array:
    """The hour's ``mall + EV - PV`` (kWh) with every plugged vehicle at full power
    (``sum_i min(rating_i, need_i)``)."""
    ev_kwh = jnp.sum(jnp.where(state.occupied, jnp.minimum(ratings, state.need_kwh), 0.0))
    return params.mall_kw[state.year, state.t] + ev_kwh - params.pv_kw[state.year, state.t]


def _surplus_charge(net_kwh: jax.Array, power_kw: float) -> jax.Array:
    """The battery action that stores a PV surplus (a negative net load), capped at the rating,
    less a 1e-5 relative margin against rounding; 0 without a surplus."""
    return jnp.minimum(jnp.maximum(-net_kwh, 0.0), power_kw) / power_kw * (1.0 - _SURPLUS_MARGIN_FRAC)


def _with_sockets_at_full_power(battery: jax.Array, ratings: jax.Array) -> jax.Array:
    """The action ``[battery, 1, ..., 1]``: every socket at its full rating."""
    return jnp.concatenate([battery[None].astype(jnp.float32), jnp.ones(ratings.shape, jnp.float32)])


def _hour_mask(hours: Sequence[int], field: str) -> jax.Array:
    """A boolean mask over the 24 hours of the day, true at ``hours`` (checked: integers 0..23)."""
    mask = np.zeros(24, bool)
    for h in hours:
        if not (isinstance(h, (int, np.integer)) and not isinstance(h, bool) and 0 <= h < 24):
            raise ValueError(f"{field}: expected hours of day in 0..23, got {h!r}")
        mask[h] = True
    return jnp.asarray(mask)


def make_rule_based(scenario: Scenario, discharge_hours: Sequence[int] = RULE_DISCHARGE_HOURS) -> Act:
    """The evening rule: PV surplus into the battery, battery out in ``discharge_hours``.

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
    discharge_j = _hour_mask(discharge_hours, "discharge_hours")

    def act(obs: jax.Array, state: Any, params: Any) -> jax.Array:
        net_kwh = _net_load_full_power(ratings, state, params)
        battery = jnp.where(net_kwh < 0.0, _surplus_charge(net_kwh, power_kw),
                            jnp.where(discharge_j[state.t % 24], -1.0, 0.0))
        return _with_sockets_at_full_power(battery, ratings)

    return act


#: The ratchet rule's defaults: hours at which it holds the import (09:00-22:59) and its floor, a
#: fraction of the mall's annual peak (chosen on the training year syn3 of iquitos-128).
RATCHET_HOLD_HOURS = tuple(range(9, 23))
RATCHET_FLOOR_FRAC = 0.6


def make_ratchet(scenario: Scenario, hold_hours: Sequence[int] = RATCHET_HOLD_HOURS,
                 floor_kw: float | None = None) -> Act:
    """The ratchet rule, a demand-charge heuristic: PV surplus into the battery; in ``hold_hours``
    the battery discharges what the net load exceeds ``max(month-to-date peak, floor_kw)``; at
    other hours (the night) it discharges freely, emptying for the next day's PV.

    Vehicles at full power, as in the evening rule. The month-to-date peak only rises, so the
    level ratchets up through the month; the floor (default ``RATCHET_FLOOR_FRAC`` of the mall's
    annual peak over the packaged years) keeps the battery from being spent on the low loads of a
    month's first days.
    """
    ratings = jnp.asarray(socket_ratings_kw(scenario), jnp.float32)
    power_kw = float(scenario.power_kw)
    floor = RATCHET_FLOOR_FRAC * mall_peak_kw(scenario) if floor_kw is None else floor_kw
    if isinstance(floor, bool) or not isinstance(floor, (int, float, np.number)) or not (
            np.isfinite(floor) and floor >= 0.0):
        raise ValueError(f"floor_kw: expected a finite number of kW >= 0, got {floor_kw!r}")
    floor = float(floor)
    hold_j = _hour_mask(hold_hours, "hold_hours")

    def act(obs: jax.Array, state: Any, params: Any) -> jax.Array:
        net_kwh = _net_load_full_power(ratings, state, params)
        hold = -jnp.maximum(net_kwh - jnp.maximum(state.month_peak_kw, floor), 0.0) / power_kw
        battery = jnp.where(net_kwh < 0.0, _surplus_charge(net_kwh, power_kw),
                            jnp.where(hold_j[state.t % 24], hold, -1.0))
        return _with_sockets_at_full_power(battery, ratings)

    return act


def make_greedy(scenario: Scenario) -> Act:
    """The greedy rule: PV surplus into the battery; discharge whenever there is net load.

    The evening rule with every hour of the day a discharge hour: the battery takes the PV that
    would be curtailed and gives it back as soon as the load exceeds PV, down to the SOC window.
    On a grid-import (CO2) objective this is optimal up to the shifting of EV charging, which the
    rule does not do (vehicles at full power).
    """
    return make_rule_based(scenario, discharge_hours=tuple(range(24)))
