"""kvsched inside vLLM V1 (needs the ``vllm`` extra).

- `scheduler`: `KVSchedScheduler` (``--scheduler-cls kvsched.integrations.vllm.KVSchedScheduler``)
  and `RecordingScheduler`;
- `driver`: drive an in-process engine with a kvsched `Workload`, compare with the simulator;
- `tiny_model`: a tiny random-weight Llama and a tiny byte-level tokenizer for tests;
- `request_args`: the per-request kvsched arguments (``extra_args``, flat ``kvsched_*`` keys over
  HTTP) and the server's fallback predictions (no vLLM import);
- `limits`: the engine's limits given to the policy and to the simulator twin (no vLLM import);
- `validation`: ``KVSchedArgsCheck``, a no-op logits processor whose ``validate_params`` refuses
  malformed kvsched arguments in the API server (HTTP 400);
- `harness`: vLLM's scheduler without a model, for scheduler-level tests and
  bench/serving_overhead.py.

The scheduler classes load lazily, so that importing `tiny_model` does not import vLLM.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("KVSchedScheduler", "RecordingScheduler", "StepRecord", "EXTRA_ARGS_KEY"):
        from . import scheduler
        return getattr(scheduler, name)
    raise AttributeError(f"module 'kvsched.integrations.vllm' has no attribute {name!r}")
