"""`vidrd-data segment` against PySceneDetect's ContentDetector, and its throughput with the tiny CLIP.

1. Cut quality and wall time, on real footage (default ../shared/data/videos, reference cuts from its README):
   our `--embedder histogram` segmentation and PySceneDetect's ContentDetector (defaults, its default backend) on
   the same files. A found cut counts when within ±0.5 s of a reference cut (each reference matched at most
   once); our cuts are those the ok segment rows start or end at (`segmentation.start_cut_time`/`end_cut_time`),
   PySceneDetect's its scene starts. Wall times are medians of interleaved repeats, after one warm-up run each.
   Targets (issue 5): F1 at least PySceneDetect's, wall time at most PySceneDetect's.
   Also a montage of 30 pieces (0.6–3 s) of the real clips' shots, whose splice times are the ground truth.
2. Throughput in video-seconds per wall-second with the tiny CLIP of `vidrd-data demo`: decode-only (probe,
   decode, frame changes, sampling), embed-only (the sampled frames, already in memory) and end-to-end (the stage,
   decoding in its decode worker processes while the stage embeds). Target: end-to-end ≥ 0.8 × the slower of the other two.

Other footage: `--videos DIR --cuts cuts.json` with `{"file.mp4": [seconds, ...], ...}`.

3. `--long`: long synthetic videos with many shots, wall time and peak RSS (the stage's process and its decode
   workers, summed, sampled every 50 ms) of the code at 07a8702 (`before`, exported with `git archive`) and of
   this tree (`after`), each in a fresh process:
   - `spans`: a `--long-minutes` (5) minute 640×360 10 fps video of 6-s shots, given as one list row per shot
     span (as a re-segmentation of a manifest's spans does); shots are blocky random textures panning sideways: before, every span decoded from the file's start;
     after, a seek to the keyframe before it.
   - `caption`: a 1920×1080 10 fps video of `--caption-shots` (150) two-second shots, segmented (histogram) and
     captioned by the demo's tiny MiniGPT-4 (random weights: the decode/memory side, not caption quality):
     before, every segment's middle frame held at full resolution; after, read 8 at a time at 224×224.
   The issue's scale (1 hour, 300 shots, Vicuna-7B on an H200) does not fit this 2-core machine; this is the
   same shape, smaller.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidrd_data import manifest as mf  # noqa: E402
from vidrd_data.run.runner import run_stage  # noqa: E402
from vidrd_data.ops.shots import cut_scores, manifest_cuts  # noqa: E402
from vidrd_data.stages.segment import prepare  # noqa: E402
from vidrd_io.sampling import FrameSampler  # noqa: E402
from vidrd_io.video import probe  # noqa: E402

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
# The reference cuts of ../shared/data/videos/README.md (what PySceneDetect 0.7's golden files say).
README_CUTS = {
    "testvideo.mp4": [1.001, 6.006, 13.146],
    "issue-134-rotate.mp4": [3.754, 8.759],
    "fades.mp4": [3.36, 6.68],
    "counter.mp4": [],
}


def segment_cuts(path: Path, out: Path, options: dict) -> tuple[list[float], float]:
    """Run the segment stage on one file; return its cut times and the wall time."""
    job = prepare(str(path), **options)
    start = time.perf_counter()
    run_stage(job.stage, job.params, job.inputs, out, root=job.root, input_desc=job.input_desc, overwrite=True,
              progress=False)
    wall = time.perf_counter() - start
    return manifest_cuts(mf.Manifest.open(out).read().to_pylist()).get(path.name, []), wall


def scenedetect_cuts(path: Path) -> tuple[list[float], float]:
    from scenedetect import ContentDetector, detect

    start = time.perf_counter()
    scenes = detect(str(path), ContentDetector())
    wall = time.perf_counter() - start
    return [s[0].seconds for s in scenes[1:]], wall


def _fmt(scores: dict) -> str:
    return f"P {scores['precision']:.2f} R {scores['recall']:.2f} F1 {scores['f1']:.2f} ({scores['tp']}/{scores['fp']}/{scores['fn']})"


def write_montage(videos: Path, out: Path, shots: int = 30, seed: int = 0) -> tuple[Path, list[float]]:
    """Splice 0.6–3 s pieces of the real clips' shots (never two of one shot in a row) into a 24 fps mp4.

    Returns the file and its true cut times: fast cutting, as in trailers, with a ground truth no detector made.
    """
    from PIL import Image

    from vidrd_io.video import read_frames, write_mp4

    sources = [("testvideo.mp4", 1.1, 5.9), ("testvideo.mp4", 8.1, 10.9), ("testvideo.mp4", 14.6, 17.4),
               ("testvideo.mp4", 18.7, 21.9), ("issue-134-rotate.mp4", 0.0, 3.7),
               ("issue-134-rotate.mp4", 3.8, 8.7), ("issue-134-rotate.mp4", 8.8, 9.95)]
    rng = np.random.default_rng(seed)
    fps, pieces, cuts, previous, frames_so_far = 24, [], [], -1, 0
    for _ in range(shots):
        k = int(rng.choice([j for j in range(len(sources)) if j != previous]))
        name, a, b = sources[k]
        length = min(float(rng.uniform(0.6, 3.0)), b - a)
        start = float(rng.uniform(a, b - length))
        frames = read_frames(videos / name, start + np.arange(round(length * fps)) / fps)
        if pieces:
            cuts.append(frames_so_far / fps)
        pieces.append(np.stack([np.asarray(Image.fromarray(f).resize((320, 180))) for f in frames]))
        frames_so_far += len(frames)
        previous = k
    write_mp4(out / "montage.mp4", np.concatenate(pieces), fps)
    return out / "montage.mp4", cuts


def quality_rows(files: dict[Path, list[float]], title: str, repeats: int, tolerance: float, tmp: Path,
                 targets: bool) -> list[dict]:
    """Per-file and summed cut scores and wall times of both detectors on `files` (path → reference cuts)."""
    options = {"embedder": "histogram"}
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise SystemExit(f"missing videos: {', '.join(map(str, missing))}")
    paths = list(files)
    segment_cuts(paths[-1], tmp / "warm", options), scenedetect_cuts(paths[-1])  # imports, first opens
    ours_wall = {p: [] for p in paths}
    theirs_wall = {p: [] for p in paths}
    found = {}
    for _ in range(repeats):
        for path in paths:  # interleaved, so both see the same load on a shared machine
            found[path, "vidrd"], wall = segment_cuts(path, tmp / "m", options)
            ours_wall[path].append(wall)
            found[path, "pyscenedetect"], wall = scenedetect_cuts(path)
            theirs_wall[path].append(wall)
    rows = []
    totals = {"vidrd": {"tp": 0, "fp": 0, "fn": 0}, "pyscenedetect": {"tp": 0, "fp": 0, "fn": 0}}
    for path in paths:
        truth = files[path]
        scores = {m: cut_scores(found[path, m], truth, tolerance) for m in totals}
        for m in totals:
            for k in ("tp", "fp", "fn"):
                totals[m][k] += scores[m][k]
        shown = truth if len(truth) <= 4 else f"{len(truth)} cuts"
        ours, theirs = statistics.median(ours_wall[path]), statistics.median(theirs_wall[path])

        def cell(method: str, wall: float) -> str:
            cuts = found[path, method]
            listed = [round(t, 3) for t in cuts] if len(cuts) <= 4 else f"{len(cuts)} cuts"
            return f"{_fmt(scores[method])} {listed}, {wall:.2f} s"

        rows.append({
            "measure": f"{path.name} ({probe(path).duration:.1f} s): reference {shown}",
            "vidrd histogram": cell("vidrd", ours),
            "PySceneDetect": cell("pyscenedetect", theirs),
            "target": "",
            "met": "",
        })
    micro = {}
    for m, t in totals.items():
        tp, fp, fn = t["tp"], t["fp"], t["fn"]
        micro[m] = {**t, "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0,
                    "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0}
    ours_total = sum(statistics.median(v) for v in ours_wall.values())
    theirs_total = sum(statistics.median(v) for v in theirs_wall.values())
    f1_met = micro["vidrd"]["f1"] >= micro["pyscenedetect"]["f1"]
    rows.append({
        "measure": f"{title}: cut F1 within ±{tolerance} s (tp/fp/fn summed)",
        "vidrd histogram": _fmt(micro["vidrd"]),
        "PySceneDetect": _fmt(micro["pyscenedetect"]),
        "target": "vidrd F1 ≥ PySceneDetect F1" if targets else "",
        "met": ("yes" if f1_met else "NO") if targets else "",
    })
    rows.append({
        "measure": f"{title}: wall time (median of {repeats}, summed)",
        "vidrd histogram": f"{ours_total:.2f} s",
        "PySceneDetect": f"{theirs_total:.2f} s",
        "target": "vidrd ≤ PySceneDetect" if targets else "",
        "met": f"{'yes' if ours_total <= theirs_total else 'NO'} ({ours_total / theirs_total:.2f}x)",
    })
    return rows


def throughput_rows(videos: Path, names: list[str], repeats: int, tmp: Path) -> list[dict]:
    from vidrd_demo.models.open_clip import write_tiny_open_clip
    from vidrd_data.models.embedders import OpenClipEmbedder

    tiny = write_tiny_open_clip(tmp / "open_clip")
    options = {"embedder": "clip", "clip_config": str(tiny.config_path), "clip_checkpoint": str(tiny.checkpoint_path)}
    paths = [videos / n for n in names]
    seconds = sum(probe(p).duration for p in paths)
    embedder = OpenClipEmbedder(config=tiny.config_path, checkpoint=tiny.checkpoint_path, batch_size=32)
    sampler = FrameSampler(2.0, embedder.frame_size)

    def decode_only() -> list[np.ndarray]:
        """Return each video's sampled frames."""
        samples = []
        for p in paths:
            info = probe(p)
            samples.append(np.concatenate([c.samples for c in sampler.chunks(str(p), info, 0, info.num_frames, 0.0)]))
        return samples

    def embed_only(videos: list[np.ndarray]) -> None:
        for frames in videos:
            for start in range(0, len(frames), 32):
                embedder.embed(frames[start : start + 32])

    folder = tmp / "throughput"
    folder.mkdir()
    for p in paths:
        (folder / p.name).symlink_to(p)
    job = prepare(str(folder), **options)

    def end_to_end() -> None:
        run_stage(job.stage, job.params, job.inputs, tmp / "e2e", root=job.root, input_desc=job.input_desc,
                  overwrite=True, progress=False)

    frames = decode_only()
    end_to_end()  # loads the model once (the stage is cached in-process, as in a worker)
    timings = {"decode": [], "embed": [], "e2e": []}
    for _ in range(repeats):
        for name, run in (("decode", decode_only), ("embed", lambda: embed_only(frames)), ("e2e", end_to_end)):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    rate = {k: seconds / statistics.median(v) for k, v in timings.items()}
    slower = min(rate["decode"], rate["embed"])
    return [
        {"measure": f"throughput, decode only ({seconds:.0f} s of video, {sum(map(len, frames))} sampled frames)",
         "vidrd histogram": "", "PySceneDetect": "", "target": "", "met": f"{rate['decode']:.1f} video-s/s"},
        {"measure": "throughput, embed only (tiny CLIP, frames in memory)",
         "vidrd histogram": "", "PySceneDetect": "", "target": "", "met": f"{rate['embed']:.1f} video-s/s"},
        {"measure": "throughput, end to end (tiny CLIP, decode worker processes + embedding)",
         "vidrd histogram": "", "PySceneDetect": "", "target": "≥ 0.8 × the slower of the two",
         "met": f"{rate['e2e']:.1f} video-s/s = {rate['e2e'] / slower:.2f}× ({'yes' if rate['e2e'] >= 0.8 * slower else 'NO'})"},
    ]


def write_shots(path: Path, shots: int, seconds: float, fps: int, size: tuple[int, int], seed: int = 0) -> None:
    """Stream an mp4 of `shots` shots, each a random texture panning sideways (keyframe every 2 s)."""
    import av

    rng = np.random.default_rng(seed)
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": str(2 * fps), "preset": "ultrafast", "crf": "28"}
        for _ in range(shots):
            base = rng.integers(40, 216, 3)  # each shot its own palette, as real shots differ in colour
            coarse = np.clip(base + rng.integers(-40, 41, (h // 8, w // 8 + round(seconds * fps), 3)), 0, 255)
            coarse = coarse.astype(np.uint8)
            texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)  # blocky: costs a real decoder real work
            for t in range(round(seconds * fps)):
                frame = np.ascontiguousarray(texture[:, 8 * t : 8 * t + w])
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


CHILD = """
import json, sys, time
from vidrd_data.stages.segment import prepare
from vidrd_data.run.runner import run_stage
from vidrd_data import manifest as mf
input, out, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
job = prepare(input, **options)
start = time.perf_counter()
run_stage(job.stage, job.params, job.inputs, out, root=job.root, input_desc=job.input_desc, progress=False)
rows = mf.Manifest.open(out).read().to_pylist()
print(json.dumps({"wall": time.perf_counter() - start, "ok": sum(r["status"] == "ok" for r in rows),
                  "rows": len(rows)}))
"""


def measured(tree: Path, input: str, out: Path, options: dict) -> dict:
    """Run the segment stage of the code in `tree` in a fresh process; return its result and peak RSS (GiB) of
    its process tree."""
    import os
    import subprocess

    import psutil

    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-c", CHILD, input, str(out), json.dumps(options)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                               cwd=tree)  # `python -c` puts the working directory first on sys.path
    peak, watched = 0, psutil.Process(process.pid)
    while process.poll() is None:
        try:
            total = sum(p.memory_info().rss for p in [watched, *watched.children(recursive=True)])
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.05)
    result = json.loads(process.stdout.read().strip().splitlines()[-1])
    return {**result, "peak_rss_gib": peak / 2**30}


def long_rows(args) -> list[dict]:
    """Return the before/after rows of the long-video cases (see 3. in the module docstring)."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(here), "archive", args.before], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        from vidrd_demo.models.minigpt4 import write_tiny_minigpt4

        write_tiny_minigpt4(tmp / "minigpt4")
        shots = round(args.long_minutes * 60 / 6)
        write_shots(tmp / "spans.mp4", shots, 6.0, 10, (640, 360))
        spans = tmp / "spans.csv"
        spans.write_text("path,start,end\n" + "".join(f"{tmp / 'spans.mp4'},{6 * i + 0.5},{6 * i + 5.5}\n"
                                                        for i in range(shots)))
        write_shots(tmp / "caption.mp4", args.caption_shots, 2.0, 10, (1920, 1080), seed=1)
        cases = {
            "spans": (str(spans), {"embedder": "histogram"},
                      f"{shots} spans of a {args.long_minutes:g}-min 640×360 video"),
            "caption": (str(tmp / "caption.mp4"), {"embedder": "histogram", "captioner": "minigpt4",
                                                    "minigpt4": str(tmp / "minigpt4" / "minigpt4.json")},
                        f"{args.caption_shots} 2-s shots of 1080p, tiny MiniGPT-4"),
        }
        for case, (input, options, what) in cases.items():
            for label, tree in (("before", before), ("after", here)):
                result = measured(tree, input, tmp / f"{case}_{label}", options)
                rows.append({"case": case, "what": what, "code": label, "wall_s": f"{result['wall']:.1f}",
                             "peak_rss_gib": f"{result['peak_rss_gib']:.2f}",
                             "ok_rows": f"{result['ok']}/{result['rows']}"})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=SHARED_VIDEOS)
    parser.add_argument("--cuts", type=Path, default=None, help="JSON {file: [cut seconds]}; default: the README's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.5)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--long", action="store_true", help="Only the long-video rows (before/after, see 3.)")
    parser.add_argument("--long-minutes", type=float, default=5.0)
    parser.add_argument("--caption-shots", type=int, default=150)
    parser.add_argument("--before", default="07a8702", help="git commit of the `before` code")
    args = parser.parse_args(argv)
    logging.getLogger("vidrd_data").setLevel(logging.WARNING)
    if args.long:
        return long_rows(args)
    reference = json.loads(args.cuts.read_text()) if args.cuts else README_CUTS
    with tempfile.TemporaryDirectory() as tmp:
        files = {args.videos / name: cuts for name, cuts in reference.items()}
        rows = quality_rows(files, "reference set", args.repeats, args.tolerance, Path(tmp), targets=True)
        if args.cuts is None:
            montage, cuts = write_montage(args.videos, Path(tmp))
            rows += quality_rows({montage: cuts}, "montage", args.repeats, args.tolerance, Path(tmp), targets=False)
        if not args.no_throughput:
            rows += throughput_rows(args.videos, list(reference), args.repeats, Path(tmp))
    return rows


if __name__ == "__main__":
    from benchmarks.run import print_table

    print_table("segment: cuts vs PySceneDetect, wall time, throughput", main(sys.argv[1:]))
