"""Per-request kvsched inputs carried by vLLM's ``SamplingParams.extra_args`` (no vLLM import).

Two spellings, both read by `parse_request_args`:

- Python API (``LLM.generate``, ``LLMEngine.add_request``): ``extra_args={"kvsched": {...}}``, a
  dict with the keys of `FIELDS`.
- HTTP (the OpenAI-compatible server): vLLM's ``vllm_xargs`` takes flat values only (a dict value
  is refused with a 400), so each field travels as its own key with the prefix ``kvsched_``:
  ``"vllm_xargs": {"kvsched_predicted_output_tokens": 120, "kvsched_predicted_lo": 80,
  "kvsched_predicted_hi": 160}``.

Values are numbers (or strings holding one, as some clients send them); booleans, NaN, infinities,
non-integral integers, negative ids, ``predicted_lo > predicted_hi`` and unknown ``kvsched_*`` keys
are errors. An error refuses that one request (`RequestArgsError`); it never reaches the engine
loop. Keys without the ``kvsched`` prefix belong to other plug-ins and are left alone.

`FallbackPredictor` fills the predictions a request does not bring, for the policies that need
them (``PolicyTags.uses_predictions``); it is chosen once for the server (``kvsched_fallback``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

EXTRA_ARGS_KEY = "kvsched"
FLAT_PREFIX = "kvsched_"
FIELDS = ("request_id", "arrival_time", "predicted_output_tokens", "predicted_lo", "predicted_hi",
          "type_id")
FLAT_KEYS = tuple(FLAT_PREFIX + f for f in FIELDS)


class RequestArgsError(ValueError):
    """Malformed kvsched arguments of one request (the message says which and what was expected)."""


@dataclass(frozen=True, slots=True)
class RequestArgs:
    """The parsed kvsched inputs of one request (None: not given)."""

    request_id: int | None = None
    arrival_time: float | None = None
    predicted_output_tokens: float | None = None
    predicted_lo: int | None = None
    predicted_hi: int | None = None
    type_id: int | None = None


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RequestArgsError(f"{key}: expected a number, got {type(value).__name__} {value!r:.60}")
    try:
        number = float(value)
    except (ValueError, OverflowError):          # OverflowError: an int past float's range
        raise RequestArgsError(f"{key}: expected a number, got {value!r:.60}") from None
    if not math.isfinite(number):
        raise RequestArgsError(f"{key}: expected a finite number, got {value!r:.60}")
    return number


def _integer(key: str, value: Any, low: int) -> int:
    number = _number(key, value)
    if number != int(number) or number < low:
        raise RequestArgsError(f"{key}: expected an integer >= {low}, got {value!r:.60}")
    return int(number)


_CHECKS = {
    "request_id": lambda k, v: _integer(k, v, 0),
    "arrival_time": _number,
    "predicted_output_tokens": lambda k, v: _positive(k, v),
    "predicted_lo": lambda k, v: _integer(k, v, 1),
    "predicted_hi": lambda k, v: _integer(k, v, 1),
    "type_id": lambda k, v: _integer(k, v, 0),
}


def _positive(key: str, value: Any) -> float:
    number = _number(key, value)
    if number <= 0:
        raise RequestArgsError(f"{key}: expected a number > 0, got {value!r:.60}")
    return number


def _raw_fields(extra_args: Any) -> dict[str, tuple[str, Any]]:
    """field -> (the key as the client spelled it, raw value), from both spellings."""
    if extra_args is None:
        return {}
    if not isinstance(extra_args, dict):
        raise RequestArgsError(f"extra_args: expected a dict, got {type(extra_args).__name__}")
    raw: dict[str, tuple[str, Any]] = {}
    nested = extra_args.get(EXTRA_ARGS_KEY)
    if nested is not None:
        if not isinstance(nested, dict):
            raise RequestArgsError(
                f"{EXTRA_ARGS_KEY}: expected a dict of {', '.join(FIELDS)} (over HTTP use flat keys "
                f"{FLAT_PREFIX}<field>), got {type(nested).__name__} {nested!r:.60}")
        for key, value in nested.items():
            if key not in _CHECKS:
                raise RequestArgsError(f"{EXTRA_ARGS_KEY}: unknown key {key!r:.60}; expected one of: "
                                       f"{', '.join(FIELDS)}")
            raw[key] = (f"{EXTRA_ARGS_KEY}.{key}", value)
    for key, value in extra_args.items():
        if not (isinstance(key, str) and key.startswith(FLAT_PREFIX)):
            continue
        field = key[len(FLAT_PREFIX):]
        if field not in _CHECKS:
            raise RequestArgsError(f"unknown key {key!r:.60}; expected one of: {', '.join(FLAT_KEYS)}")
        if field in raw:
            raise RequestArgsError(f"{key}: given twice (also as {raw[field][0]})")
        raw[field] = (key, value)
    return raw


def parse_request_args(extra_args: Any) -> RequestArgs:
    """`RequestArgs` from ``SamplingParams.extra_args``; `RequestArgsError` names the bad key."""
    values = {field: _CHECKS[field](key, value) for field, (key, value) in _raw_fields(extra_args).items()
              if value is not None}
    lo, hi = values.get("predicted_lo"), values.get("predicted_hi")
    if lo is not None and hi is not None and lo > hi:
        raise RequestArgsError(f"predicted_lo ({lo}) must be <= predicted_hi ({hi})")
    return RequestArgs(**values)


# --------------------------------------------------------------------------- fallback predictions

@dataclass(frozen=True, slots=True)
class FallbackPredictor:
    """Predictions for a request that brings none, chosen once for the server.

    - ``max-tokens`` (the default): the interval [1, max_tokens] and the point max_tokens. It holds
      for every request (no request outputs more than ``max_tokens``), so MC-SF's and A_min's
      memory checks stay safe; it is pessimistic, so they admit fewer requests than with real
      predictions.
    - ``naive:lo=L,hi=H``: the fixed interval [L, H] and the point H, the ``naive`` predictor of
      `kvsched.workload.predictors` (H is capped at the request's ``max_tokens``).
    - ``none``: no fallback; a request that does not bring all three of
      ``predicted_output_tokens``, ``predicted_lo`` and ``predicted_hi`` is refused (the adapter
      cannot tell which of them a policy reads, and a policy that reads a missing one would stop
      the engine).

    Missing fields only: a given point is kept, a missing ``predicted_hi`` is at least a given
    ``predicted_lo``, a missing ``predicted_lo`` at most a given ``predicted_hi``.
    """

    kind: str = "max-tokens"
    lo: int = 1
    hi: int | None = None

    def fill(self, args: RequestArgs, max_tokens: int) -> RequestArgs:
        if self.kind == "none":
            return args
        hi_default = max_tokens if self.hi is None else min(self.hi, max_tokens)
        lo_default = min(self.lo, hi_default)
        hi = args.predicted_hi if args.predicted_hi is not None else max(hi_default, args.predicted_lo or 1)
        lo = args.predicted_lo if args.predicted_lo is not None else min(lo_default, hi)
        point = args.predicted_output_tokens if args.predicted_output_tokens is not None else float(hi)
        return RequestArgs(args.request_id, args.arrival_time, point, lo, hi, args.type_id)


def parse_fallback(spec: str | None) -> FallbackPredictor:
    """``max-tokens`` | ``naive[:lo=L,hi=H]`` | ``none`` → a `FallbackPredictor` (ValueError names it)."""
    text = "max-tokens" if spec in (None, "") else str(spec).strip()
    if text in ("max-tokens", "none"):
        return FallbackPredictor(text)
    if text.split(":", 1)[0] == "naive":
        from ...workload.predictors import parse_predictor
        try:
            naive = parse_predictor(text)
        except Exception as exc:         # ConfigError: say which setting it came from
            raise ValueError(f"kvsched_fallback: {exc}") from None
        return FallbackPredictor("naive", naive.lo, naive.hi)
    raise ValueError(f"kvsched_fallback: expected 'max-tokens', 'naive:lo=L,hi=H' or 'none', got {text!r}")


def missing_predictions(args: RequestArgs) -> list[str]:
    """The prediction fields a request left out."""
    return [f for f in ("predicted_output_tokens", "predicted_lo", "predicted_hi") if getattr(args, f) is None]
