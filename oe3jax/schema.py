"""Typed configuration: every key is declared with its type and range, used, or rejected.

A configuration is a nested dict. Its schema is a nested dict of :class:`Field` (leaves) and dicts
(sections). :func:`resolve` merges user values over the defaults and fails with a one-line
:class:`ConfigError` naming the key and the accepted values for an unknown key, a wrong type or
an out-of-range value. Nothing is capped or overridden silently.

Integer bounds come from the program: counters in the train states and the replay buffer are
int32, so an integer key without an explicit ``high`` accepts at most :data:`INT32_MAX`; seeds
become uint32 PRNG keys, so they accept at most :data:`SEED_MAX`.

Configuration text (:func:`load_yaml`, :func:`parse_assignment`) is read by a strict YAML loader:
UTF-8 only, at most :data:`MAX_CONFIG_BYTES`, string keys, no duplicate keys, no anchors or
aliases (a configuration needs none, and nested aliases expand exponentially when the values are
walked), no nesting deeper than :data:`MAX_DEPTH`. Each refusal is one line naming the file, the
line and the key.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


INT32_MAX = 2**31 - 1
"""Largest value of the int32 counters of a run (env steps, updates, gradient steps, buffer slots);
also the bound of every integer key that declares no ``high`` of its own."""
SEED_MAX = 2**32 - 1
"""Largest seed: run ``i`` of a study uses the uint32 PRNG key of ``seed + i``."""
TOTAL_STEPS_MAX = INT32_MAX
"""Largest ``total_steps`` (env steps per seed): the env-step counters of the train states are int32."""
BUFFER_SIZE_MAX = 2**30
"""Largest replay capacity: the int32 write index reaches ``buffer_size + num_envs - 1`` and
``num_envs <= buffer_size``."""
MAX_CONFIG_BYTES = 1 << 20
"""Largest configuration file read (1 MiB); a configuration is a few kB."""
MAX_DEPTH = 16
"""Deepest nesting of mappings and lists accepted in configuration text (a configuration uses 3)."""


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One configuration key: its default, type and accepted values.

    ``kind`` is bool, int, float, str or list. ``low``/``high`` bound numbers (inclusive unless
    ``low_open``/``high_open``); ``choices`` enumerates accepted strings; for lists ``item`` is
    the element kind and ``low``/``high`` bound the elements; ``min_len`` bounds the length.
    ``optional`` admits ``None`` (YAML ``null``). An integer field (or list of integers) without
    ``high`` accepts at most :data:`INT32_MAX`, and says so in its accepted range.
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
            low, high = self.low, self._high()
            if low is not None or high is not None:
                lo = "-inf" if low is None else self._bound(low)
                hi = "inf" if high is None else self._bound(high)
                text += f" in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
            if self.kind is list and self.min_len:
                text += f" with at least {self.min_len} item{'s' if self.min_len > 1 else ''}"
        if self.optional:
            text += " or null"
        return text

    def _integral(self) -> bool:
        return (self.item if self.kind is list else self.kind) is int

    def _high(self) -> float | None:
        """The upper bound: ``high``, or :data:`INT32_MAX` for an integer without one."""
        if self.high is None and self._integral():
            return INT32_MAX
        return self.high

    def _bound(self, value: float) -> str:
        if self._integral() and float(value).is_integer():
            return str(int(value))
        return f"{value:g}"

    def _scalar(self, key: str, value: Any, kind: type) -> Any:
        given = value
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(value)}")
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()
            ):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(value)}")
            value = int(value)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(value)}")
            value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(value)}")
            if self.choices is not None and value not in self.choices:
                raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(value)}")
            return value
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(given)}")
        high = self._high()
        if high is not None and (value > high or (self.high_open and value == high)):
            raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(given)}")
        return value

    def check(self, key: str, value: Any) -> Any:
        """Return the value converted to the field's kind, or raise ConfigError."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{key}: expected {self.accepted()}, got null")
        if self.kind is list:
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(value)}")
            if len(value) < self.min_len:
                raise ConfigError(f"{key}: expected {self.accepted()}, got {_show(list(value))}")
            return [self._scalar(key, v, self.item or float) for v in value]
        return self._scalar(key, value, self.kind)


Schema = Mapping[str, "Field | Schema"]


def defaults(schema: Schema) -> dict[str, Any]:
    """The configuration made of every default of the schema."""
    return {k: (defaults(v) if isinstance(v, Mapping) else copy.deepcopy(v.default)) for k, v in schema.items()}


def resolve(schema: Schema, user: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Merge ``user`` over the schema's defaults, checking every key and value."""
    user = {} if user is None else user
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(user, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {_show(user)}")
    for key in user:
        if not isinstance(key, str):
            raise ConfigError(
                f"{prefix}{_show(key)}: a key must be a name; accepted keys in {where}: {', '.join(sorted(schema))}"
            )
    unknown = sorted(set(user) - set(schema))
    if unknown:
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
    if not all(parts):
        raise ConfigError(f"--set {dotted}: expected dotted key names such as ppo.lr, got an empty name")
    node = cfg
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (typed), strictly."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, for example ppo.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: expected key=value, for example ppo.lr=3e-4")
    if not all(key.split(".")):
        raise ConfigError(f"--set {text!r}: expected dotted key names such as ppo.lr, got an empty name")
    value = _load_text(raw, f"--set {key}", lines=False) if raw.strip() else None
    # YAML reads 3e-4 as a string (YAML 1.1); accept the float spelling users expect.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key, value


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file; a one-line :class:`ConfigError` for anything that is not one.

    Refused: a missing, unreadable or non-regular path (a directory), a file over
    :data:`MAX_CONFIG_BYTES`, bytes that are not UTF-8 (the offset is named), malformed YAML (the
    line is named), and what the strict loader refuses (duplicate or non-string keys, anchors
    and aliases, deep nesting).
    """
    source = f"--config: {path}"
    if not str(path).strip():
        raise ConfigError("--config: expected the path of a YAML file, got an empty string")
    if os.path.isdir(path):
        raise ConfigError(f"{source} is a directory, not a YAML file")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except PermissionError:
        raise ConfigError(f"{source}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a configuration is a few kB of YAML"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{source} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line})"
        ) from None
    loaded = _load_text(text.removeprefix("\ufeff"), source, lines=True)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of keys, got {type(loaded).__name__}")
    return _fix_floats(loaded)


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


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened to ``limit`` characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's digit limit for str()
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[: limit - 5] + " ...>"


# --------------------------------------------------------------------------------------------
# The strict YAML loader
# --------------------------------------------------------------------------------------------

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    """Raised inside the loader; :func:`_load_text` turns it into a ConfigError with the source."""

    def __init__(self, mark: Any, text: str):
        super().__init__(text)
        self.mark, self.text = mark, text


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses what a configuration never needs (see module doc)."""

    def __init__(self, stream: str, lines: bool):
        super().__init__(stream)
        self._depth = 0
        self.lines = lines  # name positions by line (a file) or by column (a one-line value)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            name = event.anchor
            raise _Refused(
                event.start_mark,
                f"anchors and aliases (&{name}, *{name}) are not accepted in a configuration; write the value out",
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        first: dict[str, Any] = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    raise _Refused(key_node.start_mark, "merge keys (<<) are not accepted in a configuration")
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise _Refused(
                        key_node.start_mark,
                        f"key {_show(key)} is not a name (keys are names such as ppo or lr; quote it)",
                    )
                if key in first:
                    raise _Refused(key_node.start_mark, f"duplicate key {key!r} (first at{_where(first[key], self.lines)})")
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _where(mark: Any, lines: bool) -> str:
    if mark is None:
        return ""
    return f" line {mark.line + 1}" if lines else f" column {mark.column + 1}"


def _load_text(text: str, source: str, *, lines: bool) -> Any:
    """Load YAML text with :class:`_StrictLoader`; every failure is one ConfigError line."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    loader = None
    try:
        loader = _StrictLoader(text, lines)
        return loader.get_single_data()
    except _Refused as exc:
        raise ConfigError(f"{source}{_where(exc.mark, lines)}: {exc.text}") from None
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(str(exc.problem or exc.context or exc.__class__.__name__).split())
        raise ConfigError(f"{source}{_where(exc.problem_mark, lines)}: not valid YAML ({problem})") from None
    except yaml.reader.ReaderError as exc:
        where = f" line {text.count(chr(10), 0, exc.position) + 1}" if lines else f" column {exc.position + 1}"
        raise ConfigError(
            f"{source}{where}: not valid YAML (control character #x{exc.character:04x} is not allowed)"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from None
    except ValueError as exc:
        if "digits" in str(exc):  # an integer beyond the digit limit of Python's int()
            raise ConfigError(f"{source}: a number of more than {sys.get_int_max_str_digits()} digits") from None
        raise ConfigError(f"{source}: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
