"""Tiny gymnax environments with continuous Box actions and a known optimum.

Each one isolates one thing a continuous-control learner must get right:

``TargetActionEnv``     reward = -mean((a - target)^2), constant observation: can it move the mean?
``ObsActionEnv``        reward = -mean((a - obs)^2), random observation: does it read the observation?
``TwoStepEnv``          the first action only pays off at the second step: does credit flow through
                        the value bootstrap?
``ConstantRewardEnv``   reward 1 forever, cut by truncation: does the value bootstrap at a time
                        limit (true value 1 / (1 - gamma)) instead of treating it as terminal?
``SocketTargetEnv``     an ``obs_layout`` like the EV park: each socket's optimal action is its own
                        feature, the battery's the global feature.
``NaNRewardEnv``        every reward is NaN: every loss and gradient is, so no gradient step may
                        change anything.

All follow the gymnax >= 1.0 contract (``step_env`` returns five values; ``step`` adds truncation
from ``state.time >= params.max_steps_in_episode`` and auto-resets).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces


@struct.dataclass
class ProbeState(environment.EnvState):
    obs: jax.Array
    memory: jax.Array


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 1


class _ProbeEnv(environment.Environment):
    obs_dim: int = 1
    action_dim: int = 1
    episode_steps: int = 1

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(max_steps_in_episode=self.episode_steps)

    def observation_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.obs_dim,), jnp.float32)

    def action_space(self, params: Any) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.action_dim,), jnp.float32)

    def _obs(self, key: jax.Array, time: jax.Array, memory: jax.Array) -> jax.Array:
        return jnp.ones((self.obs_dim,), jnp.float32)

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, ProbeState]:
        time = jnp.asarray(0, jnp.int32)
        memory = jnp.zeros((self.action_dim,), jnp.float32)
        obs = self._obs(key, time, memory)
        return obs, ProbeState(time=time, obs=obs, memory=memory)

    def _reward(self, state: ProbeState, action: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(reward, terminated, new memory)``."""
        raise NotImplementedError

    def step_env(self, key, state, action, params):
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        reward, terminated, memory = self._reward(state, action)
        time = state.time + 1
        obs = self._obs(key, time, memory)
        new_state = ProbeState(time=time, obs=obs, memory=memory)
        return obs, new_state, reward.astype(jnp.float32), terminated, {}


class TargetActionEnv(_ProbeEnv):
    """One-step episodes; optimum ``a = target``."""

    def __init__(self, target: tuple[float, ...] = (0.5, -0.3)):
        self.target = jnp.asarray(target, jnp.float32)
        self.action_dim = len(target)

    def _reward(self, state, action):
        return -jnp.mean((action - self.target) ** 2), jnp.array(True), state.memory


class ObsActionEnv(_ProbeEnv):
    """One-step episodes with a random observation in [-0.8, 0.8]^dim; optimum ``a = obs``."""

    def __init__(self, dim: int = 2):
        self.obs_dim = self.action_dim = dim

    def _obs(self, key, time, memory):
        return jax.random.uniform(key, (self.obs_dim,), jnp.float32, -0.8, 0.8)

    def _reward(self, state, action):
        return -jnp.mean((action - state.obs) ** 2), jnp.array(True), state.memory


class TwoStepEnv(_ProbeEnv):
    """Observation ``[first_step, x]``. Step 1 pays 0 and stores ``x = a``; step 2 pays
    ``1 - (x - X_STAR)^2 - (a - A_STAR)^2`` and terminates. Optimum: ``a = X_STAR`` then ``A_STAR``."""

    X_STAR = 0.5
    A_STAR = -0.3
    obs_dim = 2
    episode_steps = 2

    def _obs(self, key, time, memory):
        return jnp.stack([(time == 0).astype(jnp.float32), memory[0]])

    def _reward(self, state, action):
        first = state.time == 0
        late = 1.0 - (state.memory[0] - self.X_STAR) ** 2 - (action[0] - self.A_STAR) ** 2
        reward = jnp.where(first, 0.0, late)
        memory = jnp.where(first, action, state.memory)
        return reward, ~first, memory


class ConstantRewardEnv(_ProbeEnv):
    """Reward 1 every step, never terminated, truncated after ``episode_steps`` steps.
    With correct time-limit bootstrapping, V(obs) = 1 / (1 - gamma)."""

    def __init__(self, episode_steps: int = 4):
        self.episode_steps = episode_steps

    def _reward(self, state, action):
        return jnp.asarray(1.0), jnp.array(False), state.memory


class NaNRewardEnv(_ProbeEnv):
    """One-step episodes whose reward is NaN."""

    def _reward(self, state, action):
        return jnp.asarray(jnp.nan), jnp.array(True), state.memory


class SocketLayout(NamedTuple):
    n_global: int
    n_sockets: int
    n_socket_features: int


class SocketTargetEnv(_ProbeEnv):
    """EV-park-shaped probe: obs = ``[g, f_0, ..., f_{n-1}]`` (one global value, one feature per
    socket, uniform in [-0.8, 0.8]); action ``[battery, s_0, ..., s_{n-1}]``; reward
    ``-mean((battery - g)^2, (s_i - f_i)^2)``, or with ``error="absolute"``
    ``-mean(|battery - g|, |s_i - f_i|)``. One-step episodes; optimum ``action = obs``.

    The absolute error keeps its slope at the optimum, so an optimum read off a learned critic
    (SAC) is sharp; the squared error is flat there."""

    def __init__(self, n_sockets: int = 3, error: str = "squared"):
        if error not in ("squared", "absolute"):
            raise ValueError(f"error: expected 'squared' or 'absolute', got {error!r}")
        self.obs_layout = SocketLayout(1, n_sockets, 1)
        self.obs_dim = self.action_dim = 1 + n_sockets
        self.error = error

    def _obs(self, key, time, memory):
        return jax.random.uniform(key, (self.obs_dim,), jnp.float32, -0.8, 0.8)

    def _reward(self, state, action):
        diff = action - state.obs
        err = jnp.abs(diff) if self.error == "absolute" else diff**2
        return -jnp.mean(err), jnp.array(True), state.memory
