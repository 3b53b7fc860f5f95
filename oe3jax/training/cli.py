"""The command line of ``scripts/train.py`` (also ``python -m oe3jax.training`` and ``oe3jax-train``).

``run(argv)`` reads the configuration once (``--config`` and every ``--set``), resolves it for each
agent (``--algo all``: SAC, then PPO, then A2C in one run directory), builds every environment,
takes the run directory's lock, checks every checkpoint found there against the configuration, and
only then writes anything. Rerunning the same command resumes; ``--fresh`` starts over.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from oe3jax.schema import ConfigError
from oe3jax.training.checkpoint import CheckpointError, ResumeMismatch
from oe3jax.training.config import (
    DEFAULT_RUNS_DIR, Components, default_components, requested_algo, resolve_config, user_config,
)
from oe3jax.training import distributed, resources
from oe3jax.training.files import RunDirBusy, RunLock, StorageError, atomic_write_text
from oe3jax.training.loop import Result, evaluation_done, find_resume, plan_agent, train_agent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train SAC / PPO / A2C on an EV-charging scenario. Rerunning the same command "
        "resumes from the last checkpoint of its run directory.",
    )
    p.add_argument("--algo", help="ppo, a2c, sac, or all (SAC, then PPO, then A2C)")
    p.add_argument("--config", metavar="FILE", help="YAML file over the algorithm's defaults")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key, value read as YAML (repeatable), e.g. --set ppo.lr=1e-4")
    p.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="train every value of a hyperparameter in one program (repeatable: the grid of "
                   "all keys), e.g. --sweep ppo.lr=1e-4,3e-4,1e-3; one CSV row per member and seed")
    p.add_argument("--run-dir", metavar="DIR", help=f"default: {DEFAULT_RUNS_DIR}/<algo>-<scenario>")
    p.add_argument("--seeds", type=int, help="independent seeds vmapped in one program")
    p.add_argument("--seed", type=int, help="seed of the first run")
    p.add_argument("--total-steps", type=int, help="env steps per seed, all environments together")
    p.add_argument("--scenario", help="scenario preset")
    p.add_argument("--resume-from", type=int, metavar="STEP",
                   help="resume from this complete checkpoint (its directory name under checkpoints/<algo>/) "
                   "instead of the latest, e.g. when the latest is damaged; the later ones are moved aside")
    p.add_argument("--distributed", action="store_true",
                   help="one of several processes (hosts) training together: jax.distributed.initialize from "
                   "--coordinator/--num-processes/--process-id, JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/"
                   "JAX_PROCESS_ID, or the cluster's own variables (SLURM, Open MPI, ...); on whenever "
                   "JAX_COORDINATOR_ADDRESS is set")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (with --distributed)")
    p.add_argument("--num-processes", type=int, metavar="N", help="processes in all (with --distributed)")
    p.add_argument("--process-id", type=int, metavar="I", help="this process, 0 to N-1 (with --distributed)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: the existing run directory is renamed to <DIR>.old-<time>")
    return p


def profile_notes(env: Any) -> list[str]:
    """The assumptions made reading the environment's profile files (none for packaged profiles)."""
    from oe3jax.simulation.scenario import Scenario, profile_notes as notes_of

    scenario = getattr(env, "scenario", None)
    return notes_of(scenario) if isinstance(scenario, Scenario) else []


def move_aside(run_dir: Path, out: Any) -> None:
    """Rename an existing run directory to ``<DIR>.old-<time>`` (``--fresh``)."""
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


def _lock(run_dir: Path, fresh: bool, out: Any) -> RunLock:
    """Hold the run directory for this process; with ``fresh``, move the old one aside first
    (only once no other process holds it)."""
    if fresh and run_dir.exists():
        with RunLock(run_dir):
            move_aside(run_dir, out)
    return RunLock(run_dir).acquire()


def write_run_report(run_dir: Path, comps: Components, out: Any, argv: Sequence[str] | None = None) -> None:
    """The run's report (plots and Markdown) in ``<run_dir>/report``; a failure to write it costs the
    training nothing: one warning line, and ``scripts/report.py RUN_DIR`` can write it later."""
    from oe3jax.training.policy import load_policies
    from oe3jax.training.status import checkpoint_summary

    try:
        from oe3jax.evaluation.report import write_report

        argv = sys.argv[1:] if argv is None else argv
        report = write_report([run_dir], run_dir / "report", command="python scripts/train.py " + " ".join(argv),
                              load_policies=lambda path, algo: load_policies(path, algo=algo, components=comps),
                              checkpoints=checkpoint_summary)
    except Exception as exc:  # noqa: BLE001 - whatever fails here, the trained agents are saved
        text = (str(exc).splitlines() or [""])[0]
        print(f"warning: the report could not be written ({type(exc).__name__}: {text}); the training is saved; "
              f"retry with python scripts/report.py {run_dir}", file=sys.stderr, flush=True)
        return
    print(f"report written to {report.path}" + (f" (partial: {len(report.missing)} item(s) missing, listed "
                                                "at its top)" if report.partial else ""), file=out, flush=True)


def run(
    argv: Sequence[str] | None = None,
    comps: Components | None = None,
    *,
    on_checkpoint: Callable[[str, int], None] | None = None,
    out: Any = None,
) -> list[Result]:
    """Parse the command line, resolve the config(s), train; raises on errors."""
    args = _parser().parse_args(argv)
    if distributed.wanted(args.distributed) or any(
            v is not None for v in (args.coordinator, args.num_processes, args.process_id)):
        if not distributed.wanted(args.distributed):
            raise ConfigError("--coordinator, --num-processes and --process-id need --distributed")
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    primary = distributed.is_primary()
    out = (out or sys.stdout) if primary else open(os.devnull, "w")  # only process 0 speaks
    comps = comps or default_components()
    user = user_config(args.config, args.sets, args.sweeps)
    algo = requested_algo(args.algo, user, comps)
    flags = {"seeds": args.seeds, "seed": args.seed, "total_steps": args.total_steps, "scenario": args.scenario}
    agents = comps.pipeline if algo == "all" else (algo,)
    cfgs = [resolve_config(a, comps, user, flags=flags, sections=agents if algo == "all" else None) for a in agents]
    if args.resume_from is not None and (args.fresh or len(agents) > 1):
        raise ConfigError("--resume-from: give it with one --algo, without --fresh")
    if args.run_dir is not None and not args.run_dir.strip():  # Path("") would be the current directory
        raise ConfigError("--run-dir: expected a directory path, got an empty string")
    run_dir = Path(args.run_dir) if args.run_dir is not None else DEFAULT_RUNS_DIR / f"{algo}-{cfgs[0]['scenario']}"
    resources.check_writable_dir(run_dir, "--run-dir", rename=args.fresh)
    resources.use_compile_cache(cfgs[0], warn=sys.stderr)  # before anything is compiled
    plans = [plan_agent(cfg, run_dir, comps) for cfg in cfgs]  # every env is built before any write

    lock = _lock(run_dir, args.fresh, out) if primary else None
    distributed.barrier("oe3jax-run-dir-ready")  # the others read the run directory once process 0 holds it
    try:
        plans = [find_resume(plan, args.resume_from) for plan in plans]  # every resume is checked before any write
        resolved: Any = cfgs[0] if algo != "all" else {"algo": "all", "agents": {c["algo"]: c for c in cfgs}}
        notes = profile_notes(plans[0].env)
        # assumptions made reading the user's profiles: as YAML comments, so that config.yaml stays
        # loadable with --config and out of the resume comparison
        if primary:
            atomic_write_text(run_dir / "config.yaml", "".join(f"# profile: {n}\n" for n in notes)
                              + yaml.safe_dump(resolved, sort_keys=False))
        print(f"run directory: {run_dir}", file=out, flush=True)
        for note in notes:
            print(f"profile: {note}", file=out, flush=True)
        results = []
        for plan in plans:
            hook = None if on_checkpoint is None else (lambda step, _a=plan.name: on_checkpoint(_a, step))
            meta = plan.resume_meta
            evaluated = comps.evaluate is None or not plan.cfg["eval"]["enabled"] or evaluation_done(plan)
            if meta is not None and meta.get("final") and int(meta["updates"]) >= plan.total_updates and evaluated:
                print(f"[{plan.name}] already trained and evaluated; skipped", file=out)
                continue
            results.append(train_agent(plan, run_dir, comps, on_checkpoint=hook, out=out))
        if algo == "all":
            write_run_report(run_dir, comps, out, argv)
        return results
    finally:
        if lock is not None:
            lock.release()


def main(argv: Sequence[str] | None = None, comps: Components | None = None) -> int:
    """Exit 0 on success; 2 with one ``error:`` line for a bad config, a checkpoint made by another
    config or a run directory in use; 1 for a checkpoint or file that cannot be read or written."""
    try:
        run(argv, comps)
    except (ConfigError, ResumeMismatch, RunDirBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:
        cure = "make room" if exc.no_space else "correct that path"
        print(f"error: {exc}; the checkpoints and progress rows saved before are intact: {cure} and "
              "rerun the same command to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0
