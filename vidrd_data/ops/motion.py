"""Camera motion over a still image: drawing a seeded motion (zoom, pan, both), easing it, and rendering its frames.

Crop boxes are `(cx, cy, w, h)` in fractions of the (upright) image. Both end boxes lie inside the image,
and the set of boxes inside the image is convex, so every box between them — every frame — does too:
no frame ever shows a border.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow as pa
from PIL import Image

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


def draw_motion(rng: np.random.Generator, image_size: tuple[int, int], out_size: tuple[int, int], cfg, seed: int) -> dict:
    """Return one drawn motion: its type, start and end crop boxes (inside the image) and easing (`cfg`: a
    `MotionConfig`)."""
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


def motion_summary(motion: dict) -> str:
    zoom = motion["start_box"][2] / motion["end_box"][2]
    return f"{motion['type']} (zoom ×{zoom:.2f})" if not math.isclose(zoom, 1.0) else motion["type"]
