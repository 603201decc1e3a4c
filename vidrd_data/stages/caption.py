"""The `caption` stage: videos → clips captioned by BLIP-2, as VidRD does for action-recognition sets.

For each input video (optionally a span of it, and a class label):

    probe → clip windows → k frames per clip → BLIP-2 captions → one `video_clip` row per clip

Clip windows and frames are placed by the stream's timestamps, so variable-frame-rate files are cut where their
frames really are; a clip's span is whole frames `[start_frame, end_frame)` and its id hashes that span. The row
records `caption_source="blip2"` and, in the `captioning` struct, the model, the prompt, the frames used and their
captions.

Probing, decoding and the captioner's image preprocessing run in the supervised decode worker processes of
`run/decode.py` (`ClipDecoder`), a few batches ahead of the model, so the model does not wait for the decoder
(`CaptionClips.process_many`), and a decoder that crashes or hangs on a file fails that file's row only.
"""

from __future__ import annotations

import logging
import os
import queue
import string
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.manifest import make_sample_id
from vidrd_data.ops.clips import (FRAME_POLICIES, Clip, choose_caption, clip_windows, frame_groups, frame_times,
                                  input_span)
from vidrd_data.models.batches import outputs_in_halves
from vidrd_data.run.decode import DEFAULT_TIMEOUT_S, DecodeTimeout, DecoderCrashed, FailureLog, \
    default_decode_workers, init_one_torch_thread, make_pool
from vidrd_data.run.processes import cores
from vidrd_data.run.stage import Stage, StageAbort, StageJob
from vidrd_data.sources import InputError, humanize_label
from vidrd_io.members import local_file
from vidrd_io.video import VideoError, VideoInfo, open_video, read_frames

log = logging.getLogger(__name__)

PROMPT_FIELDS = ("label",)

CAPTIONING = pa.struct(
    [
        pa.field("model", pa.string()),
        pa.field("prompt", pa.string()),  # as sent to the model, label filled in; null when none
        pa.field("frame_policy", pa.string()),
        pa.field("frame_times", pa.list_(pa.float64())),  # source times (s) of the captioned frames
        pa.field("frame_captions", pa.list_(pa.string())),
        pa.field("input_caption", pa.string()),  # the caption the input row had, if any
        pa.field("timestamps", pa.string()),  # clock of frame_times: decord, pyav or index (VideoInfo.timestamp_source)
    ]
)


@dataclass(frozen=True)
class CaptionOptions:
    """The stage's parameters (its `params`, as stored in `_manifest.json`); invalid values raise ValueError."""

    blip2: str = field(metadata={"help": "BLIP-2 hub id (e.g. Salesforce/blip2-opt-2.7b) or local directory."})
    clip_seconds: float | None = field(default=None, metadata={
        "help": "Clip length; default: the whole video up to --max-seconds."})
    stride_seconds: float | None = field(default=None, metadata={
        "help": "Start of one clip to the next (default --clip-seconds)."})
    max_seconds: float = field(default=10.0, metadata={
        "help": "Without --clip-seconds, longer videos are cut into windows this long."})
    min_seconds: float = field(default=1.0, metadata={"help": "Skip clips shorter than this."})
    frames: int = field(default=1, metadata={
        "help": "Frames captioned per clip, evenly spaced (1: the middle frame)."})
    frame_policy: str = field(default="middle", metadata={
        "help": "middle, longest (caption), or concat (unique captions)."})
    prompt: str | None = field(default=None, metadata={
        "help": 'Prompt template; may use {label}, e.g. "a video of {label},".'})
    beams: int = field(default=5, metadata={"help": "Beam search width."})
    max_new_tokens: int = field(default=30, metadata={"help": "Longest caption, in tokens."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeated words."})
    batch_size: int = field(default=16, metadata={"help": "Frames per model call."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA if available), cpu or cuda (which GPUs: --gpus)."})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."})
    prefetch_batches: int = field(default=4, metadata={"help": "Batches decoded ahead of the model, per worker."})
    decode_workers: int = field(default=0, metadata={
        "help": "Processes decoding and preprocessing frames ahead of the model, per worker (0: auto, a third of "
                "the cores on CPU, all but one on CUDA)."})
    decode_in: str = field(default="processes", metadata={
        "help": "processes (default) or threads for the decode workers."})

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

    def path_of(self, row: dict) -> str | None:
        """Return the file a row's decode reads (the failure log's key)."""
        return self.resolve(row["source_path"]) if row.get("source_path") else None

    def plan(self, index: int, row: dict) -> tuple[_Planned, Callable[[list[float]], np.ndarray]]:
        """Return the clips of one input row with the times of the frames to caption, and the opened video's reader."""
        if not row.get("source_path"):
            raise ValueError("no video path")
        prompt = self.prompt_for(row)
        path = local_file(self.resolve(row["source_path"]))  # a URL or a tar/Parquet member: its cached copy
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
        span = input_span(row) or (0.0, info.duration)
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
    decode_timeout_s = DEFAULT_TIMEOUT_S  # one row's probe and first clips, or one group of clips

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
        span = input_span(row)
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
                    "timestamps": info.timestamp_source,
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
        return default_decode_workers(self.captioner is not None and self.captioner.device.type == "cuda")

    def decoder(self) -> ClipDecoder:
        """Return what the decode workers run: this stage's planning, decoding and the captioner's image step."""
        if self._decoder is None:
            if self.captioner is None:
                self.setup()
            self._decoder = ClipDecoder(self.options, self.root, self.captioner.image_inputs())
        return self._decoder

    def _decode_pool(self):
        """Return the decode workers' pool (kept for the stage's life: starting a process costs a second or two)."""
        if self._pool is None:
            self._pool = make_pool(self.decode_workers, self.options.decode_in, name="caption",
                                   timeout_s=self.decode_timeout_s, initializer=init_one_torch_thread)
        self._pool.failures = FailureLog(self.work_dir)
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
        torch.set_num_threads(max(1, cores() - self.decode_workers))
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
        """Caption one batch; out of GPU memory, in halves (a frame that does not fit alone fails its clip); a lost
        device stops the stage (`StageAbort`); any other model error fails this batch's clips."""
        n = len(batch.refs)
        captions: list = [batch.error] * n
        if batch.error is None:
            try:
                captions = outputs_in_halves(lambda a, b: self.captioner.generate(_batch_rows(batch.prepared, a, b)), n)
            except StageAbort:
                raise
            except Exception as exc:  # noqa: BLE001 - fails this batch's clips, the stage goes on
                captions = [exc] * n
        for caption, (index, clip_no, frame_no) in zip(captions, batch.refs):
            clip = planned[index].clips[clip_no]
            if isinstance(caption, BaseException):
                clip.error = clip.error or f"captioning failed: {type(caption).__name__}: {caption}"
            else:
                clip.captions[frame_no] = caption
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

        pool = self._decode_pool()
        ahead: deque = deque()  # (index, row, task): rows being planned and decoded, in input order
        later: deque = deque()  # (group, task): a long video's further groups of clips
        try:
            upcoming = iter(enumerate(rows))

            def top_up() -> None:
                while len(ahead) < 2 * workers and (item := next(upcoming, None)) is not None:
                    task = pool.submit(decoder.plan_and_decode_first, *item, path=decoder.path_of(item[1]))
                    ahead.append((*item, task))

            top_up()
            while ahead:
                if stop.is_set():
                    raise _Stopped
                index, row, task = ahead.popleft()
                try:
                    planned, groups, first = task.result()
                except (DecoderCrashed, DecodeTimeout) as exc:  # the decoder died or hung on this file
                    planned, groups, first = _Planned(index, error=exc), [], []
                top_up()
                messages.put(planned)
                if planned.error is not None:
                    continue
                add(planned, groups[0], first)
                # A long video's further clips: decoded a few groups at a time, so its frames never all sit in memory.
                path = decoder.path_of(row)

                def collect(group: list[int], task) -> None:
                    try:
                        decoded = task.result()
                    except (DecoderCrashed, DecodeTimeout) as exc:
                        decoded = [f"clip decode failed: {exc}"] * len(group)
                    add(planned, group, decoded)

                for group in groups[1:]:
                    clips = [planned.clips[c] for c in group]
                    later.append((group, pool.submit(decoder.decode, path, clips, path=path)))
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
        finally:
            for *_, task in (*ahead, *later):
                task.cancel()


def _batch_rows(prepared, start: int, stop: int):
    """Return rows `[start, stop)` of a batch of model inputs (a dict of tensors or lists, e.g. `BatchFeature`)."""
    return type(prepared)({key: value[start:stop] for key, value in prepared.items()})


def prepare(input: str, **arguments: Any) -> StageJob:
    """Check the caption options and the model's config, and read the input videos.

    `input` is a folder of videos (`layout="action"`: `ROOT/ClassName/video.ext`), a UCF-101 root with a `split`
    file (a path, or a name inside `input`), a list table (`path[,label][,start,end][,caption]`) or a manifest
    (its ok `video_clip` rows, their spans captioned; an incomplete one is refused unless `allow_partial`).
    `arguments` are the fields of `CaptionArguments` and `CaptionOptions`, their defaults declared there.
    """
    from vidrd_data.models.captioners.blip2 import check_model
    from vidrd_data.models.device import check_names
    from vidrd_data.stages.arguments import read_arguments

    args, options = read_arguments("caption", input, arguments)
    blip2 = options["blip2"]
    model = os.path.abspath(blip2) if os.path.isdir(blip2) else blip2  # a local directory: stored absolute
    try:
        params = asdict(CaptionOptions(**{**options, "blip2": model}))
        check_names(params["device"], params["dtype"])
    except ValueError as exc:
        raise InputError(str(exc)) from None
    path, split = Path(input), args.split
    if split is not None:
        split_file = Path(split) if Path(split).is_file() or not (path / split).is_file() else path / split
        table, base = sources.ucf101_split(split_file, root=path, source_dataset=args.source_dataset)
    elif (layout := sources.video_layout(input, source_dataset=args.source_dataset)) is not None:  # video2dataset
        table, base = layout
    elif (path.is_dir() or mf.is_uri(str(input))) and mf.is_manifest(input):  # a manifest directory, or one at a URL
        table, base = sources.manifest_rows(input, kind="video_clip", root=args.root, allow_partial=args.allow_partial)
        if table.num_rows == 0:
            raise InputError(f"{path} has no ok rows of kind video_clip")
    elif path.is_dir():
        table, base = sources.video_folder(path, layout=args.layout, source_dataset=args.source_dataset)
    else:
        table, base = sources.video_list(input, path_col=args.path_col, root=args.root,
                                         source_dataset=args.source_dataset)
    try:
        check_model(model)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return StageJob("caption", params, table, base, [str(input)])
