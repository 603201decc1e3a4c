"""Frame embedders for the `segment` stage: open_clip image embeddings, or a weight-free colour-histogram one.

An embedder turns decoded RGB frames (uint8 `(n, H, W, 3)` whose short side is about `frame_size`) into
L2-normalised rows, so the cosine similarity of two frames is their dot product. Similarities live on each
embedder's own scale, so each carries the default thresholds of the segmentation rules (`RuleThresholds`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

EMBEDDERS = ("clip", "histogram")


class EmbedderError(ValueError):
    """The embedder cannot be built (unknown name, weights not found offline, bad config)."""


@dataclass(frozen=True)
class RuleThresholds:
    """Cosine similarities at which the segmentation rules act, on one embedder's scale.

    `cut`: consecutive sampled frames less similar than this are in different scenes.
    `transition`: a segment whose first and last frames are less similar than this is a transition.
    `static`: a segment whose frames are all at least this similar is near-static (dropped only on request).
    """

    cut: float
    transition: float
    static: float


class HistogramEmbedder:
    """Colour histograms of a 2×2 grid of regions: weight-free, fast, blind to what things are.

    Each region gives a joint RGB histogram with `levels` soft (linearly interpolated) bins per channel, so a
    slow change of colour moves mass between neighbouring bins instead of jumping; the square roots of the
    normalised histograms are concatenated, which makes the cosine similarity the mean Bhattacharyya coefficient
    of the regions' colour distributions (1: same colours in the same quarters of the picture).
    """

    name = "histogram"
    frame_size = 36  # short side the decoder delivers: colour statistics of a 64×36 picture are enough
    # Calibrated on the real clips of ../shared/data/videos and the demo's long videos (see README, "segment").
    thresholds = RuleThresholds(cut=0.95, transition=0.5, static=0.995)

    def __init__(self, levels: int = 8, grid: int = 2):
        if levels < 2 or grid < 1:
            raise EmbedderError(f"levels must be ≥ 2 and grid ≥ 1, got {levels} and {grid}")
        self.levels, self.grid = levels, grid
        self.model_id = f"histogram(levels={levels},grid={grid})"

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Return `(n, grid² · levels³)` float32 rows of unit length."""
        stride = max(1, round(min(frames.shape[1:3]) / 36))  # colour statistics of ~36 rows are as good as of more
        frames = frames[:, ::stride, ::stride]
        n, h, w, _ = frames.shape
        levels, regions = self.levels, self.grid * self.grid
        position = frames.astype(np.float32) * ((levels - 1) / 255.0)
        low = np.minimum(position.astype(np.int32), levels - 2)  # the upper bin of the top level is levels - 1
        upper_weight = position - low  # (n, h, w, 3), in [0, 1]
        rows = np.minimum(np.arange(h) * self.grid // h, self.grid - 1)
        cols = np.minimum(np.arange(w) * self.grid // w, self.grid - 1)
        region = rows[:, None] * self.grid + cols[None, :]  # (h, w)
        base = ((np.arange(n)[:, None, None] * regions + region[None]) * levels**3).astype(np.int32)  # (n, h, w)
        bins = np.zeros(n * regions * levels**3)
        for corner in range(8):  # the 8 corners of the trilinear interpolation cell
            index, weight = base, 1.0
            for channel in range(3):
                up = (corner >> channel) & 1
                index = index + (low[..., channel] + up) * levels ** (2 - channel)
                weight = weight * (upper_weight[..., channel] if up else 1.0 - upper_weight[..., channel])
            bins += np.bincount(index.ravel(), weights=weight.ravel(), minlength=bins.size)
        hist = bins.reshape(n, regions, levels**3)
        hist /= np.maximum(hist.sum(axis=2, keepdims=True), 1e-12)
        out = np.sqrt(hist).reshape(n, -1) / np.sqrt(regions)
        return out.astype(np.float32)


def load_open_clip(model: str, pretrained: str | None, *, config=None, checkpoint=None, device="cpu",
                   hint: str = "offline, pass --clip-config and --clip-checkpoint"):
    """Return (model in eval mode, its image preprocessing, an id naming model and weights) through open_clip:
    `model`/`pretrained` any open_clip name and tag, or offline a model `config` JSON (the model is named after its
    file stem, as open_clip names configs) and a state-dict `checkpoint` (open_clip loads it with
    `torch.load(weights_only=True)`). Any failure is one EmbedderError line ending in `hint`."""
    import open_clip

    if config is not None:
        config = Path(config)
        if not config.is_file():
            raise EmbedderError(f"open_clip model config not found: {config}")
        open_clip.add_model_config(config)
        model = config.stem
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise EmbedderError(f"open_clip checkpoint not found: {checkpoint}")
        pretrained = os.fspath(checkpoint)
    try:
        network, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained, device=device)
    except Exception as exc:  # noqa: BLE001 - unknown name, missing weights offline, bad checkpoint: one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EmbedderError(f"cannot load open_clip {model!r} (pretrained={pretrained!r}): {first}; {hint}") from None
    model_id = f"open_clip:{model}/{Path(pretrained).name if pretrained else 'random'}"
    return network.eval(), preprocess, model_id


class OpenClipEmbedder:
    """CLIP image embeddings through open_clip: a model name + pretrained tag, or a local config JSON + checkpoint.

    `model`/`pretrained` are any open_clip name and tag (`ViT-B-32`/`openai`); for offline use pass `config`, a model
    config JSON (the model is named after its file stem, as open_clip names configs), and `checkpoint`, a state dict
    loaded by open_clip (`torch.load(weights_only=True)`). On CUDA the model runs under bf16 (fp16 where bf16 is
    unsupported) autocast; on the CPU, building one caps torch's threads at all cores but one (process-wide), which
    the `segment` stage's decoder thread needs.
    """

    name = "clip"
    # Panda-70M's ImageBind distances (stitch 0.6, transition 1.0, still 0.15 on unit vectors) as cosines, the cut
    # a little stricter than its 0.82; not calibrated on real CLIP weights, which this offline project has none of.
    thresholds = RuleThresholds(cut=0.85, transition=0.5, static=0.99)

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        *,
        config: str | os.PathLike | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = 64,
    ):
        import torch

        if batch_size < 1:
            raise EmbedderError(f"batch_size must be ≥ 1, got {batch_size}")
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.model, self.preprocess, self.model_id = load_open_clip(
            model, pretrained, config=config, checkpoint=checkpoint, device=self.device,
            hint="offline, pass --clip-config and --clip-checkpoint, or use --embedder histogram")
        self.model.eval()
        if self.device.type == "cpu":
            # Leave a core to the decoder thread: torch's OpenMP workers spin-wait, and oversubscribed they crawl.
            torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1)))
        size = self.model.visual.image_size
        self.frame_size = int(min(size) if isinstance(size, (tuple, list)) else size)
        self.batch_size = batch_size
        self.autocast_dtype = None
        if self.device.type == "cuda":
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        log.info("loaded open_clip %s on %s", self.model_id, self.device)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Return `(n, embed_dim)` float32 rows of unit length, `batch_size` frames per forward pass."""
        import torch
        from PIL import Image

        out = []
        for start in range(0, len(frames), self.batch_size):
            pixels = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames[start : start + self.batch_size]])
            with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
            ):
                features = self.model.encode_image(pixels.to(self.device), normalize=True)
            out.append(features.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def make_embedder(
    name: str,
    *,
    clip: str = "ViT-B-32",
    clip_pretrained: str | None = "openai",
    clip_config: str | None = None,
    clip_checkpoint: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
):
    """Return the embedder called `name` (`clip` or `histogram`)."""
    if name == "histogram":
        return HistogramEmbedder()
    if name == "clip":
        return OpenClipEmbedder(
            clip, clip_pretrained, config=clip_config, checkpoint=clip_checkpoint, device=device, batch_size=batch_size
        )
    raise EmbedderError(f"unknown embedder {name!r} (use {' or '.join(EMBEDDERS)})")


def embedder_class(name: str):
    """Return the class of embedder `name` without building it (its `thresholds` are the rules' defaults)."""
    classes = {"clip": OpenClipEmbedder, "histogram": HistogramEmbedder}
    if name not in classes:
        raise EmbedderError(f"unknown embedder {name!r} (use {' or '.join(EMBEDDERS)})")
    return classes[name]
