"""Temporal layers VidRD adds to Stable Diffusion, shared by the U-Net and the VAE decoder.

Every tensor here is frame-folded: a clip batch of shape (b, c, f, h, w) travels as ((b f), c, h, w) with
frame index = b * f + f, so the spatial layers run per frame unchanged. These helpers unfold it where the release
mixes information across frames.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def frame_pooled_group_norm(norm: nn.GroupNorm, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Returns `norm(x)` with statistics pooled over all frames of each clip, as the release's 5-D GroupNorms.

    The release's ResNets and output norm receive (b, c, f, h, w) tensors, so their group statistics cover every
    frame of a sample; diffusers' 2-D blocks normalise each frame alone.
    """
    if num_frames == 1:
        return norm(x)
    clip = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
    return rearrange(norm(clip), "b c f h w -> (b f) c h w")


def sinusoidal_frame_embedding(num_frames: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Returns the (num_frames, dim) table PE[f, 2i] = sin(f·10000^(-2i/dim)), PE[f, 2i+1] = cos(same).

    Interleaved sin/cos as in the release; diffusers' 1-D sin-cos helpers concatenate the halves instead.
    """
    position = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_frames, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table.to(dtype) if dtype is not None else table


class FrameConv3d(nn.Conv3d):
    """Conv3d with a (3, 1, 1) kernel over frames, computed as a 2-D conv on (b, c, f, h·w).

    Same parameters and result as nn.Conv3d; CPU 2-D conv kernels run it about 20% faster.
    """

    def __init__(self, channels: int):
        super().__init__(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        out = F.conv2d(x.reshape(b, c, f, h * w), self.weight.squeeze(-1), self.bias, padding=(1, 0))
        return out.view(b, -1, f, h, w)


class TemporalConvLayer(nn.Module):
    """Temp-Conv: a residual stack of GroupNorm(32) → SiLU → Dropout → Conv3d over frames; the last conv starts at 0.

    Parameter names follow the release (`convs.{4k}` GroupNorm, `convs.{4k+3}` Conv3d with kernel (3, 1, 1)).
    The U-Net uses 4 stages, the VAE decoder 3. The GroupNorms see whole clips, so they pool over frames.
    """

    def __init__(self, channels: int, num_layers: int = 4, dropout: float = 0.1):
        super().__init__()
        convs = []
        for _ in range(num_layers):
            convs += [
                nn.GroupNorm(32, channels),
                nn.SiLU(),
                nn.Dropout(dropout),
                FrameConv3d(channels),
            ]
        self.convs = nn.ModuleList(convs)
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        # A single frame skips the layer (x + 0·branch) but, when training, keeps its parameters in the graph
        # so joint image/video batches and DDP see every parameter used.
        if num_frames == 1 and not torch.is_grad_enabled():
            return x
        h = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
        for layer in self.convs:
            h = layer(h)
        h = rearrange(h, "b c f h w -> (b f) c h w")
        return x + h if num_frames > 1 else x + 0 * h
