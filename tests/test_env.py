"""The JAX environment: conservation laws, limits, jit/vmap/seed behaviour and input errors.

The expected values come from the physics (energy balance, SOC window, ratings) or from hand
computation, never from the environment's own output.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from oe3jax.simulation.env import TOTAL_KEYS, make_env
from oe3jax.simulation.scenario import HOURS_PER_YEAR, get_scenario


@pytest.fixture(scope="module")
def env128():
    return make_env("iquitos-128")


@partial(jax.jit, static_argnums=(0, 2, 3))
def _run(env, params, n_steps, n_envs, key, nan_frac, stretch):
    a_dim = env.num_actions
    keys = jax.random.split(key, n_envs)
    _, state = jax.vmap(env.reset, (0, None))(keys, params)

    def body(state, k):
        ka, kn, ks = jax.random.split(k, 3)
        a = jax.random.uniform(ka, (n_envs, a_dim), minval=-stretch, maxval=stretch)
        a = jnp.where(jax.random.uniform(kn, a.shape) < nan_frac, jnp.nan, a)
        e_before = state.energy_kwh
        _, state, r, term, trunc, info = jax.vmap(env.step, (0, 0, 0, None))(
            jax.random.split(ks, n_envs), state, a, params)
        return state, (info["flows"], info["terms"], r, term, trunc, e_before, state.energy_kwh, a)

    return jax.lax.scan(body, state, jax.random.split(key, n_steps))


def _rollout(env, params, n_steps, n_envs, seed=0, nan_frac=0.0, stretch=1.0):
    """Random actions (uniform in [-stretch, stretch], some NaN) for n_envs envs over n_steps.

    One compiled program per (env, n_steps, n_envs): the other arguments are traced.
    """
    return _run(env, params, n_steps, n_envs, jax.random.key(seed), jnp.float32(nan_frac), jnp.float32(stretch))


def test_energy_balance_full_year_vmapped(env128):
    """Every hour of a year, in 4 vmapped envs with random actions: both balances hold."""
    env, params = env128
    _, (f, terms, r, term, trunc, e0, e1, a) = _rollout(env, params, HOURS_PER_YEAR, 4, nan_frac=0.02, stretch=1.2)
    f = {k: np.asarray(v, np.float64) for k, v in f.items()}
    scale = 4 * np.finfo(np.float32).eps * float(params.grid_ref_kw)
    lhs = f["pv_used"] + f["grid_import"] + f["bess_discharge"]
    rhs = f["mall_kwh"] + f["ev_kwh"] + f["bess_charge"]
    assert np.max(np.abs(lhs - rhs)) < scale
    assert np.max(np.abs(f["pv_used"] + f["pv_curtailed"] - f["pv_kwh"])) < scale
    for k in ("grid_import", "pv_curtailed", "pv_used", "ev_kwh", "bess_charge", "bess_discharge", "unmet_kwh"):
        assert f[k].min() >= -scale, k
    # the profiles come through exactly
    np.testing.assert_allclose(f["pv_kwh"][:, 0], np.asarray(params.pv_kw)[0], rtol=0, atol=0)
    np.testing.assert_allclose(f["mall_kwh"][:, 0], np.asarray(params.mall_kw)[0], rtol=0, atol=0)
    # never charge and discharge in the same hour; never export
    assert np.all((f["bess_charge"] == 0) | (f["bess_discharge"] == 0))
    assert np.all(f["bess_discharge"] <= f["mall_kwh"] + f["ev_kwh"] - np.minimum(f["pv_kwh"], f["mall_kwh"] + f["ev_kwh"]) + scale)
    # reward terms and total in [-1, 1]; truncation only at the year's end, never termination
    for k, v in terms.items():
        assert np.all(np.abs(np.asarray(v)) <= 1.0), k
    assert np.all(np.abs(np.asarray(r)) <= 1.0)
    assert not np.any(np.asarray(term))
    trunc = np.asarray(trunc)
    assert trunc[-1].all() and not trunc[:-1].any()


def test_battery_limits_and_integration(env128):
    """SOC window, power rating and E' = E + eta_c*charge - discharge/eta_d, hour by hour."""
    env, params = env128
    scn = env.scenario
    _, (f, _, _, _, trunc, e0, e1, _) = _rollout(env, params, HOURS_PER_YEAR, 4, seed=3, stretch=1.5)
    # the last step auto-resets (its state is the next episode's): compare the 8,759 others
    e0, e1 = np.asarray(e0, np.float64)[:-1], np.asarray(e1, np.float64)[:-1]
    ch, dis = np.asarray(f["bess_charge"], np.float64)[:-1], np.asarray(f["bess_discharge"], np.float64)[:-1]
    tol = 1e-3
    lo, hi = scn.soc_min * scn.capacity_kwh, scn.soc_max * scn.capacity_kwh
    assert e1.min() >= lo - tol and e1.max() <= hi + tol
    assert ch.max() <= scn.power_kw + tol and dis.max() <= scn.power_kw + tol
    eta = math.sqrt(scn.round_trip_eff)
    np.testing.assert_allclose(e1, e0 + eta * ch - dis / eta, atol=2e-3)
    # the battery is actually used both ways by random actions
    assert ch.sum() > 0 and dis.sum() > 0


def test_nan_action_counts_as_zero(env128):
    env, params = env128
    key = jax.random.key(7)
    _, state = env.reset(key, params)
    a_nan = jnp.full((env.num_actions,), jnp.nan)
    a_zero = jnp.zeros((env.num_actions,))
    out_nan = env.step(key, state, a_nan, params)
    out_zero = env.step(key, state, a_zero, params)
    for x, y in zip(jax.tree.leaves(out_nan), jax.tree.leaves(out_zero)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# (action for an env of n sockets, error, end of the message, whether JAX can trace it in a user's jit)
BAD_ACTIONS = [
    (lambda n: jnp.zeros(n - 1), ValueError, r"got shape \(128,\)", True),
    (lambda n: jnp.zeros(38 + 1), ValueError, r"got shape \(39,\)", True),     # another scenario's size
    (lambda n: jnp.zeros((1, n)), ValueError, r"got shape \(1, 129\)", True),
    (lambda n: jnp.zeros(()), ValueError, r"got shape \(\)", True),
    (lambda n: [0.0] * (n - 1), ValueError, r"got shape \(128,\)", False),
    (lambda n: jnp.zeros(n, jnp.complex64), TypeError, "complex64", True),     # imaginary part would be dropped
    (lambda n: np.zeros(n, np.complex128), TypeError, "complex", True),
    (lambda n: np.array(["1"] * n), TypeError, "<U1", False),
    (lambda n: "charge", TypeError, "str", False),
    (lambda n: None, TypeError, "NoneType", False),
]


@pytest.mark.parametrize("make_action, error, got, traceable", BAD_ACTIONS)
def test_malformed_action_is_rejected_naming_action_shape_and_scenario(env128, make_action, error, got, traceable):
    """Rejected before any JAX error, by step and step_env, called directly or (for what JAX can
    trace at all) inside a user's jit."""
    env, params = env128
    obs, state = env.reset(jax.random.key(0), params)
    action = make_action(env.num_actions)
    steps = [env.step, env.step_env] + ([jax.jit(env.step), jax.jit(env.step_env)] if traceable else [])
    for step in steps:
        with pytest.raises(error, match=r"^action: .*\(129,\).*'iquitos-128'.*" + got) as exc:
            step(jax.random.key(1), state, action, params)
        assert "\n" not in str(exc.value)


def test_action_check_under_vmap_sees_one_env(env128):
    env, params = env128
    keys = jax.random.split(jax.random.key(0), 2)
    _, state = jax.vmap(env.reset, (0, None))(keys, params)
    step = jax.vmap(env.step, (0, 0, 0, None))
    with pytest.raises(ValueError, match=r"^action: expected shape \(129,\).*got shape \(128,\)"):
        step(keys, state, jnp.zeros((2, env.num_actions - 1)), params)
    with pytest.raises(TypeError, match="complex64"):
        step(keys, state, jnp.zeros((2, env.num_actions), jnp.complex64), params)


def test_int_bool_and_list_actions_act_like_floats(env128):
    """Socket 1 (moto, 2 kW) wants 4 kWh: an action of 1 at its index, as an int, bool or float
    list, delivers the 2 kW rating for the hour."""
    env, params = env128
    _, state = env.reset(jax.random.key(0), params)
    n = env.n_sockets
    state = state.replace(t=jnp.int32(14), occupied=jnp.zeros(n, bool).at[1].set(True),
                          need_kwh=jnp.zeros(n).at[1].set(4.0), hours_left=jnp.zeros(n, jnp.int32).at[1].set(3))
    one_hot = np.zeros(env.num_actions)
    one_hot[2] = 1  # index 0 is the battery, socket 1 is action 2

    @jax.jit
    def ev_kwh(key, state, a_int, a_bool):  # one compile for both dtypes
        return [env.step_env(key, state, a, params)[4]["flows"]["ev_kwh"] for a in (a_int, a_bool)]

    got = ev_kwh(jax.random.key(1), state, one_hot.astype(np.int32), one_hot.astype(bool))
    np.testing.assert_allclose(np.asarray(got), [2.0, 2.0], atol=1e-6)
    *_, info = env.step(jax.random.key(1), state, one_hot.tolist(), params)
    assert float(info["flows"]["ev_kwh"]) == pytest.approx(2.0, abs=1e-6)


def test_socket_delivery_rules():
    """Hand-worked hour: a socket delivers min(frac * rating, need); a free socket delivers nothing."""
    env, params = make_env("iquitos-128", soc_init=0.5)
    _, state = env.reset(jax.random.key(0), params)
    n = env.n_sockets
    occupied = jnp.zeros(n, bool).at[0].set(True).at[1].set(True).at[n - 1].set(True)
    need = jnp.zeros(n).at[0].set(0.5).at[1].set(4.0).at[n - 1].set(6.0)
    hours = jnp.zeros(n, jnp.int32).at[0].set(3).at[1].set(3).at[n - 1].set(2)
    state = state.replace(t=jnp.int32(14), occupied=occupied, need_kwh=need, hours_left=hours)
    a = jnp.zeros(env.num_actions).at[1].set(1.0).at[2].set(0.25).at[n].set(0.5).at[3].set(1.0)
    _, _, _, _, info = jax.jit(env.step_env)(jax.random.key(1), state, a, params)
    # socket 0: need 0.5 < 2 kW -> 0.5; socket 1: 0.25 * 2 kW = 0.5; taxi n-1: 0.5 * 3 kW = 1.5; socket 2 free: 0
    assert float(info["flows"]["ev_kwh"]) == pytest.approx(0.5 + 0.5 + 1.5, abs=1e-6)


def test_departure_unmet_and_served(env128):
    env, params = env128
    _, state = env.reset(jax.random.key(0), params)
    n = env.n_sockets
    occupied = jnp.zeros(n, bool).at[0].set(True).at[1].set(True)
    need = jnp.zeros(n).at[0].set(1.5).at[1].set(3.0)
    hours = jnp.zeros(n, jnp.int32).at[0].set(1).at[1].set(1)
    # 23:00: nobody arrives for midnight, so the departures are the only change
    state = state.replace(t=jnp.int32(23), occupied=occupied, need_kwh=need, hours_left=hours)
    a = jnp.zeros(env.num_actions).at[1].set(1.0).at[2].set(1.0)
    _, s2, _, _, info = jax.jit(env.step_env)(jax.random.key(1), state, a, params)
    assert float(info["flows"]["unmet_kwh"]) == pytest.approx(1.0, abs=1e-6)  # 3.0 - 2 kW
    assert float(info["vehicles"]["departed"]) == 2 and float(info["vehicles"]["served"]) == 1
    assert not bool(s2.occupied.any()) and float(s2.need_kwh.sum()) == 0.0


def test_arrivals_are_poisson_with_the_operating_factor(env128):
    """Counts drawn by the env's inverse-CDF sampler match Poisson means and variances."""
    env, params = env128
    scn = env.scenario
    f = np.asarray(scn.operating_factor)
    keys = jax.random.split(jax.random.key(11), 20000)
    for hour in (9, 14, 19, 23):
        counts = jax.vmap(lambda k: env.arrivals(env.draw(k), jnp.int32(hour), params).count_moto)(keys)
        counts = np.asarray(counts, np.float64)
        lam = scn.daily_moto * f[hour] / f.sum()
        if lam == 0:
            assert counts.max() == 0
            continue
        se = math.sqrt(lam / counts.size)
        assert abs(counts.mean() - lam) < 5 * se, (hour, counts.mean(), lam)
        assert abs(counts.var() / lam - 1) < 0.1
        # a goodness-of-fit test on the central values
        ks = np.arange(int(lam - 2 * math.sqrt(lam)), int(lam + 2 * math.sqrt(lam)))
        obs = np.array([(counts == k).sum() for k in ks])
        exp = stats.poisson.pmf(ks, lam) * counts.size
        assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-4


def test_jit_vmap_and_seed_determinism(env128):
    env, params = env128
    a = _rollout(env, params, 48, 2, seed=5)
    b = _rollout(env, params, 48, 2, seed=5)
    c = _rollout(env, params, 48, 2, seed=6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # another seed gives other arrivals
    assert not np.array_equal(np.asarray(a[0].totals["ev_kwh"]), np.asarray(c[0].totals["ev_kwh"]))
    # the vmapped envs differ from each other (per-env keys)
    need = np.asarray(a[0].totals["ev_kwh"])
    assert len(set(need.tolist())) == 2
    # un-vmapped single env equals the vmapped one
    key = jax.random.key(2)
    o1, s1 = env.reset(key, params)
    o2, s2 = jax.vmap(env.reset, (0, None))(key[None], params)
    np.testing.assert_array_equal(np.asarray(o1), np.asarray(o2[0]))


def test_vmap_over_params():
    """Params are a pytree: a vmap over two battery sizes runs in one program."""
    env, p1 = make_env("iquitos-128", capacity_kwh=2000.0)
    _, p2 = make_env("iquitos-128", capacity_kwh=4000.0)
    params = jax.tree.map(lambda x, y: jnp.stack([x, y]), p1, p2)
    key = jax.random.key(0)
    obs, state = jax.jit(jax.vmap(env.reset, (None, 0)))(key, params)
    a = jnp.zeros((2, env.num_actions)).at[:, 0].set(1.0)
    _, state2, _, _, _, info = jax.jit(jax.vmap(env.step, (None, 0, 0, 0)))(key, state, a, params)
    # midnight, no PV, both at SOC 0.5: the small battery is limited by its headroom
    # (1,000 kWh / eta_c), the large one by the 1,200 kW rating
    eta = math.sqrt(0.95)
    np.testing.assert_allclose(np.asarray(info["flows"]["bess_charge"]), [1000.0 / eta, 1200.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state2.energy_kwh), [2000.0, 2000.0 + eta * 1200.0], rtol=1e-6)


def test_observation_layout_and_soc_visible(env128):
    env, params = env128
    obs, state = env.reset(jax.random.key(0), params)
    lay = env.obs_layout
    assert obs.shape == (lay.n_global + lay.n_sockets * lay.n_socket_features,)
    assert np.all(np.isfinite(np.asarray(obs)))
    # the SOC is a plain fraction among the globals: 0.5 at reset
    soc_idx = 6 + 2 * len(env.forecast_offsets)
    assert float(obs[soc_idx]) == pytest.approx(env.scenario.soc_init)
    # sockets: the is_taxi feature marks the last n_taxi sockets
    per = np.asarray(obs[lay.n_global:]).reshape(lay.n_sockets, lay.n_socket_features)
    assert per[:, 3].sum() == env.n_taxi and per[-1, 3] == 1.0


def test_episode_totals_and_random_start():
    env, params = make_env("iquitos-38", episode_hours=48, random_start=True)
    key = jax.random.key(4)
    starts = jax.vmap(lambda k: env.initial_conditions(k, params)[0])(jax.random.split(key, 64))
    starts = np.asarray(starts)
    assert np.all(starts % 24 == 0) and len(set(starts.tolist())) > 10
    _, (f, _, r, _, trunc, _, _, _) = _rollout(env, params, 48, 2, seed=1)
    trunc = np.asarray(trunc)
    assert trunc[47].all() and not trunc[:47].any()
    assert set(TOTAL_KEYS) >= {"return", "co2_kg", "grid_kwh", "unmet_kwh"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"capacity_kwh": -5.0}, "capacity_kwh"),
        ({"soc_min": 0.9, "soc_max": 0.5}, "soc_min"),
        ({"reward": "greedy"}, "reward.*co2_focus"),
        ({"stay_probs": (0.5, 0.6)}, "stay_probs"),
        ({"batery_kwh": 3.0}, "batery_kwh.*not a scenario field"),
        ({"pv_profile": np.ones(100)}, "pv_profile.*8760"),
        ({"pv_profile": -np.ones(HOURS_PER_YEAR)}, "pv_profile.*negative"),
        ({"mall_profile": np.full(HOURS_PER_YEAR, np.nan)}, "mall_profile.*NaN"),
        ({"pv_profile": {"path": "x.csv"}}, "pv_profile"),
        ({"episode_hours": 0}, "episode_hours"),
    ],
)
def test_bad_inputs_give_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as exc:
        make_env("iquitos-128", **kwargs)
    assert "\n" not in str(exc.value)


def test_unknown_preset():
    with pytest.raises(ValueError, match="iquitos-128"):
        get_scenario("lima-5")


# ---------------------------------------------------------------------------- fast paths of the step
def test_step_words_are_jax_random_bits(env128):
    """The fused Threefry of ``draw`` gives the words ``jax.random.bits`` gives for the same keys."""
    env, _ = env128
    keys = jax.random.split(jax.random.key(11), 257)
    expected = jax.vmap(lambda k: jax.random.bits(k, (4,), jnp.uint32))(keys)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(env.draw))(keys)), np.asarray(expected))
    rbg = jax.random.key(3, impl="rbg")  # another key type goes through jax.random.bits itself
    np.testing.assert_array_equal(np.asarray(env.draw(rbg)), np.asarray(jax.random.bits(rbg, (4,), jnp.uint32)))


@pytest.mark.parametrize("n, split", [(0, 0), (1, 0), (1, 1), (31, 31), (32, 16), (33, 32), (38, 30), (112, 112),
                                      (128, 112), (128, 0), (130, 97)])
def test_free_socket_rank_is_an_exclusive_prefix_count_within_its_group(n, split):
    from oe3jax.simulation.env import _group_ranks

    flags = np.random.default_rng(n).random((40, n)) < np.linspace(0.0, 1.0, 40)[:, None]
    rank, first, second = jax.jit(jax.vmap(lambda f: _group_ranks(f, split)))(jnp.asarray(flags))
    expected = np.array([[row[:i].sum() if i < split else row[split:i].sum() for i in range(n)] for row in flags],
                        dtype=np.int64).reshape(40, n)
    np.testing.assert_array_equal(np.asarray(rank), expected)
    np.testing.assert_array_equal(np.asarray(first), flags[:, :split].sum(axis=1))
    np.testing.assert_array_equal(np.asarray(second), flags[:, split:].sum(axis=1))


def test_forecast_errors_are_normal_quantiles_of_bin_midpoints(env128):
    """Every z is ndtri((i + 1/2) / 2**16) for a whole i: its normal CDF sits on a bin midpoint."""
    env, params = env128
    keys = jax.random.split(jax.random.key(5), 300)
    z = np.asarray(jax.vmap(lambda k: env.arrivals(env.draw(k), jnp.int32(12), params).forecast_z)(keys), np.float64)
    position = stats.norm.cdf(z) * 2**16 - 0.5
    assert np.max(np.abs(position - np.round(position))) < 0.02
    assert np.all((np.round(position) >= 0) & (np.round(position) < 2**16))
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1.0) < 0.05  # 300 x 2 x n_forecasts standard normals


def test_step_batch_is_vmapped_step_bit_for_bit():
    """The batched step (the next episodes built only at steps where one ends) returns exactly what
    ``vmap(env.step)`` does, with episodes of the batch ending at different steps, a grid limit
    that cuts EV charging, forecast noise and NaN actions."""
    env, params = make_env("iquitos-38", episode_hours=9, start_hour=15, grid_limit_kw=1500.0,
                           pv_forecast_noise_frac=0.3)
    n = 16
    _, state0 = jax.vmap(env.reset, (0, None))(jax.random.split(jax.random.key(2), n), params)
    state0 = state0.replace(k=jnp.arange(n, dtype=jnp.int32) % 9)  # ends spread over the steps

    def run(step):
        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (n, env.num_actions), minval=-1.2, maxval=1.2)
            a = a.at[0, 3].set(jnp.nan)
            out = step(jax.random.split(ks, n), state, a, params)
            return out[1], out
        return jax.jit(lambda s: jax.lax.scan(body, s, jax.random.split(jax.random.key(4), 20)))(state0)[1]

    got, expected = run(env.step_batch), run(jax.vmap(env.step, (0, 0, 0, None)))
    assert int(np.sum(np.asarray(expected[4]))) > 20  # episodes ended at many steps
    assert int(np.sum(np.asarray(expected[5]["flows"]["limit_ev_cut"]) > 0)) > 0  # the limit cut EV charging
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=jax.tree_util.keystr(path))


def test_step_batch_under_a_vmap_over_seeds_resets_each_seeds_own_ended_episodes():
    """Under another vmap the auto-reset's batch-level branch becomes a select over the seeds; each
    seed keeps its own states: the same as ``vmap(vmap(env.step))`` bit for bit."""
    env, params = make_env("iquitos-38", episode_hours=5)
    seeds, n = 3, 4
    keys = jax.random.split(jax.random.key(0), (seeds, n))
    _, state0 = jax.vmap(jax.vmap(env.reset, (0, None)), (0, None))(keys, params)
    # seed 0 ends an episode at steps 0 and 4 only, seed 2 at others: ends never line up across seeds
    state0 = state0.replace(k=jnp.asarray([[0, 0, 0, 0], [1, 2, 3, 4], [2, 3, 2, 3]], jnp.int32))

    def run(step):
        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (seeds, n, env.num_actions), minval=-1.0, maxval=1.0)
            out = step(jax.random.split(ks, (seeds, n)), state, a, params)
            return out[1], out
        return jax.jit(lambda s: jax.lax.scan(body, s, jax.random.split(jax.random.key(1), 7)))(state0)[1]

    got = run(jax.vmap(env.step_batch, (0, 0, 0, None)))
    expected = run(jax.vmap(jax.vmap(env.step, (0, 0, 0, None)), (0, 0, 0, None)))
    ended = np.asarray(expected[4]).any(axis=2)  # [step, seed]: an episode of the seed ended
    assert np.any(ended.any(axis=1) & ~ended.all(axis=1))  # some seeds reset at a step where others do not
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x), err_msg=jax.tree_util.keystr(path))


def test_step_batch_checks_one_env_action(env128):
    env, params = env128
    keys = jax.random.split(jax.random.key(0), 2)
    _, state = jax.vmap(env.reset, (0, None))(keys, params)
    with pytest.raises(ValueError, match=r"^action: expected shape \(129,\).*got shape \(128,\)"):
        env.step_batch(keys, state, jnp.zeros((2, env.num_actions - 1)), params)
    with pytest.raises(ValueError, match=r"^action: expected a batch of actions of shape \(num_envs, 129\)"):
        env.step_batch(keys, state, jnp.float32(0.0), params)

