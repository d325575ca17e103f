"""Refuse malformed kvsched arguments at the API server, with HTTP 400 and the reason.

``--logits-processors kvsched.integrations.vllm.validation:KVSchedArgsCheck`` adds this check.
vLLM calls a logits processor's ``validate_params`` on every request in the front end, before the
request reaches the engine, and answers a ``ValueError`` with a 400 that carries its message
(`kvsched.integrations.vllm.request_args` does the parsing). Without it the engine refuses the
same requests itself (`KVSchedScheduler` finishes each with an error: a 500 without the reason,
which is in the server log). The processor changes no logits (``apply`` returns them as they are,
and it is argmax-invariant, so greedy requests do not even run it).
"""

from __future__ import annotations

from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from .request_args import RequestArgsError, parse_request_args


class KVSchedArgsCheck(LogitsProcessor):
    """Validates ``extra_args`` (``vllm_xargs``) in the front end; a no-op on the logits."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        try:
            parse_request_args(sampling_params.extra_args)
        except RequestArgsError as exc:
            raise ValueError(f"kvsched arguments: {exc}") from None

    def __init__(self, vllm_config, device, is_pin_memory: bool) -> None:
        pass

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        pass

    def apply(self, logits):
        return logits
