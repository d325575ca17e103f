"""`kvsched reproduce past-future`: LightLLM's Past-Future admission in its artifact's setting.

Gong et al., ASPLOS 2025 (arXiv 2507.10150); artifact ``WuSiYu/lightllm-ae``, ``behavior-analysis/``:
a behaviour simulator with KV capacity 120,000 tokens, a backlog always waiting (all requests at
t = 0 here), 10 decode steps between admission steps, at most 32,768 prompt tokens admitted per
step, memory = prompt + tokens decoded, the newest request evicted on overflow *for free* (it keeps
its progress). Three length distributions of 3,000 requests (uniform integers):
1 decode-heavy s in [32, 4096], o in [2048, 4096]; 2 balanced s, o in [3000, 5000];
3 prefill-heavy s in [2048, 4096], o in [32, 4096]. It prints memory utilisation (mean KV / M over
steps) and evicted requests (evictions / requests).

Here: the same capacity, distributions and cadence in kvsched's engine (EMITTED s + j, block 1),
where an eviction recomputes. Under ``--cost unit`` a recomputation costs one round, as near to
the artifact's free eviction as the engine comes; ``--cost preset:NAME`` prices prefill and
recomputation, which the artifact's model leaves out. The artifact's admission rules map to:
past-future -> `past-future`; aggressive (admit what fits now, keep 1 % free, LIFO preemption) ->
`vllm` with a 1 % watermark; true length ("theoretical optimum") -> `mc-benchmark` with the true
lengths; conservative (reserve s + 4096 each) -> `mc-benchmark` with every prediction 4096 (a peak
check, looser than the artifact's plain sum of reservations).
"""

from __future__ import annotations

import numpy as np

from ..engine.rules import KVConvention
from ..engine.simulator import Simulator
from ..policies.registry import make, parse_policy_spec
from ..workload.predictors import apply_predictor
from ..workload.synthetic import Workload
from .scenario import parse_cost

M = 120_000
DISTRIBUTIONS = {"1 decode-heavy": ((32, 4096), (2048, 4096)), "2 balanced": ((3000, 5000), (3000, 5000)),
                 "3 prefill-heavy": ((2048, 4096), (32, 4096))}
#: The artifact's admission rule -> (kvsched policy spec, predictor).
RULES = {"past-future": ("past-future:prefill_interval=10;max_prefill_tokens=32768", "exact"),
         "aggressive": ("vllm:max_num_batched_tokens=32768;watermark=0.01", "exact"),
         "true-length": ("mc-benchmark", "exact"),
         "conservative": ("mc-benchmark", "naive:lo=4096,hi=4096")}
#: What the artifact's behaviour simulator printed (seed 0, 3,000 requests), per distribution:
#: (memory utilisation %, evicted %); None where it printed no eviction figure.
ARTIFACT = {"past-future": ((93.42, 8.55), (92.02, 6.87), (94.57, 2.72)),
            "aggressive": ((98.45, 97.9), (97.85, 94.6), (98.14, 36.4)),
            "true-length": ((94.5, 0.0), (92.5, 0.0), (96.6, 0.0)),
            "conservative": ((57.6, None), (71.8, None), (59.7, None))}


def backlog(prompt_range, output_range, n: int, seed: int) -> Workload:
    """n requests at t = 0 with uniform integer lengths (bounds inclusive, as random.randint)."""
    rng = np.random.default_rng(seed)
    s = rng.integers(prompt_range[0], prompt_range[1] + 1, n)
    o = rng.integers(output_range[0], output_range[1] + 1, n)
    return Workload.build(np.zeros(n), s, o, name="artifact backlog")


def reproduce(num_requests: int = 3000, seed: int = 0, cost: str = "unit", progress=None) -> dict:
    """Every (distribution, rule): ours beside the artifact's figures."""
    sim = Simulator(parse_cost(cost).cost, M, kv_convention=KVConvention.EMITTED)
    rows = []
    for d, (name, (prompts, outputs)) in enumerate(DISTRIBUTIONS.items()):
        base = backlog(prompts, outputs, num_requests, seed)
        for rule, (spec, predictor) in RULES.items():
            policy_name, params = parse_policy_spec(spec)
            result = sim.run(apply_predictor(base, predictor), make(policy_name, **params), seed=seed)
            paper_util, paper_evicted = ARTIFACT[rule][d]
            rows.append(dict(
                distribution=name, rule=rule, policy=spec, predictor=predictor,
                memory_utilization=100 * result.kv_token_seconds / (result.busy_time * M),
                evicted=100 * float(result.num_evictions.sum()) / num_requests,
                recomputed=100 * float(result.num_recomputed_tokens.sum() / result.total_computed_tokens.sum()),
                mean_latency=float(np.mean(result.finish_time)),
                artifact_memory_utilization=paper_util, artifact_evicted=paper_evicted))
            if progress is not None:
                progress(len(rows), len(DISTRIBUTIONS) * len(RULES))
    return dict(target="past-future", num_requests=num_requests, seed=seed, cost=cost, kv_capacity=M,
                rows=rows)


def render(report: dict, console) -> None:
    from rich.table import Table
    table = Table(title=(f"Past-Future, the artifact's setting: {report['num_requests']} requests per "
                         f"distribution at t = 0, M = {M}, cost {report['cost']}, recompute on eviction "
                         "(the artifact's evictions are free)"), title_justify="left")
    for column in ("distribution", "rule", "mem util % (ours)", "mem util % (artifact)", "evicted % (ours)",
                   "evicted % (artifact)", "recomputed %", "mean latency"):
        table.add_column(column, justify="left" if column in ("distribution", "rule") else "right")
    for r in report["rows"]:
        artifact_evicted = "-" if r["artifact_evicted"] is None else f"{r['artifact_evicted']:.2f}"
        table.add_row(r["distribution"], r["rule"], f"{r['memory_utilization']:.2f}",
                      f"{r['artifact_memory_utilization']:.2f}", f"{r['evicted']:.2f}", artifact_evicted,
                      f"{r['recomputed']:.2f}", f"{r['mean_latency']:.4g}")
    console.print(table)
