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


def score_extremes(m: mf.Manifest, column: str, k: int = 4) -> list[dict]:
    """Return the `k` ok rows with the lowest `column`, then the `k` with the highest (fewer if there are fewer),
    each labelled in `_note`; reads the score column, then only the parts that hold the chosen rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    values, parts, index = [], [], []  # numpy, not tuples: 24 bytes a row at 10M rows
    for part, table in zip(m.parts, m.iter_parts(columns=[column], status="ok")):
        v = table[column].to_numpy(zero_copy_only=False).astype(float)
        keep = np.flatnonzero(np.isfinite(v))
        values.append(v[keep])
        parts.append(np.full(len(keep), part))
        index.append(keep)
    if not values:
        return []
    values, parts, index = np.concatenate(values), np.concatenate(parts), np.concatenate(index)
    order = np.argsort(values, kind="stable")
    chosen = [("lowest", j) for j in order[:k]] + [("highest", j) for j in order[max(k, len(order) - k):]]
    picks = [(label, (values[j], int(parts[j]), int(index[j]))) for label, j in chosen]
    tables: dict[int, pa.Table] = {}
    rows = []
    for label, (value, part, i) in picks:
        if part not in tables:
            table = pq.read_table(m.part_path(part))
            tables[part] = table.filter(pc.equal(table["status"], "ok"))
        row = tables[part].take(pa.array([i])).to_pylist()[0]
        row["_note"] = f"{label} {column} = {value:.4g}"
        rows.append(row)
    return rows


def contact_sheet(m: mf.Manifest, out_path: str, samples: int = 8, frames: int = 4, rows: list[dict] | None = None) -> int:
    """Write a PNG with one line per sample (its frames, then its caption): the first `samples` ok rows, or the
    given `rows` (a row's `_note` is shown before its caption); return the samples drawn."""
    if rows is None:
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
        caption = f"{row['_note'] + ' ' if row.get('_note') else ''}[{kind}] {row.get('caption') or ''}"
        lines = textwrap.wrap(caption, width=max(20, TILE * frames // 7))[:3]
        draw.multiline_text((4, y + TILE + 2), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=1)
    sheet.save(out_path)
    return len(rows)
