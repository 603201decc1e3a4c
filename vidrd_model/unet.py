"""VidRD's video U-Net: Stable Diffusion's UNet2DConditionModel inflated with Temp-Conv and Temp-Attn layers.

Input is a clip batch (b, c, f, h, w). Inside, frames are folded into the batch, ((b f), c, h, w), so SD's spatial
layers (diffusers' ResnetBlock2D convs, Attention, FeedForward, Downsample2D, Upsample2D) run per frame unchanged.
What the release does differently, reproduced here (see ../shared/specs/golden/README.md):

- ResNet GroupNorms and the output GroupNorm pool their statistics over all frames of a clip;
- at every level the layer order is resnet → temp-conv → spatial transformer;
- Temp-Attn sits in each transformer block between cross-attention and the feed-forward, after a sinusoidal frame
  embedding is added to the residual stream — also for a single frame, where it adds PE[0] = [0, 1, 0, 1, …]
  (`temp_embed_single_frame=False` turns that quirk off, making F = 1 exactly the 2-D U-Net);
- single-frame inputs bypass Temp-Conv and Temp-Attn (x + 0·branch while training).

Parameter names equal the release's, so its checkpoints load without renaming (see checkpoints.py).
"""

import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.utils.checkpoint
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.activations import get_activation
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_3d_condition import UNet3DConditionOutput
from diffusers.models.upsampling import Upsample2D

from .checkpoints import load_diffusers_weights, load_pretrained_2d_weights, unet_config_from_2d
from .temporal import TemporalConvLayer, clip_view, frame_pooled_norm_act, sinusoidal_frame_embedding

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "DownBlock3D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock3D", "UpBlock3D")


@dataclass(frozen=True)
class LayerOptions:
    """Settings every level of the U-Net shares."""

    temb_channels: int
    norm_num_groups: int
    norm_eps: float
    act_fn: str
    cross_attention_dim: int
    use_linear_projection: bool
    upcast_attention: bool
    add_temp_conv: bool
    add_temp_attn: bool
    add_temp_embed: bool
    temp_embed_in_residual: bool
    temp_embed_single_frame: bool


class VideoResnetBlock(ResnetBlock2D):
    """SD's ResNet block run per frame, except that both GroupNorms pool over all frames of a clip."""

    def forward(self, x: torch.Tensor, temb_act: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`temb_act` is the time embedding after this block's nonlinearity: VideoUNet applies it once for all."""
        h = frame_pooled_norm_act(self.norm1, self.nonlinearity, x, num_frames)
        h = self.conv1(h)
        h = h + self.time_emb_proj(temb_act)[:, :, None, None]
        h = frame_pooled_norm_act(self.norm2, self.nonlinearity, h, num_frames)
        h = self.conv2(self.dropout(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        return out if self.output_scale_factor == 1 else out / self.output_scale_factor  # x / 1 is x: no kernel


def attend(attention: Attention, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """Returns `attention(x, encoder_hidden_states=context)`, through its processor directly when nothing wraps it.

    diffusers' `Attention.forward` runs `inspect.signature` on the processor at every call to vet keyword arguments
    we never pass: host time on a launch-bound GPU's critical path. `set_attn_processor`, fused QKV and PEFT adapters
    work either way (they replace the processor or wrap its linears). A module with hooks, a patched or compiled
    forward, or a wrapper (FSDP) goes through the normal call, so what wraps it still runs.
    """
    if _unwrapped(attention):
        return attention.processor(attention, x, encoder_hidden_states=context)
    return attention(x, encoder_hidden_states=context)


def _unwrapped(module: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    return (type(module) is Attention and "forward" not in module.__dict__
            and getattr(module, "_compiled_call_impl", None) is None
            and not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                     or module._backward_pre_hooks)
            and not (torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks
                     or torch_module._global_backward_hooks or torch_module._global_backward_pre_hooks))


class VideoTransformerBlock(nn.Module):
    """SD's transformer block (self-attn, cross-attn, GEGLU feed-forward) with Temp-Attn before the feed-forward."""

    def __init__(self, dim: int, num_heads: int, opts: LayerOptions):
        super().__init__()
        head_dim = dim // num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=num_heads, dim_head=head_dim, upcast_attention=opts.upcast_attention)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(
            dim,
            cross_attention_dim=opts.cross_attention_dim,
            heads=num_heads,
            dim_head=head_dim,
            upcast_attention=opts.upcast_attention,
        )
        self.temp_norm = self.temp_attn = None
        if opts.add_temp_attn:
            self.temp_norm = nn.LayerNorm(dim)
            self.temp_attn = Attention(dim, heads=num_heads, dim_head=head_dim, upcast_attention=opts.upcast_attention)
            nn.init.zeros_(self.temp_attn.to_out[0].weight)
            nn.init.zeros_(self.temp_attn.to_out[0].bias)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.add_temp_embed = opts.add_temp_embed
        self.temp_embed_in_residual = opts.temp_embed_in_residual
        self.temp_embed_single_frame = opts.temp_embed_single_frame

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = attend(self.attn1, self.norm1(x)) + x
        x = attend(self.attn2, self.norm2(x), context) + x
        if self.temp_attn is not None:
            x = self.temporal_attention(x, num_frames)
        return self.ff(self.norm3(x)) + x

    def temporal_attention(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Returns x after Temp-Attn: self-attention across frames at every spatial position, residual."""
        query = x
        if self.add_temp_embed and (num_frames > 1 or self.temp_embed_single_frame):
            table = sinusoidal_frame_embedding(num_frames, x.shape[-1], x.device, x.dtype)
            query = (x.unflatten(0, (-1, num_frames)) + table[:, None, :]).flatten(0, 1)  # PE[f] on every frame f
            if self.temp_embed_in_residual:
                x = query  # the release adds the embedding to the residual stream itself
        if num_frames == 1 and not torch.is_grad_enabled():
            return x
        tokens = x.shape[1]
        sequences = query.unflatten(0, (-1, num_frames)).transpose(1, 2).flatten(0, 1)  # (b d) f c: attend over frames
        branch = attend(self.temp_attn, self.temp_norm(sequences))
        branch = branch.unflatten(0, (-1, tokens)).transpose(1, 2)  # (b, f, d, c), a view
        if num_frames == 1:
            return x + 0 * branch.flatten(0, 1)
        return (x.unflatten(0, (-1, num_frames)) + branch).flatten(0, 1)  # the add writes the folded layout


class VideoTransformer(nn.Module):
    """SD's spatial transformer (GroupNorm → proj_in → block → proj_out, residual), per frame."""

    def __init__(self, channels: int, num_heads: int, opts: LayerOptions):
        super().__init__()
        self.use_linear_projection = opts.use_linear_projection
        self.norm = nn.GroupNorm(opts.norm_num_groups, channels, eps=1e-6)
        projection = nn.Linear if opts.use_linear_projection else lambda i, o: nn.Conv2d(i, o, 1)
        self.proj_in = projection(channels, channels)
        self.transformer_blocks = nn.ModuleList([VideoTransformerBlock(channels, num_heads, opts)])
        self.proj_out = projection(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        n, channels, height, width = x.shape
        h = self.norm(x)  # per frame, as in the release
        if not self.use_linear_projection:
            h = self.proj_in(h)
        h = h.permute(0, 2, 3, 1).reshape(n, height * width, channels)  # n (h w) c
        if self.use_linear_projection:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context, num_frames)
        if self.use_linear_projection:
            h = self.proj_out(h)
        h = h.unflatten(1, (height, width)).permute(0, 3, 1, 2)  # n c h w, a view
        if not self.use_linear_projection:
            h = self.proj_out(h)
        return x + h  # x first: the sum takes x's (contiguous) layout


class VideoLevel(nn.Module):
    """One resolution level: `resnets.j → temp_convs.j → attentions.j` for each layer j, the release's order."""

    def __init__(self, in_channels: list[int], out_channels: int, num_heads: int | None, opts: LayerOptions,
                 output_scale_factor: float = 1.0, num_attentions: int | None = None):
        super().__init__()
        self.resnets = nn.ModuleList(
            VideoResnetBlock(
                in_channels=c,
                out_channels=out_channels,
                temb_channels=opts.temb_channels,
                eps=opts.norm_eps,
                groups=opts.norm_num_groups,
                non_linearity=opts.act_fn,
                output_scale_factor=output_scale_factor,
            )
            for c in in_channels
        )
        self.temp_convs = None
        if opts.add_temp_conv:
            self.temp_convs = nn.ModuleList(TemporalConvLayer(out_channels) for _ in in_channels)
        self.attentions = None
        if num_heads is not None:
            count = len(in_channels) if num_attentions is None else num_attentions
            self.attentions = nn.ModuleList(VideoTransformer(out_channels, num_heads, opts) for _ in range(count))

    def layer(self, j: int, x, temb, context, num_frames: int) -> torch.Tensor:
        """Returns x after layer j of this level."""
        x = self.resnets[j](x, temb, num_frames)
        if self.temp_convs is not None:
            x = self.temp_convs[j](x, num_frames)
        if self.attentions is not None and j < len(self.attentions):
            x = self.attentions[j](x, context, num_frames)
        return x


class VideoDownBlock(VideoLevel):
    """A down level (CrossAttnDownBlock3D, or DownBlock3D when `num_heads` is None); returns its skip tensors."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, num_heads: int | None,
                 add_downsample: bool, downsample_padding: int, opts: LayerOptions):
        super().__init__([in_channels] + [out_channels] * (num_layers - 1), out_channels, num_heads, opts)
        self.downsamplers = None
        if add_downsample:
            self.downsamplers = nn.ModuleList(
                [Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=downsample_padding,
                              name="op")]
            )

    def forward(self, x, temb, context, num_frames: int):
        skips = ()
        for j in range(len(self.resnets)):
            x = self.layer(j, x, temb, context, num_frames)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class VideoMidBlock(VideoLevel):
    """The middle level (UNetMidBlock3DCrossAttn): resnet, temp-conv, transformer, resnet, temp-conv."""

    def __init__(self, channels: int, num_heads: int, output_scale_factor: float, opts: LayerOptions):
        super().__init__([channels, channels], channels, num_heads, opts, output_scale_factor, num_attentions=1)

    def forward(self, x, temb, context, num_frames: int):
        for j in range(len(self.resnets)):
            x = self.layer(j, x, temb, context, num_frames)
        return x


class VideoUpBlock(VideoLevel):
    """An up level (CrossAttnUpBlock3D, or UpBlock3D when `num_heads` is None); each resnet takes a skip tensor."""

    def __init__(self, in_channels: int, prev_output_channels: int, out_channels: int, num_layers: int,
                 num_heads: int | None, add_upsample: bool, opts: LayerOptions):
        resnet_in = [
            (prev_output_channels if j == 0 else out_channels) + (in_channels if j == num_layers - 1 else out_channels)
            for j in range(num_layers)
        ]
        super().__init__(resnet_in, out_channels, num_heads, opts)
        self.upsamplers = None
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])

    def forward(self, x, skips, temb, context, num_frames: int, upsample_size=None):
        for j in range(len(self.resnets)):
            x = torch.cat([x, skips[-1 - j]], dim=1)  # the deepest skip first
            x = self.layer(j, x, temb, context, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class VideoUNet(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin):
    """VidRD's video U-Net; `forward(sample (b, c, f, h, w), timestep, encoder_hidden_states (b, n, d))`.

    The defaults build the released model (SD 2.1-base + 22 Temp-Conv + 16 Temp-Attn, 1.18 B parameters).
    `num_attention_heads` is the number of heads per level (SD's `attention_head_dim`, which diffusers reads as
    heads); Temp-Attn uses the same heads as its block's spatial attention.
    Temporal switches: `add_temp_conv`, `add_temp_attn`, `add_temp_embed` (sinusoidal frame embedding);
    `temp_embed_in_residual` adds it to the residual stream as the release does (False: only to Temp-Attn's input);
    `temp_embed_single_frame` keeps the release's PE[0] for F = 1 inputs (False: F = 1 is the plain 2-D U-Net).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = 32,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        num_attention_heads: tuple[int, ...] = (5, 10, 20, 20),
        use_linear_projection: bool = True,
        upcast_attention: bool = False,
        add_temp_conv: bool = True,
        add_temp_attn: bool = True,
        add_temp_embed: bool = True,
        temp_embed_in_residual: bool = True,
        temp_embed_single_frame: bool = True,
    ):
        super().__init__()
        n = len(block_out_channels)
        if len(down_block_types) != n or len(up_block_types) != n or len(num_attention_heads) != n:
            raise ValueError(
                f"down_block_types, up_block_types and num_attention_heads need {n} entries "
                f"(one per block_out_channels), got {len(down_block_types)}, {len(up_block_types)}, "
                f"{len(num_attention_heads)}"
            )
        for kind in (*down_block_types, *up_block_types):
            if kind not in DOWN_BLOCK_TYPES + UP_BLOCK_TYPES:
                raise ValueError(f"unknown block type {kind!r}; expected one of {DOWN_BLOCK_TYPES + UP_BLOCK_TYPES}")

        time_embed_dim = block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim, act_fn=act_fn)
        self.time_act = get_activation(act_fn)  # no parameters: the ResNets' activation of the time embedding
        opts = LayerOptions(
            temb_channels=time_embed_dim,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            act_fn=act_fn,
            cross_attention_dim=cross_attention_dim,
            use_linear_projection=use_linear_projection,
            upcast_attention=upcast_attention,
            add_temp_conv=add_temp_conv,
            add_temp_attn=add_temp_attn,
            add_temp_embed=add_temp_embed,
            temp_embed_in_residual=temp_embed_in_residual,
            temp_embed_single_frame=temp_embed_single_frame,
        )

        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            in_ch, channels = channels, block_out_channels[i]
            self.down_blocks.append(
                VideoDownBlock(
                    in_ch, channels, layers_per_block,
                    num_heads=num_attention_heads[i] if kind.startswith("CrossAttn") else None,
                    add_downsample=i < n - 1, downsample_padding=downsample_padding, opts=opts,
                )
            )

        self.mid_block = VideoMidBlock(block_out_channels[-1], num_attention_heads[-1], mid_block_scale_factor, opts)

        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        reversed_heads = list(reversed(num_attention_heads))
        channels = reversed_channels[0]
        for i, kind in enumerate(up_block_types):
            prev_ch, channels = channels, reversed_channels[i]
            self.up_blocks.append(
                VideoUpBlock(
                    in_channels=reversed_channels[min(i + 1, n - 1)], prev_output_channels=prev_ch,
                    out_channels=channels, num_layers=layers_per_block + 1,
                    num_heads=reversed_heads[i] if kind.startswith("CrossAttn") else None,
                    add_upsample=i < n - 1, opts=opts,
                )
            )

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)
        self.gradient_checkpointing = False

    def _run(self, block: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        return_dict: bool = True,
    ) -> UNet3DConditionOutput | tuple[torch.Tensor]:
        """Returns the noise prediction (b, c, f, h, w) for clips `sample` at `timestep` given text embeddings.

        `timestep`: a number, a (b,) tensor, or a (b, f) tensor of one time step per frame.
        """
        if sample.ndim != 5:
            raise ValueError(f"`sample` must be (batch, channels, frames, height, width), got {tuple(sample.shape)}")
        batch, _, num_frames, height, width = sample.shape
        up_factor = 2 ** (len(self.up_blocks) - 1)
        forward_upsample_size = height % up_factor != 0 or width % up_factor != 0

        if not torch.is_tensor(timestep):
            dtype = torch.float32 if isinstance(timestep, float) else torch.int64
            timestep = torch.tensor([timestep], dtype=dtype, device=sample.device)
        elif timestep.ndim == 0:
            timestep = timestep[None].to(sample.device)
        if timestep.ndim == 2:  # (b, f): one time step per frame, for FIFO-Diffusion's diagonal denoising
            t_emb = self.time_proj(timestep.to(sample.device).expand(batch, num_frames).reshape(-1))
            temb = self.time_embedding(t_emb.to(dtype=sample.dtype))
        else:
            t_emb = self.time_proj(timestep.expand(batch)).to(dtype=sample.dtype)
            temb = self.time_embedding(t_emb).repeat_interleave(num_frames, dim=0)  # same time step for every frame
        context = encoder_hidden_states.repeat_interleave(num_frames, dim=0)  # same text for every frame
        temb = self.time_act(temb)  # each ResNet's time projection starts with it: applied once, not per ResNet

        x = sample.transpose(1, 2).flatten(0, 1)  # (b f) c h w
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        x = self.conv_in(x)

        skips = (x,)
        for block in self.down_blocks:
            x, block_skips = self._run(block, x, temb, context, num_frames)
            skips += block_skips
        x = self._run(self.mid_block, x, temb, context, num_frames)
        for i, block in enumerate(self.up_blocks):
            block_skips, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if forward_upsample_size and i < len(self.up_blocks) - 1 else None
            x = self._run(block, x, block_skips, temb, context, num_frames, upsample_size)

        x = frame_pooled_norm_act(self.conv_norm_out, self.conv_act, x, num_frames)
        x = self.conv_out(x)
        out = clip_view(x, num_frames)  # b c f h w, a view
        if not return_dict:
            return (out,)
        return UNet3DConditionOutput(sample=out)

    @classmethod
    def from_pretrained_2d(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str | None = "unet",
        variant: str | None = None,
        **temporal_config,
    ) -> "VideoUNet":
        """Returns a VideoUNet holding an SD 1.x / 2.x diffusers UNet's weights, temporal layers at their init.

        `pretrained_model_name_or_path` is an SD pipeline folder or Hub id (use `subfolder=None` for a bare UNet
        folder); `temporal_config` sets the temporal switches (defaults: the released model's).
        """
        from diffusers import UNet2DConditionModel

        config_2d = UNet2DConditionModel.load_config(pretrained_model_name_or_path, subfolder=subfolder)
        model = cls(**unet_config_from_2d(config_2d, **temporal_config))
        state_dict = load_diffusers_weights(pretrained_model_name_or_path, subfolder, variant)
        load_pretrained_2d_weights(model, state_dict, f"{pretrained_model_name_or_path} U-Net")
        return model.eval()  # as diffusers' from_pretrained: dropout off until a trainer calls .train()
