"""Long-video samplers side by side: each mode of VidRDPipeline (vidrd_model.long_video) makes videos of the same
lengths from the same prompts and seeds, and each video is measured the same way.

Metrics (per mode and length, means over the prompts):
- seconds per output frame: wall time of the pipeline call (decoding included) / frames;
- seam discontinuity: the change between consecutive frames at the seams (frames kN−1 → kN, N = frames per clip or
  window) against inside clips, as mean |Δ| of pixels in [0, 1] and as 1 − cos of CLIP image embeddings; `ratio`
  = seam / inside (1: seams look like any other frame step). For vidrd and independent these are the clips' joins;
  FreeNoise, Gen-L-Video and FIFO have no clip joins, and the same positions serve as their control;
- content drift: cos of the mean CLIP image embedding of the first N frames and of the last N frames, and the mean
  CLIP frame–prompt cosine of the first and of the last N frames;
- FVD on W-frame windows (stylegan-v's long-video protocol: FVD₁₆ and FVD₁₂₈ on the first W frames of each video,
  generated from t = 0; real clips of W frames from the start of each real video, the last frame repeated when one
  is shorter), with the I3D network and Fréchet distance of vidrd_model.eval.fvd. Needs ≥ 2 videos per side.

Every video is written as mp4 with a JSON of its measures (atomically); a rerun with the same settings reuses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidrd_io.fs import write_json_atomic
from vidrd_io.video import write_mp4
from vidrd_model.eval.extractors import i3d_features
from vidrd_model.eval.receipt import CLIP_START, RESIZE_POLICY, keys_digest, make_receipt
from vidrd_model.eval.fvd import feature_statistics, frechet_distance, real_statistics
from vidrd_model.eval.videos import VideoRef, load_clip

log = logging.getLogger(__name__)

FLAG_MEANINGLESS = "tiny random model and stand-in networks: every number here is meaningless (a smoke test)"


@dataclass
class LongVideoSettings:
    """What a `vidrd-eval longvideo` run samples and measures (recorded in results.json)."""

    modes: tuple[str, ...] = ("vidrd", "independent", "freenoise", "fifo", "gen-l-video")
    lengths: tuple[int, ...] = (64, 128)
    clip_frames: int = 16  # N: frames per clip (vidrd, independent) or per window (the others)
    steps: int = 50
    guidance: float = 7.5
    negative_prompt: str = ""
    seed: int = 42  # prompt i uses seed + i, in every mode and length
    height: int | None = None
    width: int | None = None
    fps: float = 8.0
    fvd_windows: tuple[int, ...] = (16, 128)
    resolution: int = 224  # I3D input: short side resized, centre-cropped
    real_stride: int = 1
    match_fps: float | None = None  # real clips: each video's stride is round(its fps / this) (--real-stride auto)
    mode_options: dict = field(default_factory=dict)  # mode → keyword options of its sampler

    def as_dict(self) -> dict:
        """Returns the settings as JSON-ready values."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def key(self, model: dict) -> str:
        """Returns the sha256 of what a generated video depends on (sampling settings and model)."""
        sampling = {k: v for k, v in self.as_dict().items() if k not in ("fvd_windows", "resolution", "real_stride",
                                                                         "match_fps")}
        return hashlib.sha256(json.dumps({"settings": sampling, "model": model}, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- metrics


def seam_starts(num_frames: int, clip_frames: int) -> list[int]:
    """Returns the frames t = kN (k ≥ 1, t < `num_frames`) that start a clip: the step t−1 → t crosses a seam."""
    return list(range(clip_frames, num_frames, clip_frames))


def pixel_changes(frames: np.ndarray) -> np.ndarray:
    """Returns the mean absolute change of pixels in [0, 1] from each frame to the next, (T−1,), of uint8 (T, H, W, 3)."""
    frames = np.asarray(frames, dtype=np.float64) / 255.0
    return np.abs(np.diff(frames, axis=0)).reshape(len(frames) - 1, -1).mean(axis=1)


def embedding_changes(embeddings: np.ndarray) -> np.ndarray:
    """Returns 1 − cos between each frame's embedding and the next one's, (T−1,), of (T, D) embeddings."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return 1.0 - np.sum(unit[:-1] * unit[1:], axis=1)


def seam_discontinuity(changes: np.ndarray, seams: list[int]) -> dict:
    """Returns {"seam", "inside", "ratio"}: the mean of `changes` (index t−1 = step t−1 → t) over the steps into a
    seam frame t and over all other steps, and seam / inside (None when a side is empty or inside is 0)."""
    at_seam = np.zeros(len(changes), dtype=bool)
    at_seam[[t - 1 for t in seams]] = True
    seam = float(changes[at_seam].mean()) if at_seam.any() else None
    inside = float(changes[~at_seam].mean()) if (~at_seam).any() else None
    ratio = seam / inside if seam is not None and inside else None
    return {"seam": seam, "inside": inside, "ratio": ratio}


def content_drift(image_embeddings: np.ndarray, text_embedding: np.ndarray, clip_frames: int) -> dict:
    """Returns {"first_last", "prompt_first", "prompt_last"}: cos of the mean (unit) image embedding of the first
    and of the last `clip_frames` frames, and the mean frame–prompt cosine of each of those two clips."""
    unit = image_embeddings / np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    text = text_embedding / np.linalg.norm(text_embedding)
    first, last = unit[:clip_frames], unit[-clip_frames:]
    a, b = first.mean(axis=0), last.mean(axis=0)
    return {"first_last": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
            "prompt_first": float((first @ text).mean()), "prompt_last": float((last @ text).mean())}


def clip_embeddings(scorer, frames: np.ndarray, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns CLIP embeddings (float64) of uint8 frames (T, H, W, 3), (T, D), and of `text`, (D,), with a
    ClipScorer's model, preprocessing and tokenizer (the ones CLIPSIM uses)."""
    import torch
    from PIL import Image

    pixels = torch.stack([scorer.preprocess(Image.fromarray(frame)) for frame in frames]).to(scorer.device)
    with torch.no_grad():
        image = scorer.model.encode_image(pixels).double().cpu().numpy()
        words = scorer.model.encode_text(scorer.tokenizer([text]).to(scorer.device)).double().cpu().numpy()[0]
    return image, words


def fvd_of_features(generated: np.ndarray, real_mu: np.ndarray, real_sigma: np.ndarray) -> float:
    """Returns the Fréchet distance of the generated features' Gaussian to the real one's."""
    mu, sigma = feature_statistics(generated)
    return frechet_distance(mu, sigma, real_mu, real_sigma)


# ---------------------------------------------------------------------------------------------- sampling


def sample_video(pipe, mode: str, prompt: str, length: int, settings: LongVideoSettings, seed: int,
                 device: str = "cpu") -> tuple[np.ndarray, float]:
    """Returns one video of `length` uint8 frames (T, H, W, 3) from `mode`, and the seconds the pipeline took.

    Pieces are converted to uint8 as they arrive (`callback_on_clip_end`), so the float frames of one piece at most
    are held. vidrd makes ⌈length/N⌉ clips with overlap "keep" and M = N/2 (the release: N = 8, M = 4), cut to
    `length`.
    """
    import torch

    pieces = []

    def keep(_, frames):
        pieces.append((np.clip(frames[0], 0, 1) * 255).round().astype(np.uint8))

    generator = torch.Generator(device=device).manual_seed(seed)
    common = dict(prompt=prompt, negative_prompt=settings.negative_prompt or None, num_frames=settings.clip_frames,
                  num_inference_steps=settings.steps, guidance_scale=settings.guidance, generator=generator,
                  height=settings.height, width=settings.width, output_type="np", callback_on_clip_end=keep,
                  long_video=mode)
    if mode == "vidrd":
        common.update(num_clips=math.ceil(length / settings.clip_frames), overlap="keep",
                      **{"overlap_frames": settings.clip_frames // 2, **settings.mode_options.get(mode, {})})
    else:
        common.update(num_frames_total=length, long_video_options=settings.mode_options.get(mode, {}))
    start = time.perf_counter()
    pipe(**common)
    seconds = time.perf_counter() - start
    return np.concatenate(pieces, axis=0)[:length], seconds


def seam_strip(frames: np.ndarray, seams: list[int], context: int = 2) -> np.ndarray:
    """Returns one image: a row per seam of the frames t−context … t+context−1 around it, side by side."""
    rows = []
    for t in seams:
        picked = [frames[min(max(i, 0), len(frames) - 1)] for i in range(t - context, t + context)]
        rows.append(np.concatenate(picked, axis=1))
    return np.concatenate(rows, axis=0) if rows else frames[0]


def measure_video(frames: np.ndarray, prompt: str, settings: LongVideoSettings, scorer) -> dict:
    """Returns the video's seam discontinuity (pixels, CLIP) and content drift."""
    seams = seam_starts(len(frames), settings.clip_frames)
    image, text = clip_embeddings(scorer, frames, prompt)
    return {"frames": len(frames), "seams": seams,
            "seam_pixels": seam_discontinuity(pixel_changes(frames), seams),
            "seam_clip": seam_discontinuity(embedding_changes(image), seams),
            "drift": content_drift(image, text, settings.clip_frames)}


def generate_and_measure(pipe, prompts: list[str], settings: LongVideoSettings, out_dir: Path, scorer,
                         model: dict, device: str = "cpu") -> list[dict]:
    """Returns one record per (mode, length, prompt): its mp4, seconds, seconds per frame and measures; each video
    and record is written as soon as it is made (videos/MODE/LENGTHf/NNN.mp4 and .json, plus a seam strip PNG) and
    reused by a rerun of the same settings and model."""
    from PIL import Image

    key = settings.key(model)
    records = []
    for mode in settings.modes:
        for length in settings.lengths:
            for index, prompt in enumerate(prompts):
                stem = out_dir / "videos" / mode / f"{length}f" / f"{index:03d}"
                record_path = stem.with_suffix(".json")
                if record_path.is_file() and stem.with_suffix(".mp4").is_file():
                    record = json.loads(record_path.read_text(encoding="utf-8"))
                    if record.get("key") == key:
                        records.append(record)
                        continue
                frames, seconds = sample_video(pipe, mode, prompt, length, settings, settings.seed + index, device)
                write_mp4(stem.with_suffix(".mp4"), frames, settings.fps)
                strip = out_dir / "seams" / f"{mode}_{length}f_{index:03d}.png"
                strip.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(seam_strip(frames, seam_starts(length, settings.clip_frames))).save(strip)
                record = {"key": key, "mode": mode, "length": length, "prompt": prompt, "index": index,
                          "seed": settings.seed + index, "video": str(stem.with_suffix(".mp4")),
                          "seam_strip": str(strip), "seconds": seconds, "seconds_per_frame": seconds / len(frames),
                          **measure_video(frames, prompt, settings, scorer)}
                write_json_atomic(record_path, record)
                log.info("%s %d frames, prompt %d: %.2f s", mode, length, index, seconds)
                records.append(record)
    return records


# ---------------------------------------------------------------------------------------------- FVD


def fvd_by_window(records: list[dict], real_refs: list[VideoRef], ext, settings: LongVideoSettings,
                  out_dir: Path) -> dict:
    """Returns {"W": {mode: {"LENGTHf": FVD or None, ...}}, ...}: FVD of the first W frames of each video of a
    length ≥ W against the real videos' first W frames (statistics cached in out_dir/real_stats_W.npz)."""
    result = {}
    for window in settings.fvd_windows:
        clip = {"num_frames": window, "resolution": settings.resolution, "real_stride": settings.real_stride,
                "match_fps": settings.match_fps, "pad_short": True}
        real = real_statistics(real_refs, ext, clip, cache_path=out_dir / f"real_stats_{window}.npz",
                               progress=False, overwrite=True)
        per_mode = {}
        for mode in settings.modes:
            per_mode[mode] = {}
            for length in settings.lengths:
                videos = [r for r in records if r["mode"] == mode and r["length"] == length]
                if length < window or len(videos) < 2:
                    per_mode[mode][f"{length}f"] = None  # too short for the window, or too few for a covariance
                    continue
                clips = np.stack([load_clip(VideoRef(key=r["video"], path=r["video"]), window, settings.resolution)
                                  for r in videos])
                per_mode[mode][f"{length}f"] = fvd_of_features(i3d_features(ext, clips), real.mu, real.sigma)
        result[str(window)] = {"real_videos": real.count, "i3d_sha256": ext.sha256, "fvd": per_mode}
    return result


# ---------------------------------------------------------------------------------------------- summary & report


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(records: list[dict], settings: LongVideoSettings) -> dict:
    """Returns {mode: {"LENGTHf": means over prompts of every measure}}."""
    summary = {}
    for mode in settings.modes:
        summary[mode] = {}
        for length in settings.lengths:
            rows = [r for r in records if r["mode"] == mode and r["length"] == length]
            summary[mode][f"{length}f"] = {
                "videos": len(rows),
                "seconds_per_frame": _mean(r["seconds_per_frame"] for r in rows),
                **{f"{kind}_{part}": _mean(r[kind][part] for r in rows)
                   for kind in ("seam_pixels", "seam_clip") for part in ("seam", "inside", "ratio")},
                **{f"drift_{part}": _mean(r["drift"][part] for r in rows)
                   for part in ("first_last", "prompt_first", "prompt_last")},
            }
    return summary


COLUMNS = (
    ("s/frame", "seconds_per_frame"), ("seam px ratio", "seam_pixels_ratio"), ("seam CLIP ratio", "seam_clip_ratio"),
    ("first↔last CLIP", "drift_first_last"), ("prompt first", "drift_prompt_first"),
    ("prompt last", "drift_prompt_last"),
)


def format_number(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def report_markdown(results: dict) -> str:
    """Returns the markdown report: the flag (if any), a table per length, FVD, the plots and the seam strips."""
    settings = results["settings"]
    lines = ["# Long-video samplers side by side", ""]
    if results.get("flag"):
        lines += [f"**{results['flag']}**", ""]
    lines += [f"{len(results['prompts'])} prompts, N = {settings['clip_frames']} frames per clip/window, "
              f"{settings['steps']} DDIM steps, guidance {settings['guidance']}, seed {settings['seed']} + prompt "
              "index. Seam ratios: change across seams / change inside clips (1 = no visible seam).", ""]
    if results.get("receipt"):
        lines += [f"Receipt `{results['receipt']['id']}` (results.json holds it whole).", ""]
    fvd = results.get("fvd") or {}
    for length_key in next(iter(results["summary"].values()), {}):
        windows = [w for w in fvd if fvd[w]["fvd"] and any(m.get(length_key) is not None
                                                              for m in fvd[w]["fvd"].values())]
        header = ["mode", *[c for c, _ in COLUMNS], *[f"FVD{w}" for w in windows]]
        lines += [f"## {length_key.rstrip('f')} frames", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for mode, by_length in results["summary"].items():
            row = by_length[length_key]
            cells = [format_number(row[k]) for _, k in COLUMNS] + [format_number(fvd[w]["fvd"][mode][length_key]) for w in windows]
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    if not fvd:
        lines += ["FVD: not computed (pass --real and --i3d).", ""]
    lines += ["![metrics](metrics.png)", "", "## Frames around each seam (first prompt)", ""]
    for mode, by_length in results["summary"].items():
        for length_key in by_length:
            lines.append(f"- {mode}, {length_key}: ![{mode} {length_key}](seams/{mode}_{length_key}_000.png)")
    return "\n".join(lines) + "\n"


def plot_metrics(results: dict, path: Path) -> None:
    """Writes a PNG of bar charts: each column of the report, one bar group per mode, one bar per length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    modes = list(summary)
    lengths = list(next(iter(summary.values()), {}))
    figure, axes = plt.subplots(1, len(COLUMNS), figsize=(3.2 * len(COLUMNS), 3.2))
    width = 0.8 / max(1, len(lengths))
    for axis, (title, key) in zip(axes, COLUMNS):
        for j, length_key in enumerate(lengths):
            values = [summary[m][length_key][key] for m in modes]
            axis.bar(np.arange(len(modes)) + j * width, [np.nan if v is None else v for v in values], width,
                     label=length_key)
        axis.set_title(title, fontsize=9)
        axis.set_xticks(np.arange(len(modes)) + width * (len(lengths) - 1) / 2, modes, rotation=45, fontsize=7)
    axes[0].legend(fontsize=7)
    if results.get("flag"):
        figure.suptitle("meaningless numbers: tiny random model", color="red", fontsize=9)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=80)
    plt.close(figure)
    tmp.replace(path)


def run_longvideo(pipe, prompts: list[str], settings: LongVideoSettings, out_dir: Path, scorer, *, model: dict,
                  real_refs: list[VideoRef] | None = None, ext=None, flag: str | None = None,
                  device: str = "cpu") -> dict:
    """Returns the results (and writes out_dir/results.json, report.md, metrics.png): every mode's videos of every
    length for `prompts`, measured; FVD when `real_refs` and the I3D `ext` are given."""
    from vidrd_model.eval.report import write_text_atomic
    from vidrd_model.provenance import software_versions

    out_dir.mkdir(parents=True, exist_ok=True)
    records = generate_and_measure(pipe, prompts, settings, out_dir, scorer, model, device)
    fvd = fvd_by_window(records, real_refs, ext, settings, out_dir) if real_refs and ext is not None else None
    versions = software_versions()
    receipt = make_receipt(
        metric="longvideo", settings=settings.as_dict(), model=model, prompts=keys_digest(prompts),
        num_prompts=len(prompts), videos=len(records), clip_model=getattr(scorer, "model_id", None),
        real={"videos": len(real_refs), "keys": keys_digest(r.key for r in real_refs), "i3d_sha256": ext.sha256,
              "resize": RESIZE_POLICY, "start": CLIP_START} if fvd is not None else None,
        versions=versions)
    results = {"command": "longvideo", "flag": flag, "settings": settings.as_dict(), "model": model,
               "prompts": prompts, "clip_model": getattr(scorer, "model_id", None), "summary":
               summarize(records, settings), "fvd": fvd, "videos": records, "versions": versions,
               "receipt": receipt}
    write_json_atomic(out_dir / "results.json", results)
    plot_metrics(results, out_dir / "metrics.png")
    write_text_atomic(out_dir / "report.md", report_markdown(results))
    return results
