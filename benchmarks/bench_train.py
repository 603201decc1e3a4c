"""Training throughput and the share of step time spent waiting for data, with 0 and 2 DataLoader workers.

Target (issue 9): < 5 % of step time waiting for data with 2 workers. The tiny Stable Diffusion of the demo trains on
the demo's manifests (pseudo-videos, action clips, stills: mixed image and video batches) at 32², 8 frames, batch 2;
the first steps (model warm-up, worker start) are not counted. samples/s counts clips and stills alike. For the data
side's own capacity, the loader alone is also timed at the default training size, 256², 8 frames.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path


def demo_inputs(folder: Path) -> tuple[Path, list[Path]]:
    """Writes the demo corpus, its images / pseudo-video / actions manifests and the tiny SD; returns them."""
    from vidrd_data import sources
    from vidrd_demo.corpus import write_demo_corpus
    from vidrd_demo.models.stable_diffusion import write_tiny_stable_diffusion
    from vidrd_data.run.runner import run_stage

    write_demo_corpus(folder, models=False)
    manifests = folder / "manifests"
    table, base = sources.caption_table(folder / "images" / "captions.csv", path_col="image", source_dataset="images")
    run_stage("images", {}, table, manifests / "images", root=base, input_desc=["images"], workers=1, progress=False)
    table, base = sources.manifest_rows(manifests / "images", kind="image")
    run_stage("pseudo-video", {"seed": 0}, table, manifests / "pseudo_videos", root=base, input_desc=["images"],
              workers=1, progress=False)
    table, base = sources.video_folder(folder / "actions", layout="action", source_dataset="actions")
    run_stage("videos", {}, table, manifests / "actions", root=base, input_desc=["actions"], workers=1,
              progress=False)
    sd = write_tiny_stable_diffusion(folder / "stable_diffusion")
    return sd, [manifests / "pseudo_videos", manifests / "actions", manifests / "images"]


def measure(sd: Path, manifests: list[Path], run: Path, workers: int, steps: int, warmup: int, resolution: int,
            frames: int, batch: int) -> dict:
    """Trains `warmup + steps` steps; returns samples/s and data-wait share over the last `steps`."""
    from accelerate.state import AcceleratorState, GradientState

    from vidrd_model.train import train
    from vidrd_model.train_config import TrainConfig

    config = TrainConfig(pretrained_model=str(sd), manifests=[str(m) for m in manifests], output_dir=str(run),
                         resolution=resolution, num_frames=frames, batch_size=batch, image_batch_size=batch,
                         num_workers=workers, max_steps=warmup + steps, checkpoint_every=warmup + steps,
                         log_every=warmup + steps, progress=False, seed=0)
    started = time.perf_counter()
    train(config)
    wall = time.perf_counter() - started
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))[warmup:]
    step_s = [batch / float(r["samples_per_s"]) for r in rows]  # every batch holds `batch` samples here
    wait_s = [t * float(r["data_wait"]) for t, r in zip(step_s, rows)]
    return {
        "workers": workers,
        "steps": len(rows),
        "samples/s": f"{batch * len(rows) / sum(step_s):.2f}",
        "step ms": f"{1000 * sum(step_s) / len(rows):.0f}",
        "data wait": f"{100 * sum(wait_s) / sum(step_s):.1f} %",
        "target": "< 5 %" if workers == 2 else "",
        "run s": f"{wall:.0f}",
    }


def measure_loader(manifests: list[Path], workers: int, batches: int, resolution: int, frames: int,
                   batch: int) -> dict:
    """Returns the samples/s of the DataLoader alone (no model) over `batches` batches after its first."""
    from vidrd_model.data import IMAGE, VIDEO, BatchPlan, ManifestClips, kind_pools, make_loader, read_rows

    rows, _ = read_rows([str(m) for m in manifests])
    plan = BatchPlan(kind_pools(rows), {VIDEO: batch, IMAGE: batch}, 0.5, seed=0)
    loader = iter(make_loader(ManifestClips(rows, resolution, frames), plan, workers))
    next(loader)  # workers started
    started = time.perf_counter()
    for _ in range(batches):
        next(loader)
    elapsed = time.perf_counter() - started
    return {"workers": workers, "steps": batches, "samples/s": f"{batch * batches / elapsed:.2f}",
            "step ms": f"{1000 * elapsed / batches:.0f}", "data wait": "", "target": "", "run s": f"{elapsed:.0f}"}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--loader-resolution", type=int, default=256)
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv or [])
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        sd, manifests = demo_inputs(Path(tmp))
        rows = []
        for workers in args.workers:
            row = measure(sd, manifests, Path(tmp) / f"run_{workers}", workers, args.steps, args.warmup,
                          args.resolution, args.frames, args.batch)
            rows.append({"measure": f"train {args.resolution}², {args.frames} frames", **row})
        for workers in args.workers:
            row = measure_loader(manifests, workers, args.loader_batches, args.loader_resolution, args.frames,
                                 args.batch)
            rows.append({"measure": f"loader only {args.loader_resolution}², {args.frames} frames", **row})
        return rows


if __name__ == "__main__":
    import sys

    from benchmarks.run import print_table

    print_table("train: tiny SD on the demo manifests", main(sys.argv[1:]))
