"""Contact sheets: a few frames per sample with its caption underneath (`vidrd-data inspect --sheet`)."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidrd_data import manifest as mf

TILE = 128


def sample_frames(row: dict, m: mf.Manifest, n: int) -> list[np.ndarray]:
    """Return up to `n` frames (uint8 HWC) showing a sample, taken exactly as the trainer would see it."""
    path = m.resolve(row["source_path"])
    if row["kind"] == "image":
        from vidrd_io.images import open_image

        return [np.asarray(open_image(path))]
    if row["kind"] == "video_clip":
        from vidrd_io.video import read_frames

        start, end = row["start_time"] or 0.0, row["end_time"] or 0.0
        times = np.linspace(start, max(start, end - 1e-3), n)
        return list(read_frames(path, times))
    if row["kind"] == "pseudo_video":
        from vidrd_data.stages.pseudo_video import render_row

        video = render_row(row, path)
        return list(video[np.linspace(0, len(video) - 1, min(n, len(video))).round().astype(int)])
    raise ValueError(f"no preview for kind {row['kind']!r}")


def _fit(frame: np.ndarray) -> Image.Image:
    img = Image.fromarray(frame)
    img.thumbnail((TILE, TILE))
    canvas = Image.new("RGB", (TILE, TILE), (24, 24, 24))
    canvas.paste(img, ((TILE - img.width) // 2, (TILE - img.height) // 2))
    return canvas


def contact_sheet(m: mf.Manifest, out_path: str, samples: int = 8, frames: int = 4) -> int:
    """Write a PNG with one line per ok sample (its frames, then its caption); return the samples drawn."""
    rows = []
    for table in m.iter_parts(status="ok"):
        rows.extend(table.slice(0, samples - len(rows)).to_pylist())
        if len(rows) >= samples:
            break
    font = ImageFont.load_default()
    text_h = 40
    sheet = Image.new("RGB", (TILE * frames, max(1, len(rows)) * (TILE + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        y = r * (TILE + text_h)
        try:
            tiles = [_fit(f) for f in sample_frames(row, m, frames)]
        except Exception as exc:  # noqa: BLE001 - one unreadable sample must not end the sheet
            tiles = []
            draw.text((4, y + 4), f"cannot show: {exc}"[:80], fill=(200, 0, 0), font=font)
        for c, tile in enumerate(tiles[:frames]):
            sheet.paste(tile, (c * TILE, y))
        kind = row["kind"]
        if kind == "pseudo_video" and row.get("motion"):
            from vidrd_data.ops.motion import motion_summary

            kind = f"pseudo_video: {motion_summary(row['motion'])}"
        caption = f"[{kind}] {row.get('caption') or ''}"
        lines = textwrap.wrap(caption, width=max(20, TILE * frames // 7))[:3]
        draw.multiline_text((4, y + TILE + 2), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=1)
    sheet.save(out_path)
    return len(rows)
