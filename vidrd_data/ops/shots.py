"""Shot rules: where a video is cut into segments, and which segments are kept, from frame changes and the
embeddings of frames sampled on the stream's timestamps (the `segment` stage's pure operations).

The rules, in the order they run (defaults and reasoning in the README, "vidrd-data segment"):

1. cut: consecutive sampled frames less similar than `threshold` are in different scenes; the cut is placed at
   the frame between them that changes most from its predecessor. When no single frame there changes by
   `frame_change` or more, the scene changed gradually (fade, dissolve, fast motion) and there is no cut.
2. merge (Panda-70M's stitching): a shot change whose boundary frames are similar (≥ `threshold`) joins the
   shots into one segment, so a camera flash or a cut between two views of one scene does not split it.
   min-shot: a cut less than `min_shot_frames` after the previous one (or the start) is not taken either, as
   Panda-70M's PySceneDetect ContentDetector(min_scene_len=15) does not.
3. static (only with `drop_static`): a segment whose frames all stay ≥ `static_threshold` similar is dropped.
4. trim: `trim` seconds come off both ends; then a segment shorter than `min_seconds` is dropped.
5. split: a segment longer than `max_seconds` is split into equal parts.
6. transition: a piece whose first and last sampled frames are dissimilar (< `transition_threshold`) is a
   transition, not a scene. It runs on the pieces after the split (Panda-70M's order). With `halve_transitions`
   (the default; our choice, the paper is silent) a failing piece is halved, and each half judged again, until
   the halves pass or would be shorter than `min_seconds`: a long continuous shot whose colours drift (a walking
   tour, a slow pan) survives as pieces whose ends look alike even when `max_seconds` left it whole, and a fade
   inside a shot costs only the pieces around it. Without it a failing piece is dropped whole (Panda-70M).

The span's last frame is always sampled, so a hard cut between the last regular sample and the span's end is
found like any other (it would otherwise leave frames of the next shot at the end of the segment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-6


@dataclass(frozen=True)
class Boundary:
    """A shot change at `frame` (the first frame of the new shot), the similarity of the samples around it and the
    detector's score for it (the frame change for the `embedding` detector)."""

    frame: int
    similarity: float
    score: float | None = None


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
    start_score: float | None = None  # the detector's scores of those cuts
    end_score: float | None = None


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
    detector: str = "embedding"  # what found the shot changes (a model id)

    def time(self, frame: int) -> float:
        return float(self.timestamps[frame]) if frame < len(self.timestamps) else self.end_time

    def samples_in(self, segment: Segment) -> np.ndarray:
        """Return the indices (into `sample_frames`) of the samples inside `segment`."""
        lo, hi = np.searchsorted(self.sample_frames, [segment.start, segment.stop], side="left")
        return np.arange(lo, hi)


def shot_changes(changes: np.ndarray, sample_frames: np.ndarray, frame_change: float) -> list[tuple[int, int, float]]:
    """Return (frame, sample pair j, its change) of each sampled-frame interval's largest frame change ≥
    `frame_change`.

    Interval j holds the frames after sample j up to and including sample j + 1.
    """
    found = []
    for j in range(len(sample_frames) - 1):
        a, b = int(sample_frames[j]), int(sample_frames[j + 1])
        k = a + 1 + int(np.argmax(changes[a + 1 : b + 1]))
        if changes[k] >= frame_change:
            found.append((k, j, float(changes[k])))
    return found


def detected_changes(frames: np.ndarray, scores: np.ndarray, sample_frames: np.ndarray) -> list[tuple[int, int, float]]:
    """Return (frame, sample pair j, score) of each shot change a frame detector found, j the sampled-frame
    interval holding it (as `shot_changes` numbers them); changes before the second sample fall in interval 0."""
    pairs = np.clip(np.searchsorted(sample_frames, frames, side="left") - 1, 0, max(0, len(sample_frames) - 2))
    return [(int(f), int(j), float(x)) for f, j, x in zip(frames, pairs, scores) if len(sample_frames) > 1]


def cut_and_merge(
    candidates: list[tuple[int, int, float]],
    similarities: np.ndarray,
    threshold: float,
    min_shot_frames: int,
) -> tuple[list[Boundary], dict[str, list[Boundary]]]:
    """Return the cuts and the shot changes not cut, by rule, from the candidate shot changes (frame, sample pair
    j, score) of `shot_changes` or `detected_changes`.

    A shot change is cut when the samples around it are dissimilar (< threshold) and it comes at least
    `min_shot_frames` after the previous cut (or the span's start); otherwise it is kept inside a segment, as
    `merge` (similar samples: stitched) or `min_shot` (too close to the previous cut).
    """
    cuts: list[Boundary] = []
    kept_inside: dict[str, list[Boundary]] = {"merge": [], "min_shot": []}
    for frame, j, score in candidates:
        boundary = Boundary(frame, float(similarities[j]), score)
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
                    right.similarity if ends_at_cut else None, rules,
                    start_score=left.score if starts_at_cut else None, end_score=right.score if ends_at_cut else None)
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
                   segment.end_similarity, [*segment.rules, "trim"], segment.start_score, segment.end_score)


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
                segment.end_similarity if b == segment.stop else None, [*segment.rules, "split"],
                segment.start_score if a == segment.start else None, segment.end_score if b == segment.stop else None)
        for a, b in zip(edges, edges[1:])
    ]


def without_transitions(seg: Segmentation, piece: Segment, threshold: float, min_seconds: float,
                        halve: bool) -> tuple[list[Segment], int]:
    """Return the parts of `piece` that pass the transition test and how many parts were dropped as transitions:
    the piece itself when it passes; else, with `halve`, its halves judged the same way while they last at least
    `min_seconds` and hold two samples each (rule 6)."""
    if not is_transition(seg, piece, threshold):
        return [piece], 0
    duration = seg.time(piece.stop) - seg.time(piece.start)
    if not halve or duration / 2 < min_seconds - EPS or len(seg.samples_in(piece)) < 4:
        return [], 1
    kept, dropped = [], 0
    for half in split_evenly(seg, piece, duration / 2):
        pieces, transitions = without_transitions(seg, half, threshold, min_seconds, halve)
        kept += pieces
        dropped += transitions
    return kept, dropped


def segment_video(
    timestamps: np.ndarray,
    end_time: float,
    changes: np.ndarray,
    sample_frames: np.ndarray,
    embeddings: np.ndarray,
    options,
    detected=None,
    detector: str = "embedding",
) -> Segmentation:
    """Return the segmentation of one decoded span by the cut and stitch rules (module docstring); frames are
    span-relative. `options`: the segment stage's `SegmentOptions` (thresholds, frame_change, min_shot_frames,
    drop_static, trim, min_seconds, max_seconds). `detected`: the cuts a frame detector found (an object with
    `frames` and `scores`, `models.shot_detectors.DetectedCuts`), which then replace the frame-change candidates;
    the merge rule still stitches those whose two sides' samples look alike (Panda-70M stitches its
    ContentDetector cuts the same way). `detector` names what found them, for the provenance."""
    thresholds = options.rule_thresholds()
    similarities = np.einsum("id,id->i", embeddings[:-1], embeddings[1:]) if len(embeddings) > 1 else np.zeros(0)
    if detected is None:
        candidates = shot_changes(changes, sample_frames, options.frame_change)
    else:
        candidates = detected_changes(detected.frames, detected.scores, sample_frames)
    cuts, kept_inside = cut_and_merge(candidates, similarities, thresholds.cut, options.min_shot_frames)
    seg = Segmentation(timestamps, end_time, sample_frames, embeddings, similarities, [], cuts, kept_inside, {},
                       detector)
    dropped = {"transition": 0, "static": 0, "min_seconds": 0}
    kept = []
    for segment in segments_between(len(timestamps), cuts, kept_inside):
        if options.drop_static and is_static(seg, segment, thresholds.static):
            dropped["static"] += 1
            continue
        segment = trim_ends(seg, segment, options.trim)
        if segment.stop - segment.start < 2 or seg.time(segment.stop) - seg.time(segment.start) < options.min_seconds - EPS:
            dropped["min_seconds"] += 1
            continue
        # The transition test runs on the pieces, as Panda-70M's does: a long shot whose colours drift (a pan, a
        # walking tour) keeps the pieces whose ends still look alike instead of vanishing whole.
        for piece in split_evenly(seg, segment, options.max_seconds):
            pieces, transitions = without_transitions(seg, piece, thresholds.transition, options.min_seconds,
                                                      options.halve_transitions)
            kept += pieces
            dropped["transition"] += transitions
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
        "start_cut_score": segment.start_score,
        "end_cut_score": segment.end_score,
        "detector": seg.detector,
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
