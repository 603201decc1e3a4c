"""Clips/s of each score of the `score` stage on the CPU (2 threads by default), decoding included.

Synthetic 5 s 640×360 H.264 clips (a moving texture); `--frames` stills per clip (and the frame after each, for
motion). The aesthetic and CLIP-similarity scores run a ViT-L/14 of *random* weights built by open_clip (the
published weights are not on this machine): the speed is the real model's, the values mean nothing. Each score is
timed alone (its model loaded before the clock starts); `decode` is reading the frames alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> list[dict]:
    p = argparse.ArgumentParser(prog="bench_scores")
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--model-clips", type=int, default=4, help="clips for the ViT-L/14 scores (slow on a CPU)")
    p.add_argument("--frames", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scores", default="blur,motion,ocr,aesthetic,clip_similarity")
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch

    from vidrd_data.scores.aesthetic import AestheticScore
    from vidrd_data.scores.blur import BlurScore
    from vidrd_data.scores.clip_similarity import ClipModel, ClipSimilarityScore
    from vidrd_data.scores.motion import MotionScore
    from vidrd_data.scores.ocr import TextAreaScore
    from vidrd_data.stages.score import read_clip
    from vidrd_demo.models.aesthetic import write_tiny_aesthetic_head
    from vidrd_io.video import write_mp4

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (360, 1280, 3), dtype=np.uint8), (7, 7), 0)
        paths = []
        for k in range(args.clips):
            frames = np.stack([np.roll(texture, (k + 1) * t, axis=1)[:, :640] for t in range(120)])
            paths.append(tmp / f"clip{k}.mp4")
            write_mp4(paths[-1], frames, fps=24)
        row = {"kind": "video_clip", "start_time": 0.0, "end_time": 5.0, "fps": 24.0, "caption": "a moving texture"}
        t0 = time.perf_counter()
        clips = [read_clip(row, str(path), args.frames, 360) for path in paths]
        decode = time.perf_counter() - t0
        rows.append({"score": "decode (frames only)", "clips": len(clips), "clips/s": round(len(clips) / decode, 2),
                     "model": "PyAV/decord", "note": f"{args.frames} stills + {args.frames} next frames"})
        clip_model = None
        for name in args.scores.split(","):
            n = len(clips)
            if name in ("aesthetic", "clip_similarity"):
                n = min(n, args.model_clips)
                if clip_model is None:
                    clip_model = ClipModel("ViT-L-14", None, None, None, "cpu")
                scorer = AestheticScore(clip_model, write_tiny_aesthetic_head(tmp, input_size=768)) \
                    if name == "aesthetic" else ClipSimilarityScore(clip_model)
            else:
                scorer = {"blur": BlurScore, "motion": MotionScore, "ocr": TextAreaScore}[name]()
            scorer(clips[0])  # warm-up (ONNX and torch first calls)
            t0 = time.perf_counter()
            for clip in clips[:n]:
                scorer(clip)
            took = time.perf_counter() - t0
            rows.append({"score": name, "clips": n, "clips/s": round(n / took, 2),
                         "model": scorer.identity()["name"][:60],
                         "note": "random ViT-L/14 weights" if name in ("aesthetic", "clip_similarity") else ""})
    return rows


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.run import print_table

    print_table("scores", main(sys.argv[1:]))
