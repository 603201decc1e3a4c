"""Caption–frame agreement: the cosine similarity of the caption's CLIP text embedding and the mean of the
stills' CLIP image embeddings (as CLIPScore does, without its 2.5 rescale), through open_clip. Also the CLIP
image tower the aesthetic predictor reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from vidrd_data.scores import Clip


class ClipModel:
    """An open_clip model (a name + pretrained tag, or offline a config JSON + checkpoint) on one device."""

    def __init__(self, model: str, pretrained: str | None, config: str | None, checkpoint: str | None, device: str):
        import open_clip

        from vidrd_data.models.device import resolve_device
        from vidrd_data.models.embedders import load_open_clip

        self.device = resolve_device(device)
        self.model, self.preprocess, self.model_id = load_open_clip(
            model, pretrained, config=config, checkpoint=checkpoint, device=self.device,
            hint="offline, pass --clip-config and --clip-checkpoint")
        self.tokenizer = open_clip.get_tokenizer(Path(config).stem if config else model)
        self._last = None
        self.weights = checkpoint if checkpoint and os.path.isfile(checkpoint) else (
            pretrained if pretrained and os.path.isfile(pretrained) else None)

    def identity(self) -> dict:
        """Return the model id and the sha256 of its weights file (None for weights open_clip fetched by tag)."""
        from vidrd_io.fs import file_sha256

        return {"name": self.model_id, "sha256": file_sha256(self.weights) if self.weights else None}

    def images(self, frames: np.ndarray):
        """Return the frames' unit image embeddings, a float32 torch tensor `(n, d)` on the CPU; the same array
        asked again (the aesthetic and similarity scores of one clip) is embedded once."""
        import torch
        from PIL import Image

        if self._last is not None and self._last[0] is frames:
            return self._last[1]
        pixels = torch.stack([self.preprocess(Image.fromarray(f)) for f in frames]).to(self.device)
        with torch.inference_mode():
            embedded = self.model.encode_image(pixels, normalize=True).float().cpu()
        self._last = (frames, embedded)  # holding `frames` keeps its identity from being reused
        return embedded

    def text(self, caption: str):
        """Return the caption's unit text embedding `(d,)` on the CPU."""
        import torch

        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer([caption]).to(self.device), normalize=True).float().cpu()[0]


class ClipSimilarityScore:
    name = "clip_similarity"
    columns = [pa.field("clip_similarity", pa.float64())]

    def __init__(self, clip: ClipModel):
        self.clip = clip

    def identity(self) -> dict:
        return self.clip.identity()

    def __call__(self, clip: Clip) -> dict:
        """Return the caption–frames cosine similarity (None without a caption)."""
        if not clip.caption or not clip.caption.strip():
            return {"clip_similarity": None}
        image = self.clip.images(clip.stills).mean(dim=0)
        image = image / image.norm().clamp_min(1e-12)
        return {"clip_similarity": float(image @ self.clip.text(clip.caption))}
