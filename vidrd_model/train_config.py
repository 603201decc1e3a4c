"""Training configs as data: every setting of `vidrd-train train` and `vidrd-train vae`, its default and its help.

A config is a TOML file of these keys (tables only group them: `[data] resolution = 256` is `resolution = 256`);
every key is also a CLI option (`resolution` ↔ `--resolution`). `load_config` applies defaults, then the file, then
the options; `save_config` writes the resolved config into the run directory, and `load_config` reads it back.
Relative paths, in a file as on the command line, are taken from the current directory.

This module imports neither torch nor the model, so the CLI's `--help` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path

PARAM_MODES = ("paper", "temporal", "full")  # vidrd_model.params.TRAINABLE_MODULES, without importing torch
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine"}  # ours → diffusers' get_scheduler names
# Config keys that fix which sample comes at which step: a checkpoint resumes only under the same values.
DATA_ORDER_KEYS = ("manifests", "root", "train_split", "seed", "batch_size", "image_batch_size", "image_ratio",
                   "num_frames", "sample_fps", "resolution", "uncond_prob", "kinds", "latents")
CLIP_POLICIES = ("center", "random")  # which clip(s) of a video row the latent cache encodes
PIXEL_LOSSES = ("l1", "l2")


class ConfigError(Exception):
    """A setting that cannot work: an unknown key, a wrong type or value, a checkpoint that does not fit the run."""


def option(default, help: str):
    """A config field: its default and its one-line help (shown by `--help` and in the README)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def field_types(cls) -> dict[str, type]:
    """Returns each config field's plain type: str, int, float, bool or list (`X | None` gives X)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
        out[f.name] = list if typing.get_origin(base) is list else base
    return out


def load_config(cls, toml_path: str | os.PathLike | None = None, overrides: dict | None = None):
    """Returns a `cls` config: its defaults, then the TOML file's keys, then `overrides` (the CLI's).

    Tables in the file only group keys (`[data] resolution = 256` is `resolution = 256`). Relative paths, in the
    file as on the command line, are taken from the current directory.
    """
    kinds = field_types(cls)
    values = {}
    if toml_path is not None:
        toml_path = Path(toml_path)
        try:
            document = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: {exc}") from None
        values.update(_flatten(document, toml_path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in values.items():
        if key not in kinds:
            raise ConfigError(f"unknown config key {key!r}")
        values[key] = _check_type(key, value, kinds[key])
    return cls(**values)


def _flatten(document: dict, where: Path):
    seen = set()
    for key, value in document.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for k, v in items:
            if isinstance(v, dict):
                raise ConfigError(f"{where}: tables nest one level at most ([{key}.{k}])")
            if k in seen:
                raise ConfigError(f"{where}: key {k!r} is given twice")
            seen.add(k)
            yield k, v


def _check_type(key: str, value, kind: type):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    if kind is not list and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    wanted = "a list of strings" if kind is list else kind.__name__
    raise ConfigError(f"config key {key!r} must be {wanted}, got {value!r}")


def save_config(config, path: str | os.PathLike) -> None:
    """Writes `config` as TOML that `load_config` reads back to the same values (None values are left out)."""
    # tomllib only reads; our values (str, int, float, bool, list of str) written as JSON literals are valid TOML.
    lines = [f"{f.name} = {json.dumps(getattr(config, f.name))}" for f in dataclasses.fields(config)
             if getattr(config, f.name) is not None]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the two configs


@dataclass
class TrainConfig:
    """Every setting of a `vidrd-train train` run; TOML keys and `--kebab-case` options have these names."""

    # model
    pretrained_model: str | None = option(None, "Stable Diffusion 2.x/1.x diffusers folder (or cached Hub id): "
                                                "text encoder, tokenizer, VAE, scheduler, and the U-Net's 2D weights.")
    unet: str | None = option(None, "Start from this VideoUNet folder (e.g. RUN/checkpoint-N/model/unet) instead "
                                    "of the base model's 2D U-Net with fresh temporal layers.")
    vae: str | None = option(None, "Temporal VAE folder put in the saved model (from `vidrd-train vae`); "
                                   "default: the base model's VAE.")
    train_mode: str = option("paper", "Trainable U-Net parameters: paper (temporal layers + spatial attention), "
                                      "temporal, or full.")
    gradient_checkpointing: bool = option(False, "Recompute each U-Net block in the backward pass (less memory).")
    # data
    manifests: list[str] = option([], "Manifest folders to train on (rows with status ok; repeat the option).")
    root: str | None = option(None, "Folder the manifests' relative media paths are under (default: their own).")
    allow_partial: bool = option(False, "Train on a manifest with missing parts anyway (with a warning); without "
                                        "it an incomplete manifest is refused.")
    train_split: str = option("train", "Rows of this `split` train (manifests without a split column: all rows).")
    val_split: str = option("val", "Rows of this `split` give the validation loss.")
    resolution: int = option(256, "Frames are resized (short side) and centre-cropped to this square size.")
    num_frames: int = option(8, "Frames per video sample.")
    sample_fps: float = option(8.0, "Frame rate video clips are sampled at (a shorter clip is spread evenly).")
    batch_size: int = option(1, "Video samples per batch, per process.")
    image_batch_size: int = option(4, "Image samples per batch, per process (images are F = 1: cheaper).")
    image_ratio: float | None = option(None, "Fraction of steps that train on an image batch "
                                             "(default: the image rows' share of all rows).")
    uncond_prob: float = option(0.1, "Probability a caption is dropped to \"\" (classifier-free guidance).")
    num_workers: int = option(2, "DataLoader worker processes (0: decode in the training process).")
    # optimisation
    max_steps: int = option(1000, "Optimizer steps to train for.")
    learning_rate: float = option(5e-5, "Peak learning rate (AdamW).")
    lr_schedule: str = option("constant", "constant or cosine, both after a linear warmup.")
    lr_warmup_steps: int = option(100, "Steps of linear warmup from 0.")
    adam_beta1: float = option(0.9, "AdamW beta1.")
    adam_beta2: float = option(0.999, "AdamW beta2.")
    adam_weight_decay: float = option(1e-2, "AdamW weight decay.")
    adam_epsilon: float = option(1e-8, "AdamW epsilon.")
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this (0: no clipping).")
    gradient_accumulation_steps: int = option(1, "Batches per optimizer step.")
    mixed_precision: str = option("no", "no, fp16 or bf16 (frozen text encoder and VAE are cast to it).")
    ema: bool = option(False, "Keep an exponential moving average of the trained weights; the saved model uses it.")
    ema_decay: float = option(0.9999, "EMA decay (warmed up as (1+n)/(10+n)).")
    seed: int = option(0, "Seed of the data order, augmentation and noise.")
    # run
    output_dir: str = option("runs/vidrd", "Run directory: config.toml, checkpoints, log.csv, loss.png, model/.")
    checkpoint_every: int = option(500, "Save a checkpoint every this many steps (and at the end).")
    checkpoints_total_limit: int | None = option(None, "Keep only the newest this many checkpoints.")
    resume: str | None = option(None, "latest (the run's newest checkpoint, if any) or a checkpoint folder.")
    log_every: int = option(10, "Write metrics every this many steps.")
    validate_every: int = option(0, "Validation loss and videos every this many steps (0: never).")
    validation_prompts: list[str] = option([], "Prompts of the validation videos (repeat the option).")
    validation_steps: int = option(25, "DDIM steps of a validation video.")
    validation_guidance: float = option(7.5, "Classifier-free guidance scale of the validation videos.")
    validation_samples: int = option(16, "Validation rows of each kind the validation loss averages over.")
    progress: bool = option(True, "Show a progress bar.")
    latents: str | None = option(None, "Train on this latent cache (from `vidrd-train cache`) instead of decoding "
                                       "and encoding every sample; refused unless built for this config.")
    unet_variant: str = option("release", "From plain SD: release (the release's frame embedding in the residual "
                                          "stream, PE[0] on single frames) or clean (frame embedding only into "
                                          "Temp-Attn; F = 1 is exactly the 2-D U-Net).")
    lora_rank: int = option(0, "Train only LoRA adapters of this rank on every attention projection (0: off); "
                               "the model folder then holds lora/ beside the unchanged U-Net.")
    lora_alpha: float | None = option(None, "LoRA alpha (default: the rank, a scale of 1).")
    compile: bool = option(False, "Compile the U-Net with torch.compile (the first steps compile; then faster).")
    compile_mode: str | None = option(None, "torch.compile mode: default, reduce-overhead, max-autotune, "
                                            "max-autotune-no-cudagraphs.")


# VideoUNet's temporal switches per variant (`unet_variant`, used when the U-Net starts from plain SD 2.1)
UNET_VARIANTS = {
    "release": {"temp_embed_in_residual": True, "temp_embed_single_frame": True},
    "clean": {"temp_embed_in_residual": False, "temp_embed_single_frame": False},
}
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_train_config(config: TrainConfig) -> None:
    """Raises ConfigError naming the first setting that cannot work, before anything is loaded."""
    if not config.pretrained_model:
        raise ConfigError("pretrained_model is required (a Stable Diffusion diffusers folder)")
    if config.train_mode not in PARAM_MODES:
        raise ConfigError(f"train_mode must be one of {PARAM_MODES}, got {config.train_mode!r}")
    if config.unet_variant not in UNET_VARIANTS:
        raise ConfigError(f"unet_variant must be one of {', '.join(UNET_VARIANTS)}, got {config.unet_variant!r}")
    if config.lora_rank < 0:
        raise ConfigError(f"lora_rank must be ≥ 0 (0: no LoRA), got {config.lora_rank}")
    if config.compile_mode not in COMPILE_MODES:
        raise ConfigError(f"compile_mode must be one of {', '.join(m for m in COMPILE_MODES if m)}, "
                          f"got {config.compile_mode!r}")
    _check_shared(config, ("image_batch_size", "validation_steps"))
    if config.image_ratio is not None and not 0.0 <= config.image_ratio <= 1.0:
        raise ConfigError(f"image_ratio must be in [0, 1], got {config.image_ratio}")
    if not 0.0 <= config.uncond_prob <= 1.0:
        raise ConfigError(f"uncond_prob must be in [0, 1], got {config.uncond_prob}")
    if not 0.0 < config.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must be in (0, 1), got {config.ema_decay}")
    if config.validate_every < 0:
        raise ConfigError(f"validate_every must be ≥ 0, got {config.validate_every}")


@dataclass
class VaeTrainConfig:
    """Every setting of a `vidrd-train vae` run; TOML keys and `--kebab-case` options have these names."""

    # model
    pretrained_model: str | None = option(None, "Stable Diffusion diffusers folder whose `vae/` starts the "
                                                "decoder (unless `vae` is given).")
    vae: str | None = option(None, "Start from this temporal VAE folder instead (ours or the release's "
                                   "vae_finetuned).")
    pixel_loss: str = option("l1", "l1 or l2 between frames and their reconstruction.")
    lpips_backbone: str | None = option(None, "torchvision VGG-16 weights file (vgg16-397923af.pth) for LPIPS.")
    lpips_linear: str | None = option(None, "LPIPS v0.1 VGG linear-layer weights file (lpips/weights/v0.1/vgg.pth).")
    lpips_weight: float = option(1.0, "Weight of LPIPS in the loss (when its files are given).")
    sample_posterior: bool = option(True, "Decode latents sampled from the encoder's posterior (else its mode).")
    # data
    manifests: list[str] = option([], "Manifest folders to train on (repeat the option).")
    root: str | None = option(None, "Folder the manifests' relative media paths are under (default: their own).")
    allow_partial: bool = option(False, "Train on a manifest with missing parts anyway (with a warning); without "
                                        "it an incomplete manifest is refused.")
    train_split: str = option("train", "Rows of this `split` train (manifests without a split column: all rows).")
    kinds: list[str] = option(["video_clip"], "Row kinds to train on: video_clip, pseudo_video.")
    resolution: int = option(256, "Frames are resized (short side) and centre-cropped to this square size.")
    num_frames: int = option(8, "Frames per clip: what the decoder's temporal layers see together.")
    sample_fps: float = option(8.0, "Frame rate clips are sampled at.")
    batch_size: int = option(1, "Clips per batch, per process.")
    num_workers: int = option(2, "DataLoader worker processes.")
    # optimisation
    max_steps: int = option(1000, "Optimizer steps to train for.")
    learning_rate: float = option(1e-4, "Peak learning rate (AdamW).")
    lr_schedule: str = option("constant", "constant or cosine, both after a linear warmup.")
    lr_warmup_steps: int = option(100, "Steps of linear warmup from 0.")
    adam_beta1: float = option(0.9, "AdamW beta1.")
    adam_beta2: float = option(0.999, "AdamW beta2.")
    adam_weight_decay: float = option(1e-2, "AdamW weight decay.")
    adam_epsilon: float = option(1e-8, "AdamW epsilon.")
    max_grad_norm: float = option(1.0, "Clip the gradient norm to this (0: no clipping).")
    gradient_accumulation_steps: int = option(1, "Batches per optimizer step.")
    mixed_precision: str = option("no", "no, fp16 or bf16 (autocast).")
    seed: int = option(0, "Seed of the data order, augmentation and posterior samples.")
    # run
    output_dir: str = option("runs/vae", "Run directory: config.toml, checkpoints, log.csv, loss.png, model/.")
    checkpoint_every: int = option(500, "Save a checkpoint every this many steps (and at the end).")
    checkpoints_total_limit: int | None = option(None, "Keep only the newest this many checkpoints.")
    resume: str | None = option(None, "latest (the run's newest checkpoint, if any) or a checkpoint folder.")
    log_every: int = option(10, "Write metrics every this many steps.")
    progress: bool = option(True, "Show a progress bar.")
    gradient_checkpointing: bool = option(True, "Recompute each decoder ResNet + Temp-Conv in the backward pass "
                                                "(less memory: only the blocks' boundaries are kept).")


def check_vae_config(config: VaeTrainConfig) -> None:
    """Raises ConfigError naming the first setting that cannot work, before anything is loaded."""
    if not (config.pretrained_model or config.vae):
        raise ConfigError("pretrained_model or vae is required (the VAE to start from)")
    _check_shared(config, ())
    if config.pixel_loss not in PIXEL_LOSSES:
        raise ConfigError(f"pixel_loss must be one of {PIXEL_LOSSES}, got {config.pixel_loss!r}")
    if (config.lpips_backbone is None) != (config.lpips_linear is None):
        raise ConfigError("LPIPS needs both lpips_backbone and lpips_linear")
    if unknown := set(config.kinds) - {"video_clip", "pseudo_video"}:
        raise ConfigError(f"kinds may hold video_clip and pseudo_video, got {sorted(unknown)}")


def _check_inputs(config) -> None:
    """Checks the settings every config here has: manifests, mixed precision, resolution."""
    if not config.manifests:
        raise ConfigError("manifests is required (one or more manifest folders)")
    if config.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {config.mixed_precision!r}")
    if config.resolution % 8:
        raise ConfigError(f"resolution must be a multiple of 8, got {config.resolution}")


def _check_shared(config, more_positive_keys: tuple[str, ...]) -> None:
    """Checks the settings both training configs have."""
    _check_inputs(config)
    if config.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {sorted(LR_SCHEDULES)}, got {config.lr_schedule!r}")
    for key in ("num_frames", "batch_size", "max_steps", "gradient_accumulation_steps", "checkpoint_every",
                "log_every", *more_positive_keys):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be ≥ 1, got {getattr(config, key)}")
    if config.checkpoints_total_limit is not None and config.checkpoints_total_limit < 1:
        raise ConfigError(f"checkpoints_total_limit must be ≥ 1, got {config.checkpoints_total_limit}")
    if config.num_workers < 0 or config.lr_warmup_steps < 0:
        raise ConfigError("num_workers and lr_warmup_steps must be ≥ 0")


@dataclass
class CacheConfig:
    """Every setting of `vidrd-train cache`: what is encoded (it must match the training config that reads it)."""

    manifests: list[str] = option([], "Manifest folders whose ok rows are encoded.")
    out: str | None = option(None, "Cache folder (created; a run killed part-way resumes into it).")
    pretrained_model: str | None = option(None, "Stable Diffusion diffusers folder: its VAE encodes frames, its "
                                                "text encoder captions (as `vidrd-train train` would).")
    vae: str | None = option(None, "Temporal VAE folder to encode with instead of the base model's (as "
                                   "`vidrd-train train --vae`).")
    root: str | None = option(None, "Folder the manifests' relative media paths are under (default: their own).")
    allow_partial: bool = option(False, "Encode a manifest with missing parts anyway.")
    train_split: str = option("train", "Rows of this `split` are encoded (manifests without a split column: all).")
    resolution: int = option(256, "Frames are resized (short side) and centre-cropped to this square size.")
    num_frames: int = option(8, "Frames per video sample.")
    sample_fps: float = option(8.0, "Frame rate video clips are sampled at.")
    clip_policy: str = option("random", "Which clips of a video row: random (clips_per_row seeded random starts, "
                                        "as training draws them) or center (the centred clip).")
    clips_per_row: int = option(4, "Clips encoded per video_clip row with clip_policy random; training draws one "
                                   "of them per sample.")
    seed: int = option(0, "Seed of the random clip starts.")
    shard_size: int = option(256, "Rows per shard (the unit written atomically, resumed and spread over processes).")
    num_workers: int = option(2, "DataLoader worker processes decoding clips (0: decode in the encoding process).")
    mixed_precision: str = option("no", "no, fp16 or bf16: the dtype the VAE and text encoder run in (stored "
                                        "latents are float32 either way).")


def check_cache_config(config: CacheConfig) -> None:
    """Raises ConfigError naming the first setting that cannot work, before anything is loaded."""
    _check_inputs(config)
    if not config.out:
        raise ConfigError("out is required (the cache folder)")
    if not config.pretrained_model:
        raise ConfigError("pretrained_model is required (its text encoder encodes the captions, its VAE the frames)")
    if config.clip_policy not in CLIP_POLICIES:
        raise ConfigError(f"clip_policy must be one of {CLIP_POLICIES}, got {config.clip_policy!r}")
    for key in ("num_frames", "clips_per_row", "shard_size"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be ≥ 1, got {getattr(config, key)}")
    if config.sample_fps <= 0 or config.num_workers < 0:
        raise ConfigError("sample_fps must be > 0 and num_workers ≥ 0")
