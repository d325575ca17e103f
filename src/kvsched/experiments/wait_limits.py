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
  used before.) Llama-3-8B runs in Figure B's settings instead (below): margin 0.1, vLLM and Sarathi
  caps 512, 479,424 tokens (`vidur_kv_capacity`; GQA, 8 KV heads);
- requests: Poisson arrivals, prompt 512 and Vidur's ``decode: 20``, which is 20 output tokens;
- batch times: Vidur's A100 profiles, through kvsched's calibrated presets fitted to them;
- ``wait``: plain WAIT at the threshold n maximising n / τ(n) under the preset's batch time and the
  capacity (`authors_wait_threshold`). The paper's WAIT is the fork's chunked variant
  (``general_nested_chunked``, chunk 256, total limit tuned per rate over ``--tl-values`` 20–50,
  the best run per rate kept by ``select_winners``): not modelled here.

Which runs the paper's figures come from (the fork's own provenance notes, read in the index at
the commits named): the paper's text says Llama-2-7B and C ≈ 1.37 × 10^5, but its Figure B, the
vLLM limit ≈ 19 read off it, and the mean latencies at λ = 22 / 23 (vLLM 18.227 / 26.783 s, Sarathi
1.853 / 5.076, WAIT 1.025 / 1.292) are ``experiments.db`` rows of **Meta-Llama-3-8B** at memory
margin **0.1** with Sarathi's and vLLM's batch cap **512** (``docs/progress/
2026_04_26_single_type_reproduction_provenance.md``, commit 9f92a81: "Vidur on a single A100 with
`meta-llama/Meta-Llama-3-8B`", "`batch_size_cap=512`"; ``scripts/profile_baselines.py``, commit
25bb378, the runs behind them: ``--vllm_scheduler_config_batch_size_cap 512``, margin 0.1,
``max_tokens`` 532, 5,000 requests, the mean over the requests [n/4, n − 500) in id order). The
authors' later rerun in the paper-facing runner's Llama-2-7B settings
(``docs/progress/2026_05_07_single_type_l2_cap256_reproduction.md``, commit 0a0dcef) put Sarathi at
0.985 / 1.255 / 2.668 s at λ = 22 / 23 / 24 (untrimmed mean of 5,000) and its boundary "about two
arrival-rate units later"; it records no vLLM figure. So each model here runs in the settings of
the runs the fork holds for it (`SETTINGS`): ``llama2-7b`` the paper-facing runner's (above),
beside the authors' Llama-2 rerun; ``llama3-8b`` Figure B's (margin 0.1, caps 512, the trimmed
mean), beside the paper's figures.

Two tables. Limits: `kvsched.analysis.capacity.find_capacity` (mean latency over n vs 2n requests),
bisection. The paper's protocol (numerical.tex §6 and the fork's ``scripts/plot_figure_B_compare.py``):
mean end-to-end latency of 5,000 requests at integer rates 12–24, and λ* read off by eye where the
latency curve jumps (the plot script sets each μ by hand, vLLM's at 19 because its mean latency
jumps to 6.95 s at λ = 20); `latency_table` prints our mean latency, in the metric of the runs
compared with, beside the fork's figure at the same rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..cost.models import BatchStats
from ..cost.presets import LLAMA2_7B, LLAMA3_8B, get_preset

PAPER_LIMITS = {"vllm": 19.0, "sarathi": 22.0, "wait": 23.0}      # p512d20, req/s (read off Figure B)
#: Figure B's mean end-to-end latencies (s), p512d20, Meta-Llama-3-8B in the settings of
#: `SETTINGS["llama3-8b"]`: λ = 22, 23 from the provenance note (the Table "Repeated-run
#: reproducibility" rows), vLLM at 20 from the plot script's comment, Sarathi and WAIT at 12–24
#: from docs/progress/2026_03_23_wait_cp_all_rates_win.md (commit d6003fd; the rows at 22 agree).
PAPER_LATENCY = {"vllm": {20: 6.95, 22: 18.227, 23: 26.783},
                 "sarathi": {12: 0.480, 14: 0.552, 16: 0.650, 18: 0.784, 20: 0.987, 22: 1.853, 23: 5.076,
                             24: 9.865},
                 "wait": {12: 0.469, 14: 0.528, 16: 0.603, 18: 0.699, 20: 0.824, 22: 1.025, 23: 1.292, 24: 2.775}}
#: The authors' Llama-2-7B rerun in the paper-facing runner's settings (`SETTINGS["llama2-7b"]`;
#: docs/progress/2026_05_07_single_type_l2_cap256_reproduction.md, commit 0a0dcef): untrimmed mean
#: of 5,000 requests, Sarathi512 cap 256 and the best WAIT of the tl grid per rate; no vLLM figure.
AUTHORS_LLAMA2_LATENCY = {"vllm": {},
                          "sarathi": {12: 0.4087, 14: 0.4690, 16: 0.5451, 18: 0.6455, 20: 0.7730, 21: 0.8617,
                                      22: 0.9847, 23: 1.2548, 24: 2.6675},
                          "wait": {20: 0.7436, 22: 0.9505, 23: 1.2062, 24: 1.7354}}
LATENCY_RATES = (20, 22, 23, 24)
PAPER_NUM_REQUESTS = 5000        # the runner's --nreq default
PAPER_MEMORY_MARGIN = 0.01       # the runner's --memory-margin-fraction default
FIGURE_B_MEMORY_MARGIN = 0.1     # scripts/profile_baselines.py's --replica_config_memory_margin_fraction
FIGURE_B_TAIL = 500              # profile_baselines.py's metric(): requests [n // 4, n - 500)
MODELS = {"llama2-7b": ("llama2-7b-a100", LLAMA2_7B), "llama3-8b": ("llama3-8b-a100", LLAMA3_8B)}
WORKLOAD = "p512d19@1"          # Vidur's prefill 512, decode 20: 20 output tokens (19 decode stages)
VIDUR_BLOCK = 16
VIDUR_V0 = dict(enable_chunked_prefill=False, prefill_first=True, padded_prefill_budget=True,
                preempt_victim="last_arrived", decode_needs_free_block=True, watermark=0.01,
                max_num_batched_tokens=4096, max_num_seqs=128)
VIDUR_SARATHI = dict(chunk_size=512, max_num_seqs=256, watermark=0.01)   # the runner's Sarathi512_cap256


@dataclass(frozen=True)
class ModelSetting:
    """The Vidur settings of the fork's runs of one model, and the figures they produced."""

    memory_margin: float            # Vidur's --replica_config_memory_margin_fraction
    vllm_max_num_seqs: int          # --vllm_scheduler_config_batch_size_cap (Vidur's default 128)
    sarathi_max_num_seqs: int       # --sarathi_scheduler_config_batch_size_cap
    trimmed: bool                   # the mean over requests [n // 4, n - 500) (else all requests)
    reference: dict                 # policy -> {rate: mean latency (s)} of the fork's runs
    source: str


SETTINGS = {
    "llama2-7b": ModelSetting(PAPER_MEMORY_MARGIN, 128, 256, False, AUTHORS_LLAMA2_LATENCY,
                              "the authors' Llama-2 rerun (paper-facing runner)"),
    "llama3-8b": ModelSetting(FIGURE_B_MEMORY_MARGIN, 512, 512, True, PAPER_LATENCY,
                              "the paper's Figure B (experiments.db)"),
}
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


def paper_capacity(shape, prompt: int, output: int, *, margin: float = PAPER_MEMORY_MARGIN) -> int:
    """The capacity of the authors' runs: ``max_tokens`` = prompt + output, memory margin 0.01 (the
    paper-facing runner; Figure B's Llama-3-8B runs used 0.1)."""
    return vidur_kv_capacity(shape, margin=margin, max_tokens=prompt + output)


def trimmed_mean(latency: np.ndarray) -> float:
    """Figure B's metric (the fork's ``profile_baselines.py``, ``metric``): the mean over the
    requests [n // 4, max(n // 4 + 1, n − 500)) in request order."""
    n = len(latency)
    start = n // 4
    return float(np.mean(latency[start:max(start + 1, n - FIGURE_B_TAIL)]))


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
    of ``latency_requests`` requests (``num_seeds`` seeds averaged) at ``latency_rates`` in the
    metric of the fork's runs of that model, beside their figure (`SETTINGS`)."""
    from ..analysis.capacity import find_capacity
    from ..workload.typed import synthesize_typed
    out = {}
    for model in models:
        sim, mix, n, factories = model_setup(model)
        preset_name, setting, capacity = MODELS[model][0], SETTINGS[model], sim.kv_capacity_tokens
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
            latency.extend(latency_table(sim, make_policy, mix, policy, latency_rates, latency_requests, num_seeds,
                                         reference=setting.reference, trimmed=setting.trimmed))
            if progress is not None:
                progress(model, policy)
        out[model] = {"preset": preset_name, "capacity": capacity, "wait_threshold": n,
                      "memory_margin": setting.memory_margin, "vllm_max_num_seqs": setting.vllm_max_num_seqs,
                      "sarathi_max_num_seqs": setting.sarathi_max_num_seqs, "trimmed": setting.trimmed,
                      "reference": setting.source,
                      "num_requests": num_requests, "num_seeds": num_seeds, "rows": rows,
                      "latency_requests": latency_requests, "latency": latency}
    return out


def model_setup(model: str):
    """(simulator, workload mix, WAIT's threshold, policy -> factory) of `model` in the settings of
    the fork's runs of it (`SETTINGS`): the target's and `bench/capacity_limits.py`'s."""
    from ..engine.simulator import Simulator
    from ..workload.typed import parse_mix
    preset_name, shape = MODELS[model]
    setting = SETTINGS[model]
    cost = get_preset(preset_name).cost
    mix = parse_mix(WORKLOAD)
    t = mix.types[0]
    capacity = paper_capacity(shape, t.num_prompt_tokens, t.num_decode_stages + 1, margin=setting.memory_margin)
    n = authors_wait_threshold(cost, capacity, t.num_prompt_tokens, t.num_decode_stages)
    return Simulator(cost, capacity, block_size=VIDUR_BLOCK), mix, n, policy_factories(setting, n)


def policy_factories(setting: ModelSetting, wait_threshold: int) -> dict:
    """policy -> a factory of it in ``setting``'s batch caps (vLLM in its V0 / Vidur mode)."""
    from ..policies import make
    vllm = {**VIDUR_V0, "max_num_seqs": setting.vllm_max_num_seqs}
    sarathi = {**VIDUR_SARATHI, "max_num_seqs": setting.sarathi_max_num_seqs}
    return {"vllm": lambda: make("vllm", **vllm), "sarathi": lambda: make("sarathi", **sarathi),
            "wait": lambda: make("wait", thresholds=str(wait_threshold))}


def latency_table(sim, make_policy, mix, policy: str, rates, num_requests: int, num_seeds: int, *,
                  reference: dict | None = None, trimmed: bool = False) -> list[dict]:
    """Mean end-to-end latency (seeds 0..num_seeds−1 averaged; over all requests, or
    `trimmed_mean`'s window) at each rate, beside ``reference``'s figure (default the paper's
    Figure B) where it gives one (None otherwise)."""
    from ..workload.typed import synthesize_typed
    reference = PAPER_LATENCY if reference is None else reference
    out = []
    for rate in rates:
        total = 0.0
        for seed in range(num_seeds):
            workload = synthesize_typed(mix.with_total_rate(rate), num_requests, np.random.default_rng(seed))
            result = sim.run(workload, make_policy())
            if trimmed:
                total += trimmed_mean(result.finish_time - result.arrival_time)
            else:
                total += result.summary().mean_latency
        out.append({"policy": policy, "rate": rate, "mean_latency": total / num_seeds,
                    "paper": reference.get(policy, {}).get(rate)})
    return out


def render(report: dict, console) -> None:
    from rich.table import Table
    for model, data in report.items():
        table = Table(title=f"R5: stability limits (req/s), p512d20, {model} on A100 in the WAIT authors' "
                            f"Vidur settings (C = {data['capacity']:,} tokens at margin {data['memory_margin']:g}, "
                            f"caps vllm {data['vllm_max_num_seqs']} / sarathi {data['sarathi_max_num_seqs']}, "
                            f"wait n = {data['wait_threshold']})")
        for col in ("policy", "limit (ours)", "unstable at", "paper"):
            table.add_column(col, justify="left" if col == "policy" else "right")
        for row in data["rows"]:
            table.add_row(row["policy"], f"{row['limit']:.2f}", f"{row['unstable']:.2f}", f"≈ {row['paper']:g}")
        console.print(table)
        if data.get("latency"):
            metric = "requests [n/4, n − 500)" if data.get("trimmed") else "all requests"
            lat = Table(title=f"R5, the paper's protocol: mean latency (s) of {data['latency_requests']:,} requests "
                              f"({metric}), {model}, beside {data.get('reference', 'the paper')}")
            for col in ("policy", "rate", "mean latency (ours)", "fork"):
                lat.add_column(col, justify="left" if col == "policy" else "right")
            for row in data["latency"]:
                paper = "–" if row["paper"] is None else f"{row['paper']:g}"
                lat.add_row(row["policy"], f"{row['rate']:g}", f"{row['mean_latency']:.2f}", paper)
            console.print(lat)
    console.print("paper: vLLM ≈ 19, Sarathi ≈ 22, WAIT ≈ 23 req/s, read off Figure B's mean-latency curves of "
                  "5,000 requests, which the fork's provenance note dates to Meta-Llama-3-8B (memory margin 0.1, vLLM "
                  "and Sarathi caps 512; mean over requests [n/4, n − 500)), though the paper's text says Llama-2-7B. "
                  "llama2-7b runs the paper-facing runner's settings beside the authors' own Llama-2 rerun (no vLLM "
                  "figure; its Sarathi boundary lies about two rates above Figure B's); llama3-8b runs Figure B's "
                  "settings beside Figure B, where both baselines run slower in the fork than here (Sarathi 0.99 s "
                  "at λ = 20, ours 0.73: bench/capacity_limits.py --settings figure-b scales our batch times to "
                  "match). Our wait is plain WAIT; the paper's is the fork's chunked variant "
                  "(chunk 256, limit tuned per rate)")


__all__ = ["AUTHORS_LLAMA2_LATENCY", "LATENCY_RATES", "MODELS", "PAPER_LATENCY", "PAPER_LIMITS", "POLICIES",
           "SETTINGS", "VIDUR_SARATHI", "VIDUR_V0", "ModelSetting", "authors_wait_threshold", "latency_table", "model_setup",
           "paper_capacity", "policy_factories", "render", "reproduce", "trimmed_mean", "vidur_kv_capacity",
           "wait_batch"]
