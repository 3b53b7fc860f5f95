"""Peers side by side: what ``scripts/benchmark.py --peers`` measures (optional extra ``peers``).

Three sections, each a list of jobs that the script runs one per process (so that one job's
threads, memory and compiled programs do not touch the next):

- ``env``: environment throughput in env steps/s and socket-steps/s: the JAX env (one jitted
  ``lax.scan`` over ``vmap(env.step)``), the Gymnasium vector env and the Stable-Baselines3
  ``VecEnv`` adapter over it (NumPy in and out every step), the NumPy Gymnasium wrapper, and, where
  installed, EV2Gym and CityLearn on their closest shipped scenarios (:data:`PEER_SCENARIOS`).
- ``train``: training env steps/s of Stable-Baselines3 PPO, A2C and SAC (default hyperparameters,
  one torch thread) on the NumPy Gymnasium wrapper (one env, as ``PPO("MlpPolicy", env_id)``
  builds it) and on the SB3 adapter of the vector env (8 envs), beside the project's trainer
  (``python -m oe3jax.training``) on each algorithm's default run.
- ``quality``: time to quality (:func:`time_to_quality`): wall-clock seconds of training until
  the deterministic policy first matches a baseline over the evaluation year.

Nothing here asserts a speed; every number goes to ``results/benchmark.{json,md}``.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

PEERS_HINT = "the peers benchmark needs the optional extra: pip install 'oe3jax[peers]'"
SCENARIO = "iquitos-128"
TORCH_THREADS = 1
SB3_VEC_ENVS = 8  # environments of the SB3 adapter: as many as the project's PPO default

#: what each environment simulates, its step length in hours and its sockets (chargers' ports)
PEER_SCENARIOS: dict[str, dict[str, Any]] = {
    "oe3jax": {"what": "iquitos-128: one park of 128 sockets (112 moto at 2 kW, 16 mototaxi at 3 kW), "
                       "4.2 MWp PV, a 2 MWh / 1.2 MW battery, the mall's load; hourly, a year per episode",
               "step_h": 1.0, "sockets": 128},
    "ev2gym": {"what": "EV2Gym 2.0 PublicPST (shipped config): 20 single-port public chargers, one "
                       "transformer, power-setpoint tracking, no PV or battery; 15-minute steps, "
                       "112 steps per episode",
               "step_h": 0.25, "sockets": 20},
    "citylearn": {"what": "CityLearn 3.0.2 on citylearn_challenge_2022_phase_all_plus_evs: 17 buildings "
                          "with PV and batteries, 8 EV chargers, central agent (25 actions); hourly, a "
                          "year per episode",
                  "step_h": 1.0, "sockets": 8},
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def require_peers() -> None:
    """Raise ImportError with the install hint when Stable-Baselines3 or torch is missing."""
    try:
        import stable_baselines3  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError(PEERS_HINT) from exc


def versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("gymnasium", "stable-baselines3", "torch", "ev2gym", "citylearn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _torch_threads() -> int:
    import torch

    torch.set_num_threads(TORCH_THREADS)
    return torch.get_num_threads()


def _row(name: str, kind: str, steps: int, seconds: float, num_envs: int, peer: str = "oe3jax", **extra: Any) -> dict[str, Any]:
    info = PEER_SCENARIOS[peer]
    rate = steps / seconds
    return {"name": name, "kind": kind, "peer": peer, "num_envs": num_envs, "steps": steps,
            "seconds": round(seconds, 3), "env_steps_per_s": rate, "sockets": info["sockets"],
            "socket_steps_per_s": rate * info["sockets"], "step_h": info["step_h"],
            "simulated_hours_per_s": rate * info["step_h"], **extra}


# --------------------------------------------------------------------------------------------
# 1. Environment throughput
# --------------------------------------------------------------------------------------------

def env_jax_scan(num_envs: int, *, env_steps_per_call: int = 32_768, repeats: int = 3) -> dict[str, Any]:
    """The JAX env in one jitted scan over ``vmap(env.step)``, actions from a pre-sampled pool."""
    from oe3jax.benchmarks.throughput import env_throughput
    from oe3jax.simulation.env import make_env

    env, params = make_env(SCENARIO)
    r = env_throughput(env, params, num_envs, "pool", env_steps_per_call=env_steps_per_call,
                       repeats=repeats, min_repeat_s=0.3)
    rate = r["env_steps_per_s"]["median"]
    steps = r["env_steps_per_repeat"]
    return _row("JAX env, jit(scan(vmap(step)))", "jax-scan", steps, steps / rate, num_envs,
                compile_s=r["compile_s"])


def _timed_loop(step: Callable[[int], Any], seconds: float, steps_per_call: int) -> tuple[int, float]:
    calls, t0 = 0, time.perf_counter()
    while True:
        step(calls)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and calls >= 5:
            return calls * steps_per_call, elapsed


def env_vector(num_envs: int, seconds: float = 5.0, *, sb3: bool = False) -> dict[str, Any]:
    """The Gymnasium vector env (or its SB3 adapter) stepped from Python with random NumPy actions."""
    from oe3jax.simulation.vector import make_sb3_vec_env, make_vector_env

    pool = np.random.default_rng(0).uniform(-1, 1, (16, num_envs, 129)).astype(np.float32)
    t0 = time.perf_counter()
    if sb3:
        venv = make_sb3_vec_env(SCENARIO, num_envs)
        venv.seed(0)
        venv.reset()
        step = lambda k: venv.step(pool[k % 16])  # noqa: E731
        name, kind = "SB3 VecEnv adapter of the vector env", "sb3-vec-env"
    else:
        venv = make_vector_env(SCENARIO, num_envs)
        venv.reset(seed=0)
        step = lambda k: venv.step(pool[k % 16])  # noqa: E731
        name, kind = "Gymnasium vector env (NumPy in/out)", "vector-env"
    step(0)  # compiles
    compile_s = time.perf_counter() - t0
    steps, elapsed = _timed_loop(step, seconds, num_envs)
    return _row(name, kind, steps, elapsed, num_envs, compile_s=round(compile_s, 2))


def env_numpy_wrapper(seconds: float = 5.0) -> dict[str, Any]:
    """The NumPy Gymnasium wrapper (``gymnasium.make("oe3jax/EVCharging-iquitos-128-v0")``)."""
    from oe3jax.simulation.adapters import make_gymnasium_env

    env = make_gymnasium_env(SCENARIO)
    pool = np.random.default_rng(0).uniform(-1, 1, (16, 129)).astype(np.float32)
    env.reset(seed=0)

    def step(k: int) -> None:
        if env.step(pool[k % 16])[3]:
            env.reset()

    steps, elapsed = _timed_loop(step, seconds, 1)
    return _row("NumPy Gymnasium wrapper (reference physics)", "numpy-wrapper", steps, elapsed, 1)


_EV2GYM_CODE = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, ev2gym
from ev2gym.models.ev2gym_env import EV2Gym
os.chdir(os.path.dirname(os.path.dirname(ev2gym.__file__)))  # its configs name data by relative paths
cfg = os.path.join("ev2gym", "example_config_files", "PublicPST.yaml")
env = EV2Gym(config_file=cfg, generate_rnd_game=True, save_replay=False, save_plots=False)
env.reset(seed=0)
env.action_space.seed(0)
steps, t0 = 0, time.perf_counter()
while True:
    _, _, term, trunc, _ = env.step(env.action_space.sample())
    steps += 1
    if term or trunc:
        env.reset()
    if time.perf_counter() - t0 >= float(sys.argv[1]) and steps >= 5:
        break
print(json.dumps({"steps": steps, "seconds": time.perf_counter() - t0, "ports": int(env.number_of_ports),
                  "version": __import__("importlib.metadata").metadata.version("ev2gym")}))
"""

_CITYLEARN_CODE = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
from citylearn.citylearn import CityLearnEnv
env = CityLearnEnv(sys.argv[2], central_agent=True)
env.reset(seed=0)
for s in env.action_space:
    s.seed(0)
chargers = sum(len(getattr(b, "electric_vehicle_chargers", None) or []) for b in env.buildings)
steps, t0 = 0, time.perf_counter()
while True:
    _, _, term, trunc, _ = env.step([s.sample() for s in env.action_space])
    steps += 1
    if term or trunc:
        env.reset()
    if time.perf_counter() - t0 >= float(sys.argv[1]) and steps >= 5:
        break
print(json.dumps({"steps": steps, "seconds": time.perf_counter() - t0, "buildings": len(env.buildings),
                  "chargers": chargers, "actions": int(sum(s.shape[0] for s in env.action_space)),
                  "seconds_per_time_step": env.seconds_per_time_step,
                  "version": __import__("importlib.metadata").metadata.version("citylearn")}))
"""


def _run_code(python: str, code: str, args: list[str], timeout: float) -> dict[str, Any]:
    proc = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"exit status {proc.returncode}")
    return json.loads(lines[-1])


def env_ev2gym(seconds: float = 10.0, python: str | None = None) -> dict[str, Any]:
    """EV2Gym's PublicPST scenario with random actions, in a fresh process of ``python``."""
    r = _run_code(python or sys.executable, _EV2GYM_CODE, [str(seconds)], timeout=600)
    return _row(f"EV2Gym {r['version']} PublicPST", "peer", r["steps"], r["seconds"], 1, peer="ev2gym",
                ports=r["ports"])


def env_citylearn(schema: str, seconds: float = 10.0, python: str | None = None) -> dict[str, Any]:
    """CityLearn on ``schema`` (a dataset name or a schema.json path), central agent, random actions."""
    r = _run_code(python or sys.executable, _CITYLEARN_CODE, [str(seconds), schema], timeout=900)
    return _row(f"CityLearn {r['version']} ({r['buildings']} buildings, {r['chargers']} chargers)", "peer",
                r["steps"], r["seconds"], 1, peer="citylearn", schema=schema,
                seconds_per_time_step=r["seconds_per_time_step"], actions=r["actions"])


# --------------------------------------------------------------------------------------------
# 2. Training throughput
# --------------------------------------------------------------------------------------------

def _silent_logger() -> Any:
    from stable_baselines3.common.logger import Logger

    return Logger(folder=None, output_formats=[])


def sb3_env(env_kind: str, num_envs: int = SB3_VEC_ENVS) -> Any:
    """``"wrapper"``: SB3's DummyVecEnv over one NumPy Gymnasium env (what ``PPO("MlpPolicy", env_id)``
    builds); ``"vector"``: the SB3 adapter of the JAX vector env with ``num_envs`` environments."""
    if env_kind == "wrapper":
        from stable_baselines3.common.env_util import make_vec_env

        import oe3jax  # noqa: F401  (registers the ids)

        return make_vec_env(f"oe3jax/EVCharging-{SCENARIO}-v0", n_envs=1, seed=0)
    if env_kind == "vector":
        from oe3jax.simulation.vector import make_sb3_vec_env

        venv = make_sb3_vec_env(SCENARIO, num_envs)
        venv.seed(0)
        return venv
    raise ValueError(f"env_kind: expected 'wrapper' or 'vector', got {env_kind!r}")


def sb3_train_rate(algo: str, env_kind: str, seconds: float = 60.0, *, num_envs: int = SB3_VEC_ENVS) -> dict[str, Any]:
    """Env steps/s of SB3 ``algo`` (default hyperparameters) over whole collect + update cycles.

    The clock runs from the second rollout start (after SAC's random warm-up steps) to the last
    one within ``seconds``; each cycle includes its gradient steps.
    """
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import BaseCallback

    threads = _torch_threads()
    venv = sb3_env(env_kind, num_envs)
    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC}[algo]
    model = cls("MlpPolicy", venv, seed=0, device="cpu")
    model.set_logger(_silent_logger())
    warm = getattr(model, "learning_starts", 0)

    class Clock(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.marks: list[tuple[float, int]] = []

        def _on_rollout_start(self) -> None:
            if self.num_timesteps > warm:
                self.marks.append((time.perf_counter(), self.num_timesteps))

        def _on_step(self) -> bool:
            return not (len(self.marks) >= 3 and time.perf_counter() - self.marks[1][0] >= seconds)

    clock = Clock()
    t0 = time.perf_counter()
    model.learn(total_timesteps=10**9, callback=clock)
    wall = time.perf_counter() - t0
    marks = clock.marks[1:]
    if len(marks) < 2:
        raise RuntimeError(f"{algo} on {env_kind}: fewer than two full cycles in {seconds:.0f} s")
    (ta, sa), (tb, sb) = marks[0], marks[-1]
    n = num_envs if env_kind == "vector" else 1
    name = f"SB3 {algo.upper()} on the " + ("NumPy wrapper" if env_kind == "wrapper" else f"vector env ({n} envs)")
    return _row(name, f"sb3-{env_kind}", sb - sa, tb - ta, n, algo=algo, torch_threads=threads,
                cycles=len(marks) - 1, wall_s=round(wall, 1))


#: the project's trainer is measured from a cold start: no persistent compilation cache, so that
#: compilation counts the same on every machine and the user's cache is neither read nor written
COLD = ("--set", "compile.cache=null")


def ours_train_rate(algo: str, total_steps: int, timeout: float = 900.0) -> dict[str, Any]:
    """The project's trainer on ``algo``'s default run for ``total_steps``: the end-to-end rate it
    prints (steps over wall-clock after compilation, checkpoints included)."""
    with tempfile.TemporaryDirectory(prefix="oe3jax-peers-") as tmp:
        cmd = [sys.executable, "-m", "oe3jax.training", "--algo", algo, "--run-dir", str(Path(tmp) / "run"),
               "--total-steps", str(total_steps), "--set", "eval.enabled=false", "--set", "log.print_every_s=0",
               *COLD]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env())
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(tail[-1] if tail else f"exit status {proc.returncode}")
    rates, compile_s, steps = [], 0.0, 0
    for line in proc.stdout.splitlines():
        if "steps/s" in line and "ETA" in line:
            parts = line.split()
            steps = int(parts[1].split("/")[0].replace(",", ""))
            rates.append(float(parts[parts.index("steps/s") - 1].replace(",", "")))
        if "] compiled a chunk" in line or "] loaded a chunk" in line:  # loaded: from the compilation cache
            compile_s += float(line.rsplit(" in ", 1)[1].split()[0])
    if not rates:
        raise RuntimeError("no progress line in the trainer's output")
    rate = rates[-1]
    return _row(f"oe3jax {algo.upper()} (default run)", "ours", steps, steps / rate, _num_envs(algo), algo=algo,
                command="python -m oe3jax.training " + " ".join(cmd[3:5] + cmd[7:]),
                compile_s=round(compile_s, 1), wall_s=round(wall, 1))


def _num_envs(algo: str) -> int:
    from oe3jax.training.config import default_components, resolve_config

    cfg = resolve_config(algo, default_components())
    return int(cfg[algo]["num_envs"])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# --------------------------------------------------------------------------------------------
# 3. Time to quality
# --------------------------------------------------------------------------------------------

class YearEvaluator:
    """The deterministic policy over the evaluation year, beside the baselines, on the same arrivals.

    A policy here is any ``act(obs) -> action`` on NumPy arrays (a torch policy, a jitted JAX
    one). The year is stepped on the host with the key schedule of
    :func:`oe3jax.simulation.episode.run_episode` (so the vehicles are those of the project's own
    evaluation with ``jax.random.key(seed)``); the actions taken are then replayed through
    ``run_episode`` as a :class:`~oe3jax.simulation.episode.Schedule`, and the KPIs are the
    project's (:func:`oe3jax.evaluation.kpis.episode_kpis`). The uncontrolled and rule-based
    baselines run the same way.
    """

    def __init__(self, scenario: str = SCENARIO, seed: int = 0, hours: int | None = None) -> None:
        import jax

        from oe3jax.control import baselines
        from oe3jax.evaluation.kpis import episode_kpis
        from oe3jax.simulation.env import make_env

        self.env, params = make_env(scenario)
        self.hours = int(params.max_steps_in_episode) if hours is None else int(hours)
        self.params = params.replace(max_steps_in_episode=jax.numpy.asarray(self.hours, jax.numpy.int32))
        self.key = jax.random.key(seed)
        key_reset, key_steps = jax.random.split(self.key)
        self._key_reset = key_reset
        self._step_keys = jax.random.split(key_steps, self.hours)
        env = self.env
        self._reset = jax.jit(env.reset)
        self._step = jax.jit(lambda key, state, action, p: env.step_env(key, state, action, p)[:2])
        self.uncontrolled = episode_kpis(env, self.params, baselines.uncontrolled, self.key, self.hours)
        self.rule = episode_kpis(env, self.params, baselines.make_rule_based(env.scenario), self.key, self.hours)

    def actions(self, act: Callable[[np.ndarray], Any]) -> np.ndarray:
        """The actions ``act`` takes over the evaluation year (closed loop, stepped on the host)."""
        obs, state = self._reset(self._key_reset, self.params)
        out = np.empty((self.hours, self.env.num_actions), np.float32)
        for k in range(self.hours):
            out[k] = np.asarray(act(np.asarray(obs)), np.float32).reshape(-1)
            obs, state = self._step(self._step_keys[k], state, out[k], self.params)
        return out

    def kpis(self, act: Callable[[np.ndarray], Any]) -> dict[str, Any]:
        from oe3jax.evaluation.kpis import episode_kpis
        from oe3jax.simulation.episode import Schedule

        return episode_kpis(self.env, self.params, Schedule(self.actions(act)), self.key, self.hours)

    def judge(self, k: Mapping[str, Any], ev_frac: float = 0.98) -> dict[str, Any]:
        """Whether KPIs ``k`` reach the uncontrolled CO2 and the rule's, each with at least
        ``ev_frac`` of the uncontrolled EV energy."""
        ev_ok = k["ev_delivered_kwh"] >= ev_frac * self.uncontrolled["ev_delivered_kwh"]
        return {
            "co2_t": k["co2_kg"] / 1000.0,
            "ev_frac_of_uncontrolled": k["ev_delivered_kwh"] / self.uncontrolled["ev_delivered_kwh"],
            "uncontrolled_reached": bool(ev_ok and k["co2_kg"] <= self.uncontrolled["co2_kg"]),
            "rule_reached": bool(ev_ok and k["co2_kg"] <= self.rule["co2_kg"]),
        }

    def baselines(self) -> dict[str, Any]:
        return {"uncontrolled_co2_t": self.uncontrolled["co2_kg"] / 1000.0, "rule_co2_t": self.rule["co2_kg"] / 1000.0,
                "uncontrolled_ev_mwh": self.uncontrolled["ev_delivered_kwh"] / 1000.0,
                "rule_ev_frac_of_uncontrolled": self.rule["ev_delivered_kwh"] / self.uncontrolled["ev_delivered_kwh"],
                "hours": self.hours}


def _first(evals: list[dict[str, Any]], key: str) -> float | None:
    return next((e["train_s"] for e in evals if e[key]), None)


def _summary(name: str, evals: list[dict[str, Any]], cap_s: float | None, evaluator: YearEvaluator,
             **extra: Any) -> dict[str, Any]:
    return {"name": name, "evaluations": evals, "cap_s": cap_s, **evaluator.baselines(),
            "uncontrolled_reached_s": _first(evals, "uncontrolled_reached"),
            "rule_reached_s": _first(evals, "rule_reached"),
            "train_s": evals[-1]["train_s"] if evals else None, **extra}


def ours_time_to_quality(eval_every_s: float = 20.0, algo: str = "ppo", total_steps: int | None = None) -> dict[str, Any]:
    """The project's default ``algo`` run, its policy evaluated at the first checkpoint after each
    ``eval_every_s`` seconds of training and at the end (the clock stops while evaluating;
    compilation and checkpoint saves count)."""
    import jax

    from oe3jax.training import cli
    from oe3jax.training.policy import load_policy

    evaluator = YearEvaluator()
    evals: list[dict[str, Any]] = []
    apply_jit: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="oe3jax-peers-") as tmp:
        run_dir = Path(tmp) / "run"
        paused, last = 0.0, -math.inf
        latest: dict[str, Any] = {}
        t0 = time.perf_counter()

        def evaluate(name: str, step: int, train_s: float) -> None:
            t_eval = time.perf_counter()
            policy = load_policy(run_dir, algo=name, step=step)
            if "fn" not in apply_jit:  # one compiled apply; the parameters are its argument
                apply_jit["fn"] = jax.jit(policy.apply)
            fn, params = apply_jit["fn"], policy.params
            k = evaluator.kpis(lambda obs: fn(params, obs))
            evals.append({"train_s": round(train_s, 1), "env_steps": step * policy.config[name]["num_envs"],
                          "eval_s": round(time.perf_counter() - t_eval, 1), **evaluator.judge(k)})

        def hook(name: str, step: int) -> None:
            nonlocal paused, last
            now = time.perf_counter()
            train_s = now - t0 - paused
            latest.update(name=name, step=step, train_s=train_s)
            if train_s - last >= eval_every_s:
                last = train_s
                evaluate(name, step, train_s)
            paused += time.perf_counter() - now

        argv = ["--algo", algo, "--run-dir", str(run_dir), "--set", "eval.enabled=false", *COLD]
        if total_steps is not None:
            argv += ["--total-steps", str(total_steps)]
        with contextlib.redirect_stdout(io.StringIO()):
            cli.run(argv, on_checkpoint=hook)
        if latest and (not evals or evals[-1]["train_s"] != round(latest["train_s"], 1)):
            evaluate(latest["name"], latest["step"], latest["train_s"])  # the final policy, always
    return _summary(f"oe3jax {algo.upper()} (default run)", evals, None, evaluator,
                    command="python -m oe3jax.training " + " ".join(argv[:2] + argv[4:]),
                    eval_every_s=eval_every_s)


def sb3_time_to_quality(algo: str = "ppo", env_kind: str = "vector", cap_s: float = 600.0,
                        eval_every_s: float = 20.0, num_envs: int = SB3_VEC_ENVS) -> dict[str, Any]:
    """SB3 ``algo`` (default hyperparameters) evaluated at the end of the first rollout after each
    ``eval_every_s`` seconds of training, until both baselines are matched or ``cap_s`` seconds of
    training have passed (the clock stops while evaluating)."""
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    threads = _torch_threads()
    evaluator = YearEvaluator()
    evals: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    venv = sb3_env(env_kind, num_envs)
    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC}[algo]
    model = cls("MlpPolicy", venv, seed=0, device="cpu")
    model.set_logger(_silent_logger())

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.predict(obs, deterministic=True)[0]

    class Evaluate(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.paused, self.last, self.stop = 0.0, -math.inf, False

        def _on_rollout_end(self) -> None:
            now = time.perf_counter()
            train_s = now - t0 - self.paused
            if train_s - self.last >= eval_every_s or train_s >= cap_s:
                self.last = train_s
                k = evaluator.kpis(act)
                evals.append({"train_s": round(train_s, 1), "env_steps": int(self.num_timesteps),
                              "eval_s": round(time.perf_counter() - now, 1), **evaluator.judge(k)})
                self.stop = train_s >= cap_s or (evals[-1]["uncontrolled_reached"] and evals[-1]["rule_reached"])
            self.paused += time.perf_counter() - now

        def _on_step(self) -> bool:
            return not self.stop

    model.learn(total_timesteps=10**9, callback=Evaluate())
    n = num_envs if env_kind == "vector" else 1
    return _summary(f"SB3 {algo.upper()} on the " + ("NumPy wrapper" if env_kind == "wrapper" else f"vector env ({n} envs)"),
                    evals, cap_s, evaluator, torch_threads=threads, eval_every_s=eval_every_s)


__all__ = [
    "PEERS_HINT", "PEER_SCENARIOS", "YearEvaluator", "env_citylearn", "env_ev2gym", "env_jax_scan",
    "env_numpy_wrapper", "env_vector", "ours_time_to_quality", "ours_train_rate", "require_peers",
    "sb3_env", "sb3_time_to_quality", "sb3_train_rate", "versions",
]
