"""Probe and decode videos (decord, PyAV fallback) and write H.264 mp4 with PyAV.

Times come from the stream's timestamps, never from frame count × fps, so variable-frame-rate files
are cut where their frames really are. Frames are returned upright (rotation metadata applied).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from vidrd_io.fs import atomic_write
from vidrd_io.members import local_file

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
    # where the timestamps come from: "decord", "pyav" (decord's failed the sanity check, PyAV's passed) or
    # "index" (frame index / average rate: neither backend gave usable ones)
    timestamp_source: str = "decord"

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("timestamps")
        return d


def open_container(path: str):
    """Return a PyAV container open for reading; metadata that is not UTF-8 (a corrupt header's tags) is read with
    replacement characters instead of failing the open (PyAV's default raises UnicodeDecodeError)."""
    import av

    return av.open(local_file(path), metadata_errors="replace")


def _rotation_pyav(path: str) -> int:
    try:
        with open_container(path) as container:
            frame = next(container.decode(video=0))
            return int(getattr(frame, "rotation", 0) or 0)
    except Exception:  # noqa: BLE001 - rotation is best-effort metadata
        return 0


def _open_decord(path: str, rotation: bool, reader: str = "decord"):
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    if n == 0:
        raise VideoError("video has no frames")
    fps = float(vr.get_avg_fps())
    starts, end, source = _checked_timestamps(path, vr.get_frame_timestamp(range(n)), fps)
    if source == "index":  # decord seeks by the timestamps it got wrong (it returns wrong frames): count frames
        h, w = vr.get_batch([0]).asnumpy().shape[1:3]  # eva-decord returns frames upright
        degrees = _rotation_pyav(path)
        info = VideoInfo(end, n, fps, int(w), int(h), degrees, "decord", starts, source)
        return info, lambda times: _read_frames_by_index(path, _shown(starts, times), degrees)
    if reader == "pyav" or source == "pyav":  # the forward reader places frames by PyAV's clock
        forward = ForwardReader(path, starts, vr.get_key_indices())
        h, w = forward.first.shape[:2]  # the first frame, upright, decoded by the reader that goes on from it
        info = VideoInfo(end, n, fps, int(w), int(h), forward.rotation, "decord", starts, source)
        return info, forward.read
    first = vr.get_batch([0]).asnumpy()  # eva-decord returns frames upright
    if first.ndim != 4 or first.shape[-1] != 3:  # seen on tiny widths: RGBA-sized buffers that cannot be read
        raise VideoError(f"decord returned frames of shape {first.shape}")
    h, w = first.shape[1:3]
    info = VideoInfo(end, n, fps, int(w), int(h), _rotation_pyav(path) if rotation else 0, "decord", starts, source)

    def read(times) -> np.ndarray:
        shown = _shown(starts, times)
        try:
            return vr.get_batch(shown.tolist()).asnumpy()
        except Exception as exc:  # noqa: BLE001 - a frame decord cannot decode: PyAV may
            log.debug("decord could not read %s (%s); trying PyAV", path, exc)
            return _read_frames_pyav(path, np.asarray(times, dtype=float))

    return info, read


def _checked_timestamps(path: str, ts: np.ndarray, fps: float) -> tuple[np.ndarray, float, str]:
    """Return frame start times, the end of the last frame and their source ("decord", "pyav" or "index").

    decord's own when they pass `_timestamp_problem` (on some H.264 AVI files it gives FFmpeg's "no timestamp"
    sentinel, -3.07e17 s, for every frame), else PyAV's when it decodes as many frames with sane times, else
    frame index / average rate.
    """
    n = len(ts)
    duration = _container_duration(path)
    starts, end = ts[:, 0].astype(float), float(ts[-1][1])
    problem = _timestamp_problem(starts, end, duration, fps)
    if problem is None:
        return starts, end, "decord"
    log.info("decord's timestamps of %s are unusable (%s); trying PyAV's", path, problem)
    try:
        times = _pyav_frame_times(path)
        if len(times) != n:
            raise VideoError(f"PyAV decodes {len(times)} frames, decord {n}")
        step = float(np.median(np.diff(times))) if n > 1 else (1.0 / fps if fps > 0 else 0.0)
        times = times - times[0]
        pyav_problem = _timestamp_problem(times, float(times[-1] + step), duration, fps)
        if pyav_problem is not None:
            raise VideoError(pyav_problem)
        return times, float(times[-1] + step), "pyav"
    except Exception as exc:  # noqa: BLE001 - any PyAV failure leaves the frame index as the clock
        log.info("PyAV's timestamps of %s are unusable too (%s); using frame index / average rate", path, exc)
    if not (math.isfinite(fps) and fps > 0):
        if not duration:
            raise VideoError(f"no usable timestamps ({problem}) and no frame rate or duration to count frames by")
        fps = n / duration
    return np.arange(n) / fps, n / fps, "index"


def _pyav_frame_times(path: str) -> np.ndarray:
    """Return PyAV's frame times (seconds) in the order frames come out of the decoder (display order), unsorted:
    on some AVI files they are the packets' decode-order times, and only their order gives that away."""
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        times = [np.nan if frame.pts is None else float(frame.pts * stream.time_base)
                 for frame in container.decode(stream)]
    return np.asarray(times, dtype=float)


def _timestamp_problem(starts: np.ndarray, end: float, duration: float | None, fps: float) -> str | None:
    """Return what is wrong with frame start times (seconds) and the last frame's end, or None when they are sane:
    finite, non-decreasing, not all equal, the first ≥ -tolerance, the end within twice the container's duration."""
    tolerance = max(0.5, 2.0 / fps) if math.isfinite(fps) and fps > 0 else 0.5
    if not (np.isfinite(starts).all() and math.isfinite(end)):
        return "not finite"
    if (np.diff(starts) < 0).any():
        return "decreasing"
    if starts[0] < -tolerance:
        return f"the first frame starts at {starts[0]:.6g} s"
    if end <= starts[0] or (len(starts) > 1 and starts[-1] <= starts[0]):
        return f"every frame at {starts[0]:.6g} s"
    # headers understate some durations (a variable-rate mp4 saying 2.6 s of a 3.25 s stream); a wrong clock is off
    # by far more, so the end may run to twice the stated duration
    if duration is not None and end > 2 * duration + tolerance:
        return f"the last frame ends at {end:.6g} s, the container lasts {duration:.6g} s"
    return None


def _container_duration(path: str) -> float | None:
    """Return the duration the container's header states (seconds), None when it states none."""
    import av

    try:
        with open_container(path) as container:
            if container.duration and container.duration > 0:
                return container.duration / av.time_base
            stream = container.streams.video[0] if container.streams.video else None
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:  # noqa: BLE001 - a header PyAV cannot read states nothing; decord opened the file
        return None
    return None


def _read_frames_by_index(path: str, indices: np.ndarray, rotation: int) -> np.ndarray:
    """Return frames by their position in decode output order (PyAV), for files whose timestamps are unusable."""
    wanted, frames, decoded = set(indices.tolist()), {}, 0
    with open_container(path) as container:
        for decoded, frame in enumerate(container.decode(video=0), start=1):
            if decoded - 1 in wanted:
                frames[decoded - 1] = _rotate(frame.to_ndarray(format="rgb24"), rotation)
            if len(frames) == len(wanted):
                break
    if len(frames) < len(wanted):
        raise VideoError(f"frame {min(wanted - set(frames))} not delivered (the stream ends after {decoded})")
    return np.stack([frames[i] for i in indices.tolist()])


def _shown(starts: np.ndarray, times) -> np.ndarray:
    """Index of the frame shown at each time: the last one starting at or before it."""
    return np.clip(np.searchsorted(starts, np.asarray(times, float) + 1e-6, side="right") - 1, 0, len(starts) - 1)


class ForwardReader:
    """Frames at given times, decoded forward with PyAV from the decoder's current position.

    For reading a few frames per video (a caption's middle frame): decord seeks back to the keyframe and
    converts every frame it decodes on the way; this reader keeps one decoder open from the first frame,
    seeks only backwards or to a keyframe past its position, converts only the frames asked for, and
    tells the decoder to discard frames no other frame references (`skip_frame="NONREF"`) unless one is
    asked for, which is exact: no later frame is built from them. `starts` are the probe's frame start
    times (seconds from the first frame) and `keyframes` its keyframe indices (decord's index). A frame
    the decoder does not deliver where the probe put it sends the read to `_read_frames_pyav`.
    """

    def __init__(self, path: str, starts: np.ndarray, keyframes):
        self.origin = float(starts[0])
        self.path, self.starts = path, starts - self.origin  # seconds from the first frame, as PyAV's are counted
        self.keyframes = np.asarray(sorted(set(keyframes) | {0}), dtype=int)
        diffs = np.diff(starts)
        self.tolerance = float(diffs[diffs > 0].min()) / 2 if (diffs > 0).any() else 1e-3
        self.container = open_container(path)
        self.stream = self.container.streams.video[0]
        self.stream.codec_context.thread_count = 1  # the caller parallelizes over videos
        self.position = -1  # index of the last frame decoded
        self.first_pts = None
        self._rotation = 0
        self.packets = self.container.demux(self.stream)
        self.pending: list = []  # frames decoded but not yet looked at
        frames = self._decode_until([0])
        self.first = frames[0]
        self.rotation = self._rotation

    def read(self, times) -> np.ndarray:
        shown = _shown(self.starts + self.origin, times)
        wanted = sorted(set(shown.tolist()))
        try:
            frames = dict(zip(wanted, self._decode_until(wanted)))
        except Exception as exc:  # noqa: BLE001 - a frame this reader cannot place: decode from the start
            log.debug("forward read of %s failed (%s); decoding from the start", self.path, exc)
            return _read_frames_pyav(self.path, np.asarray(times, dtype=float))
        return np.stack([frames[i] for i in shown])

    def _seek(self, index: int) -> None:
        key = int(self.keyframes[np.searchsorted(self.keyframes, index, side="right") - 1])
        if key == 0 and self.first_pts is not None:
            target = self.first_pts
        else:
            target = round(self.starts[key] / float(self.stream.time_base)) + (self.first_pts or 0)
        self.container.seek(target, stream=self.stream, backward=True)
        self.packets = self.container.demux(self.stream)
        self.pending = []
        self.position = key - 1

    def _decode_until(self, wanted: list[int]) -> list[np.ndarray]:
        out = []
        for index in wanted:
            key = self.keyframes[np.searchsorted(self.keyframes, index, side="right") - 1]  # the last one before it
            if index <= self.position or key > self.position + 1:  # behind us, or a keyframe lets us skip ahead
                self._seek(index)
            out.append(self._decode_to(index))
        return out

    def _decode_to(self, index: int) -> np.ndarray:
        time_base = float(self.stream.time_base)
        target = self.starts[index]
        for frame in self._frames(target):
            if frame.pts is None:
                continue
            if self.first_pts is None:
                self.first_pts = frame.pts
            t = (frame.pts - self.first_pts) * time_base
            if t > target + self.tolerance:
                raise VideoError(f"frame at {target:.3f} s not delivered (next: {t:.3f} s)")
            if abs(t - target) <= self.tolerance:
                self.position = index
                self._rotation = int(getattr(frame, "rotation", 0) or 0)
                return _rotate(frame.to_ndarray(format="rgb24"), self._rotation)
        raise VideoError(f"frame at {target:.3f} s not delivered (end of stream)")

    def _frames(self, target: float):
        """Decoded frames in display order; frames a packet gives beyond the one returned wait for the next read."""
        time_base = float(self.stream.time_base)
        context = self.stream.codec_context
        while True:
            while self.pending:
                yield self.pending.pop(0)
            packet = next(self.packets, None)
            if packet is None:
                return
            asked = (packet.pts is None or self.first_pts is None
                     or abs((packet.pts - self.first_pts) * time_base - target) <= self.tolerance)
            context.skip_frame = "DEFAULT" if asked else "NONREF"
            self.pending = list(packet.decode())


def _probe_decord(path: str) -> VideoInfo:
    return _open_decord(path, rotation=True)[0]


def _probe_pyav(path: str) -> VideoInfo:
    with open_container(path) as container:
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
        return VideoInfo(float(end - times[0]), len(times), fps, w, h, rotation, "pyav", times - times[0], "pyav")


def open_video(path: str | os.PathLike, rotation: bool = False, reader: str = "decord"):
    """Open a video once; return its `VideoInfo` and a function giving the frames shown at given times.

    `path` may be a URL (`s3://`, `gs://`, `http(s)://`, `file://`): it is read from the download cache (`members.local_file`).

    decord first (its reader is kept open, so many reads cost one open), PyAV when decord cannot open the
    file. `rotation=False` skips reading the rotation metadata (one PyAV decode); frames are upright either
    way. `reader="pyav"`: decord still probes, but frames come from a `ForwardReader` (cheaper when a few
    frames are read per video; it reads the rotation anyway). The reader belongs to the thread that opened it.
    """
    if reader not in ("decord", "pyav"):
        raise ValueError(f"reader must be 'decord' or 'pyav', got {reader!r}")
    path = local_file(path)  # a URL or a tar/Parquet member: its cached local copy (decord reads local files)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return _open_decord(path, rotation, reader)
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
    order = np.argsort(times)
    out: list[np.ndarray | None] = [None] * len(times)
    with open_container(path) as container:
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
    """Write uint8 `(n, H, W, 3)` frames as H.264 (yuv420p) with PyAV, atomically (`fs.atomic_write`: temp file +
    rename, or one upload when `path` is a URL).

    One encoder thread by default: stages already run one worker per core, and short clips gain little
    from x264's frame threads.
    """
    import av
    from fractions import Fraction

    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {w}x{h}")

    def encode(tmp: str) -> None:
        with av.open(tmp, mode="w", format="mp4") as container:  # the temp name does not end in .mp4
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", "threads": str(threads)}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)

    atomic_write(path, encode)
