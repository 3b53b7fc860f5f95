"""``Policy.__call__``: an observation of the wrong size is refused with the size and scenario it
expects; single, batched, jitted and vmapped observations of the right size pass.

The policy here is a fixed linear map (its values are checked against NumPy), since only the
checks in ``__call__`` are under test; trained policies share that method.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oe3jax.learning.policy import Policy
from oe3jax.simulation.env import make_env


@pytest.fixture(scope="module")
def policy38():
    env, params = make_env("iquitos-38")
    n_obs, n_act = env.obs_layout.size, env.num_actions
    weights = np.random.default_rng(0).normal(size=(n_obs, n_act)).astype(np.float32) / n_obs
    return Policy(algo="ppo", step=0, config={}, scenario="iquitos-38", seed=0, params=jnp.asarray(weights),
                  apply=lambda w, obs: jnp.tanh(obs @ w), env=env, env_params=params), weights


def test_observation_of_another_scenario_names_both_sizes_and_the_scenario(policy38):
    policy, _ = policy38
    assert policy.env.obs_layout.size == 177
    obs128, _ = make_env("iquitos-128")[0].reset(jax.random.key(0))
    assert obs128.shape == (537,)
    for obs in (obs128, np.asarray(obs128), np.zeros((4, 537)), np.zeros(()), [0.0] * 176):
        for call in (policy, jax.jit(policy)):
            with pytest.raises(ValueError, match=r"^obs: expected 177 features .*'iquitos-38'.*trained for") as exc:
                call(obs)
            assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match=r"got shape \(537,\)"):
        policy(obs128)
    with pytest.raises(ValueError, match="expected 177"):  # vmap: each row is checked
        jax.vmap(policy)(np.zeros((3, 176)))


def test_single_batched_jitted_and_vmapped_observations_pass(policy38):
    policy, weights = policy38
    obs = np.random.default_rng(1).uniform(-1, 1, (2, 3, 177)).astype(np.float32)
    expected = np.tanh(obs.astype(np.float64) @ weights)
    np.testing.assert_allclose(np.asarray(policy(obs[0, 0])), expected[0, 0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(policy(obs)), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(policy)(obs[1])), expected[1], atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.vmap(policy))(obs)), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(policy(obs[0, 0].tolist())), expected[0, 0], atol=1e-5)


def test_observation_of_no_real_numbers_is_named(policy38):
    policy, _ = policy38
    for obs in (np.zeros(177, np.complex64), np.array(["a"] * 177), ["a"] * 177):
        with pytest.raises(TypeError, match=r"^obs: expected real numbers, 177 features on the last axis \(the "
                                            r"observation of scenario 'iquitos-38', which this policy was trained "
                                            r"for\), got dtype (complex64|<U1)$"):
            policy(obs)
    with pytest.raises(TypeError, match=r"^obs: expected real numbers, .* got dtype complex64"):
        jax.jit(policy)(np.zeros(177, np.complex64))
