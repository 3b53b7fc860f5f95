"""The baselines by their former names: an index of :mod:`~oe3jax.control.rules`,
:mod:`~oe3jax.control.sessions`, :mod:`~oe3jax.control.optimum` and :mod:`~oe3jax.control.registry`.

``optimal_policy`` is the grid-import optimum (the perfect-foresight LP); the other objectives are
``optimal_policy(..., objective=...)`` or ``make_controller("optimum_<objective>", ...)``.
"""
from oe3jax.control.optimum import Optimum, Plan, check_optimum, check_plan, optimal_policy, optimum_plan
from oe3jax.control.registry import CONTROLLERS, controller_info, make_controller
from oe3jax.control.rules import (
    RULE_DISCHARGE_HOURS, make_greedy, make_ratchet, make_rule_based, schedule_policy, uncontrolled, uncontrolled_schedule,
)
from oe3jax.control.sessions import Sessions, extract_sessions, record_sessions
from oe3jax.control.site import socket_ratings_kw

__all__ = [
    "CONTROLLERS", "Optimum", "Plan", "RULE_DISCHARGE_HOURS", "Sessions", "check_optimum", "check_plan",
    "controller_info", "extract_sessions", "make_controller", "make_greedy", "make_ratchet", "make_rule_based", "optimal_policy",
    "optimum_plan", "record_sessions", "schedule_policy", "socket_ratings_kw", "uncontrolled", "uncontrolled_schedule",
]
