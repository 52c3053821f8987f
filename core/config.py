"""One config mechanism for every stage.

A stage declares a dataclass of defaults (nested dataclasses for sections, unit-bearing field
names, a docstring line per field). A YAML recipe sets only what differs; `key.sub=value`
arguments override both; `--dry-run` prints the resolved config and exits.

    cfg = parse_args(PretrainConfig, sys.argv[1:], prog="pretrain.train")

Values are typed by the dataclass annotations: ints, floats ("1e-3" included), bools
(true/false/1/0/yes/no), lists ("[a, b]" or "a,b"), dicts, and Optional of each. An unknown key
is an error naming the key (and the recipe file when it came from there).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError


class ConfigError(UserError, ValueError):
    """A recipe or override that does not fit the stage's dataclass."""
    kind = "config"


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int,)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an int, got bool {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key}: expected an int, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{key}: expected an int, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a float, got bool {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a float, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            parsed = None
            if text.startswith("["):
                try:
                    parsed = yaml.safe_load(text)
                except yaml.YAMLError:  # e.g. "[a, Who are you?]": fall back to a plain comma split
                    text = text[1:-1] if text.endswith("]") else text[1:]
            if not isinstance(parsed, list):
                parsed = [v.strip() for v in text.split(",") if v.strip()]
            value = parsed
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    return value


def _build(cls, values: dict, prefix: str = "", source: str = ""):
    types_ = _field_types(cls)
    kwargs = {}
    for k, v in values.items():
        if k not in types_:
            where = f" in {source}" if source else ""
            known = ", ".join(sorted(types_))
            raise ConfigError(f"unknown config key '{prefix}{k}'{where} (known here: {known})")
        kwargs[k] = _coerce(v, types_[k], prefix + k)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(d: dict, dotted: str, raw: str) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    # YAML parses numbers, bools, lists; the dataclass types then coerce ("1e-3" -> float).
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    cur[parts[-1]] = value


def _check_keys(cls, values: dict, prefix: str, source: str) -> None:
    types_ = _field_types(cls)
    for k, v in values.items():
        if k not in types_:
            known = ", ".join(sorted(types_))
            where = f" in {source}" if source else ""
            raise ConfigError(f"unknown config key '{prefix}{k}'{where} (known here: {known})")
        if _is_dataclass_type(types_[k]) and isinstance(v, dict):
            _check_keys(types_[k], v, prefix + k + ".", source)


def load_config(cls, recipe: str | Path | None = None, overrides: list[str] | None = None):
    """Defaults <- recipe YAML <- `key.sub=value` overrides, validated against `cls`."""
    base = to_dict(cls())
    recipe_values: dict = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe not found: {path}")
        try:
            recipe_values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(recipe_values, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping at the top level")
        _check_keys(cls, recipe_values, "", str(path))
    over_values: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        k, v = item.split("=", 1)
        _set_dotted(over_values, k.strip(), v)
    _check_keys(cls, over_values, "", "command-line overrides")
    merged = _deep_merge(_deep_merge(base, recipe_values), over_values)
    return _build(cls, merged)


def config_hash(cfg) -> str:
    blob = json.dumps(to_dict(cfg), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def parse_args(cls, argv: list[str] | None = None, prog: str = ""):
    """CLI: `[recipe.yaml] [key.sub=value ...] [--dry-run]`. Returns (cfg, recipe_path or None).

    With --dry-run the resolved config is printed and the process exits 0.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        doc = sys.modules.get("__main__").__doc__ or ""
        print(doc.strip() or f"usage: python -m {prog} [recipe.yaml] [key=value ...] [--dry-run]")
        print("\nConfig fields (defaults):")
        print(dump_yaml(cls()))
        raise SystemExit(0)
    dry = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    recipe = None
    if argv and not "=" in argv[0]:
        recipe = argv.pop(0)
    cfg = load_config(cls, recipe, argv)   # ConfigError: the entrypoint prints it (core.errors)
    if dry:
        print(f"# resolved config for {prog or cls.__name__}" + (f" from {recipe}" if recipe else ""))
        print(dump_yaml(cfg), end="")
        raise SystemExit(0)
    return cfg, recipe


def recipe_name(recipe: str | Path | None, default: str = "default") -> str:
    return Path(recipe).stem if recipe else default
