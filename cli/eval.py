"""`vidrd-eval`: FVD, IS, CLIPSIM and cd-FVD of generated videos, the UCF-101 zero-shot protocol (our model or the
released checkpoint), and the release's conversion to a model folder. Argument parsing and printing only."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from cli._app import UsageProblem, run_app, typer_app
from rich.console import Console

from vidrd_model.eval.receipt import with_receipt

app = typer_app(
    "Evaluate generated videos: FVD (I3D), IS (C3D), CLIPSIM (CLIP), and the UCF-101 zero-shot protocol.")
out = Console(soft_wrap=True)


# ---------------------------------------------------------------------------------------------- shared options

GeneratedArg = typer.Argument(..., help="Generated videos: a folder (recursive) or a manifest directory.")
RealArg = typer.Argument(..., help="Real videos: a folder (recursive) or a manifest directory.")
I3dOpt = typer.Option(None, "--i3d", help="stylegan-v's i3d_torchscript.pt (FVD).")
C3dOpt = typer.Option(None, "--c3d", help="stylegan-v's c3d_ucf101.pt (IS).")
NumFramesOpt = typer.Option(16, "--num-frames", help="Frames per clip for FVD and CLIPSIM (IS: C3D's 16).")
ResolutionOpt = typer.Option(224, "--resolution", help="Short side resized to this, centre-cropped square (IS: 112).")
StrideOpt = typer.Option(1, "--stride", help="Take every stride-th frame of the generated videos (clips start at frame 0).")
RealStrideOpt = typer.Option("auto", "--real-stride", help="auto: each real video's stride is round(its fps / the generated clips' fps), e.g. 3 for 25 fps UCF-101 against 8 fps; or a number N: every N-th frame of every real video (FVD).")
CdFvdOpt = typer.Option(None, "--cd-fvd", help="Content-debiased FVD (Ge et al. 2024): a VideoMAE folder (transformers format, config.json + model.safetensors) whose features replace I3D's.")
OverwriteStatsOpt = typer.Option(False, "--overwrite-real-stats", help="Replace a --real-stats file that holds statistics of other videos or settings (refused otherwise).")
PadShortOpt = typer.Option(False, "--pad-short", help="Repeat the last frame of too-short videos instead of failing them.")
BatchOpt = typer.Option(8, "--batch-size", help="Videos per forward pass (and per cached chunk).")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda or cuda:N.")
SplitsOpt = typer.Option(10, "--is-splits", help="IS: mean ± std over this many splits (stylegan-v: 10).")
CacheOpt = typer.Option(None, "--cache", help="Cache features per chunk here: a rerun resumes and reuses them.")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")

# the UCF-101 protocol's sampler (generate.SamplerSettings): one 16-frame clip (no seams), the release's evaluator's
# guidance 10 and negative prompt "watermark"
UCF101Opt = typer.Option(..., "--ucf101", help="UCF-101 folder (UCF-101/ and ucfTrainTestlist/, or Class/ folders with classInd.txt, trainlist01.txt).")
NumVideosOpt = typer.Option(None, "-n", "--num-videos", help="Generated videos, split over the classes as train split 1 (default 10000; 2048 and 2020 are also used).")
ClassPromptsOpt = typer.Option(None, "--class-prompts", help="JSON object class → prompt (default: the 101 prompts vidrd ships).")
ClipsOpt = typer.Option(1, "--clips", help="Clips per video (K; 1: a single generation, no seams in the 16-frame windows FVD and IS see).")
FramesOpt = typer.Option(16, "--frames", help="Frames per clip (N).")
OverlapFramesOpt = typer.Option(4, "--overlap-frames", help="M: frames each clip shares with the previous one.")
OverlapOpt = typer.Option("keep", "--overlap", help="keep (motion runs back M frames after each seam) or drop (jumps back M frames at each seam); only with --clips > 1, flagged in the table.")
StepsOpt = typer.Option(50, "--steps", help="DDIM steps per clip.")
GuidanceOpt = typer.Option(10.0, "--guidance", help="Classifier-free guidance scale (the release's evaluator: 10).")
NoiseRecycleOpt = typer.Option(4.0, "--noise-recycle", help="β of Past-dependent Noise Sampling.")
DenoiseGuidanceOpt = typer.Option(0.4, "--denoise-guidance", help="g of Denoising with Staged Guidance.")
NegativeOpt = typer.Option("watermark", "--negative-prompt", help="Negative prompt (the release's evaluator: watermark; '' for none).")
FpsOpt = typer.Option(8.0, "--fps", help="Frame rate of the written videos.")
SeedOpt = typer.Option(42, "--seed", help="Seed of video 0; video i uses seed + i.")
HeightOpt = typer.Option(None, "--height", help="Frame height (default: the model's).")
WidthOpt = typer.Option(None, "--width", help="Frame width (default: the model's).")
DtypeOpt = typer.Option("auto", "--dtype", help="U-Net and text encoder precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")
DecodeChunkOpt = typer.Option(None, "--decode-chunk-size", help="Decode at most this many frames at a time.")
ReleaseDecodeOpt = typer.Option(False, "--release-decode", help="Decode frame by frame as the release does (its temporal VAE layers then never run).")
ModelOpt = typer.Option(None, "--model", help="Our VidRD model directory (VidRDPipeline.save_pretrained).")
ReleaseOpt = typer.Option(None, "--release", help="The released ModelT2V.pth (U-Net and text encoder), evaluated directly; with --base.")
BaseOpt = typer.Option(None, "--base", help="With --release: its SD 2.1-base folder or Hub id.")
ReleaseVaeOpt = typer.Option(None, "--release-vae", help="With --release: the released vae_finetuned folder (default: --base's SD VAE).")


@app.callback()
def _root_options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _device(device: str) -> str:
    """Returns the torch device to use; one that is not one, or that this machine lacks, is a UsageProblem."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageProblem(f"--device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageProblem(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
        count = torch.cuda.device_count()
        if kind.index is not None and kind.index >= count:
            raise UsageProblem(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to "
                               f"cuda:{count - 1}")
    elif kind.type != "cpu":
        raise UsageProblem(f"--device {device}: use auto, cpu, cuda or cuda:N")
    return device


def _real_stride(value: str) -> int | None:
    """Returns --real-stride as a number, or None for auto (match the generated clips' frame rate)."""
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise UsageProblem(f"--real-stride must be auto or a whole number ≥ 1, got {value!r}")
    return int(value)


def _settings(num_frames=16, resolution=224, stride=1, pad_short=False, batch_size=8, device="auto", is_splits=10,
              clip_convention="raw", real_stride="1", match_fps=None, extractor="i3d"):
    """Returns the EvalSettings of the options; --real-stride auto takes `match_fps` (the generated clips' rate)."""
    from vidrd_model.eval.evaluate import EvalSettings

    fixed_stride = _real_stride(real_stride)
    for name, value in (("--num-frames", num_frames), ("--resolution", resolution), ("--stride", stride),
                        ("--batch-size", batch_size), ("--is-splits", is_splits)):
        if value < 1:
            raise UsageProblem(f"{name} must be ≥ 1, got {value}")
    if clip_convention not in ("raw", "clipscore"):
        raise UsageProblem(f"--convention must be raw or clipscore, got {clip_convention!r}")
    return EvalSettings(num_frames=num_frames, resolution=resolution, stride=stride, real_stride=fixed_stride or 1,
                        match_fps=match_fps if fixed_stride is None else None, extractor=extractor,
                        pad_short=pad_short, batch_size=batch_size, device=_device(device), is_splits=is_splits,
                        clip_convention=clip_convention)


def _generated_fps(generated, stride: int) -> float:
    """Returns the generated clips' frame rate (the first readable video's fps / --stride), what auto matches."""
    from vidrd_model.eval.videos import first_fps, list_videos

    refs = generated if isinstance(generated, list) else list_videos(generated)
    fps = first_fps(refs)
    if fps is None:
        raise UsageProblem("--real-stride auto: no generated video could be read to learn its frame rate "
                           "(pass --real-stride N)")
    return fps / stride


def _generation_context(generated: Path) -> dict:
    """Returns the receipt context of a folder `vidrd-eval generate` wrote (its plan: seeds, sampler, model), or
    says that it is unknown."""
    from vidrd_model.eval.generate import read_plan

    plan = read_plan(generated) if generated.is_dir() else None
    if plan is None:
        return {"generation": "unknown (no plan.json beside the videos)"}
    return {"generation": {k: plan.get(k) for k in ("seed", "seeds", "sampler", "crf", "model")}}


def _check_model_source(model: Optional[Path], release: Optional[Path], base: Optional[str],
                        release_vae: Optional[Path], required: bool = True) -> None:
    """Fails unless exactly one of --model DIR and --release CKPT --base SD is given (or neither, when not
    `required`), each pointing at something that exists."""
    if model is not None and release is not None:
        raise UsageProblem("pass either --model DIR or --release CKPT --base SD, not both")
    if required and model is None and release is None:
        raise UsageProblem("pass --model DIR, or --release ModelT2V.pth --base SD_DIR_OR_HUB_ID")
    if (base is not None or release_vae is not None) and release is None:
        raise UsageProblem("--base and --release-vae go with --release CKPT")
    if release is not None:
        if base is None:
            raise UsageProblem("--release needs --base (its SD 2.1-base folder or Hub id)")
        if not release.is_file():
            raise UsageProblem(f"--release {release}: no such file")
        if base.startswith(("/", ".", "~")) and not Path(base).expanduser().is_dir():
            raise UsageProblem(f"--base {base}: no such directory")
        if release_vae is not None and not (release_vae / "config.json").is_file():
            raise UsageProblem(f"--release-vae {release_vae}: not a VAE directory (no config.json)")
    if model is not None and not (model / "model_index.json").is_file():
        raise UsageProblem(f"--model {model}: not a VidRD model directory (no model_index.json)")


def _fvd_network(i3d: Optional[Path], cd_fvd: Optional[Path]) -> tuple[str, Path]:
    """Returns ("i3d", --i3d) or, with --cd-fvd, ("videomae", --cd-fvd), checked before any work."""
    if cd_fvd is not None:
        if i3d is not None:
            raise UsageProblem("pass either --i3d (FVD) or --cd-fvd (content-debiased FVD), not both")
        _require_extractor("videomae", cd_fvd)
        return "videomae", cd_fvd
    _require_extractor("i3d", i3d)
    return "i3d", i3d


def _require_extractor(kind: str, path: Optional[Path]) -> None:
    """Fails before any work when a metric's network file is missing (MissingExtractor's one line) or is not a
    TorchScript archive (ValueError's one line); reads the archive's file list, runs none of its code."""
    from vidrd_model.eval.extractors import check_extractor_file

    check_extractor_file(kind, path)


def _check_stats_path(option: str, path: Optional[Path]) -> None:
    if path is not None and path.suffix != ".npz":
        raise UsageProblem(f"{option} {path}: the real statistics file must end in .npz")
    if path is not None and path.exists() and not path.is_file():
        raise UsageProblem(f"{option} {path}: exists and is not a file")


def _warn(message: str) -> None:
    print(f"vidrd-eval: warning: {message}", file=sys.stderr, flush=True)


def _warn_failures(failed: list[dict], used: int, what: str) -> None:
    """Prints one warning line when some videos could not be read (they are listed under "failed" in the JSON)."""
    if failed:
        _warn(f"{len(failed)} of {len(failed) + used} {what} could not be read and were left out (e.g. "
              f"{failed[0]['key']}: {failed[0]['reason']}); see \"failed\" in the results JSON")


def _check_source(option: str, path: Path) -> None:
    if not path.exists():
        raise UsageProblem(f"{option} {path}: no such file or directory")


def _write_result(path: Path, record: dict) -> None:
    from vidrd_io.fs import write_json_atomic
    from vidrd_model.provenance import software_versions

    write_json_atomic(path, {**record, "versions": software_versions()})
    out.print(f"wrote {path}", markup=False, highlight=False)


def _quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _sampler(clips, frames, overlap_frames, overlap, steps, guidance, noise_recycle, denoise_guidance,
             negative_prompt, fps, height, width, dtype, decode_chunk_size, device, release_decode=False):
    from vidrd_model.eval.generate import SamplerSettings
    from vidrd_model.pipeline import check_sampling_args

    check_sampling_args(frames, clips, steps, overlap_frames, noise_recycle, denoise_guidance, overlap)
    if fps <= 0:
        raise UsageProblem(f"--fps must be > 0, got {fps}")
    if dtype == "auto":
        dtype = "fp16" if device.startswith("cuda") else "fp32"
    if dtype not in ("fp32", "fp16", "bf16"):
        raise UsageProblem(f"--dtype must be auto, fp32, fp16 or bf16, got {dtype!r}")
    return SamplerSettings(num_clips=clips, num_frames=frames, overlap_frames=overlap_frames, overlap=overlap,
                           num_inference_steps=steps, guidance_scale=guidance, noise_recycle=noise_recycle,
                           denoise_guidance=denoise_guidance, negative_prompt=negative_prompt, height=height,
                           width=width, fps=fps, dtype=dtype, decode_chunk_size=decode_chunk_size,
                           decode_per_frame=release_decode)


def _protocol(ucf101: Path, num_videos: int, class_prompts: Optional[Path]):
    """Returns (layout, allocation, prompts) of the UCF-101 protocol for `num_videos` videos."""
    from vidrd_model.eval import ucf101 as protocol

    layout = protocol.locate(ucf101)
    counts = protocol.class_distribution(layout)
    prompts = protocol.load_class_prompts(list(counts), class_prompts)
    return layout, protocol.allocate(counts, num_videos), prompts


def _generate(model: Optional[Path], release: Optional[tuple], allocation: dict, prompts: dict, seed: int, sampler,
              gen_dir: Path, device: str, progress: bool):
    """Generates (resuming) every planned video into `gen_dir` with our model folder or, with `release` = (base,
    ModelT2V.pth, VAE folder or None), the released model; returns the plan."""
    from cli.sample import model_identity
    from vidrd_model.eval import generate

    _quiet_libraries()
    pipe = generate.load_pipeline(model, device, sampler.dtype, release=release)
    identity = model_identity(model, *(release or (None, None, None)))
    plan = generate.GenerationPlan(allocation, prompts, seed, generate.resolve_size(pipe, sampler), identity)
    generate.open_folder(gen_dir, plan)
    done = generate.generate_videos(pipe, plan, gen_dir, device=device, progress=progress)
    out.print(f"{gen_dir}: {done.written} videos generated, {done.skipped} already there ({done.seconds:.1f} s)",
              markup=False, highlight=False)
    return plan


# ---------------------------------------------------------------------------------------------- metrics


@app.command()
def fvd(
    generated: Path = GeneratedArg,
    real: Path = RealArg,
    i3d: Optional[Path] = I3dOpt,
    cd_fvd: Optional[Path] = CdFvdOpt,
    real_stats: Optional[Path] = typer.Option(None, "--real-stats", help="The real videos' (μ, Σ) .npz: reused when it matches, computed and saved there when absent; one of other videos or settings is refused (see --overwrite-real-stats)."),
    overwrite_real_stats: bool = OverwriteStatsOpt,
    cache: Optional[Path] = CacheOpt,
    out_file: Path = typer.Option(Path("fvd.json"), "--out", "-o", help="Results JSON to write."),
    num_frames: int = NumFramesOpt, resolution: int = ResolutionOpt, stride: int = StrideOpt,
    real_stride: str = RealStrideOpt, pad_short: bool = PadShortOpt, batch_size: int = BatchOpt,
    device: str = DeviceOpt, progress: bool = ProgressOpt,
) -> None:
    """Fréchet Video Distance between GENERATED and REAL videos (I3D features, stylegan-v's computation; VideoMAE
    features with --cd-fvd)."""
    _check_source("GENERATED", generated)
    _check_source("REAL", real)
    _check_stats_path("--real-stats", real_stats)
    kind, network = _fvd_network(i3d, cd_fvd)
    from vidrd_model.eval.evaluate import compute_fvd

    settings = _settings(num_frames, resolution, stride, pad_short, batch_size, device, real_stride=real_stride,
                         extractor=kind)
    if _real_stride(real_stride) is None:  # auto, once the options are known to be valid
        settings = dataclasses.replace(settings, match_fps=_generated_fps(generated, stride))
    result = compute_fvd(generated, real, network, settings, real_stats_path=real_stats, cache_dir=cache,
                         progress=progress, overwrite_real_stats=overwrite_real_stats,
                         context=_generation_context(generated))
    name = "cd-FVD" if kind == "videomae" else "FVD"
    out.print(with_receipt(f"{name} {result['fvd']:.2f}  ({result['num_generated']} generated vs "
                           f"{result['num_real']} real)", result["receipt"]), markup=False, highlight=False)
    failed = result["failed"]
    _warn_failures([f for f in failed if f["videos"] == "generated"], result["num_generated"], "generated videos")
    _warn_failures([f for f in failed if f["videos"] == "real"], result["num_real"], "real videos")
    _write_result(out_file, {"command": "fvd", "generated": str(generated), "real": str(real), **result})


@app.command("is")
def inception(
    generated: Path = GeneratedArg,
    c3d: Optional[Path] = C3dOpt,
    cache: Optional[Path] = CacheOpt,
    out_file: Path = typer.Option(Path("is.json"), "--out", "-o", help="Results JSON to write."),
    is_splits: int = SplitsOpt, stride: int = StrideOpt, pad_short: bool = PadShortOpt, batch_size: int = BatchOpt,
    device: str = DeviceOpt, progress: bool = ProgressOpt,
) -> None:
    """Inception Score of GENERATED videos under the UCF-101 C3D classifier (16 frames at 112×112)."""
    _check_source("GENERATED", generated)
    _require_extractor("c3d", c3d)
    from vidrd_model.eval.evaluate import compute_is

    settings = _settings(stride=stride, pad_short=pad_short, batch_size=batch_size, device=device,
                         is_splits=is_splits)
    result = compute_is(generated, c3d, settings, cache_dir=cache, progress=progress,
                        context=_generation_context(generated))
    out.print(with_receipt(f"IS {result['is_mean']:.2f} ± {result['is_std']:.2f}  ({result['num_generated']} videos)",
                           result["receipt"]), markup=False, highlight=False)
    _warn_failures(result["failed"], result["num_generated"], "generated videos")
    _write_result(out_file, {"command": "is", "generated": str(generated), **result})


@app.command()
def clipsim(
    generated: Path = GeneratedArg,
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="open_clip model name, e.g. ViT-B-32 (with --clip-pretrained)."),
    clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="open_clip pretrained tag or weights file, e.g. openai."),
    clip_config: Optional[Path] = typer.Option(None, "--clip-config", help="open_clip model config JSON (offline, with --clip-checkpoint)."),
    clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="open_clip weights file (with --clip-config)."),
    convention: str = typer.Option("raw", "--convention", help="raw: mean cosine (VidRD's, 0–1); clipscore: max(100·cos, 0)."),
    out_file: Path = typer.Option(Path("clipsim.json"), "--out", "-o", help="Results JSON to write."),
    num_frames: int = NumFramesOpt, resolution: int = ResolutionOpt, stride: int = StrideOpt,
    pad_short: bool = PadShortOpt, device: str = DeviceOpt, progress: bool = ProgressOpt,
) -> None:
    """CLIP similarity of each GENERATED video's frames to its prompt (from the sibling STEM.json or the manifest)."""
    by_name, by_files = clip_model is not None or clip_pretrained is not None, clip_config or clip_checkpoint
    if by_name == bool(by_files) or (by_name and not (clip_model and clip_pretrained)) or (
            by_files and not (clip_config and clip_checkpoint)):
        raise UsageProblem("pass either --clip-model NAME --clip-pretrained TAG, or --clip-config JSON "
                           "--clip-checkpoint FILE")
    for option, path in (("--clip-config", clip_config), ("--clip-checkpoint", clip_checkpoint)):
        if path is not None and not path.is_file():
            raise UsageProblem(f"{option} {path}: no such file")
    _check_source("GENERATED", generated)
    from vidrd_model.eval.evaluate import compute_clipsim

    settings = _settings(num_frames, resolution, stride, pad_short, device=device, clip_convention=convention)
    scorer = ({"model": clip_model, "pretrained": clip_pretrained} if by_name
              else {"config": str(clip_config), "checkpoint": str(clip_checkpoint)})
    result = compute_clipsim(generated, scorer, settings, progress=progress, context=_generation_context(generated))
    out.print(with_receipt(f"CLIPSIM {result['clipsim']:.4f} ({convention}, {result['num_generated']} videos)",
                           result["receipt"]), markup=False, highlight=False)
    _write_result(out_file, {"command": "clipsim", "generated": str(generated), **result})


@app.command("real-stats")
def real_stats(
    real: Path = RealArg,
    i3d: Optional[Path] = I3dOpt,
    cd_fvd: Optional[Path] = CdFvdOpt,
    out_file: Path = typer.Option(..., "--out", "-o", help="The FILE.npz to write (fvd --real-stats reads it); FILE.json describes it."),
    overwrite_real_stats: bool = OverwriteStatsOpt,
    cache: Optional[Path] = CacheOpt,
    num_frames: int = NumFramesOpt, resolution: int = ResolutionOpt,
    real_stride: str = typer.Option("auto", "--real-stride", help="auto: each real video's stride is round(its fps / --match-fps); or a number N: every N-th frame."),
    match_fps: float = typer.Option(8.0, "--match-fps", help="With --real-stride auto: the generated clips' frame rate to match."),
    pad_short: bool = PadShortOpt, batch_size: int = BatchOpt, device: str = DeviceOpt, progress: bool = ProgressOpt,
) -> None:
    """Compute the REAL videos' I3D (or --cd-fvd VideoMAE) feature statistics once (FILE.npz, FILE.json)."""
    _check_source("REAL", real)
    _check_stats_path("--out", out_file)
    kind, network = _fvd_network(i3d, cd_fvd)
    if match_fps <= 0:
        raise UsageProblem(f"--match-fps must be > 0, got {match_fps}")
    from vidrd_model.eval.extractors import load_extractor
    from vidrd_model.eval.fvd import real_statistics
    from vidrd_model.eval.videos import list_videos

    settings = _settings(num_frames, resolution, pad_short=pad_short, batch_size=batch_size, device=device,
                         real_stride=real_stride, match_fps=match_fps, extractor=kind)
    ext = load_extractor(kind, network, settings.device)
    refs = list_videos(real)
    stats = real_statistics(refs, ext, settings.as_dict(), cache_path=out_file, cache_dir=cache,
                            batch_size=settings.batch_size, progress=progress, overwrite=overwrite_real_stats)
    _warn_failures([{"key": k, "reason": r} for k, r in stats.failed], stats.count, "real videos")
    from vidrd_model.eval.receipt import CLIP_START, RESIZE_POLICY, keys_digest, make_receipt
    from vidrd_model.provenance import software_versions

    failed = {k for k, _ in stats.failed}
    receipt = make_receipt(
        metric="real-stats", extractor={"kind": kind, "sha256": ext.sha256},
        real={"count": stats.count, "keys_sha256": keys_digest(r.key for r in refs if r.key not in failed),
              "frames": settings.num_frames, "stride": settings.real_stride if settings.match_fps is None else
              f"per video: round(fps / {settings.match_fps:g})", "matched_to_fps": settings.match_fps},
        preprocess={"resize": RESIZE_POLICY, "size": settings.resolution, "start": CLIP_START,
                    "pad_short": settings.pad_short},
        versions=software_versions())
    out.print(with_receipt(f"{out_file}: statistics of {stats.count} real videos"
                           + (" (already up to date)" if stats.reused else ""), receipt), markup=False, highlight=False)
    _write_result(out_file.with_suffix(".json"), {
        "command": "real-stats", "real": str(real), "real_stats": str(out_file), "num_real": stats.count,
        "key": stats.key, "reused": stats.reused, "failed": [{"key": k, "reason": r} for k, r in stats.failed],
        kind: {"path": str(ext.path), "sha256": ext.sha256}, "settings": stats.settings, "receipt": receipt,
    })


# ---------------------------------------------------------------------------------------------- UCF-101 protocol


@app.command()
def generate(
    model: Optional[Path] = ModelOpt, release: Optional[Path] = ReleaseOpt, base: Optional[str] = BaseOpt,
    release_vae: Optional[Path] = ReleaseVaeOpt,
    ucf101: Path = UCF101Opt,
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for the videos, their JSON and plan.json (resumed)."),
    num_videos: Optional[int] = NumVideosOpt, class_prompts: Optional[Path] = ClassPromptsOpt,
    clips: int = ClipsOpt, frames: int = FramesOpt, overlap_frames: int = OverlapFramesOpt, overlap: str = OverlapOpt,
    steps: int = StepsOpt, guidance: float = GuidanceOpt, noise_recycle: float = NoiseRecycleOpt,
    denoise_guidance: float = DenoiseGuidanceOpt, negative_prompt: str = NegativeOpt, fps: float = FpsOpt,
    seed: int = SeedOpt, height: Optional[int] = HeightOpt, width: Optional[int] = WidthOpt,
    dtype: str = DtypeOpt, decode_chunk_size: Optional[int] = DecodeChunkOpt, release_decode: bool = ReleaseDecodeOpt,
    device: str = DeviceOpt, progress: bool = ProgressOpt,
) -> None:
    """Generate the UCF-101 protocol's videos (N split over the classes as train split 1, one prompt per class)
    with our model (--model) or the released one (--release CKPT --base SD)."""
    from vidrd_model.eval.ucf101 import DEFAULT_NUM_VIDEOS

    _check_model_source(model, release, base, release_vae)
    device = _device(device)
    sampler = _sampler(clips, frames, overlap_frames, overlap, steps, guidance, noise_recycle, denoise_guidance,
                       negative_prompt, fps, height, width, dtype, decode_chunk_size, device, release_decode)
    num_videos = DEFAULT_NUM_VIDEOS if num_videos is None else num_videos
    _, allocation, prompts = _protocol(ucf101, num_videos, class_prompts)
    _generate(model, (base, release, release_vae) if release else None, allocation, prompts, seed, sampler,
              out_dir, device, progress)
    out.print(f"wrote {out_dir / 'plan.json'}", markup=False, highlight=False)


@app.command("convert-release")
def convert_release(
    checkpoint: Path = typer.Argument(..., help="The released ModelT2V.pth (U-Net and text encoder)."),
    base: str = typer.Option(..., "--base", help="Its SD 2.1-base folder or Hub id."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="The VidRDPipeline folder to write (must not exist)."),
    release_vae: Optional[Path] = ReleaseVaeOpt,
) -> None:
    """Convert the released checkpoint to a VidRDPipeline folder (from_release, then save_pretrained): --model DIR
    then loads it with no --base, safetensors only."""
    _check_model_source(None, checkpoint, base, release_vae)
    if out_dir.exists():
        raise UsageProblem(f"--out {out_dir} exists; give a new folder")
    import shutil
    import tempfile

    from vidrd_model.pipeline import VidRDPipeline

    _quiet_libraries()
    pipe = VidRDPipeline.from_release(base, str(checkpoint), str(release_vae) if release_vae else None)
    # a hidden temporary folder renamed at the end (vidrd_io.fs.atomic_write is for files): a killed conversion
    # leaves no half folder that looks complete
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    out.print(f"wrote {out_dir} (from {checkpoint} over {base})", markup=False, highlight=False)


@app.command("convert-videomae")
def convert_videomae(
    checkpoint: Path = typer.Argument(..., help="VideoMAE-v2's fine-tuned checkpoint, e.g. cd-FVD's vit_g_hybrid_pt_1200e_ssv2_ft.pth."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="The transformers folder to write (must not exist); --cd-fvd reads it."),
    heads: int = typer.Option(16, "--heads", help="Attention heads (not in the weights' shapes; ViT-g: 16)."),
    image_size: int = typer.Option(224, "--image-size", help="Input size the model was trained at."),
    num_frames: int = typer.Option(16, "--num-frames", help="Frames per clip the model was trained on."),
) -> None:
    """Convert a VideoMAE-v2 checkpoint (cd-FVD's network) to a transformers VideoMAEForVideoClassification folder."""
    if not checkpoint.is_file():
        raise UsageProblem(f"CHECKPOINT {checkpoint}: no such file")
    if out_dir.exists():
        raise UsageProblem(f"--out {out_dir} exists; give a new folder")
    for name, value in (("--heads", heads), ("--image-size", image_size), ("--num-frames", num_frames)):
        if value < 1:
            raise UsageProblem(f"{name} must be ≥ 1, got {value}")
    from vidrd_model.eval.videomae_convert import convert_checkpoint

    _quiet_libraries()
    convert_checkpoint(checkpoint, out_dir, heads, image_size, num_frames)
    out.print(f"wrote {out_dir} (from {checkpoint})", markup=False, highlight=False)


@app.command("ucf101")
def ucf101_protocol(
    ucf101: Path = UCF101Opt,
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for results.json, results.md, caches (and the videos)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Our VidRD model directory; omit with --videos DIR to evaluate videos generated before."),
    release: Optional[Path] = ReleaseOpt, base: Optional[str] = BaseOpt, release_vae: Optional[Path] = ReleaseVaeOpt,
    videos: Optional[Path] = typer.Option(None, "--videos", help="The generated videos' folder (default OUT/videos); with no --model it must be complete (`vidrd-eval generate` wrote it) and its plan.json decides N and the sampler settings."),
    i3d: Optional[Path] = I3dOpt, c3d: Optional[Path] = C3dOpt,
    cd_fvd: Optional[Path] = typer.Option(None, "--cd-fvd", help="Also report content-debiased FVD (Ge et al. 2024) with this VideoMAE folder (transformers format); its real statistics go to OUT/real_stats_cdfvd.npz."),
    real_stats: Optional[Path] = typer.Option(None, "--real-stats", help="The real clips' I3D statistics .npz (default OUT/real_stats.npz, recomputed when stale); one given here is reused while it matches, and refused when it does not (see --overwrite-real-stats)."),
    overwrite_real_stats: bool = OverwriteStatsOpt,
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache (default OUT/cache)."),
    num_videos: Optional[int] = NumVideosOpt, class_prompts: Optional[Path] = ClassPromptsOpt,
    clips: int = ClipsOpt, frames: int = FramesOpt, overlap_frames: int = OverlapFramesOpt, overlap: str = OverlapOpt,
    steps: int = StepsOpt, guidance: float = GuidanceOpt, noise_recycle: float = NoiseRecycleOpt,
    denoise_guidance: float = DenoiseGuidanceOpt, negative_prompt: str = NegativeOpt, fps: float = FpsOpt,
    seed: int = SeedOpt, height: Optional[int] = HeightOpt, width: Optional[int] = WidthOpt,
    dtype: str = DtypeOpt, decode_chunk_size: Optional[int] = DecodeChunkOpt, release_decode: bool = ReleaseDecodeOpt,
    num_frames: int = NumFramesOpt, resolution: int = ResolutionOpt, stride: int = StrideOpt,
    real_stride: str = RealStrideOpt, pad_short: bool = PadShortOpt, batch_size: int = BatchOpt,
    is_splits: int = SplitsOpt, device: str = DeviceOpt, progress: bool = ProgressOpt,
) -> None:
    """UCF-101 zero-shot: generate, then FVD against train split 1's clips and IS; writes results.json and .md."""
    from vidrd_io.fs import file_sha256
    from vidrd_model.eval import generate as gen
    from vidrd_model.eval.fvd import check_real_statistics
    from vidrd_model.eval.ucf101 import DEFAULT_NUM_VIDEOS, real_videos

    if model is None and release is None and videos is None:
        raise UsageProblem("pass --model DIR or --release CKPT --base SD to generate the videos, or --videos DIR "
                           "with videos generated before")
    _check_model_source(model, release, base, release_vae, required=False)
    generating = model is not None or release is not None
    _require_extractor("i3d", i3d)
    _require_extractor("c3d", c3d)
    if cd_fvd is not None:
        _require_extractor("videomae", cd_fvd)
    _check_stats_path("--real-stats", real_stats)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"--out {out_dir} exists and is not a directory")
    device = _device(device)
    gen_dir = videos or out_dir / "videos"
    plan = gen.read_plan(gen_dir) if not generating else None
    if generating:
        sampler = _sampler(clips, frames, overlap_frames, overlap, steps, guidance, noise_recycle,
                           denoise_guidance, negative_prompt, fps, height, width, dtype, decode_chunk_size, device,
                           release_decode)
        generated_fps = sampler.fps / max(stride, 1)  # --stride 0 is refused by _settings
    else:
        if plan is None:
            raise UsageProblem(f"--videos {gen_dir}: no plan.json (write the videos with `vidrd-eval generate`)")
        if num_videos is not None and num_videos != plan["num_videos"]:
            raise UsageProblem(f"-n {num_videos} but --videos {gen_dir} holds a plan for {plan['num_videos']} videos")
        num_videos = plan["num_videos"]
        generated_fps = plan["sampler"]["fps"] / max(stride, 1)
    settings = _settings(num_frames, resolution, stride, pad_short, batch_size, device, is_splits,
                         real_stride=real_stride, match_fps=generated_fps)
    num_videos = DEFAULT_NUM_VIDEOS if num_videos is None else num_videos
    layout, allocation, prompts = _protocol(ucf101, num_videos, class_prompts)
    real = real_videos(layout)
    overwrite_real_stats = overwrite_real_stats or real_stats is None  # OUT/real_stats.npz is ours to replace
    real_stats = real_stats or out_dir / "real_stats.npz"
    if not overwrite_real_stats:  # a --real-stats file of other clips or settings is refused now, not after generating
        check_real_statistics(real_stats, real, file_sha256(i3d), settings.as_dict())
    if generating:
        plan = _generate(model, (base, release, release_vae) if release else None, allocation, prompts, seed,
                         sampler, gen_dir, device, progress).as_dict()
    else:
        if plan["allocation"] != allocation or any(plan["prompts"][c] != prompts[c] for c in plan["prompts"]):
            raise UsageProblem(f"--videos {gen_dir} was generated for other classes or prompts than --ucf101 "
                               f"{ucf101} and --class-prompts give")
        missing = gen.missing_videos(gen_dir, plan)
        if missing:
            raise UsageProblem(f"--videos {gen_dir}: {len(missing)} of {plan['num_videos']} planned videos are "
                               f"missing (e.g. {missing[0]}); finish them with `vidrd-eval generate` or pass --model")
    generated = gen.planned_refs(gen_dir, plan)
    cache = cache or out_dir / "cache"
    out_dir.mkdir(parents=True, exist_ok=True)

    from vidrd_model.eval.evaluate import compute_fvd, compute_is
    from vidrd_model.eval.report import (is_standin_extractor, protocol_deviations, published_as_dicts,
                                         results_table, write_text_atomic)

    from vidrd_model.eval.receipt import make_receipt

    split = "trainlist01" if layout.train_list else "every clip (no trainlist01.txt)"
    context = {"dataset": "UCF-101", "real_split": split, "num_videos": plan["num_videos"],
               "allocation": plan["allocation"], "prompts": plan["prompts"], "seed": plan["seed"],
               "seeds": plan["seeds"], "sampler": plan["sampler"], "crf": plan["crf"],
               "model_sha256": (plan.get("model") or {}).get("sha256")}
    fvd_result = compute_fvd(generated, real, i3d, settings, real_stats_path=real_stats, cache_dir=cache,
                             progress=progress, overwrite_real_stats=overwrite_real_stats, context=context)
    is_result = compute_is(generated, c3d, settings, cache_dir=cache, progress=progress, context=context)
    cd_fvd_result = None
    if cd_fvd is not None:  # its own statistics file: the features differ from I3D's
        cd_fvd_result = compute_fvd(generated, real, cd_fvd, dataclasses.replace(settings, extractor="videomae"),
                                    real_stats_path=out_dir / "real_stats_cdfvd.npz", cache_dir=cache,
                                    progress=progress, overwrite_real_stats=True, context=context)
    failed_generated = sorted({f["key"] for f in fvd_result["failed"] + is_result["failed"]
                               if f["videos"] == "generated"})
    failed_real = [f["key"] for f in fvd_result["failed"] if f["videos"] == "real"]
    warnings = []
    if failed_generated:
        warnings.append(f"{len(failed_generated)} of {plan['num_videos']} generated videos could not be read and were "
                        f"left out: FVD used {fvd_result['num_generated']}, IS {is_result['num_generated']} (e.g. "
                        f"{failed_generated[0]}; see fvd.failed and is.failed in results.json)")
    if failed_real:
        warnings.append(f"{len(failed_real)} of {len(real)} real clips could not be read and were left out: FVD used "
                        f"{fvd_result['num_real']} (e.g. {failed_real[0]}; see fvd.failed in results.json)")
    record = {
        "command": "ucf101",
        "protocol": {"dataset": "UCF-101", "root": str(ucf101.resolve()), "real_split": split,
                     "num_real_listed": len(real),
                     "num_videos": plan["num_videos"],
                     "used": {"fvd_generated": fvd_result["num_generated"], "fvd_real": fvd_result["num_real"],
                              "is_generated": is_result["num_generated"]},
                     "num_failed": {"generated": len(failed_generated), "real": len(failed_real)},
                     "clip_start": "frame 0 of each video (deterministic, no random offset)",
                     "class_prompts": str(class_prompts) if class_prompts else "vidrd_model/eval/ucf101_prompts.json",
                     "videos": str(gen_dir)},
        "generation": plan,
        "settings": settings.as_dict(),
        "extractors": {"i3d": fvd_result["i3d"], "c3d": is_result["c3d"]},
        "standin_extractors": (is_standin_extractor(i3d) or is_standin_extractor(c3d)
                               or (cd_fvd is not None and is_standin_extractor(cd_fvd))),
        "fvd": fvd_result,
        "is": is_result,
        "cd_fvd": cd_fvd_result,
        "published": published_as_dicts(),
        "warnings": warnings,
    }
    record["deviations"] = protocol_deviations(record)
    record["receipt"] = make_receipt(
        metric="ucf101", fvd=fvd_result["receipt"]["sha256"], inception_score=is_result["receipt"]["sha256"],
        cd_fvd=cd_fvd_result["receipt"]["sha256"] if cd_fvd_result else None,
        standin_extractors=record["standin_extractors"], deviations=record["deviations"])
    cd_text = f", cd-FVD {cd_fvd_result['fvd']:.2f}" if cd_fvd_result else ""
    out.print(with_receipt(f"UCF-101 zero-shot: FVD {fvd_result['fvd']:.2f} ({fvd_result['num_generated']} generated "
                           f"vs {fvd_result['num_real']} real), IS {is_result['is_mean']:.2f} ± "
                           f"{is_result['is_std']:.2f} ({is_result['num_generated']} generated){cd_text}",
                           record["receipt"]), markup=False, highlight=False)
    for warning in warnings:
        _warn(warning)
    _write_result(out_dir / "results.json", record)
    write_text_atomic(out_dir / "results.md", results_table([record]))
    out.print(f"wrote {out_dir / 'results.md'}", markup=False, highlight=False)


@app.command()
def report(
    results: list[Path] = typer.Argument(..., help="results.json files written by `vidrd-eval ucf101`."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the table to this markdown file."),
) -> None:
    """Print the UCF-101 table: the published FVD / IS and ours, with each of our rows' settings."""
    from vidrd_model.eval.report import results_table, write_text_atomic

    records = []
    for path in results:
        if not path.is_file():
            raise UsageProblem(f"{path}: no such file")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageProblem(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(record, dict) or record.get("command") != "ucf101":
            raise UsageProblem(f"{path}: not a results.json of `vidrd-eval ucf101`")
        records.append(record)
    table = results_table(records)
    from vidrd_model.eval.receipt import make_receipt

    receipt = make_receipt(metric="report", rows=[(r.get("receipt") or {}).get("sha256") for r in records])
    table += f"\nReport receipt {receipt['id']} (over the rows' receipts, in order).\n"
    print(table, end="")
    if out_file is not None:
        write_text_atomic(out_file, table)


# ---------------------------------------------------------------------------------------------- long videos


def _numbers(option: str, text: str) -> tuple[int, ...]:
    """Returns the comma-separated positive integers of an option; anything else is a UsageProblem."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise UsageProblem(f"{option} {text}: expected comma-separated integers ≥ 1, e.g. 64,128")
    return values


@app.command()
def longvideo(
    model: Path = typer.Option(..., "--model", help="Our model folder (VidRDPipeline.save_pretrained)."),
    prompts_file: Path = typer.Option(..., "--prompts", help="Text file: one prompt per line."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder: videos/, seams/, results.json, report.md, metrics.png."),
    modes: str = typer.Option("vidrd,independent,freenoise,fifo,gen-l-video", "--modes", help="Samplers to compare, comma-separated."),
    lengths: str = typer.Option("64,128", "--lengths", help="Video lengths in frames, comma-separated."),
    fvd_windows: str = typer.Option("16,128", "--fvd-windows", help="FVD window lengths (stylegan-v: 16 and 128)."),
    real: Optional[Path] = typer.Option(None, "--real", help="Real videos for FVD: a folder or a manifest directory (with --i3d)."),
    i3d: Optional[Path] = I3dOpt,
    clip_config: Path = typer.Option(..., "--clip-config", help="open_clip model config JSON (seams and drift in CLIP space)."),
    clip_checkpoint: Path = typer.Option(..., "--clip-checkpoint", help="open_clip weights file."),
    demo: bool = typer.Option(False, "--demo", help="Flag every number as meaningless (a tiny demo model)."),
    frames: int = FramesOpt, steps: int = StepsOpt, guidance: float = GuidanceOpt, negative_prompt: str = NegativeOpt,
    seed: int = SeedOpt, height: Optional[int] = HeightOpt, width: Optional[int] = WidthOpt, fps: float = FpsOpt,
    resolution: int = ResolutionOpt, real_stride: str = RealStrideOpt, dtype: str = DtypeOpt, device: str = DeviceOpt,
) -> None:
    """Long-video samplers side by side: videos of each length from each mode, seams, drift, FVD, speed."""
    from vidrd_model.long_video import MODES

    chosen = tuple(modes.split(","))
    if not chosen or any(mode not in MODES for mode in chosen):
        raise UsageProblem(f"--modes {modes}: each must be one of {', '.join(MODES)}")
    for option, path in (("--prompts", prompts_file), ("--clip-config", clip_config),
                         ("--clip-checkpoint", clip_checkpoint)):
        if not path.is_file():
            raise UsageProblem(f"{option} {path}: no such file")
    prompts = [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UsageProblem(f"--prompts {prompts_file}: no prompts (one per line)")
    if (real is None) != (i3d is None):
        raise UsageProblem("FVD needs both --real and --i3d (or neither)")
    if real is not None:
        _check_source("--real", real)
        _require_extractor("i3d", i3d)
    device = _device(device)
    sampler = _sampler(1, frames, 0, "keep", steps, guidance, 4.0, 0.4, negative_prompt, fps, height, width, dtype,
                       None, device)
    from vidrd_model import provenance
    from vidrd_model.eval import generate
    from vidrd_model.eval.clipsim import ClipScorer
    from vidrd_model.eval.longvideo import FLAG_MEANINGLESS, LongVideoSettings, format_number, run_longvideo
    from vidrd_model.eval.report import is_standin_extractor

    settings = LongVideoSettings(modes=chosen, lengths=_numbers("--lengths", lengths), clip_frames=frames,
                                 steps=steps, guidance=guidance, negative_prompt=negative_prompt, seed=seed,
                                 height=height, width=width, fps=fps, fvd_windows=_numbers("--fvd-windows", fvd_windows),
                                 resolution=resolution, real_stride=_real_stride(real_stride) or 1,
                                 match_fps=fps if _real_stride(real_stride) is None else None)
    _quiet_libraries()
    pipe = generate.load_pipeline(model, device, sampler.dtype)
    pipe.set_progress_bar_config(disable=True)
    real_refs = ext = None
    if real is not None:
        from vidrd_model.eval.extractors import load_extractor
        from vidrd_model.eval.videos import list_videos

        real_refs, ext = list_videos(real), load_extractor("i3d", i3d, device)
    standin = i3d is not None and is_standin_extractor(i3d)
    results = run_longvideo(pipe, prompts, settings, out_dir,
                            ClipScorer(config=clip_config, checkpoint=clip_checkpoint, device=device),
                            model=provenance.model_identity(model), real_refs=real_refs, ext=ext,
                            flag=FLAG_MEANINGLESS if demo or standin else None, device=device)
    for mode, by_length in results["summary"].items():
        for length_key, row in by_length.items():
            out.print(f"{mode} {length_key}: {format_number(row['seconds_per_frame'])} s/frame, seam ratio px "
                      f"{format_number(row['seam_pixels_ratio'])} CLIP {format_number(row['seam_clip_ratio'])}, first↔last "
                      f"{format_number(row['drift_first_last'])}", markup=False, highlight=False)
    out.print(f"wrote {out_dir / 'report.md'} and {out_dir / 'results.json'}  [receipt {results['receipt']['id']}]",
              markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the app; user errors become one line and exit status 2 (a traceback only with --debug)."""
    # OSError: missing files (MissingExtractor is a FileNotFoundError); ValueError: unreadable inputs
    return run_app(app, "vidrd-eval", argv, (UsageProblem, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
