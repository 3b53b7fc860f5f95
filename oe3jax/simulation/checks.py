"""Input checks at the environment's edge, shared by the JAX environment and the NumPy reference.

They read only shapes and dtypes, which JAX knows when it builds a trace: inside ``jax.jit``,
``jax.vmap`` or ``lax.scan`` a check runs once, while tracing, and costs nothing per step.
Plain NumPy; no JAX import.
"""
from __future__ import annotations

from typing import Any

import numpy as np

# dtypes of real numbers that NumPy does not classify (ml_dtypes: bfloat16, float8_*, int4, ...)
_REAL_NAME_PREFIXES = ("bfloat", "float", "int", "uint")


def is_real_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` holds real numbers: bool, signed or unsigned integers, floats."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return False
    return dt.kind in "biuf" or (dt.kind == "V" and dt.name.startswith(_REAL_NAME_PREFIXES))


def check_action(shape: tuple[int, ...], dtype: Any, n_sockets: int, scenario: str) -> None:
    """Raise a one-line error unless an action of ``shape`` and ``dtype`` fits the park.

    An action is ``1 + n_sockets`` real numbers: the battery, then one per socket.
    """
    expected = (1 + n_sockets,)
    what = f"shape {expected} (the battery, then {n_sockets} sockets) for scenario {scenario!r}"
    if not is_real_dtype(dtype):
        raise TypeError(f"action: expected real numbers (bool, int or float) of {what}, got dtype {dtype}")
    if tuple(shape) != expected:
        raise ValueError(f"action: expected {what}, got shape {tuple(shape)}")


def check_observation(shape: tuple[int, ...], size: int, scenario: str, role: str = "", dtype: Any = None) -> None:
    """Raise a one-line error unless ``shape`` ends in ``size``, the observation size of ``scenario``
    (and, if given, ``dtype`` holds real numbers).

    Leading axes (a batch) are allowed. ``role`` says how the scenario matters (", which this
    policy was trained for").
    """
    if dtype is not None and not is_real_dtype(dtype):
        raise TypeError(f"obs: expected real numbers, {size} features on the last axis (the observation of scenario "
                        f"{scenario!r}{role}), got dtype {dtype}")
    if len(shape) == 0 or shape[-1] != size:
        got = f"shape {tuple(shape)}" if len(shape) else "a scalar"
        raise ValueError(f"obs: expected {size} features on the last axis (the observation of scenario "
                         f"{scenario!r}{role}), got {got}")


__all__ = ["check_action", "check_observation", "is_real_dtype"]
