"""Fine-tuning the temporal VAE decoder (`vidrd-train vae`): only the decoder's Temp-Conv layers train.

One step: a clip's F frames → frozen encoder → latents (sampled from the posterior) → decoder, whose Temp-Conv
layers see all F frames → reconstruction. Loss = pixel L1 (or L2) + `lpips_weight` · LPIPS (VGG-16), LPIPS only
when its weights are given as local files (`lpips_backbone`, `lpips_linear`; nothing is downloaded).

Why no GAN term: the release hints at taming-transformers' LPIPS + patch-discriminator objective, the one SD's VAE
was trained with. We leave the discriminator out. Only the zero-initialised Temp-Conv layers train, so training
starts exactly at SD's adversarially trained decoder and the spatial layers that make texture stay frozen; what the
temporal layers learn is consistency across frames, which a per-frame patch discriminator does not judge. A GAN
would add a second model, its own optimizer and schedule, and its instability, for little gain there. L1 keeps
each pixel faithful; LPIPS, when available, keeps perceptual detail.

The saved `model/` folder is a `TemporalAutoencoderKL`: `vidrd-train train --vae RUN/model` puts it into the
trained model, and `vidrd-sample --base SD --vidrd-ckpt ModelT2V.pth --vae RUN/model` samples the release with it.
Loop, checkpoints and resume are the U-Net trainer's (train.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .data import VIDEO, BatchPlan, DataError, ManifestClips, kind_pools, read_rows
from .train import finish, fit, make_optimizer, resume, start_run
from .train_config import ConfigError, VaeTrainConfig, check_vae_config, save_config

log = logging.getLogger(__name__)

class LPIPS(nn.Module):
    """LPIPS distance (Zhang et al. 2018), VGG-16 variant: per-layer unit-normalised feature differences, weighted.

    Built from state dicts (`from_files` reads the two released weight files), so nothing is downloaded. Inputs are
    images in [-1, 1]; returns one distance per image, (n,).
    """

    CHANNELS = (64, 128, 256, 512, 512)
    SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # VGG-16 `features` up to relu1_2 … relu5_3

    def __init__(self, features_state: dict[str, torch.Tensor], linear_state: dict[str, torch.Tensor]):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["D"])  # VGG-16's `features`, without building its classifier
        features.load_state_dict(features_state)
        self.slices = nn.ModuleList(features[a:b] for a, b in self.SLICES)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS)
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(linear_state[f"lin{i}.model.1.weight"])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.requires_grad_(False).eval()

    @classmethod
    def from_files(cls, backbone: str, linear: str) -> "LPIPS":
        """Returns LPIPS from torchvision's VGG-16 weights file and LPIPS' v0.1 `vgg.pth` (torch.load, weights only)."""
        state = torch.load(backbone, map_location="cpu", weights_only=True)
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        return cls(features, torch.load(linear, map_location="cpu", weights_only=True))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        distance = 0.0
        for block, lin in zip(self.slices, self.lins):
            x, y = block(x), block(y)
            nx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            distance = distance + lin((nx - ny) ** 2).mean(dim=(2, 3))
        return distance.flatten()


def decoder_temporal_parameters(vae: nn.Module) -> dict[str, nn.Parameter]:
    """Returns the decoder's Temp-Conv parameters, by name: the only ones `vidrd-train vae` trains."""
    return {n: p for n, p in vae.named_parameters() if n.startswith("decoder.") and ".temp_convs." in n}


def reconstruction_loss(vae, batch: dict, config: VaeTrainConfig, lpips: LPIPS | None, device) -> torch.Tensor:
    """Returns pixel L1/L2 (+ weighted LPIPS) between the batch's frames and their reconstruction."""
    pixels = batch["pixel_values"].to(device, non_blocking=True)  # (b, f, 3, H, W) in [-1, 1]
    frames = rearrange(pixels, "b f c h w -> (b f) c h w")
    reconstruction = vae(frames, num_frames=pixels.shape[1], sample_posterior=config.sample_posterior).sample
    reconstruction = reconstruction.float()
    if config.pixel_loss == "l1":
        loss = F.l1_loss(reconstruction, frames)
    else:
        loss = F.mse_loss(reconstruction, frames)
    if lpips is not None:
        loss = loss + config.lpips_weight * lpips(reconstruction, frames).mean()
    return loss


def load_clips(config: VaeTrainConfig, num_processes: int, process_index: int):
    """Returns the clips dataset (rows of `config.kinds`, captions not needed) and its `BatchPlan`."""
    rows, left_out = read_rows(config.manifests, config.root, split=config.train_split, require_caption=False,
                                allow_partial=config.allow_partial)
    rows = rows.filter(pc.is_in(rows["kind"], pa.array(config.kinds)))
    if rows.num_rows == 0:
        raise DataError(f"no {' or '.join(config.kinds)} rows in {', '.join(config.manifests)} ({dict(left_out)})")
    plan = BatchPlan(kind_pools(rows), {VIDEO: config.batch_size}, 0.0, config.seed, num_processes, process_index)
    dataset = ManifestClips(rows, config.resolution, config.num_frames, config.sample_fps, 0.0, config.seed)
    log.info("training clips: %d; left out: %s", rows.num_rows, dict(left_out))
    return dataset, plan


def train_vae(config: VaeTrainConfig) -> Path:
    """Fine-tunes the decoder's temporal layers as `config` says; returns `RUN/model` (a TemporalAutoencoderKL)."""
    from accelerate.utils import set_seed

    from .vae import TemporalAutoencoderKL

    check_vae_config(config)
    accelerator, _, run, checkpoint, order = start_run(config)
    device = accelerator.device
    dataset, plan = load_clips(config, accelerator.num_processes, accelerator.process_index)
    set_seed(config.seed)

    vae = TemporalAutoencoderKL.from_pretrained_2d(config.vae) if config.vae else \
        TemporalAutoencoderKL.from_pretrained_2d(config.pretrained_model, subfolder="vae")
    if not vae.config.add_temp_conv:
        raise ConfigError("this VAE has no temporal layers (add_temp_conv = false)")
    trainable = decoder_temporal_parameters(vae)
    vae.requires_grad_(False)
    for param in trainable.values():
        param.requires_grad_(True)
    vae.float().to(device).train()
    if config.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    lpips = None
    if config.lpips_backbone:
        lpips = LPIPS.from_files(config.lpips_backbone, config.lpips_linear).to(device)
    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        save_config(config, run / "config.toml")
    optimizer, lr_scheduler = make_optimizer(config, list(trainable.values()))
    set_seed(config.seed, device_specific=True)

    state = resume(accelerator, checkpoint, order, trainable, optimizer, lr_scheduler, None)
    last = fit(config, accelerator, vae, trainable, optimizer, lr_scheduler, None,
               lambda model, batch: reconstruction_loss(model, batch, config, lpips, device), dataset, plan, state,
               write_model=lambda target: vae.save_pretrained(target, safe_serialization=True))
    return finish(accelerator, run, last)
