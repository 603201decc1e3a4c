"""A manifest row as the frames of its clip (cut from its source span, or its lazy pseudo-video rendered), the mp4
bytes of that clip, and the bucket it trains in."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from vidrd_io.video import open_video, write_mp4

EXPORTED_KINDS = ("video_clip", "pseudo_video")
# Aspect-ratio buckets (width / height) a clip is snapped to: the common video shapes, portrait and landscape.
ASPECTS = (9 / 21, 9 / 16, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 16 / 9, 21 / 9)
SIDE_STEP = 64  # resolution buckets: the short side rounded down to a multiple of this (latent-friendly sizes)
FRAME_STEP = 8  # frame-count buckets: rounded down to a multiple of this (VidRD trains on 8-frame windows)


def clip_frames(row: dict, path: str) -> tuple[np.ndarray, float]:
    """Return the uint8 `(n, H, W, 3)` frames of a row (`path`: its resolved source) and their rate.

    A `video_clip` row gives the source's frames `[start_frame, end_frame)` read at their own timestamps (so a
    variable-frame-rate source is cut where its frames are); a `pseudo_video` row is rendered from its image and
    motion by the same function the trainer uses.
    """
    kind = row.get("kind")
    if kind == "pseudo_video":
        from vidrd_data.stages.pseudo_video import render_row

        return render_row(row, path), float(row["fps"])
    if kind != "video_clip":
        raise ValueError(f"kind {kind!r} is not exported (only {', '.join(EXPORTED_KINDS)})")
    info, read = open_video(path)
    first = int(row.get("start_frame") or 0)
    stop = int(row["end_frame"]) if row.get("end_frame") is not None else info.num_frames
    stop = min(stop, info.num_frames)
    if stop <= first:
        raise ValueError(f"frames [{first}, {stop}) of a {info.num_frames}-frame video hold no clip")
    return read(np.asarray(info.timestamps[first:stop], dtype=float)), float(row.get("fps") or info.fps)


def mp4_bytes(frames: np.ndarray, fps: float, crf: int) -> bytes:
    """Return frames encoded as H.264 mp4 (a row or column dropped from an odd size: yuv420p needs even sides)."""
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    with tempfile.TemporaryDirectory(prefix="vidrd-export-") as tmp:  # PyAV's mp4 muxer needs a seekable file
        target = os.path.join(tmp, "clip.mp4")
        write_mp4(target, frames, fps, crf=crf)
        with open(target, "rb") as f:
            return f.read()


def bucket_name(width: int, height: int, num_frames: int) -> str:
    """Return the bucket of a clip: `r{short side // 64 * 64}_a{nearest of ASPECTS:.2f}_f{frames // 8 * 8}`."""
    side = max(min(width, height) // SIDE_STEP * SIDE_STEP, SIDE_STEP)
    aspect = min(ASPECTS, key=lambda a: abs(np.log(width / height / a)))
    frames = num_frames // FRAME_STEP * FRAME_STEP or num_frames  # shorter than one step: its own count
    return f"r{side}_a{aspect:.2f}_f{frames}"
