"""Synthetic source manifests for the mixing tests: every mixing feature on a few dozen rows, written directly.

Three sources over small real files (PNG stills, opaque "video" bytes): weights, caps, failed rows, exact
duplicates within a source and across sources (a byte-identical copy under another name too), an extra column
only one source has, and near-identical stills for the near-duplicate pass.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from vidrd_data import manifest as mf
from vidrd_data.mix.recipe import Recipe, Source
from vidrd_io import fs

SCORE = pa.field("aesthetic", pa.float64())


def write_media(root: Path) -> None:
    """Write 12 stills (+ a byte copy of one, + a near copy of another) and 6 opaque video files under `root`."""
    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for k in range(12):
        img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(img).save(media / f"img_{k:02d}.png")
        if k == 5:
            near = np.clip(img.astype(int) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(near).save(media / "near_05.png")
    (media / "copy_03.png").write_bytes((media / "img_03.png").read_bytes())
    for k in range(6):
        (media / f"vid_{k}.mp4").write_bytes(rng.integers(0, 255, 3000 + 100 * k, dtype=np.uint8).tobytes())


def write_source(out: Path, name: str, root: Path, rows: list[dict], part_rows: int, extra=()) -> None:
    """Write `rows` as a complete stage manifest `out/sources/NAME` in parts of `part_rows`."""
    schema = mf.output_schema(extra)
    d = out / "sources" / name
    d.mkdir(parents=True)
    n_parts = -(-len(rows) // part_rows)
    meta = mf.new_meta(kind="test", stage="images", params={}, inputs=[], root=root, manifest_dir=d, schema=schema,
                       extra={"num_parts": n_parts})
    fs.write_json_atomic(d / mf.MANIFEST_FILE, meta)
    for i in range(n_parts):
        chunk = rows[i * part_rows:(i + 1) * part_rows]
        table = mf.rows_to_table(chunk, schema)
        fs.write_parquet_atomic(d / mf.part_name(i), table)
        fs.write_json_atomic(d / mf.stats_name(i), mf.part_stats(table, len(chunk), 0.1))


def _row(kind, dataset, path, n, caption, span=None, status="ok", **more):
    row = {"sample_id": mf.make_sample_id(kind, dataset, path, span, variant=str(n)), "kind": kind,
           "source_path": path, "source_dataset": dataset, "caption": caption, "status": status, "input_row": n,
           "error": "decoder said no at frame 12" if status == "failed" else None}
    if span is not None:
        row.update(start_frame=span[0], end_frame=span[1], start_time=span[0] / 8, end_time=span[1] / 8, fps=8.0)
    row.update(more)
    return row


def build_sources(out: Path, root: Path) -> None:
    """Write the three sources `alpha`, `beta`, `gamma` of `recipe()` into `out/sources`."""
    alpha = []  # pseudo-videos over the stills: a repeat of img_02, the byte copy of img_03, two failures
    for n, name in enumerate([f"img_{k:02d}.png" for k in range(8)] + ["img_02.png", "copy_03.png", "near_05.png",
                                                                       "img_09.png", "img_10.png"]):
        status = "failed" if n in (4, 11) else "ok"
        alpha.append(_row("pseudo_video", "alpha", f"media/{name}", n, f"a still number {n} " + "word " * (n % 4),
                          status=status))
    write_source(out, "alpha", root, alpha, part_rows=5)
    beta = []  # clips: 6 files × spans, one span repeated on the same file, one failure; capped to 12
    n = 0
    for k in range(6):
        for start in (0, 16, 32, 48):
            beta.append(_row("video_clip", "beta", f"media/vid_{k}.mp4", n, f"clip {k} from {start}",
                             span=(start, start + 16), status="failed" if n == 7 else "ok"))
            n += 1
    beta.append(_row("video_clip", "beta", "media/vid_2.mp4", n, "the same span again", span=(16, 32)))
    write_source(out, "beta", root, beta, part_rows=10)
    gamma = []  # stills shared with alpha (cross-source duplicates) plus ones of its own; an extra column; cap 5
    for n, name in enumerate(["img_00.png", "img_01.png", "img_08.png", "img_09.png", "img_10.png", "img_11.png",
                              "copy_03.png"]):
        gamma.append(_row("pseudo_video", "gamma", f"media/{name}", n, f"gamma {n}", aesthetic=0.5 + n / 10))
    write_source(out, "gamma", root, gamma, part_rows=4, extra=[SCORE])


def recipe(root: Path, near_dup_threshold: float = 0.0, split_by: str = "sample") -> Recipe:
    """Return the recipe mixing the synthetic sources (their stage is irrelevant: they are already built); split
    by sample id by default, as the mix the pinned fixture was written from did."""
    return Recipe(path=root / "synthetic.toml", root=root, val_fraction=0.3, seed=7, dedup="exact",
                  near_dup_threshold=near_dup_threshold, split_by=split_by, sources=[
                      Source(name="alpha", stage="images", input="-", weight=2.0),
                      Source(name="beta", stage="videos", input="-", weight=0.5, cap=12),
                      Source(name="gamma", stage="images", input="-", weight=1.0, cap=5)])


def corpus(tmp: Path) -> tuple[Path, Path]:
    """Write media and sources under `tmp`; return (root, build dir)."""
    root, out = tmp / "root", tmp / "build"
    write_media(root)
    build_sources(out, root)
    return root, out


def mixed_summary(out: Path) -> dict:
    """Return what a mix must reproduce: per output part, the rows' ids, splits, sources, hashes and paths, in order."""
    m = mf.Manifest.open(out / "mixed")
    parts = []
    for table in m.iter_parts():
        parts.append({c: table[c].to_pylist() for c in ("sample_id", "split", "source", "source_weight",
                                                         "content_hash", "source_path", "aesthetic")})
    return {"columns": m.schema().names, "num_parts": m.meta["num_parts"], "parts": parts}


if __name__ == "__main__":  # regenerate the pinned fixture (only ever from the mix the fixture pins)
    import json
    import sys
    import tempfile

    from vidrd_data.mix.mix import mix

    pinned = {}
    for label, threshold in (("exact", 0.0), ("near_dup", 0.95)):
        with tempfile.TemporaryDirectory() as tmp:
            root, out = corpus(Path(tmp))
            report = mix(recipe(root, threshold), out)
            pinned[label] = {"mixed": mixed_summary(out), "sources": report["sources"], "splits": report["splits"],
                             "rows_by_source_and_kind": report["rows_by_source_and_kind"]}
    Path(sys.argv[1]).write_text(json.dumps(pinned, indent=1) + "\n")
    print(time.strftime("%H:%M:%S"), "wrote", sys.argv[1])
