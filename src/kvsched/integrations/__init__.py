"""Integrations with real serving engines.

- `kvsched.integrations.vllm`: `KVSchedScheduler`, a vLLM V1 scheduler class (``--scheduler-cls``)
  that runs any kvsched policy inside a real vLLM engine, and `RecordingScheduler`, vLLM's own
  scheduler with the same per-step trace (needs the ``vllm`` extra).
- `kvsched.integrations.vllm.driver`: drive an in-process vLLM engine with a kvsched `Workload` on a
  virtual or wall clock, and compare its trace with the simulator's.
- `kvsched.integrations.vllm.tiny_model`: a tiny random-weight Llama for tests (no download).

Nothing here is imported by ``import kvsched``: vLLM and torch load only when these modules do.
"""
