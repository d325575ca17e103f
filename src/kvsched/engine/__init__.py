"""The simulator (DESIGN.md §1, §4).

- `rules`: the plain definition of every engine rule (tokens, KV, blocks, rejection);
- `memory`: `KVCache` and the KV conventions;
- `simulation`: `Simulation`, the reference core, steppable (`step`, `run`, `view`, `result`);
- `fastforward`: advancing stable decode batches many iterations at once (exact);
- `simulator`: `Simulator`, the engine's settings and the one-call run;
- `result`: `RunResult` (per-request records) and `IterationRecord`;
- `validation`: what the check of a decision produces;
- `compiled/`: numba kernels of the built-in policies (optional, same results).

Names load lazily, so that `kvsched.engine.rules` and `kvsched.engine.memory` import without the
simulator (the policies' views use them).
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "Simulator": "simulator", "Simulation": "simulation", "RunResult": "result",
    "IterationRecord": "result", "EventStabilityError": "fastforward", "KVCache": "memory",
    "KVConvention": "rules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kvsched.engine' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
