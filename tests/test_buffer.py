"""Replay buffer: wrap-around writes, sampling of filled slots only, uniformity, storage dtypes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oe3jax.learning import buffer


def _batch(start: int, n: int, obs_dim: int = 3, act_dim: int = 2) -> buffer.Transition:
    """Transitions numbered start..start+n-1; every field encodes the number."""
    k = np.arange(start, start + n, dtype=np.float32)
    return buffer.Transition(
        obs=jnp.asarray(np.repeat(k[:, None], obs_dim, 1)),
        action=jnp.asarray(np.repeat(-k[:, None], act_dim, 1)),
        reward=jnp.asarray(10.0 * k),
        next_obs=jnp.asarray(np.repeat(k[:, None] + 0.5, obs_dim, 1)),
        terminated=jnp.asarray(k.astype(int) % 2 == 1),
    )


def test_wrap_around_matches_hand_computed_slots():
    capacity, n = 7, 3
    state = buffer.init(capacity, 3, 2)
    add = jax.jit(buffer.add)
    # Hand-written expectation: transition number t goes to slot t mod 7, a later one overwrites.
    expected = np.full(capacity, -1.0)
    for step in range(5):  # 15 transitions: slots 0..6, 0..6, 0
        state = add(state, _batch(step * n, n))
        for t in range(step * n, step * n + n):
            expected[t % capacity] = t
        assert int(state.pos) == ((step + 1) * n) % capacity
        assert int(state.size) == min((step + 1) * n, capacity)
    # After 15 writes: slot 0 holds 14, slots 1..6 hold 8..13.
    np.testing.assert_array_equal(expected, [14, 8, 9, 10, 11, 12, 13])
    np.testing.assert_array_equal(np.asarray(state.data.obs[:, 0]), expected)
    np.testing.assert_array_equal(np.asarray(state.data.action[:, 1]), -expected)
    np.testing.assert_array_equal(np.asarray(state.data.reward), 10 * expected)
    np.testing.assert_array_equal(np.asarray(state.data.next_obs[:, 2]), expected + 0.5)
    np.testing.assert_array_equal(np.asarray(state.data.terminated), expected.astype(int) % 2 == 1)


def test_batch_larger_than_capacity_is_refused():
    with pytest.raises(ValueError, match="capacity 4"):
        buffer.add(buffer.init(4, 3, 2), _batch(0, 5))


def test_samples_only_filled_slots_and_whole_transitions():
    state = buffer.add(buffer.init(100, 3, 2), _batch(0, 6))
    assert bool(buffer.can_sample(state, 6)) and not bool(buffer.can_sample(state, 7))
    out = jax.jit(buffer.sample, static_argnums=2)(state, jax.random.key(0), 2000)
    k = np.asarray(out.obs[:, 0])
    assert set(k.tolist()) == set(range(6))  # never an empty slot (those would read 0 with reward 0 ...)
    # ... and every field of a sampled row belongs to the same transition.
    np.testing.assert_array_equal(np.asarray(out.reward), 10 * k)
    np.testing.assert_array_equal(np.asarray(out.action[:, 0]), -k)
    np.testing.assert_array_equal(np.asarray(out.next_obs[:, 1]), k + 0.5)
    np.testing.assert_array_equal(np.asarray(out.terminated), k.astype(int) % 2 == 1)


def test_empty_buffer_cannot_sample():
    assert not bool(buffer.can_sample(buffer.init(10, 3, 2), 1))


def test_sampling_is_uniform_over_a_full_wrapped_buffer():
    capacity, draws = 20, 40_000
    state = buffer.init(capacity, 3, 2)
    for step in range(9):  # 27 writes: wrapped, full
        state = buffer.add(state, _batch(step * 3, 3))
    out = buffer.sample(state, jax.random.key(1), draws)
    counts = np.bincount(np.asarray(out.obs[:, 0]).astype(int), minlength=27)
    np.testing.assert_array_equal(counts[:7], 0)  # overwritten transitions 0..6 are gone
    expected = draws / capacity
    chi2 = float(((counts[7:] - expected) ** 2 / expected).sum())
    assert chi2 < 60.0  # 19 degrees of freedom: the 1e-6 tail is about 60


@pytest.mark.parametrize("dtype,itemsize", [("float32", 4), ("bfloat16", 2), ("float16", 2)])
def test_observation_storage_dtype(dtype, itemsize):
    capacity, obs_dim, act_dim = 50, 9, 4
    state = buffer.init(capacity, obs_dim, act_dim, dtype)
    assert state.data.obs.dtype == jnp.dtype(dtype) and state.data.next_obs.dtype == jnp.dtype(dtype)
    assert state.data.action.dtype == jnp.float32 and state.data.reward.dtype == jnp.float32
    obs = jnp.asarray(np.linspace(-3.0, 3.0, 2 * obs_dim, dtype=np.float32).reshape(2, obs_dim))
    batch = buffer.Transition(obs, jnp.ones((2, act_dim)), jnp.ones(2), obs + 1.0, jnp.zeros(2, bool))
    state = buffer.add(state, batch)
    out = buffer.sample(state, jax.random.key(0), 8)
    assert out.obs.dtype == jnp.float32 and out.next_obs.dtype == jnp.float32
    tol = {"float32": 0.0, "bfloat16": 2.0**-8, "float16": 2.0**-11}[dtype]
    np.testing.assert_allclose(np.asarray(state.data.obs[:2]).astype(np.float32), obs, rtol=tol, atol=0)
    # Bytes: two observation arrays in the storage dtype, actions and rewards float32, bool flags,
    # two int32 counters.
    want = capacity * (2 * obs_dim * itemsize + act_dim * 4 + 4 + 1) + 2 * 4
    assert buffer.nbytes(state) == want == buffer.nbytes_for(capacity, obs_dim, act_dim, dtype)


def test_unknown_storage_dtype_is_refused():
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        buffer.init(10, 3, 2, "int8")
