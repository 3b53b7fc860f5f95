"""The configuration of a training run: its keys, where defaults come from, and resolution.

A run's configuration is a nested dict checked against a schema (:mod:`oe3jax.schema`): the
top-level keys below, ``env:`` (the environment's options), ``scenario_overrides:`` (fields of the
scenario preset), ``network:`` and the algorithm's own section (``ppo:``, ``a2c:``, ``sac:``).
Resolution order, each layer over the one before::

    spec defaults < the algorithm's run defaults (oe3jax.training.defaults)
                  < --config FILE < --set key=value < flags (--seeds, --seed, --total-steps, --scenario)

Every key is used or rejected with a one-line :class:`ConfigError` naming it; nothing is capped.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from oe3jax import learning
from oe3jax.learning.precision import PRECISIONS
from oe3jax.schema import (
    SEED_MAX, TOTAL_STEPS_MAX, ConfigError, Field, Schema, load_yaml, parse_assignment, resolve, set_path,
)
from oe3jax.training import resources
from oe3jax.training.devices import PARALLEL_SPEC

DEFAULT_RUNS_DIR = Path("results") / "runs"


class MappingField(Field):
    """A section whose keys are checked by the code that uses them (the scenario's fields)."""

    def accepted(self) -> str:
        return "a mapping of scenario fields to values"

    def check(self, key: str, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
        return copy.deepcopy(dict(value))


class SweepField(Field):
    """``sweep:``: hyperparameter keys (``ppo.lr``, or nested ``ppo: {lr: ...}``) to lists of
    values; each key and value is checked against the algorithm by :func:`check_sweep`."""

    def accepted(self) -> str:
        return "a mapping of hyperparameter keys (e.g. ppo.lr) to non-empty lists of numbers"

    def check(self, key: str, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
        out: dict[str, list[Any]] = {}
        for name, values in value.items():
            if isinstance(values, Mapping):  # nested form: ppo: {lr: [...]}
                for sub, inner in self.check(f"{key}.{name}", values).items():
                    out[f"{name}.{sub}"] = inner
                continue
            if not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"{key}.{name}: expected a non-empty list of values, got {values!r}")
            out[str(name)] = list(values)
        return out


#: Scenario overrides that name a profile file.
PROFILE_OVERRIDES = ("pv_profile", "mall_profile")

TOP_SPEC: dict[str, Any] = {
    "algo": Field("ppo", str, help="training algorithm"),
    "scenario": Field("iquitos-128", str, help="scenario preset name"),
    "scenario_overrides": MappingField(
        {}, dict, help="scenario fields changed from the preset, e.g. capacity_kwh: 3000 or "
        "pv_profile: {path: pv.csv, column: kW}"),
    "seed": Field(0, int, low=0, high=SEED_MAX, help="seed of the first run; run i uses seed + i"),
    "seeds": Field(1, int, low=1, help="independent runs vmapped in one program"),
    "total_steps": Field(1_000_000, int, low=1, high=TOTAL_STEPS_MAX,
                         help="env steps per seed, all environments together"),
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
    "compile": {
        "cache": Field("auto", str, optional=True,
                       help="persistent cache of compiled programs, read by later runs with the same programs: "
                       "'auto' (JAX_COMPILATION_CACHE_DIR if set, else $XDG_CACHE_HOME/oe3jax/jax or "
                       "~/.cache/oe3jax/jax), a directory, or null (no cache)"),
        "cache_max_gib": Field(2.0, float, low=0.01, high=1_000_000, help="size of the cache beyond which the "
                               "least recently used programs are deleted"),
    },
    "sweep": SweepField({}, dict, help="hyperparameters trained together in one program: key -> values "
                        "(the grid of all keys, every member with every seed)"),
    "parallel": PARALLEL_SPEC,
    "eval": {
        "enabled": Field(True, bool, help="evaluate the trained policy at the end of training"),
        "hours": Field(None, int, low=1, high=8760, optional=True,
                       help="evaluation length in hours from 1 January; null: the whole year"),
        "seed": Field(0, int, low=0, high=SEED_MAX, help="seed of the evaluation's arrivals (the same for every column)"),
        "optimal": Field(True, bool, help="also the perfect-foresight optima of what the reward bills (~10 s a year each)"),
    },
}

# Sections that may change between a checkpoint and its resume; every other key must match.
RESUMABLE_KEYS = ("total_steps", "checkpoint", "log", "eval", "parallel", "compile")

# Scenario fields that are set elsewhere in the config (and so are not overrides).
_NOT_OVERRIDES = {"name": "scenario", "reward": "env.reward"}


@dataclasses.dataclass(frozen=True)
class Components:
    """What the training layer trains and on what: the project's own parts by default; tests plug
    in small ones. ``get_algo(name)`` returns an object following :class:`oe3jax.learning.Algorithm`."""

    get_algo: Callable[[str], learning.Algorithm]
    algo_names: tuple[str, ...]
    pipeline: tuple[str, ...]                       # the order of ``--algo all``
    make_env: Callable[..., tuple[Any, Any]]        # make_env(scenario, **env, **scenario_overrides)
    env_spec: Schema
    network_spec: Schema
    evaluate: Callable[..., Mapping[str, Any]] | None
    run_defaults: Callable[[str], Mapping[str, Any]] = lambda name: {}


def default_components() -> Components:
    """The project's environment, networks, algorithms and evaluation."""
    from oe3jax.evaluation.compare import evaluate_with_baselines
    from oe3jax.learning.networks import NETWORK_SPEC
    from oe3jax.simulation.env import ENV_SPEC, make_env
    from oe3jax.training.defaults import run_defaults

    return Components(
        get_algo=learning.get,
        algo_names=learning.ALGORITHMS,
        pipeline=learning.ALGORITHMS,
        make_env=make_env,
        env_spec=ENV_SPEC,
        network_spec=NETWORK_SPEC,
        evaluate=evaluate_with_baselines,
        run_defaults=run_defaults,
    )


def load_algo(comps: Components, name: str) -> learning.Algorithm:
    """The algorithm, with a one-line :class:`ConfigError` if it cannot be had."""
    try:
        return comps.get_algo(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def build_schema(comps: Components, sections: Sequence[str]) -> dict[str, Any]:
    """The schema of a run: top-level keys, ``env``, ``network`` and the algorithm sections."""
    schema = copy.deepcopy(TOP_SPEC)
    schema["algo"] = dataclasses.replace(schema["algo"], choices=tuple(comps.algo_names),
                                         default="ppo" if "ppo" in comps.algo_names else comps.algo_names[0])
    schema["env"] = dict(comps.env_spec)
    schema["network"] = dict(comps.network_spec)
    for name in sections:
        schema[name] = dict(load_algo(comps, name).CONFIG_SPEC)
    return schema


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, section by section."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def user_config(
    config_file: str | None = None, sets: Sequence[str] = (), sweeps: Sequence[str] = ()
) -> dict[str, Any]:
    """What the user asked for: ``--config FILE`` with every ``--set key=value`` and every
    ``--sweep key=v1,v2,...`` over it (unchecked)."""
    user: dict[str, Any] = load_yaml(config_file) if config_file is not None else {}
    for text in sets:
        key, value = parse_assignment(text)
        set_path(user, key, value)
    for text in sweeps:
        key, _, raw = text.partition("=")
        if not key.strip() or not raw.strip():
            raise ConfigError(f"--sweep {text!r}: expected key=v1,v2,..., for example ppo.lr=1e-4,3e-4,1e-3")
        values = [parse_assignment(f"{key}={v}")[1] for v in raw.split(",")]
        sweep = user.get("sweep")
        user["sweep"] = {**(sweep if isinstance(sweep, Mapping) else {}), key.strip(): values}
    return user


def check_sweep(cfg: dict[str, Any], schema: Mapping[str, Any], algo: learning.Algorithm, pipeline: bool) -> None:
    """Check every swept key (one the algorithm accepts as a traced value, ``SWEEPABLE``) and
    value (as the key itself is checked); the values become floats, in place."""
    if not cfg["sweep"]:
        return
    if pipeline:
        raise ConfigError("sweep: give it with one --algo, not all")
    name = cfg["algo"]
    allowed = [f"{name}.{k}" for k in getattr(algo, "SWEEPABLE", ())]
    for key, values in cfg["sweep"].items():
        if key not in allowed:
            raise ConfigError(f"sweep.{key}: not a hyperparameter that {name} sweeps; accepted: "
                              f"{', '.join(allowed) or 'none'}")
        section, field = key.split(".", 1)
        cfg["sweep"][key] = [float(schema[section][field].check(f"sweep.{key}", v)) for v in values]


def requested_algo(algo_flag: str | None, user: Mapping[str, Any], comps: Components) -> str:
    """The algorithm asked for: ``--algo`` > ``algo`` in --config / --set > ppo."""
    algo = algo_flag if algo_flag is not None else user.get("algo")
    if algo is None:
        algo = "ppo" if "ppo" in comps.algo_names else comps.algo_names[0]
    accepted = (*comps.algo_names, "all")
    if algo not in accepted:
        raise ConfigError(f"algo: expected one of {', '.join(repr(a) for a in accepted)}, got {algo!r}")
    return algo


def resolve_config(
    algo: str,
    comps: Components,
    user: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    sets: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    sections: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The fully resolved configuration of one agent (raises :class:`ConfigError`).

    ``user`` is :func:`user_config`'s result (or it is read from ``config_file`` and ``sets``).
    ``sections`` are the algorithm sections accepted (default: only ``algo``'s own); with ``--algo
    all`` every agent accepts every algorithm's section, each agent using its own.
    """
    sections = tuple(sections) if sections is not None else (algo,)
    if user is None:
        user = user_config(config_file, sets)
    layered = merge(comps.run_defaults(algo), user)
    for key, value in (flags or {}).items():
        if value is not None:
            layered[key] = value
    layered["algo"] = algo
    schema = build_schema(comps, sections)
    cfg = resolve(schema, layered)
    check_sweep(cfg, schema, load_algo(comps, algo), pipeline=len(sections) > 1)
    resources.check_seed_range(cfg)
    for name, where in _NOT_OVERRIDES.items():
        if name in cfg["scenario_overrides"]:
            raise ConfigError(f"scenario_overrides.{name}: not an override; set {where} instead")
    _absolute_profile_paths(cfg["scenario_overrides"])
    if cfg["log"]["tensorboard"]:
        try:
            importlib.import_module("tensorboardX")
        except ImportError:
            raise ConfigError(
                "log.tensorboard: true needs the tensorboardX package (pip install 'oe3jax[tensorboard]')"
            ) from None
    return cfg


def _absolute_profile_paths(overrides: dict[str, Any]) -> None:
    """A profile file given by a relative path is found from the current directory; the resolved
    config records it absolute, so the run's evaluation and resume find the same file from
    anywhere (and a resume from elsewhere that means another file is told the paths differ)."""
    for name in PROFILE_OVERRIDES:
        spec = overrides.get(name)
        if isinstance(spec, Mapping) and isinstance(spec.get("path"), str) and spec["path"]:
            path = Path(spec["path"]).expanduser()
            overrides[name] = {**spec, "path": str(path if path.is_absolute() else Path.cwd() / path)}


def with_new_defaults(saved: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """A saved configuration with every key the schema has gained since given its default.

    A run saved before an option existed ran with what is now that option's default, so filling
    it in keeps the run loadable; keys already present are kept as saved, sections the schema
    does not know (another algorithm's) are left as they are.
    """
    out = copy.deepcopy(dict(saved))
    for key, spec in schema.items():
        if isinstance(spec, Field):
            if key not in out:
                out[key] = copy.deepcopy(spec.default)
        elif isinstance(spec, Mapping) and isinstance(out.get(key, {}), Mapping):
            out[key] = with_new_defaults(out.get(key, {}), spec)
    return out


def make_run_env(cfg: Mapping[str, Any], comps: Components) -> tuple[Any, Any]:
    """The training environment of a resolved config; a bad scenario value is a :class:`ConfigError`."""
    overrides = cfg.get("scenario_overrides", {})
    try:
        return comps.make_env(cfg["scenario"], **cfg["env"], **overrides)
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        # str(KeyError('x')) is "'x'": take the message itself (stripping quotes from any other
        # message would cut the closing quote of a value it ends with)
        text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()
        if any(name in text for name in overrides):
            raise ConfigError(f"scenario_overrides: {text}") from None
        first = text.split()[0] if text.split() else ""
        raise ConfigError(text if first.endswith(":") or first == "scenario" else f"scenario: {text}") from None
