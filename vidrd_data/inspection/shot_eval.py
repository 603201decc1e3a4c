"""Shot-boundary evaluation: every shot detector of the `segment` stage on videos with known cuts, scored the way
PySceneDetect's own benchmark (`benchmark/evaluator.py`, the TRECVID-SBD convention) scores them.

Truth and predictions are 0-based frame numbers of the first frame of each new shot. Scoring, as PySceneDetect's:
a prediction inside a gradual transition's interval (fade, dissolve; inclusive) matches it — the first one does, any
further one in the same interval is a false positive — and the remaining predictions are matched 1-to-1 to hard
cuts within `tolerance` frames, nearest pairs first. Precision, recall and F1 are over the counts summed across
videos (hard cuts and gradual transitions together, and each kind on its own).

Annotation formats read (`read_truth`):

- `shots`: one shot a line, `start end` (inclusive frames, whitespace or tab separated) — the BBC Planet Earth
  `annotations/shots/<episode>.txt` and RAI `<video>_gt.txt` files. A gap between one shot's end and the next
  one's start is a gradual transition; adjacent shots meet at a hard cut.
- `cuts`: tab-separated rows whose second column is the 0-based cut frame — PySceneDetect's benchmark copies of
  BBC (`fixed/<id>-scenes.txt`) and AutoShot (`annotations/<id>.txt`).
- `clipshots`: ClipShots' JSON, `{video: {"frame_num": n, "transitions": [[a, b], ...]}}`, `a` the last frame of
  one shot and `b` the first of the next: `b = a + 1` is a hard cut at `b`, anything longer a gradual transition
  `[a + 1, b - 1]`.
- `json`: our own, `{"hard_cuts": [...], "gradual": [[start, end], ...]}` (what `write_montage` writes).

We write this scorer rather than import PySceneDetect's because its benchmark folder is not part of the installed
package.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMATS = ("shots", "cuts", "clipshots", "json")
EVAL_DETECTORS = ("histogram", "clip", "content", "adaptive", "transnetv2")


@dataclass
class ShotTruth:
    """Known shot boundaries of one video: hard cuts (first frame of the new shot) and gradual transitions
    (inclusive frame intervals)."""

    hard_cuts: list[int]
    gradual: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Counts:
    """Matched, false-positive and missed boundaries; precision, recall and F1 from them."""

    matched: int = 0
    false_positives: int = 0
    missed: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.matched + other.matched, self.false_positives + other.false_positives,
                      self.missed + other.missed)

    @property
    def precision(self) -> float:
        found = self.matched + self.false_positives
        return self.matched / found if found else 0.0

    @property
    def recall(self) -> float:
        true = self.matched + self.missed
        return self.matched / true if true else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def read_truth(path: str | Path, fmt: str = "auto") -> dict[str, ShotTruth] | ShotTruth:
    """Return the truth in an annotation file: one ShotTruth, or for ClipShots' JSON one per video name.

    `fmt` is one of FORMATS, or `auto` (ClipShots / our JSON by content for `.json`, `cuts` for tab-separated rows
    of more than two columns, else `shots`)."""
    path = Path(path)
    text = path.read_text()
    if fmt == "auto":
        if path.suffix.lower() == ".json":
            data = json.loads(text)
            fmt = "json" if "hard_cuts" in data else "clipshots"
        else:
            first = next((line for line in text.splitlines() if line.strip()), "")
            fmt = "cuts" if "\t" in first and len(first.split("\t")) > 2 else "shots"
    if fmt == "json":
        data = json.loads(text)
        return ShotTruth([int(c) for c in data["hard_cuts"]], [(int(a), int(b)) for a, b in data.get("gradual", [])])
    if fmt == "clipshots":
        return {name: _clipshots_truth(entry["transitions"]) for name, entry in json.loads(text).items()}
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if fmt == "cuts":
        return ShotTruth(sorted(int(row[1]) for row in rows))
    if fmt == "shots":
        shots = sorted((int(row[0]), int(row[1])) for row in rows)
        truth = ShotTruth([])
        for (_, end), (start, _) in zip(shots, shots[1:]):
            if start <= end + 1:
                truth.hard_cuts.append(start)
            else:
                truth.gradual.append((end + 1, start - 1))
        return truth
    raise ValueError(f"unknown annotation format {fmt!r} (use auto or {', '.join(FORMATS)})")


def _clipshots_truth(transitions) -> ShotTruth:
    truth = ShotTruth([])
    for a, b in transitions:
        if b - a <= 1:
            truth.hard_cuts.append(int(b))
        else:
            truth.gradual.append((int(a) + 1, int(b) - 1))
    return truth


def score(predicted: list[int], truth: ShotTruth, tolerance: int) -> dict[str, Counts]:
    """Return the counts for `hard`, `gradual` and `all` boundaries (PySceneDetect's benchmark rules, see the
    module docstring): interval membership for gradual transitions first, then 1-to-1 nearest matching of the
    remaining predictions to hard cuts within `tolerance` frames."""
    remaining, used_intervals, gradual = [], set(), Counts()
    for p in predicted:
        inside = next((i for i, (a, b) in enumerate(truth.gradual) if a <= p <= b), None)
        if inside is None:
            remaining.append(p)
        elif inside in used_intervals:
            gradual.false_positives += 1
        else:
            used_intervals.add(inside)
            gradual.matched += 1
    gradual.missed = len(truth.gradual) - gradual.matched
    pairs = sorted((abs(p - g), i, j) for i, p in enumerate(remaining) for j, g in enumerate(truth.hard_cuts)
                   if abs(p - g) <= tolerance)
    used_p, used_g = set(), set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i), used_g.add(j)
    hard = Counts(len(used_p), len(remaining) - len(used_p), len(truth.hard_cuts) - len(used_p))
    return {"hard": hard, "gradual": gradual, "all": hard + gradual}


def pair_videos(videos: str | Path, annotations: str | Path | None = None,
                fmt: str = "auto") -> list[tuple[str, ShotTruth]]:
    """Return (video path, truth) for each video in folder `videos` (or the one video file) that has annotations.

    `annotations` is a folder (default: the videos' own) holding, per video `NAME.ext`, one of `NAME.json`,
    `NAME.txt`, `NAME_gt.txt` (RAI), `ID-scenes.txt` for `bbc_ID.ext` (PySceneDetect's BBC copy); or one
    ClipShots JSON file naming the videos. Raises ValueError when no video has annotations."""
    from vidrd_io.video import VIDEO_EXTENSIONS

    videos = Path(videos)
    if not videos.exists():
        raise ValueError(f"not found: {videos}")
    files = [videos] if videos.is_file() else sorted(p for p in videos.iterdir()
                                                     if p.suffix.lower() in VIDEO_EXTENSIONS)
    where = Path(annotations) if annotations is not None else (videos if videos.is_dir() else videos.parent)
    if not where.exists():
        raise ValueError(f"annotations not found: {where}")
    by_name = read_truth(where, "clipshots" if fmt == "auto" else fmt) if where.is_file() else None
    pairs = []
    for video in files:
        if by_name is not None:
            truth = by_name.get(video.name, by_name.get(video.stem))
            if truth is not None:
                pairs.append((str(video), truth))
            continue
        names = [f"{video.stem}.json", f"{video.stem}.txt", f"{video.stem}_gt.txt",
                 f"{video.stem.removeprefix('bbc_')}-scenes.txt"]
        found = next((where / n for n in names if (where / n).is_file()), None)
        if found is not None:
            pairs.append((str(video), read_truth(found, fmt)))
    if not pairs:
        raise ValueError(f"no video in {videos} has annotations in {where} (NAME.json, NAME.txt, NAME_gt.txt, "
                         "ID-scenes.txt or a ClipShots JSON)")
    return pairs


# ---------------------------------------------------------------- synthetic montages with known truth


def _scene(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Return n frames of one synthetic shot: a smooth random landscape panned sideways, a disc moving over it."""
    from PIL import Image

    coarse = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    speed = rng.uniform(0.2, 0.8)  # pixels a frame: a slow pan, as in most footage
    wide = np.asarray(Image.fromarray(coarse).resize((w + int(speed * n) + 2, h), Image.BICUBIC))
    colour = rng.integers(0, 256, 3)
    y, x, vy, vx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(-1, 1), rng.uniform(-1.5, 1.5)
    yy, xx = np.mgrid[:h, :w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        frame = wide[:, int(speed * t) : int(speed * t) + w].copy()
        disc = (yy - (y + vy * t) % h) ** 2 + (xx - (x + vx * t) % w) ** 2 < (h / 8) ** 2
        frame[disc] = colour
        frames[t] = frame
    return frames


def montage(seed: int, transitions: list[str], *, fps: float = 25.0, size: tuple[int, int] = (96, 160),
            shot_seconds: tuple[float, float] = (2.0, 4.0), gradual_frames: int = 12) -> tuple[np.ndarray, ShotTruth]:
    """Return (frames, truth) of a montage of len(transitions) + 1 synthetic shots joined by `transitions`, each
    `cut` (hard cut), `fade` (out to black and in again over `gradual_frames`) or `dissolve` (cross-fade)."""
    rng = np.random.default_rng(seed)
    h, w = size
    pieces, truth, length = [], ShotTruth([]), 0
    shots = [_scene(rng, round(rng.uniform(*shot_seconds) * fps), h, w) for _ in range(len(transitions) + 1)]
    pieces.append(shots[0])
    length = len(shots[0])
    for kind, shot in zip(transitions, shots[1:]):
        if kind == "cut":
            truth.hard_cuts.append(length)
        elif kind in ("fade", "dissolve"):
            before, after, g = pieces[-1], shot, gradual_frames
            weights = (np.arange(1, g + 1) / (g + 1))[:, None, None, None]
            if kind == "dissolve":
                mixed = (1 - weights) * before[-1:] + weights * after[:1]
            else:
                half = np.minimum(1.0, np.abs(2 * weights - 1))  # brightness: 1 → 0 → 1
                mixed = np.where(weights < 0.5, before[-1:], after[:1]) * half
            pieces.append(mixed.astype(np.uint8))
            truth.gradual.append((length, length + g - 1))
            length += g
        else:
            raise ValueError(f"unknown transition {kind!r} (use cut, fade or dissolve)")
        pieces.append(shot)
        length += len(shot)
    return np.concatenate(pieces), truth


def write_montage(path: str | Path, seed: int, transitions: list[str], fps: float = 25.0, **kwargs) -> ShotTruth:
    """Write a montage as H.264 mp4 at `path` and its truth beside it (`<stem>.json`); return the truth."""
    from vidrd_io.fs import write_json_atomic
    from vidrd_io.video import write_mp4

    frames, truth = montage(seed, transitions, fps=fps, **kwargs)
    path = Path(path)
    write_mp4(path, frames, fps, crf=18)
    write_json_atomic(path.with_suffix(".json"), {"hard_cuts": truth.hard_cuts, "gradual": truth.gradual})
    return truth


# ---------------------------------------------------------------- running the detectors


def detect_cuts(path: str | Path, detector: str, *, clip_config: str | None = None,
                clip_checkpoint: str | None = None, device: str = "cpu") -> tuple[list[int], float]:
    """Return the cut frames `detector` (one of EVAL_DETECTORS) finds in the video at `path` and the seconds it
    took (decode included), through the `segment` stage's decode pipeline and rules: the `embedding` detectors
    (histogram, clip) give their cuts before the merge rule stitches any, the others their raw detections."""
    from vidrd_data.models.embedders import make_embedder
    from vidrd_data.models.shot_detectors import detector_frame_size, make_detector
    from vidrd_data.ops.shots import cut_and_merge, shot_changes
    from vidrd_data.stages.segment import SegmentOptions
    from vidrd_io.sampling import FrameSampler
    from vidrd_io.video import probe

    if detector not in EVAL_DETECTORS:
        raise ValueError(f"unknown detector {detector!r} (use {', '.join(EVAL_DETECTORS)})")
    embedding = detector in ("histogram", "clip")
    options = SegmentOptions(embedder=detector if embedding else "histogram", clip_config=clip_config,
                             clip_checkpoint=clip_checkpoint, device=device)
    started = time.perf_counter()
    info = probe(path)
    if embedding:
        embedder = make_embedder(detector, clip_config=clip_config, clip_checkpoint=clip_checkpoint, device=device)
        sampler = FrameSampler(options.sample_fps, embedder.frame_size)
        changes, samples, embeddings, decoded = [], [], [], 0
        for chunk in sampler.chunks(str(path), info, 0, info.num_frames, float(info.timestamps[0])):
            changes.append(chunk.changes)
            samples.extend((decoded + chunk.sample_positions).tolist())
            embeddings.append(embedder.embed(chunk.samples))
            decoded += len(chunk.timestamps)
        embeddings = np.concatenate(embeddings)
        similarities = np.einsum("id,id->i", embeddings[:-1], embeddings[1:])
        candidates = shot_changes(np.concatenate(changes), np.asarray(samples), options.frame_change)
        cuts, _ = cut_and_merge(candidates, similarities, options.rule_thresholds().cut, options.min_shot_frames)
        frames = [c.frame for c in cuts]
    else:
        model = make_detector(detector, device=device)
        size = detector_frame_size(detector, info.width, info.height)
        sampler = FrameSampler(options.sample_fps, min(size), detector_size=size)
        run = model.start(info.fps)
        for chunk in sampler.chunks(str(path), info, 0, info.num_frames, float(info.timestamps[0])):
            run.add(chunk.detector_frames)
        frames = run.finish().frames.tolist()
    return frames, time.perf_counter() - started


def pyscenedetect_reference(path: str | Path) -> tuple[list[int], float]:
    """Return the cut frames PySceneDetect's own pipeline (`scenedetect.detect`, its OpenCV backend, default
    ContentDetector) finds, and the seconds it took: the peer's answer beside ours."""
    from scenedetect import ContentDetector, detect

    started = time.perf_counter()
    scenes = detect(str(path), ContentDetector())
    return [start.frame_num for start, _ in scenes[1:]], time.perf_counter() - started


@dataclass
class DetectorResult:
    """One detector over a set of videos: summed counts and seconds, and the video seconds processed."""

    detector: str
    counts: dict[str, Counts] = field(default_factory=lambda: {k: Counts() for k in ("hard", "gradual", "all")})
    seconds: float = 0.0
    video_seconds: float = 0.0
    error: str | None = None

    @property
    def seconds_per_video_hour(self) -> float:
        return self.seconds / self.video_seconds * 3600 if self.video_seconds else float("nan")


def evaluate(videos: list[tuple[str, ShotTruth]], detectors: list[str], tolerance: int = 2,
             reference: bool = True, **detector_options) -> list[DetectorResult]:
    """Return each detector's result over `videos` ((path, truth) pairs); with `reference`, PySceneDetect's own
    pipeline as one more row. A detector that cannot run (no weights offline) is a row with its error."""
    from vidrd_io.video import probe

    durations = {path: probe(path).duration for path, _ in videos}
    names = [*detectors, *(["pyscenedetect"] if reference else [])]
    results = []
    for name in names:
        result = DetectorResult(name)
        try:
            for path, truth in videos:
                found, seconds = pyscenedetect_reference(path) if name == "pyscenedetect" else \
                    detect_cuts(path, name, **detector_options)
                for kind, counts in score(found, truth, tolerance).items():
                    result.counts[kind] = result.counts[kind] + counts
                result.seconds += seconds
                result.video_seconds += durations[path]
        except Exception as exc:  # noqa: BLE001 - one detector that cannot run must not hide the others' rows
            result.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        results.append(result)
    return results


def table(results: list[DetectorResult], tolerance: int) -> str:
    """Return the results as a Markdown table: P/R/F1 for all boundaries, hard cuts and gradual ones, and speed."""
    lines = [f"| detector | P | R | F1 | hard F1 | gradual F1 | s per video-hour | (tolerance ±{tolerance} frames) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            lines.append(f"| {r.detector} | – | – | – | – | – | – | {r.error} |")
            continue
        a, h, g = r.counts["all"], r.counts["hard"], r.counts["gradual"]
        gradual = f"{g.f1:.3f}" if g.matched + g.missed else "n/a"
        hard = f"{h.f1:.3f}" if h.matched + h.missed else "n/a"
        lines.append(f"| {r.detector} | {a.precision:.3f} | {a.recall:.3f} | {a.f1:.3f} | {hard} | {gradual} | "
                     f"{r.seconds_per_video_hour:.0f} | tp {a.matched} fp {a.false_positives} fn {a.missed} |")
    return "\n".join(lines)


def result_dict(result: DetectorResult) -> dict:
    """Return one detector's result as plain JSON-able values."""
    return {
        "detector": result.detector,
        "error": result.error,
        "seconds": result.seconds,
        "video_seconds": result.video_seconds,
        "seconds_per_video_hour": result.seconds_per_video_hour if result.video_seconds else None,
        **{kind: {"matched": c.matched, "false_positives": c.false_positives, "missed": c.missed,
                  "precision": c.precision, "recall": c.recall, "f1": c.f1} for kind, c in result.counts.items()},
    }
