"""A tiny VideoMAE in transformers' on-disk format (config.json + model.safetensors), the stand-in for the
VideoMAE-v2 that content-debiased FVD (`vidrd-eval fvd --cd-fvd DIR`) reads."""

from __future__ import annotations

from pathlib import Path

from vidrd_demo.models.weights import EMBEDDER_INIT_STD, randomize_parameters

# cd-FVD's network is VideoMAEForVideoClassification-shaped (mean pooling + fc_norm + a head); the same at toy size:
# 16 frames (what FVD clips hold), 32² pixels in 16² patches, tubelets of 2 frames.
TINY_VIDEOMAE = {"image_size": 32, "patch_size": 16, "num_frames": 16, "tubelet_size": 2, "hidden_size": 32,
                 "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37, "use_mean_pooling": True,
                 "num_labels": 4}


def write_tiny_videomae(out_dir: str | Path) -> Path:
    """Writes a randomly initialised VideoMAEForVideoClassification folder (save_pretrained, safetensors); returns
    the folder."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    out_dir = Path(out_dir)
    config = VideoMAEConfig(**TINY_VIDEOMAE, vidrd_demo_standin=True)  # an extra config key: reports flag it
    model = randomize_parameters(VideoMAEForVideoClassification(config).eval(), std=EMBEDDER_INIT_STD)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
