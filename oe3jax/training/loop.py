"""Training one agent: the plan, restore or init, the chunked jit loop, checkpoints, evaluation.

Reading order: :func:`prepare` fixes everything before the first chunk (the environment, the
number of updates and chunks, the checkpoint found in the run directory and the check that it was
made by the same configuration); :func:`train_agent` restores or initialises the state of every
seed (``jax.vmap`` over seed keys), compiles the vmapped chunk of the algorithm once
(``algo.make_update_chunk``), and loops on the host: one chunk, one CSV row per seed, a progress
line, a checkpoint at the chunk boundary at or after every multiple of ``checkpoint.every`` env
steps per environment (and at the end); then :func:`evaluate_run` scores every seed's policy.

Units of progress: an *update* consumes ``num_envs * steps_per_env`` env steps of one seed;
``step`` in the CSV counts the env steps of one seed (all its environments together); checkpoint
directories are named by env steps per environment.

Exactness: chunk boundaries are multiples of ``chunk_updates`` counted from the first update,
whether or not a run resumed, so an interrupted and resumed run executes the same programs on
the same states as an uninterrupted one, and ends with the same bits on CPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from oe3jax import learning
from oe3jax.learning.policy import policy_from_state
from oe3jax.learning.sweep import member_label, members as sweep_members
from oe3jax.training.checkpoint import (
    Checkpoints, ResumeMismatch, read_meta, resume_step, tree_fingerprint, versions,
)
from oe3jax.training.config import (
    RESUMABLE_KEYS, Components, build_schema, load_algo, make_run_env, with_new_defaults,
)
from oe3jax.training.files import atomic_write_text
from oe3jax.training import resources
from oe3jax.training.devices import Placement, host_copy, placement
from oe3jax.training.distributed import is_primary
from oe3jax.training.progress import LiveStatus, ProgressCSV, TensorBoard, chunk_rows, csv_columns


# --------------------------------------------------------------------------------------------
# The plan of one agent's training
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    """Everything fixed before the first chunk runs."""

    cfg: dict[str, Any]
    algo: learning.Algorithm
    env: Any
    env_params: Any
    fingerprint: str
    num_envs: int
    steps_per_env: int
    total_updates: int
    chunk_updates: int
    every_updates: int
    run_dir: Path
    placement: Placement
    members: list[dict[str, float]]  # a sweep's hyperparameters per member; [{}] without a sweep
    schema: dict[str, Any]  # the run's configuration schema (its defaults fill keys older runs lack)
    resume_step: int | None = None
    resume_meta: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.cfg["algo"]

    @property
    def rows(self) -> int:
        """Runs trained together: seeds, times the members of a sweep."""
        return len(self.members) * int(self.cfg["seeds"])

    @property
    def swept(self) -> bool:
        """Whether the run is a hyperparameter sweep."""
        return len(self.members) > 1 or bool(self.members[0])

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.steps_per_env

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints" / self.name

    @property
    def csv_path(self) -> Path:
        return self.run_dir / "progress" / f"{self.name}_progress.csv"

    @property
    def evaluation_path(self) -> Path:
        return self.run_dir / "evaluation" / f"{self.name}.json"


def _backend() -> str:
    import jax

    return jax.default_backend()


def plan_agent(cfg: dict[str, Any], run_dir: Path, comps: Components) -> Plan:
    """Build the environment and count updates and chunks (no file is read or written)."""
    algo = load_algo(comps, cfg["algo"])
    env, env_params = make_run_env(cfg, comps)
    num_envs, steps_per_env = (int(v) for v in algo.env_steps_per_update(cfg))
    total_updates = math.ceil(cfg["total_steps"] / (num_envs * steps_per_env))
    every_updates = math.ceil(cfg["checkpoint"]["every"] / steps_per_env)
    resources.check_step_counts(cfg, total_updates, num_envs, steps_per_env)
    members = sweep_members(cfg)
    where = placement(cfg, len(members), num_envs)
    # the runs one accelerator holds (CPU devices share the host's memory; when the environments are
    # split, all runs: an upper bound); without buffer donation (CPU) a chunk's input and output
    # states are alive together
    runs = cfg["seeds"] * len(members)
    per_device = runs // where.devices if where.axis == "seeds" and _backend() != "cpu" else runs
    resources.check_train_memory(algo, env, env_params, {**cfg, "seeds": per_device},
                                 copies=2 if _backend() == "cpu" else 1)
    chunk = max(1, min(cfg["log"]["chunk_updates"] or every_updates, total_updates))
    return Plan(
        cfg=cfg, algo=algo, env=env, env_params=env_params, fingerprint=tree_fingerprint(env_params),
        num_envs=num_envs, steps_per_env=steps_per_env, total_updates=total_updates,
        chunk_updates=chunk, every_updates=every_updates, run_dir=Path(run_dir), placement=where,
        members=members, schema=build_schema(comps, tuple(k for k in cfg if k in comps.algo_names)),
    )


def find_resume(plan: Plan, resume_from: int | None = None) -> Plan:
    """Read the checkpoint to resume from (the latest complete one, or ``resume_from``), if any,
    and check it fits; its metadata digest is checked now, its arrays' digests when restored."""
    step = resume_step(plan.ckpt_dir, resume_from)
    if step is not None:
        meta = read_meta(plan.ckpt_dir / str(step))
        check_resume(meta, plan.cfg, plan.fingerprint, plan.ckpt_dir / str(step), plan.schema)
        plan.resume_step, plan.resume_meta = step, meta
    return plan


def prepare(cfg: dict[str, Any], run_dir: Path, comps: Components) -> Plan:
    """:func:`plan_agent` then :func:`find_resume`."""
    return find_resume(plan_agent(cfg, run_dir, comps))


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


def check_resume(meta: Mapping[str, Any], cfg: Mapping[str, Any], fingerprint: str, where: Path,
                 schema: Mapping[str, Any]) -> None:
    """Raise :class:`ResumeMismatch` naming the first difference between a checkpoint and now.

    Only the keys of :data:`RESUMABLE_KEYS` may change (to extend a run, say). A key added since
    the checkpoint was written counts with its default, the value the run was trained with
    (:func:`~oe3jax.training.config.with_new_defaults`).
    """
    saved = with_new_defaults(meta.get("config", {}), schema)
    hint = "rerun with the checkpoint's configuration, another --run-dir, or --fresh to start over"
    for section in (k for k in ("algo", "scenario", "scenario_overrides", "network", "env") if k in cfg):
        a, b = saved.get(section, "(absent)"), cfg[section]
        diff = _first_difference(a, b, f"{section}.") if isinstance(b, Mapping) else (None if a == b else section)
        if diff is not None:
            raise ResumeMismatch(f"resume: {diff} is {_lookup(saved, diff)!r} in the checkpoint {where} "
                                 f"but {_lookup(cfg, diff)!r} now; {hint}")
    diff = _first_difference(saved, cfg)
    if diff is not None:
        raise ResumeMismatch(f"resume: {diff} is {_lookup(saved, diff)!r} in the checkpoint {where} but "
                             f"{_lookup(cfg, diff)!r} now; {hint}")
    if meta.get("fingerprint") != fingerprint:
        raise ResumeMismatch(
            f"resume: the scenario data of {cfg['scenario']!r} differ from those of the checkpoint "
            f"{where} (fingerprint {meta.get('fingerprint')} vs {fingerprint}); {hint}"
        )


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


@dataclasses.dataclass
class _Progress:
    """The host-side counters of a run, saved in every checkpoint's metadata."""

    updates: int
    episodes_done: list[int]
    csv: ProgressCSV


def _meta(plan: Plan, progress: _Progress, final: bool) -> dict[str, Any]:
    cfg = plan.cfg
    return {
        "algo": cfg["algo"],
        "scenario": cfg["scenario"],
        "fingerprint": plan.fingerprint,
        "seeds": [cfg["seed"] + i for i in range(cfg["seeds"])],
        "members": plan.members,
        "config": cfg,
        "versions": versions(),
        "updates": progress.updates,
        "env_steps_per_env": progress.updates * plan.steps_per_env,
        "env_steps_per_seed": progress.updates * plan.steps_per_update,
        "num_envs": plan.num_envs,
        "episodes_done": list(progress.episodes_done),
        "csv_rows": progress.csv.rows,
        "chunk_updates": plan.chunk_updates,
        "final": final,
    }


class _Silent:
    """What a process other than process 0 has instead of the CSV, status and TensorBoard writers."""

    rows = 0

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def _say(out: Any, text: str) -> None:
    print(text, file=out, flush=True)


def _start(plan: Plan, ckpts: Checkpoints, init_fn: Callable, keys: Any, out: Any) -> tuple[Any, _Progress]:
    """The state and counters to start from: the resumed checkpoint's, or fresh ones."""
    import jax

    if plan.resume_step is not None and plan.resume_meta is not None:
        meta = plan.resume_meta
        state = ckpts.restore(plan.resume_step, plan.placement.abstract(jax.eval_shape(init_fn, keys)))
        for moved in ckpts.discard_after(plan.resume_step):  # --resume-from an earlier step
            _say(out, f"[{plan.name}] moved the later checkpoint {moved.name.split('.')[0]} aside to {moved}")
        csv = ProgressCSV(plan.csv_path, int(meta["csv_rows"]), columns=_columns(plan)) if is_primary() else _Silent()
        progress = _Progress(int(meta["updates"]), [int(e) for e in meta["episodes_done"]], csv)
        _say(out, f"[{plan.name}] resuming from {ckpts.step_dir(plan.resume_step)} "
                  f"({progress.updates * plan.steps_per_update:,} of "
                  f"{plan.total_updates * plan.steps_per_update:,} steps)")
        return state, progress
    state = plan.placement.jit_init(init_fn, keys)(keys)
    csv = ProgressCSV(plan.csv_path, 0, columns=_columns(plan)) if is_primary() else _Silent()
    progress = _Progress(0, [0] * plan.rows, csv)
    _announce(plan, out)
    return state, progress


def _columns(plan: Plan) -> tuple[str, ...]:
    return csv_columns(tuple(plan.cfg.get("sweep") or {}))


def _announce(plan: Plan, out: Any) -> None:
    """What a fresh run is about to do (rounded-up steps, replay-buffer memory)."""
    cfg = plan.cfg
    done_steps = plan.total_updates * plan.steps_per_update
    _say(out, f"[{plan.name}] {plan.total_updates:,} updates x {plan.steps_per_update:,} env steps "
              f"({plan.num_envs} envs x {plan.steps_per_env}) = {done_steps:,} env steps per seed"
              + (f" (total_steps {cfg['total_steps']:,} rounded up to whole updates)"
                 if done_steps != cfg["total_steps"] else ""))
    if plan.swept:
        grid = ", ".join(f"{k} ({len(v)} values)" for k, v in cfg["sweep"].items())
        _say(out, f"[{plan.name}] sweep of {len(plan.members)} members x {cfg['seeds']} seed(s) in one program, "
                  f"the grid of {grid}; the CSV's member column numbers them in that order")
    if hasattr(plan.algo, "buffer_nbytes"):
        obs_dim = int(np.prod(plan.env.observation_space(plan.env_params).shape))
        act_dim = int(np.prod(plan.env.action_space(plan.env_params).shape))
        nbytes, line = plan.algo.buffer_nbytes(cfg, obs_dim, act_dim)
        seeds = plan.rows
        _say(out, f"[{plan.name}] {line}" + (f"; x {seeds} seeds = {nbytes * seeds / 1e9:.2f} GB" if seeds > 1 else ""))


def _status_extra(plan: Plan) -> dict[str, Any]:
    """What the status file says besides progress: the run's shape and its replay buffer."""
    cfg = plan.cfg
    extra: dict[str, Any] = {"num_envs": plan.num_envs, "checkpoint_every": cfg["checkpoint"]["every"],
                             "steps_per_env_per_update": plan.steps_per_env}
    if hasattr(plan.algo, "buffer_nbytes"):
        obs_dim = int(np.prod(plan.env.observation_space(plan.env_params).shape))
        act_dim = int(np.prod(plan.env.action_space(plan.env_params).shape))
        nbytes, _ = plan.algo.buffer_nbytes(cfg, obs_dim, act_dim)
        extra["buffer_capacity"] = int(cfg[cfg["algo"]]["buffer_size"])
        extra["buffer_bytes"] = int(nbytes) * plan.rows
    return extra


def chunk_sizes(done: int, total: int, chunk: int) -> list[int]:
    """The update counts of the chunks still to run, in order (boundaries at multiples of ``chunk``)."""
    sizes = []
    while done < total:
        sizes.append(min(chunk - done % chunk, total - done))
        done += sizes[-1]
    return sizes


class _Programs:
    """The compiled chunk programs of a plan, by number of updates (usually one or two).

    :meth:`prefetch` compiles the programs needed later (the shorter last chunk) in a background
    thread while the first one compiles and runs: on a GPU the host's cores are otherwise idle,
    and on a CPU the two compilations share its cores. The programs are the same either way.
    """

    def __init__(self, plan: Plan, status: LiveStatus):
        self.plan, self.status = plan, status
        self.compiled: dict[int, Any] = {}
        self.pending: dict[int, Any] = {}
        self.pool: Any = None

    def _compile(self, n: int, abstract_state: Any) -> tuple[Any, float, bool]:
        """``(program, seconds, loaded)``: ``loaded`` when it came from the persistent compilation cache."""
        import threading

        import jax
        import jax.monitoring

        plan = self.plan
        t0 = time.perf_counter()
        chunk = learning.rows_chunk(plan.algo, plan.env, plan.env_params, plan.cfg, n)
        donate = jax.default_backend() != "cpu"
        hits: list[str] = []
        thread = threading.get_ident()  # this compilation's, not the other thread's

        def listen(event: str, **_: Any) -> None:
            if event == "/jax/compilation_cache/cache_hits" and threading.get_ident() == thread:
                hits.append(event)

        jax.monitoring.register_event_listener(listen)
        try:
            compiled = plan.placement.jit_chunk(chunk, abstract_state, donate).lower(abstract_state).compile()
        finally:
            jax.monitoring.unregister_event_listener(listen)
        return compiled, time.perf_counter() - t0, bool(hits)

    def prefetch(self, sizes: list[int], state: Any) -> None:
        """Start compiling the chunks of these sizes (but the first) in a background thread."""
        from concurrent.futures import ThreadPoolExecutor

        later = [n for n in dict.fromkeys(sizes[1:]) if n != sizes[0] and n not in self.compiled]
        if not later:
            return
        abstract_state = self.plan.placement.abstract(state)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oe3jax-compile")
        for n in later:
            self.pending[n] = self.pool.submit(self._compile, n, abstract_state)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def get(self, n: int, state: Any) -> Any:
        if n not in self.compiled:
            plan = self.plan
            if n in self.pending:
                self.compiled[n], dt, loaded = self.pending.pop(n).result()
                how = " (in the background)"
            else:
                self.compiled[n], dt, loaded = self._compile(n, plan.placement.abstract(state))
                how = ""
            self.status.compiled(dt)
            where = f" on {plan.placement.describe()}" if plan.placement.devices > 1 else ""
            what = "loaded" if loaded else "compiled"
            source = " from the compilation cache" if loaded else ""
            self.status.say(f"[{plan.name}] {what} a chunk of {n} updates x {plan.steps_per_update:,} env "
                            f"steps x {plan.rows} run(s){where}{source} in {dt:.1f} s{how}")
        return self.compiled[n]


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

    out = out or sys.stdout
    cfg = plan.cfg
    init_fn = learning.init_seeds(plan.algo, plan.env, plan.env_params, cfg)
    ckpts = Checkpoints(plan.ckpt_dir, cfg["checkpoint"]["max_to_keep"], async_save=cfg["checkpoint"]["async"])
    programs: _Programs | None = None
    try:
        state, progress = _start(plan, ckpts, init_fn, learning.seed_keys(cfg), out)
        tb = TensorBoard(run_dir, plan.name) if cfg["log"]["tensorboard"] and is_primary() else None
        total, per_update, seeds = plan.total_updates, plan.steps_per_update, plan.rows
        status: Any = LiveStatus(
            run_dir, plan.name, total_steps=total * per_update, seeds=seeds, done_steps=progress.updates * per_update,
            print_every_s=cfg["log"]["print_every_s"], out=out, extra=_status_extra(plan),
        ) if is_primary() else _Silent()
        programs = _Programs(plan, status)
        sizes = chunk_sizes(progress.updates, total, plan.chunk_updates)
        programs.prefetch(sizes, state)
        for n in sizes:
            fn = programs.get(n, state)
            t0 = time.perf_counter()
            state, metrics = fn(state)
            metrics = host_copy(metrics)
            dt = time.perf_counter() - t0
            prev = progress.updates
            progress.updates += n
            step = progress.updates * per_update
            progress.csv.append(chunk_rows(metrics, cfg, progress.episodes_done, step, progress.updates,
                                           n * per_update * seeds / max(dt, 1e-9), plan.members))
            if tb is not None:
                tb.write(metrics, step)
            status.chunk(step, dt, float(np.mean(np.asarray(metrics["reward_avg"]))))
            if progress.updates // plan.every_updates > prev // plan.every_updates or progress.updates == total:
                ckpt_step = progress.updates * plan.steps_per_env
                ckpts.save(ckpt_step, state, _meta(plan, progress, progress.updates == total))
                if on_checkpoint is not None:
                    ckpts.wait()
                    on_checkpoint(ckpt_step)
        ckpts.wait()
        status.close("evaluating" if cfg["eval"]["enabled"] and comps.evaluate is not None else "finished")
        if tb is not None:
            tb.close()
    finally:
        if programs is not None:
            programs.close()
        try:
            ckpts.close()
        except Exception as exc:  # already reported by wait() above unless interrupted
            print(f"warning: {exc}", file=sys.stderr)

    evaluation = evaluate_run(plan, state, progress.updates, comps, out)
    if evaluation is not None:
        status.write("finished")
    return Result(plan.name, progress.updates * plan.steps_per_env, progress.updates, state, evaluation)


# --------------------------------------------------------------------------------------------
# The final evaluation
# --------------------------------------------------------------------------------------------

def _seed_names(plan: Plan) -> list[str]:
    """``seed <k>`` per row; with a sweep ``<member's hyperparameters> seed <k>``."""
    cfg = plan.cfg
    seeds = [f"seed {cfg['seed'] + i}" for i in range(cfg["seeds"])]
    if not plan.swept:
        return seeds
    return [f"{member_label(m)} {s}" for m in plan.members for s in seeds]


def evaluation_done(plan: Plan) -> bool:
    """Whether the agent's evaluation file is complete: valid JSON with an entry for every seed."""
    try:
        doc = json.loads(plan.evaluation_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, Mapping) and all(isinstance(doc.get(name), Mapping) for name in _seed_names(plan))


def evaluate_run(plan: Plan, state: Any, updates: int, comps: Components, out: Any) -> dict[str, Any] | None:
    """Evaluate every seed's deterministic policy with ``comps.evaluate`` and write the KPIs.

    ``comps.evaluate({"seed <k>": policy, ...}, seed=, hours=, optimal=) -> mapping`` (by default
    :func:`oe3jax.evaluation.compare.evaluate_with_baselines`) runs every seed's policy beside the
    baselines on the same arrivals, in the environment the agent was trained for; its result is
    written atomically to ``<run_dir>/evaluation/<algo>.json`` and its ``"table"`` (markdown), if
    any, to ``<run_dir>/evaluation/<algo>.md``.
    """
    import jax

    ecfg = plan.cfg["eval"]
    if comps.evaluate is not None and ecfg["enabled"] and jax.process_count() > 1:
        state = host_copy(state)  # the state spans processes: every process takes part in gathering it
    if not is_primary():
        return None
    if comps.evaluate is None or not ecfg["enabled"]:
        why = "eval.enabled is false" if comps.evaluate is not None else "no evaluation is available"
        _say(out, f"[{plan.name}] evaluation skipped: {why}")
        return None
    policies = {
        name: policy_from_state(state, plan.algo, plan.env, plan.env_params, plan.cfg, seed_index=i,
                                step=updates * plan.steps_per_env, meta={"fingerprint": plan.fingerprint})
        for i, name in enumerate(_seed_names(plan))
    }
    results = _jsonable(comps.evaluate(policies, seed=ecfg["seed"], hours=ecfg["hours"], optimal=ecfg["optimal"]))
    if isinstance(results, Mapping) and plan.swept:
        results = dict(results)
        results["sweep"], table = sweep_summary(plan, results)
        if table:
            results["table"] = f"{results.get('table') or ''}\n\n{table}".strip()
    path = plan.evaluation_path
    if isinstance(results, Mapping) and isinstance(results.get("table"), str):
        atomic_write_text(path.with_suffix(".md"), results["table"] + "\n")
        _say(out, results["table"])
    atomic_write_text(path, json.dumps(results, indent=2))  # last: its presence means done
    _say(out, f"[{plan.name}] evaluation written to {path}")
    return results


def sweep_summary(plan: Plan, results: Mapping[str, Any], kpi: str = "return") -> tuple[dict[str, Any], str]:
    """Each sweep member's mean ``kpi`` over its seeds with a bootstrap confidence interval
    (:func:`oe3jax.evaluation.statistics.interval`), and the best member (highest mean); with a
    markdown table. Members whose evaluation lacks ``kpi`` are left out."""
    from oe3jax.evaluation.statistics import interval

    names = _seed_names(plan)
    seeds = int(plan.cfg["seeds"])
    rows = []
    for m, member in enumerate(plan.members):
        scores = [results.get(n, {}).get(kpi) for n in names[m * seeds:(m + 1) * seeds]]
        if any(not isinstance(v, (int, float)) for v in scores):
            continue
        stats = interval(np.asarray(scores, float)[:, None])
        rows.append({"member": m, "hyperparameters": member, "mean": stats["mean"], "ci": stats["ci"], "seeds": seeds})
    if not rows:
        return {"kpi": kpi, "members": []}, ""
    best = max(rows, key=lambda r: (r["mean"], -r["member"]))
    lines = [f"Sweep: {kpi} of the evaluation, mean over {seeds} seed(s) with its 95 % bootstrap interval", "",
             "| member | hyperparameters | mean | interval |", "|---:|---|---:|---|"]
    for r in rows:
        mark = " (best)" if r is best else ""
        lines.append(f"| {r['member']}{mark} | {member_label(r['hyperparameters'])} | {r['mean']:.4g} | "
                     f"{r['ci'][0]:.4g} to {r['ci'][1]:.4g} |")
    return {"kpi": kpi, "members": rows, "best": best["member"]}, "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
