"""Chunks of one audit, or of many, on Ray actors (the ``[ray]`` extra).

Each worker is an actor that imports a model once, from the model's bytes in Ray's object
store (never a path the worker may not see), keeps it while chunks of it arrive, and returns
each chunk's :class:`~onnx_am.engine.results.MaximizeReport` to the driver, which alone writes
reports. A worker that dies (a killed actor, a lost node) takes its chunks with it; they go
back to the queue and run on another worker, and a replacement worker is started. A chunk is
yielded once, when its result has arrived, so nothing is lost or counted twice.

Only this module imports Ray, and only ``analyze --workers/--ray`` imports this module.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence

from onnx_am.audit.executor import (
    ChunkRecipe,
    ChunkTask,
    ModelWork,
    PaceLease,
    Paces,
    StepCallback,
    rows_after,
    run_chunk,
)
from onnx_am.engine.pace import Pace
from onnx_am.engine.results import MaximizeReport
from onnx_am.errors import DistributedError
from onnx_am.objectives import Target

try:
    import ray
    from ray.exceptions import ObjectLostError, RayActorError, RayTaskError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DistributedError(
        "running on Ray needs the ray extra: pip install 'onnx-am[ray]'"
    ) from exc

#: Chunks queued on one worker at once: the next one is already there when one finishes.
DEPTH = 2
#: Runs of one chunk before the audit gives up on it (each on a worker that then died).
MAX_ATTEMPTS = 3
#: Models a worker keeps imported; chunks arrive grouped by model.
KEEP_MODELS = 2
#: Seconds to wait for a worker when none is alive.
START_TIMEOUT = 300.0
#: Ray settings of a local instance this executor starts. Ray starts its workers at nice 15
#: by default; the workers here do all of the audit's work, and at nice 15 any ordinary
#: process starves them (under 3 busy processes a worker took many minutes to import torch,
#: and runs stalled waiting for chunks that got no CPU), so they run at the driver's nice 0.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}
#: Seconds of one wait for news (a chunk or a worker): after one without news, Ray is asked
#: which workers holding chunks are dead.
WAIT_SECONDS = 10.0


class ChunkWorker:
    """A Ray actor: imports each model once from its bytes and runs chunks of it."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.models: OrderedDict[tuple[str, str], tuple] = OrderedDict()

    def ready(self) -> int:
        """The worker's process id, once it is up."""
        return os.getpid()

    def run(
        self,
        recipe: ChunkRecipe,
        model: list,
        targets: tuple[Target, ...],
        lease: PaceLease | None = None,
    ) -> tuple[MaximizeReport, Pace | None]:
        """Run one chunk, paced by ``lease`` when given; return its report and what the
        pace cut. ``model`` is ``[ObjectRef of the ONNX bytes]`` (a list, so that Ray hands
        over the reference and the bytes are fetched only the first time)."""
        imported, rewrite = self._model(recipe, model[0])
        pace = lease.pace() if lease is not None else None
        return run_chunk(imported, rewrite, recipe, targets, pace=pace), pace

    def _model(self, recipe: ChunkRecipe, ref) -> tuple:
        from onnx_am.audit.pipeline import import_model, rewrite_for

        key = (recipe.key, ref.hex())
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key]
        imported = import_model(ray.get(ref), recipe.imports)
        rewrite = rewrite_for(imported, recipe.plan)
        self.models[key] = (imported, rewrite)
        while len(self.models) > KEEP_MODELS:
            self.models.popitem(last=False)
        return imported, rewrite


class RayExecutor:
    """Runs chunk tasks on Ray actors; yields each finished chunk once.

    Args:
        workers: number of worker actors. ``None`` with ``address``: one per GPU of the
            cluster (``device="cuda"``), else one per ``threads`` CPUs of it.
        address: a Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
            ``None`` starts a local Ray instance for the run (stopped by :meth:`close`) unless
            one is already running in this process, which is then used.
        device: ``"cpu"`` or ``"cuda"``; with ``cuda`` every worker holds one GPU.
        threads: torch threads (and Ray CPUs) per worker. Default: locally the machine's
            cores divided among the workers, on a cluster 1.

    Attributes:
        actors: the worker actors (started or starting).
        queued: chunks sent to each live, started worker and not yet returned.
        starting: workers asked for by :meth:`prepare` and not yet seen up, by the reference
            that is ready once they are (a run takes them over).
        retried: chunks that were run again because their worker died.
    """

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ):
        if workers is not None and workers < 1:
            raise DistributedError(f"--workers must be at least 1, got {workers}")
        if workers is None and address is None:
            raise DistributedError("give a number of workers or a Ray cluster address")
        if threads is not None and threads < 1:
            raise DistributedError(f"threads per worker must be at least 1, got {threads}")
        self.workers, self.address, self.device = workers, address, device
        self.threads = threads
        self.actors: list = []
        self.queued: dict = {}
        self.starting: dict = {}
        self.retried = 0
        self._owns_ray = False
        self._started = False
        self._actor_class = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Join or start Ray and fix the number and size of workers; idempotent."""
        if self._started:
            return
        if not ray.is_initialized():
            self._init_ray()
        self._started = True
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        if self.threads is None:
            local = self.address is None and self.workers is not None
            self.threads = max(1, cpus // self.workers) if local else 1
        if self.workers is None:
            if self.device.startswith("cuda"):
                self.workers = int(resources.get("GPU", 0))
            else:
                self.workers = cpus // self.threads
            self.workers = max(1, self.workers)
        gpus = 1 if self.device.startswith("cuda") else 0
        if gpus and resources.get("GPU", 0) < self.workers:
            raise DistributedError(
                f"--device cuda with {self.workers} worker(s) needs as many GPUs; the Ray "
                f"cluster has {resources.get('GPU', 0):g}"
            )
        self._actor_class = ray.remote(num_cpus=self.threads, num_gpus=gpus, max_restarts=0)(
            ChunkWorker
        )

    def _init_ray(self) -> None:
        quiet = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
        try:
            if self.address is not None:
                ray.init(address=self.address, **quiet)
            else:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                cores = os.cpu_count() or 1
                cpus = max(cores, self.workers * (self.threads or 1))
                ray.init(num_cpus=cpus, _system_config=LOCAL_SYSTEM_CONFIG, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a local Ray instance"
            raise DistributedError(f"cannot start or join Ray at {where}: {exc}") from exc
        self._owns_ray = True

    def start_workers(self) -> None:
        """Start the missing workers now and wait until all are up.

        Raises:
            DistributedError: a worker could not be started.
        """
        self.start()
        while len(self.actors) < self.workers:
            actor, ready = self._spawn()
            self.actors.append(actor)
            self.starting[ready] = actor
        try:
            ray.get(list(self.starting))
        except RayActorError as exc:
            raise DistributedError(f"a Ray worker could not be started: {exc}") from exc
        self.starting.clear()

    def prepare(self) -> None:
        """Start Ray and the workers, and wait for them, before the plans: their start counts
        against the deadline, and the plans time their steps on a machine no longer busy
        with it (on 2 cores, timing while the workers imported torch measured steps 25x too
        slow; see ``benchmarks/results/many_budget.md``)."""
        self.start_workers()

    def stop_workers(self) -> None:
        """Stop the workers (the next :meth:`run` starts new ones); Ray keeps running."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        self.queued.clear()
        self.starting.clear()

    def close(self) -> None:
        """Stop the workers, and the local Ray instance if this executor started it."""
        self.stop_workers()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running -----------------------------------------------------------------

    def run(
        self,
        works: Mapping[str, ModelWork],
        tasks: Sequence[ChunkTask],
        on_step: StepCallback | None = None,
        paces: Paces | None = None,
    ) -> Iterator[tuple[ChunkTask, MaximizeReport]]:
        """Yield ``(task, report)`` for every task as it finishes. ``on_step(task, 0, 0)`` is
        called when a chunk is sent to a worker (workers report whole chunks, not steps).
        With ``paces``, each chunk is leased the steps that fit when it is sent (the workers
        counted as running at once) and stops at the deadline there; a chunk without room
        is not sent."""
        if not tasks:
            return
        self.start()
        models = {}
        for key in {task.model for task in tasks}:
            try:
                data = works[key].imported.original.SerializeToString()
            except ValueError as exc:  # protobuf's 2 GiB limit
                raise DistributedError(
                    f"model {key} cannot be sent to Ray workers as one ONNX message: {exc}"
                ) from exc
            models[key] = ray.put(data)
        yield from _Schedule(self, works, models, tasks, on_step, paces or {}).run()

    def _spawn(self):
        actor = self._actor_class.remote(self.threads)
        return actor, actor.ready.remote()


class _RayCalls:
    """The Ray calls of a :class:`_Schedule`, in one place so that a test can drive the
    schedule with in-memory workers instead (deterministically, no clock)."""

    def __init__(self, executor: RayExecutor):
        self.executor = executor

    def spawn(self):
        """A new worker and the reference that is ready once it is up."""
        return self.executor._spawn()

    def submit(self, actor, *args):
        return actor.run.remote(*args)

    def wait(self, refs: list, timeout: float) -> list:
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        return ready

    def get(self, ref):
        return ray.get(ref)

    def kill(self, actor) -> None:
        try:
            ray.kill(actor)
        except (ValueError, RayActorError):  # already gone
            pass

    def dead(self, actor) -> bool:
        """Whether Ray's control store knows ``actor`` as dead (False when it cannot say)."""
        try:
            from ray._private.state import actors

            info = actors(actor._actor_id.hex())
        except Exception:  # noqa: BLE001 - a private API; unknown means not known dead
            return False
        return isinstance(info, dict) and info.get("State") == "DEAD"


class _Schedule:
    """One :meth:`RayExecutor.run`: a queue of chunks over a pool of workers.

    Every chunk is at all times in exactly one place: the queue, in flight on one started
    worker (``running``), yielded, or skipped (its pace had no room); a worker's load is
    counted from ``running``, never kept apart. A worker that is lost (its chunk failed with
    a worker error, or Ray knows it dead) is killed, every chunk in flight on it goes back to
    the queue at once (none waits for its own error to arrive), and a new worker is started
    while work remains. So the loop never waits with nothing in flight and no worker
    starting: with work queued and no started worker it starts one, and it gives up with a
    one-line error when workers keep failing to start or none comes up in
    :data:`START_TIMEOUT`.
    """

    def __init__(
        self, executor: RayExecutor, works, models, tasks, on_step, paces: Paces, calls=None
    ):
        self.executor, self.works, self.models = executor, works, models
        self.on_step, self.paces = on_step, paces
        self.calls = calls or _RayCalls(executor)
        self.plans = {key: work.recipe.plan for key, work in works.items()}
        self.queue: deque[ChunkTask] = deque(tasks)
        self.attempts: dict[ChunkTask, int] = {}
        self.running: dict = {}  # result ref -> (task, actor)
        self.starting: dict = {}  # ready ref -> actor
        self.load: dict = executor.queued  # started actor -> chunks in flight on it
        self.idle_since: float | None = None
        self.failed_starts = 0

    def run(self) -> Iterator[tuple[ChunkTask, MaximizeReport]]:
        self.starting.update(self.executor.starting)  # asked for by prepare(), maybe not up
        self.executor.starting.clear()
        coming = set(self.starting.values())
        self.load.clear()
        self.load.update({actor: 0 for actor in self.executor.actors if actor not in coming})
        try:
            while self.queue or self.running:
                self._dispatch()
                if not self.running and not self.queue:
                    break  # the pace refused what was left
                self._keep_workers()
                ready = self.calls.wait([*self.running, *self.starting], WAIT_SECONDS)
                if not ready:
                    self._check_workers()
                    continue
                ref = ready[0]
                if ref in self.starting:
                    self._started(ref)
                    continue
                task, actor = self.running.pop(ref)
                self._count()
                try:
                    report, worker_pace = self.calls.get(ref)
                except RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, Exception) else exc) from None
                except RayActorError:
                    self._requeue(task)
                    self._lose(actor)
                    continue
                except ObjectLostError:  # the result is gone, the worker may well be alive
                    self._requeue(task)
                    continue
                self._observe(task, report, worker_pace)
                yield task, report
        finally:  # workers still coming up stay the executor's, for its next run
            self.executor.starting.update(self.starting)

    def _dispatch(self) -> None:
        for actor in list(self.load):
            while self.queue and self.load[actor] < DEPTH:
                task = self.queue.popleft()
                lease = self._lease(task)
                if lease is False:
                    continue  # no room before the deadline: skipped, as on every executor
                recipe = self.works[task.model].recipe
                model = [self.models[task.model]]
                ref = self.calls.submit(actor, recipe, model, task.targets, lease)
                self.running[ref] = (task, actor)
                self.attempts[task] = self.attempts.get(task, 0) + 1
                self._count()
                if self.on_step is not None:
                    self.on_step(task, 0, 0)

    def _count(self) -> None:
        """Each started worker's load, from what is in flight on it."""
        for actor in self.load:
            self.load[actor] = 0
        for _, actor in self.running.values():
            if actor in self.load:
                self.load[actor] += 1

    def _keep_workers(self) -> None:
        """Start the workers that are missing while chunks are left (no more than chunks are
        left). With chunks queued and none in flight, a worker is therefore always on its
        way; none coming up for :data:`START_TIMEOUT` seconds is an error."""
        wanted = min(self.executor.workers, len(self.queue) + len(self.running))
        while len(self.load) + len(self.starting) < wanted:
            self._spawn()
        if self.running or not self.queue:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = time.monotonic()
        elif time.monotonic() - self.idle_since > START_TIMEOUT:
            raise DistributedError(
                f"no Ray worker could be started in {START_TIMEOUT:.0f} s "
                f"(resources: {ray.available_resources()})"
            )

    def _check_workers(self) -> None:
        """After a wait with no news: a worker that Ray knows dead is lost, whether or not
        the errors of its chunks have arrived."""
        for actor in {actor for _, actor in self.running.values()}:
            if self.calls.dead(actor):
                self._lose(actor)

    def _lease(self, task: ChunkTask) -> PaceLease | None | bool:
        """The pace of ``task`` on its worker (None: not paced); False: no room left."""
        pace = self.paces.get(task.model)
        if pace is None:
            return None
        plan = self.plans[task.model]
        rows = plan.rows_per_unit * len(task.targets)
        later = rows_after([task, *self.queue], 0, self.plans) // max(1, self.executor.workers)
        if not pace.admit(rows, later, len(task.targets)):
            return False
        return PaceLease.of(pace, rows, plan.config.ascent.steps, self.executor.workers)

    def _observe(self, task: ChunkTask, report: MaximizeReport, worker_pace: Pace | None):
        """Learn the step time from a finished chunk; count what its worker's pace cut."""
        pace = self.paces.get(task.model)
        if pace is None or worker_pace is None:
            return
        rows = self.plans[task.model].rows_per_unit * len(task.targets)
        if report.row_forwards:  # a race's finalists run longer than its rows' average
            steps = report.row_forwards / max(1, rows) - 1
        else:
            steps = max((len(r.trace) - 1 for r in report.results), default=0)
        seconds = report.timings.get("optimize", 0.0)
        pace.observe(rows, steps, seconds, sharing=self.executor.workers)
        pace.merge(worker_pace)

    def _spawn(self) -> None:
        actor, ready = self.calls.spawn()
        self.executor.actors.append(actor)
        self.starting[ready] = actor

    def _started(self, ref) -> None:
        actor = self.starting.pop(ref)
        try:
            self.calls.get(ref)
        except RayActorError as exc:
            self.failed_starts += 1
            if self.failed_starts >= MAX_ATTEMPTS * self.executor.workers:
                raise DistributedError(
                    f"Ray workers fail to start ({self.failed_starts} tries; is onnx-am "
                    f"installed on every node?): {exc}"
                ) from exc
            self._drop(actor)
            return
        self.load[actor] = 0

    def _requeue(self, task: ChunkTask) -> None:
        """``task`` was lost with its worker: first in the queue again, within limits."""
        if self.attempts[task] >= MAX_ATTEMPTS:
            raise DistributedError(
                f"chunk {task.index} of {task.model} was lost with its worker "
                f"{self.attempts[task]} times; giving up"
            )
        self.executor.retried += 1
        self.queue.appendleft(task)

    def _lose(self, actor) -> None:
        """``actor`` is gone: every chunk still in flight on it goes back to the queue now,
        and it is killed (so that it holds no resources if it was only unreachable)."""
        for ref, (task, holder) in list(self.running.items()):
            if holder == actor:
                del self.running[ref]
                self._requeue(task)
        self._drop(actor)

    def _drop(self, actor) -> None:
        """Take ``actor`` out of the pool for good; ``_keep_workers`` starts another."""
        self.load.pop(actor, None)
        self._count()
        if actor in self.executor.actors:
            self.executor.actors.remove(actor)
        self.calls.kill(actor)


__all__ = ["ChunkWorker", "RayExecutor"]
