"""Shot-boundary detection: every detector of `vidrd-data segment` side by side, P/R/F1 and time per video-hour.

Sets (0-based frame truth; scoring as PySceneDetect's benchmark, `vidrd_data/inspection/shot_eval.py`):

- `real`: ../shared/data/videos with the cuts its README gives (PySceneDetect 0.7's golden answers, a peer's, not
  a human annotation): testvideo.mp4 (frames 30, 180, 394), issue-134-rotate.mp4 (3.754 s, 8.759 s = frames 90,
  210); fades.mp4 (fades only: any detection is a false positive) and counter.mp4 (no cuts).
- `cuts`, `fades`, `dissolves`, `mixed`: synthetic montages (`shot_eval.montage`, 256×144 at 25 fps, shots of
  1.5–4 s: smooth panned landscapes with a moving disc) joined by hard cuts, fades through black (12 frames),
  cross-dissolves (12 frames) or a mix; `--montages N` videos per set of `--transitions K` transitions each.

Rows: each detector through our decode pipeline (`histogram` = the embedding rules with the colour-histogram
embedder, before merging; `content`/`adaptive` = PySceneDetect's detectors fed our frames; `transnetv2`), and
`pyscenedetect` = PySceneDetect's own pipeline (its OpenCV backend, ContentDetector defaults). `clip` needs real
open_clip weights (`--clip-config`, `--clip-checkpoint`): there are none offline, so it is left out unless given.
Times are wall seconds per hour of video on this machine (one run, decode included; torch on `--threads`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidrd_data.inspection import shot_eval as se  # noqa: E402

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
REAL_TRUTH = {  # ../shared/data/videos/README.md, in frames
    "testvideo.mp4": se.ShotTruth([30, 180, 394]),
    "issue-134-rotate.mp4": se.ShotTruth([90, 210]),
    "fades.mp4": se.ShotTruth([]),
    "counter.mp4": se.ShotTruth([]),
}
SETS = {"cuts": ["cut"], "fades": ["fade"], "dissolves": ["dissolve"], "mixed": ["cut", "fade", "dissolve"]}


def montages(folder: Path, kinds: list[str], count: int, transitions: int, seed: int) -> list[tuple[str, se.ShotTruth]]:
    """Write `count` montages cycling through `kinds` of transition; return (path, truth) pairs."""
    pairs = []
    for v in range(count):
        chosen = [kinds[(v + k) % len(kinds)] for k in range(transitions)]
        path = folder / f"{'-'.join(kinds)}_{v}.mp4"
        truth = se.write_montage(path, seed + v, chosen, size=(144, 256), shot_seconds=(1.5, 4.0))
        pairs.append((str(path), truth))
    return pairs


def main(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(prog="bench_shots")
    parser.add_argument("--sets", default="real,cuts,fades,dissolves,mixed")
    parser.add_argument("--detectors", default="histogram,content,adaptive,transnetv2")
    parser.add_argument("--montages", type=int, default=3)
    parser.add_argument("--transitions", type=int, default=8)
    parser.add_argument("--tolerance", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip-config")
    parser.add_argument("--clip-checkpoint")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    detectors = args.detectors.split(",") + (["clip"] if args.clip_config else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            if name == "real":
                if not SHARED_VIDEOS.is_dir():
                    print(f"skipping the real set: {SHARED_VIDEOS} is absent")
                    continue
                pairs = [(str(SHARED_VIDEOS / f), t) for f, t in REAL_TRUTH.items() if (SHARED_VIDEOS / f).is_file()]
            else:
                pairs = montages(Path(tmp), SETS[name], args.montages, args.transitions, seed=100 * len(rows))
            results = se.evaluate(pairs, detectors, args.tolerance, True, device=args.device,
                                  clip_config=args.clip_config, clip_checkpoint=args.clip_checkpoint)
            for r in results:
                a, h, g = r.counts["all"], r.counts["hard"], r.counts["gradual"]
                rows.append({
                    "set": name, "videos": len(pairs), "detector": r.detector,
                    "P": "–" if r.error else f"{a.precision:.3f}", "R": "–" if r.error else f"{a.recall:.3f}",
                    "F1": "–" if r.error else f"{a.f1:.3f}",
                    "hard F1": f"{h.f1:.3f}" if h.matched + h.missed and not r.error else "n/a",
                    "gradual F1": f"{g.f1:.3f}" if g.matched + g.missed and not r.error else "n/a",
                    "tp/fp/fn": "–" if r.error else f"{a.matched}/{a.false_positives}/{a.missed}",
                    "s per video-hour": "–" if r.error else f"{r.seconds_per_video_hour:.0f}",
                    "note": r.error or f"±{args.tolerance} frames",
                })
    return rows


if __name__ == "__main__":
    from benchmarks.run import print_table

    print_table("shots", main(sys.argv[1:]))
