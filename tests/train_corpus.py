"""A small mixed manifest for the trainer's tests: every kind, two weighted sources, a val row and a broken clip.

Written the way `vidrd-data build` writes a mixed manifest (base columns + the pseudo-video stage's + `source`,
`split`, `source_weight`), so the trainer reads exactly the contract it reads in production.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from vidrd_data import manifest as mf
from vidrd_io import fs
from vidrd_data.ops.motion import draw_motion
from vidrd_data.stages.pseudo_video import MotionConfig, PseudoVideo
from vidrd_data.mix.mix import MIXED_FIELDS
from vidrd_io.video import write_mp4

FPS = 8.0
CLIP_FRAMES = 24
CORRUPT_ID = "clip-corrupt"


def _picture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    small = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def _clip(rng: np.random.Generator) -> np.ndarray:
    """A square moving right over a smooth background: (24, 32, 48, 3)."""
    background = _picture(rng, 48, 32)
    frames = np.repeat(background[None], CLIP_FRAMES, axis=0).copy()
    for i in range(CLIP_FRAMES):
        frames[i, 10:20, i + 4: i + 14] = rng.integers(0, 256, 3, dtype=np.uint8)
    return frames


def write_manifest(path: Path, rows: list[dict], root: Path) -> Path:
    """Writes `rows` as a one-part mixed manifest at `path` whose media paths are relative to `root`."""
    schema = mf.output_schema([*PseudoVideo.fields, *MIXED_FIELDS])
    for i, row in enumerate(rows):
        row.setdefault("status", "ok")
        row.setdefault("input_row", i)
    table = mf.rows_to_table(rows, schema)
    meta = mf.new_meta(kind="mixed", stage="build", params={}, inputs=[], root=root, manifest_dir=path, schema=schema,
                       extra={"num_parts": 1})
    path.mkdir(parents=True)
    fs.write_json_atomic(path / mf.MANIFEST_FILE, meta)
    fs.write_parquet_atomic(path / mf.part_name(0), table)
    fs.write_json_atomic(path / mf.stats_name(0), mf.part_stats(table, table.num_rows, 1.0))
    return path


def write_corpus(root: Path) -> Path:
    """Writes media under `root` and the manifest `root/mixed`; returns the manifest.

    Train rows: 4 images and 4 pseudo-videos (source "stills", weight 1), 3 clips + 1 undecodable clip (source
    "clips", weight 2). Also one val clip, one failed row and one clip without a caption.
    """
    rng = np.random.default_rng(0)
    (root / "media").mkdir(parents=True)
    rows = []
    for i in range(4):
        Image.fromarray(_picture(rng, 64, 48)).save(root / "media" / f"still{i}.png")
        base = {"source_path": f"media/still{i}.png", "caption": f"a still picture number {i}", "source": "stills",
                "source_weight": 1.0, "split": "train", "width": 64, "height": 48}
        rows.append({**base, "sample_id": f"image-{i}", "kind": "image", "num_frames": 1})
        motion = draw_motion(np.random.default_rng(i), (64, 48), (64, 48), MotionConfig(), i)
        rows.append({**base, "sample_id": f"pseudo-{i}", "kind": "pseudo_video", "motion": motion, "num_frames": 8,
                     "fps": FPS, "start_time": 0.0, "end_time": 1.0, "image_width": 64, "image_height": 48})
    for i in range(5):
        write_mp4(root / "media" / f"clip{i}.mp4", _clip(rng), FPS)
    (root / "media" / "broken.mp4").write_bytes(b"this is not a video" * 50)
    clip = {"kind": "video_clip", "fps": FPS, "start_time": 0.0, "end_time": CLIP_FRAMES / FPS,
            "num_frames": CLIP_FRAMES, "width": 48, "height": 32, "source": "clips", "source_weight": 2.0,
            "split": "train"}
    for i in range(3):
        rows.append({**clip, "sample_id": f"clip-{i}", "source_path": f"media/clip{i}.mp4",
                     "caption": f"a square moving right, take {i}"})
    rows.append({**clip, "sample_id": CORRUPT_ID, "source_path": "media/broken.mp4", "caption": "a broken clip"})
    rows.append({**clip, "sample_id": "clip-val", "source_path": "media/clip3.mp4", "caption": "a held-out clip",
                 "split": "val"})
    rows.append({**clip, "sample_id": "clip-failed", "source_path": "media/clip4.mp4", "caption": "failed",
                 "status": "failed", "error": "VideoError: cannot decode video"})
    rows.append({**clip, "sample_id": "clip-uncaptioned", "source_path": "media/clip4.mp4", "caption": None})
    return write_manifest(root / "mixed", rows, root)
