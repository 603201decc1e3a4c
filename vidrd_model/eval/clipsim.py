"""CLIPSIM: how well generated frames match their prompt, by CLIP image–text cosine similarity.

    raw (VidRD):  CLIPSIM = mean over videos of mean over frames of cos(E_img(frame), E_txt(prompt))   (0–1 scale)
    clipscore:    the same means of max(100 · cos, 0) per frame                                        (0–100 scale)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from vidrd_data.models.embedders import load_open_clip

log = logging.getLogger(__name__)

CONVENTIONS = ("raw", "clipscore")


class ClipScorer:
    """An open_clip model scoring frames against a text: a name + pretrained tag, or (offline) a config JSON, named
    after its file stem as open_clip names configs, plus a state-dict checkpoint.

    Loaded as the segment stage's `OpenClipEmbedder` loads it (`vidrd_data.models.embedders.load_open_clip`), but a metric
    runs in float32 without autocast and leaves torch's thread count alone.
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        config: str | os.PathLike | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str = "cpu",
    ):
        import open_clip
        import torch

        self.device = torch.device(device)
        self.model, self.preprocess, self.model_id = load_open_clip(
            model, pretrained, config=config, checkpoint=checkpoint, device=self.device)
        self.tokenizer = open_clip.get_tokenizer(Path(config).stem if config is not None else model)

    def frame_text_cosine(self, frames: np.ndarray, text: str) -> np.ndarray:
        """Return the cosine similarity `[T]` (float64) of each uint8 frame `[T, H, W, 3]` with `text`."""
        import torch
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(frame)) for frame in frames]).to(self.device)
        tokens = self.tokenizer([text]).to(self.device)
        with torch.no_grad():
            image = self.model.encode_image(pixels).double().cpu().numpy()
            words = self.model.encode_text(tokens).double().cpu().numpy()[0]
        image /= np.linalg.norm(image, axis=1, keepdims=True)
        words /= np.linalg.norm(words)
        return image @ words


def clipsim(scorer: ClipScorer, videos: Iterable[tuple[np.ndarray, str]], convention: str = "raw") -> dict:
    """Return {"clipsim", "convention", "videos"}: the mean over videos of the per-video mean frame score, the score
    being the raw cosine (`raw`, VidRD's) or max(100·cos, 0) (`clipscore`, Hessel et al.'s scale)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown CLIPSIM convention {convention!r} (use {' or '.join(CONVENTIONS)})")
    per_video = []
    for frames, text in videos:
        cosine = scorer.frame_text_cosine(frames, text)
        scores = cosine if convention == "raw" else np.maximum(100.0 * cosine, 0.0)
        per_video.append(float(scores.mean()))
    if not per_video:
        raise ValueError("CLIPSIM needs at least one video")
    return {"clipsim": float(np.mean(per_video)), "convention": convention, "videos": len(per_video)}
