"""vLLM's V1 scheduler without a model: build one, feed it requests, play the model's part.

The way vLLM's own scheduler tests (``tests/v1/core``) work: a `VllmConfig` whose model config is
read from a local ``config.json`` (the tiny Llama), a `KVCacheConfig` with one full-attention
group of ``num_blocks`` blocks, and the scheduler class built directly. `fake_model_output`
answers a `SchedulerOutput` as the model runner would: one sampled token for every request whose
scheduled tokens reach the end of its known tokens. The scheduler's bookkeeping (block pool,
queues, preemption, finishing) is vLLM's own; only the forward pass is missing, so a step costs
the scheduler's time alone (bench/serving_overhead.py) and a test needs no engine start.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class HarnessConfig:
    model: str                          # a directory with a config.json (the tiny Llama)
    num_blocks: int = 1024              # includes vLLM's null block
    block_size: int = 32
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 256
    max_model_len: int = 2048
    async_scheduling: bool = False
    enable_prefix_caching: bool = False
    additional_config: dict | None = None


def build_vllm_config(cfg: HarnessConfig):
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    model_config = ModelConfig(model=cfg.model, skip_tokenizer_init=True, dtype="bfloat16", seed=0,
                               max_model_len=cfg.max_model_len)
    scheduler_config = SchedulerConfig(max_num_seqs=cfg.max_num_seqs,
                                       max_num_batched_tokens=cfg.max_num_batched_tokens,
                                       max_model_len=cfg.max_model_len, enable_chunked_prefill=True,
                                       is_encoder_decoder=False)
    cache_config = CacheConfig(block_size=cfg.block_size, enable_prefix_caching=cfg.enable_prefix_caching)
    vllm_config = VllmConfig(model_config=model_config, scheduler_config=scheduler_config,
                             cache_config=cache_config, additional_config=cfg.additional_config or {})
    # The CPU platform turns async scheduling off while the config is checked; set it after, as
    # a GPU build would leave it, to see what the scheduler does with it.
    vllm_config.scheduler_config.async_scheduling = cfg.async_scheduling
    return vllm_config


def build_scheduler(cfg: HarnessConfig, scheduler_cls: Any = None):
    """A scheduler of `scheduler_cls` (vLLM's `Scheduler` by default) over `num_blocks` KV blocks."""
    import torch
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager
    vllm_config = build_vllm_config(cfg)
    kv_cache_config = KVCacheConfig(
        num_blocks=cfg.num_blocks, kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer"], FullAttentionSpec(
            block_size=cfg.block_size, num_kv_heads=1, head_size=16, dtype=torch.bfloat16))])
    vllm_config.cache_config.num_gpu_blocks = cfg.num_blocks
    cls = scheduler_cls or Scheduler
    return cls(vllm_config=vllm_config, kv_cache_config=kv_cache_config,
               structured_output_manager=StructuredOutputManager(vllm_config),
               block_size=cfg.block_size, log_stats=False)


def request_block_hasher(scheduler):
    """The block hasher vLLM's engine core gives every request when prefix caching is on (None
    when off): without it a request has no block hashes, and caching its full blocks fails."""
    cache_config = scheduler.cache_config
    if not cache_config.enable_prefix_caching:
        return None
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    hash_fn = get_hash_fn_by_name(cache_config.prefix_caching_hash_algo)
    init_none_hash(hash_fn)
    return get_request_block_hasher(scheduler.block_size, hash_fn)


def make_request(prompt_tokens: int, max_tokens: int, *, request_id: str | None = None,
                 extra_args: dict | None = None, sampling_params=None, block_hasher=None):
    """A vLLM `Request` of `prompt_tokens` token ids that outputs exactly `max_tokens` tokens.
    With prefix caching on, pass the scheduler's `request_block_hasher`. The prompts share
    their prefix (token ids 3, 4, ...): with caching, every request hits the others' blocks."""
    # (not ``from vllm import``: vLLM's lazy module __getattr__ leaves a few small objects behind
    # at each call, which the memory tests would count)
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request
    params = sampling_params or SamplingParams(max_tokens=max_tokens, ignore_eos=True,
                                               extra_args=extra_args)
    rid = request_id if request_id is not None else f"req-{next(_counter)}"
    return Request(request_id=rid, prompt_token_ids=[3 + (i % 500) for i in range(prompt_tokens)],
                   sampling_params=params, pooling_params=None, block_hasher=block_hasher)


def fake_model_output(scheduler, output):
    """The model runner's answer to `output`: a token for each request whose prefill is done."""
    from vllm.v1.outputs import ModelRunnerOutput
    req_ids = list(output.num_scheduled_tokens)
    sampled = []
    for rid in req_ids:
        request = scheduler.requests[rid]
        done = request.num_computed_tokens >= request.num_tokens      # after _update_after_schedule
        sampled.append([7] if done else [])
    return ModelRunnerOutput(req_ids=req_ids, req_id_to_index={r: i for i, r in enumerate(req_ids)},
                             sampled_token_ids=sampled, logprobs=None, prompt_logprobs_dict={},
                             pooler_output=[])


def step(scheduler):
    """One engine step without a model: schedule, answer, update. Returns (output, engine outputs)."""
    output = scheduler.schedule()
    return output, scheduler.update_from_output(output, fake_model_output(scheduler, output))
