"""The Ray schedule's bookkeeping, driven by in-memory workers: no Ray instance, no clock.

A :class:`FakeRay` stands in for the Ray calls of ``_Schedule`` (spawn, submit, wait, get,
kill, dead). Each wait answers at once with the first thing that can be answered (a worker
coming up before a chunk's result); when nothing can, it answers "no news", as a real wait
does after its timeout. A schedule that would wait forever therefore shows up as a run of
"no news" answers, which the fake turns into a test failure.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from onnx_am.audit.executor import ChunkTask
from onnx_am.errors import DistributedError

ray = pytest.importorskip("ray")
from ray.exceptions import ActorUnavailableError, RayActorError  # noqa: E402

from onnx_am.audit.ray_executor import RayExecutor, _Schedule  # noqa: E402

#: Waits without news after which a schedule counts as stalled (a real one waits 10 s each).
STALL = 50


class FakeRay:
    """Workers in memory. A worker runs its chunks in order: a chunk's result is ready when
    it is first in its worker's queue. A killed worker's chunks fail with a worker error,
    except the last ``forget`` of them, whose answer never comes (Ray lost track of them).

    Attributes:
        ran: ``(worker, chunk index)`` of every chunk whose result was returned.
        killed: the workers killed, in order.
    """

    def __init__(self, forget: int = 0, failing_starts: int = 0, unreachable: str = ""):
        self.forget, self.failing_starts, self.unreachable = forget, failing_starts, unreachable
        self.queues: dict[str, list] = {}
        self.dead: set[str] = set()
        self.forgotten: set = set()
        self.killed: list[str] = []
        self.ran: list[tuple[str, int]] = []
        self.spawned = 0
        self.quiet = 0

    # -- the calls of _Schedule -------------------------------------------------

    def spawn(self):
        self.spawned += 1
        actor = f"w{self.spawned}"
        self.queues[actor] = []
        return actor, ("up", actor)

    def submit(self, actor, recipe, model, targets, lease):
        ref = ("run", actor, targets[0], len(self.queues[actor]), id(object()))
        self.queues[actor].append(ref)
        return ref

    def wait(self, refs: list, timeout: float) -> list:
        for ref in sorted(refs, key=lambda ref: ref[0] != "up"):  # workers come up first
            if ref[0] == "up" or ref[1] in self.dead or ref[1] == self.unreachable:
                if ref not in self.forgotten:
                    return self._news(ref)
            elif self.queues[ref[1]] and self.queues[ref[1]][0] == ref:
                return self._news(ref)
        self.quiet += 1
        if self.quiet > STALL:
            raise AssertionError(f"the schedule waits forever on {refs}")
        return []

    def get(self, ref):
        kind, actor = ref[0], ref[1]
        if kind == "up":
            if self.failing_starts:
                self.failing_starts -= 1
                raise RayActorError()
            return 1234
        if actor in self.dead:
            raise RayActorError()
        if actor == self.unreachable:
            raise ActorUnavailableError("no answer in time", None)
        self.queues[actor].remove(ref)
        self.ran.append((actor, ref[2]))
        return ref[2], None

    def kill(self, actor) -> None:
        if actor in self.dead:
            return
        self.dead.add(actor)
        self.killed.append(actor)
        queued = self.queues[actor]
        self.forgotten.update(queued[len(queued) - self.forget :] if self.forget else ())

    def dead_(self, actor) -> bool:
        return actor in self.dead

    def _news(self, ref) -> list:
        self.quiet = 0
        return [ref]


def calls_of(fake: FakeRay) -> SimpleNamespace:
    return SimpleNamespace(
        spawn=fake.spawn,
        submit=fake.submit,
        wait=fake.wait,
        get=fake.get,
        kill=fake.kill,
        dead=fake.dead_,
    )


def schedule(fake: FakeRay, chunks: int, workers: int = 2, on_step=None, paces=None):
    """A schedule of ``chunks`` one-unit chunks of model ``m`` (the unit is the index)."""
    executor = RayExecutor(workers=workers)
    plan = SimpleNamespace(rows_per_unit=2, config=SimpleNamespace(ascent=SimpleNamespace(steps=8)))
    works = {"m": SimpleNamespace(recipe=SimpleNamespace(plan=plan))}
    tasks = [ChunkTask("m", i, (i,)) for i in range(chunks)]
    return executor, _Schedule(
        executor, works, {"m": "model-ref"}, tasks, on_step, paces or {}, calls_of(fake)
    )


class KillBusiest:
    """As tests/test_ray.py: kill the first worker holding two chunks when the second is sent."""

    def __init__(self, fake: FakeRay, executor: RayExecutor):
        self.fake, self.executor, self.killed = fake, executor, None

    def __call__(self, task, step, steps) -> None:
        busy = [actor for actor, count in self.executor.queued.items() if count >= 2]
        if busy and self.killed is None:
            self.killed = busy[0]
            self.fake.kill(self.killed)


def finished(run) -> list[int]:
    return sorted(report for _, report in run)


def test_a_killed_worker_whose_second_chunk_never_answers_does_not_stall_the_run():
    # Ray answers for the first chunk of the killed worker but never for the second: before,
    # the schedule waited on it forever (load not empty, so no stall check fired).
    fake = FakeRay(forget=1)
    executor, run = schedule(fake, chunks=5)
    kill = KillBusiest(fake, executor)
    run.on_step = kill
    assert finished(run.run()) == [0, 1, 2, 3, 4]
    assert kill.killed == "w1" and executor.retried == 2
    assert "w1" not in executor.actors and len(executor.actors) == 2  # replaced
    assert sorted(index for _, index in fake.ran) == [0, 1, 2, 3, 4]  # each once
    assert not run.running and not run.queue


def test_a_killed_worker_whose_chunks_all_answer_is_replaced_and_nothing_runs_twice():
    fake = FakeRay()
    executor, run = schedule(fake, chunks=5)
    run.on_step = KillBusiest(fake, executor)
    assert finished(run.run()) == [0, 1, 2, 3, 4]
    assert sorted(index for _, index in fake.ran) == [0, 1, 2, 3, 4]
    assert executor.retried == 2 and len(executor.actors) == 2


def test_an_unreachable_worker_is_killed_so_it_holds_no_resources_and_its_chunks_rerun():
    # An ActorUnavailableError is a RayActorError: the worker may be alive; before, it was
    # dropped from the pool but never killed, keeping its CPU from its replacement.
    fake = FakeRay(unreachable="w2")
    executor, run = schedule(fake, chunks=4)
    assert finished(run.run()) == [0, 1, 2, 3]
    assert fake.killed == ["w2"]
    assert "w2" not in executor.actors
    assert all(actor != "w2" for actor, _ in fake.ran)


def test_with_every_worker_gone_and_work_queued_new_workers_are_started():
    # One worker, killed with both its chunks: nothing is in flight and nothing is starting,
    # so the schedule must start a worker rather than wait on nothing.
    fake = FakeRay()
    executor, run = schedule(fake, chunks=3, workers=1)
    run.on_step = KillBusiest(fake, executor)
    assert finished(run.run()) == [0, 1, 2]
    assert executor.actors == ["w2"] and fake.killed == ["w1"]


def test_workers_that_keep_failing_to_start_end_the_run_with_one_line():
    fake = FakeRay(failing_starts=100)
    _, run = schedule(fake, chunks=3)
    with pytest.raises(DistributedError, match="Ray workers fail to start") as error:
        list(run.run())
    assert "\n" not in str(error.value)


class Refuse:
    """A pace with room for ``room`` chunks; the rest are refused."""

    def __init__(self, room: int):
        self.room = room

    def admit(self, rows: int, later: int, units: int) -> bool:
        self.room -= 1
        return self.room >= 0


def test_chunks_the_pace_refuses_are_skipped_and_the_run_ends(monkeypatch):
    import onnx_am.audit.ray_executor as ray_executor

    monkeypatch.setattr(ray_executor.PaceLease, "of", classmethod(lambda cls, *a: "lease"))
    fake = FakeRay()
    _, run = schedule(fake, chunks=5, paces={"m": Refuse(room=2)})
    monkeypatch.setattr(run, "_observe", lambda *args: None)
    assert finished(run.run()) == [0, 1]
    assert not run.queue and not run.running


def test_a_worker_lost_three_times_with_one_chunk_gives_up_with_one_line():
    fake = FakeRay()
    executor, run = schedule(fake, chunks=1, workers=1)

    def kill_holder(task, step, steps):
        fake.kill(executor.actors[-1])

    run.on_step = kill_holder
    with pytest.raises(DistributedError, match="chunk 0 of m was lost with its worker 3 times"):
        list(run.run())


def test_workers_asked_for_before_the_plans_are_taken_over_once_up_and_replaced_if_not():
    # prepare() asks for the workers without waiting (they come up while models are planned);
    # the run waits for them, and one that fails to come up is replaced.
    fake = FakeRay(failing_starts=1)
    executor, run = schedule(fake, chunks=4)
    for _ in range(2):
        actor, ready = fake.spawn()
        executor.actors.append(actor)
        executor.starting[ready] = actor
    assert finished(run.run()) == [0, 1, 2, 3]
    assert executor.actors == ["w2", "w3"] and run.failed_starts == 1
    assert not executor.starting
    assert {actor for actor, _ in fake.ran} <= {"w2", "w3"}


def test_the_driver_learns_a_races_step_time_from_the_forwards_it_ran():
    """A race's finalists run more steps than its rows' average: the step time is the
    optimization's seconds per forward of every row, not per step of the longest trace."""
    from onnx_am.engine.deadline import Deadline
    from onnx_am.engine.pace import Pace

    pace = Pace(Deadline(100.0, 0.0, clock=lambda: 0.0), seconds_per_row_step=1.0)
    executor, run = schedule(FakeRay(), chunks=1, workers=2, paces={"m": pace})
    trace = [0.0] * 37  # the finalist: 36 steps, where a plain row of this plan runs 8
    report = SimpleNamespace(results=[SimpleNamespace(trace=trace)], row_forwards=2 * 9)
    report.timings = {"optimize": 36.0}
    run._observe(ChunkTask("m", 0, (0,)), report, Pace(Deadline(None, 0.0), 1.0))
    assert pace.seconds_per_row_step == pytest.approx(36.0 / (2 * 9 * 2))  # 2 workers share


def test_a_worker_runs_a_raced_chunk_as_this_process_does(monkeypatch):
    """The actor's class, called in this process (Ray's object store stood in for), runs a
    raced chunk under a lease that cuts its steps: the race of those steps, as here."""
    import torch
    from test_engine_models import tiny_cnn

    import onnx_am.audit.ray_executor as ray_executor
    from onnx_am.audit.executor import ChunkRecipe, PaceLease, run_chunk
    from onnx_am.audit.options import ImportSettings
    from onnx_am.audit.pipeline import import_model, rewrite_for
    from onnx_am.engine.config import AMConfig
    from onnx_am.engine.plan import parse_run_plan
    from onnx_am.engine.racing import RacingSettings

    model = tiny_cnn().SerializeToString()
    imported = import_model(model, ImportSettings())
    racing = RacingSettings(candidates=4, corners=1, rungs=2, screen=8, first_steps=1)
    config = AMConfig.of(steps=24, restarts=2, batch_size=5, crosscheck=False, racing=racing)
    plan = parse_run_plan(imported, ["logits:0-2"], ["standard", "decoupled(0.3)", "best"], config)
    recipe = ChunkRecipe("cnn", ImportSettings(), plan)
    monkeypatch.setattr(ray_executor.ray, "get", lambda ref: model)
    worker = ray_executor.ChunkWorker(torch.get_num_threads())
    lease = PaceLease(steps_cap=16, seconds_left=1e9, seconds_per_row_step=1e-9)
    found, pace = worker.run(recipe, [SimpleNamespace(hex=lambda: "ref")], plan.targets, lease)
    assert pace.steps_cap == 16 and found.settings["racing"] == racing.to_dict()
    short = parse_run_plan(
        imported, ["logits:0-2"], ["standard", "decoupled(0.3)", "best"], config.replaced(steps=16)
    )
    rewrite = rewrite_for(imported, plan)
    here = run_chunk(imported, rewrite, ChunkRecipe("cnn", ImportSettings(), short), short.targets)
    assert len(found.results) == 3 * 3  # units x reported methods
    assert all(len(r.restart_activations) == 4 for r in found.results)  # every candidate
    for a, b in zip(found.results, here.results, strict=True):
        assert a.activation == b.activation and a.trace == b.trace
        assert (a.image == b.image).all()
