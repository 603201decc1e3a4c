"""Where shards run: in this process, on long-lived local worker processes (one per GPU for a model stage), or on
long-lived Ray actors. Both pools serve shard descriptors (`ShardTask`: an index and a row range); the worker
reads its rows from the run's `_inputs.parquet`, runs them through its stage (set up once per worker) and writes
the part itself (parquet, then stats json last). The driver only hands out descriptors and shows progress.

How this answers the design questions of ../shared/ENGINE.md (the rest are in runner.py):

2. In-flight bound: at most `IN_FLIGHT` (2) shards per worker or actor, one running and one ready, counted in
   shards (the unit a worker reads and writes on its own; the rows of a shard are read only by the worker that
   runs it, so the driver holds descriptors, never rows). Upstream blocks: the driver hands out the next
   descriptor only when a worker finishes one. Decoded frames are bounded inside the stage (decode-ahead of
   `prefetch` batches, see run/decode.py and the stages), not by the executor.
3. Device: the executor, never the stage. Locally each model worker is a fresh (spawned) interpreter started
   with `CUDA_VISIBLE_DEVICES` set to its GPU(s) in its environment, so torch in it sees only those and `auto`
   or `cuda` means `cuda:0` as the worker sees it; `--gpus none` starts it with `CUDA_VISIBLE_DEVICES=""`.
   On Ray the actor is given `num_gpus` and Ray sets `CUDA_VISIBLE_DEVICES` in it before the stage is built;
   under Slurm the job's own `CUDA_VISIBLE_DEVICES` is the visible list the local executor picks from. Stage
   code calls only `models.device.resolve_device(device)` inside `setup`. Two models per GPU: the stage (or the
   run, `--gpus-per-worker 0.5`) declares `Resources.gpus` < 1 and the executor puts 1/gpus workers on each GPU.
5. Failure ladder, as the executors see it: a row's failure is data (a `failed` row, in shard.py); a worker
   that dies (segfault, OOM killer, SIGKILL) costs a retry of the one shard it was running, its queued shard
   goes back without blame; a shard that was running when its worker died is retried alone on a fresh worker
   (nothing else is queued beside it, so blame stays exact) and after `MAX_SHARD_ATTEMPTS` deaths it is given
   up: the other shards still run and the run then ends with one line naming the shard indices; workers that
   keep dying with no shard finished in between (a model whose load segfaults) end the run after
   `MAX_DEATHS_WITHOUT_PROGRESS` restarts, rather than trying every shard; an exception that escapes a
   shard (a stage's setup failing: a bad model path, say) stops the run with that exception; `StageAbort`
   stops the run at once (the other workers are killed mid-shard: their torn temp files are removed, on Ray
   by the next run since Ray kills asynchronously, and they rerun on resume), writing nothing for the shards
   in hand and keeping every complete part. There is no
   error-rate abort: a shard full of failed rows is still a complete, retryable part (`vidrd-data retry`).
6. Executor interface: `execute(tasks, stage_cls, params, ...)` runs descriptors to completion or raises. Ray
   is imported only by `--executor ray` (the `vidrd[ray]` extra); the local executor needs the base install.

Ray: an own pool of actors rather than Ray Data `map_batches(..., ActorPoolStrategy)`, because each actor must
read its own rows and write its own part atomically (Ray Data would stream the rows through the object store
and collect output blocks on the driver), because Ray Data retries failed tasks without limit (a
worker-killing input loops: ray #41258, #51946) where we need a bounded retry that names the shard, and
because `StageAbort` must stop everything at once. Ray tasks per shard (the old executor) reload the model per
shard: GPU tasks get `max_calls=1`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import threading
from collections import Counter, deque
from multiprocessing.connection import wait

from vidrd_data.run.processes import cores, exit_with_parent, picklable
from vidrd_data.run.progress import REPORT_EVERY_S, BatchedReport, RayCounter, run_progress
from vidrd_data.run.shard import ShardTask, run_shard
from vidrd_data.run.stage import Resources, RunnerError, Stage, StageAbort

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
IN_FLIGHT = 2  # shards handed to one worker at a time: one running, one ready
MAX_SHARD_ATTEMPTS = 4  # a shard whose worker died this many times while running it is given up
MAX_DEATHS_WITHOUT_PROGRESS = 12  # worker deaths in a row with no shard finished (a stage that cannot start)


# ---------------------------------------------------------------- placement


def visible_gpus() -> list[str]:
    """Return the ids of the GPUs this process may use: `CUDA_VISIBLE_DEVICES`'s entries when it is set (Slurm
    and container runtimes set it), else 0..n-1 for the n devices torch counts."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def choose_gpus(spec: str | None, visible: list[str]) -> list[str]:
    """Return the GPU ids `--gpus` picks from `visible`: all, none, a count (first N) or positions (0,2,3)."""
    spec = (spec or "all").strip()
    if spec == "all":
        return list(visible)
    if spec == "none":
        return []
    if spec.isdigit():
        if int(spec) > len(visible):
            raise RunnerError(f"--gpus {spec}: only {len(visible)} GPU(s) visible on this machine")
        return visible[: int(spec)]
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if not ids or not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise RunnerError(f"--gpus must be all, none, a count or distinct GPU ids like 0,2,3; got {spec!r}")
    missing = [i for i in ids if int(i) >= len(visible)]
    if missing:
        raise RunnerError(f"--gpus {spec}: no GPU {missing[0]} (visible: {len(visible)})")
    return [visible[int(i)] for i in ids]


def worker_resources(stage_cls: type[Stage], gpus_per_worker: float | None) -> Resources:
    """Return what one worker of the stage needs, the run's `--gpus-per-worker` overriding the stage's."""
    declared = stage_cls.resources
    if gpus_per_worker is None:
        return declared
    if not gpus_per_worker > 0:
        raise RunnerError(f"--gpus-per-worker must be > 0, got {gpus_per_worker}")
    return Resources(cpus=declared.cpus, gpus=float(gpus_per_worker))


def on_gpu(stage_cls: type[Stage], params: dict) -> bool:
    """Return whether the stage's params ask for an accelerator (a model stage whose device is not `cpu`)."""
    return stage_cls.uses_device(params) and str(params.get("device")) != "cpu"


def local_slots(stage_cls: type[Stage], params: dict, workers: int, gpus: str | None,
                gpus_per_worker: float | None) -> list[str | None]:
    """Return one `CUDA_VISIBLE_DEVICES` value per local worker to start (None: leave the environment as is).

    A model stage on GPUs gets one worker per chosen GPU, 1/gpus workers per GPU when its `gpus` < 1 (dealt
    round-robin, so `--workers 2` over two GPUs uses both), one worker per group of GPUs when > 1. A model
    stage without GPUs gets one worker (a second copy of the model would only compete for the same cores);
    any other stage `workers`, or min(4, cores).
    """
    if workers < 0:
        raise RunnerError(f"--workers must be ≥ 0 (0: auto), got {workers}")
    if not stage_cls.uses_device(params):
        return [None] * (workers or min(4, cores()))
    gpus_each = worker_resources(stage_cls, gpus_per_worker).gpus
    visible = visible_gpus()
    chosen = choose_gpus(gpus, visible) if on_gpu(stage_cls, params) else []
    if not chosen:
        # no GPU for this stage: hide the machine's GPUs from it, so `auto` means the CPU
        return [("" if visible else None)] * (workers or 1)
    if gpus_each < 1:
        per_gpu = max(1, math.floor(1 / gpus_each + 1e-9))
        slots = [g for _ in range(per_gpu) for g in chosen]
    else:
        k = math.ceil(gpus_each - 1e-9)
        if k > len(chosen):
            raise RunnerError(f"a worker of {stage_cls.name or 'this stage'} needs {k} GPUs; {len(chosen)} chosen")
        slots = [",".join(chosen[i:i + k]) for i in range(0, len(chosen) - k + 1, k)]
    return slots[:workers] if workers else slots


# ---------------------------------------------------------------- entry point


def execute(
    tasks: list[ShardTask], stage_cls: type[Stage], params: dict, *, workers: int = 0, executor: str = "local",
    gpus: str | None = None, gpus_per_worker: float | None = None, progress: bool = True, total: int = 0,
    label: str = "",
) -> None:
    """Run every shard task to its part, or raise (`StageAbort`, a stage's setup error, `RunnerError`)."""
    if executor not in EXECUTORS:
        raise RunnerError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    with run_progress(label, total, progress) as advance:
        if executor == "ray":
            _execute_ray(tasks, stage_cls, params, workers, gpus, gpus_per_worker, advance)
            return
        slots = local_slots(stage_cls, params, workers, gpus, gpus_per_worker)
        slots = slots[: len(tasks)]
        if len(tasks) == 1 and slots == [None]:
            # one shard and nothing to pin: this process is the worker (no start-up cost); with more shards a
            # worker process is worth its start-up: a shard that crashes it costs a retry, not the run
            run_shard(tasks[0], report=advance)
        elif slots:
            LocalPool(slots, advance).run(tasks)


def _given_up(indices: list[int], attempts: int) -> RunnerError:
    return RunnerError(
        f"shard(s) {', '.join(map(str, sorted(indices)))} killed their worker {attempts} times each and were given up "
        "(every other shard is written; rerun to retry them, or drop their input rows)"
    )


class _Scheduler:
    """Which shard goes to which worker: FIFO by shard index, at most `IN_FLIGHT` per worker; a shard whose
    worker died runs alone on a worker (so a second death blames it, not a neighbour)."""

    def __init__(self, tasks: list[ShardTask]):
        self.pending = deque(sorted(tasks, key=lambda t: t.index))
        self.deaths: Counter[int] = Counter()
        self.given_up: list[int] = []
        self.deaths_in_a_row = 0

    def finished(self) -> None:
        self.deaths_in_a_row = 0

    def next_for(self, in_hand: list[ShardTask]) -> ShardTask | None:
        """Return the next shard for a worker holding `in_hand`, or None when it should get nothing more."""
        if not self.pending or len(in_hand) >= IN_FLIGHT or any(self.deaths[t.index] for t in in_hand):
            return None
        if in_hand and self.deaths[self.pending[0].index]:
            return None  # a suspect waits for an idle worker
        return self.pending.popleft()

    def worker_died(self, running: ShardTask | None, queued: list[ShardTask]) -> None:
        """Put back a dead worker's shards: the one it was running with one more death counted."""
        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > MAX_DEATHS_WITHOUT_PROGRESS:
            raise RunnerError(f"worker processes died {self.deaths_in_a_row} times in a row without finishing a "
                              "shard; giving up (run with --debug and --workers 1 to see why)")
        for task in reversed(queued):
            self.pending.appendleft(task)
        if running is None:
            return
        self.deaths[running.index] += 1
        if self.deaths[running.index] >= MAX_SHARD_ATTEMPTS:
            log.error("shard %d killed its worker %d times; giving up on it", running.index, MAX_SHARD_ATTEMPTS)
            self.given_up.append(running.index)
        else:
            log.warning("a worker died running shard %d; retrying it alone (death %d of %d)", running.index,
                        self.deaths[running.index], MAX_SHARD_ATTEMPTS)
            self.pending.appendleft(running)


# ---------------------------------------------------------------- local processes


_ENV_LOCK = threading.Lock()  # os.environ is process-wide: one worker start at a time


class _LocalWorker:
    """A spawned worker process and the pipe it is fed through."""

    def __init__(self, ctx, slot: str | None):
        self.slot = slot
        self.conn, child = ctx.Pipe()
        # not a daemon: a stage's worker starts decode processes of its own
        self.process = ctx.Process(target=_serve, args=(child, os.getpid()), name=f"vidrd-worker[{slot}]")
        with _ENV_LOCK:
            before = os.environ.get("CUDA_VISIBLE_DEVICES")
            if slot is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = slot  # the child's environment is copied at start
            try:
                self.process.start()
            finally:
                if before is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = before
        child.close()
        self.in_hand: list[ShardTask] = []
        self.running: ShardTask | None = None
        self.hung_up = False  # its end of the pipe closed: it is exiting or gone

    def send(self, task: ShardTask) -> None:
        self.in_hand.append(task)
        self.conn.send(task)

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout=None if kill else 30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class LocalPool:
    """Long-lived spawned worker processes, one per slot (a GPU id, a share of one, or none), fed shard
    descriptors over their own pipes (no shared queue whose lock a killed worker could take with it)."""

    def __init__(self, slots: list[str | None], advance):
        self.slots = slots
        self.advance = advance
        self.ctx = mp.get_context("spawn")  # fork after torch/decord threads start is unsafe

    def run(self, tasks: list[ShardTask]) -> None:
        sched = _Scheduler(tasks)
        workers = [_LocalWorker(self.ctx, s) for s in self.slots]
        failure: BaseException | None = None
        clean = False  # every shard handed out came back: workers may finish and exit on their own
        try:
            while failure is None:
                for w in workers:
                    while (task := sched.next_for(w.in_hand)) is not None:
                        w.send(task)
                busy = [w for w in workers if w.in_hand]
                if not busy:
                    break
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for i, w in enumerate(workers):
                    if not w.in_hand:
                        continue
                    failure = self._read(w, sched)
                    if failure is not None:
                        break
                    if not w.hung_up and (w.process.exitcode is None or self._has_messages(w)):
                        continue
                    w.process.join()
                    # the worker is gone: blame the shard it was running, requeue the rest, start another
                    log.warning("worker %d (pid %s, exit code %s) died", i, w.process.pid, w.process.exitcode)
                    w.stop(kill=True)
                    sched.worker_died(w.running, [t for t in w.in_hand if t is not w.running])
                    workers[i] = _LocalWorker(self.ctx, w.slot)
            clean = failure is None
        finally:
            for w in workers:
                w.stop(kill=not clean)
        if failure is not None:
            raise failure
        if sched.given_up:
            raise _given_up(sched.given_up, MAX_SHARD_ATTEMPTS)

    @staticmethod
    def _has_messages(w: _LocalWorker) -> bool:
        if w.hung_up:
            return False
        try:
            return w.conn.poll()
        except OSError:
            w.hung_up = True
            return False

    def _read(self, w: _LocalWorker, sched: _Scheduler) -> BaseException | None:
        """Handle every message waiting from worker `w`; return the exception that must end the run, if any."""
        while self._has_messages(w):
            try:
                kind, index, *rest = w.conn.recv()
            except (EOFError, OSError):
                w.hung_up = True  # it died (or exited): its death is handled by the caller
                return None
            if kind == "start":
                w.running = next(t for t in w.in_hand if t.index == index)
            elif kind == "progress":
                self.advance(*rest)
            elif kind == "done":
                w.in_hand = [t for t in w.in_hand if t.index != index]
                w.running = None
                sched.finished()
            elif kind == "abort":
                return StageAbort(rest[0])
            else:  # "error": an exception escaped the shard (a stage that cannot set up, or a bug)
                return rest[0]
        return None


def _serve(conn, parent: int) -> None:
    """A local worker's main loop: run each shard descriptor it is sent until told to stop (None)."""
    logging.basicConfig(level=logging.WARNING)
    threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()
    report = BatchedReport(lambda ok, failed, rows: conn.send(("progress", -1, ok, failed, rows)))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(("start", task.index))
        try:
            run_shard(task, report=report)
        except StageAbort as exc:
            report.flush()
            conn.send(("abort", task.index, str(exc)))
            return
        except BaseException as exc:  # noqa: BLE001 - hand it to the driver, which ends the run with it
            log.debug("shard %d raised", task.index, exc_info=True)
            report.flush()
            conn.send(("error", task.index, picklable(exc, RunnerError)))
            return
        report.flush()
        conn.send(("done", task.index))


# ---------------------------------------------------------------- Ray


class ShardActor:
    """A Ray actor that serves shard descriptors; its stage is set up on its first shard and kept."""

    def run(self, task: ShardTask, counter=None) -> dict:
        report = BatchedReport(lambda ok, failed, rows: counter.add.remote(ok, failed, rows)) if counter else None
        stats = run_shard(task, report=report)
        if report is not None:
            report.flush()
        return stats


def _execute_ray(tasks: list[ShardTask], stage_cls: type[Stage], params: dict, workers: int, gpus: str | None,
                 gpus_per_worker: float | None, advance) -> None:
    """Run shards on a pool of long-lived Ray actors (on `RAY_ADDRESS`, or a local cluster started here)."""
    try:
        import ray
    except ImportError:
        raise RunnerError("--executor ray needs Ray: pip install 'vidrd[ray]'") from None
    if workers < 0:
        raise RunnerError(f"--workers must be ≥ 0 (0: auto), got {workers}")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    cluster = ray.cluster_resources()
    res = worker_resources(stage_cls, gpus_per_worker)
    spec = (gpus or "all").strip()
    if spec not in ("all", "none") and not spec.isdigit():
        raise RunnerError(f"--gpus with --executor ray takes all, none or a count; got {spec!r}")
    cluster_gpus = cluster.get("GPU", 0.0)
    usable = 0.0 if spec == "none" else cluster_gpus if spec == "all" else float(spec)
    if usable > cluster_gpus:
        raise RunnerError(f"--gpus {spec}: the Ray cluster has {cluster_gpus:g} GPU(s)")
    # a model stage takes GPUs when the cluster (not this driver) has any: the device is resolved in the actor
    gpus_each = res.gpus if on_gpu(stage_cls, params) and usable > 0 else 0.0
    if gpus_each:
        n = math.floor(usable / gpus_each + 1e-9)
        if n < 1:
            raise RunnerError(f"a worker needs {gpus_each:g} GPU(s); the Ray cluster offers {usable:g}")
    elif stage_cls.uses_device(params):
        n = 1
    else:
        n = max(1, math.floor(cluster.get("CPU", 1.0) / res.cpus))
    n = min(n, workers or n, len(tasks))
    if not tasks:
        return
    actor_cls = ray.remote(num_cpus=res.cpus, num_gpus=gpus_each, max_restarts=0, max_task_retries=0)(ShardActor)
    actors = [actor_cls.remote() for _ in range(n)]
    counter = ray.remote(num_cpus=0)(RayCounter).remote()  # the actors' row counts, taken while shards run
    in_hand: dict[int, list[tuple[ShardTask, object]]] = {i: [] for i in range(n)}  # actor → (task, ref), FIFO
    sched = _Scheduler(tasks)
    try:
        while True:
            for i, actor in enumerate(actors):
                while (task := sched.next_for([t for t, _ in in_hand[i]])) is not None:
                    in_hand[i].append((task, actor.run.remote(task, counter)))
            refs = {ref: i for i, pairs in in_hand.items() for _, ref in pairs}
            if not refs:
                break
            done, _ = ray.wait(list(refs), num_returns=1, timeout=REPORT_EVERY_S)
            advance(*ray.get(counter.take.remote()))
            if not done:
                continue
            [ready] = done
            i = refs[ready]
            try:
                ray.get(ready)  # raises what the shard raised
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else RunnerError(str(exc).splitlines()[0])
                raise StageAbort(str(cause)) if isinstance(cause, StageAbort) else cause from None
            except ray.exceptions.RayActorError:
                # an actor runs its calls in order: the oldest in hand was running, the rest were only queued
                log.warning("Ray actor %d died", i)
                sched.worker_died(in_hand[i][0][0], [t for t, _ in in_hand[i][1:]])
                ray.kill(actors[i])
                actors[i] = actor_cls.remote()
                in_hand[i] = []
                continue
            in_hand[i] = [(t, r) for t, r in in_hand[i] if r != ready]
            sched.finished()
        advance(*ray.get(counter.take.remote()))  # the last shard's last batch
    finally:
        for actor in [*actors, counter]:
            ray.kill(actor)
        # a killed actor's calls fail once Ray knows it is gone: wait for that (its process may still outlive
        # this by a moment and leave a temp file, which the next run deletes)
        pending = [ref for pairs in in_hand.values() for _, ref in pairs]
        if pending:
            ray.wait(pending, num_returns=len(pending), timeout=30)
    if sched.given_up:
        raise _given_up(sched.given_up, MAX_SHARD_ATTEMPTS)
