"""Actor and critic networks (Flax linen) and the Gaussian policy distributions they feed.

Two architectures, chosen by ``network.kind``:

``mlp``
    A plain multilayer perceptron on the flat observation. Works with any environment.

``socket_shared``
    For the EV park, whose observation is ``concat(global[n_global], sockets[n_sockets,
    n_socket_features])`` (socket-major) and whose action is ``[battery, socket_0, ...,
    socket_{n-1}]``. The global context is embedded once; one small network, shared by every
    socket, reads each socket's features beside that embedding; the sockets' hidden vectors are
    pooled (mean, or mean and max) into a park summary. Each socket's action comes from its own
    hidden vector and the summary, the battery's from the embedding and the summary, and the
    value from the embedding and the summary. No parameter depends on the number of sockets, so
    the same parameters drive a park of any size, and permuting the sockets permutes their
    actions.

Battery head (``battery_head``, socket_shared only): ``power`` reads the battery's action (a
fraction of its power rating) straight off the head. ``import`` makes the head output two grid-import
levels instead, a discharge level ``L`` and a charge level ``C <= L`` (kW), and the battery's mean
becomes ``(clip(net, C, L) - net) / power rating``: it discharges what the hour's net load exceeds
``L``, charges what ``C`` exceeds it (PV surplus when ``C = 0``, grid energy above), and idles in
between. The net load (``mall + EV - PV``) is computed from the raw observation: the current
hour's PV and mall forecasts and, for the EV, every plugged socket's deterministic action times
its rating, capped by its need (no gradient flows through that estimate). Shaving the import to a
level is then a constant output instead of a function of the net load to be learned. Both levels
start at 0 (``import_target_init`` moves ``L``): the greedy rule, discharging whenever there is
net load and storing every PV surplus. With ``squash: tanh`` the battery's action is ``tanh`` of
that mean, so a level is met exactly only near idle. The head needs the raw observation (the
algorithm's ``normalize_obs: false``) and the forecasts of the current hour (a forecast offset 0).
With ``import_level_base: month_peak`` the discharge level is the month-to-date peak import (an
observation feature) plus the head's output: the starting policy then never lets the import rise
above the month's peak while the battery holds energy, which is what a demand charge pays for,
and the network learns where to go below it (emptying the battery for the next day's PV).
``import_level_base: ratchet`` builds the ratchet rule's level (``control.rules.make_ratchet``)
around the output ``o``: ``max(month-to-date peak, floor + o)`` in the rule's hold hours
(09:00-22:59, the hour read off the observation's time-of-day features) and ``max(0, o)`` at
night, the floor being the rule's fraction of the mall's reference peak (``mall_ref_kw``). With
its outputs at 0 the head is that rule, but for the vehicles, which follow the socket head: the
network starts from a strong heuristic and learns where to hold more than its floor. The output
moves the floor, never the month-to-date peak: added to that peak, a small positive output would
compound (each day's import, capped at the peak plus the output, becomes the next day's peak),
and the level would climb through the month until the battery no longer shaved anything.
The dispatch has no gradient where it idles (the net load between ``C`` and ``L``): a policy
gradient cannot move the levels from an hour at which the battery idled, however good a
discharge sampled there turned out. ``import_residual: true`` adds a third output, a battery
action (a fraction of the rating, starting at 0) added to the dispatch, so the network can also
act where the levels leave the battery idle, such as emptying it at night. ``import_gradient_kw: w``
keeps the dispatch's value and gives it the gradient of a clip smoothed over ``w`` kW,
``net - w softplus((net - L) / w) + w softplus((C - net) / w)``: ``sigmoid((net - L) / w)`` for ``L``
and ``sigmoid((C - net) / w)`` for ``C``, largest for the level nearest the net load, so that an
hour at which the battery idled still pulls the levels towards discharging or charging where the
critic or the advantage says that would have paid. ``import_charge_level: pv_surplus`` fixes ``C``
at 0 kW (capped by ``L``): every PV surplus is stored and no grid energy, as every rule does; the
head's second output is then unused.

Precision: every layer computes in ``dtype`` (the configured precision) and stores its
parameters in float32 (``param_dtype``); outputs (means, log-stds, values, Q-values) are cast to
float32 before any distribution or loss.

Policy distribution: a diagonal Gaussian over a pre-squash variable ``u``; the action is
``tanh(u)`` (``squash: tanh``, log-probability corrected by the tanh Jacobian) or ``clip(u, -1,
1)`` (``squash: clip``: the log-probability is that of ``u``, the clipping being part of the
environment's response, which keeps the policy-gradient estimator exact). The deterministic
action is the squashed mean.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from oe3jax.control.rules import RATCHET_FLOOR_FRAC, RATCHET_HOLD_HOURS
from oe3jax.schema import ConfigError, Field

KINDS = ("socket_shared", "mlp")
ACTIVATIONS = ("tanh", "relu", "silu", "gelu", "elu")
SQUASHES = ("clip", "tanh")
LOG_STD_MODES = ("state_independent", "state_dependent")
POOLS = ("mean", "mean_max")
BATTERY_HEADS = ("power", "import")
IMPORT_LEVEL_BASES = ("zero", "month_peak", "ratchet")
IMPORT_CHARGE_LEVELS = ("learned", "pv_surplus")

# Bounds of a state-dependent log standard deviation (the usual SAC range).
LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0

NETWORK_SPEC: dict[str, Field] = {
    "kind": Field("socket_shared", str, choices=KINDS,
                  help="socket_shared (EV park only, any number of sockets) or mlp (any env)"),
    "hidden_sizes": Field([64, 64], list, item=int, low=1, min_len=1,
                          help="mlp: actor/critic layers; socket_shared: battery, value and Q heads"),
    "socket_hidden_sizes": Field([32, 32], list, item=int, low=1, min_len=1,
                                 help="socket_shared: layers of the network shared by every socket"),
    "global_embed_size": Field(32, int, low=1, help="socket_shared: width of the global-context embedding"),
    "pool": Field("mean", str, choices=POOLS, help="socket_shared: how socket vectors are summarised"),
    "activation": Field("tanh", str, choices=ACTIVATIONS),
    "log_std": Field("state_independent", str, choices=LOG_STD_MODES,
                     help="learned constant log-std per action (shared by the sockets) or a network head"),
    "log_std_init": Field(-0.5, float, low=LOG_STD_MIN, high=LOG_STD_MAX,
                          help="initial log-std (state_independent) or its bias (state_dependent)"),
    "socket_action_init": Field(0.0, float, low=-1.0, high=1.0,
                                help="initial mean of every socket action (EV park only); 1.0 starts from "
                                     "the uncontrolled policy: full power, battery idle"),
    "battery_head": Field("power", str, choices=BATTERY_HEADS,
                          help="socket_shared: the battery head outputs its power (power), or a discharge "
                               "and a charge level of the grid import between which the hour's net load "
                               "is kept (import; needs raw observations: normalize_obs false)"),
    "import_target_init": Field(0.0, float, low=-1.0, high=1.0,
                                help="battery_head import: the initial discharge level, a fraction of the largest "
                                     "import (grid_ref_kw); 0 starts from the greedy rule"),
    "import_level_base": Field("zero", str, choices=IMPORT_LEVEL_BASES,
                               help="battery_head import: the discharge level is the head's output (zero), the "
                                    "month-to-date peak import plus it (month_peak; 0 then holds the month's peak), "
                                    "or the ratchet rule's level plus it (ratchet; 0 then starts from that rule)"),
    "import_residual": Field(False, bool,
                             help="battery_head import: add a battery action of the network's own to the levels' "
                                  "dispatch, so that it can move the battery where the dispatch idles (e.g. empty it "
                                  "at night for the next day's PV)"),
    "import_gradient_kw": Field(0.0, float, low=0.0, high=1.0e5,
                                help="battery_head import: the width (kW) of a smooth clip whose gradient replaces "
                                     "the dispatch's (its value stays the hard clip's), so that the levels are "
                                     "pulled also at hours where the battery idles between them; 0 keeps the hard "
                                     "clip's gradient, zero where the battery idles"),
    "import_charge_level": Field("learned", str, choices=IMPORT_CHARGE_LEVELS,
                                 help="battery_head import: the charge level is the head's output (learned: PV "
                                      "surplus and grid energy below it), or 0 kW (pv_surplus: every PV surplus "
                                      "is stored, nothing is charged from the grid)"),
    "squash": Field("clip", str, choices=SQUASHES,
                    help="how a Gaussian sample maps to [-1, 1]: clip or tanh (with Jacobian)"),
}

_F32 = jnp.float32


def _activation(name: str):
    return {"tanh": jnp.tanh, "relu": nn.relu, "silu": nn.silu, "gelu": nn.gelu, "elu": nn.elu}[name]


def _dense(features: int, dtype: Any, scale: float = math.sqrt(2.0), name: str | None = None) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        param_dtype=_F32,
        kernel_init=nn.initializers.orthogonal(scale),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class MLP(nn.Module):
    """Dense layers with an activation after each one (no output layer)."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    dtype: Any = _F32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        for size in self.hidden_sizes:
            x = act(_dense(size, self.dtype)(x))
        return x


class _ContextDense(nn.Module):
    """``Dense`` over ``concat([x, broadcast(context)], -1)``, computed without the concatenation.

    ``x`` is ``[..., n, a]`` (one row per socket) and ``context`` ``[..., c]`` (one per env). The
    parameters are those of ``nn.Dense`` on the concatenated input (``kernel`` ``[a + c, features]``,
    ``bias``), and the output is ``x @ kernel[:a] + (context @ kernel[a:] + bias)`` broadcast over
    the ``n`` rows: mathematically the same, but the context's product is computed once per env
    instead of once per row, and no ``[..., n, a + c]`` copy is made.
    """

    features: int
    dtype: Any = _F32
    scale: float = math.sqrt(2.0)

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        a = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.orthogonal(self.scale), (a + context.shape[-1], self.features),
                            _F32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), _F32)
        x, context, kernel, bias = (v.astype(self.dtype) for v in (x, context, kernel, bias))
        return x @ kernel[:a] + (context @ kernel[a:] + bias)[..., None, :]


class _ContextMLP(nn.Module):
    """:class:`MLP` on ``concat([x, broadcast(context)])`` with the first layer a :class:`_ContextDense`
    (parameter names and shapes those of the MLP on the concatenation)."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    dtype: Any = _F32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        x = act(_ContextDense(self.hidden_sizes[0], self.dtype, name="Dense_0")(x, context))
        for i, size in enumerate(self.hidden_sizes[1:], start=1):
            x = act(_dense(size, self.dtype, name=f"Dense_{i}")(x))
        return x


class _LogStd(nn.Module):
    """A learned state-independent log-std vector of ``size`` entries, float32."""

    size: int
    init_value: float

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("log_std", nn.initializers.constant(self.init_value), (self.size,), _F32)


def _bound_log_std(raw: jax.Array, init_value: float) -> jax.Array:
    """A head's raw output shifted by the initial value and clipped to the allowed range."""
    return jnp.clip(raw.astype(_F32) + init_value, LOG_STD_MIN, LOG_STD_MAX)


# ----------------------------------------------------------------------------------------------
# Plain MLP networks
# ----------------------------------------------------------------------------------------------
class MLPActor(nn.Module):
    """Gaussian actor on the flat observation: returns ``(mean, log_std)``, float32, same shape."""

    action_dim: int
    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    log_std_mode: str = "state_independent"
    log_std_init: float = -0.5
    dtype: Any = _F32
    mean_offset: tuple[float, ...] | None = None  # added to the mean head (initial action prior)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = MLP(self.hidden_sizes, self.activation, self.dtype)(obs)
        mean = _dense(self.action_dim, self.dtype, 0.01, name="mean")(x).astype(_F32)
        if self.mean_offset is not None:
            mean = mean + jnp.asarray(self.mean_offset, _F32)
        if self.log_std_mode == "state_dependent":
            log_std = _bound_log_std(_dense(self.action_dim, self.dtype, 0.01, name="log_std")(x), self.log_std_init)
        else:
            log_std = jnp.broadcast_to(_LogStd(self.action_dim, self.log_std_init)(), mean.shape)
        return mean, log_std


class MLPCritic(nn.Module):
    """State value V(obs): float32 with the observation's leading shape."""

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    dtype: Any = _F32

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = MLP(self.hidden_sizes, self.activation, self.dtype)(obs)
        return _dense(1, self.dtype, 1.0, name="value")(x)[..., 0].astype(_F32)


class MLPQ(nn.Module):
    """Action value Q(obs, action): float32 with the observation's leading shape."""

    hidden_sizes: Sequence[int]
    activation: str = "relu"
    dtype: Any = _F32

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        x = jnp.concatenate([obs, action.astype(obs.dtype)], axis=-1)
        x = MLP(self.hidden_sizes, self.activation, self.dtype)(x)
        return _dense(1, self.dtype, 1.0, name="q")(x)[..., 0].astype(_F32)


# ----------------------------------------------------------------------------------------------
# Socket-shared networks
# ----------------------------------------------------------------------------------------------
def split_observation(obs: jax.Array, n_global: int, n_socket_features: int) -> tuple[jax.Array, jax.Array]:
    """``(global [..., n_global], sockets [..., n_sockets, n_socket_features])`` from a flat obs."""
    n_rest = obs.shape[-1] - n_global
    if n_rest < 0 or n_rest % n_socket_features:
        raise ValueError(
            f"observation of size {obs.shape[-1]} is not {n_global} global values plus whole sockets "
            f"of {n_socket_features} features"
        )
    sockets = obs[..., n_global:].reshape(*obs.shape[:-1], n_rest // n_socket_features, n_socket_features)
    return obs[..., :n_global], sockets


class SocketTorso(nn.Module):
    """Shared encoder: global embedding, per-socket hidden vectors and their pooled summary.

    ``global_extra`` ([..., k]) is appended to the global features and ``socket_extra``
    ([..., n_sockets, m]) to every socket's features (the Q critic passes the action this way).
    Returns ``(embedding [..., E], socket_hidden [..., n, H], summary [..., H or 2H])``.
    """

    n_global: int
    n_socket_features: int
    global_embed_size: int
    socket_hidden_sizes: Sequence[int]
    pool: str = "mean"
    activation: str = "tanh"
    dtype: Any = _F32

    @nn.compact
    def __call__(
        self, obs: jax.Array, global_extra: jax.Array | None = None, socket_extra: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        act = _activation(self.activation)
        glob, sockets = split_observation(obs, self.n_global, self.n_socket_features)
        if global_extra is not None:
            glob = jnp.concatenate([glob, global_extra.astype(glob.dtype)], axis=-1)
        if socket_extra is not None:
            sockets = jnp.concatenate([sockets, socket_extra.astype(sockets.dtype)], axis=-1)
        embed = act(_dense(self.global_embed_size, self.dtype, name="global_embed")(glob))
        # each socket reads concat([its features, embed]); the embedding's product is made once per env
        hidden = _ContextMLP(self.socket_hidden_sizes, self.activation, self.dtype, name="socket_net")(
            sockets, embed)
        summary = jnp.mean(hidden, axis=-2)
        if self.pool == "mean_max":
            summary = jnp.concatenate([summary, jnp.max(hidden, axis=-2)], axis=-1)
        return embed, hidden, summary


@dataclasses.dataclass(frozen=True)
class ImportSite:
    """What the ``import`` battery head reads off a raw observation, and the site's constants (static)."""

    pv_index: int            # global feature: PV forecast of the current hour / pv_ac_kw
    mall_index: int          # global feature: mall forecast of the current hour / mall_ref_kw
    month_peak_index: int    # global feature: month-to-date peak import / grid_ref_kw
    hour_sin_index: int      # global features: sin and cos of 2 pi hour / 24
    hour_cos_index: int
    pv_ac_kw: float
    mall_ref_kw: float
    grid_ref_kw: float
    power_kw: float
    moto_kw: float
    taxi_kw: float
    moto_battery_kwh: float
    taxi_battery_kwh: float

    def hour_of_day(self, glob: jax.Array) -> jax.Array:
        """The hour of the day (int32, 0..23) read off the observation's time-of-day features."""
        angle = jnp.arctan2(glob[..., self.hour_sin_index].astype(_F32), glob[..., self.hour_cos_index].astype(_F32))
        return jnp.round(angle * (24.0 / (2.0 * math.pi))).astype(jnp.int32) % 24

    @property
    def ratchet_floor_kw(self) -> float:
        """The ratchet rule's floor: its fraction of the mall's reference peak (kW)."""
        return RATCHET_FLOOR_FRAC * self.mall_ref_kw

    def month_peak_kw(self, glob: jax.Array) -> jax.Array:
        """The month-to-date peak import (kW, float32)."""
        return glob[..., self.month_peak_index].astype(_F32) * self.grid_ref_kw

    def ratchet_hold(self, glob: jax.Array) -> jax.Array:
        """Whether the hour is one of the ratchet rule's hold hours."""
        return jnp.isin(self.hour_of_day(glob), jnp.asarray(RATCHET_HOLD_HOURS, jnp.int32))

    def net_load_kw(self, glob: jax.Array, sockets: jax.Array, socket_action: jax.Array) -> jax.Array:
        """``mall + EV - PV`` of the hour (kW, float32): EV is every plugged socket's
        ``min(max(action, 0) * rating, need)``, as the environment's step delivers it."""
        glob, sockets, socket_action = (x.astype(_F32) for x in (glob, sockets, socket_action))
        occupied, need_frac, is_taxi = sockets[..., 0], sockets[..., 1], sockets[..., 3]
        rating = self.moto_kw + is_taxi * (self.taxi_kw - self.moto_kw)
        need_kwh = need_frac * (self.moto_battery_kwh + is_taxi * (self.taxi_battery_kwh - self.moto_battery_kwh))
        ev_kw = jnp.sum(occupied * jnp.minimum(jnp.maximum(socket_action, 0.0) * rating, need_kwh), axis=-1)
        return glob[..., self.mall_index] * self.mall_ref_kw + ev_kw - glob[..., self.pv_index] * self.pv_ac_kw


class SocketSharedActor(nn.Module):
    """Gaussian actor whose socket head is shared by all sockets; returns float32 ``(mean, log_std)``.

    ``mean[..., 0]`` is the battery's, ``mean[..., 1 + i]`` socket i's. A state-independent
    log-std has two entries, battery and sockets, so it too is independent of the park size.
    """

    n_global: int
    n_socket_features: int
    hidden_sizes: Sequence[int]
    socket_hidden_sizes: Sequence[int]
    global_embed_size: int
    pool: str = "mean"
    activation: str = "tanh"
    log_std_mode: str = "state_independent"
    log_std_init: float = -0.5
    dtype: Any = _F32
    socket_action_init: float = 0.0  # added to every socket's mean (initial action prior)
    import_site: ImportSite | None = None  # set: the battery head outputs grid-import levels
    squash: str = "clip"  # the policy's squash (the import head's EV estimate uses the socket actions)
    import_target_init: float = 0.0  # the import head's initial discharge level, a fraction of grid_ref_kw
    import_level_base: str = "zero"  # month_peak / ratchet: the discharge level is relative to that base
    import_residual: bool = False  # a battery action of the network's own is added to the levels' dispatch
    import_gradient_kw: float = 0.0  # > 0: the dispatch's gradient is that of a clip smoothed over this width
    import_charge_level: str = "learned"  # pv_surplus: the charge level is 0 kW (every PV surplus, no grid)

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        embed, hidden, summary = SocketTorso(
            self.n_global, self.n_socket_features, self.global_embed_size, self.socket_hidden_sizes,
            self.pool, self.activation, self.dtype, name="torso",
        )(obs)
        n_sockets = hidden.shape[-2]
        state_dep = self.log_std_mode == "state_dependent"
        n_out = 2 if state_dep else 1

        # each socket's head reads concat([its hidden vector, summary]); the summary's product once per env
        x = _ContextMLP(self.socket_hidden_sizes[-1:], self.activation, self.dtype, name="socket_head")(hidden, summary)
        socket_out = _dense(n_out, self.dtype, 0.01, name="socket_out")(x).astype(_F32)  # [..., n, n_out]

        socket_mean = socket_out[..., 0] + self.socket_action_init
        head_in = [embed, summary]
        site = self.import_site
        if site is not None:
            glob, sockets = split_observation(obs, self.n_global, self.n_socket_features)
            net_kw = jax.lax.stop_gradient(site.net_load_kw(glob, sockets, squash(socket_mean, self.squash)))
            head_in.append((net_kw / site.grid_ref_kw)[..., None].astype(embed.dtype))
        b = MLP(self.hidden_sizes, self.activation, self.dtype, name="battery_head")(jnp.concatenate(head_in, axis=-1))
        residual = site is not None and self.import_residual
        # the battery's mean; or the discharge and charge levels (and, residual, an action added to their dispatch)
        n_levels = 1 if site is None else (3 if residual else 2)
        battery_out = _dense(n_levels + n_out - 1, self.dtype, 0.01, name="battery_out")(b).astype(_F32)
        battery_mean = battery_out[..., :1]
        if site is not None:  # import levels, fractions of grid_ref_kw: discharge above L, charge below C <= L
            level_kw = (battery_out[..., :1] + self.import_target_init) * site.grid_ref_kw
            if self.import_level_base == "month_peak":
                level_kw = level_kw + site.month_peak_kw(glob)[..., None]
            elif self.import_level_base == "ratchet":  # the output moves the floor; the month's peak is not offset
                hold = site.ratchet_hold(glob)
                level_kw = jnp.maximum(jnp.where(hold, site.month_peak_kw(glob), 0.0)[..., None],
                                       level_kw + jnp.where(hold, site.ratchet_floor_kw, 0.0)[..., None])
            if self.import_charge_level == "pv_surplus":  # stores the PV surplus below L, as every rule does
                charge_kw = jnp.minimum(level_kw, 0.0)
            else:
                charge_kw = jnp.minimum(battery_out[..., 1:2] * site.grid_ref_kw, level_kw)
            net = net_kw[..., None]
            kept_kw = jnp.clip(net, charge_kw, level_kw)
            width = self.import_gradient_kw
            if width > 0.0:  # the hard clip's value with a smooth clip's gradient, nonzero between the levels
                smooth = (net - width * jax.nn.softplus((net - level_kw) / width)
                          + width * jax.nn.softplus((charge_kw - net) / width))
                kept_kw = jax.lax.stop_gradient(kept_kw) + smooth - jax.lax.stop_gradient(smooth)
            battery_mean = (kept_kw - net) / site.power_kw
            if residual:  # the dispatch has no gradient where it idles; this term has one at every hour
                battery_mean = battery_mean + battery_out[..., 2:3]

        mean = jnp.concatenate([battery_mean, socket_mean], axis=-1)
        if state_dep:
            raw = jnp.concatenate([battery_out[..., n_levels:], socket_out[..., 1]], axis=-1)
            log_std = _bound_log_std(raw, self.log_std_init)
        else:
            pair = _LogStd(2, self.log_std_init)()  # battery, sockets
            per_action = jnp.concatenate([pair[:1], jnp.broadcast_to(pair[1:], (n_sockets,))])
            log_std = jnp.broadcast_to(per_action, mean.shape)
        return mean, log_std


class _SocketSharedScalar(nn.Module):
    """A scalar read from the global embedding and the pooled socket summary (float32)."""

    n_global: int
    n_socket_features: int
    hidden_sizes: Sequence[int]
    socket_hidden_sizes: Sequence[int]
    global_embed_size: int
    pool: str = "mean"
    activation: str = "tanh"
    dtype: Any = _F32

    @nn.nowrap
    def _scalar(self, obs: jax.Array, action: jax.Array | None, name: str) -> jax.Array:
        extra = {} if action is None else {"global_extra": action[..., :1], "socket_extra": action[..., 1:, None]}
        embed, _, summary = SocketTorso(
            self.n_global, self.n_socket_features, self.global_embed_size, self.socket_hidden_sizes,
            self.pool, self.activation, self.dtype, name="torso",
        )(obs, **extra)
        x = MLP(self.hidden_sizes, self.activation, self.dtype)(jnp.concatenate([embed, summary], axis=-1))
        return _dense(1, self.dtype, 1.0, name=name)(x)[..., 0].astype(_F32)


class SocketSharedCritic(_SocketSharedScalar):
    """State value from the global embedding and the pooled socket summary (float32)."""

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return self._scalar(obs, None, "value")


class SocketSharedQ(_SocketSharedScalar):
    """Q(obs, action): the battery action joins the global features, each socket's its socket's."""

    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        return self._scalar(obs, action, "q")


class QEnsemble(nn.Module):
    """``num_critics`` independent Q networks with stacked parameters (axis 0); output [num_critics, ...]."""

    q_module: nn.Module
    num_critics: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            lambda mdl, o, a: mdl(o, a),
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        return ensemble(self.q_module, obs, action)


# ----------------------------------------------------------------------------------------------
# Factories: build the configured network for an environment
# ----------------------------------------------------------------------------------------------
def space_dims(env: Any, env_params: Any) -> tuple[int, int]:
    """``(obs_dim, action_dim)`` of an environment with flat Box observation and action spaces."""
    obs_shape = tuple(env.observation_space(env_params).shape)
    act_shape = tuple(env.action_space(env_params).shape)
    if len(obs_shape) != 1 or len(act_shape) != 1:
        raise ValueError(
            f"{env.name}: needs flat (1-D) observation and action spaces, got {obs_shape} and {act_shape}"
        )
    return obs_shape[0], act_shape[0]


def _layout(env: Any, env_params: Any, needed_by: str, accepted: str) -> tuple[int, int]:
    """``(n_global, n_socket_features)`` of an env with ``obs_layout``, checked against its spaces;
    without one, a one-line error naming the setting ``needed_by`` and what it accepts here."""
    layout = getattr(env, "obs_layout", None)
    if layout is None:
        raise ConfigError(
            f"network.{needed_by} needs an environment with a socket layout (the EV park); "
            f"{env.name} has none; accepted here: {accepted}"
        )
    obs_dim, action_dim = space_dims(env, env_params)
    n_g, n_s, n_f = int(layout.n_global), int(layout.n_sockets), int(layout.n_socket_features)
    if obs_dim != n_g + n_s * n_f or action_dim != 1 + n_s:
        raise ValueError(
            f"{env.name}: obs_layout ({n_g} global + {n_s} sockets x {n_f}) does not match observation size "
            f"{obs_dim} and action size {action_dim}"
        )
    return n_g, n_f


def make_actor(net_cfg: dict[str, Any], env: Any, env_params: Any, dtype: Any = _F32) -> nn.Module:
    """The configured Gaussian actor: ``actor.apply(params, obs) -> (mean, log_std)``."""
    socket_init = float(net_cfg["socket_action_init"])
    if net_cfg["kind"] == "mlp":
        _, action_dim = space_dims(env, env_params)
        offset = None
        if socket_init != 0.0:
            _layout(env, env_params, f"socket_action_init: {socket_init!r}", "0.0")
            offset = (0.0,) + (socket_init,) * (action_dim - 1)
        return MLPActor(
            action_dim, tuple(net_cfg["hidden_sizes"]), net_cfg["activation"], net_cfg["log_std"],
            net_cfg["log_std_init"], dtype, offset,
        )
    n_g, n_f = _layout(env, env_params, f"kind: {net_cfg['kind']!r}", "'mlp'")
    site = import_site(env, env_params) if net_cfg["battery_head"] == "import" else None
    return SocketSharedActor(
        n_g, n_f, tuple(net_cfg["hidden_sizes"]), tuple(net_cfg["socket_hidden_sizes"]),
        net_cfg["global_embed_size"], net_cfg["pool"], net_cfg["activation"], net_cfg["log_std"],
        net_cfg["log_std_init"], dtype, socket_init, site, net_cfg["squash"], net_cfg["import_target_init"],
        net_cfg["import_level_base"], net_cfg["import_residual"], net_cfg["import_gradient_kw"],
        net_cfg["import_charge_level"],
    )


def import_site(env: Any, env_params: Any) -> ImportSite:
    """The observation indices and site constants the ``import`` battery head needs."""
    names = tuple(getattr(env, "global_features", ()))
    scenario = getattr(env, "scenario", None)
    if scenario is None or "pv_0h" not in names or "mall_0h" not in names:
        raise ConfigError(
            "network.battery_head: 'import' needs the EV park with the forecasts of the current hour "
            f"(forecast_offsets containing 0); {env.name} has none; accepted here: 'power'"
        )
    return ImportSite(
        pv_index=names.index("pv_0h"), mall_index=names.index("mall_0h"), month_peak_index=names.index("month_peak"),
        hour_sin_index=names.index("hour_sin"), hour_cos_index=names.index("hour_cos"),
        pv_ac_kw=float(env_params.pv_ac_kw), mall_ref_kw=float(env_params.mall_ref_kw),
        grid_ref_kw=float(env_params.grid_ref_kw), power_kw=float(env_params.power_kw),
        moto_kw=float(scenario.moto_kw), taxi_kw=float(scenario.taxi_kw),
        moto_battery_kwh=float(scenario.moto_battery_kwh), taxi_battery_kwh=float(scenario.taxi_battery_kwh),
    )


def check_battery_head(net_cfg: dict[str, Any], algo_cfg: Any, section: str) -> None:
    """The ``import`` head reads kW off the raw observation: refuse a normalised one. Its options
    are refused with another head (every key is used or refused)."""
    if net_cfg["battery_head"] != "import":
        for key in (k for k in NETWORK_SPEC if k.startswith("import_")):
            default = NETWORK_SPEC[key].default
            if net_cfg.get(key, default) != default:
                raise ConfigError(f"network.{key}: only used with battery_head 'import' (got battery_head "
                                  f"{net_cfg['battery_head']!r}); expected {default!r} or battery_head 'import', "
                                  f"got {net_cfg[key]!r}")
        return
    if net_cfg["kind"] != "socket_shared":
        raise ConfigError(f"network.battery_head: 'import' needs network.kind 'socket_shared', got "
                          f"{net_cfg['kind']!r}; accepted with 'mlp': 'power'")
    if algo_cfg.get("normalize_obs", False):
        raise ConfigError(f"{section}.normalize_obs: network.battery_head 'import' reads the raw observation; "
                          "expected false, got true")


def make_critic(net_cfg: dict[str, Any], env: Any, env_params: Any, dtype: Any = _F32) -> nn.Module:
    """The configured state-value critic: ``critic.apply(params, obs) -> value``."""
    if net_cfg["kind"] == "mlp":
        space_dims(env, env_params)
        return MLPCritic(tuple(net_cfg["hidden_sizes"]), net_cfg["activation"], dtype)
    n_g, n_f = _layout(env, env_params, f"kind: {net_cfg['kind']!r}", "'mlp'")
    return SocketSharedCritic(
        n_g, n_f, tuple(net_cfg["hidden_sizes"]), tuple(net_cfg["socket_hidden_sizes"]),
        net_cfg["global_embed_size"], net_cfg["pool"], net_cfg["activation"], dtype,
    )


def make_q_critic(
    net_cfg: dict[str, Any], env: Any, env_params: Any, dtype: Any = _F32, num_critics: int = 2
) -> nn.Module:
    """An ensemble of ``num_critics`` Q networks: ``q.apply(params, obs, action) -> [num_critics, ...]``."""
    if net_cfg["kind"] == "mlp":
        space_dims(env, env_params)
        single: nn.Module = MLPQ(tuple(net_cfg["hidden_sizes"]), net_cfg["activation"], dtype)
    else:
        n_g, n_f = _layout(env, env_params, f"kind: {net_cfg['kind']!r}", "'mlp'")
        single = SocketSharedQ(
            n_g, n_f, tuple(net_cfg["hidden_sizes"]), tuple(net_cfg["socket_hidden_sizes"]),
            net_cfg["global_embed_size"], net_cfg["pool"], net_cfg["activation"], dtype,
        )
    return QEnsemble(single, num_critics)


# ----------------------------------------------------------------------------------------------
# Gaussian policy distributions (all float32)
# ----------------------------------------------------------------------------------------------
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, u: jax.Array) -> jax.Array:
    """Log-density of ``u`` under the diagonal Gaussian, summed over the last axis."""
    z = (u - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z * z - log_std - _LOG_SQRT_2PI, axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    """Entropy of the diagonal Gaussian (before any squashing), summed over the last axis."""
    return jnp.sum(log_std + 0.5 + _LOG_SQRT_2PI, axis=-1)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """``sum log(1 - tanh(u)^2)`` over the last axis, computed stably."""
    return jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def squash(u: jax.Array, mode: str) -> jax.Array:
    """Map a pre-squash variable to an action in [-1, 1]: ``tanh`` or ``clip``."""
    return jnp.tanh(u) if mode == "tanh" else jnp.clip(u, -1.0, 1.0)


def policy_log_prob(mean: jax.Array, log_std: jax.Array, u: jax.Array, mode: str) -> jax.Array:
    """Log-probability of the action ``squash(u)`` (tanh: with the change-of-variables term)."""
    logp = gaussian_log_prob(mean, log_std, u)
    if mode == "tanh":
        logp = logp - tanh_log_det_jacobian(u)
    return logp


def sample_policy(key: jax.Array, mean: jax.Array, log_std: jax.Array, mode: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(action, u, log_prob)``: a reparameterised sample, its pre-squash value and log-probability."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, _F32)
    return squash(u, mode), u, policy_log_prob(mean, log_std, u, mode)


def sample_tanh_gaussian(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(action, log_prob)`` of a tanh-squashed Gaussian (the SAC actor), differentiable in mean/log_std."""
    action, _, logp = sample_policy(key, mean, log_std, "tanh")
    return action, logp


def deterministic_action(mean: jax.Array, mode: str) -> jax.Array:
    """The deterministic action: the squashed mean."""
    return squash(mean, mode)
