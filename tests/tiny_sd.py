"""A tiny Stable-Diffusion-2.1-style folder for sampler tests, written once per test session and shared."""

from pathlib import Path

import torch


def tiny_stable_diffusion(tmp_path_factory) -> Path:
    """Returns the folder of vidrd_demo.models' tiny SD (unet, vae, text_encoder, tokenizer, scheduler)."""
    from vidrd_demo.models.stable_diffusion import write_tiny_stable_diffusion

    folder = tmp_path_factory.getbasetemp() / "tiny_stable_diffusion"
    if not (folder / "model_index.json").is_file():  # the writer's last file
        write_tiny_stable_diffusion(folder)
    return folder


def perturb_temporal_layers_(module: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Adds std·N(0, 1) to every temporal parameter ("temp_"), so untrained zero-initialised layers mix frames."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "temp_" in name:
                param.add_(std * torch.randn(param.shape, generator=generator))
    return module
