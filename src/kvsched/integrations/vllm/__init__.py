"""kvsched inside vLLM V1 (needs the ``vllm`` extra).

- `scheduler`: `KVSchedScheduler` (``--scheduler-cls kvsched.integrations.vllm.KVSchedScheduler``)
  and `RecordingScheduler`;
- `driver`: drive an in-process engine with a kvsched `Workload`, compare with the simulator;
- `tiny_model`: a tiny random-weight Llama for tests.

The scheduler classes load lazily, so that importing `tiny_model` does not import vLLM.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name in ("KVSchedScheduler", "RecordingScheduler", "StepRecord", "EXTRA_ARGS_KEY"):
        from . import scheduler
        return getattr(scheduler, name)
    raise AttributeError(f"module 'kvsched.integrations.vllm' has no attribute {name!r}")
