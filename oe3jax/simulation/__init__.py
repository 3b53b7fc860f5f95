"""The physics layer: scenarios, hourly profiles, the pure-JAX environment and its NumPy reference.

- :mod:`~oe3jax.simulation.scenario`: every constant of a site (presets ``iquitos-128``, ``iquitos-38``);
- :mod:`~oe3jax.simulation.profiles`: the packaged 2024 PV and mall profiles and users' CSV files;
- :mod:`~oe3jax.simulation.env`: ``make_env`` and the gymnax environment (jit / vmap);
- :mod:`~oe3jax.simulation.reference`: the same physics in plain NumPy;
- :mod:`~oe3jax.simulation.adapters`: a Gymnasium ``Env`` and the legacy five-value gymnax step;
- :mod:`~oe3jax.simulation.vector`: the jitted, vmapped JAX env as a Gymnasium vector env;
- :mod:`~oe3jax.simulation.sb3`: the same as a Stable-Baselines3 ``VecEnv`` (optional extra ``peers``);
- :mod:`~oe3jax.simulation.checks`: the action and observation checks at the environment's edge;
- :mod:`~oe3jax.simulation.episode`: one whole episode in one jitted scan (``run_episode``).

Imports nothing else of the package but :mod:`oe3jax.schema`.
"""
