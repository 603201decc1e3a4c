"""Loading weights from elsewhere: SD diffusers folders, the release's ModelT2V.pth and vae_finetuned, their configs.

Key mapping from the release (anonymous0x233/ReuseAndDiffuse, diffusers 0.14, transformers 4.30) to ours:

| release key                                     | ours                                                      |
|-------------------------------------------------|-----------------------------------------------------------|
| `unet.<k>` (all 1,150 keys)                     | `<k>` unchanged: our U-Net keeps the release's names      |
| `text_encoder.text_model.<k>`                   | `text_model.<k>` (transformers < 5), `<k>` (≥ 5)          |
| `text_encoder.text_model.embeddings.position_ids` | dropped where it is a non-persistent buffer (≥ 4.31)    |
| `vae.*`, `clip.*`, Lightning's other entries    | ignored, as the release does when `vae_finetuned` is used |
| VAE `{en,de}coder.mid_block.attentions.0.{query,key,value,proj_attn}.*` | `….{to_q,to_k,to_v,to_out.0}.*` |

Every other key matches by name and shape. Loads are strict: a key missing or left over raises, except that loading
plain SD weights (`from_pretrained_2d`) leaves the temporal keys, which SD lacks, at their init.
Pickles load with `torch.load(weights_only=True)` only.
"""

import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TEMPORAL_KEY_MARK = "temp_"  # every key the release adds to SD's U-Net and VAE contains it

_LEGACY_VAE_ATTENTION = re.compile(r"^((?:encoder|decoder)\.mid_block\.attentions\.\d+)\.(query|key|value|proj_attn)\.")
_LEGACY_VAE_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

# U-Net config keys of diffusers' UNet2DConditionModel that we cannot honour, with the only value we accept.
_UNSUPPORTED_2D_OPTIONS = {
    "class_embed_type": None,
    "num_class_embeds": None,
    "addition_embed_type": None,
    "encoder_hid_dim": None,
    "time_cond_proj_dim": None,
    "only_cross_attention": False,
    "dual_cross_attention": False,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
    "transformer_layers_per_block": 1,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "attention_type": "default",
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "cross_attention_norm": None,
    "dropout": 0.0,
}
_RELEASE_ONLY_OPTIONS = ("add_temp_transformer", "add_temp_attn_only_on_upblocks", "prepend_first_frame")


def _as_tuple(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def unet_config_from_2d(config: Mapping, **temporal_options) -> dict:
    """Returns `VideoUNet` keyword arguments for a diffusers UNet2DConditionModel config (SD 1.x / 2.x)."""
    for key, accepted in _UNSUPPORTED_2D_OPTIONS.items():
        value = config.get(key, accepted)
        if value != accepted and not (key == "transformer_layers_per_block" and set(_as_tuple(value, 1)) == {1}):
            raise ValueError(f"unsupported U-Net config: `{key}` must be {accepted!r}, got {value!r}")
    n = len(config["block_out_channels"])
    # diffusers reads SD's `attention_head_dim` as the number of heads when `num_attention_heads` is unset.
    heads = config.get("num_attention_heads") or config["attention_head_dim"]
    kwargs = {
        "sample_size": config.get("sample_size"),
        "in_channels": config["in_channels"],
        "out_channels": config["out_channels"],
        "center_input_sample": config.get("center_input_sample", False),
        "flip_sin_to_cos": config.get("flip_sin_to_cos", True),
        "freq_shift": config.get("freq_shift", 0),
        "down_block_types": tuple(t.replace("2D", "3D") for t in config["down_block_types"]),
        "up_block_types": tuple(t.replace("2D", "3D") for t in config["up_block_types"]),
        "block_out_channels": tuple(config["block_out_channels"]),
        "layers_per_block": config["layers_per_block"],
        "downsample_padding": config.get("downsample_padding", 1),
        "mid_block_scale_factor": config.get("mid_block_scale_factor", 1.0),
        "act_fn": config.get("act_fn", "silu"),
        "norm_num_groups": config.get("norm_num_groups", 32),
        "norm_eps": config.get("norm_eps", 1e-5),
        "cross_attention_dim": config["cross_attention_dim"],
        "num_attention_heads": _as_tuple(heads, n),
        "use_linear_projection": config.get("use_linear_projection", False),
        "upcast_attention": config.get("upcast_attention", False),
    }
    kwargs.update(temporal_options)
    return kwargs


def unet_config_from_release(config: Mapping, **overrides) -> dict:
    """Returns `VideoUNet` keyword arguments for the release's UNet3DConditionModel config (e.g. the golden one)."""
    for key in _RELEASE_ONLY_OPTIONS:
        if config.get(key, False):
            raise ValueError(f"unsupported release option: `{key}` must be False (the released model leaves it off)")
    config_2d = {k: v for k, v in config.items() if k not in (*_RELEASE_ONLY_OPTIONS, "mid_block_type")}
    options = {
        "add_temp_conv": config.get("add_temp_conv", False),
        "add_temp_embed": config.get("add_temp_embed", False),
    }
    options.update(overrides)
    return unet_config_from_2d(config_2d, **options)


def rename_legacy_vae_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Returns the VAE state dict with diffusers-0.14 mid-block attention names mapped to today's."""
    def rename(key: str) -> str:
        match = _LEGACY_VAE_ATTENTION.match(key)
        if match is None:
            return key
        prefix, old = match.groups()
        return f"{prefix}.{_LEGACY_VAE_ATTENTION_NAMES[old]}.{key[match.end():]}"

    return {rename(k): v for k, v in state_dict.items()}


def map_release_text_encoder_keys(state_dict: Mapping[str, torch.Tensor], target_keys: Iterable[str]) -> dict:
    """Returns the release's transformers-4.30 CLIPTextModel state dict renamed for the installed transformers."""
    target_keys = set(target_keys)
    wrapped = any(k.startswith("text_model.") for k in target_keys)
    mapped = {}
    for key, value in state_dict.items():
        new_key = key if wrapped else key.removeprefix("text_model.")
        if new_key.endswith("embeddings.position_ids") and new_key not in target_keys:
            continue  # a non-persistent buffer since transformers 4.31
        mapped[new_key] = value
    return mapped


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping, what: str, assign: bool = False) -> None:
    """Loads `state_dict` into `module`, raising one concise error naming the missing and unexpected keys."""
    expected = set(module.state_dict().keys())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(
            f"{what}: {len(missing)} missing keys {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    module.load_state_dict(state_dict, strict=True, assign=assign)


def load_release_checkpoint(
    path: str | os.PathLike,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None = None,
    assign: bool = False,
) -> list[str]:
    """Loads the release's `ModelT2V.pth` into `unet` (and `text_encoder`); returns the checkpoint keys left unused.

    The file is a PyTorch-Lightning checkpoint whose `state_dict` holds `unet.*` and `text_encoder.*` (and maybe
    `vae.*` / `clip.*`, which the release ignores when `vae_finetuned` is used). `assign=True` lets a model built on
    the `meta` device take the loaded tensors as they are.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle.UnpicklingError from weights_only, surfaced with the way out
        raise RuntimeError(
            f"{path} does not load with torch.load(weights_only=True): {error}. Convert it once, in an environment "
            "you trust, to a plain {'state_dict': ...} file or safetensors."
        ) from error
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise KeyError(f"{path} is not a Lightning checkpoint: no top-level `state_dict`")
    state_dict = checkpoint["state_dict"]

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}

    load_state_dict_strict(unet, part("unet."), "release U-Net", assign=assign)
    used_prefixes = ["unet."]
    if text_encoder is not None:
        text_state = map_release_text_encoder_keys(part("text_encoder."), text_encoder.state_dict().keys())
        load_state_dict_strict(text_encoder, text_state, "release text encoder", assign=assign)
        used_prefixes.append("text_encoder.")
    unused = sorted(k for k in state_dict if not k.startswith(tuple(used_prefixes)))
    if unused:
        logger.info("ignored %d checkpoint keys (e.g. %s)", len(unused), unused[0])
    return unused


def load_diffusers_weights(
    pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, variant: str | None = None
) -> dict[str, torch.Tensor]:
    """Returns the state dict of a diffusers model folder (local, or a Hub id already in the local cache).

    Reads `diffusion_pytorch_model[.variant].safetensors`, else the `.bin` with `torch.load(weights_only=True)`.
    """
    stem = "diffusion_pytorch_model" + (f".{variant}" if variant else "")
    names = (f"{stem}.safetensors", f"{stem}.bin")
    folder = Path(pretrained_model_name_or_path, subfolder or "")
    if Path(pretrained_model_name_or_path).is_dir():
        files = [folder / name for name in names if (folder / name).is_file()]
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        files = []
        for name in names:
            try:
                files.append(Path(hf_hub_download(str(pretrained_model_name_or_path), name, subfolder=subfolder)))
                break
            except EntryNotFoundError:
                continue
    if not files:
        raise FileNotFoundError(f"no {' or '.join(names)} in {folder}")
    if files[0].suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(files[0])
    return torch.load(files[0], map_location="cpu", weights_only=True)


def load_pretrained_2d_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Loads SD weights into a VidRD model; only temporal keys ("temp_") may be absent, and they keep their init."""
    expected = set(model.state_dict().keys())
    missing = sorted(k for k in expected - set(state_dict) if TEMPORAL_KEY_MARK not in k)
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(f"{what}: missing non-temporal keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    model.load_state_dict(state_dict, strict=False)
