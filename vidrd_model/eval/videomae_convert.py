"""cd-FVD's VideoMAE-v2 checkpoint (`vit_g_hybrid_pt_1200e_ssv2_ft.pth`, the OpenGVLab/VideoMAEv2 fine-tuned
VisionTransformer) as a transformers `VideoMAEForVideoClassification` folder, which `--cd-fvd DIR` loads.

Written here because transformers ships no VideoMAE-v2 converter. The two models are the same network: a Conv3d
tubelet embedding, fixed sinusoidal positions, pre-norm blocks whose attention has one qkv matrix with a query and a
value bias (no key bias), GELU MLPs, then mean pooling, `fc_norm` and a linear head. The key map:

    patch_embed.proj.*          videomae.embeddings.patch_embeddings.projection.*
    blocks.i.norm1.*            videomae.encoder.layer.i.layernorm_before.*
    blocks.i.attn.qkv.weight    ….attention.attention.{query,key,value}.weight   (rows split in thirds, q k v)
    blocks.i.attn.q_bias        ….attention.attention.query.bias
    blocks.i.attn.v_bias        ….attention.attention.value.bias
    blocks.i.attn.proj.*        ….attention.output.dense.*
    blocks.i.norm2.*            ….layernorm_after.*
    blocks.i.mlp.fc1.*          ….intermediate.dense.*
    blocks.i.mlp.fc2.*          ….output.dense.*
    fc_norm.*, head.*           fc_norm.*, classifier.*

A checkpoint with anything else (layer-scale `gamma_1/2`, cosine attention's `scale`, learnt positions) is refused:
transformers' VideoMAE has no such parts, and dropping them would change the features silently.
"""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK_KEYS = {
    "norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
    "attn.q_bias": "attention.attention.query.bias", "attn.v_bias": "attention.attention.value.bias",
    "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
    "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
    "mlp.fc1.weight": "intermediate.dense.weight", "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight", "mlp.fc2.bias": "output.dense.bias",
}
_TOP_KEYS = {
    "patch_embed.proj.weight": "videomae.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "videomae.embeddings.patch_embeddings.projection.bias",
    "fc_norm.weight": "fc_norm.weight", "fc_norm.bias": "fc_norm.bias",
    "head.weight": "classifier.weight", "head.bias": "classifier.bias",
}


def convert_state_dict(state: dict) -> dict:
    """Returns the transformers VideoMAEForVideoClassification state dict of a VideoMAE-v2 fine-tuned state dict;
    a key it has no place for is a ValueError naming it."""
    out, unknown = {}, []
    for key, tensor in state.items():
        block = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = tensor
        elif block and block.group(2) == "attn.qkv.weight":
            prefix = f"videomae.encoder.layer.{block.group(1)}.attention.attention."
            query, key_, value = tensor.chunk(3, dim=0)
            out.update({prefix + "query.weight": query, prefix + "key.weight": key_, prefix + "value.weight": value})
        elif block and block.group(2) in _BLOCK_KEYS:
            out[f"videomae.encoder.layer.{block.group(1)}.{_BLOCK_KEYS[block.group(2)]}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} checkpoint keys have no place in transformers' VideoMAE (e.g. "
                         f"{unknown[0]}): not a VideoMAE-v2 fine-tuned ViT with mean pooling and no layer scale")
    return {k: v.contiguous() for k, v in out.items()}


def config_for(state: dict, num_attention_heads: int, image_size: int = 224, num_frames: int = 16):
    """Returns the VideoMAEConfig of a VideoMAE-v2 state dict: sizes read from its shapes; the heads, image size and
    frames (not in the shapes) given. LayerNorm ε 1e-6 and exact GELU, as VideoMAE-v2's ViTs are built."""
    from transformers import VideoMAEConfig

    projection = state["patch_embed.proj.weight"]  # [hidden, 3, tubelet, patch, patch]
    hidden, _, tubelet, patch, _ = projection.shape
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    if hidden % num_attention_heads:
        raise ValueError(f"hidden size {hidden} is not divisible by {num_attention_heads} heads")
    return VideoMAEConfig(
        image_size=image_size, patch_size=patch, num_frames=num_frames, tubelet_size=tubelet, hidden_size=hidden,
        num_hidden_layers=depth, num_attention_heads=num_attention_heads,
        intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0], hidden_act="gelu", qkv_bias=True,
        layer_norm_eps=1e-6, use_mean_pooling=True, num_labels=state["head.weight"].shape[0],
        architectures=["VideoMAEForVideoClassification"])


def convert_checkpoint(checkpoint: str | Path, out_dir: str | Path, num_attention_heads: int = 16,
                       image_size: int = 224, num_frames: int = 16) -> Path:
    """Returns `out_dir` after writing the checkpoint (torch.load weights_only; its "model" or "module" entry when
    nested) as a VideoMAEForVideoClassification folder (config.json, model.safetensors); loaded strictly."""
    import torch
    from transformers import VideoMAEForVideoClassification

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for nested in ("model", "module"):
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
            break
    if not isinstance(state, dict) or "patch_embed.proj.weight" not in state:
        raise ValueError(f"{checkpoint}: not a VideoMAE-v2 state dict (no patch_embed.proj.weight)")
    model = VideoMAEForVideoClassification(config_for(state, num_attention_heads, image_size, num_frames))
    model.load_state_dict(convert_state_dict(state), strict=True)
    model.eval().save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)
