"""VidRD ("Reuse and Diffuse", Gu et al. 2023) model on current diffusers: video U-Net, temporal VAE, loaders.

Heavy imports (torch, diffusers) happen on first attribute access, so `import vidrd_model` stays cheap.
"""

import importlib

_EXPORTS = {
    "VideoUNet": "unet",
    "TemporalAutoencoderKL": "vae",
    "load_release_checkpoint": "checkpoints",
    "unet_config_from_2d": "checkpoints",
    "unet_config_from_release": "checkpoints",
    "trainable_parameters": "params",
    "freeze_for_training": "params",
    "VidRDPipeline": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
