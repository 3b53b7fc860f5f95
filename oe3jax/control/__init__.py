"""Controllers that do not learn: uncontrolled charging, rules, MPC and perfect-foresight optima.

Every controller is a policy ``act(obs, state, params) -> action`` usable wherever a policy is.
Modules by concern:

- :mod:`~oe3jax.control.site`: the constants a controller plans with (from the env's params);
- :mod:`~oe3jax.control.rules`: uncontrolled, the evening rule, the greedy rule;
- :mod:`~oe3jax.control.sessions`: the vehicles of an episode, recorded once per key;
- :mod:`~oe3jax.control.optimum`: the perfect-foresight LP/MILP per objective, its replay check;
- :mod:`~oe3jax.control.mpc`: the rolling-horizon optimum re-solved every hour;
- :mod:`~oe3jax.control.registry`: ``CONTROLLERS`` and ``make_controller(name, ...)``;
- :mod:`~oe3jax.control.baselines`: an index under the former names.

Imports only :mod:`oe3jax.simulation` below it.
"""
