"""A tiny Stable Diffusion 2.1-base in its diffusers layout (unet, vae, text_encoder, tokenizer, scheduler,
feature_extractor, model_index.json)."""

from __future__ import annotations

import json
from pathlib import Path

from vidrd_data.models.captioners import quiet_transformers_progress
from vidrd_demo.models.tokenizer_files import clip_bpe_vocabulary
from vidrd_demo.models.weights import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, randomize_parameters

# stabilityai/stable-diffusion-2-1-base's scheduler/scheduler_config.json as released; VidRD loads it into DDIM.
SD21_BASE_SCHEDULER_CONFIG = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.10.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# model_index.json of the same release (its feature extractor class under today's name).
SD21_BASE_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.10.0.dev0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

CLIP_TOKENIZER_VOCAB_SIZE = 1000


def write_tiny_stable_diffusion(out_dir: str | Path) -> Path:
    """Writes a stable-diffusion-2-1-base-style diffusers directory (unet, vae, text_encoder, tokenizer, scheduler,
    feature_extractor, model_index.json) and returns it; loads with `StableDiffusionPipeline.from_pretrained`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer_dir = out_dir / "tokenizer"
    tokenizer_dir.mkdir(exist_ok=True)
    vocab, merges = clip_bpe_vocabulary(CLIP_TOKENIZER_VOCAB_SIZE)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}
    tokenizer_config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (tokenizer_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))

    text_config = CLIPTextConfig(
        vocab_size=CLIP_TOKENIZER_VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=37,
        projection_dim=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu",  # SD 2's OpenCLIP-H text tower uses exact GELU
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["!"],
    )
    text_encoder = randomize_parameters(CLIPTextModel(text_config).eval())
    unet = randomize_parameters(
        UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            norm_num_groups=32,
        ).eval()
    )
    vae = randomize_parameters(
        AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=64,
            scaling_factor=0.18215,
        ).eval()
    )
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    unet.save_pretrained(out_dir / "unet")
    vae.save_pretrained(out_dir / "vae")
    with quiet_transformers_progress():
        text_encoder.save_pretrained(out_dir / "text_encoder")
    feature_extractor.save_pretrained(out_dir / "feature_extractor")
    (out_dir / "scheduler").mkdir(exist_ok=True)
    (out_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD21_BASE_SCHEDULER_CONFIG, indent=2))
    (out_dir / "model_index.json").write_text(json.dumps(SD21_BASE_MODEL_INDEX, indent=2))
    return out_dir
