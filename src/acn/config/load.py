"""Resolving a config: defaults, then a preset (a name from ``acn/config/presets/`` or a TOML
path), then ``key=value`` overrides; every unknown key and bad value is a :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from importlib import resources
from pathlib import Path
from typing import Any

from acn.config.checks import validate
from acn.config.choices import suggest
from acn.config.schema import SCHEDULE_KEYS, Config
from acn.config.values import coerce
from acn.errors import ConfigError


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys() -> list[str]:
    """Every settable key, as ``section.key`` (or ``seed``)."""
    return sorted(Config().flat())


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    fields, hints = _fields(cls), _hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        choices = ", ".join(f"{prefix}{name}" for name in fields)
        close = suggest(unknown[0], fields)  # " (did you mean NAME?)", matched on bare names
        hint = close.replace("mean ", f"mean {prefix}") if close else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} in {where}{hint}; valid keys: {choices}"
        )
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a table of settings, got {value!r}")
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(f"{prefix}{name}", value, hint)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("acn.config") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: a JSON config is an object of sections, not {type(values).__name__}"
        )
    return values


def _read_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if name_or_path.endswith(".json"):  # a run's config.json: the run as it was recorded
        return _read_json(path)
    if name_or_path.endswith(".toml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {name_or_path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
            raise ConfigError(f"cannot read config file {name_or_path}: {reason}") from None
    else:
        resource = resources.files("acn.config") / "presets" / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown preset {name_or_path!r}{suggest(name_or_path, preset_names())}; "
                f"presets: {', '.join(preset_names())} (or give a path to a .toml file)"
            )
        text = resource.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name_or_path}: not valid TOML ({exc})") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=3e-4", "seed=1"]`` into a nested dict of strings."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (for example train.lr=3e-4)")
        parts = key.strip().split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is a value, not a section")
        node[parts[-1]] = value.strip()
    return tree


def from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a config from a nested dict (e.g. read back from a checkpoint)."""
    config = _build(Config, values, "")
    validate(config)
    return config


def load_config(preset: str | None = None, overrides: list[str] | None = None) -> Config:
    """Resolve defaults, then a preset (a name, a TOML file, or a run's ``config.json``), then
    ``key=value`` overrides."""
    values: dict[str, Any] = _read_preset(preset) if preset else {}
    values = _merge(values, parse_overrides(overrides or []))
    return from_dict(values)


def resume_conflicts(saved: Config, requested: Config) -> list[str]:
    """Keys (outside :data:`SCHEDULE_KEYS`) whose values differ between two configs."""
    a, b = saved.flat(), requested.flat()
    return sorted(k for k in a if k not in SCHEDULE_KEYS and a[k] != b.get(k))
