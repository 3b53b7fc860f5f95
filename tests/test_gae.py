"""GAE(lambda) against a hand-worked example and a plain NumPy loop."""
from __future__ import annotations

import numpy as np

from oe3jax.learning.onpolicy import gae


def test_gae_hand_worked_truncation_and_termination():
    # One environment, four steps, gamma 0.9, lambda 0.8 (gamma * lambda = 0.72).
    # step 0: ordinary;  step 1: truncated (time limit) -> bootstraps from V(final obs) = 5.0,
    # and the trace is cut;  step 2: ordinary;  step 3: terminated -> no bootstrap.
    rewards = np.array([[1.0], [2.0], [3.0], [4.0]])
    values = np.array([[0.5], [1.0], [1.5], [2.0]])
    next_values = np.array([[1.0], [5.0], [2.0], [7.0]])  # V of the obs after each step (pre-reset)
    terminated = np.array([[0], [0], [0], [1]], bool)
    done = np.array([[0], [1], [0], [1]], bool)
    # By hand:
    # d3 = 4 + 0           - 2.0 = 2.0            A3 = 2.0
    # d2 = 3 + 0.9 * 2.0   - 1.5 = 3.3            A2 = 3.3 + 0.72 * 2.0 = 4.74
    # d1 = 2 + 0.9 * 5.0   - 1.0 = 5.5            A1 = 5.5 (episode boundary)
    # d0 = 1 + 0.9 * 1.0   - 0.5 = 1.4            A0 = 1.4 + 0.72 * 5.5 = 5.36
    adv, ret = gae(rewards, values, next_values, terminated, done, 0.9, 0.8)
    np.testing.assert_allclose(np.asarray(adv)[:, 0], [5.36, 5.5, 4.74, 2.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret)[:, 0], [5.86, 6.5, 6.24, 4.0], rtol=1e-6)
    assert adv.dtype == np.float32


def test_gae_matches_numpy_loop_on_random_batch():
    rng = np.random.default_rng(3)
    T, N, gamma, lam = 12, 5, 0.97, 0.9
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    next_values = rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < 0.1
    done = terminated | (rng.random((T, N)) < 0.15)
    expected = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            boot = 0.0 if terminated[t, n] else next_values[t, n]
            delta = rewards[t, n] + gamma * boot - values[t, n]
            running = delta + (0.0 if done[t, n] else gamma * lam * running)
            expected[t, n] = running
    adv, ret = gae(rewards, values, next_values, terminated, done, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), expected + values, rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_is_discounted_return_to_go():
    # With lambda = 1 and a terminal last step, targets are plain discounted returns.
    rewards = np.array([[1.0], [1.0], [1.0]])
    values = np.array([[0.3], [-2.0], [4.0]])
    next_values = np.array([[-2.0], [4.0], [9.0]])
    terminated = np.array([[0], [0], [1]], bool)
    _, ret = gae(rewards, values, next_values, terminated, terminated, 0.5, 1.0)
    np.testing.assert_allclose(np.asarray(ret)[:, 0], [1.75, 1.5, 1.0], rtol=1e-6)
