"""Every ``--json`` command prints exactly one JSON document on stdout (issue 19).

They run through a real process, not typer's CliRunner: the HiGHS banner that used to break
``bound ip --json`` is written by C code straight to file descriptor 1, which the runner's captured
``sys.stdout`` never sees. ``json.loads`` of the whole stdout fails on a banner line, on a second
document and on NaN (not JSON), so each run checks all three. Sizes are the smallest that still
exercise the solver or the search (``bound exact`` at 12 requests builds several HiGHS models).

``engine-run --json`` needs vLLM; its stdout is parsed in
tests/integrations/vllm/test_cli_engine_run.py (marked ``engine``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SMALL = ["--num-requests", "30", "--rate", "4"]
TRACE = "num_prompt_tokens,num_output_tokens\n3,4\n2,6\n5,2\n4,3\n"

COMMANDS = [
    pytest.param(["simulate", "--json", *SMALL], dict, id="simulate"),
    pytest.param(["simulate", "--json", "--slo", "ttft=2,tpot=0.1", *SMALL], dict, id="simulate-slo"),
    pytest.param(["compare", "--json", *SMALL], list, id="compare"),
    pytest.param(["compare", "--policies", "mcsf,vllm", "--predictor", "exact", "--bound", "ip",
                  "--trace", "{trace}", "--rate", "0", "--cost", "unit", "--kv-capacity", "12",
                  "--block-size", "1", "--kv-convention", "emitted", "--json"], list, id="compare-bound-ip"),
    pytest.param(["compare", "--policies", "mcsf,vllm", "--predictor", "exact", "--bound", "exact",
                  "--trace", "{trace}", "--rate", "0", "--cost", "unit", "--kv-capacity", "12",
                  "--block-size", "1", "--kv-convention", "emitted", "--json"], list, id="compare-bound-exact"),
    pytest.param(["policies", "--json"], list, id="policies"),
    pytest.param(["check-policy", "vllm", "--json"], list, id="check-policy"),
    pytest.param(["presets", "--json"], list, id="presets"),
    *[pytest.param(["bound", method, "--num-requests", "6", "--time-limit", "10", "--json"], dict,
                   id=f"bound-{method}")
      for method in ("ip", "ip-strong", "exact", "semionline", "heuristic")],
    # The brute force ignores --time-limit; at 6 paper requests it searches for minutes.
    pytest.param(["bound", "bruteforce", "--num-requests", "3", "--json"], dict, id="bound-bruteforce"),
    pytest.param(["bound", "exact", "--num-requests", "12", "--time-limit", "2", "--json"], dict,
                 id="bound-exact-12"),
    pytest.param(["bound", "fluid", "--types", "p512d20@0.7+p512d50@0.3", "--rate", "20",
                  "--cost", "linear:d0=0.00939,d1=2.68e-6", "--json"], dict, id="bound-fluid"),
    pytest.param(["capacity", "--policy", "vllm", "--types", "p64d8", "--num-requests", "50",
                  "--precision", "0.3", "--json"], dict, id="capacity"),
    pytest.param(["reproduce", "mcsf-synthetic", "--trials", "1", "--time-limit", "5", "--arrivals", "zero",
                  "--policies", "mcsf,vllm", "--small-n-time-limit", "1", "--json"], dict,
                 id="reproduce-mcsf-synthetic"),
]


@pytest.mark.parametrize("args, kind", COMMANDS)
def test_json_stdout_is_one_document(args, kind, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    args = [a.replace("{trace}", str(trace)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "kvsched", *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)            # the whole of stdout: one document, nothing else
    assert isinstance(data, kind) and data
    assert "NaN" not in proc.stdout and "Infinity" not in proc.stdout
