"""`vidrd-sample`: long text-to-video with VidRD, clip after clip (FNR, PNS, DSG). Argument parsing and printing only."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from cli._app import UsageProblem, run_app, typer_app
from vidrd_io.fs import file_sha256, write_json_atomic
from vidrd_model import provenance
from rich.console import Console

app = typer_app("Sample long videos from a VidRD model: each clip reuses the previous one (FNR, PNS, DSG).",
                no_args_is_help=False)
out = Console(soft_wrap=True)




# ---------------------------------------------------------------------------------------------- inputs


def read_prompts(path: Path) -> list[tuple[str, str]]:
    """Returns (name, prompt) pairs from a text file (one prompt per line) or a JSON object mapping a key to a
    prompt or a list of prompts (the official evaluator's format); names become the output file stems."""
    if not path.is_file():
        raise UsageProblem(f"--prompts {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise UsageProblem(f"--prompts {path}: no prompts in the file")
        return [(f"{i:04d}_{_slug(p)}", p) for i, p in enumerate(lines)]
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"--prompts {path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise UsageProblem(f"--prompts {path}: expected a JSON object mapping a key to a prompt or a list of prompts")
    pairs = []
    for key, value in mapping.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise UsageProblem(f"--prompts {path}: {key!r} must map to a prompt or a non-empty list of prompts")
        stem = _slug(key)
        pairs += [(stem if isinstance(value, str) else f"{stem}_{j:02d}", v.strip()) for j, v in enumerate(values)]
    return pairs


def _slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "video"


def _check_model_args(model: Optional[Path], base: Optional[str], vidrd_ckpt: Optional[Path],
                      vae: Optional[Path]) -> None:
    if (model is None) == (base is None):
        raise UsageProblem("pass either --model DIR or --base SD_DIR_OR_HUB_ID [--vidrd-ckpt ModelT2V.pth]")
    if model is not None and (vidrd_ckpt or vae):
        raise UsageProblem("--vidrd-ckpt and --vae go with --base, not --model")
    if model is not None and not (model / "model_index.json").is_file():
        raise UsageProblem(f"--model {model}: not a VidRD model directory (no model_index.json)")
    if base is not None and base.startswith(("/", ".", "~")) and not Path(base).expanduser().is_dir():
        raise UsageProblem(f"--base {base}: no such directory")
    if vidrd_ckpt is not None and not vidrd_ckpt.is_file():
        raise UsageProblem(f"--vidrd-ckpt {vidrd_ckpt}: no such file")
    if vae is not None and not (vae / "config.json").is_file():
        raise UsageProblem(f"--vae {vae}: not a VAE directory (no config.json)")


def model_identity(model: Optional[Path], base: Optional[str], vidrd_ckpt: Optional[Path],
                   vae: Optional[Path]) -> dict:
    """Returns what the videos were sampled from: the files given and the sha256 of the weights among them."""
    if model is not None:
        return provenance.model_identity(model)
    identity = {"kind": "release" if vidrd_ckpt else "stable_diffusion_untrained_temporal_layers",
                "base": str(Path(base).resolve()) if Path(base).is_dir() else base}
    if vidrd_ckpt is not None:
        identity["vidrd_ckpt"] = str(vidrd_ckpt.resolve())
        identity["sha256"] = {vidrd_ckpt.name: file_sha256(vidrd_ckpt)}
    if vae is not None:
        identity["vae"] = str(vae.resolve())
    return identity


def load_pipeline(model: Optional[Path], base: Optional[str], vidrd_ckpt: Optional[Path], vae: Optional[Path],
                  load_lora: bool = True):
    from vidrd_model.pipeline import VidRDPipeline

    if model is not None:  # with the folder's own lora/ unless other adapters are asked for (--lora)
        return VidRDPipeline.from_pretrained(model, load_lora=load_lora)
    if vidrd_ckpt is not None:
        return VidRDPipeline.from_release(base, str(vidrd_ckpt), str(vae) if vae else None)
    if vae is not None:
        raise UsageProblem("--vae needs --vidrd-ckpt (the released U-Net)")
    logging.getLogger(__name__).warning("--base without --vidrd-ckpt: temporal layers are untrained (smoke test)")
    return VidRDPipeline.from_stable_diffusion(base)


def _device_and_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype == "auto":
        dtype = "fp16" if device.startswith("cuda") else "fp32"
    if dtype not in dtypes:
        raise UsageProblem(f"--dtype must be auto, fp32, fp16 or bf16, got {dtype!r}")
    return device, dtype, dtypes[dtype]


# ---------------------------------------------------------------------------------------------- outputs


class VideoFiles:
    """Receives a video clip by clip: PNGs go to the frames folder at once; the mp4 (and GIF) when it is complete."""

    def __init__(self, stem: Path, fps: float, gif: bool, frames_dir: Optional[Path]):
        self.stem, self.fps, self.gif = stem, fps, gif
        self.frames_dir = frames_dir / stem.name if frames_dir is not None else None
        self.frames = []  # uint8 (f, h, w, 3) per clip: what the mp4 writer needs at the end

    def add_clip(self, clip_index: int, frames) -> None:
        import numpy as np
        from PIL import Image

        clip = (frames[0] * 255).round().astype(np.uint8)  # (f, h, w, 3) in [0, 1] -> uint8, as diffusers does
        if self.frames_dir is not None:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
            start = sum(len(c) for c in self.frames)
            for k, frame in enumerate(clip):
                Image.fromarray(frame).save(self.frames_dir / f"{start + k:05d}.png")
        self.frames.append(clip)

    def finish(self) -> tuple[list[Path], int]:
        """Writes the mp4 (and GIF); returns the written paths and the frame count."""
        import numpy as np
        from PIL import Image

        from vidrd_io.video import write_mp4

        video = np.concatenate(self.frames)
        paths = [self.stem.with_suffix(".mp4")]
        write_mp4(paths[0], video, fps=self.fps)
        if self.gif:
            paths.append(self.stem.with_suffix(".gif"))
            images = [Image.fromarray(frame) for frame in video]
            images[0].save(paths[1], save_all=True, append_images=images[1:], duration=round(1000 / self.fps), loop=0)
        if self.frames_dir is not None:
            paths.append(self.frames_dir)
        return paths, len(video)


# ---------------------------------------------------------------------------------------------- command


@app.command()
def sample(
    out_dir: Path = typer.Option(Path("samples"), "--out", "-o", help="Directory for the videos and their JSON."),
    model: Optional[Path] = typer.Option(None, "--model", help="Our model directory (VidRDPipeline.save_pretrained, vidrd-train checkpoints)."),
    base: Optional[str] = typer.Option(None, "--base", help="SD 2.1-base folder or Hub id; with --vidrd-ckpt the released model, alone SD with untrained temporal layers (a smoke test)."),
    vidrd_ckpt: Optional[Path] = typer.Option(None, "--vidrd-ckpt", help="The released ModelT2V.pth (U-Net and text encoder), with --base."),
    vae: Optional[Path] = typer.Option(None, "--vae", help="The released vae_finetuned directory, with --vidrd-ckpt (default: --base's SD VAE)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="One prompt."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="A text file (one prompt per line) or a JSON object mapping a key to a prompt or a list of prompts."),
    negative_prompt: str = typer.Option("", "--negative-prompt", help='Negative prompt (the official evaluator used "watermark").'),
    clips: int = typer.Option(3, "--clips", help="Clips per video (K)."),
    frames: int = typer.Option(8, "--frames", help="Frames per clip (N; the released model: 8)."),
    steps: int = typer.Option(50, "--steps", help="DDIM steps per clip (T)."),
    guidance: float = typer.Option(7.5, "--guidance", help="Classifier-free guidance scale (the release's example config: 10)."),
    seed: int = typer.Option(42, "--seed", help="Seed of the first video; video k uses seed + k."),
    fps: float = typer.Option(8.0, "--fps", help="Frame rate of the written videos."),
    height: Optional[int] = typer.Option(None, "--height", help="Frame height (default: the model's; 256 for the released one)."),
    width: Optional[int] = typer.Option(None, "--width", help="Frame width (default: the model's)."),
    overlap_frames: int = typer.Option(4, "--overlap-frames", help="M: frames each clip shares with the previous one."),
    noise_recycle: float = typer.Option(4.0, "--noise-recycle", help="β of Past-dependent Noise Sampling (0: fresh noise)."),
    denoise_guidance: float = typer.Option(0.4, "--denoise-guidance", help="g of Denoising with Staged Guidance (0: off)."),
    overlap: str = typer.Option("keep", "--overlap", help="keep: every clip's N frames (the release); drop: drop each later clip's first M frames."),
    release_decode: bool = typer.Option(False, "--release-decode", help="Decode frame by frame as the release does (its temporal VAE layers then never run)."),
    decode_chunk_size: Optional[int] = typer.Option(None, "--decode-chunk-size", help="Decode at most this many frames at a time."),
    gif: bool = typer.Option(False, "--gif", help="Also write a GIF beside each mp4."),
    frames_dir: Optional[Path] = typer.Option(None, "--frames-dir", help="Also write every frame as PNG under DIR/NAME/."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="U-Net and text encoder precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16."),
    lora: Optional[Path] = typer.Option(None, "--lora", help="LoRA adapters to load into the U-Net: a folder with pytorch_lora_weights.safetensors (vidrd-train --lora-rank writes MODEL/lora) or that file."),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="Weight of the --lora adapters."),
    compile: bool = typer.Option(False, "--compile", help="Compile the U-Net with torch.compile (the first clip compiles, minutes for the full model; worth it for many videos)."),
    compile_mode: Optional[str] = typer.Option(None, "--compile-mode", help="torch.compile mode: default, reduce-overhead, max-autotune (CUDA graphs), max-autotune-no-cudagraphs."),
    cuda_graphs: bool = typer.Option(False, "--cuda-graphs", help="Replay the eager U-Net from CUDA graphs (captured in seconds by torch.compile's cudagraphs backend; removes the per-kernel launch cost of small batches). CUDA only."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over clips × steps."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and library warnings."),
) -> None:
    """Write one H.264 mp4 (and a JSON of every parameter) per prompt."""
    from vidrd_model.pipeline import check_sampling_args

    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if (prompt is None) == (prompts is None):
        raise UsageProblem("pass either --prompt TEXT or --prompts FILE")
    named_prompts = [(_slug(prompt), prompt)] if prompt is not None else read_prompts(prompts)
    _check_model_args(model, base, vidrd_ckpt, vae)
    check_sampling_args(frames, clips, steps, overlap_frames, noise_recycle, denoise_guidance, overlap)
    if fps <= 0:
        raise UsageProblem(f"--fps must be > 0, got {fps}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageProblem(f"--out {out_dir} exists and is not a directory")
    device, dtype_name, torch_dtype = _device_and_dtype(device, dtype)
    if cuda_graphs and compile:
        raise UsageProblem("--cuda-graphs replays the eager U-Net; for compiled kernels in CUDA graphs use "
                           "--compile --compile-mode reduce-overhead")
    if cuda_graphs and not device.startswith("cuda"):
        raise UsageProblem(f"--cuda-graphs needs a CUDA device, got --device {device}")

    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    if not debug:
        diffusers_logging.set_verbosity_error()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    pipe = load_pipeline(model, base, vidrd_ckpt, vae, load_lora=lora is None)
    pipe.unet.to(device=device, dtype=torch_dtype)
    if pipe.text_encoder is not None:
        pipe.text_encoder.to(device=device, dtype=torch_dtype)
    pipe.vae.to(device=device)  # the VAE stays in its own precision
    pipe.set_progress_bar_config(disable=not progress, desc="clips × steps")
    if lora is not None:
        if not lora.exists():
            raise UsageProblem(f"--lora {lora}: no such file or folder")
        pipe.load_lora(lora, scale=lora_scale)
    if compile:
        pipe.compile_unet(mode=compile_mode)
    if cuda_graphs:
        pipe.enable_cuda_graphs()
    height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = width or pipe.unet.config.sample_size * pipe.vae_scale_factor
    identity = model_identity(model, base, vidrd_ckpt, vae)
    if lora is not None:  # the videos' JSON names the adapters too: they change every frame
        weights = lora if lora.is_file() else lora / "pytorch_lora_weights.safetensors"
        identity = {**identity, "lora": {"path": str(weights.resolve()), "sha256": file_sha256(weights),
                                         "scale": lora_scale}}
    out_dir.mkdir(parents=True, exist_ok=True)

    for k, (name, text) in enumerate(named_prompts):
        files = VideoFiles(out_dir / name, fps, gif, frames_dir)
        started = time.perf_counter()
        pipe(
            prompt=text, negative_prompt=negative_prompt or None, num_frames=frames, num_clips=clips,
            num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed + k),
            overlap_frames=overlap_frames, noise_recycle=noise_recycle, denoise_guidance=denoise_guidance,
            overlap=overlap, height=height, width=width, decode_per_frame=release_decode,
            decode_chunk_size=decode_chunk_size, output_type="np", callback_on_clip_end=files.add_clip,
        )
        paths, num_frames_written = files.finish()
        seconds = time.perf_counter() - started
        write_json_atomic(out_dir / f"{name}.json", {
            "video": paths[0].name,
            "frames": num_frames_written,
            "prompt": text,
            "negative_prompt": negative_prompt,
            "seed": seed + k,
            "generator": "torch.Generator('cpu')",
            "num_clips": clips,
            "num_frames": frames,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "overlap_frames": overlap_frames,
            "noise_recycle": noise_recycle,
            "denoise_guidance": denoise_guidance,
            "overlap": overlap,
            "height": height,
            "width": width,
            "fps": fps,
            "decode": "per_frame (release)" if release_decode else "temporal",
            "decode_chunk_size": decode_chunk_size,
            "scheduler": {"class": type(pipe.scheduler).__name__, "eta": 0.0,
                          **{k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}},
            "model": identity,
            "device": device,
            "dtype": dtype_name,
            "versions": provenance.software_versions(),
            "seconds": round(seconds, 2),
        })
        out.print(f"{paths[0]}  ({num_frames_written} frames, {seconds:.1f} s)", markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the app; user errors become one line and exit status 2 (a traceback only with --debug)."""
    # OSError: missing files, Hub ids not cached; KeyError: an unknown prompt key
    return run_app(app, "vidrd-sample", argv, (UsageProblem, ValueError, OSError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
