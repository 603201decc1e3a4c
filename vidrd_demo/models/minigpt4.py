"""A tiny MiniGPT-4 (Vicuna v0 variant) in its released three-part layout: see shared/specs/minigpt4.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vidrd_data.models.captioners import quiet_transformers_progress
from vidrd_demo.models.tokenizer_files import write_llama_tokenizer_files
from vidrd_demo.models.weights import CAPTIONER_INIT_STD, SEED, emit_only_words, randomize_parameters


@dataclass(frozen=True)
class MiniGPT4Arch:
    """Sizes of MiniGPT-4's vision side; the defaults are the released model's (EVA ViT-g/14 minus its last block,
    BERT-base Q-Former with cross-attention every 2nd layer, 32 query tokens)."""

    image_size: int = 224
    patch_size: int = 14
    vit_width: int = 1408
    vit_depth: int = 39
    vit_heads: int = 16
    vit_mlp_dim: int = 6144  # int(1408 * 4.3637)
    qformer_hidden: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_intermediate: int = 3072
    cross_attention_freq: int = 2
    num_query_tokens: int = 32
    max_position_embeddings: int = 512

    def hf_configs(self) -> dict:
        """Returns this architecture as keyword arguments of transformers' Blip2VisionConfig / Blip2QFormerConfig."""
        return {
            "vision_config": {
                "hidden_size": self.vit_width,
                "intermediate_size": self.vit_mlp_dim,
                "num_hidden_layers": self.vit_depth,
                "num_attention_heads": self.vit_heads,
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "layer_norm_eps": 1e-6,
                "qkv_bias": True,
            },
            "qformer_config": {
                "hidden_size": self.qformer_hidden,
                "num_hidden_layers": self.qformer_layers,
                "num_attention_heads": self.qformer_heads,
                "intermediate_size": self.qformer_intermediate,
                "cross_attention_frequency": self.cross_attention_freq,
                "encoder_hidden_size": self.vit_width,
                "max_position_embeddings": self.max_position_embeddings,
                "layer_norm_eps": 1e-12,
            },
            "num_query_tokens": self.num_query_tokens,
        }


# ViT 48, Q-Former 32 and LLaMA 64 wide: distinct widths, so a transposed or swapped tensor fails to load loudly.
TINY_MINIGPT4_ARCH = MiniGPT4Arch(
    vit_width=48,
    vit_depth=2,
    vit_heads=4,
    vit_mlp_dim=int(48 * 4.3637),
    qformer_hidden=32,
    qformer_layers=2,
    qformer_heads=4,
    qformer_intermediate=64,
    num_query_tokens=8,
)


@dataclass(frozen=True)
class TinyMiniGPT4:
    """Where MiniGPT-4's three parts are, plus `config_path`: the JSON recording the tiny architecture."""

    blip2_checkpoint: Path
    llama_dir: Path
    projection_checkpoint: Path
    config_path: Path


def minigpt4_blip2_shapes(arch: MiniGPT4Arch) -> dict[str, tuple[int, ...]]:
    """Returns the key → shape table of the BLIP-2 checkpoint's `model` dict as MiniGPT-4 (Vicuna) loads it: EVA ViT,
    `ln_vision`, the trimmed Q-Former (no text embeddings, no text FFNs) and `query_tokens`, in the official names."""
    width, hidden = arch.vit_width, arch.qformer_hidden
    num_patches = (arch.image_size // arch.patch_size) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "visual_encoder.cls_token": (1, 1, width),
        "visual_encoder.pos_embed": (1, num_patches + 1, width),
        "visual_encoder.patch_embed.proj.weight": (width, 3, arch.patch_size, arch.patch_size),
        "visual_encoder.patch_embed.proj.bias": (width,),
    }
    for i in range(arch.vit_depth):
        block = f"visual_encoder.blocks.{i}"
        shapes |= {
            f"{block}.norm1.weight": (width,),
            f"{block}.norm1.bias": (width,),
            f"{block}.attn.q_bias": (width,),
            f"{block}.attn.v_bias": (width,),
            f"{block}.attn.qkv.weight": (3 * width, width),
            f"{block}.attn.proj.weight": (width, width),
            f"{block}.attn.proj.bias": (width,),
            f"{block}.norm2.weight": (width,),
            f"{block}.norm2.bias": (width,),
            f"{block}.mlp.fc1.weight": (arch.vit_mlp_dim, width),
            f"{block}.mlp.fc1.bias": (arch.vit_mlp_dim,),
            f"{block}.mlp.fc2.weight": (width, arch.vit_mlp_dim),
            f"{block}.mlp.fc2.bias": (width,),
        }
    shapes |= {
        "ln_vision.weight": (width,),
        "ln_vision.bias": (width,),
        "Qformer.bert.embeddings.position_ids": (1, arch.max_position_embeddings),
        "Qformer.bert.embeddings.LayerNorm.weight": (hidden,),
        "Qformer.bert.embeddings.LayerNorm.bias": (hidden,),
    }
    for i in range(arch.qformer_layers):
        layer = f"Qformer.bert.encoder.layer.{i}"
        attentions = {"attention": hidden}
        if i % arch.cross_attention_freq == 0:
            attentions["crossattention"] = width  # keys and values come from the ViT
        for attention, kv_width in attentions.items():
            shapes |= {
                f"{layer}.{attention}.self.query.weight": (hidden, hidden),
                f"{layer}.{attention}.self.query.bias": (hidden,),
                f"{layer}.{attention}.self.key.weight": (hidden, kv_width),
                f"{layer}.{attention}.self.key.bias": (hidden,),
                f"{layer}.{attention}.self.value.weight": (hidden, kv_width),
                f"{layer}.{attention}.self.value.bias": (hidden,),
                f"{layer}.{attention}.output.dense.weight": (hidden, hidden),
                f"{layer}.{attention}.output.dense.bias": (hidden,),
                f"{layer}.{attention}.output.LayerNorm.weight": (hidden,),
                f"{layer}.{attention}.output.LayerNorm.bias": (hidden,),
            }
        shapes |= {
            f"{layer}.intermediate_query.dense.weight": (arch.qformer_intermediate, hidden),
            f"{layer}.intermediate_query.dense.bias": (arch.qformer_intermediate,),
            f"{layer}.output_query.dense.weight": (hidden, arch.qformer_intermediate),
            f"{layer}.output_query.dense.bias": (hidden,),
            f"{layer}.output_query.LayerNorm.weight": (hidden,),
            f"{layer}.output_query.LayerNorm.bias": (hidden,),
        }
    shapes["query_tokens"] = (1, arch.num_query_tokens, hidden)
    return shapes


def write_tiny_minigpt4(out_dir: str | Path) -> TinyMiniGPT4:
    """Writes MiniGPT-4's three parts at a tiny size: the BLIP-2 (EVA ViT + Q-Former) `.pth`, a Vicuna-style LLaMA
    directory and the `llama_proj` `.pth`, plus `minigpt4.json` with the tiny sizes a loader cannot know otherwise.

    In `minigpt4.json`, `vision_config` and `qformer_config` are keyword arguments of transformers'
    `Blip2VisionConfig` / `Blip2QFormerConfig`, whose defaults are the released sizes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arch = TINY_MINIGPT4_ARCH

    blip2_checkpoint = out_dir / "blip2_pretrained_flant5xxl.pth"
    torch.save({"model": _random_minigpt4_blip2_state_dict(arch)}, blip2_checkpoint)

    llama_dir = out_dir / "vicuna"
    llama_hidden = _write_tiny_vicuna(llama_dir)

    llama_proj = randomize_parameters(nn.Linear(arch.qformer_hidden, llama_hidden), std=CAPTIONER_INIT_STD)
    projection_checkpoint = out_dir / "pretrained_minigpt4.pth"
    # Training saves only trainable parameters, and llama_proj is MiniGPT-4's only one.
    trainable = {f"llama_proj.{name}": param.detach() for name, param in llama_proj.named_parameters()}
    torch.save({"model": trainable}, projection_checkpoint)

    config_path = out_dir / "minigpt4.json"
    config = {
        "variant": "vicuna0",
        "blip2_checkpoint": blip2_checkpoint.name,
        "llama_model": llama_dir.name,
        "projection_checkpoint": projection_checkpoint.name,
        **arch.hf_configs(),
        "ln_vision_eps": 1e-5,
    }
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return TinyMiniGPT4(blip2_checkpoint, llama_dir, projection_checkpoint, config_path)


def _random_minigpt4_blip2_state_dict(arch: MiniGPT4Arch) -> dict[str, torch.Tensor]:
    """Returns the checkpoint's tensors drawn by the rule of `randomize_parameters`; position ids are 0, 1, 2, …."""
    generator = torch.Generator().manual_seed(SEED)
    state_dict = {}
    for key, shape in minigpt4_blip2_shapes(arch).items():
        if key.endswith("position_ids"):
            state_dict[key] = torch.arange(shape[-1]).expand(shape).clone()
            continue
        r = torch.randn(shape, generator=generator)
        is_norm_weight = key.endswith("weight") and any(n in key for n in ("norm", "LayerNorm", "ln_vision"))
        state_dict[key] = 1 + CAPTIONER_INIT_STD * r if is_norm_weight else CAPTIONER_INIT_STD * r
    return state_dict


def _write_tiny_vicuna(out_dir: Path) -> int:
    """Writes a Vicuna-v0-style LLaMA directory (config, safetensors, sentencepiece tokenizer); returns its width."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = write_llama_tokenizer_files(out_dir)
    hidden_size = 64
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    model = randomize_parameters(LlamaForCausalLM(config).eval(), std=CAPTIONER_INIT_STD)
    emit_only_words(model.get_output_embeddings(), vocab, word=r"▁[a-z]+")
    with quiet_transformers_progress():
        model.save_pretrained(out_dir)
    return hidden_size
