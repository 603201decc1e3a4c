"""Pseudo-videos: seeded camera motion (zoom, pan, both) over a still image.

The VidRD paper trains its temporal layers on still images turned into short videos by camera motion.
A pseudo-video is stored lazily: the manifest row keeps the image and a `motion` struct (two crop boxes
and an easing), and `render_pseudo_video` turns them into frames whenever they are needed — the trainer,
`inspect --sheet` and `--materialize` all call it, so what is shown is exactly what trains.

Crop boxes are `(cx, cy, w, h)` in fractions of the (upright) image. Both end boxes lie inside the image,
and the set of boxes inside the image is convex, so every box between them — every frame — does too:
no frame ever shows a border.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from vidrd_io.images import open_image
from vidrd_data.manifest import make_sample_id
from vidrd_data.sources import InputError
from vidrd_data.run.stage import Stage, StageJob

MOTIONS = ("zoom_in", "zoom_out", "pan", "diagonal_pan", "zoom_pan")
EASINGS = ("ease_in_out", "linear")
DIRECTIONS = {
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up_left": (-1, -1), "up_right": (1, -1), "down_left": (-1, 1), "down_right": (1, 1),
}

MOTION_TYPE = pa.struct(
    [
        pa.field("type", pa.string()),  # zoom_in | zoom_out | pan_<dir> | zoom_in_pan_<dir> | zoom_out_pan_<dir>
        pa.field("start_box", pa.list_(pa.float64(), 4)),  # (cx, cy, w, h) as fractions of the image
        pa.field("end_box", pa.list_(pa.float64(), 4)),
        pa.field("easing", pa.string()),
        pa.field("seed", pa.int64()),  # the per-sample seed the motion was drawn from
    ]
)


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


def output_size(image_size: tuple[int, int], size: int, aspect: str) -> tuple[int, int]:
    """Return the (width, height) of the frames: `size` on the short side (`keep`) or square; even numbers."""
    if aspect == "square":
        return size, size
    w, h = image_size
    long = 2 * round(size * max(w, h) / min(w, h) / 2)
    return (long, size) if w >= h else (size, long)


def sample_seed(seed: int, *identity: str | None) -> int:
    """Return the per-sample seed: the run's seed mixed with the sample's identity, not its shard or order."""
    text = "\x1f".join([str(seed), *(i or "" for i in identity)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _fit_box(cx: float, cy: float, w: float, h: float) -> list[float]:
    """Move a box the least needed to lie inside the unit square (w, h ≤ 1)."""
    cx = min(max(cx, w / 2), 1 - w / 2)
    cy = min(max(cy, h / 2), 1 - h / 2)
    return [cx, cy, w, h]


def draw_motion(rng: np.random.Generator, image_size: tuple[int, int], out_size: tuple[int, int], cfg: MotionConfig, seed: int) -> dict:
    """Draw one motion: its type, start and end crop boxes (inside the image) and easing."""
    names = [m for m in MOTIONS if cfg.probs.get(m, 0) > 0]
    weights = np.array([cfg.probs[m] for m in names], dtype=float)
    kind = names[rng.choice(len(names), p=weights / weights.sum())]
    W, H = image_size
    # the widest box with the output's aspect ratio that fits the image, as fractions of the image
    ratio = (out_size[0] / out_size[1]) / (W / H)
    full_w, full_h = min(1.0, ratio), min(1.0, 1.0 / ratio)
    zoom = float(rng.uniform(*cfg.zoom_range))
    pan = float(rng.uniform(*cfg.pan_range))
    if kind in ("pan", "diagonal_pan"):
        direction = str(rng.choice(list(DIRECTIONS)[:4] if kind == "pan" else list(DIRECTIONS)[4:]))
    elif kind == "zoom_pan":
        direction = str(rng.choice(list(DIRECTIONS)))
    else:
        direction = None
    if direction is None:  # zoom about a point chosen so the tight box stays inside
        tight = (full_w / zoom, full_h / zoom)
        cx, cy = rng.uniform(tight[0] / 2, 1 - tight[0] / 2), rng.uniform(tight[1] / 2, 1 - tight[1] / 2)
        wide = _fit_box(cx, cy, full_w, full_h)
        narrow = _fit_box(cx, cy, *tight)
        start, end = (wide, narrow) if kind == "zoom_in" else (narrow, wide)
        name = kind
    else:
        dx, dy = DIRECTIONS[direction]
        # the (widest) box must leave room to travel `pan` of the image along each moving axis
        limits = [1.0 / zoom if kind == "zoom_pan" else 1.0]
        limits += [(1 - pan) / full for d, full in ((dx, full_w), (dy, full_h)) if d]
        scale = min(limits)
        if kind == "zoom_pan":
            zoom_in = bool(rng.integers(0, 2))
            boxes = [(full_w * scale, full_h * scale), (full_w * scale / zoom, full_h * scale / zoom)]
            if not zoom_in:
                boxes.reverse()
            name = f"{'zoom_in' if zoom_in else 'zoom_out'}_pan_{direction}"
        else:
            boxes = [(full_w * scale, full_h * scale)] * 2
            name = f"pan_{direction}"
        # along a still axis the box sits anywhere it fits; along a moving one it travels through the middle
        bw, bh = boxes[0]
        cx0 = 0.5 - dx * pan / 2 if dx else float(rng.uniform(bw / 2, 1 - bw / 2))
        cy0 = 0.5 - dy * pan / 2 if dy else float(rng.uniform(bh / 2, 1 - bh / 2))
        start = _fit_box(cx0, cy0, *boxes[0])
        end = _fit_box(cx0 + dx * pan, cy0 + dy * pan, *boxes[1])
    return {"type": name, "start_box": [float(v) for v in start], "end_box": [float(v) for v in end], "easing": cfg.easing, "seed": seed}


def ease(t: np.ndarray, easing: str) -> np.ndarray:
    """Return eased progress: `ease_in_out` is the cosine ramp (zero speed at both ends), else linear."""
    return (1 - np.cos(np.pi * t)) / 2 if easing == "ease_in_out" else t


def motion_boxes(motion: dict, frames: int) -> np.ndarray:
    """Return the `(frames, 4)` crop boxes `(cx, cy, w, h)` of a motion, one per frame."""
    t = ease(np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1), motion.get("easing", "linear"))[:, None]
    start, end = np.asarray(motion["start_box"], float), np.asarray(motion["end_box"], float)
    boxes = start + (end - start) * t
    boxes[:, 2:] = np.clip(boxes[:, 2:], 1e-6, 1.0)
    boxes[:, :2] = np.clip(boxes[:, :2], boxes[:, 2:] / 2, 1 - boxes[:, 2:] / 2)  # float safety only
    return boxes


def render_pseudo_video(image: Image.Image, motion: dict, size: tuple[int, int] | int, frames: int) -> np.ndarray:
    """Return the pseudo-video's frames as uint8 `(frames, height, width, 3)`.

    `image` is the upright RGB still (`images.open_image` gives it), `size` the output `(width, height)`
    (an int means square). Each frame is the motion's crop box at that time, resized with PIL's
    antialiased bilinear filter; an image far larger than the tightest box is first reduced by an integer
    factor (same result, much faster).
    """
    out_w, out_h = (size, size) if isinstance(size, int) else size
    boxes = motion_boxes(motion, frames)
    W, H = image.size
    factor = int(min(boxes[:, 2].min() * W / out_w, boxes[:, 3].min() * H / out_h))
    if factor >= 2:
        image = image.reduce(factor)
    W, H = image.size
    out = np.empty((frames, out_h, out_w, 3), np.uint8)
    for i, (cx, cy, w, h) in enumerate(boxes):
        box = ((cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H)
        out[i] = np.asarray(image.resize((out_w, out_h), Image.BILINEAR, box=box))
    return out


class PseudoVideo(Stage):
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
        image, note = open_image(self.resolve(row["source_path"]), with_note=True)
        w, h = image.size
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
            from pathlib import Path

            from vidrd_io.video import write_mp4

            target = Path(self.materialize) / f"{out['sample_id']}.mp4"
            if not target.is_file():
                write_mp4(target, render_pseudo_video(image, motion, (out_w, out_h), self.frames), self.fps)
            out["materialized_path"] = str(target)
        return [out]


def render_row(row: dict, path: str) -> np.ndarray:
    """Return the frames of a manifest's `pseudo_video` row (path: the image, resolved)."""
    image = open_image(path)
    return render_pseudo_video(image, row["motion"], (row["width"], row["height"]), row["num_frames"])


def motion_summary(motion: dict) -> str:
    zoom = motion["start_box"][2] / motion["end_box"][2]
    return f"{motion['type']} (zoom ×{zoom:.2f})" if not math.isclose(zoom, 1.0) else motion["type"]



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


def prepare(
    input: str, *, captions: str | None = None, image_col: str = "image", caption_col: str = "caption",
    root: str | None = None, source_dataset: str | None = None, size: int = 256, aspect: str = "keep",
    frames: int = 8, fps: float = 8.0, seed: int = 0,
    motion_probs: str | dict = "zoom_in=0.2,zoom_out=0.2,pan=0.25,diagonal_pan=0.15,zoom_pan=0.2",
    zoom_range: str | list = "1.15,1.5", pan_range: str | list = "0.1,0.25", easing: str = "ease_in_out",
    min_side: int = 256, max_aspect: float = 3.0, min_caption_words: int | None = None,
    max_caption_words: int | None = None, materialize: str | None = None,
) -> StageJob:
    """Check the pseudo-video options and read the input (table, folder, tar shards or image manifest)."""
    import os

    from vidrd_data.sources import image_inputs

    if size < 16 or size % 2:
        raise InputError(f"size must be an even number ≥ 16, got {size}")
    if aspect not in ("keep", "square"):
        raise InputError(f"aspect must be keep or square, got {aspect!r}")
    if frames < 1 or fps <= 0:
        raise InputError(f"frames must be ≥ 1 and fps > 0, got {frames} and {fps}")
    params = {
        "size": size, "aspect": aspect, "frames": frames, "fps": fps, "seed": seed,
        "motion_probs": _pairs(motion_probs, "motion_probs"), "zoom_range": _range(zoom_range, "zoom_range"),
        "pan_range": _range(pan_range, "pan_range"), "easing": easing, "min_side": min_side,
        "max_aspect": max_aspect, "min_caption_words": min_caption_words, "max_caption_words": max_caption_words,
        "materialize": os.path.abspath(materialize) if materialize else None,
    }
    try:
        MotionConfig(probs=params["motion_probs"], zoom_range=tuple(params["zoom_range"]),
                     pan_range=tuple(params["pan_range"]), easing=easing)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    table, base = image_inputs(str(input), captions=captions, image_col=image_col, caption_col=caption_col,
                               root=root, source_dataset=source_dataset)
    return StageJob("pseudo-video", params, table, base, [str(input)])
