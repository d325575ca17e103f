"""`Simulation`: the steppable core (step, run(until), view, result) agrees with `Simulator.run`."""

from __future__ import annotations

import numpy as np
import pytest

from kvsched import LinearCost, Simulator, UnitTime
from kvsched.engine import Simulation
from kvsched.policies import make
from kvsched.workload.synthetic import default_workload

from sim_helpers import tiny

RECORDS = ("first_scheduled_time", "first_token_time", "finish_time", "num_evictions",
           "num_recomputed_tokens", "total_computed_tokens", "rejected")


@pytest.mark.parametrize("fast", [False, True])
def test_stepping_to_the_end_gives_the_records_of_run(fast):
    sim = Simulator(LinearCost(0.022, 8.7e-7), 2048, block_size=16, fast=fast, compiled=False)
    workload = default_workload(num_requests=60, rate=8.0, seed=5)
    expected = sim.run(workload, make("vllm"))
    simulation = Simulation(sim, workload, make("vllm"))
    steps = 0
    while simulation.step():
        steps += 1
    assert simulation.done and not simulation.step()
    result = simulation.result()
    for name in RECORDS:
        np.testing.assert_array_equal(getattr(result, name), getattr(expected, name), err_msg=name)
    assert result.num_iterations == expected.num_iterations and steps > 0


def test_run_until_stops_at_the_first_boundary_at_or_after_the_time():
    sim = Simulator(UnitTime(), 100, fast=False)
    # Two requests at t = 0 (prompt 2, 3 outputs each): each round computes both.
    simulation = Simulation(sim, tiny((0, 2, 3), (0, 2, 3)), make("vllm"))
    simulation.run(until=2.0)
    assert simulation.now == 2.0 and not simulation.done
    view = simulation.view()
    assert [r.request_id for r in view.running] == [0, 1] and not view.waiting
    assert [r.num_output_tokens for r in view.running] == [2, 2]       # prefill round + one decode
    partial = simulation.result()
    assert np.isnan(partial.finish_time).all()
    simulation.run()
    assert simulation.result().finish_time.tolist() == [3.0, 3.0]


def test_view_before_the_first_step_shows_nothing_arrived():
    simulation = Simulation(Simulator(UnitTime(), 100), tiny((1.5, 2, 1)), make("vllm"))
    view = simulation.view()
    assert view.now == 0.0 and not view.waiting and not view.running and view.has_future_arrivals
    simulation.step()                    # nothing to do: the clock jumps to the arrival
    assert simulation.now == 1.5
    simulation.step()
    assert simulation.done and simulation.result().finish_time.tolist() == [2.5]


def test_a_rejected_request_is_in_the_result_with_its_reason():
    simulation = Simulation(Simulator(UnitTime(), 8), tiny((0, 6, 4), (0, 2, 2)), make("vllm"))
    simulation.run()
    result = simulation.result()
    assert result.rejected.tolist() == [True, False]
    assert result.reject_reasons[0] == "needs 9 KV tokens at its last token; the KV capacity is 8 tokens"


def test_the_readme_library_example_runs(capsys):
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split("## The library: a steppable simulation", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    now, waiting, running, used = capsys.readouterr().out.split("\n")[0].split()
    assert float(now) >= 5.0 and int(running) > 0


def test_the_views_lists_are_read_only_live_windows():
    """`SchedulerView.waiting` / ``running`` (`ReadOnlyList`): the engine's own list, no copy,
    read-only; a slice is a tuple."""
    from kvsched.state import ReadOnlyList
    items = [1, 2, 3]
    window = ReadOnlyList(items)
    assert (len(window), window[0], window[1:], list(reversed(window)), 2 in window) == (3, 1, (2, 3), [3, 2, 1], True)
    items.append(4)
    assert list(window) == [1, 2, 3, 4]
    with pytest.raises(TypeError):
        window[0] = 5
    with pytest.raises(AttributeError):
        window.append(5)
