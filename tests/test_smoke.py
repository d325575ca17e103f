from kvsched import LinearCost, Simulator, default_workload
from kvsched.policies import make


def test_vllm_runs_default_workload_to_completion():
    workload = default_workload(200, seed=1)
    result = Simulator(LinearCost(0.01, 2e-7), 16492, block_size=16).run(workload, make("vllm"))
    summary = result.summary()
    assert summary.num_finished + summary.num_rejected == 200
    assert summary.peak_kv_utilization <= 1.0
