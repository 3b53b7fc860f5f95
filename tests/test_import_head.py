"""The ``import`` battery head: import levels between which the battery keeps the hour's net load.

The net load is recomputed here from the environment's state and profiles (not from the
observation the head reads), with the step's own EV delivery rule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from oe3jax.learning import networks
from oe3jax.schema import ConfigError, resolve
from oe3jax.simulation.env import make_env

NET = {"kind": "socket_shared", "battery_head": "import", "hidden_sizes": [8], "socket_hidden_sizes": [8],
       "global_embed_size": 8, "socket_action_init": 1.0}


def _net(**over):
    return resolve(networks.NETWORK_SPEC, {**NET, **over})


@pytest.fixture(scope="module")
def park():
    """iquitos-38 at an evening hour with vehicles plugged, a partly charged battery."""
    env, params = make_env("iquitos-38", reward="peak", start_hour=17 * 24 + 16)
    obs, state = env.reset(jax.random.key(4), params)
    for k in range(3):  # 16:00 -> 19:00, vehicles arriving, battery idle
        action = jnp.concatenate([jnp.zeros(1), jnp.ones(env.n_sockets)])
        obs, state, *_ = env.step(jax.random.key(10 + k), state, action, params)
    assert int(state.occupied.sum()) > 0
    return env, params, obs, state


def _net_load_kw(env, params, state, socket_action):
    """mall + EV - PV of the state's hour, EV as the step delivers it (independent of the observation)."""
    t, y = int(state.t), int(state.year)
    rating = np.asarray(params.socket_kw)
    a = np.clip(np.asarray(socket_action, np.float64), -1.0, 1.0)
    ev = np.where(np.asarray(state.occupied), np.minimum(np.maximum(a, 0.0) * rating, np.asarray(state.need_kwh)), 0.0)
    return float(params.mall_kw[y, t]) + ev.sum() - float(params.pv_kw[y, t])


def _with_levels(actor_params, level_frac, charge_frac=0.0):
    """The actor's parameters with the import head's levels fixed (fractions of grid_ref_kw)."""
    p = jax.tree.map(jnp.asarray, actor_params)
    out = p["params"]["battery_out"]
    out["kernel"] = jnp.zeros_like(out["kernel"])
    out["bias"] = jnp.zeros_like(out["bias"]).at[0].set(level_frac).at[1].set(charge_frac)
    return p


@pytest.mark.parametrize("level_kw, charge_kw", [(0.0, 0.0), (400.0, 0.0), (1500.0, 0.0), (1500.0, 1400.0),
                                                 (3000.0, 2900.0), (500.0, 900.0)])
def test_battery_mean_keeps_the_import_between_the_levels(park, level_kw, charge_kw):
    env, params, obs, state = park
    actor = networks.make_actor(_net(), env, params)
    p = actor.init(jax.random.key(0), obs)
    ref = float(params.grid_ref_kw)
    p = _with_levels(p, level_kw / ref, charge_kw / ref)
    mean, _ = actor.apply(p, obs)
    net = _net_load_kw(env, params, state, mean[1:])
    charge_kw = min(charge_kw, level_kw)  # a charge level above the discharge level is the discharge level
    expected = (min(max(net, charge_kw), level_kw) - net) / float(params.power_kw)
    assert float(mean[0]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("month_peak_kw, offset_kw", [(2200.0, 0.0), (2200.0, -700.0), (900.0, 300.0)])
def test_month_peak_base_discharges_above_the_month_to_date_peak(park, month_peak_kw, offset_kw):
    # import_level_base month_peak: the discharge level is the state's month-to-date peak plus the output
    env, params, _, state = park
    state = state.replace(month_peak_kw=jnp.float32(month_peak_kw))
    obs = env.get_obs(state, params)
    actor = networks.make_actor(_net(import_level_base="month_peak"), env, params)
    ref = float(params.grid_ref_kw)
    p = _with_levels(actor.init(jax.random.key(0), obs), offset_kw / ref)
    mean, _ = actor.apply(p, obs)
    net = _net_load_kw(env, params, state, mean[1:])
    level_kw = month_peak_kw + offset_kw
    assert net > 0.0
    expected = (min(max(net, 0.0), level_kw) - net) / float(params.power_kw)
    assert float(mean[0]) == pytest.approx(expected, abs=1e-4)


def test_ratchet_base_with_zero_outputs_is_the_ratchet_rule():
    # import_level_base ratchet, every battery output at 0 and the vehicles at full power: hour by hour
    # over three days that cross a month's end (the month-to-date peak restarts), the head's action
    # gives the ratchet rule's grid import and battery energy, both rolled out through the env
    from oe3jax.control.rules import make_ratchet

    env, params = make_env("iquitos-38", reward="peak", start_hour=29 * 24)
    actor = networks.make_actor(_net(import_level_base="ratchet"), env, params)
    rule = make_ratchet(env.scenario)
    obs, state = env.reset(jax.random.key(3), params)
    p = _with_levels(actor.init(jax.random.key(0), obs), 0.0)
    p["params"]["socket_out"]["kernel"] = jnp.zeros_like(p["params"]["socket_out"]["kernel"])
    apply = jax.jit(lambda o: networks.deterministic_action(actor.apply(p, o)[0], "clip"))
    step = jax.jit(env.step)
    states = {"head": (obs, state), "rule": (obs, state)}
    trace = []
    for k in range(72):
        got = {}
        for name in states:
            o, s = states[name]
            action = apply(o) if name == "head" else rule(o, s, params)
            o, s, _, _, _, info = step(jax.random.key(100 + k), s, action, params)
            states[name] = (o, s)
            got[name] = (float(info["flows"]["grid_import"]), float(s.energy_kwh), float(s.month_peak_kw))
        assert got["head"] == pytest.approx(got["rule"], rel=1e-4, abs=1e-2), k
        trace.append(got["rule"])
    energy, peak = np.array([g[1] for g in trace]), np.array([g[2] for g in trace])
    # the stretch is not trivial: the battery charged and discharged, and the month's peak restarted
    assert np.any(np.diff(energy) > 10.0) and np.any(np.diff(energy) < -10.0)
    assert np.any(np.diff(peak) < 0.0)


@pytest.mark.parametrize("month_peak_kw, offset_kw", [(2200.0, 0.0), (2200.0, 300.0), (900.0, 300.0), (900.0, -400.0)])
def test_ratchet_base_output_moves_the_floor_not_the_month_peak(park, month_peak_kw, offset_kw):
    # at 19:00 (a hold hour) the discharge level is max(month-to-date peak, floor + output), the floor
    # being 0.6 of the mall's reference peak; an output on top of the month's peak would compound
    from oe3jax.control.rules import RATCHET_FLOOR_FRAC

    env, params, _, state = park
    assert int(state.t) % 24 == 19
    state = state.replace(month_peak_kw=jnp.float32(month_peak_kw))
    obs = env.get_obs(state, params)
    actor = networks.make_actor(_net(import_level_base="ratchet"), env, params)
    p = _with_levels(actor.init(jax.random.key(0), obs), offset_kw / float(params.grid_ref_kw))
    mean, _ = actor.apply(p, obs)
    net = _net_load_kw(env, params, state, mean[1:])
    level_kw = max(month_peak_kw, RATCHET_FLOOR_FRAC * float(params.mall_ref_kw) + offset_kw)
    assert net > 0.0
    expected = (min(max(net, 0.0), level_kw) - net) / float(params.power_kw)
    assert float(mean[0]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("level_kw, residual", [(1500.0, -0.3), (3000.0, -0.5), (400.0, 0.2)])
def test_residual_action_is_added_to_the_dispatch(park, level_kw, residual):
    # import_residual: a third output, a battery action added to the levels' dispatch (here at an hour
    # where the dispatch idles, one where it discharges, and one where it adds a charge)
    env, params, obs, state = park
    actor = networks.make_actor(_net(import_residual=True), env, params)
    ref = float(params.grid_ref_kw)
    p = _with_levels(actor.init(jax.random.key(0), obs), level_kw / ref)
    p["params"]["battery_out"]["bias"] = p["params"]["battery_out"]["bias"].at[2].set(residual)
    assert p["params"]["battery_out"]["bias"].shape == (3,)
    mean, _ = actor.apply(p, obs)
    net = _net_load_kw(env, params, state, mean[1:])
    expected = (min(max(net, 0.0), level_kw) - net) / float(params.power_kw) + residual
    assert float(mean[0]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("level_kw, charge_kw, width_kw", [(3000.0, 200.0, 300.0), (3000.0, 200.0, 0.0),
                                                          (400.0, 0.0, 300.0), (2400.0, 2300.0, 100.0)])
def test_gradient_width_keeps_the_value_and_smooths_the_gradient(park, level_kw, charge_kw, width_kw):
    # import_gradient_kw w: the battery's mean is the hard dispatch's; its gradient with respect to the
    # levels is that of net - w softplus((net - L) / w) + w softplus((C - net) / w): sigmoid((net - L) / w)
    # for L, sigmoid((C - net) / w) for C, nonzero also where the battery idles (0 for w = 0 there)
    env, params, obs, state = park
    actor = networks.make_actor(_net(import_gradient_kw=width_kw), env, params)
    ref, power = float(params.grid_ref_kw), float(params.power_kw)
    p = _with_levels(actor.init(jax.random.key(0), obs), level_kw / ref, charge_kw / ref)
    mean, _ = actor.apply(p, obs)
    net = _net_load_kw(env, params, state, mean[1:])
    assert float(mean[0]) == pytest.approx((min(max(net, charge_kw), level_kw) - net) / power, abs=1e-4)

    def battery(bias):
        q = jax.tree.map(lambda x: x, p)
        q["params"]["battery_out"]["bias"] = bias
        return actor.apply(q, obs)[0][0]

    grad = np.asarray(jax.grad(battery)(p["params"]["battery_out"]["bias"]))
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    if width_kw > 0.0:
        expected = [ref / power * sigmoid((net - level_kw) / width_kw), ref / power * sigmoid((charge_kw - net) / width_kw)]
    else:  # the hard clip: a level's gradient only where the import sits on it
        expected = [ref / power * (net > level_kw), ref / power * (net < charge_kw)]
    np.testing.assert_allclose(grad, expected, rtol=2e-3, atol=1e-6)
    if charge_kw < net < level_kw and width_kw > 0.0:
        assert grad[0] > 0.0 and grad[1] > 0.0  # the idle band pulls both levels


@pytest.mark.parametrize("level_kw, charge_kw", [(3000.0, 2900.0), (400.0, 300.0), (3000.0, -800.0)])
def test_pv_surplus_charge_level_is_zero_whatever_the_output(park, level_kw, charge_kw):
    # import_charge_level pv_surplus: the charge level is 0 kW (every PV surplus stored, no grid energy),
    # the head's second output ignored; the discharge level still caps it
    env, params, obs, state = park
    actor = networks.make_actor(_net(import_charge_level="pv_surplus"), env, params)
    ref = float(params.grid_ref_kw)
    p = _with_levels(actor.init(jax.random.key(0), obs), level_kw / ref, charge_kw / ref)
    mean, _ = actor.apply(p, obs)
    net = _net_load_kw(env, params, state, mean[1:])
    expected = (min(max(net, min(0.0, level_kw)), level_kw) - net) / float(params.power_kw)
    assert float(mean[0]) == pytest.approx(expected, abs=1e-4)
    learned = networks.make_actor(_net(), env, params).apply(p, obs)[0]
    if charge_kw > net:  # the learned charge level would have charged from the grid here
        assert float(learned[0]) > float(mean[0]) + 0.05


def test_ev_estimate_follows_the_socket_actions(park):
    # sockets off (a socket mean of -1): the net load is the mall's minus PV, whatever is plugged
    env, params, obs, state = park
    actor = networks.make_actor(_net(socket_action_init=-1.0), env, params)
    p = actor.init(jax.random.key(0), obs)
    p["params"]["socket_out"]["kernel"] = jnp.zeros_like(p["params"]["socket_out"]["kernel"])
    p = _with_levels(p, 0.0)
    mean, _ = actor.apply(p, obs)
    t, y = int(state.t), int(state.year)
    mall_minus_pv = float(params.mall_kw[y, t] - params.pv_kw[y, t])
    assert float(mean[0]) == pytest.approx(-mall_minus_pv / float(params.power_kw), abs=1e-4)
    assert _net_load_kw(env, params, state, np.ones(env.n_sockets)) > mall_minus_pv + 1.0  # vehicles want energy


def test_zero_target_is_the_greedy_rule(park):
    # T = 0: discharge the net load (the step caps it at the load and the SOC window), store a PV surplus
    env, params, obs, state = park
    actor = networks.make_actor(_net(), env, params)
    p = _with_levels(actor.init(jax.random.key(0), obs), 0.0)
    mean, _ = actor.apply(p, obs)
    from oe3jax.control.rules import make_greedy

    greedy = make_greedy(env.scenario)(obs, state, params)
    # both discharge at the net load (greedy asks for the full rating; the step caps it at the net load)
    step = lambda a: env.step_env(jax.random.key(0), state, a, params)[4]["flows"]["bess_discharge"]
    a_head = jnp.concatenate([jnp.clip(mean[:1], -1, 1), greedy[1:]])
    assert float(step(a_head)) == pytest.approx(float(step(greedy)), rel=1e-4)


def test_global_feature_names_index_the_observation(park):
    env, params, obs, state = park
    names = env.global_features
    assert len(names) == env.obs_layout.n_global
    assert float(obs[names.index("soc")]) == pytest.approx(float(state.energy_kwh / params.capacity_kwh))
    t, y = int(state.t), int(state.year)
    assert float(obs[names.index("mall_1h")]) == pytest.approx(float(params.mall_kw[y, t + 1] / params.mall_ref_kw))
    assert float(obs[names.index("month_peak")]) == pytest.approx(float(state.month_peak_kw / params.grid_ref_kw))


def test_import_head_refusals():
    env, params = make_env("iquitos-38", forecast_offsets=(1, 2))
    with pytest.raises(ConfigError, match="network.battery_head: 'import' needs the EV park with the forecasts"):
        networks.make_actor(_net(), env, params)
    with pytest.raises(ConfigError, match="ppo.normalize_obs: network.battery_head 'import' reads the raw"):
        networks.check_battery_head(_net(), {"normalize_obs": True}, "ppo")
    with pytest.raises(ConfigError, match="network.battery_head: 'import' needs network.kind 'socket_shared'"):
        networks.check_battery_head(_net(kind="mlp"), {"normalize_obs": False}, "sac")
    networks.check_battery_head(_net(battery_head="power"), {"normalize_obs": True}, "ppo")  # no constraint
    for key, value in (("import_residual", True), ("import_level_base", "month_peak"), ("import_target_init", 0.1),
                       ("import_gradient_kw", 200.0), ("import_charge_level", "pv_surplus")):
        with pytest.raises(ConfigError, match=f"network.{key}: only used with battery_head 'import'"):
            networks.check_battery_head(_net(battery_head="power", **{key: value}), {"normalize_obs": False}, "ppo")


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac"])
def test_peak_configs_resolve_to_the_ratchet_head_on_training_years(algo):
    from pathlib import Path

    from oe3jax.training.config import default_components, make_run_env, resolve_config

    comps = default_components()
    path = Path(__file__).resolve().parent.parent / "configs" / f"peak_{algo}.yaml"
    cfg = resolve_config(algo, comps, config_file=str(path))
    assert cfg["algo"] == algo and cfg["env"]["reward"] == "peak"
    assert cfg["network"]["battery_head"] == "import" and cfg["network"]["import_level_base"] == "ratchet"
    assert cfg["network"]["import_residual"] is False and cfg["network"]["socket_action_init"] == 1.0
    per_env = cfg["total_steps"] // cfg[algo]["num_envs"]
    assert cfg["checkpoint"]["max_to_keep"] * cfg["checkpoint"]["every"] >= per_env  # every checkpoint kept
    assert cfg[algo]["shaping"] == "stored_energy" and cfg[algo]["normalize_obs"] is False
    env, params = make_run_env(cfg, comps)
    assert env.scenario.weather_years == ("2024", "syn1", "syn2", "syn3")  # syn4, syn5 held out
    networks.check_battery_head(cfg["network"], cfg[algo], algo)


def test_import_level_base_refuses_an_unknown_base():
    with pytest.raises(ConfigError, match="network.import_level_base: .*'zero', 'month_peak', 'ratchet'"):
        resolve({"network": networks.NETWORK_SPEC}, {"network": {**NET, "import_level_base": "peak"}})


def test_stored_energy_shaping_adds_the_discounted_change_of_the_stored_energy_value():
    # Phi = (w_co2 + w_cost * mean tariff / max tariff) / grid_ref_kw * eta_discharge * stored kWh,
    # here from the scenario's own numbers and the state's energy (not the observation)
    from oe3jax.learning import shaping

    env, params = make_env("iquitos-128", reward="peak", start_hour=40 * 24 + 10)
    w = env.scenario.reward_weights
    tariff = np.asarray(params.tariff, np.float64)
    per_kwh = (w["co2"] + w["cost"] * tariff.mean() / tariff.max()) / float(params.grid_ref_kw)
    value = lambda state: per_kwh * float(params.eta_discharge) * float(state.energy_kwh)
    phi = shaping.potential("stored_energy", env, params)
    assert shaping.potential("none", env, params) is None
    obs, state = env.reset(jax.random.key(1), params)
    gamma = 0.97
    for k, battery in enumerate([1.0, 1.0, -1.0, 0.0]):  # charge (PV at 10:00-11:00), discharge, idle
        action = jnp.concatenate([jnp.full(1, battery), jnp.ones(env.n_sockets)])
        next_obs, next_state, reward, *_ = env.step(jax.random.key(20 + k), state, action, params)
        for terminated in (False, True):
            got = shaping.shaped_reward(phi, reward, obs, next_obs, jnp.asarray(terminated), gamma)
            expected = float(reward) + (0.0 if terminated else gamma * value(next_state)) - value(state)
            assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert float(shaping.shaped_reward(None, reward, obs, next_obs, jnp.asarray(False), gamma)) == float(reward)
        obs, state = next_obs, next_state
    assert value(state) > 0.0


def test_a_run_saved_before_the_head_options_loads_with_their_defaults():
    from oe3jax.training.config import build_schema, default_components, resolve_config, with_new_defaults

    comps = default_components()
    saved = resolve_config("ppo", comps)
    for key in ("battery_head", "import_target_init", "import_level_base", "import_residual"):
        del saved["network"][key]
    del saved["ppo"]["shaping"]
    del saved["log"]  # a whole section added since: every key at its default
    saved["network"]["hidden_sizes"] = [7]
    filled = with_new_defaults(saved, build_schema(comps, ("ppo",)))
    assert filled["network"]["battery_head"] == "power" and filled["network"]["import_level_base"] == "zero"
    assert filled["network"]["import_target_init"] == 0.0 and filled["ppo"]["shaping"] == "none"
    assert filled["network"]["import_residual"] is False
    assert filled["network"]["hidden_sizes"] == [7]  # what was saved stays
    assert filled["log"]["print_every_s"] == 2.0 and filled["log"]["chunk_updates"] is None
    assert "battery_head" not in saved["network"]  # the saved config itself is not changed
