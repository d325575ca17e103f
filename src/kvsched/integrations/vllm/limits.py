"""The engine's limits, read once from vLLM's config and given to the policy (no vLLM import).

A policy that keeps its own copy of an engine limit (``vllm``'s and ``sarathi``'s
``max_num_seqs``, ``vllm``'s ``max_num_batched_tokens``, ``full_prompt_must_fit`` and
``enable_chunked_prefill``) would otherwise plan with its defaults (256 seats against an engine
started with ``--max-num-seqs 8``) and have its decisions cut by the engine. `policy_for_engine`
sets each such parameter from the engine unless the policy spec names it; a spec that names one
with another value keeps it and the difference is reported (a deliberate experiment, e.g. a
policy that uses fewer seats than the engine has).

The KV capacity, block size and token budget reach every policy through the `SchedulerView`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """What the engine allows per step (vLLM's names in the comments)."""

    max_num_seqs: int                   # scheduler_config.max_num_seqs
    max_num_batched_tokens: int         # scheduler_config.max_num_scheduled_tokens (the budget)
    block_size: int                     # cache_config.block_size
    reserve_full_isl: bool              # scheduler_config.scheduler_reserve_full_isl
    enable_chunked_prefill: bool        # scheduler_config.enable_chunked_prefill

    @classmethod
    def from_vllm_config(cls, vllm_config: Any) -> EngineLimits:
        sc, cc = vllm_config.scheduler_config, vllm_config.cache_config
        budget = getattr(sc, "max_num_scheduled_tokens", None) or sc.max_num_batched_tokens
        return cls(int(sc.max_num_seqs), int(budget), int(cc.block_size),
                   bool(getattr(sc, "scheduler_reserve_full_isl", True)),
                   bool(sc.enable_chunked_prefill))

    def policy_params(self) -> dict[str, Any]:
        """Policy parameter name -> the engine's value."""
        return {"max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.max_num_batched_tokens,
                "full_prompt_must_fit": self.reserve_full_isl,
                "enable_chunked_prefill": self.enable_chunked_prefill}


def policy_for_engine(spec: str, limits: EngineLimits):
    """Build the policy of `spec` with the engine's limits; returns (policy, applied, overridden).

    ``applied``: the parameters set from the engine; ``overridden``: parameter -> (spec value,
    engine value) where the spec names a different value (kept as the spec says).
    """
    from ...policies import make, parse_policy_spec
    from ...policies.registry import parameters, resolve
    name, params = parse_policy_spec(spec)
    known = {f.name for f in parameters(resolve(name))}
    engine = {k: v for k, v in limits.policy_params().items() if k in known}
    applied = {k: v for k, v in engine.items() if k not in params}
    overridden = {k: (params[k], v) for k, v in engine.items() if k in params and params[k] != v}
    return make(name, **{**applied, **params}), applied, overridden


def full_input_rule(policy) -> bool:
    """Whether vLLM's ``scheduler_reserve_full_isl`` (admit a waiting request only if its whole
    input fits) applies under `policy`: it is an admission rule of vLLM's own scheduler, which
    the ``vllm`` policy has as ``full_prompt_must_fit`` (set from the engine unless its spec names
    it). Any other policy admits a chunk that fits, as in the simulator."""
    return bool(getattr(policy, "full_prompt_must_fit", False))


def describe(policy) -> dict[str, Any]:
    """The policy's parameters (for a start-up log line and engine-run's report)."""
    return {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy) if f.init}
