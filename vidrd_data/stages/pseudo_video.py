"""The `pseudo-video` stage: still images → pseudo-videos, seeded camera motion (zoom, pan, both) over each.

The VidRD paper trains its temporal layers on still images turned into short videos by camera motion.
A pseudo-video is stored lazily: the manifest row keeps the image and a `motion` struct (two crop boxes
and an easing), and `ops.motion.render_pseudo_video` turns them into frames whenever they are needed — the
trainer, `inspect --sheet` and `--materialize` all call it, so what is shown is exactly what trains. Images are
opened (and, with `--materialize`, rendered and written) in decode worker processes (`run/decode.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vidrd_data import manifest as mf
from vidrd_data.manifest import make_sample_id
from vidrd_data.ops.motion import (EASINGS, MOTION_TYPE, MOTIONS, draw_motion, output_size, render_pseudo_video,
                                   sample_seed)
from vidrd_data.run.decode import DecodesRows
from vidrd_data.run.stage import Stage, StageJob
from vidrd_data.sources import InputError
from vidrd_io import fs
from vidrd_io.images import open_image
from vidrd_io.remote import is_url


@dataclass
class MotionConfig:
    """How motions are drawn. Probabilities are relative weights over `MOTIONS`."""

    probs: dict = field(default_factory=lambda: {"zoom_in": 0.2, "zoom_out": 0.2, "pan": 0.25, "diagonal_pan": 0.15, "zoom_pan": 0.2})
    zoom_range: tuple[float, float] = (1.15, 1.5)  # zoom factor between the widest and the tightest box
    pan_range: tuple[float, float] = (0.1, 0.25)  # pan distance as a fraction of the image side
    easing: str = "ease_in_out"

    def __post_init__(self):
        unknown = set(self.probs) - set(MOTIONS)
        if unknown:
            raise ValueError(f"unknown motion(s) {', '.join(sorted(unknown))}; known: {', '.join(MOTIONS)}")
        if not self.probs or sum(self.probs.values()) <= 0 or min(self.probs.values()) < 0:
            raise ValueError("motion probabilities must be ≥ 0 and not all 0")
        lo, hi = self.zoom_range
        if not 1.0 <= lo <= hi:
            raise ValueError(f"zoom range must satisfy 1 ≤ min ≤ max, got {lo}, {hi}")
        lo, hi = self.pan_range
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(f"pan range must satisfy 0 ≤ min ≤ max < 1, got {lo}, {hi}")
        if self.easing not in EASINGS:
            raise ValueError(f"easing must be one of {', '.join(EASINGS)}, got {self.easing!r}")


@dataclass
class OpenImage:
    """What the decode workers run for a row: open its image and return its upright size and the open's note."""

    root: str | None

    def __call__(self, row: dict) -> tuple[tuple[int, int], str | None]:
        if not row.get("source_path"):
            raise ValueError("no image path")
        image, note = open_image(mf.resolve(row["source_path"], self.root), with_note=True)
        return image.size, note


def write_pseudo_video(path: str, motion: dict, size: tuple[int, int], frames: int, fps: float, target: str) -> str:
    """Render a pseudo-video and write it as an mp4 (a decode worker's task for `--materialize`); return `target`."""
    from vidrd_io.video import write_mp4

    write_mp4(target, render_pseudo_video(open_image(path), motion, size, frames), fps)
    return target


class PseudoVideo(DecodesRows, Stage):
    """Image–text pairs → `kind=pseudo_video` rows with a drawn motion (lazy), optionally materialized to mp4."""

    name = "pseudo-video"
    kind = "pseudo_video"
    fields = [
        pa.field("motion", MOTION_TYPE),
        pa.field("image_width", pa.int64()),
        pa.field("image_height", pa.int64()),
        pa.field("image_note", pa.string()),
        pa.field("materialized_path", pa.string()),
    ]

    def setup(self) -> None:
        p = self.params
        self.cfg = MotionConfig(
            probs=p.get("motion_probs") or MotionConfig().probs,
            zoom_range=tuple(p.get("zoom_range") or MotionConfig.zoom_range),
            pan_range=tuple(p.get("pan_range") or MotionConfig.pan_range),
            easing=p.get("easing", "ease_in_out"),
        )
        self.size = int(p.get("size", 256))
        self.aspect = p.get("aspect", "keep")
        self.frames = int(p.get("frames", 8))
        self.fps = float(p.get("fps", 8))
        self.seed = int(p.get("seed", 0))
        self.min_side = int(p.get("min_side", 256))
        self.max_aspect = float(p.get("max_aspect", 3.0))
        self.min_words = p.get("min_caption_words")
        self.max_words = p.get("max_caption_words")
        self.materialize = p.get("materialize")

    def row_decoder(self) -> OpenImage:
        return OpenImage(self.root)

    def _seed(self, row: dict) -> int:
        return sample_seed(self.seed, row.get("source_dataset"), row.get("source_path"), row.get("caption"))

    def input_sample_id(self, row: dict) -> str:
        source = row.get("source_path") or f"input:{row['input_row']}"
        variant = f"{(row.get('caption') or '').strip()}\x1fseed={self._seed(row)}"
        return make_sample_id(self.kind, row.get("source_dataset"), source, [0, self.frames], variant=variant)

    def _check_caption(self, caption: str | None) -> str:
        caption = " ".join((caption or "").split())
        if not caption:
            raise ValueError("empty caption")
        words = len(caption.split())
        if self.min_words is not None and words < int(self.min_words):
            raise ValueError(f"caption has {words} words, fewer than --min-caption-words {self.min_words}")
        if self.max_words is not None and words > int(self.max_words):
            raise ValueError(f"caption has {words} words, more than --max-caption-words {self.max_words}")
        return caption

    def process(self, row: dict) -> list[dict]:
        if not row.get("source_path"):
            raise ValueError("no image path")
        caption = self._check_caption(row.get("caption"))
        (w, h), note = self.decoded(row)
        if min(w, h) < self.min_side:
            raise ValueError(f"image is {w}x{h}, short side under --min-side {self.min_side}")
        if max(w, h) / min(w, h) > self.max_aspect:
            raise ValueError(f"image aspect ratio {max(w, h) / min(w, h):.2f} over --max-aspect {self.max_aspect}")
        out_w, out_h = output_size((w, h), self.size, self.aspect)
        seed = self._seed(row)
        motion = draw_motion(np.random.default_rng(seed), (w, h), (out_w, out_h), self.cfg, seed)
        out = {
            "sample_id": self.input_sample_id(row),
            "kind": self.kind,
            "source_path": row["source_path"],
            "caption": caption,
            "caption_source": row.get("caption_source") or "original",
            "label": row.get("label"),
            "start_time": 0.0,
            "end_time": self.frames / self.fps,
            "start_frame": 0,
            "end_frame": self.frames,
            "fps": self.fps,
            "num_frames": self.frames,
            "width": out_w,
            "height": out_h,
            "motion": motion,
            "image_width": w,
            "image_height": h,
            "image_note": note,
        }
        if self.materialize:
            target = fs.join(self.materialize, f"{out['sample_id']}.mp4")  # a directory, or a URL prefix
            if not fs.is_file(target):
                path = self.resolve(row["source_path"])
                self.decode_pool().submit(write_pseudo_video, path, motion, (out_w, out_h), self.frames, self.fps,
                                          str(target), path=path).result()
            out["materialized_path"] = str(target)
        return [out]


def render_row(row: dict, path: str) -> np.ndarray:
    """Return the frames of a manifest's `pseudo_video` row (path: the image, resolved)."""
    image = open_image(path)
    return render_pseudo_video(image, row["motion"], (row["width"], row["height"]), row["num_frames"])


def _pairs(value, name: str) -> dict[str, float]:
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    try:
        return {k.strip(): float(v) for k, v in (item.split("=", 1) for item in str(value).split(",") if item.strip())}
    except ValueError:
        raise InputError(f"{name} takes name=weight pairs separated by commas, got {value!r}") from None


def _range(value, name: str) -> list[float]:
    try:
        lo, hi = (float(x) for x in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise InputError(f"{name} takes MIN,MAX, got {value!r}") from None
    return [lo, hi]


def prepare(input: str, **arguments: Any) -> StageJob:
    """Check the pseudo-video options and read the input (table, folder, tar shards or image manifest; an incomplete
    manifest is refused unless `allow_partial`). `arguments` are the fields of `PseudoVideoArguments`, their defaults
    declared there (`motion_probs` may also be a dict, the ranges lists)."""
    import os

    from vidrd_data.sources import image_inputs
    from vidrd_data.stages.arguments import read_arguments

    a, _ = read_arguments("pseudo-video", input, arguments)
    size, aspect, frames, fps, easing, materialize = a.size, a.aspect, a.frames, a.fps, a.easing, a.materialize
    if size < 16 or size % 2:
        raise InputError(f"size must be an even number ≥ 16, got {size}")
    if aspect not in ("keep", "square"):
        raise InputError(f"aspect must be keep or square, got {aspect!r}")
    if frames < 1 or fps <= 0:
        raise InputError(f"frames must be ≥ 1 and fps > 0, got {frames} and {fps}")
    params = {
        "size": size, "aspect": aspect, "frames": frames, "fps": fps, "seed": a.seed,
        "motion_probs": _pairs(a.motion_probs, "motion_probs"), "zoom_range": _range(a.zoom_range, "zoom_range"),
        "pan_range": _range(a.pan_range, "pan_range"), "easing": easing, "min_side": a.min_side,
        "max_aspect": a.max_aspect, "min_caption_words": a.min_caption_words,
        "max_caption_words": a.max_caption_words,
        "materialize": (materialize if is_url(materialize) else os.path.abspath(materialize)) if materialize else None,
    }
    try:
        MotionConfig(probs=params["motion_probs"], zoom_range=tuple(params["zoom_range"]),
                     pan_range=tuple(params["pan_range"]), easing=easing)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    table, base = image_inputs(str(input), captions=a.captions, image_col=a.image_col, caption_col=a.caption_col,
                               root=a.root, source_dataset=a.source_dataset, allow_partial=a.allow_partial)
    return StageJob("pseudo-video", params, table, base, [str(input)])
