"""The `segment` stage: long videos → coherent segments cut by frame similarity, optionally captioned.

For each input video (or a span of it, when the input row gives one):

    decode once → every frame's change from the one before, and frames at `sample_fps` (stream timestamps)
    → embeddings of the sampled frames (CLIP or colour histograms) → shot changes (the frame-change rule, or a
    frame detector fed every frame: PySceneDetect Content/Adaptive, TransNetV2) → cut → stitch rules → segments
    → optional captions of each segment's middle frame (MiniGPT-4 or BLIP-2) → one `video_clip` row per segment

The rules (cut, merge, min-shot, transition, static, trim, split) are pure operations, listed in the order they
run in `vidrd_data/ops/shots.py` (defaults and reasoning in the README, "vidrd-data segment"); the single decoding
pass is `vidrd_io.sampling.FrameSampler`. Times and frame numbers come from the stream's timestamps, so
variable-frame-rate files are cut where their frames really are. Decoding runs in the supervised decode worker
processes of `run/decode.py`, ahead of the embedder and the captioner; a decoder that crashes or hangs on a file
fails that file's row only.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.manifest import make_sample_id
from vidrd_data.models.batches import outputs_in_halves
from vidrd_data.ops.clips import input_span
from vidrd_data.ops.shots import EPS, Segmentation, caption_times, provenance, segment_video
from vidrd_data.run.decode import DEFAULT_TIMEOUT_S, DecodePool, FailureLog, default_decode_workers
from vidrd_data.run.stage import Stage, StageAbort, StageJob
from vidrd_data.sources import InputError
from vidrd_io.sampling import FrameSampler, SampledChunk
from vidrd_io.video import VIDEO_EXTENSIONS, VideoError, VideoInfo, open_container, probe, read_frames

log = logging.getLogger(__name__)

CAPTIONERS = ("minigpt4", "blip2", "none")
CAPTION_SEPARATOR = "; "

SEGMENTATION = pa.struct(
    [
        pa.field("start_cut_time", pa.float64()),  # the cut it starts at (before trimming); null where the video
        pa.field("end_cut_time", pa.float64()),  # (or span) starts/ends, or at a split
        pa.field("start_cut_similarity", pa.float64()),  # of the sampled frames either side of that cut
        pa.field("end_cut_similarity", pa.float64()),
        pa.field("start_cut_score", pa.float64()),  # the detector's score of that cut (its own scale: frame change,
        pa.field("end_cut_score", pa.float64()),  # content_val, adaptive ratio or TransNetV2 probability)
        pa.field("detector", pa.string()),  # the shot detector and its settings
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

    detector: str = field(default="embedding", metadata={
        "help": "Shot detector: embedding (frame change + embedder similarity), content or adaptive "
                "(PySceneDetect) or transnetv2."})
    detector_threshold: float | None = field(default=None, metadata={
        "help": "The detector's own threshold (content 27, adaptive 3, transnetv2 0.5; embedding: --frame-change)."})
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
    caption_batch_size: int = field(default=8, metadata={
        "help": "Frames per captioner call (the next batch decodes meanwhile)."})
    sample_fps: float = field(default=2.0, metadata={"help": "Frames per second embedded."})
    threshold: float | None = field(default=None, metadata={
        "help": "Cut below this similarity of consecutive sampled frames (default: the embedder's)."})
    frame_change: float = field(default=27.0, metadata={
        "help": "A hard cut changes one frame by at least this much (HSV, PySceneDetect's scale)."})
    min_shot_frames: int = field(default=15, metadata={
        "help": "Ignore a cut this few frames after the previous one."})
    transition_threshold: float | None = field(default=None, metadata={
        "help": "Drop segments whose first and last frames are less similar."})
    halve_transitions: bool = field(default=True, metadata={
        "help": "Halve a piece that fails the transition test until its halves pass or reach --min-seconds.",
        "flags": ("--halve-transitions/--drop-transitions",)})
    drop_static: bool = field(default=False, metadata={
        "help": "Drop near-static segments.", "flags": ("--drop-static/--keep-static",)})
    static_threshold: float | None = field(default=None, metadata={
        "help": "Near-static: every frame at least this similar."})
    min_seconds: float = field(default=0.5, metadata={"help": "Drop segments (and videos) shorter than this."})
    max_seconds: float = field(default=60.0, metadata={"help": "Split longer segments evenly."})
    trim: float = field(default=0.0, metadata={"help": "Seconds trimmed off each end of a segment."})
    batch_size: int = field(default=32, metadata={"help": "Frames per embedder call."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA if available), cpu or cuda (which GPUs: --gpus)."})
    prefetch_chunks: int = field(default=16, metadata={
        "help": "Decoded chunks of frames queued ahead of the embedder, per worker."})

    def __post_init__(self):
        from vidrd_data.models.embedders import embedder_class

        from vidrd_data.models.shot_detectors import DETECTORS

        embedder_class(self.embedder)  # raises on an unknown name
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown detector {self.detector!r} (use {', '.join(DETECTORS)})")
        if self.detector_threshold is not None and self.detector == "embedding":
            raise ValueError("detector embedding takes its threshold from frame_change, not detector_threshold")
        if self.detector_threshold is not None and not (
                0 < self.detector_threshold < (1 if self.detector == "transnetv2" else float("inf"))):
            raise ValueError(f"detector_threshold must be > 0 (a probability below 1 for transnetv2), "
                             f"got {self.detector_threshold}")
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
        if self.caption_batch_size < 1:
            raise ValueError(f"caption_batch_size must be ≥ 1, got {self.caption_batch_size}")
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


# ---------------------------------------------------------------- decoding (in the decode workers)


@dataclass
class _Planned:
    """Input row `index` probed; frames `[first, stop)` of the source follow, chunk by chunk."""

    index: int
    info: VideoInfo
    first: int
    stop: int
    end_time: float


@dataclass
class SpanDecoder:
    """What the decode workers run for a row (picklable): probe the video, check its span, then decode the span
    once in chunks of frame changes and sampled frames (`vidrd_io.sampling.FrameSampler`)."""

    options: SegmentOptions
    root: str | None
    frame_size: int

    def resolve(self, path: str | None) -> str | None:
        return mf.resolve(path, self.root)

    def __call__(self, index: int, row: dict) -> Iterator[_Planned | SampledChunk]:
        """Yield the row's plan, then its chunks."""
        from vidrd_data.models.shot_detectors import detector_frame_size

        planned = self.plan(index, row)
        yield planned
        info = planned.info
        detector_size = detector_frame_size(self.options.detector, info.width, info.height)
        frame_size = self.frame_size if detector_size is None else max(self.frame_size, min(detector_size))
        sampler = FrameSampler(self.options.sample_fps, frame_size, detector_size=detector_size)
        start_time = float(planned.info.timestamps[planned.first])
        yield from sampler.chunks(self.resolve(row["source_path"]), planned.info, planned.first, planned.stop,
                                  start_time)

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
        start, end = input_span(row) or (0.0, info.duration)
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


# ---------------------------------------------------------------- the stage


@dataclass
class _Video:
    """What the stage gathers about one video while its chunks arrive."""

    planned: _Planned
    timestamps: list[np.ndarray] = field(default_factory=list)
    changes: list[np.ndarray] = field(default_factory=list)
    sample_frames: list[int] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    pending: list[np.ndarray] = field(default_factory=list)  # sampled frames not yet embedded
    decoded: int = 0
    detection: Any = None  # the frame detector's run over this video, when one is used


class SegmentVideos(Stage):
    """Cut long videos into coherent segments (and caption them); see the module docstring for the rules."""

    name = "segment"
    kind = "video_clip"
    speed_options = frozenset({"batch_size", "prefetch_chunks", "caption_batch_size"})
    fields = [pa.field("segmentation", SEGMENTATION)]
    decode_timeout_s = DEFAULT_TIMEOUT_S  # a probe, or one chunk of frames

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.options = SegmentOptions(**params)
        self.embedder = None
        self.detector = None
        self.captioner = None
        self._pool = None

    def setup(self) -> None:
        from vidrd_data.models.embedders import make_embedder

        o = self.options
        try:
            self.embedder = make_embedder(
                o.embedder, clip=o.clip, clip_pretrained=o.clip_pretrained, clip_config=o.clip_config,
                clip_checkpoint=o.clip_checkpoint, device=o.device, batch_size=o.batch_size,
            )
            if o.detector != "embedding":
                from vidrd_data.models.shot_detectors import make_detector

                self.detector = make_detector(o.detector, threshold=o.detector_threshold,
                                              min_scene_len=o.min_shot_frames, device=o.device)
            self.captioner = make_captioner(o)
        except (ValueError, OSError) as exc:  # models that cannot load are bad input: one line, exit status 2
            raise InputError(" ".join(str(exc).split())) from None

    def input_sample_id(self, row: dict) -> str:
        """Return the id of the failed row standing for an input: its source and, when given, its span (ms)."""
        source = row.get("source_path") or f"input:{row['input_row']}"
        span = input_span(row)
        return make_sample_id(self.kind, row.get("source_dataset"), source, None if span is None else [
            None if t is None else round(t, 3) for t in span])

    def process(self, row: dict) -> list[dict]:
        [(_, result)] = self.process_many([row])
        if isinstance(result, Exception):
            raise result
        return result

    def rows_of(self, row: dict, planned: _Planned, seg: Segmentation, captions: list | None) -> list[dict]:
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
                if isinstance(captions[i], BaseException):
                    error = captions[i]
                    out.update(status="failed", error=f"captioning failed: {type(error).__name__}: {error}")
                elif captions[i]:
                    out.update(caption=captions[i], caption_source=self.options.captioner)
                else:
                    out.update(status="failed", error=f"{self.options.captioner} gave an empty caption")
            outputs.append(out)
        return outputs

    def caption_segments(self, path: str, seg: Segmentation, prompt: str | None) -> list[str | BaseException | None]:
        """Return one caption per kept segment: its middle frame's, or its k frames' unique captions joined; out of
        GPU memory even one at a time, the error in its place.

        The frames are read in a decode worker `caption_batch_size` at a time, already at the captioner's input
        size, the next batch reading while this one is captioned: no full-resolution frame of every segment is
        held at once (500 segments of 1080p would be 3 GB)."""
        k, batch = self.options.caption_frames, self.options.caption_batch_size
        times = [caption_times(seg, s, k) for s in seg.segments]
        flat = [t for ts in times for t in ts]
        size = caption_input_size(self.captioner)
        pool = self._decode_pool()
        batches = iter([flat[i : i + batch] for i in range(0, len(flat), batch)])
        reading: deque = deque()

        def read_next() -> None:
            if (times_of_batch := next(batches, None)) is not None:
                reading.append(pool.submit(read_frames_at, path, times_of_batch, size, path=path))

        read_next()
        texts: list = []
        try:
            while reading:
                images = [Image.fromarray(f) for f in reading.popleft().result()]
                read_next()
                prompts = [prompt] * len(images)
                texts += outputs_in_halves(lambda a, b: self.captioner.caption(images[a:b], prompts[a:b]), len(images))
        finally:
            for task in reading:
                task.cancel()
        captions: list[str | BaseException | None] = []
        offset = 0
        for ts in times:
            mine = texts[offset : offset + len(ts)]
            failed = next((t for t in mine if isinstance(t, BaseException)), None)
            if failed is not None:
                captions.append(failed)
            else:
                mine = [" ".join(t.split()) for t in mine]
                captions.append(CAPTION_SEPARATOR.join(dict.fromkeys(c for c in mine if c)) or None)
            offset += len(ts)
        return captions

    # ---------------------------------------------------------------- the pipeline

    @property
    def decode_workers(self) -> int:
        """Decode worker processes: beside a CUDA model all cores but one (at most 8), else a third of the cores."""
        device = getattr(self.embedder, "device", None)
        return default_decode_workers(device is not None and device.type == "cuda")

    def span_decoder(self) -> SpanDecoder:
        """Return what the decode workers run for each row."""
        return SpanDecoder(self.options, self.root, self.embedder.frame_size)

    def _decode_pool(self):
        """Return the decode workers' pool (kept for the stage's life: starting a process costs a second or two)."""
        if self._pool is None:
            workers = self.decode_workers
            self._pool = DecodePool(workers, name="segment", timeout_s=self.decode_timeout_s,
                                    window=max(2, self.options.prefetch_chunks // workers))
        return self._pool

    def process_many(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        """Yield each input row with its segment rows in input order, its span decoded ahead in a worker process.

        At most `decode_workers` videos decode at once, each at most `prefetch_chunks / decode_workers` chunks
        ahead of the embedder. With a captioner, the next video starts once a row is finished, so a worker is
        free to read its segments' frames.
        """
        if self.embedder is None:
            self.setup()
        pool = self._decode_pool()
        pool.failures = FailureLog(self.work_dir)  # read afresh: this may be another run, or an overwritten one
        decoder = self.span_decoder()
        upcoming = iter(enumerate(rows))
        ahead: deque = deque()  # (index, row, task) in input order

        def top_up(limit: int) -> None:
            while len(ahead) < limit and (item := next(upcoming, None)) is not None:
                index, row = item
                path = self.resolve(row["source_path"]) if row.get("source_path") else None
                ahead.append((index, row, pool.submit(decoder, index, row, path=path, stream=True)))

        workers = pool.workers_count
        try:
            top_up(workers)
            while ahead:
                index, row, task = ahead[0]
                try:
                    video = self._gather(task)
                    if self.captioner is None:
                        top_up(workers + 1)  # this video is decoded: the next one starts while it is cut
                    result = self._finish(row, video)
                except StageAbort:
                    raise
                except Exception as exc:  # noqa: BLE001 - one video's failure must not end the shard
                    result = exc
                ahead.popleft()
                top_up(workers)
                yield row, result
        finally:
            for *_, task in ahead:
                task.cancel()

    def _gather(self, task) -> _Video:
        """Return one video's frame changes, timestamps and embeddings, embedding its samples as chunks arrive."""
        video = None
        try:
            for item in task.items():
                if isinstance(item, _Planned):
                    video = _Video(item)
                    if self.detector is not None:
                        video.detection = self.detector.start(item.info.fps)
                else:
                    self._take_chunk(video, item)
        except BaseException:
            task.cancel()
            raise
        self._embed_pending(video)
        return video

    def _take_chunk(self, video: _Video, chunk: SampledChunk) -> None:
        video.timestamps.append(chunk.timestamps)
        video.changes.append(chunk.changes)
        video.sample_frames.extend((video.decoded + chunk.sample_positions).tolist())
        video.decoded += len(chunk.timestamps)
        video.pending.append(chunk.samples)
        if video.detection is not None:
            video.detection.add(chunk.detector_frames)
        if sum(len(p) for p in video.pending) >= self.options.batch_size:
            self._embed_pending(video)

    def _embed_pending(self, video: _Video) -> None:
        """Embed the frames waiting; out of GPU memory, in halves; a frame that fits in no batch fails the video."""
        if video.pending:
            frames = np.concatenate(video.pending)
            rows = outputs_in_halves(lambda a, b: self.embedder.embed(frames[a:b]), len(frames))
            failed = next((r for r in rows if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            video.embeddings.append(np.stack(rows))
            video.pending.clear()

    def _finish(self, row: dict, video: _Video) -> list[dict]:
        planned = video.planned
        timestamps = np.concatenate(video.timestamps)
        detected = None if video.detection is None else video.detection.finish()
        detector = self.detector.model_id if self.detector is not None else f"embedding({self.embedder.model_id}, " \
            f"frame_change={self.options.frame_change:g})"
        seg = segment_video(
            timestamps, planned.end_time, np.concatenate(video.changes), np.asarray(video.sample_frames, dtype=np.int64),
            np.concatenate(video.embeddings), self.options, detected, detector,
        )
        captions = None
        if self.captioner is not None and seg.segments:
            captions = self.caption_segments(self.resolve(row["source_path"]), seg, self.options.caption_prompt)
        return self.rows_of(row, planned, seg, captions)


def read_frames_at(path: str, times: list[float], size: tuple[int, int] | None) -> np.ndarray:
    """Return the frames shown at `times`, resized to `size` (width, height; bicubic, as BLIP-2's and MiniGPT-4's
    image processors squash) when given (what a decode worker runs for the captioner)."""
    frames = read_frames(path, times)
    if size is None:
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f in frames])


def caption_input_size(captioner) -> tuple[int, int] | None:
    """Return the (width, height) the captioner's image processor resizes every image to, or None if unknown."""
    processor = getattr(captioner, "image_processor", None) or getattr(getattr(captioner, "processor", None),
                                                                       "image_processor", None)
    size = getattr(processor, "size", None)
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["width"]), int(size["height"])
    return None


def make_captioner(options: SegmentOptions):
    """Return the captioner the options name (None for `none`)."""
    if options.captioner == "none":
        return None
    kwargs = {"device": options.device, "batch_size": options.caption_batch_size}
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


def prepare(input: str, **arguments: Any) -> StageJob:
    """Check the segment options and read the input videos.

    `input` is a video file, a folder of videos, a list table (`path[,label][,start,end][,caption]`) or a
    manifest (its ok `video_clip` rows, their spans segmented; an incomplete one is refused unless `allow_partial`).
    `arguments` are the fields of `SegmentArguments` and `SegmentOptions`, their defaults declared there.
    """
    from vidrd_data.models.device import check_names
    from vidrd_data.stages.arguments import read_arguments

    args, options = read_arguments("segment", input, arguments)
    for key in ("clip_config", "clip_checkpoint", "minigpt4"):
        if options.get(key):
            options[key] = os.path.abspath(options[key])
    if options.get("blip2") and os.path.isdir(options["blip2"]):
        options["blip2"] = os.path.abspath(options["blip2"])  # a local directory: stored absolute
    try:
        params = asdict(SegmentOptions(**options))
        check_names(params["device"])
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
    if (layout := sources.video_layout(input, source_dataset=args.source_dataset)) is not None:  # video2dataset
        table, base = layout
    elif (path.is_dir() or mf.is_uri(str(input))) and mf.is_manifest(input):  # a manifest directory, or one at a URL
        table, base = sources.manifest_rows(input, kind="video_clip", root=args.root, allow_partial=args.allow_partial)
        if table.num_rows == 0:
            raise InputError(f"{path} has no ok rows of kind video_clip")
    elif path.is_dir():
        table, base = sources.video_folder(path, source_dataset=args.source_dataset)
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        if not path.is_file():
            raise InputError(f"video not found: {path}")
        base = path.resolve().parent
        table = pa.table({"source_path": [path.name], "source_dataset": [args.source_dataset or base.name]})
    else:
        table, base = sources.video_list(input, path_col=args.path_col, root=args.root,
                                         source_dataset=args.source_dataset)
    return StageJob("segment", params, table, base, [str(input)])
