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

from vidrd_data.embedders import EmbedderError

log = logging.getLogger(__name__)

CONVENTIONS = ("raw", "clipscore")


class ClipScorer:
    """An open_clip model scoring frames against a text: a name + pretrained tag, or (offline) a config JSON, named
    after its file stem as open_clip names configs, plus a state-dict checkpoint.

    The loading rules are those of `vidrd_data.embedders.OpenClipEmbedder`; this class keeps its own loader because a
    metric runs in float32 without autocast and must not cap torch's threads as the segment stage does.
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

        if config is not None:
            if not Path(config).is_file():
                raise EmbedderError(f"open_clip model config not found: {config}")
            open_clip.add_model_config(Path(config))
            model = Path(config).stem
        if checkpoint is not None:
            if not Path(checkpoint).is_file():
                raise EmbedderError(f"open_clip checkpoint not found: {checkpoint}")
            pretrained = os.fspath(checkpoint)
        self.device = torch.device(device)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained, device=self.device
            )
            self.tokenizer = open_clip.get_tokenizer(model)
        except Exception as exc:  # noqa: BLE001 - unknown name, missing weights offline, bad checkpoint: one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EmbedderError(
                f"cannot load open_clip {model!r} (pretrained={pretrained!r}): {first}; "
                "offline, pass --clip-config and --clip-checkpoint"
            ) from None
        self.model.eval()
        self.model_id = f"open_clip:{model}/{Path(pretrained).name if pretrained else 'random'}"

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
