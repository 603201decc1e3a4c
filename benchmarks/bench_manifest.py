"""Write, read and `inspect` a synthetic 1,000,000-row manifest: rows/s, bytes/row, peak RSS.

Target (issue 2): `vidrd-data inspect` under 3 s and under 1 GB RSS on a 2-core machine. For scale,
the same summary computed the obvious way (pandas, every column) is timed in the same run.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from vidrd_data import manifest as mf
from vidrd_io import fs

WORDS = "a the dog cat man woman runs jumps red blue small large street field water sky slowly quickly".split()


def synthetic_part(index: int, n: int, rng: np.random.Generator, schema: pa.Schema) -> pa.Table:
    start = index * n
    kinds = np.array(mf.KINDS)[rng.integers(0, 3, n)]
    failed = rng.random(n) < 0.05
    lengths = rng.integers(4, 16, n)
    vocab = np.array(WORDS)
    captions = [" ".join(vocab[rng.integers(0, len(vocab), k)]) for k in lengths]
    t0 = rng.uniform(0, 100, n)
    dur = rng.uniform(1, 10, n)
    reasons = np.array(["VideoError: cannot decode video", "ValueError: empty caption", "FileNotFoundError: gone"])
    cols = {
        "sample_id": [f"{i:020x}" for i in range(start, start + n)],
        "kind": kinds,
        "source_path": [f"videos/{i // 10:07d}.mp4" for i in range(start, start + n)],
        "source_dataset": np.array(["webvid", "ucf101", "laion"])[rng.integers(0, 3, n)],
        "caption": captions,
        "caption_source": np.array(["original", "blip2", "minigpt4"])[rng.integers(0, 3, n)],
        "label": [None] * n,
        "start_time": t0,
        "end_time": t0 + dur,
        "start_frame": (t0 * 30).astype(np.int64),
        "end_frame": ((t0 + dur) * 30).astype(np.int64),
        "fps": np.full(n, 30.0),
        "num_frames": (dur * 30).astype(np.int64),
        "width": np.full(n, 640, np.int64),
        "height": np.full(n, 360, np.int64),
        "source_duration": t0 + dur + 5,
        "status": np.where(failed, "failed", "ok"),
        "error": [reasons[i % 3] if f else None for i, f in enumerate(failed)],
        "input_row": np.arange(start, start + n, dtype=np.int64),
    }
    return pa.Table.from_pydict(cols, schema=schema)


def write_manifest(out: Path, rows: int, parts: int) -> float:
    schema = mf.BASE_SCHEMA
    rng = np.random.default_rng(0)
    meta = mf.new_meta(kind="video_clip", stage="synthetic", params={}, inputs=[], root=None, manifest_dir=out,
                       schema=schema, extra={"num_parts": parts, "shard_size": rows // parts})
    out.mkdir(parents=True, exist_ok=True)
    fs.write_json_atomic(out / mf.MANIFEST_FILE, meta)
    elapsed = 0.0
    for i in range(parts):
        table = synthetic_part(i, rows // parts, rng, schema)
        t = time.perf_counter()
        fs.write_parquet_atomic(out / mf.part_name(i), table)
        fs.write_json_atomic(out / mf.stats_name(i), mf.part_stats(table, table.num_rows, 1.0))
        elapsed += time.perf_counter() - t
    return elapsed


def child(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, its peak RSS in MiB)."""
    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


PANDAS_SUMMARY = """
import sys, glob, pandas as pd
df = pd.concat(pd.read_parquet(p) for p in sorted(glob.glob(sys.argv[1] + '/part-*.parquet')))
df.kind.value_counts(); df.source_dataset.value_counts(); df.status.value_counts()
df[df.status == 'failed'].error.value_counts()
ok = df[df.status == 'ok']; ok.caption.str.split().str.len().describe(); (ok.end_time - ok.start_time).describe()
"""


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "manifest"
        write_s = write_manifest(out, args.rows, args.parts)
        size = sum(p.stat().st_size for p in out.glob("part-*.parquet"))
        t = time.perf_counter()
        table = mf.Manifest.open(out).read()
        read_s = time.perf_counter() - t
        assert table.num_rows == args.rows
        del table
        inspect_s, inspect_rss = child([sys.executable, "-m", "cli.data", "inspect", str(out), "--json"])
        from vidrd_data.inspection.summary import summarize

        t = time.perf_counter()
        summarize(mf.Manifest.open(out))
        summarize_s = time.perf_counter() - t
        pandas_s, pandas_rss = child([sys.executable, "-c", PANDAS_SUMMARY, str(out)])
    rows = [
        {"measure": "write rows/s", "value": f"{args.rows / write_s:,.0f}", "target": "", "ratio": ""},
        {"measure": "bytes/row (zstd parquet)", "value": f"{size / args.rows:.1f}", "target": "", "ratio": ""},
        {"measure": "read all columns rows/s", "value": f"{args.rows / read_s:,.0f}", "target": "", "ratio": ""},
        {"measure": "inspect (summarize only) s", "value": f"{summarize_s:.2f}", "target": "", "ratio": ""},
        {"measure": "vidrd-data inspect --json s", "value": f"{inspect_s:.2f}", "target": "3.00",
         "ratio": f"{inspect_s / 3:.2f} of target"},
        {"measure": "vidrd-data inspect peak RSS MiB", "value": f"{inspect_rss:.0f}", "target": "1024",
         "ratio": f"{inspect_rss / 1024:.2f} of target"},
        {"measure": "pandas full-read summary s", "value": f"{pandas_s:.2f}", "target": "",
         "ratio": f"inspect is {pandas_s / inspect_s:.1f}x faster"},
        {"measure": "pandas full-read peak RSS MiB", "value": f"{pandas_rss:.0f}", "target": "",
         "ratio": f"inspect uses {inspect_rss / pandas_rss:.2f}x the memory"},
    ]
    return rows


if __name__ == "__main__":
    from benchmarks.run import print_table

    print_table("manifest: 1M rows", main())
