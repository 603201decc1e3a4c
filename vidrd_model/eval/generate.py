"""Generating the evaluation videos into a folder, resumably, so sampling and feature extraction can run apart.

    OUT/plan.json                 N, the per-class allocation and prompts, the sampler settings, seeds, the model
    OUT/00000_ApplyEyeMakeup.mp4  video i, sampled with seed + i
    OUT/00000_ApplyEyeMakeup.json its prompt, class, seed and every sampler setting; written last: the "done" marker

A rerun skips the videos whose mp4 and JSON both exist; a rerun with other settings into the same folder is refused,
so a folder never mixes two protocols.

Videos are written as H.264 at CRF 10 (`EVAL_CRF`, recorded in plan.json), not the usual 23: lossy compression
blurs texture and motion detail, which moves I3D / C3D features and so FVD and IS; a near-lossless encode keeps the
measured numbers close to what the model made, at a modest cost in file size.

The protocol's default video is one 16-frame generation (`num_clips=1, num_frames=16`): FVD (I3D) and IS (C3D) are
computed on 16-frame clips, and a single clip has no seam. Joined clips are worse for these metrics either way: with
"drop" every 16-frame window jumps back about M frames at each seam, with "keep" the motion runs backwards for M
frames after each seam; neither is motion the model made up as one clip. (The U-Net's frame embedding is sinusoidal,
so 16 frames are in reach of a model trained on 8; `--clips 2 --frames 8 --overlap keep` is the VidRD-style
alternative, flagged in the table.)

Sampler defaults follow the release's evaluator (anonymous0x233/ReuseAndDiffuse@3976e94, configs/example.yaml and
model/model.py `SDVideoModelEvaluator`): 50 DDIM steps (η = 0), guidance 10, negative prompt "watermark", seed 42,
M = 4, β = 4, g = 0.4. That evaluator makes one 8-frame clip per prompt (`num_generated_clips: 1`, its pipeline's
default `num_frames=8`), too short for I3D / C3D. What the release does not say (its evaluator writes GIFs and scores
CLIPSIM only; no UCF-101 script is public): the number of frames and the frame rate of the paper's UCF-101 videos. We write 8 fps, the rate
our trainer samples clips at (`sample_fps`), and match the real clips to it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from vidrd_io.fs import write_json_atomic
from vidrd_model.eval.videos import VideoRef

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
PLAN_FORMAT = 1
EVAL_CRF = 10  # H.264 constant rate factor of the written videos (x264's default is 23; 0 is lossless)
STALE_TEMP_SECONDS = 3600  # a temporary file untouched this long is a killed run's, not a running one's


@dataclass(frozen=True)
class SamplerSettings:
    """Everything that decides a video besides its prompt and seed (the pipeline's argument names)."""

    num_clips: int = 1
    num_frames: int = 16
    overlap_frames: int = 4
    overlap: str = "keep"
    num_inference_steps: int = 50
    guidance_scale: float = 10.0  # the release's evaluator (configs/example.yaml guidance_scale)
    noise_recycle: float = 4.0
    denoise_guidance: float = 0.4
    negative_prompt: str = "watermark"  # the release's evaluator passes negative_prompt=["watermark"] * batch
    height: int | None = None  # None: the model's own size (resolved before the plan is written)
    width: int | None = None
    fps: float = 8.0
    dtype: str = "fp32"
    decode_chunk_size: int | None = None
    decode_per_frame: bool = False  # the release's decoding (its temporal VAE layers then never run)

    @property
    def frames_per_video(self) -> int:
        """Returns the written video's length: N + (K−1)(N−M) with "drop", K·N with "keep"."""
        if self.overlap == "drop":
            return self.num_frames + (self.num_clips - 1) * (self.num_frames - self.overlap_frames)
        return self.num_clips * self.num_frames

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"frames_per_video": self.frames_per_video}


@dataclass(frozen=True)
class PlannedVideo:
    """One video to generate: its place in the folder, its class, prompt and seed."""

    index: int
    class_name: str
    prompt: str
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.index:05d}_{self.class_name}"


@dataclass(frozen=True)
class GenerationPlan:
    """The whole run: N videos split over classes, one prompt per class, video i seeded with `seed` + i, written
    at H.264 CRF `crf`."""

    allocation: dict[str, int]
    prompts: dict[str, str]
    seed: int
    sampler: SamplerSettings
    model: dict
    crf: int = EVAL_CRF

    @property
    def num_videos(self) -> int:
        return sum(self.allocation.values())

    def items(self) -> list[PlannedVideo]:
        """Returns the videos class by class in class order, indices 0..N-1."""
        classes = [cls for cls, count in self.allocation.items() for _ in range(count)]
        return [PlannedVideo(i, cls, self.prompts[cls], self.seed + i) for i, cls in enumerate(classes)]

    def as_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "num_videos": self.num_videos, "allocation": self.allocation,
                "prompts": {cls: self.prompts[cls] for cls, n in self.allocation.items() if n},
                "seed": self.seed, "seeds": "video i uses seed + i (torch.Generator('cpu'))",
                "sampler": self.sampler.as_dict(), "crf": self.crf, "model": self.model}


# Sampler settings that do not change a video's frames (only memory use), left out of a folder's identity.
NOT_IDENTITY = ("decode_chunk_size",)


def _identity(plan: dict) -> dict:
    """Returns what must match for two runs to share a folder (the model by its weights, not by where it lies)."""
    keys = ("num_videos", "allocation", "prompts", "seed", "crf")
    sampler = {k: v for k, v in (plan.get("sampler") or {}).items() if k not in NOT_IDENTITY}
    return ({k: plan.get(k) for k in keys} | {"sampler": sampler}
            | {"model_sha256": (plan.get("model") or {}).get("sha256")})


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Returns "key old -> new" for every value that differs, nested keys joined by dots."""
    diffs = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key} {a!r} -> {b!r}")
    return diffs


def read_plan(out_dir: Path) -> dict | None:
    """Returns the plan.json of a generation folder, or None when it has none."""
    path = Path(out_dir) / PLAN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def open_folder(out_dir: Path, plan: GenerationPlan) -> None:
    """Writes `out_dir/plan.json`, or checks that the one there is this plan; a different one is a ValueError."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory")
    new = json.loads(json.dumps(plan.as_dict()))  # as it reads back: tuples -> lists, int keys -> str
    old = read_plan(out_dir)
    if old is not None:
        diffs = _differences(_identity(old), _identity(new))
        if diffs:
            shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise ValueError(f"{out_dir / PLAN_FILE} was written for other settings ({shown}): "
                             f"generate into a new folder, or delete this one")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / PLAN_FILE, new)


def is_done(out_dir: Path, item: PlannedVideo) -> bool:
    return (out_dir / f"{item.stem}.mp4").is_file() and (out_dir / f"{item.stem}.json").is_file()


def _planned_stems(plan: dict) -> list[tuple[str, str]]:
    """Returns (stem, class) of a plan.json's videos, in order."""
    classes = [cls for cls, count in plan["allocation"].items() for _ in range(count)]
    return [(f"{i:05d}_{cls}", cls) for i, cls in enumerate(classes)]


def missing_videos(out_dir: Path, plan: dict) -> list[str]:
    """Returns the stems of a plan.json's videos that are not (completely) in `out_dir`."""
    return [stem for stem, _ in _planned_stems(plan)
            if not ((out_dir / f"{stem}.mp4").is_file() and (out_dir / f"{stem}.json").is_file())]


def planned_refs(out_dir: Path, plan: dict) -> list[VideoRef]:
    """Returns a plan.json's videos in `out_dir` as `VideoRef`s (prompt as text, class as label), in order; only
    these are evaluated, whatever else lies in the folder."""
    out_dir = Path(out_dir).resolve()
    return [VideoRef(key=f"{stem}.mp4", path=str(out_dir / f"{stem}.mp4"), text=plan["prompts"][cls], label=cls)
            for stem, cls in _planned_stems(plan)]


def remove_stale_temps(out_dir: Path, plan: GenerationPlan, now: float | None = None) -> list[Path]:
    """Deletes (and returns) the temporary files a killed run left in `out_dir`: hidden `.NAME.*tmp*` files of this
    plan's videos or plan.json, untouched for STALE_TEMP_SECONDS. Younger ones may belong to a run still writing;
    other files are not ours. (Left-overs are harmless: hidden files are never listed as videos.)"""
    names = {PLAN_FILE} | {f"{item.stem}{ext}" for item in plan.items() for ext in (".mp4", ".json")}
    now = time.time() if now is None else now
    removed = []
    for path in Path(out_dir).glob(".*.tmp*"):
        # ".X.mp4.<pid>.<hex>.tmp.mp4" (write_mp4's), ".X.json.abc123.tmp" (write_json_atomic's mkstemp name)
        owned = any(path.name.startswith(f".{name}.") for name in names)
        try:
            stale = now - path.stat().st_mtime > STALE_TEMP_SECONDS
        except FileNotFoundError:  # its writer renamed it meanwhile
            continue
        if owned and stale and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def load_pipeline(model_dir: Path | None, device: str = "cpu", dtype: str = "fp32", *,
                  release: tuple[str, Path, Path | None] | None = None):
    """Returns our VidRDPipeline from a model folder, or with `release` = (SD 2.1-base folder or Hub id,
    ModelT2V.pth, vae_finetuned folder or None) the released model (`VidRDPipeline.from_release`); U-Net and text
    encoder in `dtype` on `device` (VAE: its own)."""
    import torch

    from vidrd_model.pipeline import VidRDPipeline

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    if release is not None:
        base, checkpoint, vae = release
        pipe = VidRDPipeline.from_release(base, str(checkpoint), str(vae) if vae else None)
    else:
        if not (Path(model_dir) / "model_index.json").is_file():
            raise ValueError(f"--model {model_dir}: not a VidRD model directory (no model_index.json)")
        pipe = VidRDPipeline.from_pretrained(model_dir)
    pipe.unet.to(device=device, dtype=dtypes[dtype])
    if pipe.text_encoder is not None:
        pipe.text_encoder.to(device=device, dtype=dtypes[dtype])
    pipe.vae.to(device=device)
    return pipe


def resolve_size(pipe, sampler: SamplerSettings) -> SamplerSettings:
    """Returns `sampler` with height and width filled in from the model's own size where they are None."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return dataclasses.replace(sampler, height=sampler.height or size, width=sampler.width or size)


@dataclass
class GenerationSummary:
    written: int
    skipped: int
    seconds: float


def generate_videos(pipe, plan: GenerationPlan, out_dir: Path, *, device: str = "cpu",
                    progress: bool = True) -> GenerationSummary:
    """Returns what was done after writing every planned video not yet in `out_dir` (call `open_folder` first)."""
    import numpy as np
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vidrd_io.video import write_mp4
    from vidrd_model.provenance import software_versions

    out_dir = Path(out_dir)
    for stale in remove_stale_temps(out_dir, plan):
        log.info("removed %s, left by a run killed while writing", stale)
    s = plan.sampler
    items = plan.items()
    todo = [item for item in items if not is_done(out_dir, item)]
    pipe.set_progress_bar_config(disable=True)
    scheduler = {"class": type(pipe.scheduler).__name__, "eta": 0.0,
                 **{k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}}
    versions = software_versions()
    started = time.perf_counter()
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("generating", total=len(items), completed=len(items) - len(todo))
        for item in todo:
            clips = []
            t0 = time.perf_counter()
            pipe(prompt=item.prompt, negative_prompt=s.negative_prompt or None, num_frames=s.num_frames,
                 num_clips=s.num_clips, num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
                 generator=torch.Generator("cpu").manual_seed(item.seed), overlap_frames=s.overlap_frames,
                 noise_recycle=s.noise_recycle, denoise_guidance=s.denoise_guidance, overlap=s.overlap,
                 height=s.height, width=s.width, decode_chunk_size=s.decode_chunk_size,
                 decode_per_frame=s.decode_per_frame, output_type="np",
                 callback_on_clip_end=lambda _, frames: clips.append(frames[0]))
            video = (np.concatenate(clips) * 255).round().astype(np.uint8)  # [0, 1] -> uint8, as diffusers does
            write_mp4(out_dir / f"{item.stem}.mp4", video, fps=s.fps, crf=plan.crf)
            write_json_atomic(out_dir / f"{item.stem}.json", {
                "video": f"{item.stem}.mp4", "frames": len(video), "index": item.index, "class": item.class_name,
                "prompt": item.prompt, "seed": item.seed, "generator": "torch.Generator('cpu')", **s.as_dict(),
                "crf": plan.crf, "scheduler": scheduler, "model": plan.model, "device": device, "versions": versions,
                "seconds": round(time.perf_counter() - t0, 2),
            })
            bar.advance(task)
    return GenerationSummary(len(todo), len(items) - len(todo), time.perf_counter() - started)
