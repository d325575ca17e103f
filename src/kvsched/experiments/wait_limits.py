"""Reproduction R5: the stability limits of the WAIT paper in its authors' own simulator settings.

Ao, Luo, Simchi-Levi, Wang (arXiv 2504.11320) report, for p512d20 on one A100, stability limits
vLLM ≈ 19, Sarathi ≈ 22, WAIT ≈ 23 req/s. The authors ran Vidur (their fork ``Luoxiaogan/vidur_or``).
The settings below are read from the fork's paper-facing runner ``scripts/section6_single_type_reproduction.py``
(commit 0a0dcef; named by function and option, the index holds no line numbers) and the paper's ``papers/numerical.tex`` (commit 1ebb920):

- Llama-2-7B on one A100 80 GB (``build_parser``: ``--model-name`` default), TP 1;
- Vidur's ``vllm`` replica scheduler with Vidur's defaults (``build_specs`` passes no vLLM option
  beyond ``--replica_scheduler_config_type vllm``): batch cap 128, ``max_tokens_in_batch`` 4096, block 16, watermark 0.01 — kvsched's
  ``vllm`` in its V0 / Vidur mode (``bench/vidur_vllm_reference.py``: Vidur's rules iteration for
  iteration); Sarathi with chunk 512 and batch cap **256** (``build_specs``' ``Sarathi512_cap256``,
  ``--sarathi-batch-size-cap`` default 256);
- KV capacity from Vidur's MemoryPlanner with the runner's memory margin **0.01** (``--memory-margin-fraction`` default) and
  request ``max_tokens`` = prompt + output = **532** (``build_specs``:
  ``max_tokens = args.prefill + args.decode``): 258 request slots × 33 blocks of 16
  = 136,224 tokens for Llama-2-7B — the paper's "approximately 1.37 × 10^5 tokens" after weights and
  the 1 % margin. (Vidur's defaults, margin 0.1 and 4096-token slots, give 118,784: what this target
  used before.) Llama-3-8B, the model the fork's older scripts and the Figure-B plot script name, with
  the same settings: `vidur_kv_capacity` (GQA, 8 KV heads);
- requests: Poisson arrivals, prompt 512 and Vidur's ``decode: 20``, which is 20 output tokens;
- batch times: Vidur's A100 profiles, through kvsched's calibrated presets fitted to them;
- ``wait``: plain WAIT at the threshold n maximising n / τ(n) under the preset's batch time and the
  capacity (`authors_wait_threshold`). The paper's WAIT is the fork's chunked variant
  (``general_nested_chunked``, chunk 256, total limit tuned per rate over ``--tl-values`` 20–50,
  the best run per rate kept by ``select_winners``): not modelled here.

Two tables. Limits: `kvsched.analysis.capacity.find_capacity` (mean latency over n vs 2n requests),
bisection. The paper's protocol (numerical.tex §6 and the fork's ``scripts/plot_figure_B_compare.py``):
mean end-to-end latency of 5,000 requests at integer rates 12–24, and λ* read off by eye where the
latency curve jumps (the plot script sets each μ by hand, vLLM's at 19 because its mean latency
jumps to 6.95 s at λ = 20); `latency_table` prints our mean latency at the rates where the paper gives numbers (its
Table "Repeated-run reproducibility", appendix_b_additional.tex: λ = 22 and 23; vLLM at 20 from the
plot script).
"""

from __future__ import annotations

import time

import numpy as np

from ..cost.models import BatchStats
from ..cost.presets import LLAMA2_7B, LLAMA3_8B, get_preset

PAPER_LIMITS = {"vllm": 19.0, "sarathi": 22.0, "wait": 23.0}      # p512d20, req/s
#: The paper's mean end-to-end latencies (s) of p512d20, Llama-2-7B: Table "Repeated-run
#: reproducibility" (appendix_b_additional.tex, 20 runs, λ = 22, 23) and, for vLLM at λ = 20, the
#: comment of the Figure-B plot script that sets its μ = 19.
PAPER_LATENCY = {"vllm": {20: 6.95, 22: 18.23, 23: 26.78}, "sarathi": {22: 1.85, 23: 5.08},
                 "wait": {22: 1.03, 23: 1.29}}
LATENCY_RATES = (20, 22, 23)
PAPER_NUM_REQUESTS = 5000        # the runner's --nreq default
PAPER_MEMORY_MARGIN = 0.01       # the runner's --memory-margin-fraction default
MODELS = {"llama2-7b": ("llama2-7b-a100", LLAMA2_7B), "llama3-8b": ("llama3-8b-a100", LLAMA3_8B)}
WORKLOAD = "p512d19@1"          # Vidur's prefill 512, decode 20: 20 output tokens (19 decode stages)
VIDUR_BLOCK = 16
VIDUR_V0 = dict(enable_chunked_prefill=False, prefill_first=True, padded_prefill_budget=True,
                preempt_victim="last_arrived", decode_needs_free_block=True, watermark=0.01,
                max_num_batched_tokens=4096, max_num_seqs=128)
VIDUR_SARATHI = dict(chunk_size=512, max_num_seqs=256, watermark=0.01)   # the runner's Sarathi512_cap256
POLICIES = ("vllm", "sarathi", "wait")


def vidur_kv_capacity(shape, *, gpu_bytes: int = 80 * 1024**3, margin: float = 0.1, max_tokens: int = 4096,
                      block_size: int = VIDUR_BLOCK) -> int:
    """Vidur's MemoryPlanner capacity in tokens (TP 1): request slots of ``max_tokens`` KV tokens
    in what the weights (attention and gated MLP only, fp16) leave of (1 − margin) of the GPU, each
    slot ``max_tokens // block_size`` blocks (vidur/scheduler/utils/memory_planner.py and
    base_replica_scheduler.py). The defaults are Vidur's; the paper's runner uses `paper_capacity`."""
    head = shape.hidden_size // shape.num_q_heads
    per_layer = shape.hidden_size * head * (2 * shape.num_q_heads + 2 * shape.num_kv_heads) \
        + 3 * shape.hidden_size * shape.intermediate_size
    free = gpu_bytes * (1 - margin) - 2 * per_layer * shape.num_layers
    slot = 2 * 2 * head * shape.num_kv_heads * max_tokens * shape.num_layers
    return int(free // slot) * (max_tokens // block_size) * block_size


def paper_capacity(shape, prompt: int, output: int) -> int:
    """The capacity of the authors' paper-facing runs: memory margin 0.01, ``max_tokens`` = prompt + output."""
    return vidur_kv_capacity(shape, margin=PAPER_MEMORY_MARGIN, max_tokens=prompt + output)


def wait_batch(n: int, prompt: int, stages: int) -> BatchStats:
    """WAIT's steady batch at threshold n: n prompts of each type prefilled, n requests per decode stage."""
    contexts = [prompt + s for s in range(1, stages + 1)]
    return BatchStats(num_prefill_tokens=n * prompt, num_prefill_seqs=n, num_decode_seqs=n * stages,
                      prefill_context_tokens=n * prompt, prefill_attention_work=n * prompt * prompt,
                      decode_context_tokens=n * sum(contexts))


def authors_wait_threshold(cost, capacity: int, prompt: int, stages: int) -> int:
    """The n maximising the sustainable rate n / τ(n) with τ the preset's own batch time, under
    the KV bound n·Σ_s (l + s) ≤ C (rounded up to blocks per request)."""
    per_request = sum(-(-(prompt + s) // VIDUR_BLOCK) * VIDUR_BLOCK for s in range(stages + 1))
    top = max(1, capacity // per_request)
    return max(range(1, top + 1), key=lambda n: n / cost.iteration_time(wait_batch(n, prompt, stages)))


def reproduce(*, models=tuple(MODELS), policies=POLICIES, num_requests: int = 3000, num_seeds: int = 3,
              lo: float = 10.0, hi: float = 40.0, precision: float = 0.02, latency_rates=LATENCY_RATES,
              latency_requests: int = PAPER_NUM_REQUESTS, progress=None) -> dict:
    """{model: {"capacity": C, "wait_threshold": n, "rows": [{policy, limit, unstable, paper, seconds}],
    "latency": [{policy, rate, mean_latency, paper}]}}: limits by the n-vs-2n test, and mean latency
    of ``latency_requests`` requests (``num_seeds`` seeds averaged) at ``latency_rates``, the paper's
    protocol."""
    from ..analysis.capacity import find_capacity
    from ..engine.simulator import Simulator
    from ..policies import make
    from ..workload.typed import parse_mix, synthesize_typed
    mix = parse_mix(WORKLOAD)
    t = mix.types[0]
    out = {}
    for model in models:
        preset_name, shape = MODELS[model]
        cost = get_preset(preset_name).cost
        capacity = paper_capacity(shape, t.num_prompt_tokens, t.num_decode_stages + 1)
        n = authors_wait_threshold(cost, capacity, t.num_prompt_tokens, t.num_decode_stages)
        factories = {"vllm": lambda: make("vllm", **VIDUR_V0), "sarathi": lambda: make("sarathi", **VIDUR_SARATHI),
                     "wait": lambda: make("wait", thresholds=str(n))}
        sim = Simulator(cost, capacity, block_size=VIDUR_BLOCK)
        rows, latency = [], []
        for policy in policies:
            started = time.perf_counter()
            make_policy = factories[policy]
            result = find_capacity(
                sim, lambda r: make_policy(),
                lambda r, k, s: synthesize_typed(mix.with_total_rate(r), k, np.random.default_rng(s)),
                lo=lo, hi=hi, num_requests=num_requests, num_seeds=num_seeds, rel_precision=precision)
            rows.append({"policy": policy, "limit": result.rate, "unstable": result.unstable_rate,
                         "paper": PAPER_LIMITS[policy], "seconds": time.perf_counter() - started})
            latency.extend(latency_table(sim, make_policy, mix, policy, latency_rates, latency_requests, num_seeds))
            if progress is not None:
                progress(model, policy)
        out[model] = {"preset": preset_name, "capacity": capacity, "wait_threshold": n,
                      "num_requests": num_requests, "num_seeds": num_seeds, "rows": rows,
                      "latency_requests": latency_requests, "latency": latency}
    return out


def latency_table(sim, make_policy, mix, policy: str, rates, num_requests: int, num_seeds: int) -> list[dict]:
    """Mean end-to-end latency (all requests, seeds 0..num_seeds−1 averaged) at each rate, beside the
    paper's where it gives one (None otherwise)."""
    from ..workload.typed import synthesize_typed
    out = []
    for rate in rates:
        total = 0.0
        for seed in range(num_seeds):
            workload = synthesize_typed(mix.with_total_rate(rate), num_requests, np.random.default_rng(seed))
            total += sim.run(workload, make_policy()).summary().mean_latency
        out.append({"policy": policy, "rate": rate, "mean_latency": total / num_seeds,
                    "paper": PAPER_LATENCY.get(policy, {}).get(rate)})
    return out


def render(report: dict, console) -> None:
    from rich.table import Table
    for model, data in report.items():
        table = Table(title=f"R5: stability limits (req/s), p512d20, {model} on A100 in the WAIT authors' "
                            f"Vidur settings (C = {data['capacity']:,} tokens, wait n = {data['wait_threshold']})")
        for col in ("policy", "limit (ours)", "unstable at", "paper"):
            table.add_column(col, justify="left" if col == "policy" else "right")
        for row in data["rows"]:
            table.add_row(row["policy"], f"{row['limit']:.2f}", f"{row['unstable']:.2f}", f"≈ {row['paper']:g}")
        console.print(table)
        if data.get("latency"):
            lat = Table(title=f"R5, the paper's protocol: mean latency (s) of {data['latency_requests']:,} requests, "
                              f"{model}")
            for col in ("policy", "rate", "mean latency (ours)", "paper"):
                lat.add_column(col, justify="left" if col == "policy" else "right")
            for row in data["latency"]:
                paper = "–" if row["paper"] is None else f"{row['paper']:g}"
                lat.add_row(row["policy"], f"{row['rate']:g}", f"{row['mean_latency']:.2f}", paper)
            console.print(lat)
    console.print("paper: vLLM ≈ 19, Sarathi ≈ 22, WAIT ≈ 23 req/s (Llama-2-7B, A100), read off mean-latency curves "
                  "(5,000 requests). Measured (3,000 vs 6,000 requests, 3 seeds): Sarathi and WAIT within 7% and 11%, "
                  "vLLM 28–30% above and not last; the runner's capacity (margin 0.01) and Sarathi's cap 256 do not "
                  "bind here (the limits equal those at 118,784 tokens and cap 128). Our vLLM's mean latency at "
                  "λ = 22 is 2.5 s where the paper's is 18.2 s (its service rate ≈ 18.5 req/s): no setting or "
                  "scheduling rule of the fork explains it; Vidur's own predictions in the fork (a 512-token prefill "
                  "37.1 ms, ours 35.8; decode batches of 1–64 within −8% to +17% of ours) leave a 25% slower "
                  "vLLM unexplained. "
                  "Our wait is plain WAIT; the paper's is the fork's chunked variant (chunk 256, limit tuned per rate)")


__all__ = ["LATENCY_RATES", "MODELS", "PAPER_LATENCY", "PAPER_LIMITS", "POLICIES", "VIDUR_SARATHI", "VIDUR_V0",
           "authors_wait_threshold", "latency_table", "paper_capacity", "render", "reproduce", "vidur_kv_capacity",
           "wait_batch"]
