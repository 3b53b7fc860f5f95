"""The EV-charging park as a pure-JAX gymnax environment.

``EVChargingEnv`` implements ``docs/physics.md``: one step is one hour of the Mall de Iquitos park
(PV, mall load, a stationary battery and a park of charging sockets). Everything the physics needs
is in :class:`EnvParams` (arrays, so ``jax.vmap`` can map over environments that share params or
over params themselves); the environment object holds only what fixes array shapes.

``make_env(scenario, **overrides) -> (env, params)`` is the entry point.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces
from scipy import special, stats

from oe3jax.schema import Field
from oe3jax.simulation import rng
from oe3jax.simulation.calendar import MONTH_START_HOURS
from oe3jax.simulation.checks import check_action
from oe3jax.simulation.scenario import (HOURS_PER_YEAR, REWARD_PRESETS, REWARD_TERMS, Scenario, get_scenario,
                                        is_int, mall_peak_kw, scenario_profiles)

# Config section ``env:`` of a training run (the runner resolves it; see make_env for the meaning).
ENV_SPEC = {
    "episode_hours": Field(HOURS_PER_YEAR, int, low=1, high=10 * HOURS_PER_YEAR,
                           help="steps per episode; 8,760 = the whole year"),
    "random_start": Field(False, bool, help="start each episode at midnight of a random day"),
    "reward": Field("co2_focus", str, choices=tuple(REWARD_PRESETS), help="reward weight preset"),
}

TOTAL_KEYS = (
    "return", "grid_kwh", "co2_kg", "cost", "pv_kwh", "pv_used_kwh", "pv_curtailed_kwh", "mall_kwh",
    "ev_kwh", "unmet_kwh", "vehicles_arrived", "vehicles_admitted", "vehicles_rejected",
    "vehicles_departed", "vehicles_served", "peak_import_kw", "peak_import_evening_kw",
    "bess_charge_kwh", "bess_discharge_kwh", "grid_to_bess_kwh",
    "monthly_peaks_sum_kw", "grid_limit_violation_kwh", "limit_ev_cut_kwh", "limit_bess_cut_kwh",
)
N_OBS_BASE = 6 + 5  # calendar (6) and battery, park, tariff (5) features besides the forecasts
N_OBS_MONTH = 2  # month-to-date peak import and the fraction of the month elapsed
_MONTH_STARTS = np.asarray(MONTH_START_HOURS, np.int32)  # 13 values: each month's first hour, then 8,760
EVENING_PEAK_HOURS = (18, 22)  # [18, 22): 18:00-21:59, the evening peak of the site (peak-import KPI)
EVENING_PEAK_LABEL = f"{EVENING_PEAK_HOURS[0]:02d}:00-{EVENING_PEAK_HOURS[1] - 1:02d}:59"


class ObsLayout(NamedTuple):
    """How an observation splits: ``n_global`` features, then ``n_sockets x n_socket_features``."""

    n_global: int
    n_sockets: int
    n_socket_features: int

    @property
    def size(self) -> int:
        return self.n_global + self.n_sockets * self.n_socket_features


@struct.dataclass
class Arrivals:
    """The randomness of one hour: Poisson counts per type, one pair of uniforms per slot, and the
    standard normals of the forecast errors in the observation made at the start of that hour."""

    count_moto: jax.Array  # int32
    count_taxi: jax.Array  # int32
    u_need: jax.Array  # f32[n_sockets], slot order: moto slots then taxi slots
    u_stay: jax.Array  # f32[n_sockets]
    forecast_z: jax.Array  # f32[2, n_forecasts]: row 0 PV, row 1 mall, one per forecast offset


@struct.dataclass
class EnvState:
    t: jax.Array  # int32, hour of the year 0..8759 of the current step
    k: jax.Array  # int32, steps taken in this episode
    year: jax.Array  # int32, index of the episode's weather year in scenario.weather_years
    month_peak_kw: jax.Array  # f32, highest import of the month so far (0 at a month's or episode's start)
    obs_seed: jax.Array  # uint32, the random word behind the observation's forecast errors
    energy_kwh: jax.Array  # f32, battery energy
    occupied: jax.Array  # bool[n_sockets]
    need_kwh: jax.Array  # f32[n_sockets], energy still wanted
    hours_left: jax.Array  # int32[n_sockets], hours until departure (0 when free)
    totals: dict[str, jax.Array]  # running episode totals, keys TOTAL_KEYS

    @property
    def time(self) -> jax.Array:  # gymnax's name for the step counter
        return self.k


@struct.dataclass
class EnvParams:
    pv_kw: jax.Array  # f32[Y, 8760], one row per weather year
    mall_kw: jax.Array  # f32[Y, 8760]
    tariff: jax.Array  # f32[24] price per kWh by hour of day
    co2_kg_per_kwh: jax.Array
    capacity_kwh: jax.Array
    power_kw: jax.Array
    e_min_kwh: jax.Array
    e_max_kwh: jax.Array
    e_init_kwh: jax.Array
    eta_charge: jax.Array
    eta_discharge: jax.Array
    socket_kw: jax.Array  # f32[n_sockets]
    socket_battery_kwh: jax.Array  # f32[n_sockets]
    need_frac_min: jax.Array
    need_frac_max: jax.Array
    stay_cum: jax.Array  # f32[max_stay] cumulative stay probabilities
    close_hour: jax.Array  # int32
    cdf_moto: jax.Array  # f32[24, K] P(N <= k) of the hour's Poisson arrivals
    cdf_taxi: jax.Array  # f32[24, K]
    served_tol_kwh: jax.Array
    first_weekday: jax.Array  # int32
    weights: jax.Array  # f32[5] in REWARD_TERMS order
    grid_ref_kw: jax.Array
    pv_ac_kw: jax.Array
    mall_ref_kw: jax.Array
    ev_installed_kw: jax.Array
    ev_need_ref_kwh: jax.Array
    peak_threshold_kw: jax.Array
    grid_limit_kw: jax.Array  # f32, +inf without a limit
    grid_limit_penalty: jax.Array
    pv_forecast_sigma: jax.Array  # f32[n_forecasts], log-normal sigma of each offset's PV forecast
    mall_forecast_sigma: jax.Array  # f32[n_forecasts]
    max_steps_in_episode: jax.Array  # int32, episode length in hours
    start_hour: jax.Array  # int32, used when random_start is off
    random_start: jax.Array  # bool


# ndtri of the midpoints of the 2**16 equal bins of [0, 1): the forecast errors' standard normals
_MIDPOINT_QUANTILES = special.ndtri((np.arange(2**16) + 0.5) / 2**16).astype(np.float32)


def _group_ranks(flags: jax.Array, split: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The rank of each flag among the true flags of its group, ``flags[:split]`` or ``flags[split:]``
    (``int32[n]``: how many of the group's flags before it are true, an exclusive prefix count), and
    how many flags of each group are true (``int32`` each).

    The flags are packed 32 to a word and each count is a population count of the word's lower
    bits plus those of the words before, less the first group's count in the second group: a few
    elementwise loops over the whole row, where a prefix sum over the flags (``cumsum`` or a
    log-depth scan) runs as several passes over a vmapped batch. The groups' counts come from the
    packed words (a few per row), which every reader of them reads rather than the flags.
    """
    n = flags.shape[0]
    if not 0 <= split <= n:
        raise ValueError(f"split = {split}; expected an integer in [0, {n}]")
    if n == 0:
        return jnp.zeros(0, jnp.int32), jnp.int32(0), jnp.int32(0)
    u32 = jnp.uint32
    n_words = -(-n // 32)
    bits = jnp.pad(flags, (0, 32 * n_words - n)).reshape(n_words, 32).astype(u32)
    words = jnp.sum(bits << jnp.arange(32, dtype=u32), axis=1, dtype=u32)  # distinct bits: the sum is an OR
    per_word = jax.lax.population_count(words).astype(jnp.int32)
    before = [jnp.int32(0)]
    for w in range(n_words - 1):
        before.append(before[-1] + per_word[w])
    total = before[-1] + per_word[n_words - 1]

    def lower_bits(i: np.ndarray) -> np.ndarray:  # the bits below bit i % 32 of a word
        return ((np.uint64(1) << (np.asarray(i) % 32).astype(np.uint64)) - np.uint64(1)).astype(np.uint32)

    own = jax.lax.population_count(jnp.repeat(words, 32)[:n] & jnp.asarray(lower_bits(np.arange(n)))).astype(jnp.int32)
    counts = own + jnp.repeat(jnp.stack(before), 32)[:n] if n_words > 1 else own
    if split == n:
        return counts, total, jnp.int32(0)
    first = before[split // 32] + jax.lax.population_count(words[split // 32] & u32(lower_bits(split))).astype(jnp.int32)
    if split == 0:
        return counts, first, total
    return counts - jnp.where(np.arange(n) >= split, first, 0), first, total - first


def _ordered(done: jax.Array, info: dict) -> jax.Array:
    """``done``, made to depend on the departures' sums: a NaN test of the unmet energy, never true
    (every need is finite), orders those sums before the auto-reset's selects that rewrite the
    sockets' arrays in place, so that XLA need not copy the needs to keep them for the sums."""
    return done | jnp.isnan(info["flows"]["unmet_kwh"])


def batched_step(env: Any) -> Any:
    """``step(keys, states, actions, params)`` over a leading axis of environments: the env's own
    ``step_batch`` where it has one (:meth:`EVChargingEnv.step_batch`, the same results as
    ``jax.vmap(env.step)``), else ``jax.vmap(env.step, in_axes=(0, 0, 0, None))``."""
    own = getattr(env, "step_batch", None)
    return own if own is not None else jax.vmap(env.step, in_axes=(0, 0, 0, None))


def _poisson_cdf_table(daily: float, factor: np.ndarray) -> np.ndarray:
    """P(N <= k) for the Poisson arrivals of each hour of day, k = 0..K-1.

    K covers all but 1e-12 of the busiest hour's mass; float32 rounds the last entries to 1, so a
    count whose probability is below float32 resolution (6e-8) is never drawn.
    """
    total = factor.sum()
    means = daily * factor / total if total > 0 else np.zeros(24)
    k_max = int(stats.poisson.ppf(1.0 - 1e-12, max(means.max(), 1e-9))) + 2
    ks = np.arange(k_max)
    return np.stack([stats.poisson.cdf(ks, m) if m > 0 else np.ones(k_max) for m in means])


def forecast_sigma(noise_frac: float, offsets: tuple[int, ...]) -> np.ndarray:
    """Log-normal sigma of the forecast of each offset: ``noise_frac * sqrt((k + 1) / 24)``.

    The forecast of hour ``t + k`` is made at the start of hour ``t``, ``k + 1`` hours before
    that hour ends; its relative error grows like the square root of that lead time and is
    ``noise_frac`` (the standard deviation of log(forecast / actual)) 24 hours ahead.
    """
    return noise_frac * np.sqrt((np.asarray(offsets, np.float64) + 1.0) / 24.0)


def make_params(scn: Scenario, episode_hours: int = HOURS_PER_YEAR, random_start: bool = False,
                start_hour: int = 0) -> EnvParams:
    """EnvParams of a validated scenario (profiles resolved and checked here)."""
    hours = ENV_SPEC["episode_hours"]
    if not is_int(episode_hours) or not hours.low <= episode_hours <= hours.high:
        raise ValueError(f"episode_hours = {episode_hours!r}; expected an integer in [{hours.low:,}, {hours.high:,}]")
    if not is_int(start_hour) or not 0 <= start_hour < HOURS_PER_YEAR:
        raise ValueError(f"start_hour = {start_hour!r}; expected an integer in [0, {HOURS_PER_YEAR - 1}] "
                         f"(hour of the year)")
    if not isinstance(random_start, (bool, np.bool_)):
        raise ValueError(f"random_start = {random_start!r}; expected true or false")
    pv_kw, mall_kw = scenario_profiles(scn)
    n_moto, n_taxi = scn.n_moto, scn.n_taxi
    f32 = jnp.float32
    factor = np.asarray(scn.operating_factor, dtype=np.float64)
    socket_kw = np.r_[np.full(n_moto, scn.moto_kw), np.full(n_taxi, scn.taxi_kw)]
    socket_batt = np.r_[np.full(n_moto, scn.moto_battery_kwh), np.full(n_taxi, scn.taxi_battery_kwh)]
    weights = np.array([scn.reward_weights[t] for t in REWARD_TERMS])
    mall_peak = mall_peak_kw(scn)  # over every packaged year: the same scales whatever years are drawn
    grid_ref = mall_peak + scn.ev_installed_kw + scn.power_kw  # > peak_threshold_kw (checked)
    # the mall feature's scale: its annual peak; 1 kW for a park without mall load (the feature is then 0)
    mall_ref = mall_peak if mall_peak > 0 else 1.0
    limit = np.inf if scn.grid_limit_kw is None else scn.grid_limit_kw
    return EnvParams(
        pv_kw=jnp.asarray(pv_kw, f32),
        mall_kw=jnp.asarray(mall_kw, f32),
        tariff=jnp.asarray(scn.tariff_per_kwh, f32),
        co2_kg_per_kwh=jnp.asarray(scn.co2_kg_per_kwh, f32),
        capacity_kwh=jnp.asarray(scn.capacity_kwh, f32),
        power_kw=jnp.asarray(scn.power_kw, f32),
        e_min_kwh=jnp.asarray(scn.soc_min * scn.capacity_kwh, f32),
        e_max_kwh=jnp.asarray(scn.soc_max * scn.capacity_kwh, f32),
        e_init_kwh=jnp.asarray(scn.soc_init * scn.capacity_kwh, f32),
        eta_charge=jnp.asarray(scn.eta_charge, f32),
        eta_discharge=jnp.asarray(scn.eta_discharge, f32),
        socket_kw=jnp.asarray(socket_kw, f32),
        socket_battery_kwh=jnp.asarray(socket_batt, f32),
        need_frac_min=jnp.asarray(scn.need_frac_min, f32),
        need_frac_max=jnp.asarray(scn.need_frac_max, f32),
        stay_cum=jnp.asarray(np.cumsum(scn.stay_probs), f32),
        close_hour=jnp.asarray(scn.close_hour, jnp.int32),
        cdf_moto=jnp.asarray(_poisson_cdf_table(scn.daily_moto, factor), f32),
        cdf_taxi=jnp.asarray(_poisson_cdf_table(scn.daily_taxi, factor), f32),
        served_tol_kwh=jnp.asarray(scn.served_tol_kwh, f32),
        first_weekday=jnp.asarray(scn.first_weekday, jnp.int32),
        weights=jnp.asarray(weights, f32),
        grid_ref_kw=jnp.asarray(grid_ref, f32),
        pv_ac_kw=jnp.asarray(scn.pv_ac_kw, f32),
        mall_ref_kw=jnp.asarray(mall_ref, f32),
        ev_installed_kw=jnp.asarray(scn.ev_installed_kw, f32),
        ev_need_ref_kwh=jnp.asarray(float(socket_batt.sum()) * scn.need_frac_max, f32),
        peak_threshold_kw=jnp.asarray(scn.peak_threshold_kw, f32),
        grid_limit_kw=jnp.asarray(limit, f32),
        grid_limit_penalty=jnp.asarray(scn.grid_limit_penalty, f32),
        pv_forecast_sigma=jnp.asarray(forecast_sigma(scn.pv_forecast_noise_frac, scn.forecast_offsets), f32),
        mall_forecast_sigma=jnp.asarray(forecast_sigma(scn.mall_forecast_noise_frac, scn.forecast_offsets), f32),
        max_steps_in_episode=jnp.asarray(episode_hours, jnp.int32),
        start_hour=jnp.asarray(start_hour, jnp.int32),
        random_start=jnp.asarray(random_start, bool),
    )


class EVChargingEnv(environment.Environment[EnvState, EnvParams]):
    """The park of one scenario. Static: socket counts and forecast offsets (array shapes)."""

    N_SOCKET_FEATURES = 4

    def __init__(self, scenario: Scenario, params: EnvParams | None = None):
        super().__init__()
        self.scenario = scenario
        self.n_moto = scenario.n_moto
        self.n_taxi = scenario.n_taxi
        self.n_sockets = scenario.n_sockets
        self.forecast_offsets = tuple(scenario.forecast_offsets)
        self._params = params if params is not None else make_params(scenario)
        self.obs_layout = ObsLayout(
            n_global=N_OBS_BASE + 2 * len(self.forecast_offsets) + N_OBS_MONTH,
            n_sockets=self.n_sockets,
            n_socket_features=self.N_SOCKET_FEATURES,
        )
        # static per-socket layout: motos first, then mototaxis
        self._is_taxi = np.r_[np.zeros(self.n_moto, bool), np.ones(self.n_taxi, bool)]

    @property
    def global_features(self) -> tuple[str, ...]:
        """The names of the ``n_global`` global observation features, in order (docs/physics.md):
        ``pv_<k>h`` and ``mall_<k>h`` are the forecasts at offset ``k``."""
        calendar = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "day_sin", "day_cos")
        forecasts = tuple(f"{kind}_{k}h" for kind in ("pv", "mall") for k in self.forecast_offsets)
        park = ("soc", "occupied_moto", "occupied_taxi", "need", "tariff", "month_peak", "month_elapsed")
        return calendar + forecasts + park

    #: The names of the ``n_socket_features`` features of each socket, in order.
    SOCKET_FEATURES = ("occupied", "need", "hours_left", "is_taxi")

    # ----------------------------------------------------------------- gymnax plumbing
    @property
    def default_params(self) -> EnvParams:
        return self._params

    @property
    def name(self) -> str:
        return f"EVCharging-{self.scenario.name}"

    @property
    def num_actions(self) -> int:
        return 1 + self.n_sockets

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (1 + self.n_sockets,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.obs_layout.size,), jnp.float32)

    def is_truncated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return state.k >= params.max_steps_in_episode

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return jnp.zeros((), bool)

    # ----------------------------------------------------------------- randomness
    # One step needs four random 32-bit words (two threefry blocks): the two arrival-count
    # uniforms, a seed for the per-slot uniforms and the day and weather year of a restart. The
    # per-slot uniforms (n_sockets pairs) come from a counter-based integer hash of (seed, slot), so
    # a step costs the same few random blocks whatever the size of the park; the forecast errors
    # of the observation use the same hash at slots n_sockets, n_sockets + 1, ... (one per offset).
    def draw(self, key: jax.Array) -> jax.Array:
        """The random words of one step (uint32[4]): ``jax.random.bits(key, (4,), jnp.uint32)``.

        Computed by :func:`oe3jax.simulation.rng.bits`, whose Threefry rounds XLA fuses into one
        elementwise loop (``jax.random.bits`` runs them as a loop on CPU, which took about a tenth
        of a vmapped step).
        """
        return rng.bits(key, 4)

    @staticmethod
    def _slot_bits(seed: jax.Array, slot: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Two 16-bit integers (uint32) per slot from a murmur3-style finaliser of (seed, slot)."""
        x = seed + (slot.astype(jnp.uint32) + jnp.uint32(1)) * jnp.uint32(0x9E3779B9)
        x = x ^ (x >> 16)
        x = x * jnp.uint32(0x85EBCA6B)
        x = x ^ (x >> 13)
        x = x * jnp.uint32(0xC2B2AE35)
        x = x ^ (x >> 16)
        return x >> 16, x & jnp.uint32(0xFFFF)

    @classmethod
    def _slot_uniforms(cls, seed: jax.Array, slot: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Two 16-bit uniforms in [0, 1) per slot: :meth:`_slot_bits` times 2**-16."""
        hi, lo = cls._slot_bits(seed, slot)
        scale = jnp.float32(2.0**-16)
        return hi.astype(jnp.float32) * scale, lo.astype(jnp.float32) * scale

    def _counts(self, words: jax.Array, t: jax.Array, params: EnvParams) -> tuple[jax.Array, jax.Array]:
        """Poisson arrival counts of hour ``t`` by inverse CDF (24-bit uniforms)."""
        u = (words[:2] >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
        h = t % 24
        return (jnp.sum(params.cdf_moto[h] < u[0]).astype(jnp.int32),
                jnp.sum(params.cdf_taxi[h] < u[1]).astype(jnp.int32))

    def _start_hour(self, words: jax.Array, params: EnvParams) -> jax.Array:
        day = (words[3] % jnp.uint32(HOURS_PER_YEAR // 24)).astype(jnp.int32)
        return jnp.where(params.random_start, day * 24, params.start_hour).astype(jnp.int32)

    @staticmethod
    def _year(words: jax.Array, params: EnvParams) -> jax.Array:
        """The weather year of an episode: ``(words[3] // 365) % Y``, uniform up to 2**-32 / 365 per year,
        and independent of the start day ``words[3] % 365`` to the same precision."""
        n_years = params.pv_kw.shape[0]
        return ((words[3] // jnp.uint32(HOURS_PER_YEAR // 24)) % jnp.uint32(n_years)).astype(jnp.int32)

    def _forecast_z(self, seed: jax.Array) -> jax.Array:
        """Standard normals ``[2, n_forecasts]`` (PV row, mall row) from the hash at slots n_sockets + j.

        Each 16-bit integer i becomes ``ndtri((i + 0.5) / 2**16)``: 65,536 equally likely values, the
        normal quantiles of the midpoints, so |z| <= 4.3. They are read from a table (computed in
        float64, rounded to float32): evaluating ``ndtri`` took about a tenth of a vmapped step.
        """
        i_pv, i_mall = self._slot_bits(seed, self.n_sockets + jnp.arange(len(self.forecast_offsets)))
        return jnp.asarray(_MIDPOINT_QUANTILES)[jnp.stack([i_pv, i_mall]).astype(jnp.int32)]

    def arrivals(self, words: jax.Array, t: jax.Array, params: EnvParams) -> Arrivals:
        """The draw of hour ``t`` made from a step's random words (for the NumPy reference)."""
        count_moto, count_taxi = self._counts(words, t, params)
        u_need, u_stay = self._slot_uniforms(words[2], jnp.arange(self.n_sockets))
        return Arrivals(count_moto, count_taxi, u_need, u_stay, self._forecast_z(words[2]))

    def initial_conditions(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, Arrivals]:
        """The start hour and the arrival draw that ``reset_env(key)`` uses."""
        words = self.draw(key)
        start = self._start_hour(words, params)
        return start, self.arrivals(words, start, params)

    def initial_year(self, key: jax.Array, params: EnvParams) -> jax.Array:
        """The weather-year index (into ``scenario.weather_years``) that ``reset_env(key)`` draws."""
        return self._year(self.draw(key), params)

    # ----------------------------------------------------------------- physics
    def _admit(self, occupied, need_kwh, hours_left, words, t, params: EnvParams, all_free: bool = False,
               counts: tuple[jax.Array, jax.Array] | None = None):
        """Fill free sockets of each type, in index order, with that hour's arriving vehicles.

        Returns the new ``occupied, need_kwh, hours_left``, the vehicles arrived and admitted
        (float32) and the occupied sockets of each type afterwards (``int32[2]``: motos, mototaxis).

        ``all_free`` (static) says every socket is free (a new episode): the rank of a socket
        among the free ones of its type is then its index within the type. ``counts``, when given,
        are hour ``t``'s arrivals of each type (``_counts(words, t, params)``, drawn by the caller).
        """
        is_taxi = self._is_taxi
        count_moto, count_taxi = self._counts(words, t, params) if counts is None else counts
        free = ~occupied
        if all_free:
            rank = jnp.asarray(np.r_[np.arange(self.n_moto), np.arange(self.n_taxi)], jnp.int32)
        else:
            # rank among the free sockets of the type (what matters of it: at free sockets)
            rank, free_moto, free_taxi = _group_ranks(free, self.n_moto)
        # free sockets of each type
        n_free = [jnp.int32(self.n_moto), jnp.int32(self.n_taxi)] if all_free else [free_moto, free_taxi]
        count = jnp.where(is_taxi, count_taxi, count_moto)
        admit = free & (rank < count)
        if all_free:  # slot k is socket k
            u_need, u_stay = self._slot_uniforms(words[2], jnp.arange(self.n_sockets))
        else:
            slot = jnp.maximum(rank, 0) + jnp.where(is_taxi, self.n_moto, 0)
            u_need, u_stay = self._slot_uniforms(words[2], slot)
        frac = params.need_frac_min + (params.need_frac_max - params.need_frac_min) * u_need
        new_need = params.socket_battery_kwh * frac
        n_stay = params.stay_cum.shape[0]
        # how many cumulative probabilities u_stay reaches, as n_stay compares added up (one elementwise loop)
        reached = sum((params.stay_cum[j] <= u_stay).astype(jnp.int32) for j in range(n_stay))
        stay = 1 + jnp.minimum(reached, n_stay - 1)
        stay = jnp.minimum(stay, params.close_hour - t % 24).astype(jnp.int32)
        occupied = occupied | admit
        need_kwh = jnp.where(admit, new_need, need_kwh)
        hours_left = jnp.where(admit, stay, hours_left)
        n_arrived = (count_moto + count_taxi).astype(jnp.float32)
        # the free sockets of a type have ranks 0, 1, ...: min(arrivals, free sockets) of them are filled
        admitted = (jnp.minimum(count_moto, n_free[0]), jnp.minimum(count_taxi, n_free[1]))
        n_admitted = (admitted[0] + admitted[1]).astype(jnp.float32)
        n_occupied = jnp.stack([self.n_moto - n_free[0] + admitted[0], self.n_taxi - n_free[1] + admitted[1]])
        return occupied, need_kwh, hours_left, n_arrived, n_admitted, n_occupied

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        state, n_occupied = self._fresh(self.draw(key), params)
        return self._observation(state, params, n_occupied), state

    def _fresh(self, words: jax.Array, params: EnvParams) -> tuple[EnvState, jax.Array]:
        """A new episode (battery at soc_init, sockets empty, then the start hour's arrivals) and its
        occupied sockets of each type."""
        start = self._start_hour(words, params)
        return self._fresh_from(words, start, self._counts(words, start, params), params)

    def _fresh_from(self, words: jax.Array, start: jax.Array, counts: tuple[jax.Array, jax.Array],
                    params: EnvParams) -> tuple[EnvState, jax.Array]:
        """:meth:`_fresh` given its start hour and that hour's arrivals of each type."""
        n = self.n_sockets
        occupied, need, hours_left, n_arrived, n_admitted, n_occupied = self._admit(
            jnp.zeros(n, bool), jnp.zeros(n, jnp.float32), jnp.zeros(n, jnp.int32), words, start, params,
            all_free=True, counts=counts,
        )
        totals = {k: jnp.zeros((), jnp.float32) for k in TOTAL_KEYS}
        totals["vehicles_arrived"] = n_arrived
        totals["vehicles_admitted"] = n_admitted
        totals["vehicles_rejected"] = n_arrived - n_admitted
        state = EnvState(
            t=start, k=jnp.zeros((), jnp.int32), year=self._year(words, params),
            month_peak_kw=jnp.zeros((), jnp.float32), obs_seed=words[2], energy_kwh=params.e_init_kwh,
            occupied=occupied, need_kwh=need, hours_left=hours_left, totals=totals,
        )
        return state, n_occupied

    def _checked_action(self, action: Any) -> Any:
        """``action`` after its shape and dtype check: ``1 + n_sockets`` real numbers.

        Only static facts are read (shape, dtype), so under ``jax.jit``, ``jax.vmap`` or
        ``lax.scan`` the check runs once, while tracing; inside ``vmap`` it sees one env's action.
        """
        if not (hasattr(action, "shape") and hasattr(action, "dtype")):
            try:
                action = jnp.asarray(action)
            except (TypeError, ValueError):
                raise TypeError(f"action: expected an array of real numbers of shape ({self.num_actions},) "
                                f"for scenario {self.scenario.name!r}, got {type(action).__name__}") from None
        check_action(action.shape, action.dtype, self.n_sockets, self.scenario.name)
        return action

    def step(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams | None = None):
        """gymnax step with auto-reset; the step and the reset share one draw of random words.

        Returns ``(obs, state, reward, terminated, truncated, info)``; on the last step of an
        episode ``obs``/``state`` are those of the next episode and ``info["final_observation"]``
        is the true last observation (for bootstrapping a truncated episode). ``action`` must be
        ``1 + n_sockets`` real numbers (bool, int or float): a wrong shape raises ValueError, a
        complex or non-numeric action TypeError.
        """
        return self._step(key, state, self._checked_action(action), params)

    @partial(jax.jit, static_argnames=("self",))
    def _step(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams | None):
        params = self.default_params if params is None else params
        with jax.named_scope("draw"):
            words = self.draw(key)
        state_st, reward, terminated, info, occ_st = self._advance(words, state, action, params)
        obs_st = self._observation(state_st, params, occ_st)
        truncated = self.is_truncated(state_st, params)
        done = terminated | truncated
        with jax.named_scope("auto_reset"):
            state_re, occ_re = self._fresh(words, params)
            pick = _ordered(done, info)
            state = jax.tree.map(lambda r, s: jnp.where(pick, r, s), state_re, state_st)
            n_occupied = jnp.where(pick, occ_re, occ_st)
        # one observation of the selected state; obs_st is computed only where final_observation
        # is used (XLA drops it otherwise)
        obs = self._observation(state, params, n_occupied)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
        return obs, state, reward, terminated, truncated, info

    def step_batch(self, keys: jax.Array, state: EnvState, action: jax.Array, params: EnvParams | None = None):
        """``jax.vmap(step)`` over a leading axis of environments (``keys``, ``state`` and ``action``
        batched, ``params`` shared), with the same results bit for bit.

        The next episodes' per-env values (start hour, weather year, arrival counts, totals) are
        built only at a step where some episode of the batch ends (a branch of the whole batch):
        episodes are long, so most steps skip that work. Their sockets' arrays, a few elementwise
        operations of the start hour and counts, are computed where they are selected. Inside
        another ``vmap`` (over seeds, say) the branch becomes a select and both sides run.
        """
        if getattr(action, "ndim", 0) < 1:
            raise ValueError(f"action: expected a batch of actions of shape (num_envs, {self.num_actions}), "
                             f"got shape {getattr(action, 'shape', ())}")
        check_action(action.shape[1:], action.dtype, self.n_sockets, self.scenario.name)
        return self._step_batch(keys, state, action, params)

    @partial(jax.jit, static_argnames=("self",))
    def _step_batch(self, keys: jax.Array, state: EnvState, action: jax.Array, params: EnvParams | None):
        params = self.default_params if params is None else params
        with jax.named_scope("draw"):
            words = jax.vmap(self.draw)(keys)
        state_st, reward, terminated, info, occ_st = jax.vmap(self._advance, (0, 0, 0, None))(
            words, state, action, params)
        observe = jax.vmap(self._observation, (0, None, 0))
        obs_st = observe(state_st, params, occ_st)
        truncated = jax.vmap(self.is_truncated, (0, None))(state_st, params)
        done = terminated | truncated
        sockets = ("occupied", "need_kwh", "hours_left")

        def fresh_env(words: jax.Array) -> tuple[EnvState, jax.Array, tuple[jax.Array, jax.Array]]:
            # a new episode's state without its sockets' arrays (scalars in their place), its occupied
            # sockets of each type and its start hour's arrivals of each type
            start = self._start_hour(words, params)
            counts = self._counts(words, start, params)
            state, n_occupied = self._fresh_from(words, start, counts, params)
            return state.replace(**{k: jnp.zeros((), getattr(state, k).dtype) for k in sockets}), n_occupied, counts

        fresh = jax.vmap(fresh_env)
        with jax.named_scope("auto_reset"):
            # the per-env values in a branch taken where some episode ends, zeros elsewhere (cheaper
            # than a branch that returns the stepped states, whose results XLA copies into place);
            # the sockets' arrays are computed from the start hours and counts where they are
            # selected, elementwise, rather than written in the branch (or as zeros) and read again
            state_re, occ_re, counts = jax.lax.cond(
                jnp.any(done), lambda: fresh(words),
                lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(fresh, words)))
            new_sockets, _ = jax.vmap(self._fresh_from, (0, 0, 0, None))(
                words, state_re.t, counts, params)
            state_re = state_re.replace(**{k: getattr(new_sockets, k) for k in sockets})
            pick = _ordered(done, info)

            def select(r: jax.Array, s: jax.Array) -> jax.Array:
                return jnp.where(pick.reshape(pick.shape + (1,) * (s.ndim - 1)), r, s)
            state, n_occupied = jax.tree.map(select, state_re, state_st), select(occ_re, occ_st)
        obs = observe(state, params, n_occupied)
        info = {**info, "terminated": terminated, "truncated": truncated, "final_observation": obs_st}
        return obs, state, reward, terminated, truncated, info

    def step_env(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
        return self._transition(self.draw(key), state, self._checked_action(action), params)

    def _transition(self, words: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
        state, reward, terminated, info, n_occupied = self._advance(words, state, action, params)
        return self._observation(state, params, n_occupied), state, reward, terminated, info

    def _advance(self, words: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
        """One hour: ``(state, reward, terminated, info, n_occupied)``, the last the occupied sockets
        of each type in the new state (what the observation counts)."""
        f32 = jnp.float32
        a = jnp.clip(jnp.nan_to_num(jnp.asarray(action, f32), nan=0.0), -1.0, 1.0)
        t = state.t
        h = t % 24

        # EV charging: at most the socket rating and at most what the vehicle still wants
        with jax.named_scope("sockets"):
            ev_i = jnp.where(state.occupied,
                             jnp.minimum(jnp.maximum(a[1:], 0.0) * params.socket_kw, state.need_kwh), 0.0)
            ev = jnp.sum(ev_i)

        # PV serves the loads first
        with jax.named_scope("dispatch"):
            pv = params.pv_kw[state.year, t]
            mall = params.mall_kw[state.year, t]
            load = mall + ev
            pv_to_load = jnp.minimum(pv, load)
            surplus = pv - pv_to_load
            net_load = load - pv_to_load

            # battery: power rating, SOC window, one-way efficiencies, no export
            e = state.energy_kwh
            req = a[0] * params.power_kw
            room = jnp.maximum(params.e_max_kwh - e, 0.0)
            charge = jnp.where(req > 0, jnp.minimum(req, room / params.eta_charge), 0.0)
            discharge = jnp.where(
                req < 0,
                jnp.minimum(jnp.minimum(-req, jnp.maximum(e - params.e_min_kwh, 0.0) * params.eta_discharge), net_load),
                0.0,
            )
            pv_to_bess = jnp.minimum(surplus, charge)
            grid_to_bess = charge - pv_to_bess
            grid = net_load - discharge + grid_to_bess

            # grid-connection limit: cut the battery's grid charging, then EV charging (each socket by
            # the same fraction); what is left above the limit is imported and counted as a violation
            over = grid > params.grid_limit_kw
            bess_cut = jnp.where(over, jnp.minimum(grid - params.grid_limit_kw, grid_to_bess), 0.0)
            ev_cut = jnp.where(over, jnp.clip(grid - bess_cut - params.grid_limit_kw, 0.0, ev), 0.0)
            cut = over & (ev_cut > 0.0)
            ev_i = jnp.where(cut, ev_i * (1.0 - ev_cut / jnp.where(cut, ev, 1.0)), ev_i)
            ev = jnp.where(over, ev - ev_cut, ev)
            charge = jnp.where(over, charge - bess_cut, charge)
            grid_to_bess = jnp.where(over, grid_to_bess - bess_cut, grid_to_bess)
            net_load = jnp.where(over, net_load - ev_cut, net_load)
            grid = jnp.where(over, grid - bess_cut - ev_cut, grid)
            violation = jnp.maximum(grid - params.grid_limit_kw, 0.0)
            need = state.need_kwh - ev_i

            e_next = jnp.clip(e + params.eta_charge * charge - discharge / params.eta_discharge,
                              params.e_min_kwh, params.e_max_kwh)
            pv_used = pv_to_load + pv_to_bess
            curtailed = pv - pv_used

        # departures: the energy still wanted leaves unmet
        with jax.named_scope("departures"):
            hours_left = jnp.where(state.occupied, state.hours_left - 1, 0)
            departing = state.occupied & (hours_left <= 0)
            # the three sums over the sockets in one reduction
            unmet, n_departed, n_served = jnp.sum(jnp.stack([
                jnp.where(departing, need, 0.0), departing.astype(f32),
                (departing & (need <= params.served_tol_kwh)).astype(f32)]), axis=1)
            occupied = state.occupied & ~departing
            need = jnp.where(departing, 0.0, need)
            hours_left = jnp.where(departing, 0, hours_left).astype(jnp.int32)

        # arrivals for the next hour
        with jax.named_scope("arrivals"):
            t_next = (t + 1) % HOURS_PER_YEAR
            occupied, need, hours_left, n_arrived, n_admitted, n_occupied = self._admit(
                occupied, need, hours_left, words, t_next, params)

        # the month-to-date peak: the demand term charges each rise of it, so a month's terms add
        # up to minus that month's peak import; it restarts at 0 with each month
        with jax.named_scope("reward"):
            month_peak = jnp.maximum(state.month_peak_kw, grid)
            peak_rise = month_peak - state.month_peak_kw
            next_month_peak = jnp.where(jnp.any(t_next == _MONTH_STARTS[:12]), 0.0, month_peak)

            # reward: weighted terms, each in [-1, 1], and the grid-limit penalty
            terms = {
                "co2": -grid / params.grid_ref_kw,
                "cost": -grid * params.tariff[h] / (params.grid_ref_kw * jnp.max(params.tariff)),
                "solar": (pv_used - curtailed) / params.pv_ac_kw,
                "ev": jnp.clip((ev - unmet) / params.ev_installed_kw, -1.0, 1.0),
                "peak": -jnp.maximum(grid - params.peak_threshold_kw, 0.0)
                        / (params.grid_ref_kw - params.peak_threshold_kw),
                "demand": -peak_rise / params.grid_ref_kw,
                "grid_limit": -violation / params.grid_ref_kw,
            }
            reward = sum(params.weights[i] * terms[name] for i, name in enumerate(REWARD_TERMS))
            reward = reward + params.grid_limit_penalty * terms["grid_limit"]

            flows = {
                "pv_kwh": pv, "mall_kwh": mall, "ev_kwh": ev, "pv_to_load": pv_to_load, "pv_to_bess": pv_to_bess,
                "grid_to_bess": grid_to_bess, "pv_used": pv_used, "pv_curtailed": curtailed, "grid_import": grid,
                "bess_charge": charge, "bess_discharge": discharge, "unmet_kwh": unmet,
                "limit_ev_cut": ev_cut, "limit_bess_cut": bess_cut, "grid_limit_violation": violation,
            }
            vehicles = {"arrived": n_arrived, "admitted": n_admitted, "rejected": n_arrived - n_admitted,
                        "departed": n_departed, "served": n_served}
        with jax.named_scope("totals"):
            tot = state.totals
            evening = (h >= EVENING_PEAK_HOURS[0]) & (h < EVENING_PEAK_HOURS[1])
            totals = {
                "return": tot["return"] + reward,
                "grid_kwh": tot["grid_kwh"] + grid,
                "co2_kg": tot["co2_kg"] + grid * params.co2_kg_per_kwh,
                "cost": tot["cost"] + grid * params.tariff[h],
                "pv_kwh": tot["pv_kwh"] + pv,
                "pv_used_kwh": tot["pv_used_kwh"] + pv_used,
                "pv_curtailed_kwh": tot["pv_curtailed_kwh"] + curtailed,
                "mall_kwh": tot["mall_kwh"] + mall,
                "ev_kwh": tot["ev_kwh"] + ev,
                "unmet_kwh": tot["unmet_kwh"] + unmet,
                "vehicles_arrived": tot["vehicles_arrived"] + n_arrived,
                "vehicles_admitted": tot["vehicles_admitted"] + n_admitted,
                "vehicles_rejected": tot["vehicles_rejected"] + n_arrived - n_admitted,
                "vehicles_departed": tot["vehicles_departed"] + n_departed,
                "vehicles_served": tot["vehicles_served"] + n_served,
                "peak_import_kw": jnp.maximum(tot["peak_import_kw"], grid),
                "peak_import_evening_kw": jnp.where(evening, jnp.maximum(tot["peak_import_evening_kw"], grid),
                                                    tot["peak_import_evening_kw"]),
                "bess_charge_kwh": tot["bess_charge_kwh"] + charge,
                "bess_discharge_kwh": tot["bess_discharge_kwh"] + discharge,
                "grid_to_bess_kwh": tot["grid_to_bess_kwh"] + grid_to_bess,
                "monthly_peaks_sum_kw": tot["monthly_peaks_sum_kw"] + peak_rise,
                "grid_limit_violation_kwh": tot["grid_limit_violation_kwh"] + violation,
                "limit_ev_cut_kwh": tot["limit_ev_cut_kwh"] + ev_cut,
                "limit_bess_cut_kwh": tot["limit_bess_cut_kwh"] + bess_cut,
            }
        state = EnvState(t=t_next, k=state.k + 1, year=state.year, month_peak_kw=next_month_peak,
                         obs_seed=words[2], energy_kwh=e_next, occupied=occupied, need_kwh=need,
                         hours_left=hours_left, totals=totals)
        info = {"flows": flows, "terms": terms, "vehicles": vehicles, "arrivals": self.arrivals(words, t_next, params),
                "totals": totals}
        terminated = jnp.zeros((), bool)
        return state, reward.astype(f32), terminated, info, n_occupied

    # ----------------------------------------------------------------- observation
    def get_obs(self, state: EnvState, params: EnvParams | None = None, key=None) -> jax.Array:
        params = self.default_params if params is None else params
        return self._observation(state, params)

    @jax.named_scope("observation")
    def _observation(self, state: EnvState, params: EnvParams, n_occupied: jax.Array | None = None) -> jax.Array:
        """The observation of ``state``; ``n_occupied`` (int32[2]), when the caller knows it, is the
        occupied sockets of each type (else counted here)."""
        f32 = jnp.float32
        t = state.t
        h = (t % 24).astype(f32)
        day = t // 24
        weekday = ((day + params.first_weekday) % 7).astype(f32)
        two_pi = 2.0 * math.pi
        idx = (t + jnp.asarray(self.forecast_offsets, jnp.int32)) % HOURS_PER_YEAR
        # forecasts: the profile times a mean-one log-normal error (exactly 1 when sigma is 0)
        # without noise every error is exp(0) = 1 whatever z is: the draw is skipped (a branch on the
        # params, which stays a branch under a vmap over environments that share them)
        noisy = jnp.any(params.pv_forecast_sigma != 0) | jnp.any(params.mall_forecast_sigma != 0)
        z = jax.lax.cond(noisy, self._forecast_z, lambda seed: jnp.zeros((2, len(self.forecast_offsets)), f32),
                         state.obs_seed)
        pv_err = jnp.exp(params.pv_forecast_sigma * z[0] - 0.5 * jnp.square(params.pv_forecast_sigma))
        mall_err = jnp.exp(params.mall_forecast_sigma * z[1] - 0.5 * jnp.square(params.mall_forecast_sigma))
        # the month: its first hour and length in hours
        starts = jnp.asarray(_MONTH_STARTS)
        month = jnp.sum(t >= starts[1:12])
        month_frac = (t - starts[month]).astype(f32) / (starts[month + 1] - starts[month]).astype(f32)
        occ = state.occupied.astype(f32)
        if n_occupied is None:
            n_occupied = jnp.stack([jnp.sum(state.occupied[: self.n_moto], dtype=jnp.int32),
                                    jnp.sum(state.occupied[self.n_moto:], dtype=jnp.int32)])
        n_occupied = n_occupied.astype(f32)
        n_moto, n_taxi = max(self.n_moto, 1), max(self.n_taxi, 1)
        glob = jnp.concatenate([
            jnp.stack([
                jnp.sin(two_pi * h / 24), jnp.cos(two_pi * h / 24),
                jnp.sin(two_pi * weekday / 7), jnp.cos(two_pi * weekday / 7),
                jnp.sin(two_pi * day.astype(f32) / 365), jnp.cos(two_pi * day.astype(f32) / 365),
            ]),
            params.pv_kw[state.year, idx] * pv_err / params.pv_ac_kw,
            params.mall_kw[state.year, idx] * mall_err / params.mall_ref_kw,
            jnp.stack([
                state.energy_kwh / params.capacity_kwh,
                n_occupied[0] / n_moto,
                n_occupied[1] / n_taxi,
                jnp.sum(state.need_kwh) / params.ev_need_ref_kwh,
                params.tariff[t % 24] / jnp.max(params.tariff),
                state.month_peak_kw / params.grid_ref_kw,
                month_frac,
            ]),
        ])
        # the per-socket features in socket-major order, in one elementwise loop: each socket's values
        # broadcast over its features and the feature picked by a static pattern
        n, nf = self.n_sockets, self.N_SOCKET_FEATURES
        feature = np.broadcast_to(np.arange(nf), (n, nf))

        def wide(x: jax.Array) -> jax.Array:
            return jnp.broadcast_to(x[:, None], (n, nf))

        per_socket = jnp.where(feature == 0, wide(occ), jnp.where(
            feature == 1, wide(state.need_kwh / params.socket_battery_kwh), jnp.where(
                feature == 2, wide(state.hours_left.astype(f32) / params.stay_cum.shape[0]),
                jnp.asarray(np.broadcast_to(self._is_taxi[:, None], (n, nf)), f32))))
        # joined as columns ([size, 1], the last axis of size 1): XLA's CPU backend leaves a join along
        # the minor axis of a batch ([envs, size]) unfused, writing the per-socket block and then
        # copying it; a join along another axis is one loop per part, writing in place
        return jnp.concatenate([glob[:, None], per_socket.reshape(-1, 1)])[:, 0]


def make_env(scenario: str | Scenario = "iquitos-128", *, episode_hours: int = HOURS_PER_YEAR,
             random_start: bool = False, start_hour: int = 0, **overrides: Any) -> tuple[EVChargingEnv, EnvParams]:
    """The environment and its params for a preset (or Scenario) with scenario-field overrides.

    ``episode_hours`` (default the 8,760-hour year) and ``random_start`` (episodes begin at midnight
    of a random day) shape training episodes; any other keyword is a :class:`Scenario` field
    (``capacity_kwh=3000``, ``reward="balanced"``, ``pv_profile={"path": ..., "column": ...}``).
    """
    scn = get_scenario(scenario, **overrides)
    params = make_params(scn, episode_hours=episode_hours, random_start=random_start, start_hour=start_hour)
    env = EVChargingEnv(scn, params)
    return env, params


__all__ = ["ENV_SPEC", "Arrivals", "EVChargingEnv", "EnvParams", "EnvState", "ObsLayout", "TOTAL_KEYS",
           "batched_step", "forecast_sigma", "make_env", "make_params"]

