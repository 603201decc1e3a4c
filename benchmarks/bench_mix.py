"""Mix synthetic source manifests (3 sources, 10M rows by default, and 1M): wall time, peak RSS, parts written.

Target (issue 16): peak RSS ≤ 2 GiB for 10M rows from 3 sources (the old mix kept every row as a Python dict:
~2.4 KB a row, ≈ 23 GiB at 10M). The sources look like segment output over long videos: 100 clips per file
(so 100k small media files for 10M rows, fingerprinted for real), captions of ~60 characters, spans, 3 % failed
rows, exact duplicates within a source and across two, a cap on one source. Each mix runs in a child process
that reports its own peak RSS (`ru_maxrss`). `--old-tree DIR` (a checkout of commit cb6ad81) also mixes
`--old-rows` with the old code, for a measured "before".

    python benchmarks/run.py mix                       # 10M and 1M rows
    python benchmarks/run.py mix --rows 200000         # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
CLIPS_PER_FILE = 100
SHARES = (("segments", 0.5, 1.0, None), ("actions", 0.3, 2.0, 0.8), ("web", 0.2, 0.5, None))  # name, share, weight, cap
WORDS = "a the dog cat man woman runs jumps red blue small large street field water sky slowly quickly".split()


def _media(root: Path, n_files: int) -> None:
    """Write `n_files` small opaque "videos" (1–3 KB, distinct bytes) under root/media/NNN/."""
    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, 4096 + n_files, dtype=np.uint8).tobytes()
    for i in range(n_files):
        d = root / "media" / f"{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:07d}.mp4").write_bytes(blob[i: i + 1024 + i % 2048])


def _captions(rng: np.random.Generator, n: int) -> pa.Array:
    pool = pa.array([" ".join(rng.choice(WORDS, 11)) for _ in range(997)])  # ~60 characters each
    return pc.binary_join_element_wise(pool.take(pa.array(rng.integers(0, len(pool), n))),
                                       pc.cast(pa.array(np.arange(n) % 9973), pa.string()), " #")


def _source_part(schema: pa.Schema, name: str, start: int, n: int, first_file: int, files: int,
                 rng: np.random.Generator, dup_from: tuple[int, int] | None) -> pa.Table:
    """Rows `start..start+n` of a source: clip k of file `first_file + (row // CLIPS_PER_FILE) % files`."""
    rows = np.arange(start, start + n)
    file_ix = first_file + (rows // CLIPS_PER_FILE) % files
    clip = rows % CLIPS_PER_FILE
    repeat = rng.random(n) < 0.01  # 1 %: the previous clip's span again (a duplicate within the source)
    clip = np.where(repeat & (clip > 0), clip - 1, clip)
    if dup_from is not None:  # the first rows: the very clips of another source (duplicates across sources)
        other_first, count = dup_from
        mine = rows < count
        file_ix = np.where(mine, other_first + rows // CLIPS_PER_FILE, file_ix)
    start_frame = clip * 48
    failed = rng.random(n) < 0.03
    paths = pc.binary_join_element_wise(
        pa.array(np.char.add("media/", np.char.zfill((file_ix // 1000).astype(str), 3))),
        pc.binary_join_element_wise(pa.array(np.char.zfill(file_ix.astype(str), 7)), pa.array(np.full(n, ".mp4")), ""),
        "/")
    cols = {
        "sample_id": pc.binary_join_element_wise(pa.array(np.full(n, name)), pc.cast(pa.array(rows), pa.string()), "-"),
        "kind": pa.array(np.full(n, "video_clip")),
        "source_path": paths,
        "source_dataset": pa.array(np.full(n, name)),
        "caption": _captions(rng, n),
        "caption_source": pa.array(np.full(n, "blip2")),
        "label": pa.nulls(n, pa.string()),
        "start_time": start_frame / 24.0,
        "end_time": (start_frame + 48) / 24.0,
        "start_frame": start_frame.astype(np.int64),
        "end_frame": (start_frame + 48).astype(np.int64),
        "fps": np.full(n, 24.0),
        "num_frames": np.full(n, 48, np.int64),
        "width": np.full(n, 640, np.int64),
        "height": np.full(n, 360, np.int64),
        "source_duration": np.full(n, CLIPS_PER_FILE * 2.0),
        "status": pa.array(np.where(failed, "failed", "ok")),
        "error": pa.array(np.where(failed, "VideoError: cannot decode video", None).astype(object), pa.string()),
        "input_row": rows.astype(np.int64),
    }
    return pa.Table.from_pydict(cols, schema=schema)


def write_sources(base: Path, rows: int, part_rows: int) -> dict:
    """Write media under base/root and the 3 source manifests under base/build/sources; return the recipe spec."""
    from vidrd_data import manifest as mf
    from vidrd_io import fs

    root, build = base / "root", base / "build"
    schema = mf.output_schema()
    rng = np.random.default_rng(1)
    first_file, spec, firsts = 0, [], {}
    for index, (name, share, weight, cap_share) in enumerate(SHARES):
        n = int(rows * share)
        files = max(1, n // CLIPS_PER_FILE)
        firsts[name] = first_file
        dup_from = (firsts["segments"], n // 20) if name == "web" else None  # 5 % of web are segments' clips
        d = build / "sources" / name
        d.mkdir(parents=True)
        n_parts = -(-n // part_rows)
        fs.write_json_atomic(d / mf.MANIFEST_FILE, mf.new_meta(
            kind="bench", stage="segment", params={}, inputs=[], root=root, manifest_dir=d, schema=schema,
            extra={"num_parts": n_parts}))
        for p in range(n_parts):
            count = min(part_rows, n - p * part_rows)
            table = _source_part(schema, name, p * part_rows, count, first_file, files, rng, dup_from)
            fs.write_parquet_atomic(d / mf.part_name(p), table)
            fs.write_json_atomic(d / mf.stats_name(p), mf.part_stats(table, count, 1.0))
        spec.append({"name": name, "weight": weight, "cap": int(n * cap_share) if cap_share else None})
        first_file += files
    _media(root, first_file)
    return {"root": str(root), "build": str(build), "sources": spec, "files": first_file}


CHILD = """
import json, resource, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
t0 = time.perf_counter()
if spec.get("old"):
    from vidrd_data.mix.recipe import Recipe, Source, mix
else:
    from vidrd_data.mix.recipe import Recipe, Source
    from vidrd_data.mix.mix import mix
extra = {} if spec.get("old") else {"split_by": spec["split_by"]}  # the old code knew only the sample split
recipe = Recipe(path=Path(spec["root"]) / "bench.toml", root=Path(spec["root"]), val_fraction=0.01, seed=0,
                dedup="exact", **extra, sources=[Source(name=s["name"], stage="segment", input="-", weight=s["weight"],
                                               cap=s["cap"]) for s in spec["sources"]])
report = mix(recipe, Path(spec["build"]))
print(json.dumps({"wall_s": time.perf_counter() - t0, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rows_out": report["rows"], "sources": report["sources"]}))
"""


def run_mix(spec: dict, tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, cwd=tree, capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"the mix failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _digest(mixed: Path) -> str:
    """Return a short hash of the mixed manifest's sample ids and splits, in order (old and new must agree)."""
    import hashlib

    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for part in sorted(mixed.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["sample_id", "split"])
        h.update("\n".join(f"{i} {s}" for i, s in zip(t["sample_id"].to_pylist(), t["split"].to_pylist())).encode())
    return h.hexdigest()[:8]


def bench(rows: int, part_rows: int, tmp: Path, tree: Path, old: bool = False, split_by: str = "source") -> dict:
    base = tmp / f"{'old' if old else 'new'}-{rows}"
    t0 = time.perf_counter()
    spec = write_sources(base, rows, part_rows)
    write_s = time.perf_counter() - t0
    result = run_mix({**spec, "old": old, "split_by": split_by}, tree)
    mixed = Path(spec["build"]) / "mixed"
    digest = _digest(mixed)
    dup = sum(s["duplicates"] for s in result["sources"].values())
    capped = sum(s["capped"] for s in result["sources"].values())
    row = {
        "code": "old cb6ad81" if old else "new",
        "rows in": rows,
        "files": spec["files"],
        "source parts": sum(-(-int(rows * s[1]) // part_rows) for s in SHARES),
        "sources s": round(write_s, 1),
        "rows out": result["rows_out"],
        "capped": capped,
        "dups": dup,
        "mix s": round(result["wall_s"], 1),
        "rows/s": int(rows / result["wall_s"]),
        "peak RSS MiB": round(result["rss_kb"] / 1024),
        "RSS B/row": int(result["rss_kb"] * 1024 / rows),
        "parts out": len(list(mixed.glob("part-*.parquet"))),
        "ids+splits": digest,
    }
    subprocess.run(["rm", "-rf", str(base)])
    return row


def main(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_mix")
    parser.add_argument("--rows", default="10000000,1000000", help="Comma-separated total rows (3 sources).")
    parser.add_argument("--part-rows", type=int, default=10_000, help="Rows per source part.")
    parser.add_argument("--old-tree", type=Path, default=None, help="A checkout of cb6ad81: also mix with the old code.")
    parser.add_argument("--old-rows", type=int, default=200_000, help="Rows for the old code's run.")
    parser.add_argument("--tmp", type=Path, default=None, help="Scratch folder (default: the system temp).")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if args.old_tree is not None:
            results.append(bench(args.old_rows, args.part_rows, Path(tmp), args.old_tree, old=True))
            results.append(bench(args.old_rows, args.part_rows, Path(tmp), REPO, split_by="sample"))  # same splits
        for rows in (int(r) for r in args.rows.split(",")):
            results.append(bench(rows, args.part_rows, Path(tmp), REPO))
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    from benchmarks.run import print_table

    print_table("mix", main(sys.argv[1:]))
