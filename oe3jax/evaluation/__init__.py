"""Judging policies: yearly KPIs of an episode and comparison tables beside the baselines.

Imports :mod:`oe3jax.simulation`, :mod:`oe3jax.control` and :mod:`oe3jax.learning` below it.
"""
