"""The GPU benchmark of issue 18 in one table: U-Net forward (eager, compiled) against diffusers' 2-D U-Net, train
steps by batch with and without gradient checkpointing, sampler seconds per clip and its scaling in clips, temporal
VAE decode against frame by frame, and the data-wait share of training from pixels and from the latent cache.

    python benchmarks/run.py gpu                 # full-size model (random weights), CUDA, bf16 autocast
    python benchmarks/run.py gpu --tiny          # the demo's tiny shapes: a CPU smoke run of the same code

Weights are random: speed and memory do not depend on their values. The full-size U-Net is SD 2.1-base's with
VidRD's temporal layers; the train step trains the paper's set (`params.TRAINABLE_MODULES["paper"]`) with AdamW,
like `vidrd-train`. "% of peak" divides the step's FLOPs (counted once by torch's FlopCounterMode) by its time and
`--peak-tflops` (default 989, an H100/H200 SXM's dense bf16; no figure on CPU). Each number is the median of
`--repeats` timed runs after warm-up, measured in this one run; nothing here is asserted in tests.
How to run it on the `device` machine (it lacks diffusers, open_clip, decord, PyAV): README, "The GPU benchmark".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.bench_unet import SD21_BASE_UNET, TINY  # the shapes bench_unet measures on CPU

SD21_BASE_VAE = {
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "sample_size": 768,
}
TINY_VAE = {"block_out_channels": [32, 64], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1, "norm_num_groups": 32}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(call, device, repeats: int, warmup: int = 1) -> float:
    """Returns the median seconds of `call()` over `repeats` runs after `warmup` runs (device synchronised)."""
    for _ in range(warmup):
        call()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(call) -> float:
    """Returns the FLOPs torch counts for one `call()`."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return float(counter.get_total_flops())


NOT_KERNELS = frozenset({  # views and bare allocations: dispatched, but they launch nothing
    "view", "_unsafe_view", "t", "permute", "transpose", "squeeze", "unsqueeze", "expand", "slice", "select",
    "detach", "alias", "as_strided", "split", "split_with_sizes", "unbind", "unflatten", "_reshape_alias",
    "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})


def count_kernels(call) -> int:
    """Returns how many aten ops other than views and allocations one `call()` dispatches: about the kernels it
    launches.

    Where the forward is launch-bound (small batches on a GPU), time follows this count, not the FLOPs. It does not
    depend on the device, except that CUDA rows run under bf16 autocast, whose casts add to it.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ not in NOT_KERNELS:
                Counter.count += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        call()
    return Counter.count


def top_kernels(call, device, k: int) -> list[tuple[str, float, int]]:
    """Returns the `k` ops taking the most self time in one profiled `call()`: (name, ms, calls), device time on
    CUDA (where the GPU's time goes), CPU time elsewhere."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    call()  # warm-up outside the profile
    _sync(device)
    with profile(activities=activities) as prof:
        call()
        _sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    return [(e.key, getattr(e, key) / 1e3, e.count) for e in events[:k]]


def peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def build_unet(tiny: bool, device, dtype=None):
    """Returns a VideoUNet of SD 2.1-base's shape (or the tiny test shape) with random weights on `device`."""
    import torch

    from vidrd_model.unet import VideoUNet

    config = dict(TINY) if tiny else {}
    with torch.device("meta"):
        unet = VideoUNet(**config)
    unet = unet.to_empty(device=device)
    _random_(unet)
    return unet.to(dtype) if dtype is not None else unet


def build_unet_2d(tiny: bool, device):
    """Returns diffusers' UNet2DConditionModel of the same spatial shape (no temporal layers), random weights."""
    import torch
    from diffusers import UNet2DConditionModel

    config = {**SD21_BASE_UNET} if not tiny else {
        "block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1, "cross_attention_dim": 32,
        "attention_head_dim": [2, 4]}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    unet = unet.to_empty(device=device)
    _random_(unet)
    return unet


def _random_(model) -> None:
    import torch

    with torch.no_grad():  # uniform noise: faster than the default init at 1 B parameters, same cost per step
        for param in model.parameters():
            param.uniform_(-0.03, 0.03)
        for buffer in model.buffers():
            if buffer.is_floating_point() and not torch.isfinite(buffer).all():
                buffer.zero_()


def unet_rows(args, device) -> list[dict]:
    """U-Net forward, CFG batch 2 × F frames: VidRD eager, VidRD compiled, and the 2-D U-Net on the same 2F frames."""
    import torch

    unet = build_unet(args.tiny, device).eval()
    c = unet.config
    size = args.latent
    sample = torch.randn(2, 4, args.frames, size, size, device=device)
    text = torch.randn(2, 77, c.cross_attention_dim, device=device)
    t = torch.tensor([500, 500], device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def forward(model):
        def call():
            with torch.no_grad(), autocast:
                model(sample, t, encoder_hidden_states=text)
        return call

    rows = []
    eager = timed(forward(unet), device, args.repeats)
    flops = count_flops(forward(unet))
    kernels = count_kernels(forward(unet))
    rows.append(_row("unet", f"VidRD U-Net fwd, CFG 2 × {args.frames} frames, eager", eager, flops=flops, args=args,
                     kernels=kernels))
    unet2d = build_unet_2d(args.tiny, device).eval()
    sample2d = sample.transpose(1, 2).reshape(-1, 4, size, size)
    text2d = text.repeat_interleave(args.frames, dim=0)
    t2d = t.repeat_interleave(args.frames)

    def forward2d():
        with torch.no_grad(), autocast:
            unet2d(sample2d, t2d, encoder_hidden_states=text2d)

    flat = timed(forward2d, device, args.repeats)
    flat_kernels = count_kernels(forward2d)
    rows.append(_row("unet", f"diffusers 2-D U-Net fwd, {2 * args.frames} frames", flat, flops=count_flops(forward2d),
                     args=args, kernels=flat_kernels))
    rows[0]["note"] = (f"{eager / flat:.2f}× the 2-D U-Net (target ≤ 1.5×); "
                       f"{kernels / flat_kernels:.2f}× its kernels, {flops / count_flops(forward2d):.2f}× its FLOPs")
    if args.profile:
        rows += [_row("profile", f"U-Net: {name} × {calls}", ms / 1e3, args=args)
                 for name, ms, calls in top_kernels(forward(unet), device, args.profile)]
    if device.type == "cuda":  # CUDA graphs of the eager kernels: what `vidrd-sample --cuda-graphs` runs
        graphed = torch.compile(unet, backend="cudagraphs")
        start = time.perf_counter()
        forward(graphed)()
        _sync(device)
        capture_s = time.perf_counter() - start
        replay = timed(forward(graphed), device, args.repeats, warmup=2)
        rows.append(_row("unet", "VidRD U-Net fwd, CUDA graphs of the eager kernels", replay, flops=flops, args=args,
                         note=f"capture {capture_s:.0f} s; {replay / flat:.2f}× the 2-D U-Net eager"))
    if args.compile:
        unet = build_unet(args.tiny, device).eval()
        compiled = torch.compile(unet, mode=args.compile_mode)
        start = time.perf_counter()
        forward(compiled)()
        _sync(device)
        compile_s = time.perf_counter() - start
        fast = timed(forward(compiled), device, args.repeats)
        rows.append(_row("unet", f"VidRD U-Net fwd, torch.compile({args.compile_mode})", fast, flops=flops,
                         args=args, note=f"compile {compile_s:.0f} s; {fast / flat:.2f}× the 2-D U-Net eager"))
    return rows


def train_rows(args, device) -> list[dict]:
    """One train step (bf16 autocast, AdamW on the paper's trainable set) by batch, with and without checkpointing."""
    import torch
    import torch.nn.functional as F

    from vidrd_model.params import freeze_for_training

    rows = []
    for checkpointing in (False, True):
        unet = build_unet(args.tiny, device).train()
        if checkpointing:
            unet.enable_gradient_checkpointing()
        params = freeze_for_training(unet, "paper")
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
        trainable = sum(p.numel() for p in params)
        for batch in args.batches:
            size = args.latent
            latents = torch.randn(batch, 4, args.frames, size, size, device=device)
            text = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device)
            t = torch.randint(0, 1000, (batch,), device=device)

            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    prediction = unet(latents, t, encoder_hidden_states=text).sample
                F.mse_loss(prediction.float(), latents).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            reset_peak(device)
            try:
                seconds = timed(step, device, args.repeats, warmup=2)
            except torch.OutOfMemoryError:
                rows.append({"section": "train", "measure": f"train step, batch {batch}, "
                             f"{'checkpointing' if checkpointing else 'no checkpointing'}", "ms": "OOM",
                             "kernels": "", "peak GiB": "", "% bf16 peak": "", "note": ""})
                optimizer.zero_grad(set_to_none=True)
                continue
            flops = count_flops(step)
            rows.append(_row("train", f"train step, batch {batch}, "
                             f"{'checkpointing' if checkpointing else 'no checkpointing'}", seconds, flops=flops,
                             args=args, peak=peak_gib(device),
                             note=f"{batch * args.frames / seconds:.1f} frames/s; {trainable / 1e6:.1f} M trained"))
    return rows


def pipeline(args, device, folder: Path):
    """Returns a VidRDPipeline of full-size (or tiny) random U-Net and VAE, with the demo's tiny text encoder
    (prompt embeddings are passed in: the text encoder's cost is once per prompt)."""
    import torch
    from diffusers import DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from vidrd_demo.models.stable_diffusion import write_tiny_stable_diffusion
    from vidrd_model.pipeline import VidRDPipeline
    from vidrd_model.vae import TemporalAutoencoderKL

    sd = write_tiny_stable_diffusion(folder / "sd")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device("meta"):
        vae = TemporalAutoencoderKL(**(TINY_VAE if args.tiny else SD21_BASE_VAE))
    vae = vae.to_empty(device=device)
    _random_(vae)
    pipe = VidRDPipeline(CLIPTextModel.from_pretrained(sd / "text_encoder"), CLIPTokenizer.from_pretrained(sd / "tokenizer"),
                         build_unet(args.tiny, device), vae, DDIMScheduler.from_pretrained(sd / "scheduler"))
    pipe.to(device, dtype)
    pipe.unet.eval()  # as from_pretrained returns them: built here, they would sample with dropout on
    pipe.vae.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sampler_rows(args, device, pipe) -> list[dict]:
    """Seconds per clip (CFG, DDIM `--steps`) for 1 and K clips, and time(K)/(K·time(1)); VAE decode temporal vs
    frame by frame."""
    import torch

    dim = pipe.unet.config.cross_attention_dim
    embeds = torch.randn(1, 77, dim, device=device, dtype=pipe.unet.dtype)
    side = args.latent * pipe.vae_scale_factor

    def sample(clips):
        def call():
            pipe(prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), num_frames=args.frames,
                 num_clips=clips, num_inference_steps=args.steps, height=side, width=side, output_type="latent",
                 generator=torch.Generator(device).manual_seed(0))
        return call

    one = timed(sample(1), device, max(1, args.repeats // 2))
    many = timed(sample(args.clips), device, 1)
    rows = [_row("sampler", f"1 clip of {args.frames} frames, {args.steps} DDIM steps + CFG", one, args=args,
                 note="target ≤ 1.5 s at 50 steps"),
            _row("sampler", f"{args.clips} clips", many, args=args,
                 note=f"time(K)/(K·time(1)) = {many / (args.clips * one):.2f}")]
    if device.type == "cuda":
        pipe.enable_cuda_graphs()
        graphed = timed(sample(1), device, max(1, args.repeats // 2))  # the warm-up call captures
        rows.append(_row("sampler", "1 clip, --cuda-graphs", graphed, args=args,
                         note=f"{one / graphed:.2f}× faster than eager"))
    latents = torch.randn(1, 4, args.frames, args.latent, args.latent, device=device, dtype=pipe.vae.dtype)
    with torch.no_grad():
        temporal = timed(lambda: pipe.decode_latents(latents), device, args.repeats)
        per_frame = timed(lambda: pipe.decode_latents(latents, per_frame=True), device, args.repeats)
        kernels = count_kernels(lambda: pipe.decode_latents(latents))
        per_frame_kernels = count_kernels(lambda: pipe.decode_latents(latents, per_frame=True))
        rows += [_row("vae", f"temporal VAE decode, {args.frames} frames", temporal, args=args, kernels=kernels,
                      note=f"{temporal / per_frame:.2f}× frame by frame (target ≤ 1.5×)"),
                 _row("vae", f"frame-by-frame decode, {args.frames} frames", per_frame, args=args,
                      kernels=per_frame_kernels)]
        if args.profile:
            rows += [_row("profile", f"temporal VAE decode: {name} × {calls}", ms / 1e3, args=args)
                     for name, ms, calls in top_kernels(lambda: pipe.decode_latents(latents), device, args.profile)]
    return rows


def data_rows(args) -> list[dict]:
    """The data-wait rows of benchmarks/bench_data_wait.py (16 loader workers on the device)."""
    from benchmarks import bench_data_wait

    out = []
    for row in bench_data_wait.rows(workers=args.workers, steps=args.data_steps, resolution=args.data_resolution,
                                    frames=args.frames, batch=args.data_batch, seconds=args.data_seconds,
                                    pretrained_model=args.data_model):
        out.append({"section": "data", "measure": str(next(iter(row.values()))), "ms": "", "kernels": "",
                    "peak GiB": "", "% bf16 peak": "",
                    "note": "; ".join(f"{k} {v}" for k, v in list(row.items())[1:] if v != "")})
    return out


def _row(section: str, measure: str, seconds: float, *, args, flops: float | None = None, peak: float | None = None,
         kernels: int | None = None, note: str = "") -> dict:
    share = ""
    if flops and args.peak_tflops:
        share = f"{100 * flops / seconds / (args.peak_tflops * 1e12):.1f} %"
    return {"section": section, "measure": measure, "ms": f"{seconds * 1e3:.1f}",
            "kernels": "" if kernels is None else str(kernels), "peak GiB": "" if peak is None else f"{peak:.1f}",
            "% bf16 peak": share, "note": note}


def main(argv: list[str]) -> list[dict]:
    import torch

    parser = argparse.ArgumentParser(prog="bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the demo's tiny shapes (a CPU smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sections", default="unet,train,sampler,data")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--latent", type=int, default=32, help="latent side (32: 256² frames)")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument("--profile", type=int, default=8, metavar="K",
                        help="also list the K ops taking the most time in one U-Net forward and one temporal decode "
                             "(device time on CUDA); 0: off")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default 989 on CUDA)")
    parser.add_argument("--workers", type=int, default=16, help="loader workers of the data-wait run")
    parser.add_argument("--data-steps", type=int, default=30)
    parser.add_argument("--data-batch", type=int, default=8)
    parser.add_argument("--data-resolution", type=int, default=256)
    parser.add_argument("--data-seconds", type=float, default=120.0)
    parser.add_argument("--data-model", default=None, help="SD folder for the data-wait run (default: tiny SD)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.peak_tflops is None and device.type == "cuda":
        args.peak_tflops = 989.0
    if args.tiny:
        args.latent, args.steps, args.repeats = min(args.latent, 8), min(args.steps, 5), min(args.repeats, 2)
        args.batches, args.data_resolution, args.data_seconds = "1,2", 64, 20.0
        args.workers, args.data_steps, args.data_batch = min(args.workers, 2), min(args.data_steps, 6), 2
    args.batches = [int(b) for b in args.batches.split(",")]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    sections = set(args.sections.split(","))
    rows: list[dict] = []
    if "unet" in sections:
        rows += unet_rows(args, device)
    if "train" in sections:
        rows += train_rows(args, device)
    if "sampler" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            rows += sampler_rows(args, device, pipeline(args, device, Path(tmp)))
    if "data" in sections:
        rows += data_rows(args)
    return rows

