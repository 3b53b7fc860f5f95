"""Running observation statistics and the normalisation every learner applies to observations.

The statistics (:class:`ObsNormState`) live in the train state, so they are vmapped over seeds,
checkpointed with the rest and shared with the saved policy. They are merged batch by batch with
the parallel (Chan et al.) update of mean and population variance. A normalised observation is
``clip((obs - mean) / max(std, std_floor), -clip, clip)`` in float32.

Each algorithm's config section carries the three keys of :func:`config_spec`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from oe3jax.schema import Field

_F32 = jnp.float32

Normalizer = Callable[["ObsNormState", jax.Array], jax.Array]


def config_spec(enabled: bool) -> dict[str, Field]:
    """The config keys of the observation normalisation; ``enabled`` is the default of ``normalize_obs``."""
    return {
        "normalize_obs": Field(enabled, bool, help="running mean/std observation normalisation"),
        "obs_std_floor": Field(0.1, float, low=0.0, low_open=True,
                               help="least std an observation is divided by (keeps rare features small)"),
        "obs_clip": Field(10.0, float, low=0.0, low_open=True, help="normalised observations clipped to +-this"),
    }


@struct.dataclass
class ObsNormState:
    """Running mean and (population) variance of the observations, and the sample count."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def obs_norm_init(obs_dim: int) -> ObsNormState:
    """Identity statistics (mean 0, variance 1) with a tiny prior count."""
    return ObsNormState(jnp.zeros((obs_dim,), _F32), jnp.ones((obs_dim,), _F32), jnp.asarray(1e-4, _F32))


def obs_norm_update(stats: ObsNormState, batch: jax.Array) -> ObsNormState:
    """Merge a batch ``[..., obs_dim]`` into the statistics (parallel / Chan et al. update)."""
    x = batch.reshape(-1, batch.shape[-1]).astype(_F32)
    n = jnp.asarray(x.shape[0], _F32)
    b_mean = jnp.mean(x, axis=0)
    b_var = jnp.var(x, axis=0)
    total = stats.count + n
    delta = b_mean - stats.mean
    mean = stats.mean + delta * (n / total)
    m2 = stats.var * stats.count + b_var * n + delta**2 * (stats.count * n / total)
    return ObsNormState(mean, m2 / total, total)


def obs_normalize(stats: ObsNormState, obs: jax.Array, std_floor: float, clip: float) -> jax.Array:
    """``clip((obs - mean) / max(std, std_floor), -clip, clip)`` in float32.

    The floor keeps a feature that is almost always constant (a rarely used socket, say) from
    being blown up by a tiny std; features the environment already scales to order 1, such as
    the battery SOC, stay well inside the clip range.
    """
    std = jnp.maximum(jnp.sqrt(stats.var), std_floor)
    return jnp.clip((obs.astype(_F32) - stats.mean) / std, -clip, clip)


def normalizer(algo_cfg: Mapping[str, Any]) -> Normalizer:
    """``norm(stats, obs)``: the configured normalisation, or a float32 cast when it is off."""
    if not algo_cfg["normalize_obs"]:
        return lambda stats, obs: obs.astype(_F32)
    floor, clip = float(algo_cfg["obs_std_floor"]), float(algo_cfg["obs_clip"])
    return lambda stats, obs: obs_normalize(stats, obs, floor, clip)


def updated(algo_cfg: Mapping[str, Any], stats: ObsNormState, batch: jax.Array) -> ObsNormState:
    """The statistics with ``batch`` merged in, or unchanged when normalisation is off."""
    return obs_norm_update(stats, batch) if algo_cfg["normalize_obs"] else stats
