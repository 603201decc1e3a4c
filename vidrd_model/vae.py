"""VidRD's temporal-aware VAE: SD's AutoencoderKL with a Temp-Conv after every ResNet of the decoder's up blocks.

The encoder is SD's, unchanged. The decoder mixes information across the `num_frames` consecutive latent rows of
each clip. The release never passes the frame count when it decodes (its `decode_latents` calls `vae.decode(z)`,
whose `num_frames` defaults to 1), so its fine-tuned temporal layers never run at inference; ours run whenever
`num_frames > 1`. `decode(z, num_frames=1)` reproduces the release's frame-by-frame output.
"""

import os

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from .checkpoints import load_diffusers_weights, load_pretrained_2d_weights, rename_legacy_vae_keys
from .temporal import TemporalConvLayer


class TemporalAutoencoderKL(AutoencoderKL):
    """AutoencoderKL whose decoder has a 3-stage Temp-Conv (last conv zero-initialised) after each up-block ResNet.

    Keys equal the release's `vae_finetuned` ones (`decoder.up_blocks.i.temp_convs.j.convs.K`), with today's
    diffusers names for the mid-block attention. `add_temp_conv=False` is a plain AutoencoderKL.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",),
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",),
        block_out_channels: tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
        add_temp_conv: bool = True,
    ):
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            latent_channels=latent_channels,
            norm_num_groups=norm_num_groups,
            sample_size=sample_size,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            latents_mean=latents_mean,
            latents_std=latents_std,
            force_upcast=force_upcast,
            use_quant_conv=use_quant_conv,
            use_post_quant_conv=use_post_quant_conv,
            mid_block_add_attention=mid_block_add_attention,
        )
        for up_block in self.decoder.up_blocks:
            up_block.temp_convs = None
            if add_temp_conv:
                up_block.temp_convs = nn.ModuleList(
                    TemporalConvLayer(resnet.out_channels, num_layers=3) for resnet in up_block.resnets
                )

    def _decode_clips(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Returns decoded frames for frame-contiguous latent rows, Temp-Conv mixing each clip's `num_frames` rows.

        With gradient checkpointing on (`enable_gradient_checkpointing()`, diffusers' switch) and gradients enabled,
        each ResNet + Temp-Conv pair and each upsampler is recomputed in the backward pass instead of keeping its
        activations (the RNG state is replayed, so dropout draws the same masks and the gradients are the same).
        """
        decoder = self.decoder
        checkpointing = torch.is_grad_enabled() and decoder.gradient_checkpointing

        def run(function, *args):
            return checkpoint(function, *args, use_reentrant=False) if checkpointing else function(*args)

        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        x = run(decoder.mid_block, decoder.conv_in(z))
        for up_block in decoder.up_blocks:
            for j, resnet in enumerate(up_block.resnets):
                temp_conv = up_block.temp_convs[j] if up_block.temp_convs is not None else None
                x = run(_resnet_then_temp_conv, resnet, temp_conv, x, num_frames)
            if up_block.upsamplers is not None:
                for upsampler in up_block.upsamplers:
                    x = run(upsampler, x)
        return decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(x)))

    @apply_forward_hook
    def decode(
        self,
        z: torch.Tensor,
        num_frames: int,
        decode_chunk_size: int | None = None,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Returns frames ((b f), 3, H, W) for latents ((b f), c, h, w) laid out clip by clip, frames contiguous.

        `num_frames` is the clip length F the temporal layers see; 1 decodes every row on its own (images, or the
        release's behaviour for videos). `decode_chunk_size` k decodes at most k frames of each clip at a time to
        bound memory; for F > 1 a chunk's temporal layers then see only that chunk (exact when k ≥ F). After
        `enable_slicing()` clips are decoded one at a time (rows one at a time when F = 1), as diffusers' VAEs slice
        a batch. No 1/scaling_factor is applied here.
        """
        if num_frames < 1 or z.shape[0] % num_frames:
            raise ValueError(f"latent rows ({z.shape[0]}) must be a whole number of clips of num_frames={num_frames}")
        if self.use_tiling:
            raise ValueError("tiled decoding is not supported by the temporal VAE; use `decode_chunk_size`")
        if decode_chunk_size is not None and decode_chunk_size < 1:
            raise ValueError(f"`decode_chunk_size` must be ≥ 1, got {decode_chunk_size}")
        slices = z.split(num_frames) if self.use_slicing else (z,)
        decoded = torch.cat([self._decode_rows(rows, num_frames, decode_chunk_size) for rows in slices])
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    def _decode_rows(self, z: torch.Tensor, num_frames: int, decode_chunk_size: int | None) -> torch.Tensor:
        if num_frames == 1:
            chunks = z.split(decode_chunk_size) if decode_chunk_size else (z,)
            decoded = torch.cat([self._decode_clips(chunk, 1) for chunk in chunks])
        else:
            clips = z.unflatten(0, (-1, num_frames))  # (b, f, c, h, w)
            step = decode_chunk_size or num_frames
            parts = [
                self._decode_clips(part.flatten(0, 1), part.shape[1]).unflatten(0, (clips.shape[0], -1))
                for part in clips.split(step, dim=1)
            ]
            decoded = torch.cat(parts, dim=1).flatten(0, 1)
        return decoded

    def forward(self, sample: torch.Tensor, num_frames: int = 1, sample_posterior: bool = False,
                return_dict: bool = True, generator: torch.Generator | None = None):
        """Returns the reconstruction of frames `sample` ((b f), 3, H, W) through encoder and temporal decoder."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z, num_frames=num_frames, return_dict=return_dict)

    @classmethod
    def from_pretrained_2d(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        variant: str | None = None,
        **config_overrides,
    ) -> "TemporalAutoencoderKL":
        """Returns the temporal VAE loaded from an SD VAE folder, the release's `vae_finetuned`, or our own.

        Pass an SD pipeline folder or Hub id with `subfolder="vae"`.
        Temporal weights absent from the file (a plain SD VAE) keep their init, under which decoding equals SD's.
        diffusers-0.14 attention names (query/key/value/proj_attn) are renamed. `add_temp_conv` defaults to True
        unless the folder's config sets it.
        """
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder)
        model = cls.from_config(config, **config_overrides)
        state_dict = rename_legacy_vae_keys(load_diffusers_weights(pretrained_model_name_or_path, subfolder, variant))
        load_pretrained_2d_weights(model, state_dict, f"{pretrained_model_name_or_path} VAE")
        return model.eval()  # as diffusers' from_pretrained: dropout off until a trainer calls .train()


def _resnet_then_temp_conv(resnet: nn.Module, temp_conv: nn.Module | None, x: torch.Tensor,
                           num_frames: int) -> torch.Tensor:
    """Returns one decoder ResNet's output, mixed over frames by its Temp-Conv (the unit gradient checkpointing keeps)."""
    x = resnet(x, temb=None)
    return temp_conv(x, num_frames) if temp_conv is not None else x
