"""The `segment` stage: long videos → coherent segments cut by frame similarity, optionally captioned.

For each input video (or a span of it, when the input row gives one):

    decode once → every frame's change from the one before, and frames at `sample_fps` (stream timestamps)
    → embeddings of the sampled frames (CLIP or colour histograms) → cut → stitch rules → segments
    → optional captions of each segment's middle frame (MiniGPT-4 or BLIP-2) → one `video_clip` row per segment

The rules, in the order they run (defaults and reasoning in the README, "vidrd-data segment"):

1. cut: consecutive sampled frames less similar than `threshold` are in different scenes; the cut is placed at
   the frame between them that changes most from its predecessor. When no single frame there changes by
   `frame_change` or more, the scene changed gradually (fade, dissolve, fast motion) and there is no cut.
2. merge (Panda-70M's stitching): a shot change whose boundary frames are similar (≥ `threshold`) joins the
   shots into one segment, so a camera flash or a cut between two views of one scene does not split it.
   min-shot: a cut less than `min_shot_frames` after the previous one (or the start) is not taken either, as
   Panda-70M's PySceneDetect ContentDetector(min_scene_len=15) does not.
3. transition: a segment whose first and last frames are dissimilar (< `transition_threshold`) is a
   transition, not a scene: dropped.
4. static (only with `drop_static`): a segment whose frames all stay ≥ `static_threshold` similar is dropped.
5. trim: `trim` seconds come off both ends; then a segment shorter than `min_seconds` is dropped.
6. split: a segment longer than `max_seconds` is split into equal parts.

Times and frame numbers come from the stream's timestamps, so variable-frame-rate files are cut where their
frames really are. Decoding runs in a background thread, ahead of the embedder and the captioner.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.manifest import make_sample_id
from vidrd_data.run.stage import Stage, StageJob
from vidrd_data.sources import InputError
from vidrd_io.video import VIDEO_EXTENSIONS, VideoError, VideoInfo, open_container, probe, read_frames

log = logging.getLogger(__name__)

CAPTIONERS = ("minigpt4", "blip2", "none")
CAPTION_SEPARATOR = "; "
# The frame change is measured on frames about this tall (short side), whatever size the embedder wants, so
# `frame_change` means the same for every embedder; a mean over pixels barely moves between 36 and 144 rows.
CHANGE_SHORT_SIDE = 36
CHUNK_FRAMES = 64  # frames per decoded batch
EPS = 1e-6

SEGMENTATION = pa.struct(
    [
        pa.field("start_cut_time", pa.float64()),  # the cut it starts at (before trimming); null where the video
        pa.field("end_cut_time", pa.float64()),  # (or span) starts/ends, or at a split
        pa.field("start_cut_similarity", pa.float64()),  # of the sampled frames either side of that cut
        pa.field("end_cut_similarity", pa.float64()),
        pa.field("mean_similarity", pa.float64()),  # consecutive sampled frames inside (null below 2 samples)
        pa.field("min_similarity", pa.float64()),
        pa.field("rules", pa.list_(pa.string())),  # rules that produced or changed it, in order: cut merge trim split
        pa.field("num_samples", pa.int64()),  # sampled frames inside it
        pa.field("timestamps", pa.string()),  # the probe's clock: decord, pyav or index (VideoInfo.timestamp_source)
    ]
)


@dataclass(frozen=True)
class SegmentOptions:
    """The stage's parameters (its `params` in `_manifest.json`); invalid values raise ValueError.

    Thresholds left at None take the embedder's defaults (`embedders.RuleThresholds`).
    """

    embedder: str = field(default="clip", metadata={
        "help": "clip (open_clip) or histogram (colour histograms, no weights)."})
    clip: str = field(default="ViT-B-32", metadata={"help": "open_clip model name."})
    clip_pretrained: str | None = field(default="openai", metadata={"help": "open_clip pretrained tag."})
    clip_config: str | None = field(default=None, metadata={
        "help": "Local open_clip model-config JSON (offline use)."})
    clip_checkpoint: str | None = field(default=None, metadata={
        "help": "Local open_clip checkpoint for --clip-config."})
    captioner: str = field(default="none", metadata={"help": "minigpt4, blip2 or none."})
    minigpt4: str | None = field(default=None, metadata={"help": "minigpt4.json naming MiniGPT-4's three parts."})
    blip2: str | None = field(default=None, metadata={
        "help": "BLIP-2 hub id or directory, for --captioner blip2."})
    caption_frames: int = field(default=1, metadata={
        "help": "Frames captioned per segment (1: the middle one)."})
    caption_prompt: str | None = field(default=None, metadata={
        "help": "MiniGPT-4: the question; BLIP-2: the caption's start."})
    caption_max_new_tokens: int | None = field(default=None, metadata={"help": "Longest caption, in tokens."})
    sample_fps: float = field(default=2.0, metadata={"help": "Frames per second embedded."})
    threshold: float | None = field(default=None, metadata={
        "help": "Cut below this similarity of consecutive sampled frames (default: the embedder's)."})
    frame_change: float = field(default=27.0, metadata={
        "help": "A hard cut changes one frame by at least this much (HSV, PySceneDetect's scale)."})
    min_shot_frames: int = field(default=15, metadata={
        "help": "Ignore a cut this few frames after the previous one."})
    transition_threshold: float | None = field(default=None, metadata={
        "help": "Drop segments whose first and last frames are less similar."})
    drop_static: bool = field(default=False, metadata={
        "help": "Drop near-static segments.", "flags": ("--drop-static/--keep-static",)})
    static_threshold: float | None = field(default=None, metadata={
        "help": "Near-static: every frame at least this similar."})
    min_seconds: float = field(default=0.5, metadata={"help": "Drop segments (and videos) shorter than this."})
    max_seconds: float = field(default=60.0, metadata={"help": "Split longer segments evenly."})
    trim: float = field(default=0.0, metadata={"help": "Seconds trimmed off each end of a segment."})
    batch_size: int = field(default=32, metadata={"help": "Frames per embedder call."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA if available), cpu, cuda or cuda:N."})
    prefetch_chunks: int = field(default=16, metadata={
        "help": "Decoded chunks of frames queued ahead of the embedder, per worker."})

    def __post_init__(self):
        from vidrd_data.models.embedders import embedder_class

        embedder_class(self.embedder)  # raises on an unknown name
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"unknown captioner {self.captioner!r} (use {', '.join(CAPTIONERS)})")
        if self.captioner == "minigpt4" and not self.minigpt4:
            raise ValueError("captioner minigpt4 needs its parts: pass minigpt4 (a minigpt4.json, see the README)")
        if self.captioner == "blip2" and not self.blip2:
            raise ValueError("captioner blip2 needs a model: pass blip2 (a hub id or a directory)")
        if self.sample_fps <= 0:
            raise ValueError(f"sample_fps must be > 0, got {self.sample_fps}")
        for name in ("threshold", "transition_threshold", "static_threshold"):
            value = getattr(self, name)
            if value is not None and not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} is a cosine similarity in [-1, 1], got {value}")
        if self.frame_change < 0 or self.min_seconds < 0 or self.trim < 0:
            raise ValueError(
                f"frame_change, min_seconds and trim must be ≥ 0, got {self.frame_change}, {self.min_seconds}, {self.trim}"
            )
        if self.max_seconds <= 0 or self.max_seconds < self.min_seconds:
            raise ValueError(f"max_seconds must be > 0 and ≥ min_seconds, got {self.max_seconds}")
        if self.min_shot_frames < 1:
            raise ValueError(f"min_shot_frames must be ≥ 1, got {self.min_shot_frames}")
        if self.caption_frames < 1 or self.batch_size < 1 or self.prefetch_chunks < 1:
            raise ValueError(
                f"caption_frames, batch_size and prefetch_chunks must be ≥ 1, got {self.caption_frames}, "
                f"{self.batch_size}, {self.prefetch_chunks}"
            )

    def rule_thresholds(self):
        """Return the thresholds in force: the ones given, the embedder's defaults for the rest."""
        from vidrd_data.models.embedders import RuleThresholds, embedder_class

        default = embedder_class(self.embedder).thresholds
        return RuleThresholds(
            cut=default.cut if self.threshold is None else self.threshold,
            transition=default.transition if self.transition_threshold is None else self.transition_threshold,
            static=default.static if self.static_threshold is None else self.static_threshold,
        )


# ---------------------------------------------------------------- decoding: frame changes and sampled frames


def hsv(frames: np.ndarray) -> np.ndarray:
    """Return uint8 RGB frames `(n, H, W, 3)` as uint8 HSV (PIL's scale: every channel in [0, 255])."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).convert("HSV")) for f in frames])


def frame_changes(hsv_frames: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Return each frame's mean absolute HSV difference from the frame before it (0 for the very first).

    The scale is PySceneDetect ContentDetector's `content_val` (hue in [0, 180), as OpenCV's), whose default
    cut threshold is 27.
    """
    n = len(hsv_frames)
    flat = hsv_frames.reshape(n, -1, 3)
    before = np.concatenate([flat[:1] if previous is None else previous.reshape(1, -1, 3), flat[:-1]])
    difference = np.maximum(flat, before) - np.minimum(flat, before)  # |a - b| without leaving uint8
    per_channel = difference.sum(axis=1, dtype=np.int64) / flat.shape[1]
    return per_channel @ np.array([180.0 / 256.0, 1.0, 1.0]) / 3.0


@dataclass
class SampledChunk:
    """A run of decoded frames: their timestamps and changes, and those of them sampled for embedding."""

    timestamps: np.ndarray  # (n,) seconds, from the stream
    changes: np.ndarray  # (n,) see `frame_changes`
    sample_positions: np.ndarray  # positions within this chunk of the sampled frames
    samples: np.ndarray  # uint8 (k, H, W, 3) the sampled frames, short side ≈ the embedder's frame size


def decode_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Return an even (width, height) whose short side is `short_side` (never larger than the video's own)."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class TruncatedVideo(VideoError):
    """Decoding stopped part-way through the file."""


class FrameSampler:
    """Decodes a video once, in order and in chunks: every frame's change, and the frames at `sample_fps`.

    Every frame must be decoded anyway (a cut can fall on any of them), so this is one sequential PyAV pass:
    threaded, without H.264's deblocking filter (invisible at the sizes measured here) and with one scaler for the
    whole video; measured faster than decord's batched reads (README, "vidrd-data segment"). Files PyAV cannot open
    go through decord, which bundles another FFmpeg build. A sample is the first frame whose timestamp reaches each
    tick `start + j / sample_fps`; timestamps are the stream's, on the probe's time axis.
    """

    def __init__(self, sample_fps: float, frame_size: int, chunk_frames: int = CHUNK_FRAMES):
        self.step = 1.0 / sample_fps
        self.frame_size = frame_size
        self.chunk_frames = chunk_frames

    def chunks(self, path: str, info: VideoInfo, first: int, stop: int, start_time: float) -> Iterator[SampledChunk]:
        """Yield the chunks of frames `[first, stop)` (indices into `info.timestamps`)."""
        width, height = decode_size(info.width, info.height, self.frame_size)
        stop_time = float(info.timestamps[stop]) if stop < info.num_frames else None
        try:
            clock = info.timestamps if info.timestamp_source == "index" else None  # frame.pts unusable: count
            frames = self._pyav(path, start_time, stop_time, width, height, float(info.timestamps[0]), clock)
            head = next(frames, None)
        except TruncatedVideo:
            raise
        except Exception as exc:  # noqa: BLE001 - PyAV cannot open this file; decord may
            if info.rotation % 360:
                raise VideoError(f"cannot decode video: {exc}") from None  # decord cannot rotate scaled frames
            log.debug("PyAV cannot decode %s (%s); trying decord", path, exc)
            frames = self._decord(path, info, first, stop, width, height)
            head = next(frames, None)
        if head is None:
            raise VideoError("no frame decodes in the span")
        yield from self._sample(_prepend(head, frames), start_time)

    def _sample(self, batches, start_time: float) -> Iterator[SampledChunk]:
        next_tick = start_time
        previous = None
        stride = None
        for timestamps, frames in batches:
            if stride is None:
                stride = max(1, round(min(frames.shape[1:3]) / CHANGE_SHORT_SIDE))
            converted = hsv(frames[:, ::stride, ::stride])
            changes = frame_changes(converted, previous)
            previous = converted[-1]
            positions = []
            for i, t in enumerate(timestamps):
                if t >= next_tick - EPS:
                    positions.append(i)
                    next_tick += self.step * max(1, math.floor((t - next_tick + EPS) / self.step) + 1)
            positions = np.asarray(positions, dtype=np.int64)
            yield SampledChunk(np.asarray(timestamps, float), changes, positions, frames[positions])

    def _pyav(self, path, start_time: float, stop_time: float | None, width: int, height: int, origin_time: float,
              clock=None):
        import av
        from av.video.reformatter import VideoReformatter

        reformatter = VideoReformatter()  # one scaler for the whole video: building one per frame costs more
        with open_container(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.options = {"skip_loop_filter": "all"}
            times, frames, origin, decoded = [], [], None, 0
            try:
                for frame in container.decode(stream):
                    if clock is not None:  # the probe's frame-index times, by position in the decode order
                        t = float(clock[min(decoded, len(clock) - 1)])
                    elif frame.pts is None:
                        continue
                    else:
                        t = float(frame.pts * stream.time_base)
                        origin = t if origin is None else origin
                        t += origin_time - origin
                    decoded += 1
                    if t < start_time - EPS:
                        continue
                    if stop_time is not None and t >= stop_time - EPS:
                        break
                    rotation = int(getattr(frame, "rotation", 0) or 0)
                    size = (height, width) if rotation % 180 else (width, height)
                    image = reformatter.reformat(
                        frame, width=size[0], height=size[1], format="rgb24", interpolation="AREA"
                    ).to_ndarray()
                    # PyAV reports the display matrix angle counter-clockwise; rot90 counts CCW turns.
                    frames.append(np.ascontiguousarray(np.rot90(image, k=(rotation // 90) % 4)))
                    times.append(t)
                    if len(frames) == self.chunk_frames:
                        yield np.asarray(times), np.stack(frames)
                        times, frames = [], []
            except av.error.FFmpegError as exc:
                if not decoded:
                    raise
                raise TruncatedVideo(f"truncated or corrupt: decoding stopped after {decoded} frames ({exc})") from None
            if frames:
                yield np.asarray(times), np.stack(frames)

    def _decord(self, path, info: VideoInfo, first: int, stop: int, width: int, height: int):
        import decord

        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0, width=width, height=height)
        if len(reader) != info.num_frames:
            raise VideoError(f"decord sees {len(reader)} frames, the probe {info.num_frames}")
        timestamps = np.asarray(info.timestamps, dtype=float)
        for begin in range(first, stop, self.chunk_frames):
            end = min(stop, begin + self.chunk_frames)
            try:
                batch = reader.get_batch(list(range(begin, end))).asnumpy()
            except Exception as exc:  # noqa: BLE001 - a file that opens but breaks part-way is truncated or corrupt
                raise TruncatedVideo(f"truncated or corrupt: decoding stopped at frame {begin} of {info.num_frames} ({exc})")
            yield timestamps[begin:end], batch


def _prepend(head, rest):
    yield head
    yield from rest


# ---------------------------------------------------------------- cut and stitch


@dataclass(frozen=True)
class Boundary:
    """A shot change at `frame` (the first frame of the new shot) and the similarity of the samples around it."""

    frame: int
    similarity: float


@dataclass
class Segment:
    """Frames `[start, stop)` of the decoded span, with the cuts bounding it (frame, similarity; None: no cut)."""

    start: int
    stop: int
    start_cut: int | None
    end_cut: int | None
    start_similarity: float | None
    end_similarity: float | None
    rules: list[str] = field(default_factory=list)


@dataclass
class Segmentation:
    """What the rules made of one video: its sampled frames' similarities, kept segments and drop counts."""

    timestamps: np.ndarray
    end_time: float
    sample_frames: np.ndarray
    embeddings: np.ndarray
    similarities: np.ndarray  # of consecutive samples
    segments: list[Segment]
    cuts: list[Boundary]
    kept_inside: dict[str, list[Boundary]]  # shot changes that are not cuts, by the rule that kept them inside
    dropped: dict[str, int]

    def time(self, frame: int) -> float:
        return float(self.timestamps[frame]) if frame < len(self.timestamps) else self.end_time

    def samples_in(self, segment: Segment) -> np.ndarray:
        """Return the indices (into `sample_frames`) of the samples inside `segment`."""
        lo, hi = np.searchsorted(self.sample_frames, [segment.start, segment.stop], side="left")
        return np.arange(lo, hi)


def shot_changes(changes: np.ndarray, sample_frames: np.ndarray, frame_change: float) -> list[tuple[int, int]]:
    """Return (frame, sample pair j) of each sampled-frame interval's largest frame change ≥ `frame_change`.

    Interval j holds the frames after sample j up to and including sample j + 1.
    """
    found = []
    for j in range(len(sample_frames) - 1):
        a, b = int(sample_frames[j]), int(sample_frames[j + 1])
        k = a + 1 + int(np.argmax(changes[a + 1 : b + 1]))
        if changes[k] >= frame_change:
            found.append((k, j))
    return found


def cut_and_merge(
    changes: np.ndarray,
    sample_frames: np.ndarray,
    similarities: np.ndarray,
    threshold: float,
    frame_change: float,
    min_shot_frames: int,
) -> tuple[list[Boundary], dict[str, list[Boundary]]]:
    """Return the cuts and the shot changes not cut, by rule.

    A shot change is cut when the samples around it are dissimilar (< threshold) and it comes at least
    `min_shot_frames` after the previous cut (or the span's start); otherwise it is kept inside a segment, as
    `merge` (similar samples: stitched) or `min_shot` (too close to the previous cut).
    """
    cuts: list[Boundary] = []
    kept_inside: dict[str, list[Boundary]] = {"merge": [], "min_shot": []}
    for frame, j in shot_changes(changes, sample_frames, frame_change):
        boundary = Boundary(frame, float(similarities[j]))
        if boundary.similarity >= threshold:
            kept_inside["merge"].append(boundary)
        elif frame - (cuts[-1].frame if cuts else 0) < min_shot_frames:
            kept_inside["min_shot"].append(boundary)
        else:
            cuts.append(boundary)
    return cuts, kept_inside


def segments_between(num_frames: int, cuts: list[Boundary], kept_inside: dict[str, list[Boundary]]) -> list[Segment]:
    """Return the segments between consecutive cuts, each recording the rules that kept a shot change inside it."""
    edges = [Boundary(0, math.nan), *cuts, Boundary(num_frames, math.nan)]
    segments = []
    for left, right in zip(edges, edges[1:]):
        rules = ["cut"] + [rule for rule, inside in kept_inside.items()
                           if any(left.frame < b.frame < right.frame for b in inside)]
        starts_at_cut, ends_at_cut = left.frame > 0, right.frame < num_frames
        segments.append(
            Segment(left.frame, right.frame, left.frame if starts_at_cut else None,
                    right.frame if ends_at_cut else None, left.similarity if starts_at_cut else None,
                    right.similarity if ends_at_cut else None, rules)
        )
    return segments


def is_transition(seg: Segmentation, segment: Segment, threshold: float) -> bool:
    """A transition: its first and last sampled frames are less similar than `threshold`."""
    inside = seg.samples_in(segment)
    return len(inside) >= 2 and float(seg.embeddings[inside[0]] @ seg.embeddings[inside[-1]]) < threshold


def is_static(seg: Segmentation, segment: Segment, threshold: float) -> bool:
    """Near-static: every sampled frame, and the last against the first, at least `threshold` similar."""
    inside = seg.samples_in(segment)
    if len(inside) < 2:
        return False
    consecutive = seg.similarities[inside[0] : inside[-1]]
    return float(consecutive.min()) >= threshold and float(seg.embeddings[inside[0]] @ seg.embeddings[inside[-1]]) >= threshold


def trim_ends(seg: Segmentation, segment: Segment, seconds: float) -> Segment:
    """Return the segment without the frames shown in its first and last `seconds`."""
    if seconds <= 0:
        return segment
    start_time, end_time = seg.time(segment.start) + seconds, seg.time(segment.stop) - seconds
    start = int(np.searchsorted(seg.timestamps, start_time - EPS, side="left"))
    stop = int(np.searchsorted(seg.timestamps, end_time - EPS, side="left"))
    return Segment(start, max(start, stop), segment.start_cut, segment.end_cut, segment.start_similarity,
                   segment.end_similarity, [*segment.rules, "trim"])


def split_evenly(seg: Segmentation, segment: Segment, max_seconds: float) -> list[Segment]:
    """Return the segment cut into the fewest equal parts no longer than `max_seconds` (whole frames)."""
    start_time, end_time = seg.time(segment.start), seg.time(segment.stop)
    parts = math.ceil((end_time - start_time) / max_seconds - EPS)
    if parts <= 1:
        return [segment]
    ticks = start_time + (end_time - start_time) * np.arange(1, parts) / parts
    inner = np.searchsorted(seg.timestamps, ticks - EPS, side="left").tolist()
    edges = [segment.start, *[f for f in inner if segment.start < f < segment.stop], segment.stop]
    return [
        Segment(a, b, segment.start_cut if a == segment.start else None, segment.end_cut if b == segment.stop else None,
                segment.start_similarity if a == segment.start else None,
                segment.end_similarity if b == segment.stop else None, [*segment.rules, "split"])
        for a, b in zip(edges, edges[1:])
    ]


def segment_video(
    timestamps: np.ndarray,
    end_time: float,
    changes: np.ndarray,
    sample_frames: np.ndarray,
    embeddings: np.ndarray,
    options: SegmentOptions,
) -> Segmentation:
    """Apply the cut and stitch rules (module docstring) to one decoded span; frames are span-relative."""
    thresholds = options.rule_thresholds()
    similarities = np.einsum("id,id->i", embeddings[:-1], embeddings[1:]) if len(embeddings) > 1 else np.zeros(0)
    cuts, kept_inside = cut_and_merge(
        changes, sample_frames, similarities, thresholds.cut, options.frame_change, options.min_shot_frames
    )
    seg = Segmentation(timestamps, end_time, sample_frames, embeddings, similarities, [], cuts, kept_inside, {})
    dropped = {"transition": 0, "static": 0, "min_seconds": 0}
    kept = []
    for segment in segments_between(len(timestamps), cuts, kept_inside):
        if is_transition(seg, segment, thresholds.transition):
            dropped["transition"] += 1
            continue
        if options.drop_static and is_static(seg, segment, thresholds.static):
            dropped["static"] += 1
            continue
        segment = trim_ends(seg, segment, options.trim)
        if segment.stop - segment.start < 2 or seg.time(segment.stop) - seg.time(segment.start) < options.min_seconds - EPS:
            dropped["min_seconds"] += 1
            continue
        kept.extend(split_evenly(seg, segment, options.max_seconds))
    seg.segments = kept
    seg.dropped = {k: v for k, v in dropped.items() if v}
    return seg


def provenance(seg: Segmentation, segment: Segment) -> dict:
    """Return the `segmentation` struct of one output row."""
    inside = seg.samples_in(segment)
    consecutive = seg.similarities[inside[0] : inside[-1]] if len(inside) >= 2 else np.zeros(0)
    return {
        "start_cut_time": None if segment.start_cut is None else seg.time(segment.start_cut),
        "end_cut_time": None if segment.end_cut is None else seg.time(segment.end_cut),
        "start_cut_similarity": segment.start_similarity,
        "end_cut_similarity": segment.end_similarity,
        "mean_similarity": float(consecutive.mean()) if len(consecutive) else None,
        "min_similarity": float(consecutive.min()) if len(consecutive) else None,
        "rules": list(segment.rules),
        "num_samples": int(len(inside)),
    }


def caption_times(seg: Segmentation, segment: Segment, k: int) -> list[float]:
    """Return the start times of the frames shown at the centres of k equal parts of the segment (unique)."""
    start, end = seg.time(segment.start), seg.time(segment.stop)
    targets = start + (np.arange(k) + 0.5) * (end - start) / k
    frames = np.clip(np.searchsorted(seg.timestamps, targets + EPS, side="right") - 1, segment.start, segment.stop - 1)
    return [float(seg.timestamps[f]) for f in np.unique(frames)]


def manifest_cuts(rows: list[dict]) -> dict[str, list[float]]:
    """Return the cut times each source's ok segment rows start or end at (from their `segmentation` struct)."""
    cuts: dict[str, set[float]] = {}
    for row in rows:
        found = cuts.setdefault(row["source_path"], set())
        if row["status"] != "ok" or not row.get("segmentation"):
            continue
        for key in ("start_cut_time", "end_cut_time"):
            if row["segmentation"][key] is not None:
                found.add(round(row["segmentation"][key], 6))
    return {source: sorted(times) for source, times in cuts.items()}


def cut_scores(found: list[float], reference: list[float], tolerance: float = 0.5) -> dict:
    """Return true/false positives, misses, precision, recall and F1 of `found` cuts against `reference` ones.

    A found cut matches at most one reference cut within `tolerance` seconds (closest pairs first).
    """
    pairs = sorted((abs(f - r), i, j) for i, f in enumerate(found) for j, r in enumerate(reference)
                   if abs(f - r) <= tolerance + EPS)
    used_found, used_reference = set(), set()
    for _, i, j in pairs:
        if i not in used_found and j not in used_reference:
            used_found.add(i), used_reference.add(j)
    tp = len(used_found)
    fp, fn = len(found) - tp, len(reference) - tp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


# ---------------------------------------------------------------- the stage


@dataclass
class _Planned:
    """Decoder → model: input row `index` probed; frames `[first, stop)` of the source will follow."""

    index: int
    info: VideoInfo
    first: int
    stop: int
    end_time: float


@dataclass
class _Decoded:
    index: int
    chunk: SampledChunk


@dataclass
class _Done:
    index: int
    error: Exception | None = None


@dataclass
class _Crash:
    error: BaseException


@dataclass
class _Video:
    """What the main thread gathers about one video while its chunks arrive."""

    planned: _Planned
    timestamps: list[np.ndarray] = field(default_factory=list)
    changes: list[np.ndarray] = field(default_factory=list)
    sample_frames: list[int] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    pending: list[np.ndarray] = field(default_factory=list)  # sampled frames not yet embedded
    decoded: int = 0


class SegmentVideos(Stage):
    """Cut long videos into coherent segments (and caption them); see the module docstring for the rules."""

    name = "segment"
    kind = "video_clip"
    speed_options = frozenset({"batch_size", "prefetch_chunks"})
    fields = [pa.field("segmentation", SEGMENTATION)]

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.options = SegmentOptions(**params)
        self.embedder = None
        self.captioner = None

    def setup(self) -> None:
        from vidrd_data.models.embedders import make_embedder

        o = self.options
        try:
            self.embedder = make_embedder(
                o.embedder, clip=o.clip, clip_pretrained=o.clip_pretrained, clip_config=o.clip_config,
                clip_checkpoint=o.clip_checkpoint, device=o.device, batch_size=o.batch_size,
            )
            self.captioner = make_captioner(o)
        except (ValueError, OSError) as exc:  # models that cannot load are bad input: one line, exit status 2
            raise InputError(" ".join(str(exc).split())) from None

    def input_sample_id(self, row: dict) -> str:
        """Return the id of the failed row standing for an input: its source and, when given, its span (ms)."""
        source = row.get("source_path") or f"input:{row['input_row']}"
        span = _input_span(row)
        return make_sample_id(self.kind, row.get("source_dataset"), source, None if span is None else [
            None if t is None else round(t, 3) for t in span])

    def process(self, row: dict) -> list[dict]:
        [(_, result)] = self.process_many([row])
        if isinstance(result, Exception):
            raise result
        return result

    # ---------------------------------------------------------------- per video

    def plan(self, index: int, row: dict) -> _Planned:
        """Probe one input video and check that it is long enough to segment; raise with the reason if not."""
        if not row.get("source_path"):
            raise ValueError("no video path")
        path = self.resolve(row["source_path"])
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise VideoError("empty file (0 bytes)")
        try:
            info = probe(path)
        except VideoError as exc:
            raise VideoError(_why_unreadable(path, exc)) from None
        if info.num_frames < 2:
            raise VideoError("single-frame video: nothing to segment")
        start, end = _input_span(row) or (0.0, info.duration)
        start, end = max(start or 0.0, 0.0), min(info.duration if end is None else end, info.duration)
        if end <= start:
            raise ValueError(f"span [{start:.3f}, {end:.3f}] s is empty or outside the video (0 to {info.duration:.3f} s)")
        if end - start < self.options.min_seconds - EPS:
            raise ValueError(f"{end - start:.2f} s of video, shorter than --min-seconds {self.options.min_seconds:g}")
        timestamps = np.asarray(info.timestamps, dtype=float)
        first = int(np.searchsorted(timestamps, start - EPS, side="left"))
        stop = int(np.searchsorted(timestamps, end - EPS, side="left"))
        if stop - first < 2:
            raise VideoError(f"{stop - first} frame(s) in [{start:.3f}, {end:.3f}] s: nothing to segment")
        return _Planned(index, info, first, stop, end)

    def rows_of(self, row: dict, planned: _Planned, seg: Segmentation, captions: list[str | None] | None) -> list[dict]:
        """Return the output rows of one segmented input row: one per kept segment."""
        info, source = planned.info, row["source_path"]
        if not seg.segments:
            reasons = ", ".join(f"{n} {rule.replace('_', '-')}" for rule, n in seg.dropped.items())
            raise ValueError(f"no segment survived the rules (dropped: {reasons or 'none'})")
        outputs = []
        for i, segment in enumerate(seg.segments):
            start_frame, end_frame = planned.first + segment.start, planned.first + segment.stop
            out = {
                "sample_id": make_sample_id(self.kind, row.get("source_dataset"), source, [start_frame, end_frame]),
                "kind": self.kind,
                "source_path": source,
                "caption": row.get("caption"),
                "caption_source": row.get("caption_source"),
                "label": row.get("label"),
                "start_time": seg.time(segment.start),
                "end_time": seg.time(segment.stop),
                "start_frame": start_frame,
                "end_frame": end_frame,
                "fps": info.fps,
                "num_frames": end_frame - start_frame,
                "width": info.width,
                "height": info.height,
                "source_duration": info.duration,
                "segmentation": {**provenance(seg, segment), "timestamps": info.timestamp_source},
            }
            if captions is not None:
                if captions[i]:
                    out.update(caption=captions[i], caption_source=self.options.captioner)
                else:
                    out.update(status="failed", error=f"{self.options.captioner} gave an empty caption")
            outputs.append(out)
        return outputs

    def caption_segments(self, path: str, seg: Segmentation, prompt: str | None) -> list[str | None]:
        """Return one caption per kept segment: its middle frame's, or its k frames' unique captions joined."""
        k = self.options.caption_frames
        times = [caption_times(seg, s, k) for s in seg.segments]
        flat = [t for ts in times for t in ts]
        images = [Image.fromarray(f) for f in read_frames(path, flat)]
        texts = self.captioner.caption(images, [prompt] * len(images))
        captions, offset = [], 0
        for ts in times:
            mine = [" ".join(t.split()) for t in texts[offset : offset + len(ts)]]
            captions.append(CAPTION_SEPARATOR.join(dict.fromkeys(c for c in mine if c)) or None)
            offset += len(ts)
        return captions

    # ---------------------------------------------------------------- the pipeline

    def process_many(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        """Yield each input row with its segment rows in input order; decoding runs ahead in a thread."""
        if self.embedder is None:
            self.setup()
        messages: queue.Queue = queue.Queue(maxsize=self.options.prefetch_chunks)
        stop = threading.Event()
        decoder = threading.Thread(target=self._decode_ahead, args=(rows, messages, stop), daemon=True)
        decoder.start()
        videos: dict[int, _Video] = {}
        try:
            for _ in rows:
                while True:
                    message = messages.get()
                    if isinstance(message, _Crash):
                        raise message.error
                    if isinstance(message, _Planned):
                        videos[message.index] = _Video(message)
                    elif isinstance(message, _Decoded):
                        self._take_chunk(videos[message.index], message.chunk)
                    else:
                        break
                index = message.index
                video = videos.pop(index, None)
                if message.error is not None:
                    yield rows[index], message.error
                    continue
                try:
                    result = self._finish(rows[index], video)
                except Exception as exc:  # noqa: BLE001 - one video's failure must not end the shard
                    result = exc
                yield rows[index], result
        finally:
            stop.set()
            while decoder.is_alive():
                try:
                    messages.get(timeout=0.1)  # unblock a decoder waiting on a full queue
                except queue.Empty:
                    pass
            decoder.join()

    def _take_chunk(self, video: _Video, chunk: SampledChunk) -> None:
        video.timestamps.append(chunk.timestamps)
        video.changes.append(chunk.changes)
        video.sample_frames.extend((video.decoded + chunk.sample_positions).tolist())
        video.decoded += len(chunk.timestamps)
        video.pending.append(chunk.samples)
        if sum(len(p) for p in video.pending) >= self.options.batch_size:
            self._embed_pending(video)

    def _embed_pending(self, video: _Video) -> None:
        if video.pending:
            video.embeddings.append(self.embedder.embed(np.concatenate(video.pending)))
            video.pending.clear()

    def _finish(self, row: dict, video: _Video) -> list[dict]:
        self._embed_pending(video)
        planned = video.planned
        timestamps = np.concatenate(video.timestamps)
        seg = segment_video(
            timestamps, planned.end_time, np.concatenate(video.changes), np.asarray(video.sample_frames, dtype=np.int64),
            np.concatenate(video.embeddings), self.options,
        )
        captions = None
        if self.captioner is not None and seg.segments:
            captions = self.caption_segments(self.resolve(row["source_path"]), seg, self.options.caption_prompt)
        return self.rows_of(row, planned, seg, captions)

    def _decode_ahead(self, rows: list[dict], messages: queue.Queue, stop: threading.Event) -> None:
        """The decoder thread: probe each row, then hand over its frames' changes and sampled frames, chunk by chunk."""

        def put(message) -> bool:
            while not stop.is_set():
                try:
                    messages.put(message, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        sampler = FrameSampler(self.options.sample_fps, self.embedder.frame_size)
        try:
            for index, row in enumerate(rows):
                try:
                    planned = self.plan(index, row)
                    if not put(planned):
                        return
                    start_time = float(planned.info.timestamps[planned.first])
                    path = self.resolve(row["source_path"])
                    for chunk in sampler.chunks(path, planned.info, planned.first, planned.stop, start_time):
                        if not put(_Decoded(index, chunk)):
                            return
                except Exception as exc:  # noqa: BLE001 - an unreadable video fails its row only
                    if not put(_Done(index, exc)):
                        return
                    continue
                if not put(_Done(index)):
                    return
        except BaseException as exc:  # noqa: BLE001 - hand any bug to the consumer rather than hang it
            put(_Crash(exc))


def make_captioner(options: SegmentOptions):
    """Return the captioner the options name (None for `none`)."""
    if options.captioner == "none":
        return None
    kwargs = {"device": options.device}
    if options.caption_max_new_tokens is not None:
        kwargs["max_new_tokens"] = options.caption_max_new_tokens
    if options.captioner == "minigpt4":
        from vidrd_data.models.captioners.minigpt4 import MiniGPT4Captioner

        return MiniGPT4Captioner.from_config(options.minigpt4, **kwargs)
    from vidrd_data.models.captioners.blip2 import Blip2Captioner

    return Blip2Captioner(options.blip2, **kwargs)


def _why_unreadable(path: str, error: Exception) -> str:
    """Return why a video that no backend could probe is unreadable: truncated when its first frames decode."""
    import av

    try:
        with open_container(path) as container:
            stream = container.streams.video[0]
            announced, decoded = stream.frames, 0
            try:
                for _ in container.decode(stream):
                    decoded += 1
            except av.error.FFmpegError:
                pass
    except Exception:  # noqa: BLE001 - not even the container opens: the probe's own message says why
        return f"unreadable: {error}"
    if decoded and announced and decoded < announced:
        return f"truncated: {decoded} of {announced} frames decode"
    return f"unreadable: {error}"


def _check_open_clip_name(model: str, pretrained: str | None) -> None:
    """Raise InputError unless open_clip knows the model name and its pretrained tag (weights are not fetched)."""
    import open_clip

    if model not in open_clip.list_models():
        raise InputError(f"open_clip has no model {model!r} (see open_clip.list_models(), or pass --clip-config)")
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained and pretrained not in tags and not os.path.isfile(pretrained):
        raise InputError(f"open_clip has no pretrained tag {pretrained!r} for {model} (known: {', '.join(tags)})")


def _input_span(row: dict) -> tuple[float | None, float | None] | None:
    """Return the input row's `(start_time, end_time)` when it gives either, else None (NaN counts as missing)."""
    start, end = (row.get(k) for k in ("start_time", "end_time"))
    start, end = (None if t is None or t != t else float(t) for t in (start, end))
    return None if start is None and end is None else (start, end)


def prepare(
    input: str,
    *,
    path_col: str = "path",
    root: str | None = None,
    source_dataset: str | None = None,
    **options: Any,
) -> StageJob:
    """Check the segment options and read the input videos.

    `input` is a video file, a folder of videos, a list table (`path[,label][,start,end][,caption]`) or a
    manifest (its ok `video_clip` rows; their spans are segmented). `options` are the fields of `SegmentOptions`.
    """
    for key in ("clip_config", "clip_checkpoint", "minigpt4"):
        if options.get(key):
            options[key] = os.path.abspath(options[key])
    if options.get("blip2") and os.path.isdir(options["blip2"]):
        options["blip2"] = os.path.abspath(options["blip2"])  # a local directory: stored absolute
    try:
        params = asdict(SegmentOptions(**options))
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc)) from None
    for key in ("clip_config", "clip_checkpoint", "minigpt4"):
        if params[key] and not os.path.isfile(params[key]):
            raise InputError(f"--{key.replace('_', '-')} file not found: {params[key]}")
    if params["embedder"] == "clip" and not params["clip_config"]:
        _check_open_clip_name(params["clip"], params["clip_pretrained"])
    if params["captioner"] == "minigpt4":
        from vidrd_data.models.captioners.minigpt4 import MiniGPT4Error, MiniGPT4Parts

        try:
            MiniGPT4Parts.from_json(params["minigpt4"])
        except MiniGPT4Error as exc:
            raise InputError(str(exc)) from None
    path = Path(input)
    if path.is_dir() and mf.is_manifest(path):
        table, base = sources.manifest_rows(path, kind="video_clip", root=root)
        if table.num_rows == 0:
            raise InputError(f"{path} has no ok rows of kind video_clip")
    elif path.is_dir():
        table, base = sources.video_folder(path, source_dataset=source_dataset)
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        if not path.is_file():
            raise InputError(f"video not found: {path}")
        base = path.resolve().parent
        table = pa.table({"source_path": [path.name], "source_dataset": [source_dataset or base.name]})
    else:
        table, base = sources.video_list(path, path_col=path_col, root=root, source_dataset=source_dataset)
    return StageJob("segment", params, table, base, [str(input)])
