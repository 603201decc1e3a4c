"""Scaling of a CPU-bound stage: pseudo-video with `--materialize` (render + H.264 encode), 1 vs 2 workers,
on the local process pool and on Ray; Ray's per-shard overhead (empty shards); and how often a model stage
loads its model: a stage declaring `gpus=1` whose `setup` takes `--load-s` seconds, over 40 shards, on Ray
with 2 declared GPUs (`ray.init(num_gpus=2)` on this CPU machine) and on the local executor with 2 GPUs faked.

Targets: 2 workers ≥ 1.7× one worker (issue 6); the model loaded 2 times, not 40 (issue 16).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from vidrd_data import sources
from vidrd_data.run.runner import run_stage
from vidrd_data.run.stage import Resources, Stage

REPO = Path(__file__).resolve().parents[1]


class CountsLoads(Stage):
    """A model stage (it has a `device`) taking one GPU per worker: `setup` sleeps like a model load and leaves
    one file per call in `params["loads"]`."""

    name = "counts-loads"
    resources = Resources(cpus=1, gpus=1)

    def setup(self) -> None:
        time.sleep(float(self.params["load_s"]))
        (Path(self.params["loads"]) / f"{os.getpid()}-{time.monotonic_ns()}").write_text("loaded")

    def process(self, row: dict) -> list[dict]:
        return [{"sample_id": f"s{row['input_row']}", "source_path": row["source_path"]}]


def _loads(tmp: Path, executor: str, shards: int, load_s: float) -> dict:
    """Run CountsLoads over `shards` one-row shards on 2 (declared or faked) GPUs; return loads and time."""
    loads = tmp / f"loads-{executor}"
    loads.mkdir()
    table = pa.table({"source_path": [f"v{i}.mp4" for i in range(shards)]})
    params = {"device": "auto", "loads": str(loads), "load_s": load_s}
    t = time.perf_counter()
    run_stage("benchmarks.bench_scaling:CountsLoads", params, table, tmp / f"m-{executor}", root=None,
              input_desc=["bench"], shard_size=1, executor=executor, progress=False)
    return {"loads": len(list(loads.iterdir())), "time": time.perf_counter() - t}


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
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--load-shards", type=int, default=40)
    parser.add_argument("--load-s", type=float, default=1.0, help="seconds one model load takes")
    args = parser.parse_args(argv)
    rows = []
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])  # workers import us
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for executor in ["local"] + (["ray"] if args.ray else []):
            if executor == "ray":
                import ray

                ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
                m = _loads(tmp, "ray", args.load_shards, args.load_s)
                ray.shutdown()
            else:
                from vidrd_data.run import executors

                visible, executors.visible_gpus = executors.visible_gpus, lambda: ["0", "1"]
                try:
                    m = _loads(tmp, "local", args.load_shards, args.load_s)
                finally:
                    executors.visible_gpus = visible
            rows.append({"measure": f"{executor}, 2 GPUs, {args.load_shards} shards: model loads "
                                    f"({args.load_s:g} s each), time", "value": f"{m['loads']}, {m['time']:.1f} s",
                         "target": "2 loads", "ratio": f"{2 / m['loads']:.2f} of target"})
        if not args.scaling:
            return rows
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
