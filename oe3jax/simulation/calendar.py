"""The simulation's calendar: 2024 without 29 February, 365 days of 24 local hours (UTC-5).

Hour ``t`` of the year (0..8759) is day ``t // 24``, hour of day ``t % 24``; 1 January 2024 is a
Monday. Months are those of a 365-day year, so a demand charge billed on monthly peaks uses the
same months whatever year the profiles came from.
"""
from __future__ import annotations

import numpy as np

from oe3jax.simulation.profiles import HOURS_PER_YEAR

DAYS_PER_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: First hour of each month, and the end of the year (13 values).
MONTH_START_HOURS = tuple(int(h) for h in np.cumsum((0,) + DAYS_PER_MONTH) * 24)
assert MONTH_START_HOURS[-1] == HOURS_PER_YEAR


def month_of_hour() -> np.ndarray:
    """``int32[8760]``: the month (0 = January) of every hour of the year."""
    return np.repeat(np.arange(12, dtype=np.int32), np.asarray(DAYS_PER_MONTH) * 24)


def monthly_peaks(hours: np.ndarray, import_kw: np.ndarray) -> np.ndarray:
    """The highest hourly import of each month (12 values; 0 for a month with no hour given).

    ``hours`` are hours of the year (``t``) and ``import_kw`` the grid import of those hours.
    """
    month = month_of_hour()[np.asarray(hours) % HOURS_PER_YEAR]
    peaks = np.zeros(12)
    np.maximum.at(peaks, month, np.asarray(import_kw, np.float64))
    return peaks


def billing_peaks(hours: np.ndarray, import_kw: np.ndarray) -> np.ndarray:
    """The highest import of each billing period of an episode, in episode order.

    ``hours`` are the hours of the year of consecutive steps (``t``, wrapping after 8,759) and
    ``import_kw`` their grid import. A billing period is a maximal run of steps in the same month:
    a period starts at the episode's first step and at every first hour of a month. A one-year
    episode from 1 January has the 12 months as periods (then the sum equals the sum of
    :func:`monthly_peaks`); one that starts on 15 January has 13, January's two halves apart.
    """
    month = month_of_hour()[np.asarray(hours) % HOURS_PER_YEAR]
    values = np.asarray(import_kw, np.float64)
    if month.size == 0:
        return np.zeros(0)
    starts = np.flatnonzero(np.r_[True, month[1:] != month[:-1]])
    return np.maximum.reduceat(values, starts)
