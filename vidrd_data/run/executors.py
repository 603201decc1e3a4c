"""Where shards run: in this process, a local process pool, or Ray."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from vidrd_data.run import shard
from vidrd_data.run.shard import ShardTask, run_shard
from vidrd_data.run.stage import RunnerError

log = logging.getLogger(__name__)

def _init_worker(progress_queue) -> None:
    shard.PROGRESS_QUEUE = progress_queue
    logging.basicConfig(level=logging.WARNING)
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()


def exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (killed with SIGKILL, say): no orphans left behind."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


EXECUTORS = ("local", "ray")
MAX_POOL_RESTARTS = 3


def execute(
    tasks: list[ShardTask], workers: int, progress: bool, total: int, label: str, executor: str = "local",
    gpus: float | None = 0.0,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} samples/s"),
        TextColumn("[green]ok {task.fields[ok]}[/] [red]failed {task.fields[failed]}[/]"),
        TimeElapsedColumn(),
    ]
    counts = {"ok": 0, "failed": 0}
    t0 = time.perf_counter()
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task_id = bar.add_task(label, total=total, rate="-", ok=0, failed=0)

        def advance(ok: int, failed: int, flush: bool = False) -> None:
            counts["ok"] += ok
            counts["failed"] += failed
            rate = (counts["ok"] + counts["failed"]) / max(time.perf_counter() - t0, 1e-9)
            bar.update(task_id, advance=ok + failed, rate=f"{rate:.1f}", **counts)

        if executor == "ray":
            _execute_ray(tasks, advance, gpus)
        elif workers == 1 or len(tasks) <= 1:
            for task in tasks:
                run_shard(task, report=advance)
        else:
            _execute_pool(tasks, workers, advance)


def _execute_pool(tasks: list[ShardTask], workers: int, advance) -> None:
    """Run shards in a spawn process pool; a worker that dies (OOM killer, segfault, SIGKILL) costs a
    retry of the shards in flight, never data: their parts were not complete, so they are simply redone."""
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # fork after torch/decord threads start is unsafe
    progress_queue = ctx.Queue()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or not progress_queue.empty():
            try:
                advance(*progress_queue.get(timeout=0.1))
            except queue.Empty:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    remaining = list(tasks)
    try:
        for attempt in range(MAX_POOL_RESTARTS + 1):
            broken = []
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue,)) as pool:
                futures = {pool.submit(run_shard, t): t for t in remaining}
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        try:
                            f.result()
                        except BrokenProcessPool:
                            broken.append(futures[f])
            if not broken:
                return
            log.warning("a worker process died; retrying %d shard(s) (restart %d of %d)", len(broken), attempt + 1,
                        MAX_POOL_RESTARTS)
            remaining = sorted(broken, key=lambda t: t.index)
        raise RunnerError(f"worker processes kept dying on shard(s) {[t.index for t in remaining]}; giving up")
    finally:
        stop.set()
        reader.join()


def _execute_ray(tasks: list[ShardTask], advance, gpus: float | None) -> None:
    """Run each shard as a Ray task (retried by Ray if its worker dies) on `RAY_ADDRESS` or a local cluster."""
    try:
        import ray
    except ImportError:
        raise RunnerError("--executor ray needs Ray: pip install 'vidrd[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    if gpus is None:  # device "auto": a GPU per task where the cluster has any (Ray hides GPUs from 0-GPU tasks)
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=MAX_POOL_RESTARTS)(run_shard)
    refs = [remote.remote(t) for t in tasks]
    while refs:
        ready, refs = ray.wait(refs, num_returns=1)
        stats = ray.get(ready[0])
        advance(stats["ok"], stats["failed"])
