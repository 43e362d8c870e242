"""Checkpoints of a running engine call: saved at step boundaries, restored exactly."""

from __future__ import annotations

import pytest
import torch
from test_engine_models import one_thread, tiny_cnn  # noqa: F401  (fixture)

from onnx_am import import_onnx
from onnx_am.engine.checkpoint import Checkpointer, read_checkpoint
from onnx_am.engine.maximizer import AMConfig, maximize

pytestmark = pytest.mark.usefixtures("one_thread")

TARGETS = ["logits:0-2", "act2:3"]
METHODS = ["standard", "decoupled(0.3)", "best"]


class Stop(Exception):
    """Raised by the progress callback, as the CLI does after a signal."""


@pytest.fixture(scope="module")
def cnn():
    return import_onnx(tiny_cnn())


def stop_at(step: int):
    def progress(done, total, info):
        if done == step:
            raise Stop

    return progress


@pytest.mark.parametrize("optimizer", ["pga", "adam"])
def test_stopped_and_resumed_call_equals_an_uninterrupted_one(cnn, tmp_path, optimizer):
    # 4 targets x 2 restarts x 2 runs = 16 rows, 5 per engine chunk: 4 chunks of 14 steps
    config = AMConfig.of(steps=14, restarts=2, batch_size=5, optimizer=optimizer, crosscheck=False)
    whole = maximize(cnn, TARGETS, METHODS, config)
    path = tmp_path / "checkpoint.pt"
    stopped_at = 14 + 14 + 6  # two chunks done, the third one 6 steps in
    with pytest.raises(Stop):
        maximize(
            cnn,
            TARGETS,
            METHODS,
            config,
            progress=stop_at(stopped_at),
            checkpoint=Checkpointer(path, "call", interval=3600),
        )
    saved = read_checkpoint(path)
    assert saved["batches_done"] == 2 and saved["batch"] == 2 and saved["step"] == 6
    seen = []
    again = maximize(
        cnn,
        TARGETS,
        METHODS,
        config,
        progress=lambda d, t, i: seen.append(d),
        checkpoint=Checkpointer(path, "call", interval=3600),
    )
    assert seen[0] == stopped_at + 1  # nothing was optimized twice
    for a, b in zip(whole.results, again.results, strict=True):
        assert a.activation == b.activation and a.trace == b.trace
        assert (a.image == b.image).all()


def test_saved_every_interval_and_ignored_under_another_key(cnn, tmp_path):
    ticks = iter(range(10**6))
    path = tmp_path / "checkpoint.pt"
    checkpoint = Checkpointer(path, "call", interval=4, clock=lambda: next(ticks))
    config = AMConfig.of(steps=10, restarts=1, batch_size=64, crosscheck=False)
    maximize(cnn, TARGETS, METHODS, config, checkpoint=checkpoint)
    assert checkpoint.saves >= 2  # one clock tick per step check: every 4 steps
    other = Checkpointer(path, "another call")
    assert other.restore({}) is None and other.finished == {}


def test_an_unreadable_file_is_only_lost_work(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    assert Checkpointer(path, "call").restore({}) is None
    assert read_checkpoint(path) is None


def test_state_on_the_cpu_is_a_copy():
    from onnx_am.engine.checkpoint import BatchState

    x = torch.ones(2, 3)
    state = BatchState(0, 1, x, x, torch.zeros(2), torch.zeros(1, 2), {"m": x}).to_cpu()
    x += 1
    assert (state.x == 1).all() and (state.optimizer["m"] == 1).all()
