"""Planning a stage over many input rows: the driver's peak memory and time.

"Planning" is everything `run_stage` does on the driver before workers start: stream the input rows into
`_inputs.parquet` (hashing them for the resume fingerprint), write `_manifest.json` and build the shard
descriptors. The executor is replaced by one that only counts the descriptors, so no shard runs. Each case runs
in a fresh process (peak RSS is a process's lifetime maximum); the inputs are synthetic rows of a video list
(`source_path`, `caption`, `source_dataset`), built column-wise in Arrow.

Target (issue 16): driver peak RSS ≤ 1 GiB at 10M input rows (before: +414 MiB per 1M rows, ≈ 4 GiB of
shard rows plus the table and a whole-table IPC copy for the fingerprint).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TARGET_MIB = 1024


def _batch(start: int, n: int) -> pa.RecordBatch:
    numbers = pc.cast(pa.array(np.arange(start, start + n)), pa.string())
    return pa.RecordBatch.from_arrays(
        [
            pc.binary_join_element_wise("videos/", numbers, ".mp4", ""),
            pc.binary_join_element_wise("a synthetic caption, number ", numbers, ""),
            pa.array(np.full(n, "bench", dtype=object), pa.string()),
        ],
        names=["source_path", "caption", "source_dataset"],
    )


def _reader(rows: int, batch: int = 1 << 16) -> pa.RecordBatchReader:
    schema = _batch(0, 1).schema
    return pa.RecordBatchReader.from_batches(schema, (_batch(s, min(batch, rows - s)) for s in range(0, rows, batch)))


def _case(kind: str, rows: int, shard_size: int, out: str) -> dict:
    """Plan one stage run in this process; return its measures."""
    from vidrd_data.run import runner

    planned = {}

    def count_only(tasks, stage_cls, params, **_):
        planned["tasks"] = len(tasks)
        planned["rows"] = sum(t.num_rows for t in tasks)

    runner.execute = count_only  # plan only: no shard runs
    inputs = _reader(rows) if kind == "reader" else pa.Table.from_batches(list(_reader(rows)))
    start = time.perf_counter()
    runner.run_stage("videos", {}, inputs, out, root=None, input_desc=["bench"], shard_size=shard_size,
                     progress=False)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **planned,
            "table_mib": 0 if kind == "reader" else inputs.nbytes / 2**20}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--cases", default="reader,table")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(_case(args.case, args.rows, args.shard_size, args.out)))
        return []
    rows = []
    repo = Path(__file__).resolve().parents[1]
    for kind in args.cases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--case", kind, "--rows", str(args.rows),
                 "--shard-size", str(args.shard_size), "--out", str(Path(tmp) / "m")],
                cwd=repo, check=True, capture_output=True, text=True)
            m = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({
            "inputs": f"{args.rows:,} rows as a {'RecordBatchReader' if kind == 'reader' else 'pa.Table'}",
            "shards planned": f"{m['tasks']:,} ({m['rows']:,} rows)",
            "input table in memory": f"{m['table_mib']:.0f} MiB",
            "time": f"{m['wall_s']:.1f} s",
            "driver peak RSS": f"{m['peak_mib']:.0f} MiB",
            "target": f"≤ {TARGET_MIB} MiB",
            "ratio": f"{m['peak_mib'] / TARGET_MIB:.2f} of target",
        })
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.run import print_table

    result = main()
    if result:
        print_table("plan", result)
