"""Run a stage over input rows: shards → long-lived workers → atomically written parts; resume, slices and retry.

The input rows are streamed once into the run's `_inputs.parquet` (one row group per shard), hashed on the way;
shard i is the row range `[i * shard_size, (i + 1) * shard_size)` and becomes `part-0000i.parquet` and then,
last, `part-0000i.stats.json`. The driver holds shard descriptors only, so its memory does not grow with the
input. A re-run skips every part whose stats file exists and redoes the rest, so a run killed at any moment
(SIGKILL included) and re-run ends with exactly the rows and ids of an uninterrupted one. `retry_failed`
re-runs only the input rows that produced failed samples.

How this answers the design questions of ../shared/ENGINE.md (the executor's are in executors.py):

1. Decode crash: not the runner's: decoding runs in isolated decode processes behind the stages' decode-ahead
   pipeline (run/decode.py). What reaches the runner is a worker that died anyway: executors.py retries the
   shard it was running, alone, a bounded number of times, then names it.
4. Resume vs worker pools: a shard is owned by exactly one worker for its whole life (its rows never spread
   over several workers); the worker writes the part atomically, parquet first and the stats json last, and
   the stats file is the completion marker. A worker that dies mid-shard leaves at most a temp file or a
   parquet without stats: both are deleted by the next run (`_remove_incomplete`) and the shard is redone.
6. Slurm: every stage runs a slice `i % num_shards == shard_index` of its shards; unset, the slice comes from
   `$SLURM_ARRAY_TASK_ID` (minus `$SLURM_ARRAY_TASK_MIN`, over its step) of `$SLURM_ARRAY_TASK_COUNT`. The
   first slice to create the manifest pins N in `_manifest.json` (`num_slices`); a slice with another N is
   refused, so resubmitted slices always deal the same shards. Slices share nothing but the output directory.
7. `batch_size` is the stage's, in its own unit (clips for caption, frames for segment's embedder), a speed
   option (left out of the fingerprint); padding and bucketing of clips belong to the stage. The runner's unit
   is the shard (input rows).
8. Outputs do not depend on worker count, executor or completion order: a part's rows are sorted by input row
   (stable, so one input's samples keep their order), ids come from the sources, and a shard is a fixed row
   range of the input.

The resume fingerprint is the stage name, the params that change output (all but the stage's
`speed_options`), the shard size, the manifest schema version and a hash of the input stream: a run may
resume with another batch size, decode workers, worker count, GPUs or executor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from vidrd_data import manifest as mf
from vidrd_data.run.decode import FAILURES_FILE
from vidrd_data.run.executors import EXECUTORS, execute
from vidrd_data.run.options import RunOptions
from vidrd_data.run.shard import ShardTask
from vidrd_data.run.stage import RunnerError, StageAbort, stage_class
from vidrd_io import fs, remote

log = logging.getLogger(__name__)

Inputs = pa.Table | pa.RecordBatchReader | str | os.PathLike  # a path: a Parquet file of input rows


@dataclass
class RunSummary:
    out_dir: Path | str  # a URL (str) for a manifest in an object store
    parts_total: int
    parts_skipped: int
    input_rows: int
    output_rows: int
    ok: int
    failed: int
    wall_time_s: float

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


# ---------------------------------------------------------------- the input stream


def _batches(inputs: Inputs) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Return the schema and record batches of a table, a batch stream or a Parquet file."""
    if isinstance(inputs, pa.Table):
        return inputs.schema, iter(inputs.to_batches(max_chunksize=1 << 16))
    if isinstance(inputs, pa.RecordBatchReader):
        return inputs.schema, iter(inputs)
    if isinstance(inputs, (str, os.PathLike)):
        pf = pq.ParquetFile(inputs if remote.local_path(inputs) is not None else fs.open_read(inputs))
        return pf.schema_arrow, pf.iter_batches(batch_size=1 << 16)
    raise RunnerError(f"inputs must be a pyarrow Table, a RecordBatchReader or a Parquet path, not {type(inputs)}")


def _shard_batches(inputs: Inputs, shard_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Return the input schema with `input_row` and its rows as one record batch per shard (the last may be
    short): fixed boundaries, so the bytes hashed depend on the rows, not on how the caller chunked them."""
    schema, batches = _batches(inputs)
    if "input_row" in schema.names:
        raise RunnerError("input rows must not have an input_row column (the runner numbers them)")
    schema = schema.append(pa.field("input_row", pa.int64()))

    def shards() -> Iterator[pa.RecordBatch]:
        held: list[pa.RecordBatch] = []
        count = offset = 0
        for batch in batches:
            if batch.num_rows == 0:
                continue
            held.append(batch)
            count += batch.num_rows
            while count >= shard_size:
                table = pa.Table.from_batches(held)
                yield _numbered(table.slice(0, shard_size), offset)
                offset += shard_size
                rest = table.slice(shard_size)
                held = rest.to_batches() if rest.num_rows else []
                count = rest.num_rows
        if count:
            yield _numbered(pa.Table.from_batches(held), offset)

    return schema, shards()


def _numbered(table: pa.Table, offset: int) -> pa.RecordBatch:
    table = table.combine_chunks()
    numbers = pa.array(range(offset, offset + table.num_rows), pa.int64())
    table = table.append_column("input_row", numbers)
    return table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], table.schema)


def _ingest(inputs: Inputs, shard_size: int, target: Path | str | None) -> tuple[pa.Schema, int, str]:
    """Stream the input rows, hashing them (and writing them to `target`, one row group per shard when given);
    return their schema (with `input_row`), their count and the hash."""
    schema, shards = _shard_batches(inputs, shard_size)
    digest = hashlib.sha256(schema.serialize())
    count = 0

    def consume(writer: pq.ParquetWriter | None) -> None:
        nonlocal count
        for batch in shards:
            digest.update(batch.serialize())  # IPC bytes, one shard at a time: never the whole input at once
            count += batch.num_rows
            if writer is not None:
                writer.write_batch(batch, row_group_size=max(shard_size, 1))

    if target is None:
        consume(None)
    else:
        def write(tmp: str) -> None:
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                consume(writer)

        fs.atomic_write(target, write)
    return schema, count, digest.hexdigest()


def fingerprint(
    stage_name: str, params: dict, speed_options: frozenset[str], shard_size: int, inputs_hash: str, schema: pa.Schema
) -> str:
    """Return what a resumed run must share with the run that wrote the manifest: the stage, the params that
    change its output (not its `speed_options`), the shard size, the manifest schema version, the parts' declared
    schema (a vidrd that adds a column to a stage must not append its parts to an older run's) and the inputs."""
    output_params = {k: v for k, v in params.items() if k not in speed_options}
    key = [stage_name, output_params, shard_size, mf.SCHEMA_VERSION, mf.schema_to_json(schema), inputs_hash]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- the output directory


def _our_file(name: str) -> bool:
    return (
        name in (mf.MANIFEST_FILE, mf.INPUTS_FILE, FAILURES_FILE)
        or bool(mf.PART_RE.match(name))
        or (name.startswith("part-") and name.endswith(".stats.json"))
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def clear_output(out: Path | str) -> None:
    """Remove what a run wrote into `out`, refusing to touch a directory that holds anything else."""
    names = fs.list_names(out)
    foreign = [name for name in names if not _our_file(name)]
    if foreign:
        raise RunnerError(f"{out} holds files vidrd did not write (e.g. {foreign[0]}); not deleting it")
    for name in names:
        fs.remove(fs.join(out, name))


def slurm_slice(shard_index: int | None, num_shards: int | None) -> tuple[int | None, int | None]:
    """Return the slice to run: the one given, else this Slurm array task's (task id minus the array's first
    id, over its step, of the task count), else (None, None): every shard."""
    env = os.environ
    if shard_index is None and num_shards is None and env.get("SLURM_ARRAY_TASK_ID") and env.get("SLURM_ARRAY_TASK_COUNT"):
        try:
            task, first = int(env["SLURM_ARRAY_TASK_ID"]), int(env.get("SLURM_ARRAY_TASK_MIN") or 0)
            step = int(env.get("SLURM_ARRAY_TASK_STEP") or 1)
            count = int(env["SLURM_ARRAY_TASK_COUNT"])
        except ValueError:
            raise RunnerError("$SLURM_ARRAY_TASK_ID/_MIN/_STEP/_COUNT are not integers") from None
        index = (task - first) // max(step, 1)
        # said aloud: an array whose tasks each have their own --out would otherwise run 1/N of each silently
        log.warning("running slice %d of %d of the shards ($SLURM_ARRAY_TASK_*; pass --shard-index 0 --num-shards 1 "
                    "for all of them)", index, count)
        return index, count
    return shard_index, num_shards


def _slice_filter(shard_index: int | None, num_shards: int | None):
    if shard_index is None and num_shards is None:
        return lambda i: True
    if shard_index is None or num_shards is None or num_shards < 1 or not 0 <= shard_index < num_shards:
        raise RunnerError(f"--shard-index must be in [0, --num-shards), got {shard_index} of {num_shards}")
    return lambda i: i % num_shards == shard_index


def _remove_incomplete(out: Path | str, mine=lambda i: True) -> None:
    """Delete torn leftovers of an earlier run: parts without stats and temp files (only this slice's)."""
    names = fs.list_names(out)
    for name in names:
        m = re.match(r"^\.?part-(\d{5})\.", name)
        if not m or not mine(int(m.group(1))):
            continue
        torn = name.startswith(".") and name.endswith(".tmp")
        if torn or (mf.PART_RE.match(name) and mf.stats_name(int(m.group(1))) not in names):
            fs.remove(fs.join(out, name))


def _existing_meta(out: Path | str) -> dict:
    """Return a manifest's `_manifest.json`, refusing one written under another schema version."""
    try:
        meta = json.loads(fs.read_text(fs.join(out, mf.MANIFEST_FILE)))
    except (OSError, ValueError) as exc:
        raise RunnerError(f"{fs.join(out, mf.MANIFEST_FILE)} is unreadable ({exc}); pass --overwrite to start over") from None
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if version != mf.SCHEMA_VERSION:
        raise RunnerError(f"{out} was written with manifest schema version {version}, this vidrd writes "
                          f"{mf.SCHEMA_VERSION}; its parts cannot be resumed: pass --overwrite or choose another --out")
    return meta


# ---------------------------------------------------------------- running


def run_stage(
    stage_name: str,
    params: dict,
    inputs: Inputs,
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None,
    input_desc: list[str],
    workers: int = RunOptions.workers,
    shard_size: int = RunOptions.shard_size,
    overwrite: bool = RunOptions.overwrite,
    progress: bool = RunOptions.progress,
    executor: str = RunOptions.executor,
    gpus: str | None = RunOptions.gpus,
    gpus_per_worker: float | None = RunOptions.gpus_per_worker,
    shard_index: int | None = RunOptions.shard_index,
    num_shards: int | None = RunOptions.num_shards,
) -> RunSummary:
    """Run a stage over `inputs` (one row per input sample) into the manifest directory `out_dir`; return its
    summary. The keyword arguments after `input_desc` are `RunOptions`' fields.

    `inputs` may be a table, a `pa.RecordBatchReader` (read once) or a Parquet file path: it is streamed into
    `_inputs.parquet`, never held whole by the runner. `executor` is `local` (this machine's processes) or `ray`
    (actors on the cluster at `RAY_ADDRESS`, or on a local one). With `shard_index`/`num_shards` (default: the
    Slurm array task's), only parts `i` with `i % num_shards == shard_index` are run.
    """
    if shard_size < 1:
        raise RunnerError(f"--shard-size must be ≥ 1, got {shard_size}")
    if workers < 0:
        raise RunnerError(f"--workers must be ≥ 0 (0: auto), got {workers}")
    if executor not in EXECUTORS:
        raise RunnerError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    shard_index, num_shards = slurm_slice(shard_index, num_shards)
    mine = _slice_filter(shard_index, num_shards)
    if overwrite and shard_index is not None:
        raise RunnerError("--overwrite cannot be combined with --shard-index (slices share one output)")
    cls = stage_class(stage_name)
    out = fs.location(out_dir)  # a local Path, or a URL: parts are then uploaded whole, stats last
    if overwrite:
        clear_output(out)
    if mf.is_manifest(out):
        meta = _existing_meta(out)
        input_schema, num_inputs, inputs_hash = _ingest(inputs, shard_size, None)
        schema = mf.output_schema(cls.fields, input_schema)
        if meta.get("fingerprint") != fingerprint(stage_name, params, cls.speed_options, shard_size, inputs_hash,
                                                  schema):
            raise RunnerError(
                f"{out} already holds a manifest made from other inputs or options (or by a vidrd whose output "
                "columns differ); "
                "pass --overwrite to replace it or choose another --out"
            )
        pinned = meta.get("num_slices")
        if num_shards is not None and pinned is not None and pinned != num_shards:
            raise RunnerError(f"{out} is being built in {pinned} slices; this slice says --num-shards {num_shards}")
    else:
        if any(not _our_file(name) for name in fs.list_names(out)):
            raise RunnerError(f"{out} exists and is not a vidrd manifest; choose an empty or new --out")
        fs.makedirs(out)
        input_schema, num_inputs, inputs_hash = _ingest(inputs, shard_size, fs.join(out, mf.INPUTS_FILE))
        schema = mf.output_schema(cls.fields, input_schema)
        meta = mf.new_meta(
            kind=cls.kind,
            stage=stage_name,
            params=params,
            inputs=input_desc,
            root=root,
            manifest_dir=out,
            schema=schema,
            extra={
                "fingerprint": fingerprint(stage_name, params, cls.speed_options, shard_size, inputs_hash, schema),
                "shard_size": shard_size,
                "num_inputs": num_inputs,
                "num_parts": -(-num_inputs // shard_size),
                "num_slices": num_shards,
            },
        )
        fs.write_json_atomic(fs.join(out, mf.MANIFEST_FILE), meta)
    _remove_incomplete(out, mine)
    root_abs = os.path.abspath(os.fspath(root)) if root is not None else None
    done = set(mf.Manifest.open(out, root=root_abs).complete_parts())
    n_parts = -(-num_inputs // shard_size)
    inputs_path = str(fs.join(out, mf.INPUTS_FILE))
    tasks = [
        ShardTask(i, i * shard_size, min((i + 1) * shard_size, num_inputs), inputs_path, str(out), stage_name, params,
                  root_abs, schema)
        for i in range(n_parts)
        if i not in done and mine(i)
    ]
    start = time.perf_counter()
    try:
        execute(tasks, cls, params, workers=workers, executor=executor, gpus=gpus, gpus_per_worker=gpus_per_worker,
                progress=progress, total=sum(t.num_rows for t in tasks), label=cls.name or stage_name)
    except StageAbort:
        _remove_incomplete(out, mine)  # the shards that were in hand: killed mid-write, redone on resume
        raise
    return summarize(out, n_parts, len(done), time.perf_counter() - start)


def retry_failed(
    out_dir: str | os.PathLike, *, workers: int = RunOptions.workers, progress: bool = RunOptions.progress, root=None,
    executor: str = RunOptions.executor, gpus: str | None = RunOptions.gpus,
    gpus_per_worker: float | None = RunOptions.gpus_per_worker,
) -> RunSummary:
    """Re-run the input rows that produced failed samples, rewriting only the parts that hold them; return the
    summary of the whole manifest."""
    try:
        m = mf.Manifest.open(out_dir, root=root)
    except mf.ManifestError as exc:
        raise RunnerError(str(exc)) from None
    inputs_path = fs.join(m.path, mf.INPUTS_FILE)
    if not fs.is_file(inputs_path):
        raise RunnerError(f"{out_dir} has no {mf.INPUTS_FILE}: it was not written by a vidrd stage")
    shard_size = int(m.meta["shard_size"])
    m.require_complete(hint="a stage still running or killed? re-run it before retrying its failed rows")
    num_inputs = int(m.meta["num_inputs"])
    schema = m.schema() if m.parts else None
    stage_name, params = m.meta["stage"], m.meta["params"]
    tasks = [
        ShardTask(i, i * shard_size, min((i + 1) * shard_size, num_inputs), str(inputs_path), str(m.path), stage_name,
                  params, m.root, schema, retry=True)
        for i, stats in zip(m.parts, m.stats())
        if stats.get("failed", 0)
    ]
    start = time.perf_counter()
    total = sum(s.get("failed", 0) for s in m.stats())
    execute(tasks, stage_class(stage_name), params, workers=workers, executor=executor, gpus=gpus,
            gpus_per_worker=gpus_per_worker, progress=progress, total=total, label=f"retry {stage_name}")
    return summarize(m.path, len(m.parts), len(m.parts) - len(tasks), time.perf_counter() - start)


def summarize(out: Path | str, parts_total: int, parts_skipped: int, wall: float) -> RunSummary:
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
