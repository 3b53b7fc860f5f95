"""The 365-day calendar against Python's own dates."""
import datetime as dt

import numpy as np

from oe3jax.simulation.calendar import MONTH_START_HOURS, month_of_hour, monthly_peaks


def test_months_match_the_2023_calendar():
    # 2024 without 29 February has the months of a common year such as 2023
    start = dt.datetime(2023, 1, 1)
    months = np.array([(start + dt.timedelta(hours=int(t))).month - 1 for t in range(8760)])
    np.testing.assert_array_equal(month_of_hour(), months)
    assert MONTH_START_HOURS[2] == (dt.datetime(2023, 3, 1) - start).days * 24 == 59 * 24


def test_monthly_peaks_by_hand():
    hours = np.array([0, 5, 744, 8759, 8760 + 1])  # the last wraps to January
    peaks = monthly_peaks(hours, np.array([3.0, 7.0, 2.0, 9.0, 8.0]))
    assert peaks[0] == 8.0 and peaks[1] == 2.0 and peaks[11] == 9.0 and peaks[5] == 0.0


def test_billing_peaks_restart_at_the_episode_start_and_each_month():
    from oe3jax.simulation.calendar import billing_peaks

    # 31 January 22:00 to 1 February 01:00, then the year wraps from 31 December into January
    hours = np.array([742, 743, 744, 745, 8758, 8759, 8760, 8761])
    imports = np.array([5.0, 9.0, 4.0, 6.0, 3.0, 2.0, 7.0, 1.0])
    assert billing_peaks(hours, imports).tolist() == [9.0, 6.0, 3.0, 7.0]
    # one whole year from 1 January: the twelve monthly peaks
    rng = np.random.default_rng(0)
    year = rng.uniform(0, 100, 8760)
    np.testing.assert_array_equal(billing_peaks(np.arange(8760), year), monthly_peaks(np.arange(8760), year))
    assert billing_peaks(np.array([], int), np.array([])).size == 0
