"""Typed configuration: a dataclass tree, YAML files that override it, `key=value` last.

Unknown keys and values of the wrong type are errors that name the dotted key and list the
keys that do exist, so a typo never silently falls back to a default (docs/DESIGN.md section 4).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value that cannot be applied; the message names the key."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, cls: type, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
    return ConfigError(
        f"unknown config key '{prefix}{key}'.{hint} Valid keys under "
        f"'{prefix.rstrip('.') or '<root>'}': {', '.join(names)}"
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise naming the key."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        choices = [arg for arg in args if arg is not type(None)]
        errors = []
        for arg in choices:
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:       # `X | None`: X's own error names the inner key
            raise errors[0]
        raise ConfigError(f"config key '{key}': {value!r} fits none of {tp}: "
                          + "; ".join(str(e) for e in errors))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(
                f"config key '{key}': {value!r} is not one of {list(typing.get_args(tp))}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return merge(tp(), value, prefix=key + ".")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else [
                v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


def _merge_mapping(base: dict, update: dict) -> dict:
    """Recursive dict update that returns a new dict."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge_mapping(out[key], value)
        else:
            out[key] = value
    return out


def merge(cfg: T, overrides: dict, prefix: str = "") -> T:
    """Return a copy of dataclass `cfg` with the (nested) mapping `overrides` applied."""
    if overrides is None:
        return cfg
    if not isinstance(overrides, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    types_ = _field_types(type(cfg))
    changes = {}
    for key, value in overrides.items():
        if key not in types_:
            raise _unknown_key(str(key), type(cfg), prefix)
        tp = types_[key]
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = merge(current, value, prefix=f"{prefix}{key}.")
        elif isinstance(current, dict) and isinstance(value, dict):
            # free-form mappings (e.g. model.overrides) merge key by key, so one
            # `model.overrides.depth=4` does not drop what a YAML file set
            changes[key] = _merge_mapping(current, _coerce(value, tp, f"{prefix}{key}"))
        else:
            changes[key] = _coerce(value, tp, f"{prefix}{key}")
    return dataclasses.replace(cfg, **changes)


def parse_override(text: str) -> dict:
    """`a.b.c=value` -> {'a': {'b': {'c': value}}}; the value is parsed as YAML scalar."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.steps=100)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key.startswith("--"):
        key = key[2:]
    value = yaml.safe_load(raw) if raw != "" else ""
    node: dict = {}
    root = node
    parts = key.split(".")
    for p in parts[:-1]:
        node[p] = {}
        node = node[p]
    node[parts[-1]] = value
    return root


def load_yaml(path: str | Path) -> dict:
    from specaware.resources import resolve_config_file
    path = resolve_config_file(path)   # shipped examples resolve from any folder
    if not path.is_file():
        from specaware.resources import CONFIG_DIR
        raise ConfigError(f"config file not found: {path} (shipped examples, usable by their "
                          f"relative name such as pretrain/debug.yaml: {CONFIG_DIR})")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def build(cls: type[T], files: list[str | Path] = (), overrides: list[str] = ()) -> T:
    """Defaults of `cls`, then each YAML file in order, then `key=value` overrides."""
    cfg = cls()
    for f in files:
        try:
            cfg = merge(cfg, load_yaml(f))
        except ConfigError as e:
            raise ConfigError(f"{f}: {e}") from None
    for o in overrides:
        cfg = merge(cfg, parse_override(o))
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON/wandb."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def from_dict(cls: type[T], data: dict) -> T:
    return merge(cls(), data)


def config_yaml(tree: dict, comment: dict | None = None) -> str:
    """YAML text of a resolved config tree that `build` accepts back as a config file; each
    entry of `comment` (title -> tree) follows as commented-out YAML, for reading only."""
    text = yaml.safe_dump(tree, sort_keys=False)
    for title, extra in (comment or {}).items():
        body = yaml.safe_dump(extra, sort_keys=False).rstrip("\n").splitlines()
        text += f"# {title}, derived from the keys above (not a config key):\n"
        text += "".join(f"#   {line}\n" for line in body)
    return text


def save_yaml(cfg: Any, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """(yaml files, overrides): anything with '=' is an override, the rest are files."""
    files = [i for i in items if "=" not in i]
    overrides = [i for i in items if "=" in i]
    return files, overrides
