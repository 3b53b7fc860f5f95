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
