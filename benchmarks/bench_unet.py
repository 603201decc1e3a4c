"""Times the VidRD U-Net on CPU and prints a table: tiny fwd+bwd, and the full model's CFG forward vs. SD's 2-D U-Net.

    python benchmarks/bench_unet.py [--repeats 3] [--threads 2]

Each case runs in its own process so that its peak RSS is its own. Weights are random (values do not change CPU
time). Peak RSS includes the imports (torch's CUDA wheel alone maps ~0.5 GiB), so the table also gives the peak
above the RSS right after imports, and process CPU time / threads, which a busy machine disturbs less than wall
time. The official code (diffusers 0.14, same machine kind) measured 23.9 s / 5.78 GiB for the full forward and
16.7 s / 4.40 GiB for SD's 2-D U-Net on the same 16 frames.
"""

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = {"full": (23.9, 5.78), "full_2d": (16.7, 4.40)}
SD21_BASE_UNET = {
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "cross_attention_dim": 1024,
    "attention_head_dim": [5, 10, 20, 20],
    "use_linear_projection": True,
    "sample_size": 32,
}
TINY = {
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "num_attention_heads": [2, 4],
}
CASES = {
    "tiny": "tiny VidRD U-Net, fwd+bwd, 1×8 frames 32×32 latents",
    "tiny_ckpt": "same, gradient checkpointing per block",
    "full": "VidRD U-Net (1.18 B), fwd, CFG batch 2 × 8 frames, 32×32 latents (256²)",
    "full_2d": "diffusers UNet2DConditionModel (SD2.1-base), fwd, 16 frames as a batch",
}


def random_init_(model):
    """Fills every parameter with small uniform noise, in place (faster than the default init at 1 B params)."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.03, 0.03)
    return model


def build(case: str):
    import torch
    from diffusers import UNet2DConditionModel

    from vidrd_model.unet import VideoUNet

    if case.startswith("tiny"):
        model = VideoUNet(**TINY).train()
        if case == "tiny_ckpt":
            model.enable_gradient_checkpointing()
        return model, (torch.randn(1, 4, 8, 32, 32), torch.tensor([500]), torch.randn(1, 77, 32))
    with torch.device("meta"):
        model = VideoUNet() if case == "full" else UNet2DConditionModel(**SD21_BASE_UNET)
    model = random_init_(model.to_empty(device="cpu")).eval()
    text = torch.randn(2, 77, 1024)
    if case == "full":
        return model, (torch.randn(2, 4, 8, 32, 32), torch.tensor([500, 500]), text)
    return model, (torch.randn(16, 4, 32, 32), torch.tensor([500] * 16), text.repeat_interleave(8, dim=0))


def run_case(case: str, repeats: int, threads: int) -> dict:
    import torch

    for module in ("diffusers.models.unets.unet_2d_condition", "vidrd_model.unet"):  # counted in the baseline RSS
        importlib.import_module(module)

    imports_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, (sample, timestep, text) = build(case)

    def step():
        if case.startswith("tiny"):
            model.zero_grad(set_to_none=True)
            model(sample, timestep, text).sample.square().mean().backward()
        else:
            with torch.no_grad():
                model(sample, timestep, text)

    step()  # warm-up: allocator, oneDNN primitives
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"case": case, "median_s": statistics.median(times), "min_s": min(times),
            "cpu_s": statistics.median(cpu_times), "peak_rss_gib": peak_gib, "imports_rss_gib": imports_gib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--worker", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_case(args.worker, args.repeats, args.threads)))
        return

    import torch

    print(f"torch {torch.__version__}, {args.threads} threads, float32, median of {args.repeats} after 1 warm-up\n")
    print("| case | wall s, median (min) | CPU s / threads | peak RSS GiB (above imports) | official code |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        command = [sys.executable, __file__, "--worker", case, "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout)
        official = OFFICIAL.get(case)
        reference = f"{official[0]} s / {official[1]} GiB" if official else "—"
        above = result["peak_rss_gib"] - result["imports_rss_gib"]
        print(f"| {CASES[case]} | {result['median_s']:.2f} ({result['min_s']:.2f}) "
              f"| {result['cpu_s'] / args.threads:.2f} | {result['peak_rss_gib']:.2f} ({above:.2f}) | {reference} |",
              flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
