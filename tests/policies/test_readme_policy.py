"""The README's "Writing a policy" example, run as a user would: saved as my_policy.py in a fresh
directory and run from there (in subprocesses, so its @register does not leak into this process's
registry)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Writing a policy\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    (tmp_path / "my_policy.py").write_text(readme_example(), encoding="utf-8")
    return tmp_path


def kvsched(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvsched", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_the_example_is_the_readme_section_s_first_python_block():
    code = readme_example()
    assert "class GreedyFCFS(Policy)" in code and "view.new_batch(" in code
    assert "num_free_blocks" not in code          # no hand-rolled free-block bookkeeping


def test_readme_policy_passes_check_policy(user_dir):
    proc = kvsched(user_dir, "check-policy", "my_policy:GreedyFCFS")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout and "10/10" in proc.stdout


def test_readme_policy_simulates_with_a_linear_cost(user_dir):
    proc = kvsched(user_dir, "simulate", "--policy", "my_policy:GreedyFCFS", "--cost",
                   "linear:d0=0.022,d1=8.7e-7", "--num-requests", "300", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    row = row[0] if isinstance(row, list) else row
    assert row["num_finished"] == 300


def test_readme_policy_runs_under_engine_token_budgets(user_dir):
    script = textwrap.dedent("""
        import json
        import numpy as np
        from kvsched import KVConvention, LinearCost, Simulator, default_workload
        from my_policy import GreedyFCFS

        workload = default_workload(num_requests=200, rate=8.0, seed=1)
        out = []
        for budget in (7, 64, 2048):
            for block_size, convention in ((16, KVConvention.COMPUTED), (1, KVConvention.EMITTED)):
                sim = Simulator(LinearCost(0.022, 8.7e-7), 6144, block_size=block_size,
                                kv_convention=convention, max_num_batched_tokens=budget)
                result = sim.run(workload, GreedyFCFS(chunk_size=256))
                out.append([budget, int((~result.rejected).sum()),
                            int(np.isfinite(result.finish_time).sum())])
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=user_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for budget, num_accepted, num_finished in json.loads(proc.stdout):
        assert num_finished == num_accepted == 200, budget
