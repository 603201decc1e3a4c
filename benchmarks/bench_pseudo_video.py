"""Pseudo-video rendering speed at 256² and bytes per sample, lazy vs materialized.

Target (issue 3): ≥ 1,000 frames/s at 256² using both cores. Frames are rendered from stills that are
already decoded (what the trainer's DataLoader workers do after opening an image once); decode + render
is reported too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_io.images import open_image
from vidrd_data.ops.motion import draw_motion, output_size, render_pseudo_video
from vidrd_data.stages.pseudo_video import MotionConfig
from vidrd_data.run.runner import run_stage


def _images(folder: Path, n: int) -> list[Path]:
    from vidrd_demo.corpus import write_images

    table = write_images(folder)  # real photographs, 256 px short side; upscale some to typical web sizes
    photos = [folder / line.split(",")[0] for line in table.read_text().splitlines()[1:19]]
    out = []
    for i in range(n):
        img = Image.open(photos[i % len(photos)]).convert("RGB")
        scale = (1.0, 1.5, 2.0, 3.0)[i % 4]
        img = img.resize((int(img.width * scale), int(img.height * scale)), Image.BICUBIC)
        path = folder / f"bench_{i:03d}.jpg"
        img.save(path, quality=90)
        out.append(path)
    return out


def _render_many(paths: list[str], frames: int, decode_each: bool, repeats: int) -> int:
    cfg = MotionConfig()
    stills = None if decode_each else [open_image(p) for p in paths]
    done = 0
    for r in range(repeats):
        for i, p in enumerate(paths):
            img = open_image(p) if decode_each else stills[i]
            size = output_size(img.size, 256, "square")  # the target is stated at 256²
            motion = draw_motion(np.random.default_rng(r * 1000 + i), img.size, size, cfg, i)
            done += len(render_pseudo_video(img, motion, size, frames))
    return done


def _rate(paths, frames, decode_each, repeats, workers) -> float:
    chunks = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    t = time.perf_counter()
    if workers == 1:
        n = _render_many(chunks[0], frames, decode_each, repeats)
    else:
        with ProcessPoolExecutor(workers) as pool:
            n = sum(pool.map(_render_many, chunks, [frames] * workers, [decode_each] * workers, [repeats] * workers))
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = _images(tmp / "imgs", args.images)
        one = _rate(paths, 8, False, args.repeats, 1)
        two = _rate(paths, 8, False, args.repeats, 2)
        two_decode = _rate(paths, 8, True, max(1, args.repeats // 2), 2)
        lines = ["image,caption"] + [f"{p.name},a photograph number {i}" for i, p in enumerate(paths)]
        (tmp / "imgs" / "list.csv").write_text("\n".join(lines) + "\n")
        table, root = sources.caption_table(tmp / "imgs" / "list.csv", path_col="image")
        run_stage("pseudo-video", {"seed": 0}, table, tmp / "lazy", root=root, input_desc=["x"], progress=False)
        run_stage("pseudo-video", {"seed": 0, "materialize": str(tmp / "mp4")}, table, tmp / "mat", root=root,
                  input_desc=["x"], progress=False)
        rows = mf.Manifest.open(tmp / "lazy").read().num_rows
        lazy = sum(p.stat().st_size for p in (tmp / "lazy").glob("part-*.parquet")) / rows
        mat_rows = sum(p.stat().st_size for p in (tmp / "mat").glob("part-*.parquet")) / rows
        mp4 = sum(p.stat().st_size for p in (tmp / "mp4").glob("*.mp4")) / rows
    return [
        {"measure": "render frames/s at 256², 1 process (8-frame clips)", "value": f"{one:,.0f}", "target": "", "ratio": ""},
        {"measure": "render frames/s, 2 processes", "value": f"{two:,.0f}", "target": "1,000",
         "ratio": f"{two / 1000:.2f}x target"},
        {"measure": "decode + render frames/s, 2 processes", "value": f"{two_decode:,.0f}", "target": "", "ratio": ""},
        {"measure": "bytes/sample lazy (manifest row)", "value": f"{lazy:,.0f}", "target": "", "ratio": ""},
        {"measure": "bytes/sample materialized (row + mp4)", "value": f"{mat_rows + mp4:,.0f}", "target": "",
         "ratio": f"{(mat_rows + mp4) / lazy:.0f}x lazy"},
    ]


if __name__ == "__main__":
    from benchmarks.run import print_table

    print_table("pseudo-video", main())
