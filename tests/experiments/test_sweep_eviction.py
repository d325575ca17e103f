"""engine.eviction in sweep specs: a scalar setting or a grid axis, checked when read, passed to the
simulator, and absent from the points' hashes when the spec does not name it."""

from __future__ import annotations

import pytest

from kvsched.errors import ConfigError
from kvsched.experiments import load_spec
from kvsched.experiments.runner import build_simulator, run_point
from kvsched.experiments.spec import config_hash
from kvsched.engine.rules import Eviction

from sweep_helpers import SPEC, _write

# All at time 0 in a small cache under unit time: vllm must evict, so the semantics shows.
TIGHT = SPEC.replace('rates = [2.0, 8.0]', 'rates = [0]').replace(
    'cost = "linear:d0=0.01,d1=2e-7"\nkv_capacity = 6000', 'cost = "unit"\nkv_capacity = 2000')


def _with_eviction(value: str, text: str = SPEC) -> str:
    return text.replace("block_size = 16\n", f"block_size = 16\neviction = {value}\n")


def test_a_list_is_a_grid_axis(tmp_path):
    plain = load_spec(_write(tmp_path, SPEC, "plain.toml")).points()
    both = load_spec(_write(tmp_path, _with_eviction('["restart", "recompute"]'), "both.toml")).points()
    assert len(both) == 2 * len(plain)
    assert sorted(p["engine"]["eviction"] for p in both) == ["recompute"] * len(plain) + ["restart"] * len(plain)


def test_a_spec_without_the_key_keeps_its_hashes(tmp_path):
    points = load_spec(_write(tmp_path)).points()
    assert all("eviction" not in p["engine"] for p in points)
    restart = load_spec(_write(tmp_path, _with_eviction('"restart"'), "r.toml")).points()
    assert {config_hash(p) for p in points}.isdisjoint(config_hash(p) for p in restart)


@pytest.mark.parametrize("value", ['"free"', "[]", '["restart", "restart"]', "3", '["restart", 1]'])
def test_bad_values_name_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match="engine.eviction"):
        load_spec(_write(tmp_path, _with_eviction(value)))


def test_the_setting_reaches_the_simulator_and_the_row(tmp_path):
    spec = load_spec(_write(tmp_path, _with_eviction('["restart", "recompute"]', TIGHT)))
    points = [p for p in spec.points() if p["label"] == "sarathi" and p["seed"] == 0]
    assert {build_simulator(p).eviction for p in points} == {Eviction.RESTART, Eviction.RECOMPUTE}
    rows = {p["engine"]["eviction"]: run_point(p)[0] for p in points}
    assert rows["restart"]["eviction"] == "restart" and rows["recompute"]["eviction"] == "recompute"
    assert rows["recompute"]["num_evictions"] > 0
    assert rows["restart"]["num_restarted_tokens"] > 0 == rows["recompute"]["num_restarted_tokens"]
