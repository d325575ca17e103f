"""A corpus of malformed inputs across every command and option (issue 19).

Each case must keep the contract of `kvsched.cli`: exit code 2, exactly one line on stderr that
starts with ``error:`` (no traceback, no usage box), nothing on stdout, and no file left behind in
the working folder. Cases run in-process through typer's `CliRunner`, in a fresh temporary folder
that holds the sample inputs (`_materialize`); `test_corpus_through_a_real_process` runs a few of
them through ``python -m kvsched`` as a user would. ``{tmp}`` in an argument is that folder.

Each entry is ``(id, args)``; the id says what is wrong. The fragments checked are what a user
needs to find the mistake: the option (or the file and row) named in the message.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import runner
from kvsched.cli.app import app

BIG = str(2 ** 70)            # beyond int64

GOOD_CSV = "num_prompt_tokens,num_output_tokens\n5,5\n8,3\n"
SWEEP_OK = """
name = "corpus"
seeds = [0]
num_requests = 5
[workload]
kind = "default"
rates = [2.0]
[engine]
cost = "unit"
kv_capacity = 600
block_size = 1
[[policy]]
id = "vllm"
"""

#: Sample inputs, by file name (bytes for the non-UTF-8 ones).
FILES: dict[str, str | bytes] = {
    "good.csv": GOOD_CSV,
    "latin1.jsonl": b'{"num_prompt_tokens": 5, "num_output_tokens": 3, "note": "caf\xe9"}\n',
    "latin1.csv": b"num_prompt_tokens,num_output_tokens\n5,3\xe9\n",
    "latin1.json": b'[{"conversations": [{"from": "human", "value": "caf\xe9"}]}]',
    "garbage.jsonl": "this is not json\n",
    "list_row.jsonl": "[1, 2]\n",
    "missing_field.jsonl": '{"num_prompt_tokens": 5}\n',
    "text_value.jsonl": '{"num_prompt_tokens": "five", "num_output_tokens": 3}\n',
    "nan.csv": "num_prompt_tokens,num_output_tokens\n5,nan\n",
    "negative.csv": "num_prompt_tokens,num_output_tokens\n5,-3\n",
    "zero.csv": "num_prompt_tokens,num_output_tokens\n0,3\n",
    "fraction.csv": "num_prompt_tokens,num_output_tokens\n5.5,3\n",
    "garbage_row.csv": "num_prompt_tokens,num_output_tokens\n5,3\nhello,world\n",
    "huge.csv": f"num_prompt_tokens,num_output_tokens\n{BIG},3\n",
    "missing_column.csv": "num_prompt_tokens\n5\n",
    "header_only.csv": "num_prompt_tokens,num_output_tokens\n",
    "empty.csv": "",
    "bad_arrival.csv": "num_prompt_tokens,num_output_tokens,arrival_time\n5,3,-1\n",
    "inf_arrival.csv": "num_prompt_tokens,num_output_tokens,arrival_time\n5,3,inf\n",
    "short_row.csv": "num_prompt_tokens,num_output_tokens,arrival_time\n5\n",
    "corrupt.parquet": "PAR1 not really",
    "mooncake_count.jsonl": '{"timestamp": 0, "input_length": 1000, "output_length": 5, "hash_ids": [0]}\n',
    "mooncake_ids.jsonl": '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": "x"}\n',
    "mooncake_dup.jsonl": '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [3, 3]}\n',
    "mooncake_time.jsonl": '{"timestamp": -1, "input_length": 10, "output_length": 5, "hash_ids": [0]}\n',
    "mooncake_float_id.jsonl": '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0.5]}\n',
    "not_a_list.json": '{"conversations": []}',
    "no_pairs.json": '[{"conversations": [{"from": "gpt", "value": "hi"}]}]',
    "bad_turn.json": '[{"conversations": [{"from": "human"}]}]',
    "broken.json": "[{",
    "trace.xlsx": "x",
    "noext": "x",
    "sweep_ok.toml": SWEEP_OK,
    "sweep_latin1.toml": b'name = "caf\xe9"\n',
    "sweep_syntax.toml": "name = [\n",
    "sweep_seed_neg.toml": SWEEP_OK.replace("seeds = [0]", "seeds = [-1]"),
    "sweep_seed_str.toml": SWEEP_OK.replace("seeds = [0]", 'seeds = ["a"]'),
    "sweep_kv_str.toml": SWEEP_OK.replace("kv_capacity = 600", 'kv_capacity = "big"'),
    "sweep_kv_float.toml": SWEEP_OK.replace("kv_capacity = 600", "kv_capacity = 600.5"),
    "sweep_kv_zero.toml": SWEEP_OK.replace("kv_capacity = 600", "kv_capacity = 0"),
    "sweep_kv_huge.toml": SWEEP_OK.replace("kv_capacity = 600", f"kv_capacity = {2 ** 62}"),
    "sweep_block_neg.toml": SWEEP_OK.replace("block_size = 1", "block_size = -4"),
    "sweep_block_str.toml": SWEEP_OK.replace("block_size = 1", 'block_size = "16"'),
    "sweep_predictor_int.toml": SWEEP_OK.replace('name = "corpus"', 'name = "corpus"\npredictors = [5]'),
    "sweep_predictor_bad.toml": SWEEP_OK.replace('name = "corpus"',
                                                 'name = "corpus"\npredictors = ["psychic"]'),
    "sweep_per_request_str.toml": SWEEP_OK.replace('name = "corpus"',
                                                   'name = "corpus"\nper_request = "no"'),
    "sweep_budget_neg.toml": SWEEP_OK.replace("block_size = 1", "block_size = 1\nmax_num_batched_tokens = -5"),
    "sweep_budget_float.toml": SWEEP_OK.replace("block_size = 1", "block_size = 1\nmax_num_batched_tokens = 2.5"),
    "sweep_cost_bad.toml": SWEEP_OK.replace('cost = "unit"', 'cost = "quadratic"'),
    "sweep_cost_int.toml": SWEEP_OK.replace('cost = "unit"', "cost = 5"),
    "sweep_convention.toml": SWEEP_OK.replace("block_size = 1", 'block_size = 1\nkv_convention = "both"'),
    "sweep_policy_unknown.toml": SWEEP_OK.replace('id = "vllm"', 'id = "nope"'),
    "sweep_policy_param.toml": SWEEP_OK.replace('id = "vllm"', 'id = "vllm"\nparams = { nope = 1 }'),
    "sweep_policy_value.toml": SWEEP_OK.replace('id = "vllm"', 'id = "vllm"\nparams = { watermark = 2 }'),
    "sweep_policy_type.toml": SWEEP_OK.replace('id = "vllm"', 'id = "vllm"\nparams = { watermark = "x" }'),
    "sweep_no_policy.toml": SWEEP_OK.replace('[[policy]]\nid = "vllm"', ""),
    "sweep_rates_neg.toml": SWEEP_OK.replace("rates = [2.0]", "rates = [-1.0]"),
    "sweep_rates_str.toml": SWEEP_OK.replace("rates = [2.0]", 'rates = "fast"'),
    "sweep_rates_inf.toml": SWEEP_OK.replace("rates = [2.0]", "rates = [inf]"),
    "sweep_kind.toml": SWEEP_OK.replace('kind = "default"', 'kind = "magic"'),
    "sweep_trace_missing.toml": SWEEP_OK.replace('kind = "default"', 'kind = "trace"\npath = "absent.csv"'),
    "sweep_trace_nopath.toml": SWEEP_OK.replace('kind = "default"', 'kind = "trace"'),
    "sweep_trace_bad.toml": SWEEP_OK.replace('kind = "default"', 'kind = "trace"\npath = "negative.csv"'),
    "sweep_types_bad.toml": SWEEP_OK.replace('kind = "default"', 'kind = "typed"\ntypes = [{share = "x"}]'),
    "sweep_horizon_zero.toml": SWEEP_OK.replace("num_requests = 5", "num_requests = 0"),
    "sweep_horizon_huge.toml": SWEEP_OK.replace("num_requests = 5", f"num_requests = {10 ** 12}"),
    "sweep_unknown_key.toml": SWEEP_OK.replace('name = "corpus"', 'name = "corpus"\ncolour = "red"'),
    "sweep_engine_key.toml": SWEEP_OK.replace("block_size = 1", "block_size = 1\ngpu = 'a100'"),
    "sweep_bound_int.toml": SWEEP_OK.replace('name = "corpus"', 'name = "corpus"\nbound = 3'),
    "sweep_bound_unknown.toml": SWEEP_OK.replace('name = "corpus"', 'name = "corpus"\nbound = "psychic"'),
    "sweep_name_int.toml": SWEEP_OK.replace('name = "corpus"', "name = 5"),
    "sweep_too_small.toml": SWEEP_OK.replace("kv_capacity = 600", "kv_capacity = 2"),
    "a_folder/": None,
    "not_a_sweep/": None,
    "not_a_sweep/x.txt": "x",
    "bad_spec_sweep/": None,
    "bad_spec_sweep/spec.json": "{not json",
    "bad_point_sweep/": None,
    "bad_point_sweep/points/": None,
    "bad_point_sweep/points/0000.parquet": "garbage",
    "empty_sweep/": None,
    "empty_sweep/points/": None,
    "empty_sweep/spec.json": '{"name": "x", "hash": "0", "spec": {}}',
    "policy_module.py": "class NotAPolicy:\n    pass\n",
    "broken_module.py": "raise RuntimeError('boom at import')\n",
}


def _case(name: str, *args: str):
    return pytest.param(list(args), id=name)


T = "{tmp}/"
TRACE_CASES = [
    _case(f"{cmd}-trace-{f}", cmd, "--trace", T + f, *extra)
    for f in ("latin1.jsonl", "latin1.csv", "latin1.json", "garbage.jsonl", "list_row.jsonl",
              "missing_field.jsonl", "text_value.jsonl", "nan.csv", "negative.csv", "zero.csv",
              "fraction.csv", "garbage_row.csv", "huge.csv", "missing_column.csv", "header_only.csv",
              "empty.csv", "bad_arrival.csv", "inf_arrival.csv", "short_row.csv", "corrupt.parquet",
              "not_a_list.json", "no_pairs.json", "bad_turn.json", "broken.json", "trace.xlsx", "noext",
              "absent.csv", "mooncake_count.jsonl", "mooncake_ids.jsonl", "mooncake_dup.jsonl",
              "mooncake_time.jsonl", "mooncake_float_id.jsonl")
    for cmd, extra in (("simulate", ()),)
] + [
    _case(f"{cmd}-trace-{f}", *cmd.split(), "--trace", T + f, *extra)
    for f in ("latin1.jsonl", "garbage.jsonl", "negative.csv", "huge.csv", "absent.csv")
    for cmd, extra in (("compare", ()), ("bound ip", ("--kv-capacity", "100")),
                       ("bound heuristic", ("--kv-capacity", "100")))
] + [
    _case("simulate-trace-a-folder", "simulate", "--trace", T + "a_folder"),
]

# Options shared by simulate and compare (each value is wrong for its option).
SHARED_BAD = [
    ("seed-negative", ("--seed", "-1")),
    ("seed-huge", ("--seed", BIG)),
    ("seed-text", ("--seed", "zero")),
    ("num-requests-float", ("--num-requests", "1e12")),
    ("num-requests-huge", ("--num-requests", str(10 ** 12))),
    ("num-requests-zero", ("--num-requests", "0")),
    ("num-requests-negative", ("--num-requests", "-5")),
    ("kv-capacity-int64", ("--kv-capacity", BIG)),
    ("kv-capacity-huge", ("--kv-capacity", str(2 ** 62))),
    ("kv-capacity-zero", ("--kv-capacity", "0")),
    ("kv-capacity-negative", ("--kv-capacity", "-5")),
    ("kv-capacity-text", ("--kv-capacity", "lots")),
    ("block-size-zero", ("--block-size", "0")),
    ("block-size-negative", ("--block-size", "-16")),
    ("block-size-huge", ("--block-size", BIG)),
    ("rate-negative", ("--rate", "-1")),
    ("rate-nan", ("--rate", "nan")),
    ("rate-inf", ("--rate", "inf")),
    ("kv-convention", ("--kv-convention", "both")),
    ("cost-unknown", ("--cost", "quadratic")),
    ("cost-missing-d1", ("--cost", "linear:d0=1")),
    ("cost-nan", ("--cost", "linear:d0=nan,d1=1e-6")),
    ("cost-negative", ("--cost", "linear:d0=-1,d1=1e-6")),
    ("cost-preset-unknown", ("--cost", "preset:nope")),
    ("cost-unit-args", ("--cost", "unit:x=1")),
    ("predictor-unknown", ("--predictor", "psychic")),
    ("predictor-bad-param", ("--predictor", "interval:alpha=7")),
    ("slo-unknown", ("--slo", "latency=3")),
    ("slo-negative", ("--slo", "ttft=-1")),
    ("slo-text", ("--slo", "ttft=soon")),
    ("workload-unknown", ("--workload", "huge")),
    ("prefix-caching-emitted", ("--prefix-caching", "--kv-convention", "emitted")),
    ("prefix-caching-value", ("--prefix-caching=yes",)),
    ("shared-prefix-tokens-zero", ("--shared-prefix-tokens", "0")),
    ("shared-prefix-tokens-negative", ("--shared-prefix-tokens", "-8")),
    ("shared-prefix-tokens-text", ("--shared-prefix-tokens", "many")),
    ("shared-prefix-tokens-huge", ("--shared-prefix-tokens", BIG)),
    ("shared-prefix-fraction-alone", ("--shared-prefix-fraction", "0.5")),
    ("shared-prefix-fraction-nan", ("--shared-prefix-tokens", "8", "--shared-prefix-fraction", "nan")),
    ("shared-prefix-fraction-above-one", ("--shared-prefix-tokens", "8", "--shared-prefix-fraction", "1.5")),
    ("shared-prefix-fraction-negative", ("--shared-prefix-tokens", "8", "--shared-prefix-fraction", "-0.1")),
    ("shared-prefix-fraction-text", ("--shared-prefix-tokens", "8", "--shared-prefix-fraction", "half")),
    ("shared-prefix-before-the-draw", ("--shared-prefix-tokens", "8", "--shared-prefix-fraction", "2",
                                       "--num-requests", str(10 ** 7))),
    ("think-time-default-workload", ("--think-time", "5")),
    ("think-time-with-trace", ("--trace", T + "good.csv", "--think-time", "5")),
    ("think-time-negative", ("--workload", "multiturn", "--think-time", "-1")),
    ("think-time-inf", ("--workload", "multiturn", "--think-time", "inf")),
    ("think-time-nan", ("--workload", "multiturn", "--think-time", "nan")),
    ("think-time-before-the-draw", ("--workload", "multiturn", "--think-time", "-1", "--num-requests",
                                    str(10 ** 7))),
    ("multiturn-rate-negative", ("--workload", "multiturn", "--rate", "-1")),
    ("output-missing-folder", ("--output", T + "nowhere/out.json")),
    ("output-is-folder", ("--output", T + "a_folder")),
    ("output-under-a-file", ("--output", T + "good.csv/out.json")),
    ("output-onto-trace", ("--trace", T + "good.csv", "--output", T + "good.csv")),
    ("unknown-option", ("--colour", "red")),
    ("missing-value", ("--seed",)),
]
SHARED_CASES = [_case(f"{cmd}-{name}", cmd, *args) for cmd in ("simulate", "compare")
                for name, args in SHARED_BAD]

POLICY_CASES = [
    _case("simulate-policy-colon", "simulate", "--policy", ":"),
    _case("simulate-policy-empty", "simulate", "--policy", ""),
    _case("simulate-policy-unknown", "simulate", "--policy", "nope"),
    _case("simulate-policy-two", "simulate", "--policy", "vllm,sarathi"),
    _case("simulate-policy-param", "simulate", "--policy", "vllm:foo=1"),
    _case("simulate-policy-value", "simulate", "--policy", "vllm:watermark=2"),
    _case("simulate-policy-type", "simulate", "--policy", "sarathi:chunk_size=big"),
    _case("simulate-policy-no-equals", "simulate", "--policy", "vllm:watermark"),
    _case("simulate-policy-module-missing", "simulate", "--policy", "no_such_module:Class"),
    _case("simulate-policy-not-a-policy", "simulate", "--policy", "policy_module:NotAPolicy"),
    _case("simulate-policy-module-raises", "simulate", "--policy", "broken_module:Thing"),
    _case("compare-policies-colon", "compare", "--policies", ":"),
    _case("compare-policies-commas", "compare", "--policies", ",,"),
    _case("compare-policies-twice", "compare", "--policies", "vllm,vllm"),
    _case("compare-policies-unknown", "compare", "--policies", "vllm,nope"),
    _case("compare-bound-unknown", "compare", "--bound", "psychic", "--num-requests", "3"),
    _case("compare-bound-unknown-before-the-runs", "compare", "--bound", "psychic", "--num-requests",
          str(10 ** 7)),
    _case("compare-bound-time-nan", "compare", "--bound", "ip", "--bound-time-limit", "nan"),
    _case("compare-bound-time-zero", "compare", "--bound", "ip", "--bound-time-limit", "0"),
    _case("compare-bound-time-negative", "compare", "--bound-time-limit", "-3"),
    _case("simulate-predictor-before-the-draw", "simulate", "--predictor", "psychic", "--num-requests",
          str(10 ** 7)),
    _case("compare-predictor-before-the-draw", "compare", "--predictor", "psychic", "--num-requests",
          str(10 ** 7)),
    _case("check-policy-colon", "check-policy", ":"),
    _case("check-policy-unknown", "check-policy", "nope"),
    _case("check-policy-missing-module", "check-policy", "no_such_module:Class"),
    _case("check-policy-not-a-policy", "check-policy", "policy_module:NotAPolicy"),
    _case("check-policy-bad-param", "check-policy", "vllm:foo=1"),
    _case("check-policy-no-arg", "check-policy"),
    _case("policies-unknown-option", "policies", "--colour"),
    _case("presets-unknown-option", "presets", "--colour"),
    _case("unknown-command", "simulat"),
    _case("bound-unknown-method", "bound", "psychic"),
]

BOUND_BAD = [
    ("kv-capacity-zero", ("--kv-capacity", "0")),
    ("kv-capacity-negative", ("--kv-capacity", "-5")),
    ("kv-capacity-int64", ("--kv-capacity", BIG)),
    ("num-requests-zero", ("--num-requests", "0")),
    ("num-requests-huge", ("--num-requests", str(10 ** 12))),
    ("seed-negative", ("--seed", "-1")),
    ("rate-negative", ("--rate", "-2")),
    ("rate-nan", ("--rate", "nan")),
    ("time-limit-nan", ("--time-limit", "nan")),
    ("time-limit-zero", ("--time-limit", "0")),
    ("time-limit-negative", ("--time-limit", "-1")),
    ("workload-unknown", ("--workload", "nope")),
    ("kv-convention", ("--kv-convention", "both")),
    ("default-needs-capacity", ("--workload", "default", "--num-requests", "3")),
]
BOUND_CASES = [_case(f"bound-{m}-{name}", "bound", m, *args)
               for m in ("ip", "exact") for name, args in BOUND_BAD] + [
    _case(f"bound-{m}-{name}", "bound", m, *args)
    for m in ("ip-strong", "bruteforce", "heuristic", "semionline")
    for name, args in BOUND_BAD[:3] + BOUND_BAD[7:9]
] + [
    _case("bound-bruteforce-too-many", "bound", "bruteforce", "--num-requests", "7"),
]

FLUID_CASES = [
    _case("fluid-nothing", "bound", "fluid"),
    _case("fluid-types-garbage", "bound", "fluid", "--types", "garbage"),
    _case("fluid-types-share", "bound", "fluid", "--types", "p512d20@x"),
    _case("fluid-types-zero-prompt", "bound", "fluid", "--types", "p0d20"),
    _case("fluid-rate-negative", "bound", "fluid", "--types", "p512d20", "--rate", "-1"),
    _case("fluid-rate-nan", "bound", "fluid", "--types", "p512d20", "--rate", "nan"),
    _case("fluid-bins-zero", "bound", "fluid", "--bins", "0", "--rate", "5"),
    _case("fluid-bins-no-rate", "bound", "fluid", "--bins", "4"),
    _case("fluid-d0-nan", "bound", "fluid", "--types", "p512d20@5", "--d0", "nan"),
    _case("fluid-d1-negative", "bound", "fluid", "--types", "p512d20@5", "--d1", "-1"),
    _case("fluid-kv-negative", "bound", "fluid", "--types", "p512d20@5", "--kv-capacity", "-1"),
    _case("fluid-kv-zero", "bound", "fluid", "--types", "p512d20@5", "--kv-capacity", "0"),
    _case("fluid-kv-int64", "bound", "fluid", "--types", "p512d20@5", "--kv-capacity", BIG),
    _case("fluid-cost-unknown", "bound", "fluid", "--types", "p512d20@5", "--cost", "quadratic"),
    _case("fluid-cost-unit", "bound", "fluid", "--types", "p512d20@5", "--cost", "unit"),
    _case("fluid-cost-and-d0", "bound", "fluid", "--types", "p512d20@5", "--cost",
          "linear:d0=0.01,d1=1e-6", "--d0", "0.02"),
]

CAPACITY_CASES = [
    _case(f"capacity-{name}", "capacity", "--policy", "vllm", *args) for name, args in (
        ("block-size-zero", ("--block-size", "0")),
        ("block-size-negative", ("--block-size", "-1")),
        ("num-seeds-zero", ("--num-seeds", "0")),
        ("num-requests-zero", ("--num-requests", "0")),
        ("num-requests-huge", ("--num-requests", str(10 ** 12))),
        ("kv-capacity-zero", ("--kv-capacity", "0")),
        ("kv-capacity-negative", ("--kv-capacity", "-5")),
        ("kv-capacity-int64", ("--kv-capacity", BIG)),
        ("seed-negative", ("--seed", "-1")),
        ("precision-zero", ("--precision", "0")),
        ("precision-nan", ("--precision", "nan")),
        ("tolerance-negative", ("--tolerance", "-0.1")),
        ("lo-above-hi", ("--lo", "5", "--hi", "1")),
        ("lo-negative", ("--lo", "-1")),
        ("hi-nan", ("--hi", "nan")),
        ("d0-nan", ("--d0", "nan")),
        ("types-garbage", ("--types", "garbage")),
        ("cost-unknown", ("--cost", "quadratic")),
    )
] + [
    _case("capacity-no-policy", "capacity"),
    _case("capacity-policy-unknown", "capacity", "--policy", "nope"),
    _case("capacity-policy-colon", "capacity", "--policy", ":"),
    _case("capacity-wait-untyped", "capacity", "--policy", "wait"),
]

REPRODUCE_CASES = [
    _case("reproduce-unknown-target", "reproduce", "nope"),
    _case("reproduce-trials-zero", "reproduce", "mcsf-synthetic", "--trials", "0"),
    _case("reproduce-seed-negative", "reproduce", "mcsf-synthetic", "--trials", "1", "--seed", "-1"),
    _case("reproduce-time-limit-nan", "reproduce", "mcsf-synthetic", "--trials", "1", "--time-limit", "nan"),
    _case("reproduce-time-limit-zero", "reproduce", "mcsf-synthetic", "--trials", "1", "--time-limit", "0"),
    _case("reproduce-arrivals", "reproduce", "mcsf-synthetic", "--arrivals", "sometimes"),
    _case("reproduce-policies-unknown", "reproduce", "mcsf-synthetic", "--trials", "1", "--policies", "nope"),
    _case("reproduce-policies-empty", "reproduce", "mcsf-synthetic", "--trials", "1", "--policies", ","),
    _case("reproduce-bound-unknown", "reproduce", "mcsf-synthetic", "--trials", "1", "--bound", "psychic"),
    _case("reproduce-small-n-bound-unknown", "reproduce", "mcsf-synthetic", "--trials", "1",
          "--small-n-bound", "psychic"),
    _case("reproduce-small-n-time-limit-zero", "reproduce", "mcsf-synthetic", "--trials", "1",
          "--small-n-time-limit", "0"),
    _case("reproduce-small-n-trials-negative", "reproduce", "mcsf-synthetic", "--small-n-trials", "-1"),
    _case("reproduce-r2-out-file", "reproduce", "mcsf-real-trace", "--out", T + "good.csv"),
    _case("reproduce-r2-out-other-sweep", "reproduce", "mcsf-real-trace", "--out", T + "not_a_sweep"),
    _case("reproduce-r2-jobs-zero", "reproduce", "mcsf-real-trace", "--jobs", "0"),
    _case("reproduce-r2-horizons-zero", "reproduce", "mcsf-real-trace", "--horizons", "0", "--horizons", "10"),
    _case("reproduce-r2-horizons-text", "reproduce", "mcsf-real-trace", "--horizons", "10k"),
    _case("reproduce-r2-horizons-one", "reproduce", "mcsf-real-trace", "--horizons", "1000",
          "--horizons", "1000", "--out", T + "r2"),
    _case("reproduce-r2-rates-zero", "reproduce", "mcsf-real-trace", "--rates", "0"),
    _case("reproduce-r2-rates-text", "reproduce", "mcsf-real-trace", "--rates", "fast"),
    _case("reproduce-r2-rates-nan", "reproduce", "mcsf-real-trace", "--rates", "nan", "--out", T + "r2n"),
    _case("reproduce-r2-rates-inf", "reproduce", "mcsf-real-trace", "--rates", "inf"),
    _case("reproduce-r3-out-under-a-file", "reproduce", "amin-intervals", "--out", T + "good.csv/r3"),
    _case("reproduce-past-future-requests-zero", "reproduce", "past-future", "--num-requests", "0"),
    _case("reproduce-past-future-seed-negative", "reproduce", "past-future", "--seed", "-1"),
    _case("reproduce-past-future-cost-unknown", "reproduce", "past-future", "--cost", "quadratic"),
    _case("reproduce-r5-models-unknown", "reproduce", "wait-limits", "--models", "gpt-9"),
    _case("reproduce-r5-models-empty", "reproduce", "wait-limits", "--models", ","),
    _case("reproduce-r5-policies-unknown", "reproduce", "wait-limits", "--policies", "mcsf"),
    _case("reproduce-r5-requests-small", "reproduce", "wait-limits", "--num-requests", "99"),
    _case("reproduce-r5-seeds-zero", "reproduce", "wait-limits", "--num-seeds", "0"),
    _case("reproduce-r5-precision-nan", "reproduce", "wait-limits", "--precision", "nan"),
    _case("reproduce-r5-precision-zero", "reproduce", "wait-limits", "--precision", "0"),
    _case("reproduce-r5-latency-requests-small", "reproduce", "wait-limits", "--latency-requests", "50"),
    _case("reproduce-r4-requests-small", "reproduce", "fluid-example", "--num-requests", "5"),
    _case("reproduce-r4-requests-huge", "reproduce", "fluid-example", "--num-requests", BIG),
    _case("reproduce-r4-seed-negative", "reproduce", "fluid-example", "--seed", "-1"),
]

SWEEP_FILES = [name for name in FILES if name.startswith("sweep_") and name != "sweep_ok.toml"]
SWEEP_CASES = [
    _case(f"sweep-{name.removeprefix('sweep_').removesuffix('.toml')}", "sweep", T + name,
          "--out", T + "out") for name in SWEEP_FILES
] + [
    _case("sweep-spec-missing", "sweep", T + "absent.toml", "--out", T + "out"),
    _case("sweep-spec-is-folder", "sweep", T + "a_folder", "--out", T + "out"),
    _case("sweep-no-out", "sweep", T + "sweep_ok.toml"),
    _case("sweep-out-is-file", "sweep", T + "sweep_ok.toml", "--out", T + "good.csv"),
    _case("sweep-out-not-a-sweep", "sweep", T + "sweep_ok.toml", "--out", T + "not_a_sweep"),
    _case("sweep-out-corrupt-spec", "sweep", T + "sweep_ok.toml", "--out", T + "bad_spec_sweep"),
    _case("sweep-out-under-a-file", "sweep", T + "sweep_ok.toml", "--out", T + "good.csv/out"),
    _case("sweep-executor", "sweep", T + "sweep_ok.toml", "--out", T + "out", "--executor", "slurm"),
    _case("sweep-jobs-zero", "sweep", T + "sweep_ok.toml", "--out", T + "out", "--jobs", "0"),
    _case("sweep-ray-address-local", "sweep", T + "sweep_ok.toml", "--out", T + "out",
          "--ray-address", "x:1"),
]

REPORT_CASES = [
    _case("report-dir-missing", "report", T + "absent"),
    _case("report-dir-is-file", "report", T + "good.csv"),
    _case("report-not-a-sweep", "report", T + "not_a_sweep", "--out", T + "r.html"),
    _case("report-corrupt-spec", "report", T + "bad_spec_sweep", "--out", T + "r.html"),
    _case("report-corrupt-point", "report", T + "bad_point_sweep", "--out", T + "r.html"),
    _case("report-no-points", "report", T + "empty_sweep", "--out", T + "r.html"),
    _case("report-out-is-folder", "report", T + "empty_sweep", "--out", T + "a_folder"),
    _case("report-out-under-a-file", "report", T + "empty_sweep", "--out", T + "good.csv/r.html"),
    _case("report-out-missing-folder", "report", T + "empty_sweep", "--out", T + "nowhere/r.html"),
    _case("report-cdf-rate-nan", "report", T + "empty_sweep", "--out", T + "r.html", "--cdf-rate", "nan"),
]

ENGINE_CASES = [   # all fail before vLLM is imported
    _case(f"engine-run-{name}", "engine-run", "--model", T + "model", *args) for name, args in (
        ("clock", ("--clock", "sundial")),
        ("cost", ("--cost", "quadratic")),
        ("cost-preset", ("--cost", "preset:llama2-7b-a100")),
        ("num-requests-zero", ("--num-requests", "0")),
        ("rate-negative", ("--rate", "-1")),
        ("prompt-tokens", ("--prompt-tokens", "a:b")),
        ("output-tokens-reversed", ("--output-tokens", "9:3")),
        ("output-missing-folder", ("--output", T + "nowhere/x.json")),
    )
] + [_case("engine-run-no-model", "engine-run")]

USAGE_CASES = [   # click's own usage errors, in sub-commands too: one line, not a usage box
    _case("usage-bound-ip-unknown-option", "bound", "ip", "--colour", "red"),
    _case("usage-bound-fluid-bad-float", "bound", "fluid", "--rate", "fast"),
    _case("usage-capacity-bad-int", "capacity", "--policy", "vllm", "--num-requests", "many"),
    _case("usage-reproduce-unknown-option", "reproduce", "mcsf-synthetic", "--colour"),
    _case("usage-reproduce-r2-bad-jobs", "reproduce", "mcsf-real-trace", "--jobs", "two"),
    _case("usage-sweep-no-args", "sweep"),
    _case("usage-report-no-args", "report"),
    _case("usage-report-extra-arg", "report", T + "empty_sweep", T + "empty_sweep"),
    _case("usage-simulate-extra-arg", "simulate", "extra"),
    _case("usage-check-policy-two-args", "check-policy", "vllm", "sarathi"),
    _case("usage-compare-bool-value", "compare", "--json=yes"),
    _case("usage-engine-run-bad-int", "engine-run", "--model", T + "model", "--num-gpu-blocks", "x"),
]

CASES = (USAGE_CASES + TRACE_CASES + SHARED_CASES + POLICY_CASES + BOUND_CASES + FLUID_CASES + CAPACITY_CASES
         + REPRODUCE_CASES + SWEEP_CASES + REPORT_CASES + ENGINE_CASES)


def _materialize(root: Path) -> None:
    for name, body in FILES.items():
        path = root / name
        if body is None:
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def corpus_dir(tmp_path, monkeypatch):
    """A folder holding the sample inputs, made the working folder (and importable)."""
    _materialize(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


#: Seconds a case may take: every check comes before the work it guards.
CASE_SECONDS = 30


@contextlib.contextmanager
def _deadline(seconds: int):
    def expire(signum, frame):
        raise TimeoutError(f"took more than {seconds} s: validated too late?")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _expand(args: list[str], root: Path) -> list[str]:
    return [a.replace("{tmp}", str(root)) for a in args]


def test_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 120
    firsts = {c.values[0][0] for c in CASES}
    commands = {"simulate", "compare", "policies", "check-policy", "bound", "capacity", "presets",
                "reproduce", "sweep", "report", "engine-run"}
    assert commands <= firsts


@pytest.mark.parametrize("args", CASES)
def test_malformed_input_is_one_line_exit_2(args, corpus_dir):
    before = _listing(corpus_dir)
    with _deadline(CASE_SECONDS):       # a bad option is caught before any expensive work
        result = runner.invoke(app, _expand(args, corpus_dir))
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr[-2000:], result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert _listing(corpus_dir) == before


SUBPROCESS_CASES = [
    ["simulate", "--seed", "-1"],
    ["simulate", "--trace", "{tmp}/latin1.jsonl"],
    ["compare", "--kv-capacity", BIG],
    ["bound", "ip", "--kv-capacity", "0"],
    ["sweep", "{tmp}/sweep_kv_str.toml", "--out", "{tmp}/out"],
    ["report", "{tmp}/bad_point_sweep", "--out", "{tmp}/r.html"],
]


@pytest.mark.parametrize("args", SUBPROCESS_CASES, ids=lambda a: "-".join(a[:2]))
def test_corpus_through_a_real_process(args, corpus_dir):
    before = _listing(corpus_dir)
    proc = subprocess.run([sys.executable, "-m", "kvsched", *_expand(args, corpus_dir)],
                          capture_output=True, text=True, timeout=120, cwd=corpus_dir)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert proc.stdout == ""
    assert _listing(corpus_dir) == before
