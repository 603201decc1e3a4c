"""The `caption` stage: videos → clips captioned by BLIP-2, as VidRD does for action-recognition sets.

For each input video (optionally a span of it, and a class label):

    probe → clip windows → k frames per clip → BLIP-2 captions → one `video_clip` row per clip

Clip windows and frames are placed by the stream's timestamps, so variable-frame-rate files are cut where their
frames really are; a clip's span is whole frames `[start_frame, end_frame)` and its id hashes that span. The row
records `caption_source="blip2"` and, in the `captioning` struct, the model, the prompt, the frames used and their
captions.

Probing, decoding and the captioner's image preprocessing run in decode worker processes (`ClipDecoder`), a few
batches ahead of the model, so the model does not wait for the decoder (`CaptionClips.process_many`).
"""

from __future__ import annotations

import logging
import os
import queue
import string
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.manifest import make_sample_id
from vidrd_data.run.stage import Stage, StageJob
from vidrd_data.sources import InputError, humanize_label
from vidrd_io.video import VideoError, VideoInfo, open_video, read_frames

log = logging.getLogger(__name__)

FRAME_POLICIES = ("middle", "longest", "concat")
CONCAT_SEPARATOR = "; "
PROMPT_FIELDS = ("label",)

CAPTIONING = pa.struct(
    [
        pa.field("model", pa.string()),
        pa.field("prompt", pa.string()),  # as sent to the model, label filled in; null when none
        pa.field("frame_policy", pa.string()),
        pa.field("frame_times", pa.list_(pa.float64())),  # source times (s) of the captioned frames
        pa.field("frame_captions", pa.list_(pa.string())),
        pa.field("input_caption", pa.string()),  # the caption the input row had, if any
    ]
)


@dataclass(frozen=True)
class CaptionOptions:
    """The stage's parameters (its `params`, as stored in `_manifest.json`); invalid values raise ValueError."""

    blip2: str
    clip_seconds: float | None = None
    stride_seconds: float | None = None
    max_seconds: float = 10.0
    min_seconds: float = 1.0
    frames: int = 1
    frame_policy: str = "middle"
    prompt: str | None = None
    beams: int = 5
    max_new_tokens: int = 30
    repetition_penalty: float = 1.0
    batch_size: int = 16
    device: str = "auto"
    dtype: str = "auto"
    prefetch_batches: int = 4
    decode_workers: int = 0  # 0: auto (see `CaptionClips.decode_workers`)
    decode_in: str = "processes"

    def __post_init__(self):
        for name in ("clip_seconds", "stride_seconds", "max_seconds"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.min_seconds < 0:
            raise ValueError(f"min_seconds must be ≥ 0, got {self.min_seconds}")
        if self.stride_seconds is not None and self.clip_seconds is None:
            raise ValueError("stride_seconds needs clip_seconds")
        for name in ("frames", "beams", "max_new_tokens", "batch_size", "prefetch_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers must be ≥ 0 (0: auto), got {self.decode_workers}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.decode_in not in ("processes", "threads"):
            raise ValueError(f"decode_in must be processes or threads, got {self.decode_in!r}")
        if self.frame_policy not in FRAME_POLICIES:
            raise ValueError(f"unknown frame policy {self.frame_policy!r} (use {', '.join(FRAME_POLICIES)})")
        if self.frame_policy == "middle" and self.frames > 1:
            raise ValueError(f"frame policy middle captions one frame; with {self.frames} frames use longest or concat")
        unknown = self.prompt_fields - set(PROMPT_FIELDS)
        if unknown:
            raise ValueError(f"prompt {self.prompt!r} uses {sorted(unknown)}; it may use only {{label}}")

    @property
    def prompt_fields(self) -> set[str]:
        """Return the names of the fields the prompt template fills in (`{label}`)."""
        if self.prompt is None:
            return set()
        return {name for _, name, _, _ in string.Formatter().parse(self.prompt) if name is not None}


# ---------------------------------------------------------------- clips and frames


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
    timestamps: np.ndarray, duration: float, span: tuple[float, float], options: CaptionOptions
) -> list[tuple[int, int]]:
    """Return the clips of `span` as frame ranges `[start, end)`, each window snapped to the frames inside it.

    Windows are `clip_seconds` long every `stride_seconds`; without `clip_seconds`, the whole span when it is at most
    `max_seconds`, else non-overlapping `max_seconds` windows. Clips shorter than `min_seconds` or than 2 frames are
    skipped.
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


# ---------------------------------------------------------------- the pipeline's messages (decoder → model)


@dataclass
class _Planned:
    """Input row `index` was probed and cut into `clips` (or failed with `error`); its frames follow in batches."""

    index: int
    info: VideoInfo | None = None
    clips: list[Clip] = field(default_factory=list)
    prompt: str | None = None
    error: Exception | None = None


@dataclass
class _ClipFailed:
    index: int
    clip_no: int
    error: str


@dataclass
class _Batch:
    """Frames ready for `Captioner.generate`; `refs[i]` = (row index, clip number, frame number) of frame i."""

    refs: list[tuple[int, int, int]]
    prepared: Any = None
    error: Exception | None = None


@dataclass
class _Crash:
    error: BaseException


class _Stopped(Exception):
    """The consumer went away: the decoder thread stops."""


_END = object()


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


@dataclass
class ClipDecoder:
    """Plans rows into clips, decodes their frames and turns them into model inputs: the stage's work that runs
    ahead of the model, in decode worker processes (or threads). Picklable: options, root and the captioner's
    image step (`Blip2ImageInputs`), no model."""

    options: CaptionOptions
    root: str | None
    image_inputs: Callable[[list[np.ndarray]], np.ndarray]

    def resolve(self, path: str | None) -> str | None:
        return mf.resolve(path, self.root)

    def plan(self, index: int, row: dict) -> tuple[_Planned, Callable[[list[float]], np.ndarray]]:
        """Return the clips of one input row with the times of the frames to caption, and the opened video's reader."""
        if not row.get("source_path"):
            raise ValueError("no video path")
        prompt = self.prompt_for(row)
        path = self.resolve(row["source_path"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
        if os.path.getsize(path) == 0:
            raise VideoError("empty file (0 bytes)")
        info, read = open_video(path, reader="pyav")  # a few frames per video: decode forward, convert only those
        if info.num_frames < 2:
            raise VideoError("video has one frame: no clip to caption")
        # decord's times are float32: round off their noise (a microsecond is finer than any stream's time base)
        timestamps = np.asarray(info.timestamps, dtype=float).round(6)
        info.duration = round(info.duration, 6)
        span = _input_span(row) or (0.0, info.duration)
        if None in span or span[1] <= span[0]:
            raise ValueError(f"span needs a start before its end, got start={span[0]} end={span[1]}")
        start, end = max(span[0], 0.0), min(span[1], info.duration)
        if end <= start:
            raise ValueError(f"span [{span[0]:.3f}, {span[1]:.3f}] s lies outside the video (0 to {info.duration:.3f} s)")
        windows = clip_windows(timestamps, info.duration, (start, end), self.options)
        if not windows:
            raise ValueError(
                f"no clip of at least {self.options.min_seconds:g} s and 2 frames in [{start:.3f}, {end:.3f}] s"
            )
        clips = []
        for first, stop in windows:
            clip_start = float(timestamps[first])
            clip_end = float(timestamps[stop]) if stop < len(timestamps) else info.duration
            times = frame_times(timestamps, first, stop, clip_start, clip_end, self.options.frames)
            clips.append(Clip(first, stop, clip_start, clip_end, times, captions=[None] * len(times)))
        return _Planned(index, info, clips, prompt), read

    def prompt_for(self, row: dict) -> str | None:
        """Return the prompt of a row: the template with its label in words, or None without a template."""
        template = self.options.prompt
        if template is None:
            return None
        if "label" in self.options.prompt_fields and not row.get("label"):
            raise ValueError("the prompt uses {label} but this row has no label")
        return template.format(label=humanize_label(row["label"]) if row.get("label") else "")

    def decode(self, path: str, clips: list[Clip], read=None) -> list[np.ndarray | str]:
        """Return each clip's model inputs (its frames' pixel values), or why its decode failed; one read for all
        of them (with `read`, the reader of an open video) when it succeeds, else `video_io.read_frames` clip by
        clip."""
        try:
            frames = (read or partial(read_frames, path))([t for clip in clips for t in clip.frame_times])
        except Exception:  # noqa: BLE001 - one bad clip must not fail the others: read them one by one
            frames = None
        out: list[np.ndarray | str] = []
        offset = 0
        for clip in clips:
            n = len(clip.frame_times)
            if frames is not None:
                out.append(frames[offset : offset + n])
            else:
                try:
                    out.append(read_frames(path, clip.frame_times))
                except Exception as exc:  # noqa: BLE001
                    out.append(f"clip decode failed: {type(exc).__name__}: {exc}")
            offset += n
        return [self._pixels(x) for x in out]

    def _pixels(self, frames: np.ndarray | str) -> np.ndarray | str:
        if isinstance(frames, str):
            return frames
        try:
            return self.image_inputs(list(frames))
        except Exception as exc:  # noqa: BLE001 - a frame the preprocessor refuses fails its clip only
            return f"frame preprocessing failed: {type(exc).__name__}: {exc}"

    def plan_and_decode_first(self, index: int, row: dict) -> tuple[_Planned, list[list[int]], list[np.ndarray | str]]:
        """Plan a row and decode its first group of clips (all of a short video's): one task of the decode pool."""
        try:
            planned, read = self.plan(index, row)
        except Exception as exc:  # noqa: BLE001 - an unreadable video fails its row only
            return _Planned(index, error=exc), [], []
        groups = frame_groups(planned.clips, self.options.batch_size)
        path = self.resolve(row["source_path"])
        return planned, groups, self.decode(path, [planned.clips[c] for c in groups[0]], read)


class CaptionClips(Stage):
    """Cut each video into clips and caption each clip with BLIP-2 (pipelined: decode runs ahead of the model)."""

    name = "caption"
    kind = "video_clip"
    speed_options = frozenset({"batch_size", "prefetch_batches", "decode_workers", "decode_in"})
    fields = [pa.field("captioning", CAPTIONING)]

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.options = CaptionOptions(**params)
        self.captioner = None
        self.model_wait_s = 0.0  # how long the model waited for decoded frames in the last `process_many`
        self._decoder: ClipDecoder | None = None
        self._pool = None

    def setup(self) -> None:
        from vidrd_data.models.captioners.blip2 import Blip2Captioner

        o = self.options
        self.captioner = Blip2Captioner(
            o.blip2,
            device=o.device,
            dtype=o.dtype,
            num_beams=o.beams,
            max_new_tokens=o.max_new_tokens,
            repetition_penalty=o.repetition_penalty,
            batch_size=o.batch_size,
        )

    def input_sample_id(self, row: dict) -> str:
        """Return the id of the failed row standing for an input: its source and, when given, its span (ms)."""
        source = row.get("source_path") or f"input:{row['input_row']}"
        span = _input_span(row)
        span = None if span is None else [None if t is None else round(t, 3) for t in span]
        return make_sample_id(self.kind, row.get("source_dataset"), source, span)

    # ---------------------------------------------------------------- per row

    def prompt_for(self, row: dict) -> str | None:
        return self.decoder().prompt_for(row)

    def rows_of(self, row: dict, planned: _Planned) -> list[dict]:
        """Return the output rows of one fully captioned input row: one per clip, ok or failed."""
        info, source = planned.info, row["source_path"]
        outputs = []
        for clip in planned.clips:
            out = {
                "sample_id": make_sample_id(self.kind, row.get("source_dataset"), source, [clip.start_frame, clip.end_frame]),
                "kind": self.kind,
                "source_path": source,
                "label": row.get("label"),
                "start_time": clip.start_time,
                "end_time": clip.end_time,
                "start_frame": clip.start_frame,
                "end_frame": clip.end_frame,
                "fps": info.fps,
                "num_frames": clip.end_frame - clip.start_frame,
                "width": info.width,
                "height": info.height,
                "source_duration": info.duration,
            }
            caption = None if clip.error else choose_caption(clip.captions, self.options.frame_policy)
            if clip.error or not caption:
                error = clip.error or "BLIP-2 gave an empty caption"
                out.update(caption=row.get("caption"), caption_source=row.get("caption_source"), status="failed", error=error)
                out["captioning"] = None
            else:
                out.update(caption=caption, caption_source="blip2")
                out["captioning"] = {
                    "model": self.captioner.model_id,
                    "prompt": planned.prompt,
                    "frame_policy": self.options.frame_policy,
                    "frame_times": clip.frame_times,
                    "frame_captions": clip.captions,
                    "input_caption": row.get("caption"),
                }
            outputs.append(out)
        return outputs

    def process(self, row: dict) -> list[dict]:
        [(_, result)] = self.process_many([row])
        if isinstance(result, Exception):
            raise result
        return result

    # ---------------------------------------------------------------- the pipeline

    def process_many(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        """Yield each input row with its clip rows in input order, captioning while the next batches decode.

        `decode_workers` worker processes (`decode_in="threads"`: threads) probe rows, decode their frames and
        preprocess them into pixel values, in input order; a feeder thread assembles batches at most
        `prefetch_batches` ahead of the model; this thread only runs the model and assembles the rows. Processes,
        because a small model's generation loop is Python: sharing the interpreter lock with decoding and
        preprocessing slows it down more than the decoding costs.
        """
        if self.captioner is None:
            self.setup()
        with self._cores_left_to_decoders():
            yield from self._pipeline(rows)

    @property
    def decode_workers(self) -> int:
        """`decode_workers`, or when 0: on CUDA all cores but one (at most 8); on the CPU a third of the cores (at
        least one), since decoding and preprocessing a clip cost about half what the model does (benchmarks/)."""
        if self.options.decode_workers:
            return self.options.decode_workers
        if self.captioner is not None and self.captioner.device.type == "cuda":
            return max(1, min(8, _cores() - 1))
        return max(1, _cores() // 3)

    def decoder(self) -> ClipDecoder:
        """Return what the decode workers run: this stage's planning, decoding and the captioner's image step."""
        if self._decoder is None:
            if self.captioner is None:
                self.setup()
            self._decoder = ClipDecoder(self.options, self.root, self.captioner.image_inputs())
        return self._decoder

    def _decode_pool(self, renew: bool = False):
        """Return the decode workers' pool (kept for the stage's life: starting a process costs a second or two);
        `renew` replaces a broken one."""
        if renew and self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._pool is None:
            workers = self.decode_workers
            if self.options.decode_in == "threads":
                self._pool = ThreadPoolExecutor(workers, thread_name_prefix="caption-decode")
            else:
                import multiprocessing as mp

                self._pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                                 initializer=_init_decode_worker, initargs=(os.getpid(),))
        return self._pool

    @contextmanager
    def _cores_left_to_decoders(self):
        """On the CPU, run torch on the cores the decode workers leave (at least one), then restore its setting."""
        import torch

        if self.captioner.device.type != "cpu":
            yield
            return
        # torch's intra-op threads spin-wait: on a busy machine a model sharing every core with the decoders runs
        # several times slower than one given the rest.
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, _cores() - self.decode_workers))
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _pipeline(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        messages: queue.Queue = queue.Queue()
        slots = threading.Semaphore(self.options.prefetch_batches)  # batches prepared but not yet captioned
        stop = threading.Event()
        decoder = threading.Thread(target=self._decode_ahead, args=(rows, messages, slots, stop), daemon=True,
                                   name="caption-feeder")
        decoder.start()
        planned: dict[int, _Planned] = {}
        remaining: dict[int, int] = {}  # frames of a row still to caption
        next_row = 0
        self.model_wait_s = 0.0
        try:
            while next_row < len(rows):
                waited = time.perf_counter()
                message = messages.get()
                self.model_wait_s += time.perf_counter() - waited
                if isinstance(message, _Crash):
                    raise message.error
                if message is _END:  # every message came before it: a row never planned is a bug
                    raise RuntimeError(f"the caption decoder ended after {next_row} of {len(rows)} rows")
                if isinstance(message, _Planned):
                    planned[message.index] = message
                    remaining[message.index] = sum(len(c.frame_times) for c in message.clips)
                elif isinstance(message, _ClipFailed):
                    clip = planned[message.index].clips[message.clip_no]
                    clip.error = message.error
                    remaining[message.index] -= len(clip.frame_times)
                elif isinstance(message, _Batch):
                    slots.release()
                    self._caption_batch(message, planned, remaining)
                while next_row < len(rows) and remaining.get(next_row) == 0:
                    yield rows[next_row], self._result(rows[next_row], planned.pop(next_row))
                    del remaining[next_row]
                    next_row += 1
        finally:
            stop.set()
            decoder.join()
        log.debug("caption: the model waited %.3f s for decoded frames", self.model_wait_s)

    def _result(self, row: dict, planned: _Planned) -> list[dict] | Exception:
        return planned.error if planned.error is not None else self.rows_of(row, planned)

    def _caption_batch(self, batch: _Batch, planned: dict[int, _Planned], remaining: dict[int, int]) -> None:
        error = batch.error
        captions: list[str] = []
        if error is None:
            try:
                captions = self.captioner.generate(batch.prepared)
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: fail this batch's clips, go on
                error = exc
        for i, (index, clip_no, frame_no) in enumerate(batch.refs):
            clip = planned[index].clips[clip_no]
            if error is not None:
                clip.error = clip.error or f"captioning failed: {type(error).__name__}: {error}"
            else:
                clip.captions[frame_no] = captions[i]
            remaining[index] -= 1

    def _decode_ahead(self, rows: list[dict], messages: queue.Queue, slots: threading.Semaphore, stop: threading.Event):
        """The feeder thread: rows planned, decoded and preprocessed by the decode workers, in input order; the
        model gets batches of their pixel values."""
        workers = self.decode_workers
        decoder = self.decoder()
        pixels: list[np.ndarray] = []
        prompts: list[str | None] = []
        refs: list[tuple[int, int, int]] = []

        def flush() -> None:
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    raise _Stopped
            batch = _Batch(list(refs))
            try:
                batch.prepared = self.captioner.assemble(np.stack(pixels), list(prompts))
            except Exception as exc:  # noqa: BLE001 - fails this batch's clips only
                batch.error = exc
            messages.put(batch)
            pixels.clear()
            prompts.clear()
            refs.clear()

        def add(planned: _Planned, clip_nos: list[int], decoded: list[np.ndarray | str]) -> None:
            for clip_no, clip_pixels in zip(clip_nos, decoded):
                if isinstance(clip_pixels, str):
                    messages.put(_ClipFailed(planned.index, clip_no, clip_pixels))
                    continue
                for frame_no, frame_pixels in enumerate(clip_pixels):
                    pixels.append(frame_pixels)
                    prompts.append(planned.prompt)
                    refs.append((planned.index, clip_no, frame_no))
                    if len(pixels) == self.options.batch_size:
                        flush()

        def submit(fn, *args) -> tuple[Any, Any]:
            pool = self._decode_pool()
            return pool, pool.submit(fn, *args)

        def result(task: tuple[Any, Any], fn, *args):
            """A worker's answer. When a worker died (a decoder crashing on a malformed file, say), every task of
            its pool fails: the pool is renewed and each task tried again; a second death is the task's own (the
            pool it broke is renewed for the others) and raises BrokenProcessPool."""
            for attempt in range(2):
                pool, future = task
                try:
                    return future.result()
                except BrokenProcessPool:
                    if pool is self._pool:
                        log.warning("a caption decode worker died; renewing the pool")
                        self._decode_pool(renew=True)
                    if attempt == 1:
                        raise
                task = submit(fn, *args)

        try:
            upcoming = iter(enumerate(rows))
            ahead: deque = deque()  # (index, row, task): rows being planned and decoded, in input order

            def top_up() -> None:
                while len(ahead) < 2 * workers and (item := next(upcoming, None)) is not None:
                    ahead.append((*item, submit(decoder.plan_and_decode_first, *item)))

            top_up()
            while ahead:
                if stop.is_set():
                    raise _Stopped
                index, row, task = ahead.popleft()
                try:
                    planned, groups, first = result(task, decoder.plan_and_decode_first, index, row)
                except BrokenProcessPool:
                    planned, groups, first = _Planned(index, error=VideoError("the decoder crashed on this file")), [], []
                top_up()
                messages.put(planned)
                if planned.error is not None:
                    continue
                add(planned, groups[0], first)
                # A long video's further clips: decoded a few groups at a time, so its frames never all sit in memory.
                path = decoder.resolve(row["source_path"])
                later: deque = deque()

                def collect(group: list[int], task) -> None:
                    try:
                        decoded = result(task, decoder.decode, path, [planned.clips[c] for c in group])
                    except BrokenProcessPool:
                        decoded = ["the decoder crashed on this clip"] * len(group)
                    add(planned, group, decoded)

                for group in groups[1:]:
                    later.append((group, submit(decoder.decode, path, [planned.clips[c] for c in group])))
                    if len(later) >= workers:
                        collect(*later.popleft())
                while later:
                    collect(*later.popleft())
            if pixels:
                flush()
            messages.put(_END)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - hand any bug to the consumer rather than hang it
            messages.put(_Crash(exc))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init_decode_worker(parent: int) -> None:
    """A decode worker: one torch thread (the image processor's tensors), and gone when its stage's process is."""
    import torch

    from vidrd_data.run.executors import exit_with_parent

    torch.set_num_threads(1)
    threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()


def _input_span(row: dict) -> tuple[float, float] | None:
    """Return the input row's `(start_time, end_time)` when it gives either, else None (NaN counts as missing)."""
    start, end = (row.get(k) for k in ("start_time", "end_time"))
    start, end = (None if t is None or t != t else float(t) for t in (start, end))
    if start is None and end is None:
        return None
    return start, end


def prepare(
    input: str,
    *,
    blip2: str,
    layout: str = "flat",
    split: str | None = None,
    path_col: str = "path",
    root: str | None = None,
    source_dataset: str | None = None,
    **options: Any,
) -> StageJob:
    """Check the caption options and the model's config, and read the input videos.

    `input` is a folder of videos (`layout="action"`: `ROOT/ClassName/video.ext`), a UCF-101 root with a `split`
    file (a path, or a name inside `input`), a list table (`path[,label][,start,end][,caption]`) or a manifest
    (its ok `video_clip` rows, their spans captioned). `options` are the fields of `CaptionOptions`.
    """
    from vidrd_data.models.captioners.blip2 import check_model
    from vidrd_data.models.device import resolve_device, resolve_dtype

    model = os.path.abspath(blip2) if os.path.isdir(blip2) else blip2  # a local directory: stored absolute
    unknown = set(options) - {f.name for f in dataclass_fields(CaptionOptions)}
    if unknown:
        raise InputError(f"unknown caption option(s) {', '.join(sorted(unknown))}")
    try:
        params = asdict(CaptionOptions(blip2=model, **options))
        resolve_dtype(params["dtype"], resolve_device(params["device"]))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    path = Path(input)
    if split is not None:
        split_file = Path(split) if Path(split).is_file() or not (path / split).is_file() else path / split
        table, base = sources.ucf101_split(split_file, root=path, source_dataset=source_dataset)
    elif path.is_dir() and mf.is_manifest(path):
        table, base = sources.manifest_rows(path, kind="video_clip", root=root)
        if table.num_rows == 0:
            raise InputError(f"{path} has no ok rows of kind video_clip")
    elif path.is_dir():
        table, base = sources.video_folder(path, layout=layout, source_dataset=source_dataset)
    else:
        table, base = sources.video_list(path, path_col=path_col, root=root, source_dataset=source_dataset)
    try:
        check_model(model)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return StageJob("caption", params, table, base, [str(input)])
