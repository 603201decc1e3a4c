"""Clip scores for the `score` stage: one module per score, each a class that turns a clip's sampled frames into
its columns and names the model (and weights' sha256) that made them.

A scorer has `name`, `columns` (its manifest columns, the first being the one its filter thresholds), `identity()`
(`{"name", "sha256"}`, recorded in the manifest's params) and `__call__(clip) -> dict` (column → value).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# Score name → "module:Class", imported lazily so that a run loads only the libraries its scores need.
SCORES = {
    "blur": "vidrd_data.scores.blur:BlurScore",
    "motion": "vidrd_data.scores.motion:MotionScore",
    "ocr": "vidrd_data.scores.ocr:TextAreaScore",
    "aesthetic": "vidrd_data.scores.aesthetic:AestheticScore",
    "clip_similarity": "vidrd_data.scores.clip_similarity:ClipSimilarityScore",
}


@dataclass
class Clip:
    """What a scorer sees of one row: a few stills across its span and, for a video, pairs of adjacent frames."""

    stills: np.ndarray  # uint8 (n, H, W, 3), RGB
    pairs: list[tuple[np.ndarray, np.ndarray]]  # adjacent frames (t, t + 1/fps); empty for a still image
    caption: str | None


def scorer_class(name: str):
    """Return the class of score `name` (a key of `SCORES`)."""
    module, _, attr = SCORES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def score_columns() -> list[pa.Field]:
    """Return every score's columns, in `SCORES` order."""
    return [f for name in SCORES for f in scorer_class(name).columns]
