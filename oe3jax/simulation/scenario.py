"""Scenario presets: every constant of the physics, none of them in the step function.

A :class:`Scenario` is a frozen dataclass of plain Python values (printable, saved with every run),
each field checked for type and range when the Scenario is made (:meth:`Scenario.validate`). The
hourly profiles (PV and mall, 8,760 values in kW) are resolved and checked separately by
:func:`scenario_profiles`, from the packaged CSV, an array or a user's file;
:func:`profile_notes` lists what was assumed to read a file.

Presets (values from the site documents, see ``docs/physics.md`` for how they are used):

- ``iquitos-128``: the original study (January 2026): BESS 2,000 kWh / 1,200 kW, 112 moto sockets
  at 2 kW and 16 mototaxi sockets at 3 kW (272 kW), flat tariff 0.20 USD/kWh.
- ``iquitos-38``: the later study (February 2026): BESS 1,700 kWh / 400 kW, 19 chargers x 2
  sockets at 7.4 kW (30 moto + 8 mototaxi = 38, 281.2 kW), time-of-use tariff 0.45 soles/kWh
  18:00-22:59 and 0.28 otherwise.

Vehicle demand: the site documents give both SOC figures (arrival ~0.39, target ~0.78, i.e. about
0.39 of the battery per charge) and energy figures (about 2.9 kWh per moto and 4.7 kWh per
mototaxi charge, 900-1,000 kWh a day for 270 motos and 39 mototaxis), which disagree. The grid
sees energy, so the presets are calibrated on energy: the energy a vehicle asks for is a uniform
fraction in [0.36, 0.90] of its battery (mean 0.63: 2.90 kWh for a 4.6 kWh moto, 4.66 kWh for a
7.4 kWh mototaxi).

Stays: iquitos-128 vehicles stay 1-4 hours (P = 0.15, 0.40, 0.30, 0.15); iquitos-38's 38 fast
sockets can only serve the same fleet with short stays (1 hour with P = 0.85, else 2 hours).

Weather years: ``weather_years`` names the packaged years an environment draws from, one per
episode (``profiles.WEATHER_YEARS``); :func:`split_weather_years` makes a training and an
evaluation scenario on disjoint years. Objectives: ``reward`` picks a weight preset of
:data:`REWARD_PRESETS`; ``peak`` bills the sum of monthly peak imports (the ``demand`` term).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from oe3jax.simulation import profiles as _profiles
from oe3jax.simulation.profiles import HOURS_PER_YEAR


# The "peak" preset's weights (docs/physics.md, "Why these weights").
PEAK_PRESET_CO2 = 0.05
PEAK_PRESET_SOLAR = 0.02
PEAK_PRESET_EV = 0.13
PEAK_PRESET_DEMAND = 0.80

REWARD_PRESETS: dict[str, dict[str, float]] = {
    # weights of the terms co2, cost, solar, ev, peak, demand (each sums to 1); docs/physics.md
    "co2_focus": {"co2": 0.50, "cost": 0.15, "solar": 0.20, "ev": 0.10, "peak": 0.05, "demand": 0.0},
    "balanced": {"co2": 0.35, "cost": 0.25, "solar": 0.20, "ev": 0.15, "peak": 0.05, "demand": 0.0},
    "cost_focus": {"co2": 0.20, "cost": 0.45, "solar": 0.15, "ev": 0.15, "peak": 0.05, "demand": 0.0},
    "ev_focus": {"co2": 0.25, "cost": 0.20, "solar": 0.15, "ev": 0.35, "peak": 0.05, "demand": 0.0},
    "solar_focus": {"co2": 0.25, "cost": 0.15, "solar": 0.40, "ev": 0.15, "peak": 0.05, "demand": 0.0},
    # a demand charge on the sum of monthly peak imports, CO2 and EV service kept (docs/physics.md)
    "peak": {"co2": PEAK_PRESET_CO2, "cost": 0.0, "solar": PEAK_PRESET_SOLAR, "ev": PEAK_PRESET_EV, "peak": 0.0,
             "demand": PEAK_PRESET_DEMAND},
}
REWARD_TERMS = ("co2", "cost", "solar", "ev", "peak", "demand")


# Limits of the Scenario fields. Powers and energies stop at 1 GW / 1 GWh (beyond any single
# site's PV plant, battery or building), a socket at 1 MW (megawatt charging of trucks), a vehicle
# battery at 1 MWh, so that every flow and yearly total stays far inside float32 range.
MAX_POWER_KW = 1e6
MAX_ENERGY_KWH = 1e6
MAX_SOCKET_KW = 1000.0
MAX_VEHICLE_BATTERY_KWH = 1000.0
MAX_SOCKETS = 10_000  # ten times the 900 motos + 130 mototaxis counted parked at the evening peak
MAX_PRICE_PER_KWH = 1e6  # the price of a kWh in the units of any currency
MAX_CO2_KG_PER_KWH = 2.0  # above the dirtiest generation (lignite, about 1.2 kg/kWh)
MAX_ARRIVALS_PER_HOUR = 10_000  # mean arrivals of the busiest hour: keeps the arrival table near 1 MB
MAX_STAY_HOURS = 24
MAX_LIMIT_PENALTY = 100.0  # weight of the grid-limit term: at most 100 times the whole preset
MAX_FORECAST_NOISE_FRAC = 1.0  # relative error (standard deviation) of a forecast 24 h ahead
WEATHER_YEARS = _profiles.WEATHER_YEARS
#: The default split of the packaged years: training on four, evaluation on the two others.
TRAIN_YEARS = ("2024", "syn1", "syn2", "syn3")
EVAL_YEARS = ("syn4", "syn5")
PROFILE_KEYS = ("path", "column", *_profiles.OPTIONS)


class _Bad(Exception):
    """A field value outside its rule: ``where`` is the field (or element), ``accepted`` the range."""

    def __init__(self, value: Any, accepted: str, where: str = "") -> None:
        super().__init__(accepted)
        self.value, self.accepted, self.where = value, accepted, where


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _host(value: Any, accepted: str, where: str = "") -> Any:
    """A JAX array (or a 0-d NumPy array) as the NumPy array or Python scalar it holds, so that a
    field accepts ``jnp.float32(3.0)`` as it accepts ``np.float32(3.0)``; a traced value (inside
    ``jax.jit``) cannot be a field: the scenario is fixed when the environment is made."""
    if hasattr(value, "__array__") and not isinstance(value, (np.ndarray, np.generic)):
        try:
            value = np.asarray(value)
        except Exception:  # a tracer: its value is not known while JAX traces
            raise _Bad(value, f"{accepted} (a concrete value, not one traced by jax.jit or jax.vmap: "
                       "scenario fields are fixed when the environment is made)", where) from None
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def is_int(value: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class _Num:
    """A real (or, with ``integer``, an int) in ``[low, high]``, ``(low, high]`` with ``low_open``."""

    low: float
    high: float
    unit: str = ""
    low_open: bool = False
    integer: bool = False

    def accepted(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return (f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
                + (f" {self.unit}" if self.unit else ""))

    def convert(self, value: Any, where: str = "") -> float | int:
        value = _host(value, self.accepted(), where)
        ok_type = is_int(value) if self.integer else _is_real(value) and math.isfinite(value)
        if not ok_type or not (self.low < value if self.low_open else self.low <= value) or value > self.high:
            raise _Bad(value, self.accepted(), where)
        return int(value) if self.integer else float(value)


@dataclasses.dataclass(frozen=True)
class _Seq:
    """A list, tuple or 1-D array of ``min_len`` to ``max_len`` items, stored as a tuple."""

    item: _Num
    min_len: int
    max_len: int

    def accepted(self) -> str:
        count = f"{self.min_len}" if self.min_len == self.max_len else f"{self.min_len} to {self.max_len}"
        return f"a list of {count} items, each {self.item.accepted()}"

    def convert(self, value: Any, where: str = "") -> tuple:
        value = _host(value, self.accepted(), where)
        if isinstance(value, np.ndarray):
            value = value.tolist() if value.ndim == 1 else None
        if not isinstance(value, (list, tuple)) or not self.min_len <= len(value) <= self.max_len:
            raise _Bad(value, self.accepted())
        return tuple(self.item.convert(v, f"[{i}]") for i, v in enumerate(value))


@dataclasses.dataclass(frozen=True)
class _Text:
    choices: tuple[str, ...] | None = None

    def convert(self, value: Any, where: str = "") -> str:
        if self.choices is not None:
            if not isinstance(value, str) or value not in self.choices:
                raise _Bad(value, "one of " + ", ".join(self.choices))
        elif not isinstance(value, str) or not value.strip():
            raise _Bad(value, "a non-empty string")
        return value


@dataclasses.dataclass(frozen=True)
class _Optional:
    """None, or a value of ``check``."""

    check: Any

    def convert(self, value: Any, where: str = "") -> Any:
        if value is None:
            return None
        try:
            return self.check.convert(value, where)
        except _Bad as bad:
            raise _Bad(value, f"null (none) or {bad.accepted}", where) from None


@dataclasses.dataclass(frozen=True)
class _Names:
    """A non-empty list of distinct names out of ``choices``, stored as a tuple."""

    choices: tuple[str, ...]

    def convert(self, value: Any, where: str = "") -> tuple[str, ...]:
        accepted = f"a non-empty list of distinct names out of {', '.join(self.choices)}"
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise _Bad(value, accepted)
        for i, name in enumerate(value):
            if not isinstance(name, str) or name not in self.choices:
                raise _Bad(name, accepted, f"[{i}]")
        if len(set(value)) != len(value):
            raise _Bad(value, accepted)
        return tuple(value)


class _ProfileSpec:
    """None (the packaged profile), 8,760 hourly kW values, or a mapping for profiles.read_profile."""

    def convert(self, value: Any, where: str = "") -> Any:
        if value is None:
            return None
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(PROFILE_KEYS))
            if unknown:
                raise _profiles.ProfileError(f".{unknown[0]}: unknown key; accepted: {', '.join(PROFILE_KEYS)}")
            spec = dict(value)
            path = spec.get("path")
            if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
                raise _Bad(path, "the path of a CSV file", ".path")
            spec["path"] = os.fspath(path)
            if not isinstance(spec.get("column"), str) or not spec["column"].strip():
                raise _Bad(spec.get("column"), "the name of the CSV column holding the values", ".column")
            _profiles.check_options({k: v for k, v in spec.items() if k not in ("path", "column")}, prefix=".")
            return spec
        value = _host(value, f"null, {HOURS_PER_YEAR} hourly values in kW (numbers), or a mapping", where)
        array = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
        if array is None or array.dtype.kind not in "iuf" or array.shape != (HOURS_PER_YEAR,):
            what = (repr(value) if array is None
                    else f"{type(value).__name__} of shape {array.shape} and dtype {array.dtype}")
            raise _profiles.ProfileError(
                f" = {what}; expected null, {HOURS_PER_YEAR} hourly values in kW (numbers), or a mapping with "
                f"keys {', '.join(PROFILE_KEYS)} (path and column required)")
        array = array.astype(np.float64)  # a copy
        array.setflags(write=False)
        return array


def _rule(check: Any) -> Any:
    def apply(scenario: str, field: str, value: Any) -> Any:
        try:
            return check.convert(value)
        except _Bad as bad:
            raise ValueError(f"scenario {scenario!r}: {field}{bad.where} = {bad.value!r}; expected {bad.accepted}") from None
        except _profiles.ProfileError as exc:  # a profile spec: the message starts after the field name
            raise ValueError(f"scenario {scenario!r}: {field}{exc}") from None
    return apply


_FRACTION = _Num(0.0, 1.0)
_RULES = {name: _rule(check) for name, check in {
    "name": _Text(),
    "co2_kg_per_kwh": _Num(0.0, MAX_CO2_KG_PER_KWH, "kg/kWh"),
    "tariff_per_kwh": _Seq(_Num(0.0, MAX_PRICE_PER_KWH, "per kWh"), 24, 24),
    "currency": _Text(),
    "pv_dc_kwp": _Num(0.0, MAX_POWER_KW, "kWp", low_open=True),
    "pv_ac_kw": _Num(0.0, MAX_POWER_KW, "kW", low_open=True),
    "capacity_kwh": _Num(0.0, MAX_ENERGY_KWH, "kWh", low_open=True),
    "power_kw": _Num(0.0, MAX_POWER_KW, "kW", low_open=True),
    "soc_min": _FRACTION,
    "soc_max": _Num(0.0, 1.0, low_open=True),
    "soc_init": _FRACTION,
    "round_trip_eff": _Num(0.0, 1.0, low_open=True),
    "n_moto": _Num(0, MAX_SOCKETS, integer=True),
    "n_taxi": _Num(0, MAX_SOCKETS, integer=True),
    "moto_kw": _Num(0.0, MAX_SOCKET_KW, "kW", low_open=True),
    "taxi_kw": _Num(0.0, MAX_SOCKET_KW, "kW", low_open=True),
    "moto_battery_kwh": _Num(0.0, MAX_VEHICLE_BATTERY_KWH, "kWh", low_open=True),
    "taxi_battery_kwh": _Num(0.0, MAX_VEHICLE_BATTERY_KWH, "kWh", low_open=True),
    "daily_moto": _Num(0.0, MAX_ARRIVALS_PER_HOUR * 24, "vehicles a day"),
    "daily_taxi": _Num(0.0, MAX_ARRIVALS_PER_HOUR * 24, "vehicles a day"),
    "need_frac_min": _FRACTION,
    "need_frac_max": _Num(0.0, 1.0, low_open=True),
    "stay_probs": _Seq(_FRACTION, 1, MAX_STAY_HOURS),
    "open_hour": _Num(0, 23, "o'clock", integer=True),
    "close_hour": _Num(1, 24, "o'clock", integer=True),
    "operating_factor": _Seq(_FRACTION, 24, 24),
    "served_tol_kwh": _Num(0.0, 1.0, "kWh", low_open=True),
    "first_weekday": _Num(0, 6, "(Monday = 0)", integer=True),
    "reward": _Text(tuple(REWARD_PRESETS)),
    "peak_threshold_kw": _Num(0.0, 100 * MAX_POWER_KW, "kW"),
    "grid_limit_kw": _Optional(_Num(0.0, MAX_POWER_KW, "kW", low_open=True)),
    "grid_limit_penalty": _Num(0.0, MAX_LIMIT_PENALTY),
    "forecast_offsets": _Seq(_Num(0, HOURS_PER_YEAR - 1, "hours ahead", integer=True), 1, HOURS_PER_YEAR),
    "pv_forecast_noise_frac": _Num(0.0, MAX_FORECAST_NOISE_FRAC, "(relative, 24 h ahead)"),
    "mall_forecast_noise_frac": _Num(0.0, MAX_FORECAST_NOISE_FRAC, "(relative, 24 h ahead)"),
    "weather_years": _Names(WEATHER_YEARS),
    "pv_profile": _ProfileSpec(),
    "mall_profile": _ProfileSpec(),
}.items()}


def _operating_factor() -> tuple[float, ...]:
    """0 before 09:00; 0.30 at 09:00; 0.30 -> 1.00 linearly over 10:00-18:00; 1.00 to 21:00; 0 after."""
    f = [0.0] * 24
    f[9] = 0.30
    for h in range(10, 19):
        f[h] = 0.30 + 0.70 * (h - 10) / 8.0
    for h in range(18, 22):
        f[h] = 1.0
    return tuple(round(x, 6) for x in f)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Every constant of one site configuration. Times are local hours, energies kWh, powers kW."""

    name: str
    # --- grid, tariff, emissions
    co2_kg_per_kwh: float = 0.4521
    tariff_per_kwh: tuple[float, ...] = (0.20,) * 24  # by hour of day
    currency: str = "USD"
    # --- PV plant
    pv_dc_kwp: float = 4162.0
    pv_ac_kw: float = 3201.0
    # --- battery
    capacity_kwh: float = 2000.0
    power_kw: float = 1200.0
    soc_min: float = 0.20
    soc_max: float = 1.00
    soc_init: float = 0.50
    round_trip_eff: float = 0.95
    # --- charging park
    n_moto: int = 112
    n_taxi: int = 16
    moto_kw: float = 2.0
    taxi_kw: float = 3.0
    moto_battery_kwh: float = 4.6
    taxi_battery_kwh: float = 7.4
    daily_moto: float = 270.0
    daily_taxi: float = 39.0
    need_frac_min: float = 0.36
    need_frac_max: float = 0.90
    stay_probs: tuple[float, ...] = (0.15, 0.40, 0.30, 0.15)  # P(stay = 1, 2, 3, 4 hours)
    open_hour: int = 9
    close_hour: int = 22
    operating_factor: tuple[float, ...] = _operating_factor()
    served_tol_kwh: float = 1e-3
    # --- calendar
    first_weekday: int = 0  # 1 January 2024 is a Monday
    # --- reward and observation scaling
    reward: str = "co2_focus"
    peak_threshold_kw: float = 2500.0
    # --- grid connection: None = no limit; above it EV charging and the battery's grid charging
    # are curtailed, what remains is a violation, penalised with this weight (docs/physics.md)
    grid_limit_kw: float | None = None
    grid_limit_penalty: float = 1.0
    # --- observation: forecast hours ahead and the forecasts' relative error 24 h ahead (0 = perfect)
    forecast_offsets: tuple[int, ...] = (0, 1, 2, 3, 6, 12)
    pv_forecast_noise_frac: float = 0.0
    mall_forecast_noise_frac: float = 0.0
    # --- profiles: the packaged weather years drawn from, one per episode (profiles.WEATHER_YEARS);
    # a profile given here (an array or a dict for profiles.load_profile) replaces the packaged
    # one in every year
    weather_years: tuple[str, ...] = ("2024",)
    pv_profile: Mapping[str, Any] | None = None
    mall_profile: Mapping[str, Any] | None = None

    # ----------------------------------------------------------------- derived constants
    @property
    def n_sockets(self) -> int:
        return self.n_moto + self.n_taxi

    @property
    def ev_installed_kw(self) -> float:
        return self.n_moto * self.moto_kw + self.n_taxi * self.taxi_kw

    @property
    def eta_charge(self) -> float:
        return math.sqrt(self.round_trip_eff)

    @property
    def eta_discharge(self) -> float:
        return math.sqrt(self.round_trip_eff)

    @property
    def max_stay_hours(self) -> int:
        return len(self.stay_probs)

    @property
    def reward_weights(self) -> dict[str, float]:
        return REWARD_PRESETS[self.reward]

    @property
    def n_years(self) -> int:
        return len(self.weather_years)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "Scenario":
        """Check every field once; raise a one-line ValueError naming the field, the value and the range.

        Runs when a Scenario is made (so none exists with a bad field). Values are stored in their
        exact kinds: ints as floats where a float is meant, sequences as tuples, profile mappings as
        plain dicts (copies). Profile data (values of the arrays and files) are checked where they
        are read, by :func:`scenario_profiles`.
        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            object.__setattr__(self, field.name, _RULES[field.name](self.name, field.name, value))
        self._check_relations()
        return self

    def _check_relations(self) -> None:
        def need(cond: bool, field: str, accepted: str) -> None:
            if not cond:
                raise ValueError(f"scenario {self.name!r}: {field} = {getattr(self, field)!r}; expected {accepted}")

        need(1 <= self.n_sockets <= MAX_SOCKETS, "n_moto", f"n_moto + n_taxi in [1, {MAX_SOCKETS:,}]")
        need(self.soc_min < self.soc_max, "soc_min", f"below soc_max = {self.soc_max}")
        need(self.soc_min <= self.soc_init <= self.soc_max, "soc_init",
             f"a number in [soc_min, soc_max] = [{self.soc_min}, {self.soc_max}]")
        need(self.need_frac_min <= self.need_frac_max, "need_frac_min",
             f"at most need_frac_max = {self.need_frac_max}")
        need(abs(sum(self.stay_probs) - 1.0) < 1e-6, "stay_probs",
             "probabilities of stays of 1, 2, ... hours summing to 1")
        need(max(self.tariff_per_kwh) > 0, "tariff_per_kwh", "24 prices, not all 0")
        need(self.open_hour < self.close_hour, "close_hour", f"after open_hour = {self.open_hour}")
        need(all(x == 0 for h, x in enumerate(self.operating_factor) if h < self.open_hour or h >= self.close_hour),
             "operating_factor", f"zeros outside opening hours {self.open_hour}:00-{self.close_hour}:00")
        need(sum(self.operating_factor) > 0 or (self.daily_moto == 0 and self.daily_taxi == 0),
             "operating_factor", "some positive factor when vehicles arrive")
        need(len(set(self.forecast_offsets)) == len(self.forecast_offsets), "forecast_offsets", "distinct hours")
        need(len(self.weather_years) == 1 or self.pv_profile is None or self.mall_profile is None, "weather_years",
             "a single year when both pv_profile and mall_profile are given (the years would be identical)")
        # Arrivals are drawn by inverse CDF from a table P(N <= k), k < K, per hour of day (env.py):
        # K is about m + 7 sqrt(m) for the busiest hour's mean m. m <= MAX_ARRIVALS_PER_HOUR keeps
        # K <= 10,705 and the table (24 x K float32 per vehicle type) at about 1 MB.
        factor = self.operating_factor
        if sum(factor) > 0:
            for field in ("daily_moto", "daily_taxi"):
                limit = MAX_ARRIVALS_PER_HOUR * sum(factor) / max(factor)
                need(getattr(self, field) <= limit * (1 + 1e-12), field,
                     f"at most {limit:,.0f} a day with this operating_factor (the busiest hour may average at most "
                     f"{MAX_ARRIVALS_PER_HOUR:,} arrivals, so that the arrival table stays near 1 MB)")

    def replace(self, **changes: Any) -> "Scenario":
        """A copy with some fields changed; unknown names fail with the list of accepted ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"scenario override {unknown[0]!r} is not a scenario field; accepted: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
            elif isinstance(v, Mapping):
                out[k] = dict(v)
        return out


def _tou_soles() -> tuple[float, ...]:
    return tuple(0.45 if 18 <= h <= 22 else 0.28 for h in range(24))


PRESETS: dict[str, Scenario] = {
    "iquitos-128": Scenario(name="iquitos-128"),
    "iquitos-38": Scenario(
        name="iquitos-38",
        capacity_kwh=1700.0,
        power_kw=400.0,
        n_moto=30,
        n_taxi=8,
        moto_kw=7.4,
        taxi_kw=7.4,
        tariff_per_kwh=_tou_soles(),
        currency="PEN",
        # 38 sockets for ~309 vehicles a day: at 7.4 kW a vehicle is served within the hour, and
        # longer stays would turn away ~40 % of the fleet at the evening peak.
        stay_probs=(0.85, 0.15),
    ),
}


def get_scenario(name: str | Scenario = "iquitos-128", **overrides: Any) -> Scenario:
    """A preset by name (or a Scenario), with field overrides; validated."""
    if isinstance(name, Scenario):
        base = name
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise ValueError(f"scenario: unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    return base.replace(**overrides) if overrides else base.validate()


# Profile values: finite, PV in [0, 2 x pv_dc_kwp] (a loose bound on the AC output of the plant
# that catches unit mistakes such as W for kW), mall load in [0, MAX_POWER_KW].
def _check_profile_values(scn: Scenario, field: str, values: np.ndarray, source: str) -> None:
    high = 2.0 * scn.pv_dc_kwp if field == "pv_profile" else MAX_POWER_KW
    accepted = (f"finite kW in [0, 2 x pv_dc_kwp = {high:g}]" if field == "pv_profile"
                else f"finite kW in [0, {high:g}]")
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0.0) & (values <= high)))
    if bad.size:
        hour = int(bad[0])
        what = ("NaN" if np.isnan(values[hour]) else "negative" if values[hour] < 0
                else "infinite" if np.isinf(values[hour]) else "too large")
        raise ValueError(f"scenario {scn.name!r}: {field}{source}: {what} value {float(values[hour])!r} at hour "
                         f"{hour} (day {hour // 24}, {hour % 24:02d}:00); expected {accepted}")


@functools.lru_cache(maxsize=16)
def _read_file(kind: str, spec: tuple[tuple[str, Any], ...], stamp: tuple[int, int]) -> _profiles.Profile:
    """A profile file read once per content version (``stamp``: modification time and size)."""
    options = dict(spec)
    profile = _profiles.read_profile(options.pop("path"), options.pop("column"), kind=kind, **options)
    profile.kw.setflags(write=False)
    return profile


def _file_profile(spec: Mapping[str, Any], kind: str) -> _profiles.Profile:
    try:
        info = os.stat(spec["path"])
    except OSError:  # let the loader say what is wrong with the path
        return _profiles.read_profile(spec["path"], spec["column"], kind=kind,
                                      **{k: v for k, v in spec.items() if k not in ("path", "column")})
    key = tuple(sorted({**spec, "path": os.path.abspath(spec["path"])}.items()))
    return _read_file(kind, key, (info.st_mtime_ns, info.st_size))


def _profile(scn: Scenario, field: str, year: str) -> tuple[np.ndarray, tuple[str, ...]]:
    spec = getattr(scn, field)
    kind = "pv" if field == "pv_profile" else "load"
    if spec is None:
        values, notes = _profiles.builtin_profile("pv_kw" if kind == "pv" else "mall_kw", year), ()
        source = "" if scn.weather_years == (_profiles.DEFAULT_YEAR,) else f" (weather year {year})"
    elif isinstance(spec, np.ndarray):
        values, notes, source = spec, (), ""
    else:
        profile = _file_profile(spec, kind)
        values, notes, source = profile.kw, profile.notes, f" ({spec['path']}, column {spec['column']!r})"
    _check_profile_values(scn, field, values, source)
    return values, tuple(f"{field}{source}: {note}" for note in notes)


def _stack(scn: Scenario, field: str) -> np.ndarray:
    array = np.stack([_profile(scn, field, year)[0] for year in scn.weather_years])
    array.setflags(write=False)
    return array


def mall_peak_kw(scn: Scenario) -> float:
    """The largest mall load of the scenario's profile family (kW): the scale of the grid and mall features.

    For the packaged mall profile, the largest over every packaged weather year (not only the
    scenario's), so that a training and an evaluation scenario on other years share their reward
    and observation scales; for a given profile, its own maximum.
    """
    if scn.mall_profile is None:
        return max(float(_profiles.builtin_profile("mall_kw", year).max()) for year in WEATHER_YEARS)
    return float(_profile(scn, "mall_profile", scn.weather_years[0])[0].max())


def scenario_profiles(scn: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """The (pv_kw, mall_kw) hourly profiles of a scenario's weather years: read-only float64 ``[Y, 8760]``.

    Row ``y`` belongs to ``weather_years[y]``. Checks the values (see ``_check_profile_values``)
    and that ``peak_threshold_kw`` lies below the largest import the site can draw (mall peak +
    EV installed power + battery power), else the peak term could never act.
    """
    pv = _stack(scn, "pv_profile")
    mall = _stack(scn, "mall_profile")
    peak = mall_peak_kw(scn)
    largest = peak + scn.ev_installed_kw + scn.power_kw
    if scn.peak_threshold_kw >= largest:
        raise ValueError(
            f"scenario {scn.name!r}: peak_threshold_kw = {scn.peak_threshold_kw!r}; expected below the largest "
            f"possible import {largest:g} kW (mall peak {peak:g} + EV installed {scn.ev_installed_kw:g} "
            f"+ battery {scn.power_kw:g} kW)")
    return pv, mall


def split_weather_years(scn: Scenario, train_years: tuple[str, ...] = TRAIN_YEARS,
                        eval_years: tuple[str, ...] = EVAL_YEARS) -> tuple[Scenario, Scenario]:
    """A training and an evaluation copy of ``scn`` on disjoint weather years.

    Refuses (one-line ValueError) a year in both lists, so an evaluation can never see a
    training year; each list is checked like the ``weather_years`` field.
    """
    train = scn.replace(weather_years=tuple(train_years))
    test = scn.replace(weather_years=tuple(eval_years))
    shared = [year for year in test.weather_years if year in train.weather_years]
    if shared:
        raise ValueError(f"scenario {scn.name!r}: eval_years = {list(test.weather_years)!r} share "
                         f"{', '.join(shared)} with train_years = {list(train.weather_years)!r}; expected disjoint years")
    return train, test


def profile_notes(scn: Scenario) -> list[str]:
    """What the profile loader assumed to place a scenario's file profiles on the calendar.

    One line per assumption, prefixed with the field and the file: ``"mall_profile (meter.csv,
    column 'kWh'): no timestamps: row 0 taken as 2024-01-01 00:00 local, 365 days (no 29
    February)"``. Empty for the packaged profiles and for arrays given in code. A training run
    records these lines in its log and its resolved configuration.
    """
    return [note for field in ("pv_profile", "mall_profile") for note in _profile(scn, field, scn.weather_years[0])[1]]


def fingerprint(scn: Scenario, pv_kw: np.ndarray | None = None, mall_kw: np.ndarray | None = None) -> str:
    """A short hash of every constant and both profiles: equal fingerprints, equal physics."""
    if pv_kw is None or mall_kw is None:
        pv_kw, mall_kw = scenario_profiles(scn)
    h = hashlib.sha256()
    fields = scn.to_dict()
    fields.pop("name")
    fields.pop("pv_profile")
    fields.pop("mall_profile")
    h.update(json.dumps(fields, sort_keys=True).encode())
    h.update(np.ascontiguousarray(pv_kw, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mall_kw, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
