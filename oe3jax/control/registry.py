"""Every non-learned controller by name: ``make_controller(name, env, params, key, hours, **options)``.

>>> for name in CONTROLLERS:
...     act = make_controller(name, env, params, key, hours)
...     kpis = episode_kpis(env, params, act, key, hours)
...     solver = controller_info(act)          # solve times, objective, bound; {} for the rules

Each returns a policy ``act(obs, state, params) -> action``: a jittable function (the rules), a
:class:`~oe3jax.control.optimum.Plan` (a replayable schedule; the optima are those of the episode
``key`` and ``hours`` draw, so evaluate them with the same key and hours) or an
:class:`~oe3jax.control.mpc.MPC` (a host solver reached through ``jax.pure_callback``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from oe3jax.control.mpc import DEFAULT_HORIZON, MPC, expected_ev_by_hour
from oe3jax.control.optimum import OBJECTIVES, optimum_plan
from oe3jax.control.rules import Act, make_greedy, make_ratchet, make_rule_based, uncontrolled
from oe3jax.control.sessions import record_sessions

CONTROLLERS: dict[str, str] = {
    "uncontrolled": "every plugged vehicle at full power, battery idle",
    "rule": "evening rule: PV surplus into the battery, discharge 18:00-22:59",
    "greedy": "greedy rule: PV surplus into the battery, discharge whenever there is net load",
    "ratchet": "ratchet rule: PV surplus into the battery; 09:00-22:59 hold the import at max(month-to-date "
               "peak, 60 % of the mall's peak), discharge freely at night",
    "mpc": f"rolling-horizon optimum re-solved each hour ({DEFAULT_HORIZON} h, monthly peaks by default; "
           "PV and mall forecast, vehicles known once plugged)",
    "mpc_ev": "the mpc plus an expected EV load by hour of day (mean uncontrolled EV load of another "
              "episode of the same fleet)",
    **{f"optimum_{obj}": f"perfect-foresight optimum of the {desc}" for obj, desc in OBJECTIVES.items()},
}

_OPTIONS: dict[str, tuple[str, ...]] = {
    "uncontrolled": (),
    "rule": ("discharge_hours",),
    "greedy": (),
    "ratchet": ("hold_hours", "floor_kw"),
    "mpc": ("objective", "horizon", "forecast", "expected_ev_kw", "known_vehicles", "clip_to_episode", "time_limit_s"),
    "mpc_ev": ("objective", "horizon", "forecast", "history_key", "clip_to_episode", "time_limit_s"),
    **{f"optimum_{obj}": ("time_limit_s",) for obj in OBJECTIVES},
}
_OPTIONS["optimum_reward"] = ("time_limit_s", "mip_rel_gap", "relax")


def make_controller(name: str, env: Any, params: Any, key: jax.Array | None = None, hours: int | None = None,
                    **options: Any) -> Act:
    """The controller ``name`` (one of :data:`CONTROLLERS`) for the environment ``env, params``.

    ``key`` and ``hours`` fix the episode (needed by the optima, which plan its vehicles, and by
    the MPC with ``known_vehicles=True``); the rules ignore them. Options by controller:
    ``rule``: ``discharge_hours``; ``ratchet``: ``hold_hours``, ``floor_kw``; ``mpc``: ``objective`` (default ``monthly_peaks``), ``horizon``
    (hours, default 36), ``forecast`` (``(t, hours) -> (pv_kw, mall_kw)``), ``expected_ev_kw`` (24
    values), ``known_vehicles`` (all vehicles of the episode known in advance), ``clip_to_episode``,
    ``time_limit_s``; ``mpc_ev``: the same but ``expected_ev_kw`` and ``known_vehicles``, plus
    ``history_key`` (the episode its expected EV load is averaged from; default
    ``fold_in(key, 1)``); ``optimum_*``: ``time_limit_s``; ``optimum_reward`` also ``mip_rel_gap`` and
    ``relax``.
    """
    if name not in CONTROLLERS:
        raise ValueError(f"controller: unknown {name!r}; accepted: {', '.join(CONTROLLERS)}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        accepted = ", ".join(_OPTIONS[name]) or "none"
        raise ValueError(f"{name}: unknown option {unknown[0]!r}; accepted: {accepted}")
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int) or hours < 1):
        raise ValueError(f"hours: expected an integer >= 1, got {hours!r}")
    if name == "uncontrolled":
        return uncontrolled
    if name == "rule":
        return make_rule_based(env.scenario, **options)
    if name == "greedy":
        return make_greedy(env.scenario)
    if name == "ratchet":
        return make_ratchet(env.scenario, **options)
    if name == "mpc_ev":
        history = options.pop("history_key", None)
        if history is None:
            if key is None:
                raise ValueError("key: mpc_ev needs a key (its expected EV load comes from the episode of "
                                 "fold_in(key, 1)) or a history_key")
            history = jax.random.fold_in(key, 1)
        return MPC(env, params, expected_ev_kw=expected_ev_by_hour(env, params, history, hours), **options)
    if name == "mpc":
        known = options.pop("known_vehicles", False)
        sessions = None
        if known:
            if key is None:
                raise ValueError("key: the mpc with known_vehicles needs the episode's key (its vehicles)")
            sessions, _ = record_sessions(env, params, key, hours)
        return MPC(env, params, sessions=sessions, **options)
    if key is None:
        raise ValueError(f"key: {name} needs the episode's key (it plans that episode's vehicles)")
    return optimum_plan(env, params, key, hours, name.removeprefix("optimum_"), **options)


def controller_info(act: Callable[..., Any]) -> dict[str, Any]:
    """What a controller reports about its solves (objective, value, bound, times); {} for the rules."""
    info = getattr(act, "info", None)
    return dict(info) if isinstance(info, dict) else {}
