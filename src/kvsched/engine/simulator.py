"""`Simulator`: the engine's settings, and the one-call run (DESIGN.md §1 and §4).

``Simulator(...).run(workload, policy)`` runs a `kvsched.engine.simulation.Simulation` to the end
(or the policy's numba kernel, `kvsched.engine.compiled`, when it has one: same records) and
returns its `RunResult`. The conventions of the engine are written once, in
`kvsched.engine.simulation`; its rules in `kvsched.engine.rules`; the fast path's contract in
`kvsched.engine.fastforward`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cost.models import CostModel
from ..errors import ConfigError
from ..workload.synthetic import Workload
from .fastforward import EventStabilityError  # noqa: F401  (public here too)
from .result import IterationRecord, RunResult  # noqa: F401  (public here too)
from .rules import Eviction, KVConvention
from .simulation import ProgressCallback, Simulation


@dataclass(frozen=True)
class Simulator:
    """Runs a policy over a workload under a cost model and a KV capacity.

    ``max_num_batched_tokens``: engine-wide token budget per iteration (None: unlimited).
    ``separate_batching``: every iteration holds only prefill work or only decodes.
    ``eviction``: what an evicted request keeps (`rules.Eviction`): RECOMPUTE (vLLM, the default)
    keeps its generated tokens and recomputes their KV; RESTART (the theory papers) discards them.
    ``record_iterations``: keep an `IterationRecord` per iteration (`RunResult.iterations`; the
    Python engine). ``record_token_gaps``: keep every gap between two consecutive tokens of a
    request (`RunResult.token_gaps`: 8 bytes per output token; every engine).
    ``fast``: fast-forward stable decode batches of `event_stable` policies
    (`kvsched.engine.fastforward`); False runs the reference loop. ``verify_stable``: step every boundary and check
    the `event_stable` promise (raises `EventStabilityError`). ``compiled``: run the built-in
    policies that have numba kernels (`kvsched.engine.compiled`; same results) compiled — None: when
    numba is installed and the run is supported, True: always (ConfigError if it cannot), False:
    never. ``prefix_caching``: vLLM V1's automatic prefix caching (`kvsched.engine.prefix_cache`;
    needs the COMPUTED convention); off by default, so the theory models stay as their papers
    state them.
    """

    cost: CostModel
    kv_capacity_tokens: int
    block_size: int = 1
    kv_convention: KVConvention = KVConvention.COMPUTED
    eviction: Eviction = Eviction.RECOMPUTE
    max_num_batched_tokens: int | None = None
    separate_batching: bool = False
    record_iterations: bool = False
    record_token_gaps: bool = False
    fast: bool = True
    verify_stable: bool = False
    compiled: bool | None = None
    prefix_caching: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kv_convention", KVConvention(self.kv_convention))
        object.__setattr__(self, "eviction", Eviction(self.eviction))
        if self.prefix_caching and self.kv_convention is not KVConvention.COMPUTED:
            raise ConfigError("prefix caching needs kv_convention='computed' (vLLM's convention); "
                              f"got {self.kv_convention.value!r}")
        if self.kv_capacity_tokens < self.block_size:
            raise ValueError("kv_capacity_tokens must hold at least one block")

    def run(self, workload: Workload, policy, *, seed: int | None = 0,
            progress: ProgressCallback | None = None) -> RunResult:
        """Simulate `workload` under `policy`. `seed` seeds the policy's own randomness (0 by
        default, so that runs are reproducible; None asks for fresh entropy)."""
        policy.reset(seed=seed)
        if self.compiled is not False:
            from . import compiled
            reason = compiled.unsupported(self, policy, workload)
            if reason is None:
                result = compiled.run(self, workload, policy, progress)
                if result is not None:
                    return result
            elif self.compiled:
                raise ConfigError(f"cannot run compiled: {reason}")
        simulation = Simulation(self, workload, policy, progress=progress, reset=False)
        simulation.run()
        return simulation.result()
