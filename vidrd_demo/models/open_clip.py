"""A tiny open_clip model: a model-config JSON (tiny ViT and text tower) and a state_dict checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vidrd_demo.models.weights import EMBEDDER_INIT_STD, randomize_parameters


@dataclass(frozen=True)
class TinyOpenClip:
    """Where the tiny open_clip model is: register `config_path` with `open_clip.add_model_config`, then create
    `model_name` with `pretrained=str(checkpoint_path)`."""

    model_name: str
    config_path: Path
    checkpoint_path: Path


OPEN_CLIP_MODEL_NAME = "vidrd-tiny-ViT-16"


def write_tiny_open_clip(out_dir: str | Path) -> TinyOpenClip:
    """Writes an open_clip model-config JSON (tiny ViT and text tower) and a torch.save'd state_dict checkpoint."""
    from open_clip.model import CLIP

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        # open_clip's built-in tokenizer always emits ids of the full 49408-entry CLIP vocabulary.
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    config_path = out_dir / f"{OPEN_CLIP_MODEL_NAME}.json"  # open_clip names a config after its file stem
    config_path.write_text(json.dumps(model_config, indent=4))
    model = randomize_parameters(CLIP(**model_config).eval(), std=EMBEDDER_INIT_STD)
    checkpoint_path = out_dir / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), checkpoint_path)
    return TinyOpenClip(OPEN_CLIP_MODEL_NAME, config_path, checkpoint_path)
