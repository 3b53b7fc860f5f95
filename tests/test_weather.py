"""Held-out conditions: packaged weather years, the year drawn per episode, noisy forecasts.

Profiles are compared with ``profiles.builtin_profile`` (the packaged files), statistics with
their stated distributions (wide margins), never with the environment's own output.
"""
from __future__ import annotations

import importlib.resources
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from test_reference import tiny_scenario

from oe3jax.simulation import profiles
from oe3jax.simulation.env import make_env, make_params
from oe3jax.simulation.reference import ReferenceEnv
from oe3jax.simulation.scenario import (EVAL_YEARS, HOURS_PER_YEAR, TRAIN_YEARS, get_scenario, scenario_profiles,
                                        split_weather_years)

SYNTHETIC = ("syn1", "syn2", "syn3", "syn4", "syn5")
PV_TARGET_KWH = 8.15e6  # the 2024 profile's annual energy (make_profiles.py's calibration target)
MALL_ANNUAL_KWH = 12_368_653.0
MALL_PEAK_KW = 2763.0
N_FC = 6  # the default forecast offsets (0, 1, 2, 3, 6, 12)
FC_PV, FC_MALL = slice(6, 6 + N_FC), slice(6 + N_FC, 6 + 2 * N_FC)


# --------------------------------------------------------------------------- packaged years
def test_packaged_years_are_small_and_named():
    data = importlib.resources.files("oe3jax.simulation") / "data"
    with importlib.resources.as_file(data) as folder:
        assert sum(entry.stat().st_size for entry in folder.iterdir()) < 2_000_000
    assert profiles.WEATHER_YEARS == ("2024",) + SYNTHETIC
    with (data / profiles.YEARS_FILE).open("rb") as handle, np.load(handle) as npz:
        assert tuple(npz["names"].tolist()) == SYNTHETIC
        assert npz["pv_dkw"].dtype == np.uint16 and npz["pv_dkw"].shape == (5, HOURS_PER_YEAR)


@pytest.mark.parametrize("year", SYNTHETIC)
def test_synthetic_year_has_the_site_statistics(year):
    pv = profiles.builtin_profile("pv_kw", year)
    mall = profiles.builtin_profile("mall_kw", year)
    assert pv.shape == mall.shape == (HOURS_PER_YEAR,) and pv.dtype == np.float64
    assert not pv.flags.writeable and profiles.builtin_profile("pv_kw", year) is pv
    # the same plant: within its AC limit, dark at night, 4 % of the 2024 energy either way
    assert pv.min() == 0.0 and pv.max() <= 3201.0
    day = pv.reshape(365, 24)
    assert day[:, :6].max() == 0.0 and day[:, 19:].max() == 0.0
    assert abs(pv.sum() / PV_TARGET_KWH - 1.0) < 0.04
    # the same building: the meter's annual energy and peak
    assert mall.sum() == pytest.approx(MALL_ANNUAL_KWH, rel=1e-4)
    assert mall.max() == pytest.approx(MALL_PEAK_KW, abs=0.5)
    summary = profiles.weather_year_summary(year)
    assert summary["pv_kwh"] == pytest.approx(pv.sum()) and summary["mall_peak_kw"] == mall.max()
    assert 0.08 < summary["pv_daily_cv"] < 0.25


def test_weather_years_differ_day_by_day():
    daily = np.array([profiles.builtin_profile("pv_kw", y).reshape(365, 24).sum(axis=1)
                      for y in profiles.WEATHER_YEARS])
    corr = np.corrcoef(daily)
    off_diagonal = corr[~np.eye(len(daily), dtype=bool)]
    assert off_diagonal.max() < 0.5  # other clouds, not a copy (2024 is seed 2024, the others 1..5)


def test_unknown_year_is_one_line_naming_the_accepted_ones():
    with pytest.raises(ValueError, match=r"^weather year: expected one of '2024', 'syn1'.*got '2023'$"):
        profiles.builtin_profile("pv_kw", "2023")


@pytest.mark.parametrize("value, match", [
    (("2023",), r"weather_years\[0\] = '2023'; expected a non-empty list of distinct names out of 2024, syn1"),
    ((), r"weather_years = \(\); expected a non-empty list"),
    ("2024", r"weather_years = '2024'; expected a non-empty list"),
    (("syn1", "syn1"), r"weather_years = \('syn1', 'syn1'\); expected a non-empty list of distinct names"),
])
def test_bad_weather_years_are_one_line(value, match):
    with pytest.raises(ValueError, match=r"^scenario 'iquitos-128': " + match) as exc:
        get_scenario("iquitos-128", weather_years=value)
    assert "\n" not in str(exc.value)


def test_given_profiles_replace_the_packaged_ones_in_every_year():
    flat = np.full(HOURS_PER_YEAR, 2000.0)
    scn = get_scenario("iquitos-128", weather_years=("syn1", "syn2"), mall_profile=flat)
    pv, mall = scenario_profiles(scn)
    np.testing.assert_array_equal(mall, np.stack([flat, flat]))
    np.testing.assert_array_equal(pv[1], profiles.builtin_profile("pv_kw", "syn2"))
    with pytest.raises(ValueError, match=r"weather_years = \('syn1', 'syn2'\); expected a single year when both"):
        get_scenario("iquitos-128", weather_years=("syn1", "syn2"), mall_profile=flat, pv_profile=flat)


def test_split_keeps_training_and_evaluation_years_apart():
    base = get_scenario("iquitos-128", reward="peak")
    train, test = split_weather_years(base)
    assert train.weather_years == TRAIN_YEARS and test.weather_years == EVAL_YEARS
    assert not set(TRAIN_YEARS) & set(EVAL_YEARS)
    assert set(TRAIN_YEARS) | set(EVAL_YEARS) == set(profiles.WEATHER_YEARS)
    assert train.reward == test.reward == "peak"
    with pytest.raises(ValueError, match=r"eval_years = \['syn3', 'syn4'\] share syn3 with train_years") as exc:
        split_weather_years(base, ("2024", "syn3"), ("syn3", "syn4"))
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match=r"weather_years\[0\] = 'syn9'"):
        split_weather_years(base, ("syn9",), ("syn1",))


def test_scales_are_shared_by_training_and_evaluation_years():
    """Reward and observation scales come from every packaged year, so train and eval agree."""
    peak = max(profiles.builtin_profile("mall_kw", y).max() for y in profiles.WEATHER_YEARS)
    for years in (("2024",), TRAIN_YEARS, EVAL_YEARS, ("syn5",)):
        _, params = make_env("iquitos-128", weather_years=years)
        assert float(params.mall_ref_kw) == pytest.approx(peak)
        assert float(params.grid_ref_kw) == pytest.approx(peak + 272.0 + 1200.0)
        assert ReferenceEnv(get_scenario("iquitos-128", weather_years=years)).grid_ref_kw == pytest.approx(peak + 1472.0)


# --------------------------------------------------------------------------- the year of an episode
def test_params_stack_the_years_in_order():
    years = ("syn4", "2024", "syn1")
    _, params = make_env("iquitos-38", weather_years=years)
    assert params.pv_kw.shape == params.mall_kw.shape == (3, HOURS_PER_YEAR)
    for row, year in enumerate(years):
        np.testing.assert_array_equal(np.asarray(params.pv_kw[row]), profiles.builtin_profile("pv_kw", year).astype(np.float32))
        np.testing.assert_array_equal(np.asarray(params.mall_kw[row]),
                                      profiles.builtin_profile("mall_kw", year).astype(np.float32))


def test_year_draw_covers_every_year_uniformly_and_repeats_with_the_key():
    env, params = make_env("iquitos-38", weather_years=profiles.WEATHER_YEARS)
    keys = jax.random.split(jax.random.key(8), 3000)
    draw = jax.jit(jax.vmap(lambda k: env.initial_year(k, params)))
    years = np.asarray(draw(keys))
    counts = np.bincount(years, minlength=6)
    assert counts.size == 6 and counts.min() > 0
    assert stats.chisquare(counts).pvalue > 1e-4
    np.testing.assert_array_equal(years, np.asarray(draw(keys)))
    # reset uses that year, and the first hour's mall load is that year's

    @jax.jit
    def first_hour(keys):
        _, states = jax.vmap(env.reset, (0, None))(keys, params)
        step = jax.vmap(env.step_env, (0, 0, None, None))
        return states, step(keys, states, jnp.zeros(env.num_actions), params)[4]

    states, info = first_hour(keys[:64])
    np.testing.assert_array_equal(np.asarray(states.year), years[:64])
    for i in range(64):
        name = profiles.WEATHER_YEARS[years[i]]
        assert float(info["flows"]["mall_kwh"][i]) == np.float32(profiles.builtin_profile("mall_kw", name)[0])


def test_start_day_and_year_are_drawn_independently():
    env, params = make_env("iquitos-38", weather_years=("2024", "syn1"), random_start=True)
    keys = jax.random.split(jax.random.key(9), 4000)
    years = np.asarray(jax.jit(jax.vmap(lambda k: env.initial_year(k, params)))(keys))
    days = np.asarray(jax.jit(jax.vmap(lambda k: env.initial_conditions(k, params)[0]))(keys)) // 24
    table = np.array([np.bincount(days[years == y] // 73, minlength=5) for y in (0, 1)])  # 5 blocks of 73 days
    assert stats.chi2_contingency(table).pvalue > 1e-4


def test_an_automatic_reset_draws_a_new_year():
    env, params = make_env("iquitos-38", weather_years=profiles.WEATHER_YEARS, episode_hours=1)
    keys = jax.random.split(jax.random.key(10), 600)

    @jax.jit
    def one_step(keys):
        _, states = jax.vmap(env.reset, (0, None))(keys, params)
        step = jax.vmap(env.step, (0, 0, None, None))
        _, after, _, _, truncated, _ = step(jax.random.split(keys[0], 600), states, jnp.zeros(env.num_actions), params)
        return states, after, truncated

    states, after, truncated = one_step(keys)
    assert np.asarray(truncated).all()
    before, after = np.asarray(states.year), np.asarray(after.year)
    assert set(after.tolist()) == set(range(6))
    assert 0.08 < np.mean(before == after) < 0.28  # 1/6 keep their year by chance


def test_reference_draws_years_from_its_generator():
    def years(seed: int) -> list[int]:
        env = ReferenceEnv(tiny_scenario(weather_years=("2024", "syn1", "syn2"), mall_profile=None), seed=seed)
        out = []
        for _ in range(200):
            env.reset(start_hour=0)
            out.append(env.year)
        return out

    assert set(years(4)) == {0, 1, 2} and years(4) == years(4) and years(4) != years(5)
    env = ReferenceEnv(tiny_scenario(weather_years=("2024", "syn1", "syn2"), mall_profile=None), seed=4)
    with pytest.raises(ValueError, match=r"^year = 3; expected an index in \[0, 2\] into weather_years"):
        env.reset(start_hour=0, year=3)


# --------------------------------------------------------------------------- noisy forecasts
def _noise_sample(pv_frac: float, mall_frac: float, n: int = 20_000):
    """Observations of one state (1 March 06:00) under n forecast-noise seeds, and the perfect features."""
    env, params = make_env("iquitos-38", pv_forecast_noise_frac=pv_frac, mall_forecast_noise_frac=mall_frac)
    _, state = env.reset(jax.random.key(0), params)
    t = 59 * 24 + 6
    state = state.replace(t=jnp.int32(t))
    seeds = jax.random.bits(jax.random.key(1), (n,), jnp.uint32)
    obs = jax.jit(jax.vmap(lambda s: env.get_obs(state.replace(obs_seed=s), params)))(seeds)
    ahead = (t + np.array([0, 1, 2, 3, 6, 12])) % HOURS_PER_YEAR
    pv = profiles.builtin_profile("pv_kw")[ahead] / 3201.0
    mall = profiles.builtin_profile("mall_kw")[ahead] / MALL_PEAK_KW
    return np.asarray(obs, np.float64), pv, mall


def test_forecast_noise_is_log_normal_with_the_stated_sigma():
    pv_frac, mall_frac = 0.4, 0.1
    obs, pv, mall = _noise_sample(pv_frac, mall_frac)
    lead = np.array([0, 1, 2, 3, 6, 12]) + 1.0
    for feature, truth, frac in ((obs[:, FC_PV], pv, pv_frac), (obs[:, FC_MALL], mall, mall_frac)):
        for j in range(N_FC):
            if truth[j] == 0.0:  # no sun: a forecast of nothing stays nothing
                assert (feature[:, j] == 0.0).all()
                continue
            sigma = frac * math.sqrt(lead[j] / 24.0)
            ratio = feature[:, j] / truth[j]
            n = ratio.size
            # mean one: E[exp(sigma z - sigma^2 / 2)] = 1, variance exp(sigma^2) - 1
            se = math.sqrt((math.exp(sigma**2) - 1.0) / n)
            assert abs(ratio.mean() - 1.0) < 5 * se + 1e-6, (j, ratio.mean())
            assert ratio.var() / (math.exp(sigma**2) - 1.0) == pytest.approx(1.0, abs=0.1)
            logs = np.log(ratio)
            assert logs.std() == pytest.approx(sigma, rel=0.05)
            assert stats.skew(logs) == pytest.approx(0.0, abs=0.1)
    assert pv[0] > 0 and pv[-1] == 0.0  # the sample held sunny and dark hours


def test_without_noise_the_forecasts_are_the_profile():
    obs, pv, mall = _noise_sample(0.0, 0.0, n=64)
    np.testing.assert_allclose(obs[:, FC_PV], np.broadcast_to(pv, (64, N_FC)), rtol=1e-6)
    np.testing.assert_allclose(obs[:, FC_MALL], np.broadcast_to(mall, (64, N_FC)), rtol=1e-6)


def test_noise_leaves_the_physics_alone():
    """Same keys and actions with and without noise: every flow, reward and state is equal."""
    env, quiet = make_env("iquitos-38", episode_hours=48)
    noisy = make_params(get_scenario("iquitos-38", pv_forecast_noise_frac=0.8, mall_forecast_noise_frac=0.5),
                        episode_hours=48)

    @jax.jit
    def run(params, key):
        _, state = env.reset(key, params)

        def body(state, k):
            ka, ks = jax.random.split(k)
            a = jax.random.uniform(ka, (env.num_actions,), minval=-1, maxval=1)
            obs, state, r, _, _, info = env.step(ks, state, a, params)
            return state, (obs, r, info["flows"], state.energy_kwh, state.need_kwh)

        return jax.lax.scan(body, state, jax.random.split(key, 48))[1]

    a, b = run(quiet, jax.random.key(3)), run(noisy, jax.random.key(3))
    for x, y in zip(jax.tree.leaves(a[1:]), jax.tree.leaves(b[1:])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    obs_a, obs_b = np.asarray(a[0]), np.asarray(b[0])
    forecasts = np.zeros(obs_a.shape[-1], bool)
    forecasts[6:6 + 2 * N_FC] = True
    np.testing.assert_array_equal(obs_a[:, ~forecasts], obs_b[:, ~forecasts])
    assert not np.array_equal(obs_a[:, forecasts], obs_b[:, forecasts])


@pytest.mark.parametrize("field", ["pv_forecast_noise_frac", "mall_forecast_noise_frac"])
def test_noise_fields_are_checked(field):
    with pytest.raises(ValueError, match=rf"^scenario 'iquitos-128': {field} = 1\.5; expected a number in \[0, 1\]"):
        get_scenario("iquitos-128", **{field: 1.5})
    assert get_scenario("iquitos-128").pv_forecast_noise_frac == 0.0


def test_make_profiles_reproduces_the_shipped_years(tmp_path):
    """The packaged files are what ``scripts/make_profiles.py --package`` writes (needs the data extra)."""
    pytest.importorskip("pvlib")
    pytest.importorskip("pandas")
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_profiles.py"
    subprocess.run([sys.executable, str(script), "--package", "--out-dir", str(tmp_path)], check=True,
                   capture_output=True, timeout=600)
    data = importlib.resources.files("oe3jax.simulation") / "data"
    assert (tmp_path / profiles.BUILTIN_FILE).read_bytes() == (data / profiles.BUILTIN_FILE).read_bytes()
    with np.load(tmp_path / profiles.YEARS_FILE) as made, (data / profiles.YEARS_FILE).open("rb") as handle, \
            np.load(handle) as shipped:
        assert sorted(made.files) == sorted(shipped.files)
        for name in made.files:
            np.testing.assert_array_equal(made[name], shipped[name])
