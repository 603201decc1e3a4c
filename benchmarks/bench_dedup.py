"""Semantic dedup (`dedup.semantic_duplicates`) of 1,000,000 synthetic 768-d embeddings: time and peak RSS.

Target (issue 21): under 5 minutes and under 4 GiB on this 2-core machine. The embeddings are float16 (1.5 GiB),
drawn around `--concepts` random directions (so k-means has structure to find), and `--duplicates` of the rows
are near copies (cosine ≈ 0.99) of earlier rows: the table says how many of those planted copies were found.
Each configuration runs in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def synthetic(n: int, d: int, concepts: int, duplicates: float, seed: int):
    """Return (float16 embeddings, the planted duplicate rows, the rows they copy), written chunk by chunk."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(concepts, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, d), np.float16)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        v = centres[rng.integers(0, concepts, m)] + rng.normal(scale=1.5 / np.sqrt(d), size=(m, d)).astype(np.float32)
        x[start:start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    copies = np.sort(rng.choice(np.arange(n // 2, n), int(n * duplicates), replace=False))
    originals = rng.integers(0, n // 2, len(copies))
    for start in range(0, len(copies), 65536):
        c, o = copies[start:start + 65536], originals[start:start + 65536]
        v = x[o].astype(np.float32) + rng.normal(scale=0.1 / np.sqrt(d), size=(len(c), d)).astype(np.float32)
        x[c] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return x, copies, originals


def one(n: int, d: int, threshold: float, concepts: int, duplicates: float, threads: int) -> dict:
    import faiss
    import numpy as np

    from vidrd_data.mix import dedup

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    x, copies, _ = synthetic(n, d, concepts, duplicates, seed=0)
    made = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = dedup.semantic_duplicates(x, threshold)
    took = time.perf_counter() - t0
    flagged = found.duplicate_of >= 0
    sizes = np.bincount(found.cluster)
    return {"rows": n, "dim": d, "clusters": int((sizes > 0).sum()), "largest cluster": int(sizes.max()),
            "threshold": threshold, "planted copies": len(copies), "copies found": int(flagged[copies].sum()),
            "flagged in all": int(flagged.sum()), "make data s": round(made, 1), "dedup s": round(took, 1),
            "peak RSS GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "target": "< 300 s, < 4 GiB"}


def main(argv: list[str]) -> list[dict]:
    p = argparse.ArgumentParser(prog="bench_dedup")
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--concepts", type=int, default=5000)
    p.add_argument("--duplicates", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.rows[0], args.dim, args.threshold, args.concepts, args.duplicates, args.threads)))
        return []
    rows = []
    for n in args.rows:
        cmd = [sys.executable, __file__, "--one", "--rows", str(n), "--dim", str(args.dim), "--threshold",
               str(args.threshold), "--concepts", str(args.concepts), "--duplicates", str(args.duplicates),
               "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if "--one" in sys.argv:  # the child process of one configuration
        main(sys.argv[1:])
    else:
        from benchmarks.run import print_table

        print_table("dedup", main(sys.argv[1:]))
