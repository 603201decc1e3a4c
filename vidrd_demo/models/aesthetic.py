"""A tiny LAION aesthetic predictor head: the published MLP layout and state-dict keys (`layers.N.weight`), random
weights, sized for the tiny open_clip model's embeddings (the real one takes ViT-L/14's 768)."""

from __future__ import annotations

from pathlib import Path

import torch

from vidrd_demo.models.weights import randomize_parameters

AESTHETIC_FILE = "aesthetic_head.pth"


def write_tiny_aesthetic_head(out_dir: str | Path, input_size: int = 16) -> Path:
    """Writes the head's state dict with torch.save, as the predictor's `.pth` files are; returns its path."""
    from vidrd_data.scores.aesthetic import aesthetic_mlp

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    network = randomize_parameters(aesthetic_mlp(input_size), std=0.5)
    path = out_dir / AESTHETIC_FILE
    torch.save({f"layers.{k}": v for k, v in network.state_dict().items()}, path)
    return path
