"""The `score` stage: a manifest's clips (or stills) → the same rows with score columns; thresholds filter.

Scores (`--scores`, any of `vidrd_data.scores.SCORES`): `blur` (sharpness, variance of the Laplacian), `motion`
(Farneback flow, frame difference, static/shake flag), `ocr` (text area, PP-OCRv4's detector), `aesthetic` (the
LAION predictor over CLIP image embeddings) and `clip_similarity` (caption–frames CLIP cosine). Each reads
`--frames` stills spread over the row's span (at 1/2n, 3/2n, … of it) at a `--frame-size` short side; motion
also reads the frame after each still. A row keeps its sample id and every column; a row under a `--min-*` or over
a `--max-*` threshold ends `status=filtered` with `filter` (the option's name) and `filter_score` (the value):
nothing vanishes. Each score's model and the sha256 of its weights are recorded in the manifest's params
(`score_models`). Rows whose media cannot be read end `failed`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from vidrd_data import manifest as mf
from vidrd_data.run.stage import Stage, StageJob
from vidrd_data.scores import SCORES, Clip, score_columns, scorer_class
from vidrd_data.sources import InputError

SCORED_ID = "_sample_id"  # the input row's sample id: a scored row keeps it (input columns with `_` are not carried)
MODEL_SCORES = ("aesthetic", "clip_similarity")


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ScoreOptions:
    """The stage's parameters (its `params` in `_manifest.json`); invalid values raise ValueError."""

    scores: str = _option("blur,motion", f"Comma-separated scores: {', '.join(SCORES)}.")
    frames: int = _option(3, "Stills per clip that the scores read.")
    frame_size: int = _option(360, "Short side the stills are scaled to (sharpness and text area depend on it).")
    min_sharpness: float | None = _option(None, "Filter rows whose sharpness (Laplacian variance) is lower.")
    min_motion: float | None = _option(None, "Filter rows whose motion_flow (px/frame at 128 px) is lower (static).")
    max_motion: float | None = _option(None, "Filter rows whose motion_flow is higher.")
    filter_shake: bool = _option(False, "Filter rows whose motion_flag is shake.")
    max_ocr_area: float | None = _option(None, "Filter rows whose text area (fraction of the frame) is larger.")
    min_aesthetic: float | None = _option(None, "Filter rows whose aesthetic score is lower.")
    min_clip_similarity: float | None = _option(None, "Filter rows whose caption–frame CLIP similarity is lower.")
    aesthetic_head: str | None = _option(None, "LAION aesthetic predictor state dict (.pth), for the aesthetic score.")
    clip: str = _option("ViT-L-14", "open_clip model name (the aesthetic head reads ViT-L/14 embeddings).")
    clip_pretrained: str | None = _option("openai", "open_clip pretrained tag.")
    clip_config: str | None = _option(None, "Local open_clip model-config JSON (offline use).")
    clip_checkpoint: str | None = _option(None, "Local open_clip checkpoint for --clip-config.")
    device: str = _option("auto", "Device of the CLIP scores: auto, cpu or cuda.")

    def __post_init__(self):
        names = self.names()
        unknown = [n for n in names if n not in SCORES]
        if not names or unknown:
            raise ValueError(f"--scores: unknown score {unknown[0]!r} (known: {', '.join(SCORES)})" if unknown
                             else "--scores: name at least one score")
        if self.frames < 1 or self.frame_size < 16:
            raise ValueError("--frames must be ≥ 1 and --frame-size ≥ 16")
        if "aesthetic" in names and not self.aesthetic_head:
            raise ValueError("the aesthetic score needs --aesthetic-head (the LAION predictor's .pth)")
        needs = {"min_sharpness": "blur", "min_motion": "motion", "max_motion": "motion", "filter_shake": "motion",
                 "max_ocr_area": "ocr", "min_aesthetic": "aesthetic", "min_clip_similarity": "clip_similarity"}
        for option, score in needs.items():
            if getattr(self, option) not in (None, False) and score not in names:
                raise ValueError(f"--{option.replace('_', '-')} filters on the {score} score: add it to --scores")

    def names(self) -> list[str]:
        return [n.strip() for n in self.scores.split(",") if n.strip()]


# option → (column, keeps the row when); checked in this order, the first that fails names the filter
FILTERS = {
    "min_sharpness": ("sharpness", lambda v, t: v >= t),
    "min_motion": ("motion_flow", lambda v, t: v >= t),
    "max_motion": ("motion_flow", lambda v, t: v <= t),
    "max_ocr_area": ("ocr_area", lambda v, t: v <= t),
    "min_aesthetic": ("aesthetic", lambda v, t: v >= t),
    "min_clip_similarity": ("clip_similarity", lambda v, t: v >= t),
}


def build_scorers(params: dict) -> list:
    """Return the scorers `params["scores"]` names, the CLIP model loaded once for those that need it."""
    names = ScoreOptions(**{k: params[k] for k in (f.name for f in fields(ScoreOptions))}).names()
    clip = None
    if any(n in MODEL_SCORES for n in names):
        from vidrd_data.scores.clip_similarity import ClipModel

        clip = ClipModel(params["clip"], params["clip_pretrained"], params["clip_config"], params["clip_checkpoint"],
                         params["device"] or "cpu")
    scorers = []
    for name in names:
        cls = scorer_class(name)
        if name == "aesthetic":
            scorers.append(cls(clip, params["aesthetic_head"]))
        elif name == "clip_similarity":
            scorers.append(cls(clip))
        else:
            scorers.append(cls())
    return scorers


def read_clip(row: dict, path: str, frames: int, frame_size: int) -> Clip:
    """Return the row's stills (and adjacent-frame pairs for a video) scaled to a `frame_size` short side."""
    import cv2

    from vidrd_io.images import open_image
    from vidrd_io.video import probe, read_frames

    def scaled(frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        s = frame_size / min(h, w)
        return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)

    if row.get("kind") != "video_clip":
        still = scaled(np.asarray(open_image(path).convert("RGB")))
        return Clip(still[None], [], row.get("caption"))
    start, end, fps = row.get("start_time"), row.get("end_time"), row.get("fps")
    if start is None or end is None or not fps:
        info = probe(path)
        start, end, fps = start or 0.0, end if end is not None else info.duration, fps or info.fps
    step = 1.0 / fps
    times = [start + (end - start) * (2 * k + 1) / (2 * frames) for k in range(frames)]
    after = [min(t + step, max(start, end - step / 2)) for t in times]
    decoded = read_frames(path, times + after)
    stills = np.stack([scaled(f) for f in decoded[:frames]])
    pairs = [(stills[k], scaled(decoded[frames + k])) for k in range(frames) if after[k] > times[k]]
    return Clip(stills, pairs, row.get("caption"))


class ScoreClips(Stage):
    """Scores each row's media; the row comes out whole, with score columns, `ok` or `filtered`."""

    name = "score"
    kind = "video_clip"
    fields: list = []  # set below the class: every score's columns, then the filter's

    def setup(self) -> None:
        self.scorers = build_scorers(self.params)

    def input_sample_id(self, row: dict) -> str:
        return row.get(SCORED_ID) or super().input_sample_id(row)

    def process(self, row: dict) -> list[dict]:
        if not row.get("source_path"):
            raise ValueError("no source_path")
        clip = read_clip(row, self.resolve(row["source_path"]), self.params["frames"], self.params["frame_size"])
        out = {k: v for k, v in row.items() if not k.startswith("_") and k != "input_row"}
        out["sample_id"] = row[SCORED_ID]
        for scorer in self.scorers:
            out.update(scorer(clip))
        reason = self.filter_reason(out)
        if reason:
            out.update(status="filtered", filter=reason[0], filter_score=reason[1])
        return [out]

    def filter_reason(self, row: dict) -> tuple[str, float | None] | None:
        """Return (filter, score) of the first threshold the row fails, or None when it passes them all."""
        for option, (column, keeps) in FILTERS.items():
            threshold, value = self.params.get(option), row.get(column)
            if threshold is not None and value is not None and not keeps(value, threshold):
                return option, float(value)
        if self.params.get("filter_shake") and row.get("motion_flag") == "shake":
            return "filter_shake", row.get("motion_flow")
        return None


ScoreClips.fields = score_columns() + list(mf.FILTER_FIELDS)  # every score's (null where it did not run)


def prepare(input: str, **arguments: Any) -> StageJob:
    """Check the score options and read the manifest to score (its ok rows, any kind).
    `arguments` are the fields of `ScoreArguments` and `ScoreOptions`, their defaults declared there."""
    from vidrd_data.models.device import check_names
    from vidrd_data.stages.arguments import read_arguments

    args, options = read_arguments("score", input, arguments)
    path = Path(input)  # the input first: building the scorers may load a CLIP ViT-L/14
    if not (path.is_dir() and mf.is_manifest(path)):
        raise InputError(f"{input} is not a manifest (score reads a manifest's ok rows)")
    m = mf.Manifest.open_for_work(path, root=args.root, allow_partial=args.allow_partial)
    table = m.read(status="ok")
    if table.num_rows == 0:
        raise InputError(f"{input} has no ok rows to score")
    for key in ("clip_config", "clip_checkpoint", "aesthetic_head"):
        if options.get(key):
            options[key] = os.path.abspath(options[key])
    try:
        params = asdict(ScoreOptions(**options))
        check_names(params["device"])
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc)) from None
    for key in ("clip_config", "clip_checkpoint", "aesthetic_head"):
        if params[key] and not os.path.isfile(params[key]):
            raise InputError(f"--{key.replace('_', '-')} file not found: {params[key]}")
    names = ScoreOptions(**options).names()
    if not any(n in MODEL_SCORES for n in names):
        params["device"] = None  # no model: a CPU stage, placed on no GPU
    try:
        params["score_models"] = {s.name: s.identity() for s in build_scorers(params)}
    except (ValueError, OSError) as exc:
        raise InputError(str(exc).splitlines()[0]) from None
    table = table.drop_columns([c for c in ("status", "error", "input_row", "filter", "filter_score")
                                if c in table.column_names])
    table = table.rename_columns([SCORED_ID if c == "sample_id" else c for c in table.column_names])
    return StageJob("score", params, table, Path(m.root) if m.root else None, [str(input)])
