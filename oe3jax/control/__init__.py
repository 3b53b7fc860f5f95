"""Controllers that do not learn: uncontrolled charging, rules, and the perfect-foresight optimum.

Every controller is a jittable ``act(obs, state, params) -> action`` usable wherever a policy is.
Imports only :mod:`oe3jax.simulation` below it.
"""
