"""Long-video sampling on a tiny model: time and peak RSS for K = 1, 2, 4, 8 clips, and U-Net work per output frame
against diffusers' FreeNoise (AnimateDiff) sliding-window sampling.

Targets (issue 8): time(K) ≤ 1.05·K·time(1) and peak RSS at K = 8 within 10 % of K = 1. The machine is shared, so
times are the minimum of `--repeats` runs, K = 1, 2, 4, 8 interleaved in one process, as wall time and as CPU time
(one thread: CPU time does not count the time other processes hold the core). Peak RSS is per process: one process
per K, one run each. Every process loads the model and warms up with one short call first. Clips stream to a callback
that converts them to uint8 and drops them, as a streaming writer would.

The comparison samples the same number of output frames with both methods from the same tiny SD weights: VidRD's
video U-Net (N-frame clips, M shared) and AnimateDiff's UNetMotionModel with a tiny random motion adapter, FreeNoise
windows of N frames every N−M (and FreeNoise at twice the length). Counts are per output frame and denoising step,
for one CFG branch: U-Net frames through conv_in (every spatial layer), temporal-attention frames through one
temporal-attention layer (each window counted).
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

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class FrameCounter:
    """Counts frames through a U-Net's conv_in (spatial) and through one temporal-attention layer (temporal)."""

    def __init__(self, conv_in, temporal_attention, batch: int):
        self.spatial = self.temporal = 0
        self.batch = batch
        conv_in.register_forward_pre_hook(self._on_conv_in)
        temporal_attention.register_forward_pre_hook(self._on_temporal, with_kwargs=True)

    def _on_conv_in(self, module, args):
        self.spatial += args[0].shape[0] // self.batch  # (b f) rows; one CFG branch

    def _on_temporal(self, module, args, kwargs):
        self.temporal += (args[0] if args else kwargs["hidden_states"]).shape[1]  # (b h w, frames, c)

    def reset(self):
        self.spatial = self.temporal = 0


def _timed(call, *args) -> tuple[float, float]:
    """Returns (wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def _child_vidrd(args) -> dict:
    import numpy as np
    import torch

    from vidrd_model.pipeline import VidRDPipeline

    torch.set_num_threads(args.threads)
    pipe = VidRDPipeline.from_stable_diffusion(args.sd)
    pipe.set_progress_bar_config(disable=True)
    block = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    counter = FrameCounter(pipe.unet.conv_in, block.temp_attn, batch=2)
    written = []

    def stream(clip_index, frames):  # what a streaming writer keeps: nothing
        written.append(int((frames * 255).round().astype(np.uint8).shape[1]))

    def call(num_clips, steps):
        written.clear()
        counter.reset()
        pipe("a red ball rolling on the grass", num_frames=args.frames, num_clips=num_clips,
             overlap_frames=args.overlap, overlap=args.mode, num_inference_steps=steps, height=args.size,
             width=args.size, generator=torch.Generator().manual_seed(0), callback_on_clip_end=stream)

    call(1, 1)  # warm-up
    if args.child == "vidrd-scaling":
        times = {k: [] for k in _ks(args)}
        for _ in range(args.repeats):
            for k in times:
                times[k].append(_timed(call, k, args.steps))
        return {str(k): {"wall": min(w for w, _ in t), "cpu": min(c for _, c in t)} for k, t in times.items()}
    runs = [_timed(call, args.clips, args.steps) for _ in range(args.repeats)]
    return {"wall": min(w for w, _ in runs), "cpu": min(c for _, c in runs), "peak_rss_mib": _peak_rss_mib(),
            "output_frames": sum(written), "spatial": counter.spatial, "temporal": counter.temporal}


def _child_freenoise(args) -> dict:
    import torch
    from diffusers import (AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel,
                           UNetMotionModel)
    from diffusers.models.attention import FreeNoiseTransformerBlock
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.set_num_threads(args.threads)
    unet_2d = UNet2DConditionModel.from_pretrained(args.sd, subfolder="unet")
    adapter = MotionAdapter(
        block_out_channels=unet_2d.config.block_out_channels, motion_layers_per_block=unet_2d.config.layers_per_block,
        motion_mid_block_layers_per_block=1, motion_num_attention_heads=2, motion_norm_num_groups=32,
        motion_max_seq_length=32, use_motion_mid_block=True,
    )
    pipe = AnimateDiffPipeline(
        vae=AutoencoderKL.from_pretrained(args.sd, subfolder="vae"),
        text_encoder=CLIPTextModel.from_pretrained(args.sd, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(args.sd, subfolder="tokenizer"),
        unet=UNetMotionModel.from_unet2d(unet_2d, adapter), motion_adapter=adapter,
        scheduler=DDIMScheduler.from_pretrained(args.sd, subfolder="scheduler"),
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_free_noise(context_length=args.frames, context_stride=args.frames - args.overlap)
    block = next(m for m in pipe.unet.modules() if isinstance(m, FreeNoiseTransformerBlock))
    counter = FrameCounter(pipe.unet.conv_in, block.attn1, batch=2)

    def call(num_frames, steps):
        counter.reset()
        return pipe("a red ball rolling on the grass", num_frames=num_frames, num_inference_steps=steps,
                    height=args.size, width=args.size, generator=torch.Generator().manual_seed(0),
                    output_type="np").frames

    call(args.frames, 1)  # warm-up
    runs = [_timed(call, args.total_frames, args.steps) for _ in range(args.repeats)]
    return {"wall": min(w for w, _ in runs), "cpu": min(c for _, c in runs), "peak_rss_mib": _peak_rss_mib(),
            "output_frames": args.total_frames, "spatial": counter.spatial, "temporal": counter.temporal}


def _measure(method: str, sd: Path, args, **options) -> dict:
    """Runs one measurement in a fresh process and returns its JSON."""
    cmd = [sys.executable, "-m", "benchmarks.bench_sampler", "--child", method, "--sd", str(sd)]
    settings = {"frames": args.frames, "overlap": args.overlap, "steps": args.steps, "size": args.size,
                "repeats": args.repeats, "threads": args.threads, "ks": args.ks, **options}
    for key, value in settings.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=["vidrd", "vidrd-scaling", "freenoise"])
    parser.add_argument("--sd", help="SD folder (default: the demo's tiny SD, written to a temporary folder)")
    parser.add_argument("--frames", type=int, default=8, help="N: frames per clip / FreeNoise window")
    parser.add_argument("--overlap", type=int, default=4, help="M: frames shared by consecutive clips / windows")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="frame height and width in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--mode", default="keep")
    parser.add_argument("--total-frames", type=int, default=32, help="output frames in the FreeNoise comparison")
    parser.add_argument("--ks", default="1,2,4,8")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps((_child_freenoise if args.child == "freenoise" else _child_vidrd)(args)))
        return []

    with tempfile.TemporaryDirectory() as tmp:
        sd = Path(args.sd) if args.sd else None
        if sd is None:
            from vidrd_demo.models.stable_diffusion import write_tiny_stable_diffusion

            sd = write_tiny_stable_diffusion(Path(tmp) / "sd")
        rows = _scaling_rows(sd, args)
        rows += _comparison_rows(sd, args)
    return rows


def _ks(args) -> list[int]:
    return [int(k) for k in args.ks.split(",")]


def _row(name: str, run: dict, steps: int, wall_ratio: str = "", cpu_ratio: str = "", rss_ratio: str = "") -> dict:
    per_frame_step = run["output_frames"] * steps
    return {
        "run": name,
        "frames": run["output_frames"],
        "wall s": f"{run['wall']:.2f}",
        "CPU s": f"{run['cpu']:.2f}",
        "ms CPU/frame": f"{1000 * run['cpu'] / run['output_frames']:.0f}",
        "wall(K)/(K·wall(1))": wall_ratio,
        "CPU(K)/(K·CPU(1))": cpu_ratio,
        "peak RSS MiB": f"{run['peak_rss_mib']:.0f}",
        "RSS(K)/RSS(1)": rss_ratio,
        "U-Net frames/frame·step": f"{run['spatial'] / per_frame_step:.2f}",
        "temporal-attn frames/frame·step": f"{run['temporal'] / per_frame_step:.2f}",
    }


def _scaling_rows(sd: Path, args) -> list[dict]:
    times = _measure("vidrd-scaling", sd, args)
    runs = {k: _measure("vidrd", sd, args, clips=k, repeats=1) for k in _ks(args)}  # peak RSS, one process each
    base, base_rss = times["1"], runs[1]["peak_rss_mib"]
    rows = []
    for k, run in runs.items():
        t = times[str(k)]
        rows.append(_row(
            f"VidRD keep, K={k}", {**run, **t}, args.steps,
            wall_ratio=f"{t['wall'] / (k * base['wall']):.3f}", cpu_ratio=f"{t['cpu'] / (k * base['cpu']):.3f}",
            rss_ratio=f"{run['peak_rss_mib'] / base_rss:.3f} (+{run['peak_rss_mib'] - base_rss:.0f} MiB)",
        ))
    return rows


def _comparison_rows(sd: Path, args) -> list[dict]:
    n, m, total = args.frames, args.overlap, args.total_frames
    clips_keep, clips_drop = total // n, 1 + (total - n) // (n - m)
    repeats = max(1, args.repeats // 2)
    return [
        _row(f"VidRD keep, K={clips_keep}",
             _measure("vidrd", sd, args, clips=clips_keep, mode="keep", repeats=repeats), args.steps),
        _row(f"VidRD drop, K={clips_drop}",
             _measure("vidrd", sd, args, clips=clips_drop, mode="drop", repeats=repeats), args.steps),
        _row(f"FreeNoise, window {n} stride {n - m}",
             _measure("freenoise", sd, args, total_frames=total, repeats=repeats), args.steps),
        _row(f"FreeNoise, window {n} stride {n - m}",  # all frames go through the U-Net at once: memory grows
             _measure("freenoise", sd, args, total_frames=2 * total, repeats=repeats), args.steps),
    ]


if __name__ == "__main__":
    if "--child" in sys.argv:
        main(sys.argv[1:])
    else:
        from benchmarks.run import print_table

        print_table("sampler: K clips, and U-Net work per output frame vs FreeNoise", main(sys.argv[1:]))
