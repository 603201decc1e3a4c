"""The videos a metric reads: where they are (`VideoRef`), and a fixed-size uint8 clip decoded from each.

Sources are a folder of video files (what vidrd-sample and the generator write, prompts in sibling `STEM.json`) or a
manifest directory. Decoding goes through `vidrd_io.video`, so frames are picked by their timestamps.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vidrd_data.manifest import Manifest, ManifestError, is_manifest
from vidrd_io.video import VideoError, open_video

FOLDER_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


class VideoTooShort(VideoError):
    """The video has fewer frames than the clip needs (and padding was not asked for)."""


@dataclass(frozen=True)
class VideoRef:
    """One video to evaluate: `key` names it in results and caches; `start`/`end` (seconds) cut a span of it."""

    key: str
    path: str
    start: float | None = None
    end: float | None = None
    text: str | None = None
    label: str | None = None


def list_videos(source: str | os.PathLike) -> list[VideoRef]:
    """Return the videos of a folder (recursive, sorted by relative path, hidden files left out) or of a manifest
    directory's `ok` rows."""
    source = Path(source)
    if is_manifest(source):
        return _manifest_videos(source)
    if not source.is_dir():
        raise ValueError(f"video source {source} is neither a folder of videos nor a manifest directory")
    refs = []
    for path in source.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(source).parts)  # e.g. a killed write's temp
        if path.suffix.lower() in FOLDER_EXTENSIONS and not hidden and path.is_file():
            refs.append(VideoRef(key=path.relative_to(source).as_posix(), path=str(path), text=_sidecar_prompt(path)))
    return sorted(refs, key=lambda ref: ref.key)


def _sidecar_prompt(video: Path) -> str | None:
    sidecar = video.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    prompt = data.get("prompt") if isinstance(data, dict) else None
    return prompt if isinstance(prompt, str) else None


def _manifest_videos(path: Path) -> list[VideoRef]:
    try:
        manifest = Manifest.open(path).require_complete(hint="a stage still running or killed? re-run it first")
    except ManifestError as exc:
        raise ValueError(f"cannot read manifest {path}: {exc}") from None
    columns = ["sample_id", "source_path", "start_time", "end_time", "caption", "label"]
    rows = manifest.read(columns=columns, status="ok").to_pylist()
    return [
        VideoRef(
            key=row["sample_id"],
            path=manifest.resolve(row["source_path"]),
            start=row["start_time"],
            end=row["end_time"],
            text=row["caption"],
            label=row["label"],
        )
        for row in rows
        if row["source_path"]
    ]


def fps_stride(video_fps: float, target_fps: float) -> int:
    """Returns the frame stride that brings a `video_fps` video nearest to `target_fps` (≥ 1): round(ratio).

    An integer stride keeps real frames (no blending) as stylegan-v's `sample_every_n_frames` does; 25 fps UCF-101
    against 8 fps generated clips gives 3 (8.33 fps)."""
    if video_fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be > 0, got {video_fps} and {target_fps}")
    return max(1, round(video_fps / target_fps))


def load_clip(ref: VideoRef, num_frames: int, size: int, stride: int = 1, pad: bool = False,
              match_fps: float | None = None) -> np.ndarray:
    """Return uint8 `[num_frames, size, size, 3]`: every `stride`-th frame from `ref.start` (the first frame when
    None), short side resized to `size` (antialiased) and centre-cropped. With `match_fps` the stride is instead
    the video's own `fps_stride(fps, match_fps)`, so clips of any frame rate span about the same time.

    Clips always start there, never at a random offset: the same video gives the same clip in every run, so
    feature caches and real statistics can be reused and a number can be reproduced.

    A video with too few frames raises VideoTooShort, or with `pad=True` repeats its last frame. A video that cannot
    be decoded raises VideoError, a missing or unreadable file OSError.
    """
    info, read = open_video(ref.path)
    if match_fps is not None:
        stride = fps_stride(info.fps, match_fps)
    times = np.asarray(info.timestamps, dtype=float)
    start = ref.start or 0.0
    keep = times >= start - 1e-6
    if ref.end is not None:
        keep &= times < ref.end - 1e-6
    times = times[keep][::stride][:num_frames]
    if len(times) == 0:
        raise VideoTooShort(f"no frames between {start:.3f}s and {ref.end}s")
    if len(times) < num_frames:
        if not pad:
            raise VideoTooShort(f"{len(times)} frames (stride {stride}), need {num_frames}")
        times = np.concatenate([times, np.full(num_frames - len(times), times[-1])])
    frames = _read(read, times)
    return np.stack([_resize_center_crop(frame, size) for frame in frames])


def _read(read, times) -> np.ndarray:
    """Return `read(times)`, a decoder error (not a file error: those stay OSError) raised as VideoError."""
    from av.error import FFmpegError

    try:
        return read(times)
    except FFmpegError as exc:
        if isinstance(exc, OSError):
            raise
        raise VideoError(f"cannot decode frames: {type(exc).__name__}: {exc}") from None


def _resize_center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """Return `frame` with its short side resized to `size` (bicubic, antialiased by PIL) and the centre square."""
    h, w = frame.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = Image.fromarray(frame).resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def inputs_digest(refs: list[VideoRef]) -> str:
    """Return a sha256 over each video's key, path, file size, mtime_ns and span: changes when any input does."""
    digest = hashlib.sha256()
    for ref in refs:
        try:
            stat = os.stat(ref.path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size = mtime = None
        digest.update(json.dumps([ref.key, ref.path, size, mtime, ref.start, ref.end]).encode("utf-8"))
    return digest.hexdigest()


def first_fps(refs: list[VideoRef]) -> float | None:
    """Returns the frame rate of the first of `refs` that can be probed (None when none can): a set's frame rate for
    receipts and for matching the real clips to it (generated sets share one rate)."""
    for ref in refs:
        try:
            return float(open_video(ref.path)[0].fps)
        except (VideoError, OSError):
            continue
    return None
