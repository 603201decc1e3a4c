"""Run a stage over input rows: shards → worker processes → atomically written parts; resume and retry.

Input rows are split into contiguous shards of `shard_size` rows; shard i becomes `part-0000i.parquet` and
then, last, `part-0000i.stats.json`. A re-run skips every part whose stats file exists and redoes the
rest, so a run killed at any moment (SIGKILL included) and re-run ends with exactly the rows and ids of an
uninterrupted one. `retry_failed` re-runs only the input rows that produced failed samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import queue
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from vidrd_data import manifest as mf

log = logging.getLogger(__name__)


class RunnerError(Exception):
    """The run cannot start (conflicting output directory, bad options)."""


class Stage:
    """One processing step: takes an input row (a dict), returns its output sample rows.

    Subclasses set `name`, `kind` and `fields` (their own extra columns) and implement `process`.
    Raising from `process` turns the input row into one `failed` row carrying the exception's message;
    a stage may also return rows with `status="failed"` itself. `setup` runs once per worker process
    (load models there). `root` is the absolute directory relative source paths are stored against.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "image"
    fields: ClassVar[list[pa.Field]] = []

    def __init__(self, **params: Any):
        self.params = params
        self.root: str | None = None

    def setup(self) -> None:
        pass

    @classmethod
    def gpus_per_task(cls, params: dict) -> float | None:
        """Return the GPUs one shard task asks a cluster scheduler (Ray) for: 1 for a model stage on CUDA,
        None for `device="auto"` (one if the cluster has GPUs), else 0."""
        device = str(params.get("device") or "")
        return 1.0 if device.startswith("cuda") else None if device == "auto" else 0.0

    def process(self, row: dict) -> list[dict]:
        raise NotImplementedError

    def process_many(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        """Yield each input row with its output rows, or the exception it raised, in input order.

        Stages that batch or pipeline work across rows (decode ahead while a captioning model runs)
        override this; the default calls `process` row by row.
        """
        for row in rows:
            try:
                yield row, self.process(dict(row))
            except Exception as exc:  # noqa: BLE001 - any failure of one sample must not end the shard
                yield row, exc

    def resolve(self, path: str | None) -> str | None:
        return mf.resolve(path, self.root)

    def input_sample_id(self, row: dict) -> str:
        """Return the id of the failed row that stands for an input; a stage whose one-sample-per-input ids
        carry more than the source (e.g. the caption) overrides it, so a retried row keeps its id."""
        source = row.get("source_path") or f"input:{row['input_row']}"
        return mf.make_sample_id(self.kind, row.get("source_dataset"), source)


def stage_class(name: str) -> type[Stage]:
    """Return the class of a built-in stage (`images`, …) or of a plug-in named `package.module:Class`."""
    import importlib

    from vidrd_data.stages import STAGES

    target = STAGES.get(name) or (name if ":" in name else None)
    if target is None:
        raise RunnerError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))} (or module:Class)")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RunnerError(f"cannot load stage {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise RunnerError(f"{name!r} is not a vidrd Stage")
    return cls


@dataclass
class StageJob:
    """A stage with its options resolved and its input rows read: what `run_stage` needs besides where to write.

    Each stage module has a `prepare(input, **options) -> StageJob`, used by the CLI and by recipes alike.
    """

    stage: str
    params: dict
    inputs: pa.Table
    root: Path | None
    input_desc: list[str]


# ---------------------------------------------------------------- per-row processing


def failed_row(stage: Stage, row: dict, error: str) -> dict:
    return {
        "sample_id": stage.input_sample_id(row),
        "kind": stage.kind,
        "source_path": row.get("source_path"),
        "source_dataset": row.get("source_dataset"),
        "caption": row.get("caption"),
        "caption_source": row.get("caption_source"),
        "label": row.get("label"),
        "status": "failed",
        "error": error,
    }


def finish_rows(stage: Stage, row: dict, result: list[dict] | Exception, schema: pa.Schema) -> list[dict]:
    """Return the complete output rows of one input row: an exception or no result becomes a failed row."""
    if isinstance(result, Exception):
        log.debug("row %s failed", row.get("input_row"), exc_info=result)
        outputs = [failed_row(stage, row, f"{type(result).__name__}: {result}".strip())]
    elif not result:
        outputs = [failed_row(stage, row, "stage produced no samples")]
    else:
        outputs = result
    carried = [n for n in schema.names if n not in mf.BASE_COLUMNS and n in row]
    for out in outputs:
        out["input_row"] = row["input_row"]
        out.setdefault("kind", stage.kind)
        out.setdefault("source_dataset", row.get("source_dataset"))
        out.setdefault("status", "ok")
        out.setdefault("error", None)
        for name in carried:
            out.setdefault(name, row[name])
    return outputs


def rows_to_table_safe(stage: Stage, rows: list[dict], inputs_by_row: dict, schema: pa.Schema) -> pa.Table:
    """Convert output rows to the declared schema; a row that does not fit becomes a failed row."""
    try:
        return mf.rows_to_table(rows, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        fixed = []
        for row in rows:
            try:
                mf.rows_to_table([row], schema)
                fixed.append(row)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                bad = failed_row(stage, inputs_by_row[row["input_row"]], f"SchemaError: {exc}")
                bad["input_row"] = row["input_row"]
                fixed.append(bad)
        return mf.rows_to_table(fixed, schema)


# ---------------------------------------------------------------- workers


@dataclass
class ShardTask:
    index: int
    rows: list[dict]
    out_dir: str
    stage_name: str
    params: dict
    root: str | None
    schema: pa.Schema
    retry: bool = False


_STAGE_CACHE: dict[str, Stage] = {}
_PROGRESS_QUEUE: Any = None


def _init_worker(progress_queue) -> None:
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = progress_queue
    logging.basicConfig(level=logging.WARNING)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (killed with SIGKILL, say): no orphans left behind."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _get_stage(name: str, params: dict, root: str | None) -> Stage:
    key = json.dumps([name, params, root], sort_keys=True, default=str)
    if key not in _STAGE_CACHE:
        stage = stage_class(name)(**params)
        stage.root = root
        stage.setup()
        _STAGE_CACHE[key] = stage
    return _STAGE_CACHE[key]


def run_shard(task: ShardTask, report=None) -> dict:
    """Process one shard and write its part atomically (parquet, then stats); return the stats."""
    report = report or _queue_reporter()
    start = time.perf_counter()
    stage = _get_stage(task.stage_name, task.params, task.root)
    out_dir = Path(task.out_dir)
    inputs_by_row = {r["input_row"]: r for r in task.rows}
    kept: list[dict] = []
    todo = task.rows
    if task.retry:
        existing = pq.read_table(out_dir / mf.part_name(task.index)).to_pylist()
        failed_inputs = {r["input_row"] for r in existing if r["status"] == "failed"}
        kept = [r for r in existing if r["input_row"] not in failed_inputs]
        todo = [r for r in task.rows if r["input_row"] in failed_inputs]
    outputs: list[dict] = []
    # a source reader that could not read a row (bad bytes in a caption file, say) says why in `_input_error`
    unreadable = [r for r in todo if r.get(mf.INPUT_ERROR)]
    results = [(r, ValueError(r[mf.INPUT_ERROR])) for r in unreadable]
    results += stage.process_many([dict(r) for r in todo if not r.get(mf.INPUT_ERROR)])
    for row, result in results:
        produced = finish_rows(stage, row, result, task.schema)
        outputs.extend(produced)
        report(sum(r["status"] == "ok" for r in produced), sum(r["status"] != "ok" for r in produced))
    rows = sorted(kept + outputs, key=lambda r: r["input_row"])  # stable: keeps each input's sample order
    table = rows_to_table_safe(stage, rows, inputs_by_row, task.schema)
    stats = mf.part_stats(table, input_rows=len(task.rows), wall_time_s=time.perf_counter() - start)
    stats["part"] = task.index
    if task.retry:
        stats["retried_input_rows"] = len(todo)
        (out_dir / mf.stats_name(task.index)).unlink(missing_ok=True)  # part is incomplete while rewritten
    mf.write_parquet_atomic(out_dir / mf.part_name(task.index), table)
    mf.write_json_atomic(out_dir / mf.stats_name(task.index), stats)
    report(0, 0, flush=True)
    return stats


def _queue_reporter():
    """Return a callback that batches per-sample progress into the parent's queue (at most 4 messages/s)."""
    pending = {"ok": 0, "failed": 0, "t": time.monotonic()}

    def report(ok: int, failed: int, flush: bool = False) -> None:
        pending["ok"] += ok
        pending["failed"] += failed
        if _PROGRESS_QUEUE is not None and (flush or time.monotonic() - pending["t"] > 0.25):
            if pending["ok"] or pending["failed"]:
                _PROGRESS_QUEUE.put((pending["ok"], pending["failed"]))
            pending.update(ok=0, failed=0, t=time.monotonic())

    return report


# ---------------------------------------------------------------- the run


@dataclass
class RunSummary:
    out_dir: Path
    parts_total: int
    parts_skipped: int
    input_rows: int
    output_rows: int
    ok: int
    failed: int
    wall_time_s: float

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def _fingerprint(inputs: pa.Table, stage_name: str, params: dict, shard_size: int) -> str:
    h = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, inputs.schema) as writer:
        writer.write_table(inputs)
    h.update(sink.getvalue().to_pybytes())
    h.update(json.dumps([stage_name, params, shard_size], sort_keys=True, default=str).encode())
    return h.hexdigest()


def _our_file(name: str) -> bool:
    return (
        name in (mf.MANIFEST_FILE, mf.INPUTS_FILE)
        or bool(mf.PART_RE.match(name))
        or (name.startswith("part-") and name.endswith(".stats.json"))
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def clear_output(out: Path) -> None:
    """Remove what a run wrote into `out`, refusing to touch a directory that holds anything else."""
    if not out.exists():
        return
    foreign = [p.name for p in out.iterdir() if not _our_file(p.name)]
    if foreign:
        raise RunnerError(f"{out} holds files vidrd did not write (e.g. {foreign[0]}); not deleting it")
    for p in out.iterdir():
        p.unlink()


def _slice_filter(shard_index: int | None, num_shards: int | None):
    if shard_index is None and num_shards is None:
        return lambda i: True
    if shard_index is None or num_shards is None or num_shards < 1 or not 0 <= shard_index < num_shards:
        raise RunnerError(f"--shard-index must be in [0, --num-shards), got {shard_index} of {num_shards}")
    return lambda i: i % num_shards == shard_index


def _remove_incomplete(out: Path, mine=lambda i: True) -> None:
    """Delete torn leftovers of an earlier run: parts without stats and temp files (only this slice's)."""
    for p in out.iterdir():
        m = re.match(r"^\.?part-(\d{5})\.", p.name)
        if not m or not mine(int(m.group(1))):
            continue
        torn = p.name.startswith(".") and p.name.endswith(".tmp")
        if torn or (mf.PART_RE.match(p.name) and not (out / mf.stats_name(int(m.group(1)))).exists()):
            p.unlink(missing_ok=True)


def run_stage(
    stage_name: str,
    params: dict,
    inputs: pa.Table,
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None,
    input_desc: list[str],
    shard_size: int = 1000,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    executor: str = "local",
    shard_index: int | None = None,
    num_shards: int | None = None,
) -> RunSummary:
    """Run a stage over `inputs` (one row per input sample) into the manifest directory `out_dir`.

    `executor` is `local` (a process pool of `workers`) or `ray` (one Ray task per shard, on the cluster at
    `RAY_ADDRESS` or on a local one). With `shard_index`/`num_shards`, only parts `i` with
    `i % num_shards == shard_index` are run: one slice per job of a Slurm array (or any scheduler),
    all writing into the same `out_dir`.
    """
    if shard_size < 1:
        raise RunnerError(f"--shard-size must be ≥ 1, got {shard_size}")
    if workers < 1:
        raise RunnerError(f"--workers must be ≥ 1, got {workers}")
    if executor not in EXECUTORS:
        raise RunnerError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    mine = _slice_filter(shard_index, num_shards)
    if overwrite and shard_index is not None:
        raise RunnerError("--overwrite cannot be combined with --shard-index (slices share one output)")
    cls = stage_class(stage_name)
    out = Path(out_dir)
    inputs = inputs.append_column("input_row", pa.array(range(inputs.num_rows), pa.int64()))
    schema = mf.output_schema(cls.fields, inputs.schema)
    fingerprint = _fingerprint(inputs, stage_name, params, shard_size)
    if overwrite:
        clear_output(out)
    if mf.is_manifest(out):
        meta = mf.Manifest.open(out).meta
        if meta.get("fingerprint") != fingerprint:
            raise RunnerError(
                f"{out} already holds a manifest made from other inputs or options; "
                "pass --overwrite to replace it or choose another --out"
            )
    else:
        if out.exists() and any(not _our_file(p.name) for p in out.iterdir()):
            raise RunnerError(f"{out} exists and is not a vidrd manifest; choose an empty or new --out")
        out.mkdir(parents=True, exist_ok=True)
        mf.write_parquet_atomic(out / mf.INPUTS_FILE, inputs)
        meta = mf.new_meta(
            kind=cls.kind,
            stage=stage_name,
            params=params,
            inputs=input_desc,
            root=root,
            manifest_dir=out,
            schema=schema,
            extra={
                "fingerprint": fingerprint,
                "shard_size": shard_size,
                "num_inputs": inputs.num_rows,
                "num_parts": -(-inputs.num_rows // shard_size),
            },
        )
        mf.write_json_atomic(out / mf.MANIFEST_FILE, meta)
    _remove_incomplete(out, mine)
    root_abs = os.path.abspath(os.fspath(root)) if root is not None else None
    done = set(mf.Manifest.open(out, root=root_abs).complete_parts())
    n_parts = -(-inputs.num_rows // shard_size)
    tasks = [
        ShardTask(i, inputs.slice(i * shard_size, shard_size).to_pylist(), str(out), stage_name, params, root_abs, schema)
        for i in range(n_parts)
        if i not in done and mine(i)
    ]
    start = time.perf_counter()
    _execute(tasks, workers, progress, total=sum(len(t.rows) for t in tasks), label=stage_name, executor=executor,
             gpus=cls.gpus_per_task(params))
    return summarize(out, n_parts, len(done), time.perf_counter() - start)


def retry_failed(out_dir: str | os.PathLike, *, workers: int = 1, progress: bool = True, root=None) -> RunSummary:
    """Re-run the input rows that produced failed samples, rewriting only the parts that hold them."""
    m = mf.Manifest.open(out_dir, root=root)
    inputs = m.inputs()
    if inputs is None:
        raise RunnerError(f"{out_dir} has no {mf.INPUTS_FILE}: it was not written by a vidrd stage")
    shard_size = int(m.meta["shard_size"])
    if len(m.parts) != m.meta.get("num_parts"):
        raise RunnerError(f"{out_dir} is incomplete ({len(m.parts)}/{m.meta.get('num_parts')} parts); re-run the stage first")
    schema = pq.read_schema(m.part_path(m.parts[0])) if m.parts else None
    tasks = []
    for i, stats in zip(m.parts, m.stats()):
        if stats.get("failed", 0):
            rows = inputs.slice(i * shard_size, shard_size).to_pylist()
            tasks.append(ShardTask(i, rows, str(m.path), m.meta["stage"], m.meta["params"], m.root, schema, retry=True))
    start = time.perf_counter()
    total = sum(s.get("failed", 0) for s in m.stats())
    _execute(tasks, workers, progress, total=total, label=f"retry {m.meta['stage']}")
    return summarize(m.path, len(m.parts), len(m.parts) - len(tasks), time.perf_counter() - start)


def summarize(out: Path, parts_total: int, parts_skipped: int, wall: float) -> RunSummary:
    stats = mf.Manifest.open(out).stats()
    return RunSummary(
        out_dir=out,
        parts_total=parts_total,
        parts_skipped=parts_skipped,
        input_rows=sum(s["input_rows"] for s in stats),
        output_rows=sum(s["output_rows"] for s in stats),
        ok=sum(s["ok"] for s in stats),
        failed=sum(s["failed"] for s in stats),
        wall_time_s=round(wall, 3),
    )


EXECUTORS = ("local", "ray")
MAX_POOL_RESTARTS = 3


def _execute(
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
