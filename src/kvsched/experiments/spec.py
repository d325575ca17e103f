"""`SweepSpec`: a grid of runs read from a TOML file.

A sweep is the product workloads × arrival rates × (policy, parameter values) × predictors × seeds.
Every point is a plain JSON-able dict (its *config*); a run is a pure function of it, and its hash
names its results, which is what makes sweeps resumable. Example::

    name = "vllm-vs-sarathi"
    seeds = [0, 1, 2]
    num_requests = 500               # a list makes the horizon a grid axis too
    per_request = false              # also store one row per request
    predictors = ["exact"]           # optional; see kvsched.predictors

    [workload]
    kind = "default"                 # default | trace | typed
    rates = [2.0, 4.0, 8.0]          # req/s; 0: all at time 0; omit for the default rate or a
                                     # trace's own arrival times
    # path = "trace.csv"             # kind = "trace"
    # types = [{share = 0.7, prompt = 512, output = 20}]   # kind = "typed"

    [engine]
    cost = "linear:d0=0.01,d1=2e-7"  # unit | linear:d0=..,d1=.. | preset:NAME
    kv_capacity = 16492              # optional with a preset
    block_size = 16
    kv_convention = "computed"

    [[policy]]
    id = "vllm"
    params = { watermark = [0.0, 0.01] }   # a list is a grid axis; a scalar is fixed

    [[policy]]
    id = "sarathi"
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_TOP = {"name", "seeds", "num_requests", "per_request", "predictors", "workload", "engine", "policy",
        "bound"}
_WORKLOAD = {"kind", "rates", "path", "types", "num_requests"}
_ENGINE = {"cost", "kv_capacity", "block_size", "kv_convention", "max_num_batched_tokens"}
_POLICY = {"id", "params", "label"}
_KINDS = ("default", "trace", "typed")


def config_hash(config: dict) -> str:
    """A short, stable hash of a point's config (canonical JSON)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. `points()` lists every run's config in a fixed order."""

    name: str
    seeds: tuple[int, ...]
    num_requests: tuple[int, ...]
    per_request: bool
    predictors: tuple[str | None, ...]
    workload: dict
    engine: dict
    policies: tuple[dict, ...]
    bound: str | None = None
    source: str = "<spec>"

    def as_dict(self) -> dict:
        return {"name": self.name, "seeds": list(self.seeds), "num_requests": list(self.num_requests),
                "per_request": self.per_request, "predictors": list(self.predictors),
                "workload": self.workload, "engine": self.engine, "policies": list(self.policies),
                "bound": self.bound}

    @property
    def hash(self) -> str:
        return config_hash(self.as_dict())

    def points(self) -> list[dict]:
        rates = self.workload.get("rates") or [None]
        base_workload = {k: v for k, v in self.workload.items() if k != "rates"}
        out = []
        for horizon, rate, policy, predictor, seed in itertools.product(
                self.num_requests, rates, self._policy_variants(), self.predictors, self.seeds):
            out.append({"workload": {**base_workload, "rate": rate}, "engine": dict(self.engine),
                        "policy": policy["id"], "params": policy["params"],
                        "label": policy["label"], "predictor": predictor, "seed": seed,
                        "num_requests": horizon, "per_request": self.per_request,
                        "bound": self.bound})
        return out

    def _policy_variants(self) -> list[dict]:
        variants = []
        for policy in self.policies:
            axes = {k: (v if isinstance(v, list) else [v]) for k, v in policy.get("params", {}).items()}
            for values in itertools.product(*axes.values()):
                params = dict(zip(axes, values))
                label = policy.get("label") or policy["id"]
                grid = {k: v for k, v in params.items() if len(axes[k]) > 1}
                if grid:
                    label += "(" + ",".join(f"{k}={v}" for k, v in grid.items()) + ")"
                variants.append({"id": policy["id"], "params": params, "label": label})
        return variants


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep TOML file; errors name the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(data, source=str(path))


def parse_spec(data: dict, *, source: str = "<spec>") -> SweepSpec:
    def fail(key: str, expected: str, got: Any = None) -> ConfigError:
        shown = "" if got is None else f", got {got!r}"
        return ConfigError(f"{source}: key '{key}': expected {expected}{shown}")

    _unknown(data, _TOP, "", fail)
    workload = _table(data, "workload", fail)
    engine = _table(data, "engine", fail)
    _unknown(workload, _WORKLOAD, "workload.", fail)
    _unknown(engine, _ENGINE, "engine.", fail)
    seeds = _int_list(data.get("seeds", [0]), "seeds", fail)
    num_requests = data.get("num_requests", workload.get("num_requests", 1000))
    horizons = num_requests if isinstance(num_requests, list) else [num_requests]
    if not horizons or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in horizons):
        raise fail("num_requests", "an integer >= 1 or a non-empty list of them", num_requests)
    kind = workload.get("kind", "default")
    if kind not in _KINDS:
        raise fail("workload.kind", " | ".join(_KINDS), kind)
    if kind == "trace" and not isinstance(workload.get("path"), str):
        raise fail("workload.path", "a trace file path (string) when kind = 'trace'")
    if kind == "typed" and not (isinstance(workload.get("types"), list) and workload["types"]):
        raise fail("workload.types", "a non-empty list of {share, prompt, output} tables")
    rates = workload.get("rates")
    if rates is not None:
        if not isinstance(rates, list) or not rates or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in rates):
            raise fail("workload.rates", "a non-empty list of numbers >= 0 (0: all at time 0)", rates)
    if not isinstance(engine.get("cost", "unit"), str):
        raise fail("engine.cost", "a string such as 'unit' or 'linear:d0=0.01,d1=2e-7'")
    if "preset:" not in str(engine.get("cost", "")) and "kv_capacity" not in engine:
        raise fail("engine.kv_capacity", "KV capacity in tokens (required without a preset)")
    predictors = data.get("predictors", [None])
    if not isinstance(predictors, list) or not predictors:
        raise fail("predictors", "a non-empty list of predictor specs", predictors)
    policies = _policies(data.get("policy"), fail)
    bound = data.get("bound")
    if bound is not None and not isinstance(bound, str):
        raise fail("bound", "a bound name such as 'ip' or 'fluid'", bound)
    return SweepSpec(name=str(data.get("name", "sweep")), seeds=tuple(seeds), num_requests=tuple(horizons),
                     per_request=bool(data.get("per_request", False)), predictors=tuple(predictors),
                     workload={**workload, "kind": kind}, engine=engine, policies=policies, bound=bound,
                     source=source)


def _unknown(table: dict, allowed: set, prefix: str, fail) -> None:
    for key in table:
        if key not in allowed:
            raise fail(prefix + key, "one of " + ", ".join(sorted(prefix + a for a in allowed)) +
                       " (unknown key)")


def _table(data: dict, key: str, fail) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise fail(key, "a table", value)
    return dict(value)


def _int_list(value, key: str, fail) -> list[int]:
    if not isinstance(value, list) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise fail(key, "a non-empty list of integers", value)
    return value


def _policies(value, fail) -> tuple[dict, ...]:
    from ..policies import parameters, resolve
    if not isinstance(value, list) or not value:
        raise fail("policy", "at least one [[policy]] table with an id")
    out = []
    for i, policy in enumerate(value):
        where = f"policy[{i}]"
        if not isinstance(policy, dict) or not isinstance(policy.get("id"), str):
            raise fail(f"{where}.id", "a policy id string")
        _unknown(policy, _POLICY, f"{where}.", fail)
        cls = resolve(policy["id"])
        params = policy.get("params", {})
        if not isinstance(params, dict):
            raise fail(f"{where}.params", "a table of parameter values or lists", params)
        known = {f.name for f in parameters(cls)}
        for key, values in params.items():
            if key not in known:
                raise fail(f"{where}.params.{key}", "a parameter of " + policy["id"] + ": " +
                           ", ".join(sorted(known)))
            if isinstance(values, list) and not values:
                raise fail(f"{where}.params.{key}", "a non-empty list (empty grid)")
        out.append({"id": policy["id"], "params": params, "label": policy.get("label")})
    return tuple(out)
