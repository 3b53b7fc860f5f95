"""Typed configuration: every key is declared with its type and range, used, or rejected.

A configuration is a nested dict. Its schema is a nested dict of :class:`Field` (leaves) and dicts
(sections). :func:`resolve` merges user values over the defaults and fails with a one-line
:class:`ConfigError` naming the key and the accepted values for an unknown key, a wrong type or
an out-of-range value. Nothing is capped or overridden silently.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One configuration key: its default, type and accepted values.

    ``kind`` is bool, int, float, str or list. ``low``/``high`` bound numbers (inclusive unless
    ``low_open``/``high_open``); ``choices`` enumerates accepted strings; for lists ``item`` is
    the element kind and ``low``/``high`` bound the elements; ``min_len`` bounds the length.
    ``optional`` admits ``None`` (YAML ``null``).
    """

    default: Any
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    item: type | None = None
    min_len: int = 0
    optional: bool = False
    help: str = ""

    def accepted(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _TYPE_NAMES[self.kind] if self.kind is not list else f"a list of {_TYPE_NAMES[self.item or float].split()[-1]}s"
            if self.low is not None or self.high is not None:
                lo = "-inf" if self.low is None else f"{self.low:g}"
                hi = "inf" if self.high is None else f"{self.high:g}"
                text += f" in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
            if self.kind is list and self.min_len:
                text += f" with at least {self.min_len} item{'s' if self.min_len > 1 else ''}"
        if self.optional:
            text += " or null"
        return text

    def _scalar(self, key: str, value: Any, kind: type) -> Any:
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()
            ):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
            value = int(value)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
            value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
            return value
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
        return value

    def check(self, key: str, value: Any) -> Any:
        """Return the value converted to the field's kind, or raise ConfigError."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{key}: expected {self.accepted()}, got null")
        if self.kind is list:
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {value!r}")
            if len(value) < self.min_len:
                raise ConfigError(f"{key}: expected {self.accepted()}, got {list(value)!r}")
            return [self._scalar(key, v, self.item or float) for v in value]
        return self._scalar(key, value, self.kind)


Schema = Mapping[str, "Field | Schema"]


def defaults(schema: Schema) -> dict[str, Any]:
    """The configuration made of every default of the schema."""
    return {k: (defaults(v) if isinstance(v, Mapping) else copy.deepcopy(v.default)) for k, v in schema.items()}


def resolve(schema: Schema, user: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Merge ``user`` over the schema's defaults, checking every key and value."""
    user = {} if user is None else user
    if not isinstance(user, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {user!r}")
    unknown = sorted(set(user) - set(schema))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key; accepted keys in {where}: {', '.join(sorted(schema))}"
        )
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        name = prefix + key
        if isinstance(spec, Mapping):
            out[key] = resolve(spec, user.get(key), name + ".")
        else:
            out[key] = spec.check(name, user[key]) if key in user else copy.deepcopy(spec.default)
    return out


def set_path(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c = value`` in a nested dict, creating sections as needed (checked later)."""
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (typed)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, for example ppo.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: expected key=value, for example ppo.lr=3e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc.__class__.__name__}") from None
    # YAML reads 3e-4 as a string (YAML 1.1); accept the float spelling users expect.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key, value


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file, with a clear error for a missing or malformed file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of keys, got {type(data).__name__}")
    return _fix_floats(data)


def _fix_floats(node: Any) -> Any:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; read such strings as floats."""
    if isinstance(node, dict):
        return {k: _fix_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_floats(v) for v in node]
    if isinstance(node, str):
        try:
            return float(node) if any(c in node for c in "eE") and not node.isalpha() else node
        except ValueError:
            return node
    return node
