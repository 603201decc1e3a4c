"""TorchScript stand-ins for stylegan-v's metric networks: I3D (FVD) and C3D (IS), with the published files' call
signatures.

`vidrd_model.eval.report.is_standin_extractor` recognises these files by their code's path inside the archive
(`code/__torch__/vidrd_demo/...`): keep the classes in the `vidrd_demo` package.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from vidrd_demo.models.weights import randomize_parameters


class StandinI3D(nn.Module):
    """A tiny network with the call signature of stylegan-v's `i3d_torchscript.pt`: uint8 `[B, 3, T, H, W]` in;
    `rescale` maps [0, 255] to [-1, 1], `resize` resizes frames bilinearly to 224×224; returns 32 features
    (`return_features`) or 400 Kinetics-style logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(2, 16, 16), stride=(2, 16, 16))
        self.features = nn.Linear(16, 32)
        self.logits = nn.Linear(32, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            b, c, t, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = nn.functional.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
            x = frames.reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        h = torch.tanh(self.conv(x)).flatten(2)  # [B, 8, positions]
        features = self.features(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))
        return features if return_features else self.logits(features)


class StandinC3D(nn.Module):
    """A tiny network with the call signature of stylegan-v's `c3d_ucf101.pt`: uint8 `[B, 3, 16, 112, 112]` in,
    softmax probabilities over the 101 UCF-101 classes out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(4, 16, 16), stride=(4, 16, 16))
        self.classes = nn.Linear(16, 101)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x.float() / 127.5 - 1.0)).flatten(2)
        logits = self.classes(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))
        return torch.softmax(logits, dim=1)


def write_standin_extractors(out_dir: str | Path) -> dict[str, Path]:
    """Writes TorchScript stand-ins for the FVD and IS networks, `i3d_torchscript.pt` and `c3d_ucf101.pt`, under
    `out_dir` and returns their paths by kind ("i3d", "c3d"). Seeded weights: the same files on every run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"i3d": out_dir / "i3d_torchscript.pt", "c3d": out_dir / "c3d_ucf101.pt"}
    # Wide draws (std 1): at 0.02 every video would get nearly the same features and the same class probabilities.
    for kind, module in (("i3d", StandinI3D()), ("c3d", StandinC3D())):
        with warnings.catch_warnings():  # torch deprecates TorchScript; the files it stands in for are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(randomize_parameters(module.eval(), std=1.0)).save(str(paths[kind]))
    return paths
