"""Clips of a video: windows on the stream's timestamps, the frames to caption in each, how frames are grouped
into model batches, and which of a clip's frame captions becomes its caption."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FRAME_POLICIES = ("middle", "longest", "concat")
CONCAT_SEPARATOR = "; "


@dataclass
class Clip:
    """One clip of a video: whole frames `[start_frame, end_frame)` and the frames to caption."""

    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    frame_times: list[float]
    captions: list[str | None] = field(default_factory=list)
    error: str | None = None


def clip_windows(
    timestamps: np.ndarray, duration: float, span: tuple[float, float], options
) -> list[tuple[int, int]]:
    """Return the clips of `span` as frame ranges `[start, end)`, each window snapped to the frames inside it.

    Windows are `clip_seconds` long every `stride_seconds`; without `clip_seconds`, the whole span when it is at most
    `max_seconds`, else non-overlapping `max_seconds` windows. Clips shorter than `min_seconds` or than 2 frames are
    skipped. `options`: the caption stage's `CaptionOptions` (`clip_seconds`, `stride_seconds`, `max_seconds`,
    `min_seconds`).
    """
    start, end = span
    if options.clip_seconds is not None:
        length, stride = options.clip_seconds, options.stride_seconds or options.clip_seconds
    elif end - start <= options.max_seconds:
        length = stride = end - start
    else:
        length = stride = options.max_seconds
    eps = 1e-6
    n = len(timestamps)
    windows: list[tuple[int, int]] = []
    t0 = start
    while t0 < end - eps:
        t1 = min(t0 + length, end)
        first = int(np.searchsorted(timestamps, t0 - eps, side="left"))
        stop = int(np.searchsorted(timestamps, t1 - eps, side="left"))
        clip_end_time = float(timestamps[stop]) if stop < n else duration
        if stop - first >= 2 and clip_end_time - float(timestamps[first]) >= options.min_seconds - eps:
            if not windows or windows[-1] != (first, stop):
                windows.append((first, stop))
        if t1 >= end - eps:
            break
        t0 += stride
    return windows


def frame_times(timestamps: np.ndarray, first: int, stop: int, clip_start: float, clip_end: float, k: int) -> list[float]:
    """Return the start times of the frames shown at the centres of k equal parts of a clip (unique, in order)."""
    targets = clip_start + (np.arange(k) + 0.5) * (clip_end - clip_start) / k
    indices = np.clip(np.searchsorted(timestamps, targets + 1e-6, side="right") - 1, first, stop - 1)
    return [float(timestamps[i]) for i in np.unique(indices)]


def choose_caption(captions: list[str], policy: str) -> str:
    """Return the clip's caption from its frames' captions: the middle one, the longest, or the unique ones joined."""
    if policy == "middle":
        return captions[len(captions) // 2]
    if policy == "longest":
        return max(captions, key=len)  # the first of equally long ones
    return CONCAT_SEPARATOR.join(dict.fromkeys(c for c in captions if c))


def frame_groups(clips: list[Clip], size: int) -> list[list[int]]:
    """Return the clip numbers in consecutive groups of at most `size` frames (a bigger clip is a group alone)."""
    groups: list[list[int]] = [[]]
    frames = 0
    for clip_no, clip in enumerate(clips):
        if groups[-1] and frames + len(clip.frame_times) > size:
            groups.append([])
            frames = 0
        groups[-1].append(clip_no)
        frames += len(clip.frame_times)
    return groups


def input_span(row: dict) -> tuple[float | None, float | None] | None:
    """Return the input row's `(start_time, end_time)` when it gives either, else None (NaN counts as missing)."""
    start, end = (row.get(k) for k in ("start_time", "end_time"))
    start, end = (None if t is None or t != t else float(t) for t in (start, end))
    return None if start is None and end is None else (start, end)
