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
    # path = "trace.csv"             # kind = "trace"; relative to this file's folder
    # types = [{share = 0.7, prompt = 512, output = 20}]   # kind = "typed"

    [engine]
    cost = "linear:d0=0.01,d1=2e-7"  # unit | linear:d0=..,d1=.. | preset:NAME; default: the
                                     # command line's (kvsched.experiments.scenario.DEFAULT_COST)
    kv_capacity = 16492              # optional with a preset
    block_size = 16
    kv_convention = "computed"
    eviction = "recompute"           # or "restart"; a list (["recompute", "restart"]) is a grid axis

    [[policy]]
    id = "vllm"
    params = { watermark = [0.0, 0.01] }   # a list is a grid axis; a scalar is fixed

    [[policy]]
    id = "sarathi"

Every value is checked when the spec is read (types, ranges, the cost, the predictors, each policy
variant built once, the trace file found), so a bad spec fails before any point runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError
from .scenario import DEFAULT_COST

_TOP = {"name", "seeds", "num_requests", "per_request", "predictors", "workload", "engine", "policy",
        "bound"}
_WORKLOAD = {"kind", "rates", "path", "types", "num_requests"}
_ENGINE = {"cost", "kv_capacity", "block_size", "kv_convention", "max_num_batched_tokens", "eviction"}
_EVICTIONS = ("recompute", "restart")
_POLICY = {"id", "params", "label"}
_KINDS = ("default", "trace", "typed")
#: The command line's limits (`kvsched.cli.common`): ten million requests, token amounts to 2^53.
MAX_NUM_REQUESTS = 10 ** 7
MAX_TOKENS = 2 ** 53
#: The option a command-line parser names first ("--cost: ", "--predictor interval: ", "workload.types"),
#: dropped when its message is reported against a spec key.
_CLI_OPTION = re.compile(r"^(--[\w-]+( [\w:.-]+)?|workload\.types): ")


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
        for horizon, rate, engine, policy, predictor, seed in itertools.product(
                self.num_requests, rates, self._engine_variants(), self._policy_variants(), self.predictors,
                self.seeds):
            out.append({"workload": {**base_workload, "rate": rate}, "engine": engine,
                        "policy": policy["id"], "params": policy["params"],
                        "label": policy["label"], "predictor": predictor, "seed": seed,
                        "num_requests": horizon, "per_request": self.per_request,
                        "bound": self.bound})
        return out

    def _engine_variants(self) -> list[dict]:
        """One engine table per eviction semantics when ``eviction`` is a list (a grid axis); a
        spec without the key keeps its table (and so its points' hashes) unchanged."""
        eviction = self.engine.get("eviction")
        if not isinstance(eviction, list):
            return [dict(self.engine)]
        return [{**self.engine, "eviction": e} for e in eviction]

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
    """Read and validate a sweep TOML file; errors name the file and the key. A relative trace
    path is resolved against the spec file's folder (as a user reading the file expects), not
    the folder the command runs in."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a sweep spec file (TOML)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_spec(data, source=str(path), base=path.resolve().parent)


def parse_spec(data: dict, *, source: str = "<spec>", base: Path | None = None) -> SweepSpec:
    def fail(key: str, expected: str, got: Any = None, *, cause: Exception | None = None) -> ConfigError:
        if cause is not None:      # a parser's own message, less the CLI option it names
            return ConfigError(f"{source}: key '{key}': {_CLI_OPTION.sub('', str(cause))}")
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
    if not horizons or not all(_is_int(n) and 1 <= n <= MAX_NUM_REQUESTS for n in horizons):
        raise fail("num_requests", f"an integer in [1, {MAX_NUM_REQUESTS}] or a non-empty list of them",
                   num_requests)
    kind = workload.get("kind", "default")
    if kind not in _KINDS:
        raise fail("workload.kind", " | ".join(_KINDS), kind)
    if kind == "trace" and not isinstance(workload.get("path"), str):
        raise fail("workload.path", "a trace file path (string) when kind = 'trace'")
    if kind == "trace":
        workload["path"] = _trace_path(workload["path"], base, fail)
    if kind == "typed" and not (isinstance(workload.get("types"), list) and workload["types"]):
        raise fail("workload.types", "a non-empty list of {share, prompt, output} tables")
    if kind == "typed":
        _check_types(workload["types"], fail)
    rates = workload.get("rates")
    if rates is not None:
        if not isinstance(rates, list) or not rates or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r >= 0
                for r in rates):
            raise fail("workload.rates", "a non-empty list of numbers >= 0 (0: all at time 0)", rates)
    engine.setdefault("cost", DEFAULT_COST)       # the command line's default, not 'unit'
    if not isinstance(engine["cost"], str):
        raise fail("engine.cost", "a string such as 'unit' or 'linear:d0=0.01,d1=2e-7'", engine["cost"])
    if "preset:" not in engine["cost"] and "kv_capacity" not in engine:
        raise fail("engine.kv_capacity", "KV capacity in tokens (required without a preset)")
    _check_engine(engine, fail)
    predictors = data.get("predictors", [None])
    if not isinstance(predictors, list) or not predictors or not all(
            p is None or isinstance(p, str) for p in predictors):
        raise fail("predictors", "a non-empty list of predictor specs (strings)", predictors)
    _check_predictors(predictors, fail)
    policies = _policies(data.get("policy"), fail)
    bound = data.get("bound")
    if bound is not None and not isinstance(bound, str):
        raise fail("bound", "a bound name such as 'ip' or 'exact'", bound)
    _check_bound(bound, fail)
    per_request = data.get("per_request", False)
    if not isinstance(per_request, bool):
        raise fail("per_request", "true or false", per_request)
    name = data.get("name", "sweep")
    if not isinstance(name, str) or not name:
        raise fail("name", "a non-empty string", name)
    return SweepSpec(name=name, seeds=tuple(seeds), num_requests=tuple(horizons),
                     per_request=per_request, predictors=tuple(predictors),
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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value, key: str, fail) -> list[int]:
    if not isinstance(value, list) or not value or not all(_is_int(v) and 0 <= v < 2 ** 63 for v in value):
        raise fail(key, "a non-empty list of integers >= 0", value)
    return value


def _trace_path(text: str, base: Path | None, fail) -> str:
    """The trace file, relative to the spec's folder; it must exist (read at run time)."""
    path = Path(text).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise fail("workload.path", "an existing trace file (relative paths start at the spec's folder)",
                   str(path))
    from ..workload.traces import load_trace
    load_trace(path)              # a bad row fails now (WorkloadError names it), not at run time
    return str(path)


def _check_engine(engine: dict, fail) -> None:
    """Types and ranges of the [engine] table, then the cost and convention as the CLI parses them."""
    from .scenario import parse_convention, parse_cost
    for key, low in (("kv_capacity", 1), ("block_size", 1), ("max_num_batched_tokens", 1)):
        if key in engine and not (_is_int(engine[key]) and low <= engine[key] <= MAX_TOKENS):
            raise fail(f"engine.{key}", f"an integer in [{low}, 2^53]", engine[key])
    if "eviction" in engine:
        evictions = engine["eviction"] if isinstance(engine["eviction"], list) else [engine["eviction"]]
        if not evictions or any(e not in _EVICTIONS for e in evictions) or len(set(evictions)) < len(evictions):
            raise fail("engine.eviction", "'recompute', 'restart' or a list of them (each once)",
                       engine["eviction"])
    if "kv_convention" in engine and not isinstance(engine["kv_convention"], str):
        raise fail("engine.kv_convention", "'computed' or 'emitted'", engine["kv_convention"])
    try:
        cost = parse_cost(engine["cost"])
    except UserError as exc:
        raise fail("engine.cost", "", cause=exc) from None
    try:
        parse_convention(engine.get("kv_convention", "computed"))
    except UserError as exc:
        raise fail("engine.kv_convention", "", cause=exc) from None
    capacity = engine.get("kv_capacity", cost.kv_capacity_tokens)
    block = engine.get("block_size", cost.block_size) or 16
    if capacity is not None and capacity < block:
        raise fail("engine.kv_capacity", f"at least one block ({block} tokens)", capacity)


def _check_predictors(predictors: list, fail) -> None:
    from ..workload.predictors import parse_predictor
    for i, spec in enumerate(predictors):
        if spec is not None:
            try:
                parse_predictor(spec)
            except UserError as exc:
                raise fail(f"predictors[{i}]", "", cause=exc) from None


def _check_types(types: list, fail) -> None:
    from ..workload.typed import mix_from_tables
    try:
        mix_from_tables(types, 1.0)
    except UserError as exc:
        raise fail("workload.types", "", cause=exc) from None


def _check_bound(bound: str | None, fail) -> None:
    from ..bounds import BOUND_METHODS
    if bound is not None and bound not in BOUND_METHODS:
        raise fail("bound", "one of " + ", ".join(BOUND_METHODS), bound)


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
        label = policy.get("label")
        if label is not None and not isinstance(label, str):
            raise fail(f"{where}.label", "a string", label)
        _build_variants(policy["id"], params, where, fail)
        out.append({"id": policy["id"], "params": params, "label": label})
    return tuple(out)


def _build_variants(policy_id: str, params: dict, where: str, fail) -> None:
    """Build every parameter combination once, so a bad value fails now, not after hours."""
    from ..policies import make
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in params.items()}
    for values in itertools.product(*axes.values()):
        try:
            make(policy_id, **dict(zip(axes, values)))
        except UserError as exc:
            raise fail(f"{where}.params", "", cause=exc) from None
