"""Networks, policy distributions, observation normaliser and the precision policy."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from probe_envs import SocketTargetEnv, TargetActionEnv
from scipy import stats

from oe3jax.learning import gradient, networks, normalize
from oe3jax.schema import ConfigError, defaults
from oe3jax.learning.precision import PRECISIONS, LossScaler, all_finite, compute_dtype, make_loss_scaler

NET = defaults(networks.NETWORK_SPEC)


def _net(**over):
    return {**NET, **over}


# ----------------------------------------------------------------------------------------------
# Precision: loss scaling with hand-made gradients
# ----------------------------------------------------------------------------------------------
def test_compute_dtypes_and_bad_name():
    assert [compute_dtype(p) for p in PRECISIONS] == [jnp.float32, jnp.bfloat16, jnp.float16]
    with pytest.raises(ValueError, match="precision: expected one of 'float32'"):
        compute_dtype("float64")


def test_loss_scale_halves_on_overflow_and_skips_the_step():
    scaler = LossScaler(dynamic=True, initial_scale=1024.0, growth_interval=3)
    state = scaler.init()
    assert float(scaler.scale_loss(state, jnp.float32(2.0))) == 2048.0
    grads = {"w": jnp.array([1024.0, jnp.inf]), "b": jnp.array(512.0)}
    finite = all_finite(scaler.unscale(state, grads))
    assert not bool(finite)
    new, old = {"w": jnp.array([9.0, 9.0])}, {"w": jnp.array([1.0, 2.0])}
    kept, state, skipped = gradient.keep_if_finite(finite, new, old, scaler, state)
    np.testing.assert_array_equal(kept["w"], [1.0, 2.0])
    assert float(state.scale) == 512.0 and int(state.good_steps) == 0 and float(skipped) == 1.0


def test_loss_scale_unscales_and_doubles_after_good_steps():
    scaler = LossScaler(dynamic=True, initial_scale=8.0, growth_interval=3)
    state = scaler.init()
    grads = scaler.unscale(state, {"w": jnp.array([8.0, -4.0], jnp.float16)})
    np.testing.assert_array_equal(grads["w"], [1.0, -0.5])
    assert grads["w"].dtype == jnp.float32
    scales = []
    for _ in range(7):
        state = scaler.adjust(state, jnp.array(True))
        scales.append(float(state.scale))
    assert scales == [8.0, 8.0, 16.0, 16.0, 16.0, 32.0, 32.0]
    new, old = {"w": jnp.array(9.0)}, {"w": jnp.array(1.0)}
    stepped, _, skipped = gradient.keep_if_finite(jnp.array(True), new, old, scaler, state)
    assert float(stepped["w"]) == 9.0 and float(skipped) == 0.0


def test_loss_scaler_is_identity_for_float32_and_bfloat16():
    for precision in ("float32", "bfloat16"):
        scaler = make_loss_scaler(precision)
        state = scaler.init()
        assert float(scaler.scale_loss(state, jnp.float32(3.0))) == 3.0
        g = {"w": jnp.array([jnp.nan, 1.0])}
        assert scaler.unscale(state, g) is g
        assert scaler.adjust(state, jnp.array(False)) is state
    assert make_loss_scaler("float16").dynamic


def test_float16_gradient_step_skips_nonfinite_and_keeps_params():
    tx = optax.sgd(0.1)
    params = {"w": jnp.array([1.0, 2.0])}
    scaler = make_loss_scaler("float16", initial_scale=4.0)
    ls = scaler.init()

    def bad_loss(p):  # gradient of w * inf is inf
        return jnp.sum(p["w"] * jnp.array([1.0, jnp.inf])), {}

    p, o, ls2, skipped, _ = gradient.gradient_step(bad_loss, tx, scaler, params, tx.init(params), ls)
    np.testing.assert_array_equal(p["w"], [1.0, 2.0])
    assert float(skipped) == 1.0 and float(ls2.scale) == 2.0

    def good_loss(p):  # d/dw sum(3 w) = 3 -> sgd step of 0.3
        return jnp.sum(3.0 * p["w"]), {}

    p, o, ls3, skipped, _ = gradient.gradient_step(good_loss, tx, scaler, params, tx.init(params), ls2)
    np.testing.assert_allclose(p["w"], [0.7, 1.7], rtol=1e-6)
    assert float(skipped) == 0.0 and int(ls3.good_steps) == 1


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_gradient_step_skips_nonfinite_in_every_precision(precision):
    tx = optax.adam(0.1)
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array(0.5)}
    opt_state = tx.init(params)
    scaler = make_loss_scaler(precision)

    def nan_loss(p):  # the gradient of b * nan is nan; w's gradient alone is finite
        return jnp.sum(p["w"]) + p["b"] * jnp.nan, {}

    p, o, ls, skipped, _ = gradient.gradient_step(nan_loss, tx, scaler, params, opt_state, scaler.init())
    assert float(skipped) == 1.0 and float(ls.scale) == 1.0
    for new, old in zip(jax.tree.leaves((p, o)), jax.tree.leaves((params, opt_state)), strict=True):
        np.testing.assert_array_equal(new, old)

    def inf_loss_finite_grad(p):  # the loss is not finite though every gradient is
        return jnp.sum(p["w"]) + jnp.inf, {}

    p, _, _, skipped, _ = gradient.gradient_step(inf_loss_finite_grad, tx, scaler, params, opt_state, scaler.init())
    assert float(skipped) == 1.0
    np.testing.assert_array_equal(p["w"], [1.0, 2.0])


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
def _init_apply(module, *inputs):
    params = module.init(jax.random.key(0), *inputs)
    out, inter = module.apply(params, *inputs, capture_intermediates=True, mutable=["intermediates"])
    return params, out, inter


@pytest.mark.parametrize(
    "kind,precision", [("mlp", "float32"), ("mlp", "float16"), ("socket_shared", "bfloat16"), ("socket_shared", "float16")]
)
def test_dtypes_params_float32_compute_in_precision_outputs_float32(kind, precision):
    env = SocketTargetEnv(3)
    dtype = compute_dtype(precision)
    obs = jnp.ones((5, 4)) * 0.3
    actor = networks.make_actor(_net(kind=kind), env, env.default_params, dtype)
    params, (mean, log_std), inter = _init_apply(actor, obs)
    chex.assert_type(jax.tree.leaves(params), jnp.float32)
    chex.assert_type([mean, log_std], jnp.float32)
    chex.assert_shape([mean, log_std], (5, 4))
    dense_outputs = [v for path, v in jax.tree_util.tree_leaves_with_path(inter)
                     if "Dense" in jax.tree_util.keystr(path) or "embed" in jax.tree_util.keystr(path)]
    assert dense_outputs
    chex.assert_type(dense_outputs, dtype)
    critic = networks.make_critic(_net(kind=kind), env, env.default_params, dtype)
    cparams, value, _ = _init_apply(critic, obs)
    chex.assert_type(jax.tree.leaves(cparams), jnp.float32)
    chex.assert_type(value, jnp.float32)
    chex.assert_shape(value, (5,))
    q = networks.make_q_critic(_net(kind=kind), env, env.default_params, dtype)
    qparams, qv, _ = _init_apply(q, obs, jnp.zeros((5, 4)))
    chex.assert_type(jax.tree.leaves(qparams), jnp.float32)
    chex.assert_type(qv, jnp.float32)
    chex.assert_shape(qv, (2, 5))


def test_socket_shared_any_park_size_and_permutation_equivariance():
    small, big = SocketTargetEnv(3), SocketTargetEnv(7)
    actor = networks.make_actor(_net(log_std="state_dependent"), small, small.default_params)
    critic = networks.make_critic(NET, small, small.default_params)
    obs3 = jnp.zeros(4)
    a_params, c_params = actor.init(jax.random.key(1), obs3), critic.init(jax.random.key(2), obs3)
    # The same parameters drive a park of 7 sockets (the module built for it is identical).
    actor7 = networks.make_actor(_net(log_std="state_dependent"), big, big.default_params)
    obs = jax.random.uniform(jax.random.key(3), (2, 8), minval=-1, maxval=1)
    mean, log_std = actor7.apply(a_params, obs)
    chex.assert_shape([mean, log_std], (2, 8))
    # Permuting the sockets permutes their actions; the battery action and the value are unchanged.
    perm = np.array([4, 0, 6, 2, 1, 5, 3])
    obs_p = jnp.concatenate([obs[:, :1], obs[:, 1:][:, perm]], axis=1)
    mean_p, log_std_p = actor7.apply(a_params, obs_p)
    np.testing.assert_allclose(mean_p[:, 1:], mean[:, 1:][:, perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean_p[:, 0], mean[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_std_p[:, 1:], log_std[:, 1:][:, perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(critic.apply(c_params, obs_p), critic.apply(c_params, obs), rtol=1e-5, atol=1e-6)
    # A single observation (no batch axis) works too.
    chex.assert_shape(actor7.apply(a_params, obs[0])[0], (8,))


def test_context_dense_is_the_dense_of_the_concatenation():
    """x @ K[:a] + (context @ K[a:] + b), broadcast over the rows, equals the NumPy Dense of
    concat([x, broadcast(context)]) with the same kernel and bias."""
    layer = networks._ContextDense(6)
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    context = jax.random.normal(jax.random.key(1), (2, 4))
    params = layer.init(jax.random.key(2), x, context)
    kernel = np.asarray(params["params"]["kernel"], np.float64)
    bias = np.asarray(params["params"]["bias"], np.float64) + 0.3  # a non-zero bias
    params = {"params": {"kernel": params["params"]["kernel"], "bias": jnp.asarray(bias, jnp.float32)}}
    assert kernel.shape == (3 + 4, 6)
    joined = np.concatenate([np.asarray(x, np.float64), np.repeat(np.asarray(context, np.float64)[:, None], 5, 1)], -1)
    np.testing.assert_allclose(np.asarray(layer.apply(params, x, context)), joined @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_socket_shared_parameter_tree_is_that_of_the_concatenated_layers():
    """Checkpoints keep loading: each per-socket layer's kernel has the rows of its concatenated
    input ([socket features, embedding] and [hidden, summary]), as the layers on the concatenation had."""
    from oe3jax.simulation.env import make_env

    env, params = make_env("iquitos-38")
    obs = jnp.zeros(env.obs_layout.size)
    n_g, n_f = env.obs_layout.n_global, env.obs_layout.n_socket_features
    shapes = lambda tree: {"/".join(str(getattr(k, "key", k)) for k in path): tuple(v.shape)
                           for path, v in jax.tree_util.tree_leaves_with_path(tree)}
    actor = shapes(networks.make_actor(NET, env, params).init(jax.random.key(0), obs))
    assert actor == {
        "params/torso/global_embed/kernel": (n_g, 32), "params/torso/global_embed/bias": (32,),
        "params/torso/socket_net/Dense_0/kernel": (n_f + 32, 32), "params/torso/socket_net/Dense_0/bias": (32,),
        "params/torso/socket_net/Dense_1/kernel": (32, 32), "params/torso/socket_net/Dense_1/bias": (32,),
        "params/socket_head/Dense_0/kernel": (32 + 32, 32), "params/socket_head/Dense_0/bias": (32,),
        "params/socket_out/kernel": (32, 1), "params/socket_out/bias": (1,),
        "params/battery_head/Dense_0/kernel": (32 + 32, 64), "params/battery_head/Dense_0/bias": (64,),
        "params/battery_head/Dense_1/kernel": (64, 64), "params/battery_head/Dense_1/bias": (64,),
        "params/battery_out/kernel": (64, 1), "params/battery_out/bias": (1,),
        "params/_LogStd_0/log_std": (2,),
    }
    q = shapes(networks.make_q_critic(NET, env, params).init(jax.random.key(0), obs, jnp.zeros(1 + env.n_sockets)))
    # two critics stacked; the battery action joins the global features, a socket's its socket's
    assert q["params/q_module/torso/global_embed/kernel"] == (2, n_g + 1, 32)
    assert q["params/q_module/torso/socket_net/Dense_0/kernel"] == (2, n_f + 1 + 32, 32)
    assert q["params/q_module/torso/socket_net/Dense_1/kernel"] == (2, 32, 32)


def test_socket_shared_needs_a_socket_layout():
    env = TargetActionEnv()
    with pytest.raises(ConfigError, match="network.kind: 'socket_shared' needs an environment with a socket layout"):
        networks.make_actor(NET, env, env.default_params)
    assert networks.make_actor(_net(kind="mlp"), env, env.default_params) is not None


def test_state_independent_log_std_starts_at_init_value():
    env = SocketTargetEnv(3)
    for kind in ("mlp", "socket_shared"):
        actor = networks.make_actor(_net(kind=kind, log_std_init=-1.25), env, env.default_params)
        params = actor.init(jax.random.key(0), jnp.zeros(4))
        _, log_std = actor.apply(params, jnp.ones((3, 4)))
        np.testing.assert_array_equal(log_std, np.full((3, 4), -1.25, np.float32))


# ----------------------------------------------------------------------------------------------
# Distributions
# ----------------------------------------------------------------------------------------------
def test_gaussian_log_prob_and_entropy_match_scipy():
    rng = np.random.default_rng(0)
    mean, log_std, u = rng.normal(size=(3, 6, 4)).astype(np.float32)
    expected = stats.norm.logpdf(u, mean, np.exp(log_std)).sum(-1)
    np.testing.assert_allclose(networks.gaussian_log_prob(mean, log_std, u), expected, rtol=1e-5)
    np.testing.assert_allclose(networks.gaussian_entropy(log_std),
                               stats.norm(0, np.exp(log_std)).entropy().sum(-1), rtol=1e-5)
    # clip squash: the log-probability is that of the pre-clip sample
    np.testing.assert_allclose(networks.policy_log_prob(mean, log_std, u, "clip"), expected, rtol=1e-5)


def test_tanh_log_prob_is_density_of_the_squashed_action():
    mean, log_std = np.array([0.3, -1.0]), np.array([-0.5, 0.2])
    u = np.array([0.7, -2.5])
    a = np.tanh(u)
    # change of variables written in terms of the action: p(a) = N(atanh a) / (1 - a^2)
    expected = np.sum(stats.norm.logpdf(np.arctanh(a), mean, np.exp(log_std)) - np.log(1 - a**2))
    got = networks.policy_log_prob(jnp.array(mean), jnp.array(log_std), jnp.array(u), "tanh")
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # the density integrates to one over the action interval (1-D, numerical quadrature)
    grid = np.linspace(-1 + 1e-6, 1 - 1e-6, 200001)
    dens = np.exp(networks.policy_log_prob(jnp.full((grid.size, 1), 0.4), jnp.full((grid.size, 1), -0.3),
                                           jnp.arctanh(jnp.array(grid))[:, None], "tanh"))
    assert abs(np.trapezoid(np.asarray(dens, np.float64), grid) - 1.0) < 1e-3
    action, logp = networks.sample_tanh_gaussian(jax.random.key(0), jnp.zeros((1000, 3)), jnp.zeros((1000, 3)))
    assert float(jnp.max(jnp.abs(action))) <= 1.0 and logp.shape == (1000,)


# ----------------------------------------------------------------------------------------------
# Observation normaliser
# ----------------------------------------------------------------------------------------------
def test_obs_normaliser_matches_numpy_and_keeps_small_features_visible():
    rng = np.random.default_rng(1)
    b1 = rng.normal(2.0, 3.0, size=(50, 3)).astype(np.float32)
    b2 = rng.normal(-1.0, 0.5, size=(4, 7, 3)).astype(np.float32)
    stats_ = normalize.obs_norm_update(normalize.obs_norm_update(normalize.obs_norm_init(3), b1), b2)
    both = np.concatenate([b1, b2.reshape(-1, 3)])
    np.testing.assert_allclose(stats_.mean, both.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats_.var, both.var(0), rtol=1e-3)
    assert math.isclose(float(stats_.count), 78.0, rel_tol=1e-5)
    # A feature that is almost always 0 (std 1e-3) is divided by the floor, not blown up; a
    # battery SOC in [0.2, 1] keeps its full range inside the clip.
    almost_const = np.zeros((1000, 1), np.float32)
    almost_const[0] = 0.03
    soc = rng.uniform(0.2, 1.0, size=(1000, 1)).astype(np.float32)
    s = normalize.obs_norm_update(normalize.obs_norm_init(2), np.concatenate([almost_const, soc], 1))
    x = normalize.obs_normalize(s, jnp.array([[0.03, 0.2], [0.0, 1.0]]), 0.1, 10.0)
    assert float(x[0, 0]) == pytest.approx((0.03 - float(s.mean[0])) / 0.1, rel=1e-4)
    soc_std = float(np.sqrt(s.var[1]))
    np.testing.assert_allclose(x[:, 1], (np.array([0.2, 1.0]) - float(s.mean[1])) / soc_std, rtol=1e-4)
    assert float(jnp.max(jnp.abs(x))) < 10.0


def test_socket_action_init_shifts_only_the_socket_means():
    env = SocketTargetEnv(3)
    obs = jax.random.uniform(jax.random.key(4), (6, 4), minval=-1, maxval=1)
    for kind in ("mlp", "socket_shared"):
        base = networks.make_actor(_net(kind=kind), env, env.default_params)
        shifted = networks.make_actor(_net(kind=kind, socket_action_init=0.75), env, env.default_params)
        params = base.init(jax.random.key(0), obs)
        mean0, _ = base.apply(params, obs)
        mean1, _ = shifted.apply(params, obs)
        np.testing.assert_allclose(mean1 - mean0, np.tile([0.0, 0.75, 0.75, 0.75], (6, 1)), atol=1e-6)
    with pytest.raises(ConfigError, match=r"network.socket_action_init: [0-9.]+ needs an environment with a socket layout"):
        networks.make_actor(_net(kind="mlp", socket_action_init=1.0), TargetActionEnv(), None)
