"""The host loop: configuration, chunked jit training over vmapped seeds, progress, checkpoints.

Reading order:

1. :data:`TOP_SPEC` and :func:`build_schema`: the configuration keys of a run.
2. :func:`resolve_config`: schema defaults < ``configs/<algo>.yaml`` < ``--config FILE`` <
   ``--set key=value`` < explicit flags (``--seeds``, ``--total-steps``, ``--scenario``, ``--seed``).
3. :func:`prepare`: build the env, count updates and chunks, open the checkpoints and check that
   a checkpoint found there was made by the same configuration.
4. :func:`train_agent`: restore or init the state of every seed (``jax.vmap`` over seed keys),
   compile the vmapped chunk once, and loop on the host: one chunk, one CSV row per seed, a
   progress line, and a checkpoint at the chunk boundary at or after every multiple of
   ``checkpoint.every`` env steps per environment (and always at the end).
5. :func:`main`: the command line of ``scripts/train.py``.

Units of progress: an *update* consumes ``num_envs * steps_per_env`` env steps of one seed;
``step`` in the CSV counts the env steps of one seed (all its environments together);
checkpoint directories are named by env steps per environment.

Exactness: chunk boundaries are multiples of ``chunk_updates`` counted from the first update,
whether or not a run resumed, so an interrupted and resumed run executes the same programs on
the same states as an uninterrupted one, and ends with the same bits on CPU.
"""
from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import datetime as _dt
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import yaml

from oe3jax.learning import init_seeds, seed_keys
from oe3jax.schema import ConfigError, Field, Schema, load_yaml, parse_assignment, resolve, set_path

PRECISIONS = ("float32", "bfloat16", "float16")
PIPELINE = ("sac", "ppo", "a2c")  # order of ``--algo all``
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_RUNS_DIR = Path("results") / "runs"

# CSV columns, in order. The first seven are a public contract. The episode KPIs are means over
# the episodes that ended in the chunk (empty when none did). ``steps_per_s`` is wall-clock, the
# only column that differs between two runs of the same command. One row per seed per chunk.
CSV_COLUMNS = (
    "episode",        # episodes finished so far by this seed (all its environments together)
    "step",           # env steps done so far by this seed (all its environments together)
    "reward_avg",
    "actor_loss",
    "critic_loss",
    "entropy",
    "lr",
    "steps_per_s",    # env steps per second of the whole program (all seeds), this chunk
    "co2_kg",
    "grid_kwh",
    "unmet_kwh",
    "episode_return",
    "seed",           # the seed value (cfg.seed + index)
    "update",         # updates done so far
    # algorithm-specific diagnostics (empty where an algorithm does not report them)
    "alpha",          # SAC entropy temperature
    "q_mean",         # SAC mean Q of the sampled batches
    "buffer_fill",    # SAC replay-buffer fill fraction
    "approx_kl",      # PPO approximate KL between the rollout and the updated policy
    "clip_frac",      # PPO fraction of clipped ratios
    "nonfinite_skips",  # gradient steps skipped as non-finite in the chunk (float16 overflow)
    "loss_scale",     # dynamic loss scale (float16)
)
EXTRA_METRICS = ("alpha", "q_mean", "buffer_fill", "approx_kl", "clip_frac", "nonfinite_skips", "loss_scale")
TIMING_COLUMNS = ("steps_per_s",)

TOP_SPEC: dict[str, Any] = {
    "algo": Field("ppo", str, choices=PIPELINE, help="training algorithm"),
    "scenario": Field("iquitos-128", str, help="scenario preset name"),
    "seed": Field(0, int, low=0, help="seed of the first run; run i uses seed + i"),
    "seeds": Field(1, int, low=1, help="independent runs vmapped in one program"),
    "total_steps": Field(1_000_000, int, low=1, help="env steps per seed, all environments together"),
    "precision": Field("float32", str, choices=PRECISIONS, help="network compute dtype"),
    "checkpoint": {
        "every": Field(500, int, low=1, help="env steps per environment between checkpoints"),
        "max_to_keep": Field(3, int, low=1, help="most recent checkpoints kept"),
        "async": Field(True, bool, help="save in a background thread"),
    },
    "log": {
        "chunk_updates": Field(
            None, int, low=1, optional=True,
            help="updates per compiled chunk; null: the updates of one checkpoint interval",
        ),
        "tensorboard": Field(False, bool, help="also write TensorBoard event files (tensorboardX)"),
        "print_every_s": Field(2.0, float, low=0.0, help="least seconds between progress lines"),
    },
    "eval": {
        "enabled": Field(True, bool, help="evaluate the trained policy at the end of training"),
        "hours": Field(None, int, low=1, high=8760, optional=True,
                       help="evaluation length in hours from 1 January; null: the whole year"),
        "seed": Field(0, int, low=0, help="seed of the evaluation's arrivals (the same for every column)"),
        "optimal": Field(True, bool, help="also solve the perfect-foresight linear program (~10 s a year)"),
    },
}

# Sections that may change between a checkpoint and its resume; every other key must match.
RESUMABLE_KEYS = ("total_steps", "checkpoint", "log", "eval")


# --------------------------------------------------------------------------------------------
# Pluggable parts (the real env and algorithms by default; tests plug small ones in)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Components:
    """Where the runner finds algorithms, the environment and the evaluation."""

    get_algo: Callable[[str], ModuleType]
    algo_names: tuple[str, ...]
    pipeline: tuple[str, ...]
    make_env: Callable[..., tuple[Any, Any]]
    env_spec: Schema
    network_spec: Schema
    evaluate: Callable[[Any], Mapping[str, Any]] | None
    config_dir: Path | None


def _optional_attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def default_components() -> Components:
    """The project's environment, networks, algorithms and evaluation (imported lazily)."""
    from oe3jax import learning as algos

    make_env = _optional_attr("oe3jax.simulation.env", "make_env")
    if make_env is None:
        def make_env(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
            raise ConfigError("scenario: the environment module oe3jax.simulation.env is not available")

    return Components(
        get_algo=algos.get,
        algo_names=algos.ALGORITHMS,
        pipeline=PIPELINE,
        make_env=make_env,
        env_spec=_optional_attr("oe3jax.simulation.env", "ENV_SPEC") or {},
        network_spec=_optional_attr("oe3jax.learning.networks", "NETWORK_SPEC") or {},
        evaluate=_optional_attr("oe3jax.evaluation.compare", "evaluate_with_baselines"),
        config_dir=CONFIG_DIR,
    )


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def build_schema(comps: Components, sections: Sequence[str]) -> dict[str, Any]:
    """The schema of a run: top-level keys, ``env``, ``network`` and the algorithm sections."""
    schema = copy.deepcopy(TOP_SPEC)
    schema["algo"] = dataclasses.replace(
        schema["algo"], choices=tuple(comps.algo_names), default=comps.algo_names[0]
        if "ppo" not in comps.algo_names else "ppo"
    )
    schema["env"] = dict(comps.env_spec)
    schema["network"] = dict(comps.network_spec)
    for name in sections:
        schema[name] = dict(load_algo(comps, name).CONFIG_SPEC)
    return schema


def load_algo(comps: Components, name: str) -> ModuleType:
    """The algorithm module, with a one-line :class:`ConfigError` if it cannot be imported."""
    try:
        return comps.get_algo(name)
    except ImportError as exc:
        raise ConfigError(f"algo: {name} is not available ({exc})") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def requested_algo(
    algo_flag: str | None, config_file: str | None, sets: Sequence[str], comps: Components
) -> str:
    """The algorithm asked for: ``--algo`` > ``--set algo=`` > ``--config``'s ``algo`` > ppo."""
    algo: Any = None
    if config_file is not None:
        algo = load_yaml(config_file).get("algo", algo)
    for text in sets:
        key, value = parse_assignment(text)
        if key == "algo":
            algo = value
    if algo_flag is not None:
        algo = algo_flag
    if algo is None:
        algo = "ppo" if "ppo" in comps.algo_names else comps.algo_names[0]
    accepted = (*comps.algo_names, "all")
    if algo not in accepted:
        raise ConfigError(f"algo: expected one of {', '.join(repr(a) for a in accepted)}, got {algo!r}")
    return algo


def resolve_config(
    algo: str,
    comps: Components,
    *,
    config_file: str | None = None,
    sets: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    sections: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The fully resolved configuration of one agent (raises :class:`ConfigError`).

    ``sections`` are the algorithm sections accepted (default: only ``algo``'s own); with
    ``--algo all`` every agent accepts every algorithm's section, each agent using its own.
    """
    sections = tuple(sections) if sections is not None else (algo,)
    user: dict[str, Any] = {}
    if comps.config_dir is not None and (comps.config_dir / f"{algo}.yaml").is_file():
        user = _merge(user, load_yaml(str(comps.config_dir / f"{algo}.yaml")))
    if config_file is not None:
        user = _merge(user, load_yaml(config_file))
    for text in sets:
        key, value = parse_assignment(text)
        set_path(user, key, value)
    for key, value in (flags or {}).items():
        if value is not None:
            user[key] = value
    user["algo"] = algo
    cfg = resolve(build_schema(comps, sections), user)
    if cfg["log"]["tensorboard"]:
        try:
            importlib.import_module("tensorboardX")
        except ImportError:
            raise ConfigError(
                "log.tensorboard: true needs the tensorboardX package (pip install 'oe3jax[tensorboard]')"
            ) from None
    return cfg


# --------------------------------------------------------------------------------------------
# The plan of one agent's training
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """Everything fixed before the first chunk runs."""

    cfg: dict[str, Any]
    algo: ModuleType
    env: Any
    env_params: Any
    fingerprint: str
    num_envs: int
    steps_per_env: int
    total_updates: int
    chunk_updates: int
    every_updates: int
    ckpt_dir: Path
    csv_path: Path
    resume_step: int | None
    resume_meta: dict[str, Any] | None

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.steps_per_env


def _first_difference(saved: Any, now: Any, prefix: str = "") -> str | None:
    if isinstance(saved, Mapping) and isinstance(now, Mapping):
        for key in list(saved) + [k for k in now if k not in saved]:
            if not prefix and key in RESUMABLE_KEYS:
                continue
            if key not in now or key not in saved:
                return prefix + str(key)
            diff = _first_difference(saved[key], now[key], f"{prefix}{key}.")
            if diff is not None:
                return diff
        return None
    return None if saved == now else prefix.rstrip(".")


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return "(absent)"
        node = node[part]
    return node


def check_resume(meta: Mapping[str, Any], cfg: Mapping[str, Any], fingerprint: str, where: Path) -> None:
    """Raise :class:`ResumeMismatch` naming the first difference between a checkpoint and now."""
    from oe3jax.training.checkpoint import ResumeMismatch

    saved = meta.get("config", {})
    hint = "rerun with the checkpoint's configuration, another --run-dir, or --fresh to start over"
    for key in ("algo", "scenario"):
        if saved.get(key) != cfg[key]:
            raise ResumeMismatch(
                f"resume: {key} is {saved.get(key)!r} in the checkpoint {where} but {cfg[key]!r} now; {hint}"
            )
    for section in ("network", "env"):
        diff = _first_difference(saved.get(section, {}), cfg.get(section, {}), f"{section}.")
        if diff is not None:
            raise ResumeMismatch(
                f"resume: {diff} is {_lookup(saved, diff)!r} in the checkpoint {where} but "
                f"{_lookup(cfg, diff)!r} now; {hint}"
            )
    diff = _first_difference(saved, cfg)
    if diff is not None:
        raise ResumeMismatch(
            f"resume: {diff} is {_lookup(saved, diff)!r} in the checkpoint {where} but "
            f"{_lookup(cfg, diff)!r} now; {hint}"
        )
    if meta.get("fingerprint") != fingerprint:
        raise ResumeMismatch(
            f"resume: the scenario data of {cfg['scenario']!r} differ from those of the checkpoint "
            f"{where} (fingerprint {meta.get('fingerprint')} vs {fingerprint}); {hint}"
        )


def prepare(cfg: dict[str, Any], run_dir: Path, comps: Components) -> Plan:
    """Build the env, count updates, and read (and check) the latest checkpoint if any."""
    from oe3jax.training.checkpoint import Checkpoints, tree_fingerprint

    algo = load_algo(comps, cfg["algo"])
    try:
        env, env_params = comps.make_env(cfg["scenario"], **cfg["env"])
    except ConfigError:
        raise
    except (ValueError, KeyError) as exc:
        text = str(exc).strip("'\"")
        raise ConfigError(text if ":" in text.split()[0] else f"scenario: {text}") from None
    num_envs, steps_per_env = (int(v) for v in algo.env_steps_per_update(cfg))
    per_update = num_envs * steps_per_env
    total_updates = math.ceil(cfg["total_steps"] / per_update)
    every_updates = math.ceil(cfg["checkpoint"]["every"] / steps_per_env)
    chunk = cfg["log"]["chunk_updates"] or every_updates
    chunk = max(1, min(chunk, total_updates))
    ckpt_dir = run_dir / "checkpoints" / cfg["algo"]
    resume_step, resume_meta = None, None
    fingerprint = tree_fingerprint(env_params)
    if ckpt_dir.is_dir():
        ckpts = Checkpoints(ckpt_dir, cfg["checkpoint"]["max_to_keep"], async_save=False, read_only=True)
        resume_step = ckpts.latest_step()
        if resume_step is not None:
            resume_meta = ckpts.read_meta(resume_step)
            check_resume(resume_meta, cfg, fingerprint, ckpts.step_dir(resume_step))
    return Plan(
        cfg=cfg, algo=algo, env=env, env_params=env_params, fingerprint=fingerprint,
        num_envs=num_envs, steps_per_env=steps_per_env, total_updates=total_updates,
        chunk_updates=chunk, every_updates=every_updates, ckpt_dir=ckpt_dir,
        csv_path=run_dir / "progress" / f"{cfg['algo']}_progress.csv",
        resume_step=resume_step, resume_meta=resume_meta,
    )


# --------------------------------------------------------------------------------------------
# Progress: CSV, TensorBoard, console
# --------------------------------------------------------------------------------------------

class ProgressCSV:
    """``progress/<algo>_progress.csv``: one row per seed per chunk, flushed to disk each time."""

    def __init__(self, path: Path, keep_rows: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        if keep_rows > 0:
            if not path.is_file():
                print(f"warning: {path} is missing; its first {keep_rows} rows are lost", file=sys.stderr)
            else:
                lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
                if len(lines) - 1 < keep_rows:
                    print(
                        f"warning: {path} holds {max(len(lines) - 1, 0)} rows, the checkpoint "
                        f"recorded {keep_rows}", file=sys.stderr,
                    )
                lines = lines[: keep_rows + 1]
        self.rows = max(len(lines) - 1, 0)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            if lines:
                fh.writelines(lines)
            else:
                csv.writer(fh).writerow(CSV_COLUMNS)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            for row in rows:
                writer.writerow([_cell(row.get(col)) for col in CSV_COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())
        self.rows += len(rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def chunk_rows(
    metrics: Mapping[str, np.ndarray], cfg: Mapping[str, Any], episodes_done: list[int],
    step: int, update: int, steps_per_s: float,
) -> list[dict[str, Any]]:
    """The CSV rows of one chunk (one per seed); updates ``episodes_done`` in place."""
    rows = []
    for i in range(cfg["seeds"]):
        m = {k: np.asarray(v)[i] for k, v in metrics.items()}
        n_ep = int(round(float(m.get("episodes", 0.0))))
        episodes_done[i] += n_ep
        row: dict[str, Any] = {
            "episode": episodes_done[i], "step": step, "update": update, "seed": cfg["seed"] + i,
            "steps_per_s": round(steps_per_s, 1),
        }
        for key in ("reward_avg", "actor_loss", "critic_loss", "entropy", "lr") + EXTRA_METRICS:
            row[key] = float(m[key]) if key in m else None
        if n_ep > 0:
            for col, key in (("co2_kg", "ep_co2_kg"), ("grid_kwh", "ep_grid_kwh"),
                             ("unmet_kwh", "ep_unmet_kwh"), ("episode_return", "ep_return")):
                row[col] = float(m[key]) / n_ep if key in m else None
        rows.append(row)
    return rows


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(_dt.timedelta(seconds=int(round(seconds))))


# --------------------------------------------------------------------------------------------
# Training one agent
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    """What :func:`train_agent` leaves behind."""

    algo: str
    step: int               # env steps per environment done
    updates: int
    state: Any
    evaluation: dict[str, Any] | None


def _meta(plan: Plan, updates: int, episodes_done: list[int], csv_rows: int, final: bool) -> dict[str, Any]:
    from oe3jax.training.checkpoint import versions

    cfg = plan.cfg
    return {
        "algo": cfg["algo"],
        "scenario": cfg["scenario"],
        "fingerprint": plan.fingerprint,
        "seeds": [cfg["seed"] + i for i in range(cfg["seeds"])],
        "config": cfg,
        "versions": versions(),
        "updates": updates,
        "env_steps_per_env": updates * plan.steps_per_env,
        "env_steps_per_seed": updates * plan.steps_per_update,
        "num_envs": plan.num_envs,
        "episodes_done": list(episodes_done),
        "csv_rows": csv_rows,
        "chunk_updates": plan.chunk_updates,
        "final": final,
    }


def train_agent(
    plan: Plan,
    run_dir: Path,
    comps: Components,
    *,
    on_checkpoint: Callable[[int], None] | None = None,
    out: Any = None,
) -> Result:
    """Train (or resume) one agent to ``total_steps``, then evaluate it."""
    import jax

    from oe3jax.training.checkpoint import Checkpoints

    out = out or sys.stdout
    cfg, algo = plan.cfg, plan.algo
    name = cfg["algo"]
    init_fn = init_seeds(algo, plan.env, plan.env_params, cfg)
    keys = seed_keys(cfg)
    ckpts = Checkpoints(plan.ckpt_dir, cfg["checkpoint"]["max_to_keep"], async_save=cfg["checkpoint"]["async"])
    try:
        if plan.resume_step is not None and plan.resume_meta is not None:
            meta = plan.resume_meta
            state = ckpts.restore(plan.resume_step, jax.eval_shape(init_fn, keys))
            updates = int(meta["updates"])
            episodes_done = [int(e) for e in meta["episodes_done"]]
            progress = ProgressCSV(plan.csv_path, int(meta["csv_rows"]))
            print(f"[{name}] resuming from {ckpts.step_dir(plan.resume_step)} "
                  f"({updates * plan.steps_per_update:,} of {plan.total_updates * plan.steps_per_update:,} steps)",
                  file=out, flush=True)
        else:
            state = jax.jit(init_fn)(keys)
            updates, episodes_done = 0, [0] * cfg["seeds"]
            progress = ProgressCSV(plan.csv_path, 0)
        tb = _tensorboard(run_dir, name) if cfg["log"]["tensorboard"] else None
        if updates == 0:
            done_steps = plan.total_updates * plan.steps_per_update
            print(f"[{name}] {plan.total_updates:,} updates x {plan.steps_per_update:,} env steps "
                  f"({plan.num_envs} envs x {plan.steps_per_env}) = {done_steps:,} env steps per seed"
                  + (f" (total_steps {cfg['total_steps']:,} rounded up to whole updates)"
                     if done_steps != cfg["total_steps"] else ""), file=out, flush=True)
            if hasattr(algo, "buffer_nbytes"):
                obs_dim = int(np.prod(plan.env.observation_space(plan.env_params).shape))
                act_dim = int(np.prod(plan.env.action_space(plan.env_params).shape))
                nbytes, line = algo.buffer_nbytes(cfg, obs_dim, act_dim)
                print(f"[{name}] {line}" + (f"; x {cfg['seeds']} seeds = {nbytes * cfg['seeds'] / 1e9:.2f} GB"
                                            if cfg["seeds"] > 1 else ""), file=out, flush=True)

        compiled: dict[int, Any] = {}
        compile_s = [0.0]

        def program(n: int) -> Any:
            if n not in compiled:
                t0 = time.perf_counter()
                chunk = algo.make_update_chunk(plan.env, plan.env_params, cfg, n)
                donate = (0,) if jax.default_backend() != "cpu" else ()
                compiled[n] = jax.jit(jax.vmap(chunk), donate_argnums=donate).lower(state).compile()
                compile_s[0] += time.perf_counter() - t0
                print(f"[{name}] compiled a chunk of {n} updates x {plan.steps_per_update:,} env steps "
                      f"x {cfg['seeds']} seed(s) in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
            return compiled[n]

        total = plan.total_updates
        start_updates, t_start, last_print = updates, time.perf_counter(), -math.inf
        while updates < total:
            n = min(plan.chunk_updates - updates % plan.chunk_updates, total - updates)
            fn = program(n)
            t0 = time.perf_counter()
            state, metrics = fn(state)
            metrics = jax.device_get(metrics)
            dt = time.perf_counter() - t0
            prev, updates = updates, updates + n
            steps_per_s = n * plan.steps_per_update * cfg["seeds"] / max(dt, 1e-9)
            rows = chunk_rows(metrics, cfg, episodes_done, updates * plan.steps_per_update, updates, steps_per_s)
            progress.append(rows)
            if tb is not None:
                _tb_write(tb, metrics, updates * plan.steps_per_update)

            now = time.perf_counter()
            if now - last_print >= cfg["log"]["print_every_s"] or updates == total:
                last_print = now
                busy = now - t_start - compile_s[0]
                rate = (updates - start_updates) * plan.steps_per_update * cfg["seeds"] / max(busy, 1e-9)
                eta = (total - updates) * plan.steps_per_update * cfg["seeds"] / max(rate, 1e-9)
                reward = float(np.mean(np.asarray(metrics["reward_avg"])))
                print(f"[{name}] {updates * plan.steps_per_update:>12,}/{total * plan.steps_per_update:,} steps "
                      f"({100.0 * updates / total:5.1f}%)  {rate:,.0f} steps/s  ETA {_fmt_duration(eta)}  "
                      f"reward {reward:.4g}", file=out, flush=True)

            crossed = updates // plan.every_updates > prev // plan.every_updates
            if crossed or updates == total:
                step = updates * plan.steps_per_env
                ckpts.save(step, state, _meta(plan, updates, episodes_done, progress.rows, updates == total))
                if on_checkpoint is not None:
                    ckpts.wait()
                    on_checkpoint(step)
        ckpts.wait()
        if tb is not None:
            tb.close()
    finally:
        try:
            ckpts.close()
        except Exception as exc:  # already reported by wait() above unless interrupted
            print(f"warning: {exc}", file=sys.stderr)

    evaluation = evaluate_run(plan, run_dir, state, updates, comps, out)
    return Result(name, updates * plan.steps_per_env, updates, state, evaluation)


def _tensorboard(run_dir: Path, name: str) -> Any:
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard" / name))


def _tb_write(tb: Any, metrics: Mapping[str, Any], step: int) -> None:
    for key, value in metrics.items():
        tb.add_scalar(f"train/{key}", float(np.mean(np.asarray(value))), step)


# --------------------------------------------------------------------------------------------
# Evaluation hook
# --------------------------------------------------------------------------------------------

def evaluate_run(
    plan: Plan, run_dir: Path, state: Any, updates: int, comps: Components, out: Any
) -> dict[str, Any] | None:
    """Evaluate every seed's deterministic policy with ``comps.evaluate`` and write the KPIs.

    ``comps.evaluate({"seed <k>": policy, ...}) -> mapping`` (by default
    ``oe3jax.evaluation.compare.evaluate_with_baselines``) runs the full year for every seed beside the
    baselines on the same arrivals; its JSON-serialisable result is written to
    ``<run_dir>/evaluation/<algo>.json``, and its ``"table"`` (markdown), if any, to
    ``<run_dir>/evaluation/<algo>.md``.
    """
    from oe3jax.learning.policy import policy_from_state

    name = plan.cfg["algo"]
    path = run_dir / "evaluation" / f"{name}.json"
    ecfg = plan.cfg.get("eval", {"enabled": True})
    if comps.evaluate is None or not ecfg["enabled"]:
        why = "eval.enabled is false" if comps.evaluate is not None else "oe3jax.evaluation.kpis is not available"
        print(f"[{name}] evaluation skipped: {why}", file=out)
        return None
    policies = {
        f"seed {plan.cfg['seed'] + i}": policy_from_state(
            state, plan.algo, plan.env, plan.env_params, plan.cfg, seed_index=i,
            step=updates * plan.steps_per_env, meta={"fingerprint": plan.fingerprint},
        )
        for i in range(plan.cfg["seeds"])
    }
    kwargs = {k: ecfg[k] for k in ("hours", "seed", "optimal") if k in ecfg}
    results = _jsonable(comps.evaluate(policies, **kwargs))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    if isinstance(results, Mapping) and isinstance(results.get("table"), str):
        path.with_suffix(".md").write_text(results["table"] + "\n", encoding="utf-8")
        print(results["table"], file=out)
    print(f"[{name}] evaluation written to {path}", file=out)
    return results


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train SAC / PPO / A2C on an EV-charging scenario. Rerunning the same command "
        "resumes from the last checkpoint of its run directory.",
    )
    p.add_argument("--algo", help="ppo, a2c, sac, or all (SAC, then PPO, then A2C)")
    p.add_argument("--config", metavar="FILE", help="YAML file over configs/<algo>.yaml")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, value read as YAML (repeatable), e.g. --set ppo.lr=1e-4")
    p.add_argument("--run-dir", metavar="DIR", help=f"default: {DEFAULT_RUNS_DIR}/<algo>-<scenario>")
    p.add_argument("--seeds", type=int, help="independent seeds vmapped in one program")
    p.add_argument("--seed", type=int, help="seed of the first run")
    p.add_argument("--total-steps", type=int, help="env steps per seed, all environments together")
    p.add_argument("--scenario", help="scenario preset")
    p.add_argument("--fresh", action="store_true",
                   help="start over: the existing run directory is renamed to <DIR>.old-<time>")
    return p


def _move_aside(run_dir: Path, out: Any) -> None:
    if not run_dir.exists():
        return
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    k = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{k}")
        k += 1
    run_dir.rename(target)
    print(f"--fresh: moved the previous run to {target}", file=out)


def run(
    argv: Sequence[str] | None = None,
    comps: Components | None = None,
    *,
    on_checkpoint: Callable[[str, int], None] | None = None,
    out: Any = None,
) -> list[Result]:
    """Parse the command line, resolve the config(s), train; raises on errors."""
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    comps = comps or default_components()
    algo = requested_algo(args.algo, args.config, args.sets, comps)
    flags = {"seeds": args.seeds, "seed": args.seed, "total_steps": args.total_steps, "scenario": args.scenario}
    agents = comps.pipeline if algo == "all" else (algo,)
    cfgs = [
        resolve_config(a, comps, config_file=args.config, sets=args.sets, flags=flags,
                       sections=agents if algo == "all" else None)
        for a in agents
    ]
    run_dir = Path(args.run_dir) if args.run_dir else DEFAULT_RUNS_DIR / f"{algo}-{cfgs[0]['scenario']}"
    if args.fresh:
        _move_aside(run_dir, out)
    plans = [prepare(cfg, run_dir, comps) for cfg in cfgs]  # checks every resume before writing
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved: Any = cfgs[0] if algo != "all" else {"algo": "all", "agents": {c["algo"]: c for c in cfgs}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    print(f"run directory: {run_dir}", file=out, flush=True)

    results = []
    for plan in plans:
        hook = None if on_checkpoint is None else (lambda step, _a=plan.cfg["algo"]: on_checkpoint(_a, step))
        meta = plan.resume_meta
        evaluated = comps.evaluate is None or not plan.cfg["eval"]["enabled"] or (run_dir / "evaluation" / f"{plan.cfg['algo']}.json").is_file()
        if meta is not None and meta.get("final") and int(meta["updates"]) >= plan.total_updates and evaluated:
            print(f"[{plan.cfg['algo']}] already trained and evaluated; skipped", file=out)
            continue
        results.append(train_agent(plan, run_dir, comps, on_checkpoint=hook, out=out))
    return results


def main(argv: Sequence[str] | None = None, comps: Components | None = None) -> int:
    """``scripts/train.py``: exit 0 on success, 2 with one ``error:`` line for a bad config or a
    checkpoint made by another config, 1 for a checkpoint that cannot be read or written."""
    from oe3jax.training.checkpoint import CheckpointError, ResumeMismatch

    try:
        run(argv, comps)
    except (ConfigError, ResumeMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0
