"""Which U-Net parameters train, per training mode.

The paper's default ("paper") trains Temp-Conv, Temp-Attn (with its LayerNorm), and the spatial self-attention
(`attn1`) and cross-attention (`attn2`) projections; the ResNets, the rest of the U-Net, the VAE and the text
encoder stay frozen. ("temporal": only Temp-Conv and Temp-Attn; "full": the whole U-Net.)
"""

from collections.abc import Iterable

import torch.nn as nn

TRAINABLE_MODULES = {
    "paper": ("temp_convs", "temp_attn", "temp_norm", "attn1", "attn2"),
    "temporal": ("temp_convs", "temp_attn", "temp_norm"),
    "full": None,
}


def trainable_parameters(unet: nn.Module, mode: str = "paper") -> dict[str, nn.Parameter]:
    """Returns the U-Net parameters that `mode` trains, by name, in registration order."""
    if mode not in TRAINABLE_MODULES:
        raise ValueError(f"unknown training mode {mode!r}; expected one of {sorted(TRAINABLE_MODULES)}")
    modules = TRAINABLE_MODULES[mode]
    if modules is None:
        return dict(unet.named_parameters())
    return {
        name: param
        for name, param in unet.named_parameters()
        if any(part in modules for part in name.split(".")[:-1])
    }


def freeze_for_training(unet: nn.Module, mode: str = "paper", frozen: Iterable[nn.Module] = ()) -> list[nn.Parameter]:
    """Returns the trainable U-Net parameters after setting `requires_grad` for `mode` and freezing `frozen`.

    `frozen` takes the other modules of a training run (VAE, text encoder).
    """
    trainable = trainable_parameters(unet, mode)
    for name, param in unet.named_parameters():
        param.requires_grad_(name in trainable)
    for module in frozen:
        module.requires_grad_(False)
    return list(trainable.values())
