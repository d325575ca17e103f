"""kvsched: simulate, bound and run KV-cache-aware LLM inference schedulers."""

from .cost.models import BatchStats, CostModel, LinearCost, UnitTime
from .engine.simulator import RunResult, Simulator
from .errors import InfeasibleDecisionError, KvschedError, StalledError, UserError, WorkloadError
from .engine.memory import KVCache
from .engine.rules import KVConvention
from .metrics import RunSummary, summarize
from .state import Decision, RequestView, SchedulerView
from .workload.synthetic import Workload, default_workload

__version__ = "0.1.0"

__all__ = [
    "BatchStats", "CostModel", "Decision", "InfeasibleDecisionError", "KVCache", "KVConvention",
    "KvschedError", "LinearCost", "RequestView", "RunResult", "RunSummary", "SchedulerView",
    "Simulator", "StalledError", "UnitTime", "UserError", "Workload", "WorkloadError",
    "default_workload", "summarize",
]
