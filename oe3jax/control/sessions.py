"""The vehicles of an episode as sessions: who is plugged where, when, and what they can get.

The arrivals depend on the episode's key only (never on the actions), so one uncontrolled run
records the sessions that every controller sees with the same key and length;
:func:`record_sessions` keeps the last few recordings, so the optima and the MPC of one key share
one run.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Any

import jax
import numpy as np

from oe3jax.control.rules import uncontrolled_schedule
from oe3jax.control.site import socket_ratings_kw
from oe3jax.simulation.episode import run_episode, session_starts


@dataclasses.dataclass(frozen=True)
class Sessions:
    """Vehicle sessions over a horizon of steps.

    Session ``s`` occupies socket ``socket[s]`` for the steps ``start[s] <= k < stop[s]`` (stop
    clipped to the horizon). ``need_kwh`` is the energy it wants at ``start``; ``energy_kwh`` what
    it gets at full power (the most any policy can give it: ``min(need, rating * hours plugged)``);
    ``departs`` says whether it leaves at the end of step ``stop - 1`` (inside the horizon), which
    is when its unmet energy counts.
    """

    socket: np.ndarray  # int (n,)
    start: np.ndarray  # int (n,)
    stop: np.ndarray  # int (n,)
    need_kwh: np.ndarray  # (n,)
    energy_kwh: np.ndarray  # (n,)
    departs: np.ndarray | None = None  # bool (n,); None: every session departs at stop

    @property
    def n(self) -> int:
        return int(self.socket.shape[0])

    @property
    def departing(self) -> np.ndarray:
        return np.ones(self.n, bool) if self.departs is None else np.asarray(self.departs, bool)

    @staticmethod
    def empty() -> "Sessions":
        z = np.zeros(0, np.int64)
        return Sessions(z, z, z, np.zeros(0), np.zeros(0), np.zeros(0, bool))


def extract_sessions(
    occupied: np.ndarray, need_kwh: np.ndarray, hours_left: np.ndarray, ratings_kw: np.ndarray
) -> Sessions:
    """Sessions from a recorded trajectory of the socket states *before* each step's action.

    ``occupied``, ``need_kwh``, ``hours_left`` have shape ``(steps, n_sockets)``; sessions start
    where :func:`~oe3jax.simulation.episode.session_starts` says and last ``hours_left`` steps
    from there (the stay drawn on arrival). The energy of a session is what full power delivers:
    ``sum_k min(rating, need_k)`` over its steps (need_k is the need before step ``k``).
    """
    occupied = np.asarray(occupied, bool)
    hours_left = np.asarray(hours_left, np.int64)
    need = np.asarray(need_kwh, np.float64)
    ratings = np.asarray(ratings_kw, np.float64)
    steps = occupied.shape[0]
    new = session_starts(occupied, hours_left)
    starts_k, starts_i = np.nonzero(new)
    order = np.lexsort((starts_k, starts_i))  # by socket, then time
    starts_k, starts_i = starts_k[order], starts_i[order]
    leave = starts_k + hours_left[starts_k, starts_i]
    stop = np.minimum(leave, steps)
    delivered = np.where(occupied, np.minimum(ratings[None, :], need), 0.0)
    csum = np.vstack([np.zeros((1, occupied.shape[1])), np.cumsum(delivered, axis=0)])
    energy = csum[stop, starts_i] - csum[starts_k, starts_i]
    return Sessions(
        socket=starts_i.astype(np.int64),
        start=starts_k.astype(np.int64),
        stop=stop.astype(np.int64),
        need_kwh=need[starts_k, starts_i],
        energy_kwh=energy,
        departs=leave <= steps,
    )


def _digest(params: Any) -> str:
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(params):
        a = np.asarray(leaf)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


_CACHE: collections.OrderedDict[tuple, tuple[Sessions, dict[str, Any]]] = collections.OrderedDict()
_CACHE_SIZE = 4


def record_sessions(env: Any, params: Any, key: jax.Array, hours: int | None = None) -> tuple[Sessions, dict[str, Any]]:
    """The episode's vehicle sessions and the uncontrolled trace they were recorded from.

    Recorded once per (environment, params, key, hours): later calls return the same objects
    (the last four recordings are kept). The trace is that of :func:`~oe3jax.control.rules.uncontrolled`.
    """
    if hours is None:
        hours = int(params.max_steps_in_episode)
    key_bytes = np.asarray(jax.random.key_data(key)).tobytes()
    cache_key = (type(env), env.n_moto, env.n_taxi, _digest(params), key_bytes, int(hours))
    if cache_key in _CACHE:
        _CACHE.move_to_end(cache_key)
        return _CACHE[cache_key]
    trace = run_episode(env, params, uncontrolled_schedule(env.scenario, hours), key, hours)
    sessions = extract_sessions(
        trace["occupied"], trace["need_kwh"], trace["hours_left"], socket_ratings_kw(env.scenario)
    )
    _CACHE[cache_key] = (sessions, trace)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return sessions, trace
