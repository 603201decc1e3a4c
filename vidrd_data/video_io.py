"""Probe and decode videos (decord, PyAV fallback) and write H.264 mp4 with PyAV.

Times come from the stream's timestamps, never from frame count × fps, so variable-frame-rate files
are cut where their frames really are. Frames are returned upright (rotation metadata applied).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


class VideoError(Exception):
    """The file cannot be opened or decoded by any backend."""


@dataclass
class VideoInfo:
    duration: float  # seconds, end of the last frame
    num_frames: int
    fps: float  # average rate
    width: int  # as displayed (after rotation)
    height: int
    rotation: int  # degrees from the container's display matrix, 0 when none
    backend: str
    timestamps: np.ndarray | None = None  # start time of each frame (seconds)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("timestamps")
        return d


def _rotation_pyav(path: str) -> int:
    import av

    try:
        with av.open(path) as container:
            frame = next(container.decode(video=0))
            return int(getattr(frame, "rotation", 0) or 0)
    except Exception:  # noqa: BLE001 - rotation is best-effort metadata
        return 0


def _open_decord(path: str, rotation: bool):
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    if n == 0:
        raise VideoError("video has no frames")
    ts = vr.get_frame_timestamp(range(n))
    first = vr.get_batch([0]).asnumpy()  # eva-decord returns frames upright
    if first.ndim != 4 or first.shape[-1] != 3:  # seen on tiny widths: RGBA-sized buffers that cannot be read
        raise VideoError(f"decord returned frames of shape {first.shape}")
    h, w = first.shape[1:3]
    starts = ts[:, 0].astype(float)
    info = VideoInfo(float(ts[-1][1]), n, float(vr.get_avg_fps()), int(w), int(h),
                     _rotation_pyav(path) if rotation else 0, "decord", starts)

    def read(times) -> np.ndarray:
        shown = np.clip(np.searchsorted(starts, np.asarray(times, float) + 1e-6, side="right") - 1, 0, n - 1)
        try:
            return vr.get_batch(shown.tolist()).asnumpy()
        except Exception as exc:  # noqa: BLE001 - a frame decord cannot decode: PyAV may
            log.debug("decord could not read %s (%s); trying PyAV", path, exc)
            return _read_frames_pyav(path, np.asarray(times, dtype=float))

    return info, read


def _probe_decord(path: str) -> VideoInfo:
    return _open_decord(path, rotation=True)[0]


def _probe_pyav(path: str) -> VideoInfo:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        times, rotation, size = [], 0, None
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            if size is None:
                rotation = int(getattr(frame, "rotation", 0) or 0)
                size = (frame.width, frame.height)
            times.append(float(frame.pts * stream.time_base))
        if not times:
            raise VideoError("video has no decodable frames")
        times = np.sort(np.asarray(times))
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        fps = float(stream.average_rate) if stream.average_rate else (1.0 / step if step else 0.0)
        w, h = size
        if rotation % 180:
            w, h = h, w
        end = times[-1] + (step if step else (1.0 / fps if fps else 0.0))
        return VideoInfo(float(end - times[0]), len(times), fps, w, h, rotation, "pyav", times - times[0])


def open_video(path: str | os.PathLike, rotation: bool = False):
    """Open a video once; return its `VideoInfo` and a function giving the frames shown at given times.

    decord first (its reader is kept open, so many reads cost one open), PyAV when decord cannot open the
    file. `rotation=False` skips reading the rotation metadata (one PyAV decode); frames are upright either
    way. The reader belongs to the thread that opened it.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return _open_decord(path, rotation)
    except Exception as exc:  # noqa: BLE001 - decord fails on some containers/codecs; PyAV is the fallback
        log.debug("decord could not open %s (%s); trying PyAV", path, exc)
    try:
        info = _probe_pyav(path)
    except Exception as exc:  # noqa: BLE001
        raise VideoError(f"cannot decode video: {type(exc).__name__}: {exc}") from None
    return info, lambda times: _read_frames_pyav(path, np.asarray(times, dtype=float))


def probe(path: str | os.PathLike) -> VideoInfo:
    """Return duration, frame count, fps, size, rotation and per-frame timestamps of a video."""
    return open_video(path, rotation=True)[0]


def _rotate(frame: np.ndarray, rotation: int) -> np.ndarray:
    # PyAV reports the display matrix angle (counter-clockwise positive); rot90 k counts CCW turns.
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k=k)) if k else frame


def read_frames(path: str | os.PathLike, times: list[float] | np.ndarray) -> np.ndarray:
    """Return the frames shown at the given times (seconds) as uint8 `(n, H, W, 3)`, upright."""
    return open_video(path)[1](times)


def _read_frames_pyav(path: str, times: np.ndarray) -> np.ndarray:
    import av

    order = np.argsort(times)
    out: list[np.ndarray | None] = [None] * len(times)
    with av.open(path) as container:
        stream = container.streams.video[0]
        first = last = None
        k = 0
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            first = t if first is None else first
            image = _rotate(frame.to_ndarray(format="rgb24"), int(getattr(frame, "rotation", 0) or 0))
            while k < len(order) and times[order[k]] < t - first - 1e-6:
                out[order[k]] = last if last is not None else image  # shown at that time: the previous frame
                k += 1
            last = image
            if k == len(order):
                break
        while k < len(order):
            out[order[k]] = last
            k += 1
    if any(f is None for f in out):
        raise VideoError("video has no decodable frames")
    return np.stack(out)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 23, threads: int = 1) -> None:
    """Write uint8 `(n, H, W, 3)` frames as H.264 (yuv420p) with PyAV, atomically (temp file + rename).

    One encoder thread by default: stages already run one worker per core, and short clips gain little
    from x264's frame threads.
    """
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {w}x{h}")
    with av.open(os.fspath(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": str(threads)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
