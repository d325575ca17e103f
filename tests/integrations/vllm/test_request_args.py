"""kvsched's per-request arguments in vLLM's extra_args, the fallback predictions and the engine's
limits given to a policy (pure Python: no vLLM needed)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsched.integrations.vllm.limits import EngineLimits, policy_for_engine
from kvsched.integrations.vllm.request_args import (FLAT_KEYS, FallbackPredictor, RequestArgs,
                                                    RequestArgsError, parse_fallback,
                                                    parse_request_args)


def test_flat_http_keys_and_the_nested_python_dict_give_the_same_arguments():
    flat = parse_request_args({"kvsched_predicted_output_tokens": 120, "kvsched_predicted_lo": "80",
                               "kvsched_predicted_hi": 160.0, "kvsched_type_id": 2, "other_plugin": [1]})
    nested = parse_request_args({"kvsched": {"predicted_output_tokens": 120.0, "predicted_lo": 80,
                                             "predicted_hi": 160, "type_id": 2}})
    assert flat == nested == RequestArgs(None, None, 120.0, 80, 160, 2)


def test_no_arguments_is_no_arguments():
    assert parse_request_args(None) == parse_request_args({}) == parse_request_args({"kvsched": None}) \
        == RequestArgs()


@pytest.mark.parametrize(("extra_args", "named"), [
    ({"kvsched": "a string"}, "kvsched: expected a dict"),
    ({"kvsched": 5}, "kvsched: expected a dict"),
    ({"kvsched": [1, 2]}, "kvsched: expected a dict"),
    ({"kvsched": {"predicted": 3}}, "unknown key 'predicted'"),
    ({"kvsched_predicted": 3}, "unknown key 'kvsched_predicted'"),
    ({"kvsched_predicted_output_tokens": "many"}, "kvsched_predicted_output_tokens: expected a number"),
    ({"kvsched_predicted_output_tokens": float("nan")}, "expected a finite number"),
    ({"kvsched_predicted_output_tokens": "inf"}, "expected a finite number"),
    ({"kvsched_predicted_output_tokens": 0}, "expected a number > 0"),
    ({"kvsched_predicted_output_tokens": 10 ** 400}, "expected a number"),
    ({"kvsched_predicted_output_tokens": True}, "expected a number, got bool"),
    ({"kvsched_predicted_lo": 2.5}, "kvsched_predicted_lo: expected an integer >= 1"),
    ({"kvsched_predicted_lo": 0}, "expected an integer >= 1"),
    ({"kvsched_request_id": -1}, "kvsched_request_id: expected an integer >= 0"),
    ({"kvsched_type_id": [1]}, "expected a number, got list"),
    ({"kvsched_predicted_lo": 9, "kvsched_predicted_hi": 3}, "predicted_lo (9) must be <= predicted_hi (3)"),
    ({"kvsched": {"predicted_lo": 2}, "kvsched_predicted_lo": 2}, "given twice"),
    ("not a dict", "extra_args: expected a dict"),
])
def test_malformed_arguments_name_the_key_and_what_was_expected(extra_args, named):
    with pytest.raises(RequestArgsError, match=named.replace("(", r"\(").replace(")", r"\)")):
        parse_request_args(extra_args)


_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                    max_size=3),
                        max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(FLAT_KEYS) + ["kvsched", "kvsched_x", "seed", ""]), _JSONISH,
                       max_size=5))
def test_anything_a_client_sends_parses_or_is_one_request_args_error(extra_args):
    try:
        args = parse_request_args(extra_args)
    except RequestArgsError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for value in (args.predicted_output_tokens, args.arrival_time):
        assert value is None or math.isfinite(value)
    if args.predicted_lo is not None and args.predicted_hi is not None:
        assert 1 <= args.predicted_lo <= args.predicted_hi


# ----------------------------------------------------------------------------- fallback predictions

def test_max_tokens_fallback_is_the_interval_one_to_max_tokens():
    assert FallbackPredictor().fill(RequestArgs(), 64) == RequestArgs(None, None, 64.0, 1, 64, None)


def test_fallback_fills_only_what_is_missing_and_keeps_the_interval_ordered():
    fill = FallbackPredictor("naive", 10, 100).fill
    assert fill(RequestArgs(predicted_output_tokens=5.0), 64) == RequestArgs(None, None, 5.0, 10, 64, None)
    assert fill(RequestArgs(predicted_lo=80), 64) == RequestArgs(None, None, 80.0, 80, 80, None)
    assert fill(RequestArgs(predicted_hi=4), 64) == RequestArgs(None, None, 4.0, 4, 4, None)
    assert FallbackPredictor("none").fill(RequestArgs(), 64) == RequestArgs()


def test_fallback_specs():
    assert parse_fallback(None) == FallbackPredictor("max-tokens")
    assert parse_fallback("naive:lo=5,hi=50") == FallbackPredictor("naive", 5, 50)
    assert parse_fallback("none").kind == "none"
    for bad in ("exact", "naive:lo=9,hi=3", "naive:width=3"):
        with pytest.raises(ValueError, match="kvsched_fallback"):
            parse_fallback(bad)


# ----------------------------------------------------------------------------- engine limits

LIMITS = EngineLimits(max_num_seqs=8, max_num_batched_tokens=96, block_size=32, reserve_full_isl=False,
                      enable_chunked_prefill=True)


def test_the_engine_limits_replace_the_policy_defaults():
    policy, applied, overridden = policy_for_engine("vllm", LIMITS)
    assert (policy.max_num_seqs, policy.max_num_batched_tokens, policy.full_prompt_must_fit) == (8, 96, False)
    assert applied == {"max_num_seqs": 8, "max_num_batched_tokens": 96, "full_prompt_must_fit": False,
                       "enable_chunked_prefill": True}
    assert overridden == {}
    sarathi, applied, _ = policy_for_engine("sarathi:chunk_size=64", LIMITS)
    assert (sarathi.max_num_seqs, sarathi.chunk_size, applied) == (8, 64, {"max_num_seqs": 8})


def test_a_limit_named_in_the_spec_is_kept_and_reported():
    policy, applied, overridden = policy_for_engine("vllm:max_num_seqs=4", LIMITS)
    assert policy.max_num_seqs == 4 and "max_num_seqs" not in applied
    assert overridden == {"max_num_seqs": (4, 8)}


def test_a_policy_without_those_parameters_is_left_as_it_is():
    policy, applied, overridden = policy_for_engine("mcsf:protection=0.1", LIMITS)
    assert (policy.protection, applied, overridden) == (0.1, {}, {})
