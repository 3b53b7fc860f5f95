#!/usr/bin/env python
"""Measure environment, training and checkpoint throughput; write results/benchmark.{json,md}.

    python scripts/benchmark.py                          # everything (about 3-10 minutes on 2 cores)
    python scripts/benchmark.py --sections env           # environment stepping only
    python scripts/benchmark.py --quick --out /tmp/b     # tiny sizes: checks that it all runs
    python scripts/benchmark.py --peers                  # peers side by side (extra 'peers'; long)
    python scripts/benchmark.py --peers env,train        # some of its sections: env, train, quality
    python scripts/benchmark.py --scaling                # 1, 2, 4 devices: results/scaling.{json,md}
    python scripts/benchmark.py --out results/gpu        # on a GPU: the GPU plan (see below)

Sections: ``env`` (vmapped random stepping vs the NumPy reference loop), ``train`` (the machine's
matmul FLOP/s, then each algorithm's update chunk at its default config), ``checkpoint`` (size on
disk and time lost to saving, sync vs async). A failing optional section (train, checkpoint) is
recorded with its error in the JSON and the others go on; the exit status is non-zero only when
the env section fails. See ``oe3jax/benchmarks/throughput.py`` for how each number is measured.

``--peers [env,train,quality]`` (optional extra ``peers``; without it, a one-line install hint)
measures other simulators and RL libraries beside ours instead (``oe3jax/benchmarks/peers.py``),
one process per measurement, and writes them under ``"peers"`` in benchmark.json (read, modified,
written: the other sections stay) and as a "Peers" section of benchmark.md; each measurement is
saved as it finishes, and ``--resume`` keeps those already there. CityLearn 3.0.2 cannot share an
environment with this project (it pins gymnasium<=0.28.1 and numpy<2): give ``--citylearn-python``.

On a GPU (JAX's default backend ``gpu``, or ``--plan gpu``) the plan changes: batches of up to
262,144 environments, the matmul yardstick in float32, bfloat16 and float16, training rows for
every algorithm in each precision and for PPO with 2,048 environments; no step profile and no
checkpoint section unless asked for. JAX's preallocation of GPU memory is turned off for this
script (``XLA_PYTHON_CLIENT_PREALLOCATE=false``, unless set), so that the parent's environment
measurements and each training row's process share the GPU. JAX's persistent compilation cache is
off too (``JAX_ENABLE_COMPILATION_CACHE=false``, unless set), so that compile times are compilations.

``--scaling`` measures env stepping (the environments split over the devices) and PPO training
(the seeds split over the devices) on 1, 2 and 4 devices, one process per device count
(``oe3jax/benchmarks/scaling.py``), and writes ``scaling.json`` and ``scaling.md``. On a CPU the
devices are forced (``--xla_force_host_platform_device_count``) and share the same cores: the
table shows correctness and overhead, not speed-up. On GPUs, the counts up to those present.
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import importlib.util
import json
import math
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# the parent measures env stepping on the GPU and then starts one process per training row: JAX's
# default of taking 75 % of the GPU's memory in every process would leave the children none
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# compile times are compilations: a persistent cache (JAX_COMPILATION_CACHE_DIR) would make them loads
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")

from oe3jax.benchmarks import peers  # noqa: E402
from oe3jax.benchmarks import scaling  # noqa: E402
from oe3jax.benchmarks import throughput as bench  # noqa: E402

SECTIONS = ("env", "train", "checkpoint")
ALGOS = ("ppo", "a2c", "sac")
TARGETS = {
    "env_steps_per_s": 2_000_000,
    "mode": "obs",  # the env-steps target is met with the observation consumed as a policy would
    "ratio_to_reference": 10_000,
    "scenario": "iquitos-128",
}

# the yardstick of the socket-shared network's cost: an MLP of [256, 256] at the same batch
_MLP_VARIANT = {"ppo-mlp-256x256": ("ppo", {"network.kind": "mlp", "network.hidden_sizes": [256, 256]})}
# Full run: the sizes of the design; quick run: a few seconds each, for the smoke test.
FULL = {
    "env": {"scenarios": {"iquitos-128": bench.ACTION_MODES, "iquitos-38": ("pool", "obs")},
            "num_envs": (1, 64, 256, 512, 1024, 2048, 4096), "env_steps_per_call": 32_768, "repeats": 3,
            "min_repeat_s": 0.3, "reference_steps": 3000,
            # where the step's time goes: profiled at the best batch size of this scenario and mode
            "stages": {"scenario": "iquitos-128", "mode": "obs", "num_steps": 64, "calls": 3}},
    "matmul": {"sizes": (1024, 2048), "iters": 8, "repeats": 3, "min_repeat_s": 0.3},
    # variants: extra training rows (train section only), an algorithm with overrides; the MLP of
    # [256, 256] is the yardstick of the socket-shared network's cost at the same batch
    "train": {"repeats": 3, "max_env_steps_per_chunk": 1024, "overrides": {},
              "variants": dict(_MLP_VARIANT)},
    "checkpoint": {"saves": 2},
    "algo_timeout_s": 900,
    "default_sections": SECTIONS,
}
PRECISIONS = ("float32", "bfloat16", "float16")
# A GPU: batches large enough to fill it, every precision, and a PPO sized for it. The step profile
# parses the CPU runtime's trace, so it is not run; checkpoints (disk, not GPU) only when asked for.
GPU = {
    "env": {"scenarios": {"iquitos-128": ("pool", "obs"), "iquitos-38": ("obs",)},
            "num_envs": (1024, 8192, 32768, 131072, 262144), "env_steps_per_call": 2**21, "repeats": 3,
            "min_repeat_s": 0.3, "reference_steps": 3000, "stages": None},
    "matmul": {"sizes": (4096, 8192), "dtypes": PRECISIONS, "iters": 8, "repeats": 3, "min_repeat_s": 0.3},
    "train": {"repeats": 3, "max_env_steps_per_chunk": 1024, "min_repeat_s": 0.3, "overrides": {},
              "variants": {
                  "ppo-2048envs": ("ppo", {"ppo.num_envs": 2048}),
                  **{f"{a}-{p}": (a, {"precision": p}) for p in PRECISIONS[1:] for a in ALGOS},
                  "ppo-2048envs-bfloat16": ("ppo", {"ppo.num_envs": 2048, "precision": "bfloat16"}),
                  **_MLP_VARIANT,
              }},
    "checkpoint": {"saves": 2},
    "algo_timeout_s": 180,
    "default_sections": ("env", "train"),
}
_TINY_NET = {"scenario": "iquitos-38", "network.kind": "mlp", "network.hidden_sizes": [16], "env.episode_hours": 48}
QUICK = {
    "env": {"scenarios": {"iquitos-38": bench.ACTION_MODES}, "num_envs": (1, 4), "env_steps_per_call": 64,
            "repeats": 2, "min_repeat_s": 0.0, "reference_steps": 50,
            "stages": {"scenario": "iquitos-38", "mode": "obs", "num_steps": 4, "calls": 1}},
    "matmul": {"sizes": (64,), "iters": 2, "repeats": 2, "min_repeat_s": 0.0},
    "train": {"repeats": 2, "max_env_steps_per_chunk": 32, "overrides": {
        "ppo": {**_TINY_NET, "ppo.num_envs": 2, "ppo.num_steps": 8, "ppo.num_minibatches": 2, "ppo.update_epochs": 1},
        "a2c": {**_TINY_NET, "a2c.num_envs": 2, "a2c.num_steps": 8},
        "sac": {**_TINY_NET, "network.squash": "tanh", "sac.num_envs": 2, "sac.buffer_size": 64,
                "sac.batch_size": 8, "sac.learning_starts": 8},
    }},
    "checkpoint": {"saves": 1},
    "algo_timeout_s": 300,
    "default_sections": SECTIONS,
}


def plans() -> dict[str, dict[str, Any]]:
    """The plans by name (looked up when used, so that a test can replace one)."""
    return {"cpu": FULL, "gpu": GPU, "quick": QUICK}


def plan_name(plan: str, quick: bool) -> str:
    """``quick``, or the plan asked for, or (``auto``) the one of JAX's default backend."""
    if quick:
        return "quick"
    if plan != "auto":
        return plan
    import jax

    return "gpu" if jax.default_backend() == "gpu" else "cpu"


def precision_of(overrides: Mapping[str, Any]) -> str:
    return str(overrides.get("precision", "float32"))


# Scaling: the same global work on every device count (the env count and the seeds divide by 4).
SCALING = {
    "devices": (1, 2, 4),
    "env": {"scenario": "iquitos-128", "num_envs": 1024, "env_steps_per_call": 65_536, "repeats": 3},
    "ppo": {"seeds": 4, "overrides": {}, "max_env_steps_per_chunk": 4096, "repeats": 3},
    "timeout_s": 900,
}
SCALING_QUICK = {
    "devices": (1, 2, 4),
    "env": {"scenario": "iquitos-38", "num_envs": 8, "env_steps_per_call": 64, "repeats": 2},
    "ppo": {"seeds": 4, "overrides": {**_TINY_NET, "ppo.num_envs": 2, "ppo.num_steps": 8, "ppo.num_minibatches": 2,
                                      "ppo.update_epochs": 1}, "max_env_steps_per_chunk": 16, "repeats": 2},
    "timeout_s": 300,
}


def run_scaling(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    """One process per device count; ``scaling.json`` and ``scaling.md`` in ``--out``."""
    import jax

    plan = SCALING_QUICK if args.quick else SCALING
    platform, available = jax.default_backend(), jax.device_count()
    rows: list[dict[str, Any]] = []
    load_start = bench.load_average()
    for n in plan["devices"]:
        env = dict(os.environ)
        if platform == "cpu":
            kept = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f)
            env["XLA_FLAGS"] = f"{kept} --xla_force_host_platform_device_count={n}".strip()
        elif n > available:
            rows.append({"devices": n, "skipped": True, "error": f"{available} {platform} device(s) present"})
            continue
        with tempfile.TemporaryDirectory(prefix="oe3jax-scaling-") as tmp:
            result = Path(tmp) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--scaling-worker", str(n), "--result", str(result)]
            proc = subprocess.run(cmd + (["--quick"] if args.quick else []), env=env, capture_output=True, text=True,
                                  timeout=plan["timeout_s"])
            for line in proc.stdout.splitlines():
                log(line)
            if proc.returncode != 0 or not result.is_file():
                tail = (proc.stderr.strip().splitlines() or [""])[-1]
                rows.append({"devices": n, "skipped": True, "error": f"exit status {proc.returncode}: {tail}"})
                log(f"[scaling] {n} device(s): failed ({tail})")
                continue
            rows.append({**json.loads(result.read_text(encoding="utf-8")), "load_avg_after": bench.load_average()})
    argv_text = sys.argv[1:]
    doc = {"command": "python scripts/benchmark.py " + shlex.join(argv_text), "quick": bool(args.quick),
           "machine": bench.machine_info(), "platform": platform, "forced_cpu_devices": platform == "cpu",
           "plan": plan, "rows": rows, "load_avg_start": load_start, "load_avg_end": bench.load_average()}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scaling.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    (out_dir / "scaling.md").write_text(scaling_markdown(doc), encoding="utf-8")
    log(f"wrote {out_dir / 'scaling.json'} and {out_dir / 'scaling.md'}")
    return 0 if all(not r.get("skipped") or platform != "cpu" for r in rows) else 1


def scaling_markdown(doc: Mapping[str, Any]) -> str:
    plan, machine = doc["plan"], doc["machine"]
    lines = ["# Scaling over devices", "", f"`{doc['command']}`", ""]
    if doc["forced_cpu_devices"]:
        lines += [f"Forced CPU devices (`--xla_force_host_platform_device_count`) on {machine.get('cpu_model', 'this CPU')} "
                  f"({machine.get('cpu_count', '?')} cores): every device count shares the same cores. XLA runs one "
                  "CPU device's program on few threads and forced devices run side by side, so up to the core count "
                  "more forced devices can use more cores; beyond it they only add partitioning overhead. Neither is "
                  "what more accelerators would give: this table shows that the sharded programs run, and their cost. "
                  "Load averages (other work on the machine) are in scaling.json.", ""]
    env, ppo = plan["env"], plan["ppo"]
    lines += [f"| devices | env steps/s ({env['num_envs']:,} envs of {env['scenario']} split over the devices) | "
              f"PPO env steps/s ({ppo['seeds']} seeds split over the devices) | PPO compile (s) |",
              "|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['devices']} | skipped: {r['error']} | | |")
            continue
        lines.append(f"| {r['devices']} ({r['platform']}) | {_rate(r['env']['env_steps_per_s'])} | "
                     f"{_rate(r['ppo']['env_steps_per_s'])} | {r['ppo']['compile_s']:.1f} |")
    return "\n".join(lines) + "\n"


def _error(exc: BaseException) -> dict[str, str]:
    text = str(exc).strip().splitlines()
    return {"error": f"{type(exc).__name__}: {text[0] if text else ''}",
            "traceback": traceback.format_exc(limit=6)}


def run_env(plan: Mapping[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {"load_avg_start": bench.load_average(), "scenarios": {}}
    for scenario, modes in plan["scenarios"].items():
        part = bench.env_section([scenario], plan["num_envs"], modes=modes,
                                 env_steps_per_call=plan["env_steps_per_call"], repeats=plan["repeats"],
                                 min_repeat_s=plan["min_repeat_s"], reference_steps=plan["reference_steps"], log=log)
        out["modes"] = {**out.get("modes", {}), **part["modes"]}
        out["scenarios"][scenario] = {**part["scenarios"][scenario],
                                      "load_avg_start": part["load_avg_start"], "load_avg_end": part["load_avg_end"]}
    st = plan.get("stages")
    if st and st["scenario"] in out["scenarios"]:
        from oe3jax.simulation.env import make_env

        try:
            best = out["scenarios"][st["scenario"]]["best"]
            num_envs = best[st["mode"]]["num_envs"] if st["mode"] in best else max(plan["num_envs"])
            env, env_params = make_env(st["scenario"])
            out["stages"] = {"scenario": st["scenario"], **bench.step_stages(
                env, env_params, num_envs, st["mode"], num_steps=st["num_steps"], calls=st["calls"], top=8)}
            log(f"[env] {st['scenario']} step profile at {num_envs:,} envs: " + ", ".join(
                f"{r['stage']} {100 * r['share']:.0f} %" for r in out["stages"]["stages"]))
        except Exception as exc:  # the profile is optional: the throughput above stands without it
            out["stages"] = _error(exc)
            log(f"[env] step profile FAILED: {out['stages']['error']}")
    out["load_avg_end"] = bench.load_average()
    return out


def run_matmul(plan: Mapping[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """The best matmul FLOP/s per dtype: ``peak_flops_per_s`` (float32) and ``peaks`` (every dtype)."""
    out: dict[str, Any] = {"load_avg_start": bench.load_average(), "runs": []}
    for dtype in plan.get("dtypes", ("float32",)):
        for size in plan["sizes"]:
            row = bench.matmul_flops(size, dtype=dtype, iters=plan["iters"], repeats=plan["repeats"],
                                     min_repeat_s=plan["min_repeat_s"])
            log(f"[matmul] {size}x{size} {dtype}: {row['flops_per_s']['median'] / 1e9:,.1f} GFLOP/s")
            out["runs"].append(row)
    out["peaks"] = {r["dtype"]: max(q["flops_per_s"]["median"] for q in out["runs"] if q["dtype"] == r["dtype"])
                    for r in out["runs"]}
    out["peak_flops_per_s"] = out["peaks"].get("float32", max(out["peaks"].values()))
    out["load_avg_end"] = bench.load_average()
    return out


def _overrides(plan: Mapping[str, Any], algo: str) -> dict[str, Any]:
    return dict(plan["overrides"].get(algo, {}))


def _measured(plan: Mapping[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """``(algorithm, overrides)`` of a training row: an algorithm, or a variant of the plan."""
    variants = plan["train"].get("variants", {})
    if name in variants:
        algo, overrides = variants[name]
        return algo, {**_overrides(plan["train"], algo), **overrides}
    return name, _overrides(plan["train"], name)


def run_worker(algo: str, sections: list[str], plan: Mapping[str, Any], peak: float | None, result: Path) -> int:
    """Measure one algorithm (train and/or checkpoint) in this process; write the rows to ``result``."""
    faulthandler.dump_traceback_later(plan["algo_timeout_s"] - 15, exit=True)  # a stack dump if it hangs
    train_plan = plan["train"]
    name, (algo, overrides) = algo, _measured(plan, algo)
    if name != algo:
        sections = [s for s in sections if s == "train"]  # a variant is a training row only
    out: dict[str, Any] = {}

    def log(text: str) -> None:
        print(text, flush=True)

    def save() -> None:
        result.write_text(json.dumps(out, default=str), encoding="utf-8")

    if "train" in sections:
        try:
            out["train"] = bench.train_throughput(
                algo, overrides=overrides, max_env_steps_per_chunk=train_plan["max_env_steps_per_chunk"],
                repeats=train_plan["repeats"], min_repeat_s=train_plan.get("min_repeat_s", 0.0),
                peak_flops_per_s=peak, log=log)
        except Exception as exc:  # an algorithm that is missing or broken is recorded, not fatal
            out["train"] = {"skipped": True, **_error(exc)}
            log(f"[train] {algo}: skipped ({out['train']['error']})")
        out["train"]["load_avg_after"] = bench.load_average()
        save()
    if "checkpoint" in sections:
        try:
            out["checkpoint"] = bench.checkpoint_cost(
                algo, overrides=overrides, saves=plan["checkpoint"]["saves"],
                max_env_steps_per_chunk=train_plan["max_env_steps_per_chunk"], log=log)
        except Exception as exc:
            out["checkpoint"] = {"skipped": True, **_error(exc)}
            log(f"[checkpoint] {algo}: skipped ({out['checkpoint']['error']})")
        out["checkpoint"]["load_avg_after"] = bench.load_average()
        save()
    return 0


def run_algos(name: str, sections: list[str], peaks: Mapping[str, float] | None,
              log: Callable[[str], None],
              progress: Callable[[dict[str, dict[str, Any]]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Each algorithm in its own process (its memory is freed after it, and a hang is cut off).

    ``name`` is the plan's key in :func:`plans`; ``peaks`` the matmul FLOP/s per dtype, each row's
    utilisation taken against the peak of its precision. Returns ``{"train": {algo: row},
    "checkpoint": {algo: row}}`` for the sections asked for; ``progress`` is called with it after
    each algorithm (the results so far are written, so a run stopped from outside keeps them).
    """
    plan = plans()[name]
    wanted = [s for s in ("train", "checkpoint") if s in sections]
    out: dict[str, dict[str, Any]] = {s: {"load_avg_start": bench.load_average(), "algos": {}} for s in wanted}
    timeout = plan["algo_timeout_s"]
    variants = tuple(plan["train"].get("variants", {})) if "train" in wanted else ()
    for algo in ALGOS + variants:
        peak = (peaks or {}).get(precision_of(_measured(plan, algo)[1]))
        with tempfile.TemporaryDirectory(prefix="oe3jax-bench-") as tmp:
            result = Path(tmp) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", algo, "--sections", ",".join(wanted),
                   "--result", str(result)] + (["--quick"] if name == "quick" else ["--plan", name]) + (
                       ["--peak", repr(peak)] if peak else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            killed = threading.Event()

            def kill(proc: subprocess.Popen = proc, killed: threading.Event = killed) -> None:
                killed.set()
                proc.kill()  # the child started just above, by its own pid

            timer = threading.Timer(timeout, kill)
            timer.start()
            lines: list[str] = []
            try:
                for line in proc.stdout:
                    lines.append(line.rstrip("\n"))
                    log(line.rstrip("\n"))
                proc.wait()
            finally:
                timer.cancel()
            rows = json.loads(result.read_text(encoding="utf-8")) if result.is_file() else {}
        for section in wanted if algo in ALGOS else ["train"]:
            if section in rows:
                out[section]["algos"][algo] = rows[section]
                continue
            hung = killed.is_set() or any("Timeout (0:" in ln for ln in lines)
            why = (f"did not finish within {timeout} s (process stopped; stack dump in output_tail)" if hung
                   else f"the measurement process exited with status {proc.returncode}")
            out[section]["algos"][algo] = {"skipped": True, "error": why, "output_tail": "\n".join(lines[-40:])}
            log(f"[{section}] {algo}: skipped ({why})")
        for section in wanted:
            out[section]["load_avg_end"] = bench.load_average()
        if progress is not None:
            progress(out)
    return out


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

def _si(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.{digits}g} {unit}"
    return f"{x:.{digits}g}"


def _rate(r: Mapping[str, float]) -> str:
    return f"{r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f})"


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"


def _pct(fraction: float | None) -> str:
    """A share in per cent, with two significant digits below 1 %."""
    if fraction is None or not math.isfinite(fraction):
        return "n/a"
    pct = 100 * fraction
    return f"{pct:.1f} %" if pct >= 1 else f"{pct:.2g} %"


def variants_markdown(algos: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    """Each precision or batch variant beside the row it changes (the GPU plan's variants)."""
    rate = lambda r: r["env_steps_per_s"]["median"]  # noqa: E731
    parts = []
    for name, (algo, overrides) in plan["train"].get("variants", {}).items():
        if "network.kind" in overrides:
            continue
        # the row it changes: the variant with the same other overrides and the default precision, or the algo
        rest = {k: v for k, v in overrides.items() if k != "precision"}
        base_name = next((n for n, (a, o) in plan["train"]["variants"].items()
                          if n != name and a == algo and o == rest), algo)
        base, var = algos.get(base_name), algos.get(name)
        if not base or not var or base.get("skipped") or var.get("skipped"):
            continue
        parts.append(f"`{name}` {rate(var) / rate(base):.2f}x `{base_name}`")
    if not parts:
        return []
    return ["Variants beside the row they change (env steps/s, same run): " + "; ".join(parts) + ".", ""]


def network_cost_markdown(algos: Mapping[str, Any], plan: Mapping[str, Any] = FULL, gpu: bool = False) -> list[str]:
    """Why the socket-shared network uses less of the matmul peak than an MLP: the variant rows."""
    lines = []
    for name, (algo, overrides) in plan["train"].get("variants", {}).items():
        if "network.kind" not in overrides:
            continue
        base, var = algos.get(algo), algos.get(name)
        if not base or not var or base.get("skipped") or var.get("skipped"):
            continue
        ratio = var["env_steps_per_s"]["median"] / base["env_steps_per_s"]["median"]
        lines += [
            f"Network cost at the same batch ({algo}): the default socket-shared network runs "
            f"{base['env_steps_per_s']['median']:,.0f} env steps/s with {_si(base['flops_per_env_step'])} FLOPs per env "
            f"step ({_pct(base.get('flops_fraction_of_matmul'))} of the matmul peak); "
            f"`{name}` ({', '.join(f'{k}={v}' for k, v in overrides.items())}) runs "
            f"{var['env_steps_per_s']['median']:,.0f} ({ratio:.2f}x) with {_si(var['flops_per_env_step'])} "
            f"({_pct(var.get('flops_fraction_of_matmul'))})." + (
                " On a GPU, at the default batch (a few envs), both are bound by the sequence of small kernels "
                "that each of the rollout's steps and each minibatch's gradient step launch, not by FLOPs: the "
                "rows with 2,048 envs show what the same network does with the GPU filled." if gpu else
                " The socket-shared layers multiply "
                "thin matrices (one row per env and socket, a few dozen columns: `[batch x sockets, features] x "
                "[features, hidden]`), whose few FLOPs per byte moved keep the matmul units waiting, and apply `tanh` "
                "(one counted FLOP, many cycles) and its gradient to every socket's hidden units; the MLP's "
                "`[batch, obs] x [obs, 256]` products are the dense work the peak is measured on. The per-socket "
                "layers that read the global embedding (or the park summary) beside a socket's own vector split their "
                "kernel: the embedding's or summary's product is made once per env instead of once per socket, with "
                "the same parameters. That removed FLOPs, so the share of the peak counts fewer FLOPs per second while "
                "the env steps per second rose."),
            "",
        ]
    return lines


def stages_markdown(st: Mapping[str, Any] | None) -> list[str]:
    """The per-stage profile of the step (``bench.step_stages``) as a short table."""
    if not st:
        return []
    lines = ["### Where the step's time goes", ""]
    if "error" in st:
        return lines + [f"FAILED: {st['error']}", ""]
    lines += [
        f"{st['scenario']}, {st['num_envs']:,} envs, actions `{st['mode']}`, {st['steps']} vmapped steps under "
        "`jax.profiler.trace` (load " + str(st["load_avg"]) + "). Each operation the XLA CPU runtime runs (a "
        "fusion, a copy, a loop) is attributed to the `jax.named_scope` of the step stage its output comes from "
        "(`oe3jax.benchmarks.throughput.step_stages`). Operations of the two cores can overlap: their sum, "
        f"{st['thunk_us_per_step']:,.0f} us per vmapped step, is beside a wall-clock time of "
        f"{st['wall_us_per_step']:,.0f} us ({st['env_steps_per_s_traced']:,.0f} env steps/s while traced).", "",
        "| stage | what | us per vmapped step | share |", "|---|---|---:|---:|",
    ]
    for r in st["stages"]:
        lines.append(f"| {r['stage']} | {r['what']} | {r['us_per_step']:,.1f} | {100 * r['share']:.1f} % |")
    if st.get("top_thunks"):
        lines += ["", "Most expensive operations: " + ", ".join(
            f"`{t['name']}` ({t['stage']}, {t['us_per_step']:,.0f} us)" for t in st["top_thunks"]) + "."]
    return lines + [""]


def to_markdown(doc: Mapping[str, Any]) -> str:
    m = doc["machine"]
    v = m["versions"]
    gpu = m["jax_backend"] == "gpu"
    lines = [
        "# oe3jax benchmark" + (f" on {m.get('jax_device_kind', 'a GPU')}" if gpu else ""), "",
        f"Command: `{doc['command']}`  ",
        f"Date (UTC): {m['date_utc']}; total {doc['wall_s']:.0f} s{' (QUICK sizes: not representative)' if doc['quick'] else ''}.  ",
        f"Machine: {m['cpu_model']}, {m['cpu_usable']} usable cores, {m['memory_gib']} GiB, {m['os']}; "
        f"JAX backend `{m['jax_backend']}` ({', '.join(m['jax_devices'])}).  ",
        f"Versions: python {m['python']}, " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".", "",
        "All rates are medians over the timed repeats after compilation and one warm-up call "
        "(min-max in parentheses). " + (
            "The load averages (1, 5, 15 min) below are the host CPU's; the GPU ran nothing else. "
            "JAX's preallocation of GPU memory was off (the script's default), so each program allocated "
            "what it used." if gpu else
            "The machine is shared: the load averages (1, 5, 15 min) at the start "
            "and end of each section are in the JSON and below; a load above the core count means other "
            "processes took part of the CPU during the measurement."), "",
    ]
    sections = doc["sections"]

    env = sections.get("env")
    if env is not None:
        lines += ["## Environment stepping", ""]
        if "error" in env:
            lines += [f"FAILED: {env['error']}", ""]
        else:
            for mode, text in env.get("modes", {}).items():
                lines.append(f"- **{mode}**: {text}.")
            lines += ["- Each call is one `jax.jit` of a `lax.scan` over steps of `env.step_batch` (`jax.vmap(env.step)` "
                      "bit for bit, with the auto-reset's next episodes built only on steps where one ends; "
                      "one PRNG key per env per step split inside the scan).",
                      "- The reference is the NumPy `ReferenceEnv` stepped in a Python loop with pre-sampled "
                      "random actions.", ""]
            for scenario, s in env["scenarios"].items():
                modes = sorted({r["mode"] for r in s["vmapped"]}, key=list(bench.ACTION_MODES).index)
                lines += [f"### {scenario} (obs {s['obs_dim']}, actions {s['action_dim']}); "
                          f"load {s['load_avg_start']} -> {s['load_avg_end']}", ""]
                head = "| envs | " + " | ".join(f"{md}: env steps/s" for md in modes) + " | " + \
                       " | ".join(f"{md}: compile s" for md in modes) + " |"
                lines += [head, "|" + "---|" * (1 + 2 * len(modes))]
                for n in sorted({r["num_envs"] for r in s["vmapped"]}):
                    rows = {r["mode"]: r for r in s["vmapped"] if r["num_envs"] == n}
                    lines.append(f"| {n:,} | " + " | ".join(_rate(rows[md]["env_steps_per_s"]) if md in rows else ""
                                                            for md in modes)
                                 + " | " + " | ".join(f"{rows[md]['compile_s']:.1f}" if md in rows else "" for md in modes)
                                 + " |")
                ref = s["reference"]
                lines += ["", f"NumPy reference loop: {ref['env_steps_per_s']:,.0f} env steps/s "
                          f"({ref['steps']:,} steps in {ref['seconds']:.2f} s).", ""]
                lines += ["| actions | best envs | env steps/s | x reference |", "|---|---|---|---|"]
                for md, b in s["best"].items():
                    lines.append(f"| {md} | {b['num_envs']:,} | {b['env_steps_per_s']:,.0f} | {b['ratio_to_reference']:,.0f}x |")
                lines.append("")
                if scenario == TARGETS["scenario"] and not gpu:  # the targets are the 2-core CPU's
                    mode = TARGETS["mode"] if TARGETS["mode"] in s["best"] else max(
                        s["best"], key=lambda md: s["best"][md]["env_steps_per_s"])
                    best = s["best"][mode]["env_steps_per_s"]
                    ratio = s["best"][mode]["ratio_to_reference"]
                    ok = lambda x, t: "met" if x >= t else "NOT met"  # noqa: E731
                    lines += [f"Targets for {scenario} (actions {mode}, best batch size "
                              f"{s['best'][mode]['num_envs']:,}): >= {TARGETS['env_steps_per_s']:,} env steps/s: "
                              f"reached {best:,.0f} ({ok(best, TARGETS['env_steps_per_s'])}, "
                              f"{100 * best / TARGETS['env_steps_per_s']:.1f} % of it); >= "
                              f"{TARGETS['ratio_to_reference']:,}x the reference loop: reached {ratio:,.0f}x "
                              f"({ok(ratio, TARGETS['ratio_to_reference'])}).", ""]
            lines += stages_markdown(env.get("stages"))

    mm = sections.get("matmul")
    if mm is not None:
        lines += ["## Dense matmul (the utilisation yardstick)", ""]
        if "error" in mm:
            lines += [f"FAILED: {mm['error']}", ""]
        else:
            lines += ["| size | GFLOP/s |", "|---|---|"]
            for r in mm["runs"]:
                f = r["flops_per_s"]
                lines.append(f"| {r['size']}x{r['size']} {r.get('dtype', 'float32')} | {f['median'] / 1e9:,.1f} "
                             f"({f['min'] / 1e9:,.1f}-{f['max'] / 1e9:,.1f}) |")
            peaks = mm.get("peaks", {"float32": mm["peak_flops_per_s"]})
            lines += ["", "Peak used below (each training row against the peak of its precision): " + ", ".join(
                f"{dt} {p / 1e9:,.1f} GFLOP/s" for dt, p in peaks.items())
                + f" (load {mm['load_avg_start']} -> {mm['load_avg_end']}).", ""]

    tr = sections.get("train")
    if tr is not None:
        lines += ["## Training throughput (one seed, default configs)", ""]
        min_repeat = plans().get(doc.get("plan", "cpu"), FULL)["train"].get("min_repeat_s", 0.0)
        if "error" in tr:
            lines += [f"FAILED: {tr['error']}", ""]
        else:
            lines += [
                "FLOPs are counted from the compiled chunk's optimised HLO with every loop body multiplied by its "
                "trip count (`dot`: 2 x output x contracted size; elementwise: 1 per element). XLA's own "
                "`cost_analysis()` counts each loop body once and is kept in the JSON for reference. The timed chunk "
                "is capped at about 1,024 env steps (at least one update); the runner's chunk (one checkpoint "
                "interval) runs the same body more times." + (
                    f" Each timed repeat runs the chunk as often as it takes to last {min_repeat:g} s or more."
                    if min_repeat else ""), "",
                "| algo | config | precision | compile s | env steps/s | grad steps/s | GFLOP/s | of matmul | "
                "FLOPs/env step | state |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for algo, r in tr["algos"].items():
                if r.get("skipped"):
                    lines.append(f"| {algo} | skipped: {r['error']} | | | | | | | | |")
                    continue
                gs = _rate(r["gradient_steps_per_s"]) if "gradient_steps_per_s" in r else "-"
                frac = _pct(r.get("flops_fraction_of_matmul"))
                state = _mib(r["train_state_bytes"])
                if "replay_buffer_bytes" in r:
                    state += f" (buffer {_mib(r['replay_buffer_bytes'])})"
                finite = "" if r.get("metrics_finite", True) else " (NON-FINITE metrics)"
                lines.append(f"| {algo} | {r['config']} | {r['precision']}{finite} | {r['compile_s']:.1f} | "
                             f"{_rate(r['env_steps_per_s'])} | {gs} | "
                             f"{r['flops_per_s'] / 1e9:,.2f} | {frac} | {_si(r['flops_per_env_step'])} | {state} |")
            lines += ["", f"Load {tr['load_avg_start']} -> {tr['load_avg_end']}.", ""]
            plan = plans().get(doc.get("plan", "cpu"), FULL)
            lines += variants_markdown(tr["algos"], plan)
            lines += network_cost_markdown(tr["algos"], plan, gpu)
            said = set()
            for algo, r in tr["algos"].items():
                if "replay_buffer_line" in r and r["replay_buffer_line"] not in said:
                    said.add(r["replay_buffer_line"])
                    lines += [f"{algo} replay buffer: {r['replay_buffer_line']}", ""]

    ck = sections.get("checkpoint")
    if ck is not None:
        lines += ["## Checkpoints", ""]
        if "error" in ck:
            lines += [f"FAILED: {ck['error']}", ""]
        else:
            lines += [
                "Sync: `save()` blocks until written. Async: `save()` returns after copying to host memory; the "
                "time lost is (save + one training chunk + wait) minus a chunk alone, so it includes the slowdown "
                "of training by the background write on the shared cores.", "",
                "| algo | on disk | sync: lost per save | async: lost per save | async save() call | background write | chunk |",
                "|---|---|---|---|---|---|---|",
            ]
            for algo, r in ck["algos"].items():
                if r.get("skipped"):
                    lines.append(f"| {algo} | skipped: {r['error']} | | | | | |")
                    continue
                lost = r["lost_per_save_s"]
                blocking = sorted(r["async_save_call_s"])[len(r["async_save_call_s"]) // 2]
                lines.append(f"| {algo} | {_mib(r['checkpoint_bytes_on_disk'])} | {lost['sync']:.3f} s | "
                             f"{lost['async']:.3f} s | {blocking:.3f} s | {r['async_write_s']:.3f} s | "
                             f"{r['chunk_alone_s']:.3f} s |")
            for algo, r in ck["algos"].items():
                full = r.get("full_buffer")
                if full:
                    lines += ["", f"{algo}: the replay buffer was {100 * full['buffer_fill_measured']:.1f} % full in the "
                              f"row above (empty slots are zeros and compress). With every slot filled (the filled "
                              f"transitions repeated): {_mib(full['checkpoint_bytes_on_disk'])} on disk, synchronous "
                              f"save {full['sync_save_s']:.2f} s."]
            lines += ["", f"Load {ck['load_avg_start']} -> {ck['load_avg_end']}.", ""]
    if doc.get("peers"):
        lines.append(peers_markdown(doc["peers"]))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Peers (--peers): other simulators and RL libraries measured side by side
# --------------------------------------------------------------------------------------------

PEER_SECTIONS = ("env", "train", "quality")
PEER_PLAN = {
    "full": {"env_s": 5.0, "peer_env_s": 10.0, "train_s": 60.0, "quality_cap_s": 600.0, "eval_every_s": 20.0,
             "scan_envs": (1, 1024, 4096), "vector_envs": (1, 8, 64, 1024),
             "ours_steps": {"ppo": 204_800, "a2c": 409_600, "sac": 10_000}, "ours_quality_steps": None,
             "job_timeout_s": 1500},
    "quick": {"env_s": 0.5, "peer_env_s": 1.0, "train_s": 5.0, "quality_cap_s": 20.0, "eval_every_s": 5.0,
              "scan_envs": (1,), "vector_envs": (2,),
              "ours_steps": {"ppo": 2048, "a2c": 2048, "sac": 1100}, "ours_quality_steps": 8192,
              "job_timeout_s": 600},
}


def peer_jobs(sections: list[str], plan: Mapping[str, Any], args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """``(section, job name, keyword arguments)`` of every measurement asked for, in order."""
    jobs: list[tuple[str, str, dict]] = []
    if "env" in sections:
        jobs += [("env", f"jax-scan-{n}", {"num_envs": n}) for n in plan["scan_envs"]]
        jobs += [("env", f"vector-{n}", {"num_envs": n, "seconds": plan["env_s"]}) for n in plan["vector_envs"]]
        jobs += [("env", f"sb3-vec-env-{peers.SB3_VEC_ENVS}", {"num_envs": peers.SB3_VEC_ENVS, "seconds": plan["env_s"]}),
                 ("env", "numpy-wrapper", {"seconds": plan["env_s"]}),
                 ("env", "ev2gym", {"seconds": plan["peer_env_s"], "python": args.ev2gym_python}),
                 ("env", "citylearn", {"seconds": plan["peer_env_s"], "python": args.citylearn_python,
                                       "schema": args.citylearn_schema})]
    if "train" in sections:
        for algo in ALGOS:
            jobs += [("train", f"sb3-{algo}-{kind}", {"algo": algo, "env_kind": kind, "seconds": plan["train_s"]})
                     for kind in ("wrapper", "vector")]
            jobs.append(("train", f"ours-{algo}", {"algo": algo, "total_steps": plan["ours_steps"][algo]}))
    if "quality" in sections:
        jobs += [("quality", "ours-ppo", {"eval_every_s": plan["eval_every_s"], "total_steps": plan["ours_quality_steps"]}),
                 ("quality", "sb3-ppo-vector", {"cap_s": plan["quality_cap_s"], "eval_every_s": plan["eval_every_s"]})]
    return jobs


def run_peer_job(section: str, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """One measurement, in this process."""
    kw = dict(kwargs)
    if section == "env":
        if name.startswith("jax-scan"):
            return peers.env_jax_scan(kw["num_envs"])
        if name.startswith("vector"):
            return peers.env_vector(kw["num_envs"], kw["seconds"])
        if name.startswith("sb3-vec-env"):
            return peers.env_vector(kw["num_envs"], kw["seconds"], sb3=True)
        if name == "numpy-wrapper":
            return peers.env_numpy_wrapper(kw["seconds"])
        if name == "ev2gym":
            return peers.env_ev2gym(kw["seconds"], kw["python"])
        if name == "citylearn":
            return peers.env_citylearn(kw["schema"], kw["seconds"], kw["python"])
    if section == "train":
        if name.startswith("sb3-"):
            return peers.sb3_train_rate(kw["algo"], kw["env_kind"], kw["seconds"])
        return peers.ours_train_rate(kw["algo"], kw["total_steps"])
    if section == "quality":
        if name == "ours-ppo":
            return peers.ours_time_to_quality(kw["eval_every_s"], total_steps=kw["total_steps"])
        return peers.sb3_time_to_quality("ppo", "vector", kw["cap_s"], kw["eval_every_s"])
    raise ValueError(f"peer job: unknown {section}/{name}")


def _peer_job_in_child(section: str, name: str, kwargs: Mapping[str, Any], timeout: float,
                       log: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="oe3jax-peers-") as tmp:
        result = Path(tmp) / "result.json"
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps({"section": section, "name": name, "kwargs": kwargs}), encoding="utf-8")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--peers-job", str(spec), "--result", str(result)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"skipped": True, "error": f"did not finish within {timeout:.0f} s"}
        if result.is_file():
            return json.loads(result.read_text(encoding="utf-8"))
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return {"skipped": True, "error": tail[-1] if tail else f"exit status {proc.returncode}"}


def run_peers(args: argparse.Namespace, log: Callable[[str], None]) -> int:
    sections = [s.strip() for s in (args.peers or "").split(",") if s.strip()]
    if args.peers == "all":
        sections = list(PEER_SECTIONS)
    unknown = [s for s in sections if s not in PEER_SECTIONS]
    if unknown or not sections:
        print(f"--peers: unknown section {unknown[0] if unknown else '(empty)'!r}; accepted: "
              f"{', '.join(PEER_SECTIONS)} (comma-separated), or none for all", file=sys.stderr)
        return 2
    try:
        peers.require_peers()
    except ImportError as exc:
        print(f"--peers: {exc}", file=sys.stderr)
        return 2
    plan = PEER_PLAN["quick" if args.quick else "full"]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    argv_text = " ".join(shlex.quote(a) for a in sys.argv[1:])
    block: dict[str, Any] = dict(_read_doc(out_dir).get("peers") or {})
    block.setdefault("sections", {})
    block["commands"] = {**block.get("commands", {}), **{s: f"python scripts/benchmark.py {argv_text}" for s in sections}}
    block.update({"machine": bench.machine_info(), "peer_versions": peers.versions(),
                  "torch_threads": peers.TORCH_THREADS, "quick": bool(args.quick), "plan": plan,
                  "scenarios": peers.PEER_SCENARIOS})
    for section, name, kwargs in peer_jobs(sections, plan, args):
        rows = block["sections"].setdefault(section, {})
        if args.resume and name in rows and not rows[name].get("skipped"):
            log(f"[peers {section}] {name}: kept from the earlier run")
            continue
        if name == "citylearn" and not args.citylearn_python and importlib.util.find_spec("citylearn") is None:
            rows[name] = {"skipped": True, "error": "CityLearn is not installed here; it pins gymnasium<=0.28.1 and "
                          "numpy<2, so it cannot share this environment: install citylearn==3.0.2 in its own venv "
                          "and pass --citylearn-python PATH"}
        elif name == "ev2gym" and not args.ev2gym_python and importlib.util.find_spec("ev2gym") is None:
            rows[name] = {"skipped": True, "error": "EV2Gym is not installed (pip install 'oe3jax[peers]')"}
        else:
            log(f"[peers {section}] {name} ...")
            load = bench.load_average()
            rows[name] = {**_peer_job_in_child(section, name, kwargs, plan["job_timeout_s"], log),
                          "load_avg_start": load, "load_avg_end": bench.load_average()}
        log(f"[peers {section}] {name}: {_peer_line(rows[name])}")
        _write_peers(out_dir, block)
    _write_peers(out_dir, block)
    log(f"wrote the peers section of {out_dir / 'benchmark.json'} and {out_dir / 'benchmark.md'}")
    return 0


def _peer_line(row: Mapping[str, Any]) -> str:
    if row.get("skipped"):
        return f"skipped ({row['error']})"
    if "env_steps_per_s" in row:
        return f"{row['env_steps_per_s']:,.0f} env steps/s, {row['socket_steps_per_s']:,.0f} socket-steps/s"
    return (f"uncontrolled CO2 reached at {row['uncontrolled_reached_s']} s, rule at {row['rule_reached_s']} s "
            f"({len(row['evaluations'])} evaluations)")


def _read_doc(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "benchmark.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_peers(out_dir: Path, block: Mapping[str, Any]) -> None:
    """Read-modify-write: the other sections of benchmark.json stay as they are."""
    doc = _read_doc(out_dir)
    doc["peers"] = block
    (out_dir / "benchmark.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    text = to_markdown(doc) if "machine" in doc and "sections" in doc else "# oe3jax benchmark\n\n" + peers_markdown(block)
    (out_dir / "benchmark.md").write_text(text, encoding="utf-8")


def _by_command(block: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for section, command in block.get("commands", {}).items():
        out.setdefault(command, []).append(section)
    return out


def _t(seconds: float | None, cap: float | None) -> str:
    if seconds is not None:
        return f"{seconds:,.0f} s"
    return f"not reached in {cap:,.0f} s" if cap else "not reached in the run"


def peers_markdown(block: Mapping[str, Any]) -> str:
    m = block.get("machine", {})
    pv = block.get("peer_versions", {})
    sec = block.get("sections", {})
    lines = ["## Peers", "",
             "Commands: " + "; ".join(f"`{c}` ({', '.join(s)})" for c, s in _by_command(block).items()) + ".  ",
             f"Machine: {m.get('cpu_model')}, {m.get('cpu_usable')} usable cores, shared with other work (load "
             "averages per row in the JSON); the ratios measured side by side in one run count, not the absolute "
             f"speeds. torch threads: {block.get('torch_threads')}.  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in {**m.get('versions', {}), **pv}.items() if v) + "."
             + (" QUICK sizes: not representative." if block.get("quick") else ""), ""]
    lines += ["What each environment simulates:", ""]
    for peer, info in block.get("scenarios", {}).items():
        lines.append(f"- **{peer}**: {info['what']} (step {info['step_h'] * 60:.0f} min, {info['sockets']} sockets).")
    lines.append("")

    def rate_table(rows: Mapping[str, Any], title: str, extra: str = "") -> None:
        lines.extend([f"### {title}", "", extra, "",
                      "| measured | envs | env steps/s | socket-steps/s | simulated hours/s | note |",
                      "|---|---:|---:|---:|---:|---|"])
        for key, r in rows.items():
            if r.get("skipped"):
                lines.append(f"| {key} | | | | | skipped: {r['error']} |")
                continue
            note = ", ".join(f"{k} {r[k]}" for k in ("compile_s", "torch_threads", "cycles", "command") if k in r)
            lines.append(f"| {r['name']} | {r['num_envs']:,} | {r['env_steps_per_s']:,.0f} | "
                         f"{r['socket_steps_per_s']:,.0f} | {r['simulated_hours_per_s']:,.0f} | {note} |")
        lines.append("")

    if "env" in sec:
        rate_table(sec["env"], "Environment throughput",
                   "Random actions. Socket-steps/s = env steps/s x sockets; simulated hours/s = env steps/s x step "
                   "length: parks of different sizes and step lengths compare per socket-step, not per env step.")
    if "train" in sec:
        rate_table(sec["train"], "Training throughput",
                   "Stable-Baselines3 with default hyperparameters (`MlpPolicy`), timed over whole collect + update "
                   "cycles; the project's trainer on each algorithm's default run (its own end-to-end rate after "
                   "compilation, checkpoints included).")
        ours = {r.get("algo"): r for r in sec["train"].values() if r.get("kind") == "ours"}
        ratios = []
        for r in sec["train"].values():
            if r.get("kind", "").startswith("sb3") and r.get("algo") in ours and not ours[r["algo"]].get("skipped"):
                ratios.append(f"{r['name']}: ours is {ours[r['algo']]['env_steps_per_s'] / r['env_steps_per_s']:,.1f}x")
        if ratios:
            lines += ["Ratio of the project's trainer to each SB3 run (same algorithm): " + "; ".join(ratios) + ".", ""]
    if "quality" in sec:
        rows = {k: v for k, v in sec["quality"].items()}
        first = next((r for r in rows.values() if not r.get("skipped")), None)
        lines += ["### Time to quality", ""]
        if first:
            lines += [f"Each run's deterministic policy is evaluated over the year ({first['hours']:,} h from 1 January, "
                      f"the arrivals of `jax.random.key(0)`) every {first.get('eval_every_s', 0):.0f} s of training "
                      "(the clock stops while evaluating; compilation and checkpoints count). Reached: the policy's "
                      f"CO2 at or below the uncontrolled park's ({first['uncontrolled_co2_t']:,.1f} t) or the evening "
                      f"rule's ({first['rule_co2_t']:,.1f} t), with at least 98 % of the uncontrolled EV energy "
                      f"({first['uncontrolled_ev_mwh']:,.1f} MWh).", "",
                      "| run | uncontrolled CO2 reached | rule reached | trained | last CO2 (t) | last EV energy |",
                      "|---|---:|---:|---:|---:|---:|"]
        for key, r in rows.items():
            if r.get("skipped"):
                lines.append(f"| {key} | skipped: {r['error']} | | | | |")
                continue
            last = r["evaluations"][-1] if r["evaluations"] else {}
            lines.append(f"| {r['name']} | {_t(r['uncontrolled_reached_s'], r['cap_s'])} | "
                         f"{_t(r['rule_reached_s'], r['cap_s'])} | {r['train_s'] or 0:,.0f} s | "
                         f"{last.get('co2_t', float('nan')):,.1f} | {100 * last.get('ev_frac_of_uncontrolled', float('nan')):.1f} % |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """A bad option is one line on stderr (exit status 2), not the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = message.removeprefix("argument ")
        self.exit(2, f"{message}; see python scripts/benchmark.py --help\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks that every section runs")
    p.add_argument("--plan", choices=("auto", "cpu", "gpu"), default="auto",
                   help="sizes and rows: the CPU's or the GPU's plan (default: by JAX's default backend)")
    p.add_argument("--sections", default=None,
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all; env,train on a GPU)")
    p.add_argument("--out", default="results",
                   help="directory for benchmark.json and benchmark.md (scaling.* with --scaling; default: %(default)s)")
    p.add_argument("--peers", nargs="?", const="all", metavar="SECTIONS",
                   help="measure peers side by side instead (needs the extra 'peers'): env, train, quality, "
                   "comma-separated (default: all); written under \"peers\" in benchmark.json, the rest kept")
    p.add_argument("--resume", action="store_true", help="--peers: keep the measurements already in benchmark.json")
    p.add_argument("--citylearn-python", metavar="PATH",
                   help="--peers: a Python with citylearn==3.0.2 installed (it cannot share this environment)")
    p.add_argument("--citylearn-schema", default="citylearn_challenge_2022_phase_all_plus_evs", metavar="NAME_OR_PATH",
                   help="--peers: CityLearn dataset name or schema.json path (default: %(default)s)")
    p.add_argument("--ev2gym-python", metavar="PATH", help="--peers: a Python with ev2gym (default: this one)")
    p.add_argument("--scaling", action="store_true",
                   help="env stepping and PPO training on 1, 2 and 4 devices (forced on a CPU): scaling.{json,md}")
    p.add_argument("--scaling-worker", type=int, help=argparse.SUPPRESS)  # internal: one device count
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one algorithm in a child process
    p.add_argument("--peers-job", help=argparse.SUPPRESS)  # internal: one peers measurement in a child process
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--peak", type=float, help=argparse.SUPPRESS)
    return p


_PEERS_ONLY = ("resume", "citylearn_python", "citylearn_schema", "ev2gym_python")


def check_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """One line naming the first option that does not apply or cannot work, or None.

    Checked before anything is measured: an option that would be ignored is refused, and
    ``--out`` must be a directory that can be created and written (the results of a long run
    would otherwise be lost at its end).
    """
    from oe3jax.schema import ConfigError
    from oe3jax.training.resources import check_writable_dir

    flag = lambda dest: "--" + dest.replace("_", "-")  # noqa: E731
    if args.scaling and args.peers is not None:
        return "--scaling: not with --peers; run them one after the other"
    if args.peers is None:
        for dest in _PEERS_ONLY:
            if getattr(args, dest) != parser.get_default(dest):
                return f"{flag(dest)}: only with --peers"
    else:
        if args.sections is not None:
            return "--sections: not with --peers (its sections follow it: --peers env,train,quality)"
        if args.plan != "auto":
            return "--plan: not with --peers"
        for dest in ("citylearn_python", "ev2gym_python"):
            path = getattr(args, dest)
            if path is not None and not (os.path.isfile(path) and os.access(path, os.X_OK)):
                return f"{flag(dest)}: {path} is not an executable file"
    for option, value, accepted in (("--sections", args.sections, ", ".join(SECTIONS)),
                                    ("--peers", args.peers, ", ".join(PEER_SECTIONS))):
        if value is not None and not value.replace(",", " ").split():
            tail = ", or none for all" if option == "--peers" else ""
            return f"{option}: expected one or more of {accepted} (comma-separated){tail}, got {value!r}"
    if args.quick and args.plan != "auto":
        return "--plan: not with --quick (it has its own tiny sizes)"
    if args.scaling:
        if args.sections is not None:
            return "--sections: not with --scaling"
        if args.plan != "auto":
            return "--plan: not with --scaling"
    try:
        check_writable_dir(args.out, "--out")
    except ConfigError as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    internal = args.peers_job or args.worker or args.scaling_worker is not None
    problem = None if internal else check_options(args, parser)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.peers_job:
        job = json.loads(Path(args.peers_job).read_text(encoding="utf-8"))
        row = run_peer_job(job["section"], job["name"], job["kwargs"])
        Path(args.result).write_text(json.dumps(row, default=str), encoding="utf-8")
        return 0
    if args.peers is not None:
        return run_peers(args, lambda text: print(text, flush=True))
    if args.scaling_worker is not None:
        row = scaling.measure(args.scaling_worker, SCALING_QUICK if args.quick else SCALING)
        Path(args.result).write_text(json.dumps(row, default=str), encoding="utf-8")
        return 0
    if args.scaling:
        return run_scaling(args, lambda text: print(text, flush=True))
    plan_key = plan_name(args.plan, args.quick)
    plan = plans()[plan_key]
    chosen = args.sections if args.sections is not None else ",".join(plan["default_sections"])
    sections = [s.strip() for s in chosen.split(",") if s.strip()]
    if args.worker:
        return run_worker(args.worker, sections, plan, args.peak, Path(args.result))
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        print(f"--sections: unknown section {unknown[0] if unknown else '(empty)'!r}; accepted: {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(text, flush=True)

    argv_text = sys.argv[1:] if argv is None else list(argv)
    doc: dict[str, Any] = {
        "command": "python scripts/benchmark.py" + ("" if not argv_text else " " + shlex.join(argv_text)),
        "quick": bool(args.quick), "plan": plan_key, "machine": bench.machine_info(), "targets": TARGETS,
        "load_avg_start": bench.load_average(), "sections": {},
    }
    t_start = time.perf_counter()
    status = 0

    previous = _read_doc(out_dir).get("peers")
    if previous:  # the peers section is written by --peers; kept as it is
        doc["peers"] = previous

    def write() -> None:
        """Write what is measured so far (the files are complete after every section)."""
        doc["wall_s"] = time.perf_counter() - t_start
        doc["load_avg_end"] = bench.load_average()
        (out_dir / "benchmark.json").write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
        (out_dir / "benchmark.md").write_text(to_markdown(doc), encoding="utf-8")

    if "env" in sections:
        try:
            doc["sections"]["env"] = run_env(plan["env"], log)
        except Exception as exc:
            doc["sections"]["env"] = _error(exc)
            log(f"[env] FAILED: {doc['sections']['env']['error']}")
            status = 1
        write()
    peaks = None
    if "train" in sections:
        try:
            doc["sections"]["matmul"] = run_matmul(plan["matmul"], log)
            peaks = doc["sections"]["matmul"]["peaks"]
        except Exception as exc:
            doc["sections"]["matmul"] = _error(exc)
            log(f"[matmul] FAILED: {doc['sections']['matmul']['error']}")
        write()
    wanted = [s for s in ("train", "checkpoint") if s in sections]
    if wanted:
        try:
            doc["sections"].update(run_algos(plan_key, wanted, peaks, log,
                                             progress=lambda part: (doc["sections"].update(part), write())))
        except Exception as exc:
            for section in wanted:
                doc["sections"][section] = _error(exc)
            log(f"[{','.join(wanted)}] FAILED: {_error(exc)['error']}")
    write()
    log(f"wrote {out_dir / 'benchmark.json'} and {out_dir / 'benchmark.md'} ({doc['wall_s']:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
