"""Policy registry: `@register` on a class, `make("id", **params)` or `make("pkg.mod:Class")`.

The registry holds no mutable module state: it is the set of `Policy` subclasses marked by
`@register`, found by walking the subclass tree (built-in policies are imported by
`kvsched.policies`).
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any

from ..errors import ConfigError
from .base import Policy

_MARK = "_kvsched_registered"


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make `cls` available as `make(cls.name)`."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} needs a non-empty class attribute `name`")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__qualname__} must be a dataclass (its fields are its parameters)")
    setattr(cls, _MARK, cls)
    return cls


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def registered() -> dict[str, type[Policy]]:
    """Policy id → class, for every registered policy, sorted by id."""
    from . import _builtins  # noqa: F401  (import the built-in policies)
    found: dict[str, type[Policy]] = {}
    for cls in _subclasses(Policy):
        if cls.__dict__.get(_MARK) is not cls:
            continue
        if cls.name in found and found[cls.name] is not cls:
            raise ConfigError(f"policy id {cls.name!r} is registered twice: by "
                              f"{found[cls.name].__module__}.{found[cls.name].__qualname__} and "
                              f"{cls.__module__}.{cls.__qualname__}")
        found[cls.name] = cls
    return dict(sorted(found.items()))


def resolve(spec: str) -> type[Policy]:
    """A policy id ("vllm") or an import path ("package.module:Class") → the class."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import policy {spec!r}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Policy)):
            raise ConfigError(f"{spec!r} is not a kvsched Policy subclass")
        return cls
    policies = registered()
    if spec not in policies:
        raise ConfigError(f"unknown policy {spec!r}; expected one of: {', '.join(policies)}")
    return policies[spec]


def parameters(cls: type[Policy]) -> list[dataclasses.Field]:
    """The policy's parameters (its init dataclass fields)."""
    return [f for f in dataclasses.fields(cls) if f.init]


def make(spec: str, **params: Any) -> Policy:
    """Build a policy from its id or import path and keyword parameters."""
    cls = resolve(spec)
    known = {f.name for f in parameters(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"policy {cls.name or spec!r} has no parameter {unknown[0]!r}; "
                          f"expected one of: {', '.join(sorted(known)) or '(none)'}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"policy {cls.name or spec!r}: {exc}") from None


def _coerce(text: str, annotation: Any, where: str) -> Any:
    """Parse a command-line value by the parameter's annotation."""
    hints = typing.get_args(annotation) or (annotation,)
    if text.lower() in ("none", "null") and type(None) in hints:
        return None
    for hint in hints:
        if hint is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
        elif hint in (int, float, str):
            try:
                return hint(text)
            except ValueError:
                continue
    names = " or ".join(getattr(h, "__name__", str(h)) for h in hints)
    raise ConfigError(f"{where}: cannot read {text!r} as {names}")


def parse_policy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """ "vllm:watermark=0.01;max_num_seqs=64" → ("vllm", {...}); values typed by the fields.

    Parameters are separated by ';' (',' is accepted when the CLI splits policies by '|' or
    when used on its own). Import paths keep their ':' (the part after the last ':' that
    contains '=' holds the parameters).
    """
    head, params_text = spec, ""
    if "=" in spec:
        head, _, params_text = spec.rpartition(":")
        while "=" in head and ":" in head:   # "pkg.mod:Class:a=1" → head "pkg.mod:Class"
            head, _, more = head.rpartition(":")
            params_text = f"{more}:{params_text}"
    cls = resolve(head.strip())
    fields = {f.name: f for f in parameters(cls)}
    hints = typing.get_type_hints(cls)
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in params_text.replace(";", ",").split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"policy {head!r}: expected name=value, got {item!r}")
        if key not in fields:
            raise ConfigError(f"policy {head!r} has no parameter {key!r}; expected one of: "
                              f"{', '.join(sorted(fields)) or '(none)'}")
        params[key] = _coerce(value.strip(), hints.get(key, str), f"policy {head!r} parameter {key!r}")
    return head.strip(), params


def split_policy_list(text: str) -> list[str]:
    """Split "vllm:watermark=0.01,max_num_seqs=64,sarathi" into one spec per policy.

    A comma starts a new policy unless the next piece is a bare ``name=value`` (it then continues
    the previous policy's parameters).
    """
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece and specs:
            specs[-1] = f"{specs[-1]};{piece}"
        else:
            specs.append(piece)
    if not specs:
        raise ConfigError("--policies: expected at least one policy id")
    return specs
