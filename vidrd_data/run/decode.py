"""The one decode-ahead pipeline: every stage's decoding (images opened, videos probed, frames read and
preprocessed) runs in supervised worker processes, a bounded number of items ahead of the stage's own work.

How it answers the engine's questions (../shared/ENGINE.md):

1. **Decode crash: a supervised pool of spawned processes, one item per worker at a time, and a timeout.** A child
   per file would cost a process start (a second or more with PyAV/torch imported) per item; a pool of long-lived
   workers costs it once. Since each worker holds one item at a time, a worker's death names its item: the
   supervisor sees the process's sentinel fire (segfault, abort, `os._exit`, the OOM killer), fails that item with
   `DecoderCrashed` ("killed by SIGSEGV", "exited with status 1", plus the last lines the worker wrote to stderr:
   each worker's stderr goes to a file, faulthandler on, so the tail costs one read after a crash), starts a
   replacement and goes on; the other workers are untouched. An item still running `timeout_s` (a stage's
   `decode_timeout_s`, 300 s unless it says otherwise) after it was handed out (a stream: after its last chunk, not counting time it waits for the consumer) is a hang: its worker
   is killed (SIGKILL) and replaced, the item fails with `DecodeTimeout`. The row then fails with that reason.
   No retry loop: the supervisor never resubmits a crashed item, and the file is appended (fsync) to
   `_decode_failures.jsonl` in the run's output directory, keyed by path + size + mtime, so a resume, or a
   `vidrd-data retry`, fails it at once with the recorded reason instead of decoding it again. A file replaced
   or repaired since has another size or mtime and is decoded again; delete the file to try every one again.
2. **In-flight bound: items, each item bounded in bytes.** The consumer (the stage) keeps a fixed number of items
   submitted (`ahead`, a few per worker), and each item's decoded size is bounded by construction: an image's
   metadata, a caption group of at most `batch_size` preprocessed frames (3×224×224 floats each), a segment chunk
   of at most 64 frames at the embedder's size. A stream (a long video's chunks) holds at most `window`
   unacknowledged chunks per worker: the worker blocks until the consumer takes one. So decoded bytes in flight ≤
   workers × window × chunk bytes, without measuring frames; nothing spills, producers block.
5. **Failure ladder.** Item: a decoder exception, crash or hang fails its row (the reason in `error`). Batch: a
   model batch that runs out of CUDA memory is retried at half size down to 1, and only the items that still do
   not fit fail (`vidrd_data.models.batches`). Worker: a dead decode worker is replaced at once, without limit
   (each replacement is caused by a different item, which is remembered, so this cannot loop). Run: any other
   CUDA/accelerator error is taken as a lost device: `StageAbort`, the shard in hand writes nothing; there is no
   error-rate threshold — a run full of bad files ends with those rows failed.
7. **`batch_size` counts frames**: the caption stage fills each model call with `batch_size` frames, across clips
   and videos (a clip's frames may fall in two calls: each frame is captioned on its own, and the clip's caption
   is chosen once all have come back), and decodes a long video's clips in groups of at most `batch_size`
   frames; the segment stage embeds `batch_size` sampled frames per call. Every frame reaches the model at the
   model's input size (the image processor resizes it), so nothing is padded or bucketed by clip length; prompts
   of unequal length are padded on the left by the processor, which does not change a caption
   (tests/test_caption.py).

`--decode-in threads` (caption only) runs the same tasks on threads: no crash isolation, no timeout, for
machines where starting processes is not allowed or to measure the difference.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import connection as mp_connection
from multiprocessing import util as mp_util
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from vidrd_data.run.processes import cores, exit_with_parent, picklable
from vidrd_io.video import VideoError

log = logging.getLogger(__name__)

FAILURES_FILE = "_decode_failures.jsonl"
DEFAULT_TIMEOUT_S = 300.0  # an item (a stream: a chunk) slower than this is taken as hung
# idle workers end after this long and start again with the next item: a process running several stages (a build,
# the tests) would otherwise keep every finished stage's decoders, torch imported and all, until it exits
IDLE_S = 30.0
STDERR_TAIL_BYTES = 65536  # faulthandler lists every extension module after the stack


class DecoderCrashed(VideoError):
    """The process decoding this file died (or died on it in an earlier run)."""


class DecodeTimeout(VideoError):
    """Decoding this file took longer than the pool's timeout: the decoder was taken as hung and killed."""


# ---------------------------------------------------------------- files that killed their decoder


class FailureLog:
    """Files that crashed or hung their decoder, kept in `<work_dir>/_decode_failures.jsonl` across resumes."""

    def __init__(self, directory: str | os.PathLike | None):
        self.path = Path(directory) / FAILURES_FILE if directory else None
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self._reasons[self._key(entry["path"], entry["size"], entry["mtime_ns"])] = entry["reason"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill: the entries before it still count

    @staticmethod
    def _key(path: str, size: int, mtime_ns: int) -> str:
        return f"{path}\x1f{size}\x1f{mtime_ns}"

    @staticmethod
    def _identity(path: str) -> tuple[str, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return os.path.abspath(path), st.st_size, st.st_mtime_ns

    def reason(self, path: str | None) -> str | None:
        """Return why `path` (as it is now: same size and mtime) killed its decoder before, or None."""
        identity = self._identity(path) if path and self._reasons else None
        return None if identity is None else self._reasons.get(self._key(*identity))

    def record(self, path: str | None, reason: str) -> None:
        """Remember that `path` killed its decoder: appended and fsynced, so a kill right after keeps it."""
        identity = self._identity(path) if path else None
        if identity is None:
            return
        with self._lock:
            self._reasons[self._key(*identity)] = reason
            if self.path is None:
                return
            line = json.dumps({"path": identity[0], "size": identity[1], "mtime_ns": identity[2], "reason": reason,
                               "time": time.time()}) + "\n"
            # one write of one line with O_APPEND: whole lines even when several stage workers append at once
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)


# ---------------------------------------------------------------- tasks


class Task:
    """One item handed to the pool: `result()` gives its value or raises its error; a stream's `items()` yields
    its values as they come."""

    def __init__(self, pool: "DecodePool | None", fn: Callable, args: tuple, path: str | None, stream: bool):
        self.pool, self.fn, self.args, self.path, self.stream = pool, fn, args, path, stream
        self.id = next(_task_ids)
        self.items_in: deque = deque()
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.worker: _Worker | None = None
        self._cond = threading.Condition()

    def _finish(self, value: Any = None, error: BaseException | None = None) -> None:
        with self._cond:
            if not self.done:
                self.value, self.error, self.done = value, error, True
            self._cond.notify_all()

    def _push(self, item: Any) -> None:
        with self._cond:
            self.items_in.append(item)
            self._cond.notify_all()

    def result(self) -> Any:
        """Return the task's value, or raise the exception it ended with."""
        with self._cond:
            self._cond.wait_for(lambda: self.done)
        if self.error is not None:
            raise self.error
        return self.value

    def items(self) -> Iterator[Any]:
        """Yield a stream task's values in order, then raise the exception it ended with, if any."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self.items_in or self.done)
                if not self.items_in:
                    break
                item = self.items_in.popleft()
            if self.pool is not None:
                self.pool._ack(self)
            yield item
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Drop the task: not started, it never runs; running, its result is thrown away (a stream stops)."""
        self.cancelled = True
        if self.pool is not None:
            self.pool._cancel(self)


_task_ids = itertools.count()


# ---------------------------------------------------------------- the worker process


def _worker_main(conn, stderr_path: str, parent: int, initializer: Callable | None, max_image_pixels) -> None:
    """A decode worker: run one task at a time from `conn` and send back its value (a stream: its values)."""
    if max_image_pixels != "unset":  # the parent's decompression-bomb guard, not PIL's default
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = max_image_pixels
    fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 2)  # the supervisor reads the tail of this file when the worker dies
    os.close(fd)
    faulthandler.enable()  # a segfault or abort leaves the Python stack in that tail
    threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()
    if initializer is not None:
        initializer()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if isinstance(message, str):  # a late ack or cancel of a stream that already ended
            continue
        task_id, fn, args, window = message
        try:
            if window:
                unacked = 0
                for item in fn(*args):
                    conn.send(("item", task_id, item))
                    unacked += 1
                    while unacked >= window or conn.poll():
                        reply = conn.recv()
                        if reply == "cancel":
                            raise _Cancelled
                        unacked -= reply == "ack"
                conn.send(("done", task_id, None))
            else:
                conn.send(("done", task_id, fn(*args)))
        except _Cancelled:
            conn.send(("done", task_id, None))
        except Exception as exc:  # noqa: BLE001 - the item's own failure: handed to the stage as its row's reason
            conn.send(("error", task_id, picklable(exc)))


class _Cancelled(Exception):
    pass


def init_one_torch_thread() -> None:
    """A worker initializer: one torch thread (image processors make tensors; the workers share the cores)."""
    import torch

    torch.set_num_threads(1)


# ---------------------------------------------------------------- the supervised pool


class _Worker:
    def __init__(self, pool: "DecodePool", number: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.stderr_path = os.path.join(pool._tmp.name, f"worker-{number}.stderr")
        pil = sys.modules.get("PIL.Image")
        max_pixels = pil.MAX_IMAGE_PIXELS if pil is not None else "unset"
        self.process = ctx.Process(target=_worker_main, args=(child, self.stderr_path, os.getpid(), pool.initializer,
                                                             max_pixels),
                                   daemon=True, name=f"{pool.name}-decode-{number}")
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.progress_at = 0.0
        self.unacked = 0
        self.stderr_offset = 0
        self.send_lock = threading.Lock()

    def send(self, message) -> bool:
        with self.send_lock:
            try:
                self.conn.send(message)
                return True
            except (OSError, ValueError):
                return False


class DecodePool:
    """Supervised decode workers (spawned processes): tasks run one per worker; a worker that dies or hangs fails
    its task alone and is replaced. `failures` (a `FailureLog`) remembers the files that killed a worker."""

    def __init__(self, workers: int, *, name: str = "vidrd", timeout_s: float = DEFAULT_TIMEOUT_S,
                 window: int = 2, initializer: Callable | None = None):
        if workers < 1:
            raise ValueError(f"decode workers must be ≥ 1, got {workers}")
        self.workers_count, self.name, self.timeout_s, self.window = workers, name, timeout_s, window
        self.initializer = initializer
        self.failures = FailureLog(None)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{name}-decode-")
        self._lock = threading.Lock()
        self._queue: deque[Task] = deque()
        self._numbers = itertools.count()
        self._workers = [_Worker(self, next(self._numbers)) for _ in range(workers)]
        self._idle_since = time.monotonic()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._thread = threading.Thread(target=self._supervise, daemon=True, name=f"{name}-decode-supervisor")
        self._thread.start()
        # closed at exit before multiprocessing ends its children (in a stage worker process too, where atexit
        # handlers do not run), so the supervisor never sees those ends as crashes
        self._finalizer = mp_util.Finalize(self, self.close, exitpriority=10)

    # -- the consumer's side

    def submit(self, fn: Callable, *args: Any, path: str | None = None, stream: bool = False) -> Task:
        """Queue `fn(*args)` (a stream: `fn` yields values); `path` names the file it decodes, for the failure log."""
        task = Task(self, fn, args, path, stream)
        remembered = self.failures.reason(path)
        if remembered is not None:
            task._finish(error=DecoderCrashed(f"{remembered} (remembered in {FAILURES_FILE}: not decoded again)"))
            return task
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode pool is closed")
            self._queue.append(task)
        self._wake()
        return task

    def close(self) -> None:
        """Stop the workers (they finish nothing more) and the supervisor."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer.cancel()
        self._wake()
        self._thread.join()
        for w in self._workers:
            w.send(None)
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._tmp.cleanup()

    def _ack(self, task: Task) -> None:
        worker = task.worker
        if worker is not None and worker.task is task and worker.send("ack"):
            with self._lock:
                worker.unacked -= 1
                worker.progress_at = time.monotonic()

    def _cancel(self, task: Task) -> None:
        with self._lock:
            if task in self._queue:
                self._queue.remove(task)
                task._finish(error=_Cancelled())
                return
            worker = task.worker
        if worker is not None and worker.task is task and task.stream:
            worker.send("cancel")

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- the supervisor thread

    def _supervise(self) -> None:
        try:
            self._supervise_loop()
        except BaseException as exc:  # noqa: BLE001 - a dead supervisor would leave every consumer waiting forever
            log.error("decode pool %s failed: %s", self._thread.name, exc)
            error = DecoderCrashed(f"the decode pool failed ({type(exc).__name__}: {exc})")
            with self._lock:
                self._closed = True
                for task in self._queue:
                    task._finish(error=error)
                for w in self._workers:
                    if w.task is not None:
                        w.task._finish(error=error)
                    if w.process.is_alive():
                        w.process.kill()

    def _supervise_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    for task in self._queue:
                        task._finish(error=_Cancelled())
                    for w in self._workers:
                        if w.task is not None:
                            w.task._finish(error=_Cancelled())
                    return
                self._dispatch()
                busy = [w for w in self._workers if w.task is not None]
                if busy or self._queue:
                    self._idle_since = time.monotonic()
                elif self._workers and time.monotonic() - self._idle_since > IDLE_S:
                    self._stop_idle_workers()
            waits = [self._wake_r] + [w.conn for w in busy] + [w.process.sentinel for w in self._workers]
            ready = mp_connection.wait(waits, timeout=self._next_deadline(busy))
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for w in list(self._workers):
                if w.conn in ready or w.process.sentinel in ready:
                    # messages sent before a death still count; end of file or the sentinel: the worker is gone
                    if not self._receive_all(w) or w.process.sentinel in ready:
                        self._died(w)
            self._check_timeouts()

    def _stop_idle_workers(self) -> None:
        """End every worker (all idle): `_dispatch` starts new ones for the next items."""
        workers, self._workers = self._workers, []
        for w in workers:
            w.send(None)
        for w in workers:
            w.process.join(2.0)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()

    def _dispatch(self) -> None:
        while self._queue and len(self._workers) < self.workers_count:
            self._workers.append(_Worker(self, next(self._numbers)))
        for w in self._workers:
            if w.task is None and self._queue:
                task = self._queue.popleft()
                w.task, task.worker = task, w
                w.unacked, w.progress_at = 0, time.monotonic()
                w.stderr_offset = _size(w.stderr_path)
                # a worker that died meanwhile cannot take it: its sentinel fires and `_died` fails the task
                w.send((task.id, task.fn, task.args, self.window if task.stream else 0))

    def _next_deadline(self, busy: list[_Worker]) -> float:
        running = [w.progress_at + self.timeout_s - time.monotonic() for w in busy if w.unacked < self.window]
        return max(0.05, min(running, default=IDLE_S if self._workers else 3600.0))

    def _receive_all(self, w: _Worker) -> bool:
        """Take every message waiting from a worker; return False when its end of the pipe is closed (it died)."""
        while w.conn.poll():
            if not self._receive(w):
                return False
        return True

    def _receive(self, w: _Worker) -> bool:
        try:
            kind, task_id, payload = w.conn.recv()
        except (EOFError, OSError):
            return False
        except Exception as exc:  # noqa: BLE001 - a value that cannot be unpickled here fails its item
            kind, task_id, payload = "error", w.task.id if w.task else -1, RuntimeError(f"undecodable result: {exc}")
        task = w.task
        if task is None or task.id != task_id:
            return True
        w.progress_at = time.monotonic()
        if kind == "item":
            with self._lock:
                w.unacked += 1
            task._push(payload)
            return True
        self._echo_stderr(w)
        with self._lock:
            w.task, task.worker = None, None
        if kind == "done":
            task._finish(value=payload)
        else:
            task._finish(error=payload)
        return True

    def _died(self, w: _Worker) -> None:
        code = w.process.exitcode
        if code is None:
            w.process.join(5.0)  # its pipe closed a moment before the process ended
            code = w.process.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        self._replace(w, how, DecoderCrashed)

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            if w.task is not None and w.unacked < self.window and now - w.progress_at > self.timeout_s:
                w.process.kill()
                w.process.join()
                self._replace(w, f"no result after {self.timeout_s:g} s; killed as hung", DecodeTimeout)

    def _replace(self, w: _Worker, how: str, error: type[VideoError]) -> None:
        task = w.task
        tail = _tail(w.stderr_path, w.stderr_offset)
        w.conn.close()
        with self._lock:
            self._workers.remove(w)  # `_dispatch` starts a replacement when items wait
        if task is None:
            log.warning("a %s decode worker %s while idle", self.name, how)
            return
        if task.cancelled:
            task._finish(error=_Cancelled())
            return
        what = "the decoder hung" if error is DecodeTimeout else "the decoder crashed"
        reason = f"{what} on this file ({how})" + (f"; its stderr ended: {tail}" if tail else "")
        log.warning("%s decode worker %s on %s; replaced it", self.name, how, task.path or "an item")
        self.failures.record(task.path, reason)
        task._finish(error=error(reason))

    def _echo_stderr(self, w: _Worker) -> None:
        """Pass on what a worker wrote to stderr during a task that ended normally (warnings, log lines)."""
        size = _size(w.stderr_path)
        if size > w.stderr_offset:
            with open(w.stderr_path, "rb") as f:
                f.seek(w.stderr_offset)
                sys.stderr.write(f.read(size - w.stderr_offset).decode(errors="replace"))
            w.stderr_offset = size


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _tail(path: str, offset: int) -> str:
    """Return what a dead worker last wrote to stderr since `offset`, on one line: faulthandler's "Fatal Python
    error" with the innermost frame when there is one, else the last lines."""
    size = _size(path)
    if size <= offset:
        return ""
    with open(path, "rb") as f:
        f.seek(max(offset, size - STDERR_TAIL_BYTES))
        text = f.read().decode(errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Extension modules")]
    fatal = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), None)
    if fatal is not None:
        frame = next((line for line in lines[fatal:] if line.startswith("File ")), None)
        lines = [lines[fatal]] + ([frame] if frame else [])
    return " | ".join(lines[-3:])[-400:]


class ThreadDecodePool:
    """The same interface on threads (`--decode-in threads`): no crash isolation and no timeout."""

    def __init__(self, workers: int, *, name: str = "vidrd", **_: Any):
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"{name}-decode")
        self.failures = FailureLog(None)

    def submit(self, fn: Callable, *args: Any, path: str | None = None, stream: bool = False) -> Task:
        if stream:
            raise ValueError("streams need the process pool")
        task = Task(None, fn, args, path, stream)
        remembered = self.failures.reason(path)
        if remembered is not None:
            task._finish(error=DecoderCrashed(f"{remembered} (remembered in {FAILURES_FILE}: not decoded again)"))
            return task

        def run() -> None:
            if task.cancelled:
                task._finish(error=_Cancelled())
                return
            try:
                task._finish(value=fn(*args))
            except Exception as exc:  # noqa: BLE001 - the item's own failure
                task._finish(error=exc)

        self._executor.submit(run)
        return task

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def make_pool(workers: int, decode_in: str = "processes", **kwargs: Any) -> DecodePool | ThreadDecodePool:
    """Return a decode pool of `workers` processes (or threads)."""
    return (ThreadDecodePool if decode_in == "threads" else DecodePool)(workers, **kwargs)


def map_ordered(pool, fn: Callable, items: Iterable, path_of: Callable[[Any], str | None],
                ahead: int) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Yield `(item, value, error)` for each item in input order, at most `ahead` items decoding at a time."""
    pending: deque = deque()
    source = iter(items)
    try:
        while True:
            while len(pending) < ahead and (item := next(source, _END)) is not _END:
                pending.append((item, pool.submit(fn, item, path=path_of(item))))
            if not pending:
                return
            item, task = pending.popleft()
            try:
                yield item, task.result(), None
            except Exception as exc:  # noqa: BLE001 - the item's failure, handed on as data
                yield item, None, exc
    finally:
        for _, task in pending:
            task.cancel()


_END = object()


def default_decode_workers(beside_cuda: bool) -> int:
    """Return the decode workers a model stage runs when not told: beside a CUDA model all cores but one (at most 8),
    else a third of the cores (at least one), since decoding a clip costs about half what a CPU model does."""
    return max(1, min(8, cores() - 1)) if beside_cuda else max(1, cores() // 3)


# ---------------------------------------------------------------- stages that decode one thing per row


class DecodesRows:
    """A stage mix-in: each row's file is decoded in a worker process (`row_decoder()`, picklable, called with the
    row) ahead of `process`, which takes the result with `decoded(row)`. `process` stays the one per-row method, so
    a subclass that overrides it still runs for every row."""

    decode_timeout_s: float = DEFAULT_TIMEOUT_S
    decode_ahead: int = 4
    decode_workers: int = 1  # per stage worker: the runner already runs one stage worker per core

    _pool: Any = None
    _prefetched: tuple[Any, Any, BaseException | None] | None = None

    def row_decoder(self) -> Callable[[dict], Any]:
        raise NotImplementedError

    def decode_path(self, row: dict) -> str | None:
        """Return the file a row's decode reads (the failure log's key)."""
        return self.resolve(row.get("source_path")) if row.get("source_path") else None

    def decode_pool(self):
        """Return this stage's decode pool (kept for the stage's life: a worker takes a second or so to start)."""
        if self._pool is None:
            self._pool = DecodePool(self.decode_workers, name=self.name, timeout_s=self.decode_timeout_s)
        return self._pool

    def decoded(self, row: dict) -> Any:
        """Return the decoded form of `row`'s file: the one decoded ahead, or decoded now, in a worker."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None and prefetched[0] is row:
            _, value, error = prefetched
        else:
            task = self.decode_pool().submit(self.row_decoder(), dict(row), path=self.decode_path(row))
            try:
                value, error = task.result(), None
            except Exception as exc:  # noqa: BLE001
                value, error = None, exc
        if error is not None:
            raise error
        return value

    def process_many(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        """Yield each row with its output rows in input order, its file decoded ahead in a worker process."""
        copies = [dict(r) for r in rows]
        pool = self.decode_pool()
        pool.failures = FailureLog(self.work_dir)  # read afresh: this may be another run, or an overwritten one
        results = map_ordered(pool, self.row_decoder(), copies, self.decode_path, self.decode_ahead)
        for original, (row, value, error) in zip(rows, results):
            self._prefetched = (row, value, error)
            try:
                yield original, self.process(row)
            except Exception as exc:  # noqa: BLE001 - any failure of one sample must not end the shard
                yield original, exc
            finally:
                self._prefetched = None
