"""Long-video samplers on CPU with the tiny demo model: seconds per output frame and peak memory vs video length.

Each (mode, length) runs in a fresh process (one torch thread) so that its peak resident memory is its own:
"peak RSS" is the process's maximum, "Δ RSS" that minus the maximum after loading the model and sampling one
short warm-up video in the same mode. The tiny model's latents are small, so Δ RSS mostly shows whether memory
grows with length at all (FreeNoise and Gen-L-Video hold every frame's latents; FIFO, VidRD and independent clips
hold one queue or clip). Timings are CPU ones on a shared machine: a GPU's ratios between modes will differ.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

MODES = ("vidrd", "independent", "freenoise", "fifo", "gen-l-video")


def _run(model_dir: str, mode: str, length: int, args: dict, queue) -> None:
    import torch

    from vidrd_model.eval.longvideo import LongVideoSettings, sample_video
    from vidrd_model.pipeline import VidRDPipeline

    torch.set_num_threads(1)
    pipe = VidRDPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    settings = LongVideoSettings(clip_frames=args["frames"], steps=args["steps"], height=args["size"],
                                 width=args["size"])
    sample_video(pipe, mode, "a red ball", args["frames"], settings, 0)  # warm-up, and the baseline's peak
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    frames, _ = sample_video(pipe, mode, "a red ball", length, settings, 0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"mode": mode, "frames": len(frames), "s/frame": f"{seconds / len(frames):.4f}",
               "peak RSS MiB": f"{peak / 1024:.0f}", "Δ RSS MiB": f"{(peak - baseline) / 1024:.1f}"})


def main(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_long_video")
    parser.add_argument("--lengths", default="16,32,64")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--frames", type=int, default=4, help="N: frames per clip / window")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    args = parser.parse_args(argv)
    from vidrd_demo.models.stable_diffusion import write_tiny_stable_diffusion
    from vidrd_model.pipeline import VidRDPipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_stable_diffusion(Path(tmp) / "sd")
        pipe = VidRDPipeline.from_stable_diffusion(str(Path(tmp) / "sd"))
        pipe.save_pretrained(Path(tmp) / "model")
        context = multiprocessing.get_context("spawn")
        for mode in args.modes.split(","):
            for length in (int(x) for x in args.lengths.split(",")):
                queue = context.Queue()
                process = context.Process(target=_run, args=(str(Path(tmp) / "model"), mode, length, vars(args),
                                                             queue))
                process.start()
                rows.append(queue.get())
                process.join()
    return rows
