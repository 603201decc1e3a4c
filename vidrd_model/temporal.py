"""Temporal layers VidRD adds to Stable Diffusion, shared by the U-Net and the VAE decoder.

Every tensor here is frame-folded: a clip batch of shape (b, c, f, h, w) travels as ((b f), c, h, w) with
frame index = b * f + f, so the spatial layers run per frame unchanged. These helpers unfold it where the release
mixes information across frames.

Eager speed (issue 18): the unfolding is a view (`clip_view`), each layer copies at most once into the clip layout,
and the way back is fused into the op that follows (the residual add, or SiLU writing straight into the folded
layout), with no einops parsing and no parameterless module calls on the hot path. Outputs equal the plain
formulation (tests/test_unet.py checks each against it).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def clip_view(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Returns the (b, c, f, ...) view of frame-folded ((b f), c, ...) rows: no copy."""
    return x.unflatten(0, (-1, num_frames)).transpose(1, 2)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """Returns (b, c, f, ...) as frame-folded ((b f), c, ...) rows (a copy unless `x` is a `clip_view`)."""
    return x.transpose(1, 2).flatten(0, 1)


def frame_pooled_group_norm(norm: nn.GroupNorm, x: torch.Tensor, num_frames: int, silu: bool = False) -> torch.Tensor:
    """Returns `norm(x)` (then SiLU when `silu`) with statistics pooled over all frames of each clip.

    The release's ResNets and output norm receive (b, c, f, h, w) tensors, so their group statistics cover every
    frame of a sample; diffusers' 2-D blocks normalise each frame alone. Without gradients, SiLU writes the result
    straight back into the folded layout (one pass instead of SiLU plus a copy).
    """
    if num_frames == 1:
        return F.silu(norm(x)) if silu else norm(x)
    normed = norm(clip_view(x, num_frames))  # GroupNorm makes its input contiguous: the one copy
    if silu and not torch.is_grad_enabled() and not torch.compiler.is_compiling():  # dynamo breaks on out= views
        # the norm's dtype: under CUDA autocast GroupNorm runs in float32 while x is bf16, and out= does not downcast
        out = torch.empty_like(x, dtype=normed.dtype, memory_format=torch.contiguous_format)
        torch._C._nn.silu(normed, out=clip_view(out, num_frames))  # autograd refuses out=, hence no_grad only
        return out
    return fold_frames(F.silu(normed) if silu else normed)


def frame_pooled_norm_act(norm: nn.GroupNorm, activation: nn.Module, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Returns `activation(norm(x))` with frame-pooled statistics; SiLU (SD's) takes the fused path above."""
    if isinstance(activation, nn.SiLU):
        return frame_pooled_group_norm(norm, x, num_frames, silu=True)
    return activation(frame_pooled_group_norm(norm, x, num_frames))


_TABLES: dict[tuple, torch.Tensor] = {}  # (frames, dim, device, dtype) -> table; plain tensors only
_MAX_TABLES = 64


def _frame_embedding(num_frames: int, dim: int, device, dtype) -> torch.Tensor:
    position = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = position * inv_freq
    table = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1)[:, :dim]
    return table.to(dtype) if dtype is not None else table


def sinusoidal_frame_embedding(num_frames: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Returns the (num_frames, dim) table PE[f, 2i] = sin(f·10000^(-2i/dim)), PE[f, 2i+1] = cos(same).

    Interleaved sin/cos as in the release; diffusers' 1-D sin-cos helpers concatenate the halves instead.
    Tables are cached per (frames, dim, device, dtype), so a forward pass does not rebuild one per block (ten
    kernel launches each); under torch.compile, CUDA-graph capture or a tracing mode it is built afresh. Do not
    modify the returned tensor.
    """
    device = torch.device(device) if device is not None else torch.get_default_device()
    dtype = dtype if dtype is not None else torch.float32
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()  # filled only on replay
    if torch.compiler.is_compiling() or device.type == "meta" or capturing:
        return _frame_embedding(num_frames, dim, device, dtype)
    key = (num_frames, dim, device, dtype)
    table = _TABLES.get(key)
    if table is None:
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable later with autograd on
            table = _frame_embedding(num_frames, dim, device, dtype)
        if type(table) is torch.Tensor:  # not a FakeTensor or another subclass made under a tracing mode
            if len(_TABLES) >= _MAX_TABLES:
                _TABLES.pop(next(iter(_TABLES)))
            _TABLES[key] = table
    return table


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
        h = clip_view(x, num_frames)  # the first GroupNorm makes the one copy into the clip layout
        in_place = not torch.is_grad_enabled()  # SiLU over the norm's fresh output: no new buffer when inferring
        for k in range(0, len(self.convs), 4):
            norm, dropout, conv = self.convs[k], self.convs[k + 2], self.convs[k + 3]
            h = F.silu(norm(h), inplace=in_place)
            if self.training and dropout.p > 0:
                h = dropout(h)
            h = conv(h)
        if num_frames == 1:
            return x + 0 * fold_frames(h)
        return (clip_view(x, num_frames) + h).transpose(1, 2).flatten(0, 1)  # the add writes the folded layout
