"""Motion: OpenCV Farneback optical flow between adjacent frames at a few points of the clip, plus a frame
difference; flags near-static clips and camera shake.

`motion_flow` is the mean flow magnitude in pixels per frame on frames scaled to a 128-pixel short side (so clips of
any resolution compare; not `motion`, the pseudo-videos' camera-motion column); `frame_diff` the mean absolute grey difference of the same pairs (0–1), a cheap check
that needs no flow. `motion_flag` is `static` when `motion_flow` < 0.1 px/frame, and `shake` when the pairs' global
motions (the median flow vector of each pair) are large (> 0.5 px/frame on average) yet point in inconsistent
directions (the length of their mean is < 0.4 of their mean length): a pan or a tracking shot moves one way,
a shaking camera back and forth. Both thresholds are ours (the issue names the flags, not their values).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vidrd_data.scores import Clip

FLOW_SIDE = 128
STATIC_PX = 0.1
SHAKE_PX = 0.5
SHAKE_CONSISTENCY = 0.4


def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    h, w = frame.shape[:2]
    scale = FLOW_SIDE / min(h, w)
    small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


class MotionScore:
    name = "motion"
    columns = [pa.field("motion_flow", pa.float64()), pa.field("frame_diff", pa.float64()),
               pa.field("motion_flag", pa.string())]

    def identity(self) -> dict:
        """Return the score's identity: OpenCV's Farneback flow, no weights."""
        import cv2

        return {"name": f"opencv-{cv2.__version__} farneback flow at {FLOW_SIDE}px", "sha256": None}

    def __call__(self, clip: Clip) -> dict:
        """Return motion_flow, frame_diff and motion_flag (all None for a still image, which has no frame pairs)."""
        import cv2

        if not clip.pairs:
            return {"motion_flow": None, "frame_diff": None, "motion_flag": None}
        magnitudes, diffs, vectors = [], [], []
        for a, b in clip.pairs:
            ga, gb = _grey(a), _grey(b)
            flow = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            magnitudes.append(float(np.linalg.norm(flow, axis=2).mean()))
            diffs.append(float(np.abs(ga.astype(np.int16) - gb.astype(np.int16)).mean() / 255))
            vectors.append(np.median(flow.reshape(-1, 2), axis=0))
        motion = float(np.mean(magnitudes))
        vectors = np.asarray(vectors)
        lengths = np.linalg.norm(vectors, axis=1)
        flag = None
        if motion < STATIC_PX:
            flag = "static"
        elif len(vectors) >= 3 and lengths.mean() > SHAKE_PX and \
                np.linalg.norm(vectors.mean(axis=0)) < SHAKE_CONSISTENCY * lengths.mean():
            flag = "shake"
        return {"motion_flow": motion, "frame_diff": float(np.mean(diffs)), "motion_flag": flag}
