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
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vidrd_data import manifest as mf
from vidrd_data.run.decode import FAILURES_FILE
from vidrd_data.run.executors import EXECUTORS, execute
from vidrd_data.run.shard import ShardTask
from vidrd_data.run.stage import RunnerError, stage_class
from vidrd_io import fs

log = logging.getLogger(__name__)


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
        name in (mf.MANIFEST_FILE, mf.INPUTS_FILE, FAILURES_FILE)
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
        fs.write_parquet_atomic(out / mf.INPUTS_FILE, inputs)
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
        fs.write_json_atomic(out / mf.MANIFEST_FILE, meta)
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
    execute(tasks, workers, progress, total=sum(len(t.rows) for t in tasks), label=stage_name, executor=executor,
             gpus=cls.gpus_per_task(params))
    return summarize(out, n_parts, len(done), time.perf_counter() - start)


def retry_failed(out_dir: str | os.PathLike, *, workers: int = 1, progress: bool = True, root=None) -> RunSummary:
    """Re-run the input rows that produced failed samples, rewriting only the parts that hold them."""
    m = mf.Manifest.open(out_dir, root=root)
    inputs = m.inputs()
    if inputs is None:
        raise RunnerError(f"{out_dir} has no {mf.INPUTS_FILE}: it was not written by a vidrd stage")
    shard_size = int(m.meta["shard_size"])
    m.require_complete(hint="a stage still running or killed? re-run it before retrying its failed rows")
    schema = pq.read_schema(m.part_path(m.parts[0])) if m.parts else None
    tasks = []
    for i, stats in zip(m.parts, m.stats()):
        if stats.get("failed", 0):
            rows = inputs.slice(i * shard_size, shard_size).to_pylist()
            tasks.append(ShardTask(i, rows, str(m.path), m.meta["stage"], m.meta["params"], m.root, schema, retry=True))
    start = time.perf_counter()
    total = sum(s.get("failed", 0) for s in m.stats())
    execute(tasks, workers, progress, total=total, label=f"retry {m.meta['stage']}")
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


