"""Scaling of a CPU-bound stage: pseudo-video with `--materialize` (render + H.264 encode), 1 vs 2 workers,
on the local process pool and on Ray; and Ray's per-shard overhead (empty shards).

Target (issue 6): 2 workers ≥ 1.7× one worker.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from vidrd_data import sources
from vidrd_data.run.runner import run_stage


def _corpus(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(n):
        yy, xx = np.mgrid[:384, :512]
        img = np.stack([(xx + 7 * i) % 256, (yy * 2 + i) % 256, (xx ^ yy) % 256], -1).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=90)
        lines.append(f"{i:04d}.jpg,a test pattern number {i}")
    (folder / "list.csv").write_text("\n".join(lines) + "\n")
    return folder / "list.csv"


def _timed(table, root, out: Path, workers: int, executor: str, params: dict, shard_size: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    run_stage("pseudo-video", params, table, out, root=root, input_desc=["bench"], shard_size=shard_size,
              workers=workers, executor=executor, progress=False)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--ray", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table, root = sources.caption_table(_corpus(tmp / "imgs", args.images), path_col="image")
        params = {"seed": 0, "materialize": str(tmp / "mp4"), "frames": 8, "size": 256}
        executors = ["local"] + (["ray"] if args.ray else [])
        for executor in executors:
            if executor == "ray":
                import ray

                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            times = {}
            for workers in (1, 2):
                shutil.rmtree(tmp / "mp4", ignore_errors=True)
                if executor == "ray":
                    ray.shutdown()
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
                    _timed(table.slice(0, 2), root, tmp / "warm", 1, "ray", params, 1)  # start the workers
                    shutil.rmtree(tmp / "mp4", ignore_errors=True)
                times[workers] = _timed(table, root, tmp / f"{executor}{workers}", workers, executor, params, args.shard_size)
            for workers in (1, 2):
                rows.append({"measure": f"{executor}, {workers} worker(s): samples/s", "value": f"{args.images / times[workers]:.1f}",
                             "target": "", "ratio": ""})
            speedup = times[1] / times[2]
            rows.append({"measure": f"{executor}: 2 vs 1 worker speed-up", "value": f"{speedup:.2f}x", "target": "1.70x",
                         "ratio": f"{speedup / 1.7:.2f} of target"})
            if executor == "ray":
                # rows whose file is missing fail at once: what remains is the cost of a task per shard
                empty = pa.table({"source_path": [f"missing{i}.jpg" for i in range(64)], "caption": ["x"] * 64})
                many = _timed(empty, root, tmp / "overhead", 2, "ray", {"seed": 0}, 1)
                one = _timed(empty, root, tmp / "overhead_one", 2, "ray", {"seed": 0}, 64)
                rows.append({"measure": "ray per-shard overhead (64 one-row shards vs one 64-row shard)",
                             "value": f"{(many - one) / 63 * 1000:.1f} ms", "target": "", "ratio": ""})
                ray.shutdown()
    return rows


if __name__ == "__main__":
    from benchmarks.run import print_table

    print_table("scaling", main())
