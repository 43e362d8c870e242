"""State that changes during a run belongs to an object that owns it: the engine call's step
counts to a StepCount (not to fields of a shared context patched while it runs), a chunk's
results to the ResultWriter, the schedule to the ChunkedRun."""

from __future__ import annotations

import dataclasses

import pytest

from onnx_am.audit.chunks import ChunkedRun, checkpoint_key
from onnx_am.audit.writer import ResultWriter
from onnx_am.engine.loop import LoopContext, StepCount
from onnx_am.objectives import Target


def test_step_count_owns_the_progress_counts():
    seen = []
    count = StepCount(total=3 * 10, progress=lambda done, total, info: seen.append((done, total)))
    count.skip(10)  # a batch restored from a checkpoint
    count.given(10, 4)  # the pace gives the next batch 4 of its 10 steps
    for _ in range(4):
        count.stepped({})
    count.given(10, 0)  # the last batch is not started
    assert (count.done, count.total) == (14, 14)
    assert seen == [(11, 24), (12, 24), (13, 24), (14, 24)]


def test_a_callback_that_raises_stops_after_the_step_is_counted():
    def stop(done, total, info):
        raise KeyboardInterrupt

    count = StepCount(total=5, progress=stop)
    with pytest.raises(KeyboardInterrupt):
        count.stepped({})
    assert count.done == 1


def test_the_loop_context_is_read_only():
    assert dataclasses.fields(LoopContext)  # a dataclass
    names = {f.name for f in dataclasses.fields(LoopContext)}
    assert not names & {"total_steps", "done_steps", "progress"}  # counts live in StepCount
    assert LoopContext.__dataclass_params__.frozen


def test_a_chunk_checkpoint_names_its_settings_and_targets():
    a, b = Target("y", 0), Target("y", 1)
    key = checkpoint_key({"steps": 8}, [a, b])
    assert key == checkpoint_key({"steps": 8}, [a, b])
    assert key != checkpoint_key({"steps": 9}, [a, b])
    assert key != checkpoint_key({"steps": 8}, [a])


def test_the_chunk_run_schedules_and_the_writer_keeps_results():
    scheduling = {"optimize", "pending", "start"}
    writing = {"restore", "accept", "document", "ordered", "finished"}
    assert scheduling <= set(vars(ChunkedRun)) and not scheduling & set(vars(ResultWriter))
    assert writing <= set(vars(ResultWriter))
    assert not {"restore", "ordered", "finished", "finish", "_save"} & set(vars(ChunkedRun))
