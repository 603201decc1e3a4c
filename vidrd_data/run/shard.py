"""One shard's work, wherever it runs: its rows through the stage, then its part written atomically."""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
import pyarrow as pa
import pyarrow.parquet as pq

from vidrd_data import manifest as mf
from vidrd_data.run.stage import Stage, StageAbort, stage_class
from vidrd_io import fs, remote

log = logging.getLogger(__name__)

# the stages this worker process has set up: a model loads once per worker and serves every shard it is given
_STAGE_CACHE: dict[str, Stage] = {}


def _get_stage(name: str, params: dict, root: str | None) -> Stage:
    key = json.dumps([name, params, root], sort_keys=True, default=str)
    if key not in _STAGE_CACHE:
        stage = stage_class(name)(**params)
        stage.root = root
        stage.setup()
        _STAGE_CACHE[key] = stage
    return _STAGE_CACHE[key]


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


# ---------------------------------------------------------------- one shard


@dataclass
class ShardTask:
    """A shard's descriptor: which input rows (`start` to `stop` of the run's `_inputs.parquet`) and where its
    part goes. Small on purpose: the worker reads its own rows, so nothing big crosses a pipe or Ray's store."""

    index: int
    start: int
    stop: int
    inputs_path: str
    out_dir: str
    stage_name: str
    params: dict
    root: str | None
    schema: pa.Schema
    retry: bool = False

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def read_rows(inputs_path: str, start: int, stop: int) -> list[dict]:
    """Return input rows `start` to `stop` of a Parquet file, reading only the row groups that hold them."""
    with fs.open_read(inputs_path) as f:
        pf = pq.ParquetFile(f)
        groups, first, offset = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if offset < stop and offset + n > start:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        if not groups:
            return []
        table = pf.read_row_groups(groups)
    return table.slice(start - first, stop - start).to_pylist()


def run_shard(task: ShardTask, report=None) -> dict:
    """Process one shard and write its part atomically (parquet, then stats); return the stats.

    `report(ok, failed)` is called per input row (filtered samples count in neither). `StageAbort` (from the stage) propagates and nothing is
    written for the shard.
    """
    report = report or (lambda ok, failed: None)
    start = time.perf_counter()
    stage = _get_stage(task.stage_name, task.params, task.root)
    # state a stage appends to across resumes (the decode failure log) stays local: object stores cannot append
    stage.work_dir = str(remote.local_state_dir(task.out_dir))
    out_dir = fs.location(task.out_dir)
    rows = read_rows(task.inputs_path, task.start, task.stop)
    inputs_by_row = {r["input_row"]: r for r in rows}
    kept: list[dict] = []
    todo = rows
    if task.retry:
        existing = mf.read_parquet(fs.join(out_dir, mf.part_name(task.index))).to_pylist()
        failed_inputs = {r["input_row"] for r in existing if r["status"] == "failed"}
        kept = [r for r in existing if r["input_row"] not in failed_inputs]
        todo = [r for r in rows if r["input_row"] in failed_inputs]
    outputs: list[dict] = []
    # a source reader that could not read a row (bad bytes in a caption file, say) says why in `_input_error`
    unreadable = [r for r in todo if r.get(mf.INPUT_ERROR)]
    results = itertools.chain(  # lazily: each row is reported as the stage yields it, not when the shard ends
        [(r, ValueError(r[mf.INPUT_ERROR])) for r in unreadable],
        stage.process_many([dict(r) for r in todo if not r.get(mf.INPUT_ERROR)]))
    for row, result in results:
        if isinstance(result, StageAbort):  # a stage that hands its abort back as a row's result
            raise result
        produced = finish_rows(stage, row, result, task.schema)
        outputs.extend(produced)
        # a filtered row is neither: the bar shows it only in the rows done
        report(sum(r["status"] == "ok" for r in produced), sum(r["status"] == "failed" for r in produced))
    rows_out = sorted(kept + outputs, key=lambda r: r["input_row"])  # stable: keeps each input's sample order
    table = rows_to_table_safe(stage, rows_out, inputs_by_row, task.schema)
    stats = mf.part_stats(table, input_rows=len(rows), wall_time_s=time.perf_counter() - start)
    stats["part"] = task.index
    if task.retry:
        stats["retried_input_rows"] = len(todo)
        fs.remove(fs.join(out_dir, mf.stats_name(task.index)))  # part is incomplete while rewritten
    fs.write_parquet_atomic(fs.join(out_dir, mf.part_name(task.index)), table)
    fs.write_json_atomic(fs.join(out_dir, mf.stats_name(task.index)), stats)  # the done-marker: last
    return stats
