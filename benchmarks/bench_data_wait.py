"""Data-wait share of a real training loop over clips of long videos: pixels vs the latent cache; reopen vs seek.

A manifest of `video_clip` rows, 2 s each, cut from long videos (generated ones, plus ../shared's real
testvideo.mp4 when present), trains the tiny Stable Diffusion of the demo (or `--pretrained-model`) with N loader
workers: from pixels (decode + VAE + text encoder every step) and from a latent cache of the same rows (`vidrd-train
cache`, built first and timed). The clip reader alone is also timed per clip with one open reader per worker
(seek) and with a reopen per clip (what data.py did before). The first steps (warm-up, worker start) are not
counted. `rows()` returns the table rows, for benchmarks/bench_gpu.py.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np

CLIP_SECONDS = 2.0


def long_video(path: Path, seconds: float, fps: float = 24.0, size: tuple[int, int] = (320, 180)) -> Path:
    """Writes an mp4 of moving shapes over a gradient, every frame different; returns its path."""
    from vidrd_io.video import write_mp4

    width, height = size
    n = int(seconds * fps)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i] = (x + i) % 256
        top = (i * 3) % (height - 40)
        frames[i, top: top + 40, (i * 5) % (width - 40): (i * 5) % (width - 40) + 40] = (255, 64, 0)
    write_mp4(path, frames, fps)
    return path


def clip_manifest(folder: Path, videos: list[Path]) -> Path:
    """Writes a manifest of every 2 s clip of `videos` (captioned, split train); returns it."""
    from tests.train_corpus import write_manifest  # the trainer's test corpus writer: the mixed-manifest contract
    from vidrd_io.video import probe

    rows = []
    for v, video in enumerate(videos):
        info = probe(video)
        for c in range(int(info.duration // CLIP_SECONDS)):
            rows.append({"sample_id": f"v{v}-c{c}", "kind": "video_clip", "source_path": str(video),
                         "start_time": c * CLIP_SECONDS, "end_time": (c + 1) * CLIP_SECONDS, "fps": info.fps,
                         "num_frames": int(CLIP_SECONDS * info.fps), "width": info.width, "height": info.height,
                         "caption": f"clip {c} of video {v}", "source": f"video{v}", "source_weight": 1.0,
                         "split": "train"})
    return write_manifest(folder / "clips", rows, folder)


def reader_row(manifest: Path, open_videos: int, clips: int, resolution: int, frames: int) -> dict:
    """Returns seconds per clip of the reader alone over `clips` clips in training order (one process)."""
    from vidrd_model.data import IMAGE, VIDEO, BatchPlan, ManifestClips, kind_pools, read_rows

    rows, _ = read_rows([str(manifest)])
    dataset = ManifestClips(rows, resolution, frames, open_videos=open_videos)
    keys = iter(BatchPlan(kind_pools(rows), {VIDEO: 1, IMAGE: 1}, 0.0, seed=0))
    started = time.perf_counter()
    for _ in range(clips):
        dataset[next(keys)[0]]
    per_clip = (time.perf_counter() - started) / clips
    return {"measure": f"clip read, {'seek (LRU of open readers)' if open_videos else 'reopen per clip'}",
            "workers": 0, "per step or clip ms": f"{1000 * per_clip:.1f}", "data wait": "",
            "samples/s": f"{1 / per_clip:.1f}", "opens": dataset.videos.opened, "setup s": ""}


def open_row(videos: list[Path]) -> dict:
    """Returns the mean time to open a video for reading (what each clip read pays without an open reader)."""
    from vidrd_io.video import open_video

    started = time.perf_counter()
    for video in videos:
        open_video(video)
    per_open = (time.perf_counter() - started) / len(videos)
    return {"measure": f"open a video ({len(videos)} videos, mean)", "workers": 0,
            "per step or clip ms": f"{1000 * per_open:.1f}", "data wait": "", "samples/s": "", "opens": len(videos),
            "setup s": ""}


def training_row(sd: str, manifest: Path, run: Path, workers: int, steps: int, warmup: int, resolution: int,
                 frames: int, batch: int, latents: Path | None, setup_s: float = 0.0) -> dict:
    """Trains `warmup + steps` steps; returns the step time and data-wait share over the last `steps`."""
    from accelerate.state import AcceleratorState, GradientState

    from vidrd_model.train import train
    from vidrd_model.train_config import TrainConfig

    config = TrainConfig(pretrained_model=sd, manifests=[str(manifest)], output_dir=str(run), resolution=resolution,
                         num_frames=frames, batch_size=batch, image_ratio=0.0, num_workers=workers,
                         max_steps=warmup + steps, checkpoint_every=warmup + steps, log_every=warmup + steps,
                         progress=False, seed=0, latents=str(latents) if latents else None)
    train(config)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    with open(run / "log.csv", newline="") as f:
        logged = list(csv.DictReader(f))[warmup:]
    step_s = [batch / float(r["samples_per_s"]) for r in logged]
    wait_s = [t * float(r["data_wait"]) for t, r in zip(step_s, logged)]
    return {"measure": f"train step, {'latent cache' if latents else 'pixels (decode + VAE + text encoder)'}",
            "workers": workers, "per step or clip ms": f"{1000 * sum(step_s) / len(logged):.0f}",
            "data wait": f"{100 * sum(wait_s) / sum(step_s):.1f} %",
            "samples/s": f"{batch * len(logged) / sum(step_s):.2f}", "opens": "",
            "setup s": f"{setup_s:.0f}" if latents else ""}


def rows(workers: int = 2, steps: int = 20, warmup: int = 3, resolution: int = 64, frames: int = 8, batch: int = 2,
         seconds: float = 60.0, num_videos: int = 2, pretrained_model: str | None = None, reader_clips: int = 24,
         folder: str | None = None) -> list[dict]:
    """Returns the benchmark's table rows: clip reads (reopen vs seek), then training from pixels and from latents."""
    from vidrd_model.latents import build_cache
    from vidrd_model.train_config import CacheConfig

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        (tmp / "media").mkdir()
        videos = [long_video(tmp / "media" / f"long{i}.mp4", seconds) for i in range(num_videos)]
        real = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "testvideo.mp4"
        if real.is_file():
            os.symlink(real, tmp / "media" / "testvideo.mp4")
            videos.append(tmp / "media" / "testvideo.mp4")
        manifest = clip_manifest(tmp, videos)
        if pretrained_model is None:
            from vidrd_demo.models.stable_diffusion import write_tiny_stable_diffusion

            pretrained_model = str(write_tiny_stable_diffusion(tmp / "sd"))
        out = [open_row(videos)] + [reader_row(manifest, n, reader_clips, resolution, frames) for n in (0, 4)]
        out.append(training_row(pretrained_model, manifest, tmp / "pixels", workers, steps, warmup, resolution,
                                frames, batch, None))
        started = time.perf_counter()
        cache = build_cache(CacheConfig(manifests=[str(manifest)], out=str(tmp / "latents"),
                                        pretrained_model=pretrained_model, resolution=resolution, num_frames=frames,
                                        num_workers=workers))
        setup = time.perf_counter() - started
        from accelerate.state import PartialState

        PartialState._reset_state()
        out.append(training_row(pretrained_model, manifest, tmp / "cached", workers, steps, warmup, resolution,
                                frames, batch, cache, setup))
    return out


def main(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_data_wait")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each generated video")
    parser.add_argument("--videos", type=int, default=2, help="generated long videos")
    parser.add_argument("--pretrained-model", default=None, help="SD folder (default: the demo's tiny SD)")
    args = parser.parse_args(argv)
    return rows(args.workers, args.steps, 3, args.resolution, args.frames, args.batch, args.seconds, args.videos,
                args.pretrained_model)
