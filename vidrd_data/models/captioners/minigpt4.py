"""MiniGPT-4 captions (v1: Vicuna v0, and LLaMA-2 chat) on transformers modules, as ../shared/specs/minigpt4.md says.

MiniGPT-4 is three released parts, each loaded from its own format:

- the BLIP-2 vision side (EVA ViT-g/14 minus its last block, `ln_vision`, the trimmed Q-Former, 32 query tokens):
  LAVIS' `blip2_pretrained_flant5xxl.pth` (`torch.load(..., weights_only=True)["model"]`, MiniGPT-4's key names), renamed onto
  transformers' `Blip2VisionModel` / `Blip2QFormerModel` by the rules of transformers' BLIP-2 conversion script;
  or a transformers BLIP-2 checkpoint (`Salesforce/blip2-flan-t5-xxl`, which holds the same tensors), of which only
  the `vision_model.*`, `qformer.*` and `query_tokens` tensors are read. Both load strictly: a tensor missing from
  the file is an error, never a silently random weight (MiniGPT-4's own `strict=False` would hide it);
- the projection `llama_proj` (Q-Former width, or 4 ViT tokens for LLaMA-2 → LLM width) from MiniGPT-4's checkpoint
  (`pretrained_minigpt4.pth`: `["model"]["llama_proj.weight" / ".bias"]`);
- the LLaMA / Vicuna causal LM and its tokenizer, from a local directory or a hub id.

`minigpt4.json` names the three parts (paths relative to the file) and the vision sizes when they are not the
released ones (keyword arguments of `Blip2VisionConfig` / `Blip2QFormerConfig`); `vidrd-data demo` writes one for
its tiny model. Checkpoints load with `torch.load(weights_only=True)` only; nothing runs remote code.

Precision follows the original: on CUDA the LLM is fp16 and the vision side keeps fp32 weights under fp16 autocast
(so LayerNorm and softmax stay fp32, spec §5.4); on CPU everything is fp32.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from vidrd_data.models.captioners import Captioner, quiet_transformers_progress

log = logging.getLogger(__name__)

VARIANTS = ("vicuna0", "llama2")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The released conversation templates (HEAD `conversation.py`, spec §3): a system line, then one human turn holding
# the image placeholder and the question, then the open assistant turn.
SYSTEM = (
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. "
    "Please answer my questions."
)
PROMPT_TEMPLATES = {
    "vicuna0": SYSTEM + "###Human: <Img><ImageHere></Img> {}###Assistant: ",
    "llama2": SYSTEM + "<s>[INST] <Img><ImageHere></Img> {} [/INST] ",
}
IMAGE_PLACEHOLDER = "<ImageHere>"
# The first of the released instruction prompts (`prompts/alignment.txt`).
DEFAULT_QUESTION = "Describe this image in detail."

# The batch API's generation defaults (`MiniGPTBase.generate`, spec §3.3): greedy, one beam, 20 new tokens.
GENERATION_DEFAULTS = {
    "num_beams": 1,
    "max_new_tokens": 20,
    "min_length": 1,
    "top_p": 0.9,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "temperature": 1.0,
    "do_sample": False,
}


class MiniGPT4Error(ValueError):
    """A part is missing or does not fit the others (shapes, variant)."""


# ---------------------------------------------------------------- checkpoint keys → transformers modules

# Parts of LAVIS' Q-Former MiniGPT-4 deletes after building it (spec §1.2): present in some checkpoints, never used.
_UNUSED_QFORMER = re.compile(
    r"^Qformer\.(cls\.|bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)|"
    r"bert\.encoder\.layer\.\d+\.(intermediate|output)\.)"
)
_VISION_RENAMES = [  # (pattern, replacement) applied in order: transformers' convert_blip_2_original_to_pytorch.py
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^ln_vision\.", "vision_model.post_layernorm."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm1\.", r"vision_model.encoder.layers.\1.layer_norm1."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm2\.", r"vision_model.encoder.layers.\1.layer_norm2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
    (r"^Qformer\.bert\.embeddings\.LayerNorm\.", "qformer.layernorm."),
    (r"^Qformer\.bert\.", "qformer."),
    (r"attention\.self\.", "attention.attention."),
]


def minigpt4_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the vision side of a MiniGPT-4 / LAVIS BLIP-2 state dict under transformers' names (spec §5.2).

    Each block's separate `q_bias` and `v_bias` become one qkv bias `(q_bias, 0, v_bias)`: EVA's keys carry no bias.
    Keys of other parts (the T5 projection, `llama_proj`, LAVIS' text heads) are left out.
    """
    renamed = {}
    for key, tensor in state_dict.items():
        wanted = key.startswith(("visual_encoder.", "ln_vision.", "Qformer.")) or key == "query_tokens"
        if not wanted or _UNUSED_QFORMER.match(key) or key.endswith(".attn.v_bias"):
            continue
        if key.endswith(".attn.q_bias"):
            v_bias = state_dict[key[: -len("q_bias")] + "v_bias"]
            key, tensor = key[: -len("q_bias")] + "qkv.bias", torch.cat([tensor, torch.zeros_like(v_bias), v_bias])
        for pattern, replacement in _VISION_RENAMES:
            key = re.sub(pattern, replacement, key)
        renamed[key] = tensor
    return renamed


def load_transformers_blip2(model: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Return the vision-side tensors and the config of a transformers BLIP-2 checkpoint (directory or hub id).

    Only the shards holding `vision_model.*`, `qformer.*` and `query_tokens` are read (the index's weight map says
    which), so the 11B T5 of blip2-flan-t5-xxl is never loaded.
    """
    from safetensors import safe_open

    def local(name: str) -> Path:
        if os.path.isdir(model):
            return Path(model) / name
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, name))

    config = json.loads(local("config.json").read_text())
    try:
        index = json.loads(local("model.safetensors.index.json").read_text())["weight_map"]
    except FileNotFoundError:
        index = None  # a single-file checkpoint
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises its own "not found" errors
        if type(exc).__name__ not in ("EntryNotFoundError", "RemoteEntryNotFoundError", "LocalEntryNotFoundError"):
            raise
        index = None
    wanted = lambda k: k.startswith(("vision_model.", "qformer.")) or k == "query_tokens"  # noqa: E731
    shards = sorted({f for k, f in index.items() if wanted(k)}) if index else ["model.safetensors"]
    tensors = {}
    for shard in shards:
        with safe_open(local(shard), framework="pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys() if wanted(k)})
    return tensors, config


# ---------------------------------------------------------------- the model


class MiniGPT4VisionSide(nn.Module):
    """BLIP-2's vision encoder, Q-Former and query tokens as transformers modules, named like transformers' BLIP-2."""

    def __init__(self, vision_config: dict, qformer_config: dict, num_query_tokens: int, ln_vision_eps: float):
        from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel

        super().__init__()
        self.vision_model = Blip2VisionModel(Blip2VisionConfig(**vision_config))
        # transformers has one eps for the blocks (EVA: 1e-6) and the final norm (MiniGPT-4's ln_vision: 1e-5).
        self.vision_model.post_layernorm.eps = ln_vision_eps
        self.qformer = Blip2QFormerModel(Blip2QFormerConfig(**qformer_config)) if qformer_config else None
        hidden = qformer_config.get("hidden_size", 768) if qformer_config else 0
        self.query_tokens = nn.Parameter(torch.zeros(1, num_query_tokens, hidden)) if qformer_config else None


@dataclass(frozen=True)
class MiniGPT4Parts:
    """Where MiniGPT-4's parts are and the vision side's sizes (defaults: the released ones)."""

    llama: str
    projection: str
    blip2: str | None = None  # not used by the LLaMA-2 variant beyond its ViT
    variant: str = "vicuna0"
    vision_config: dict = field(default_factory=dict)
    qformer_config: dict = field(default_factory=dict)
    num_query_tokens: int = 32
    ln_vision_eps: float = 1e-5

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "MiniGPT4Parts":
        """Read a `minigpt4.json`: `blip2_checkpoint`, `llama_model`, `projection_checkpoint` (relative to the file,
        or hub ids), `variant`, and optionally `vision_config`, `qformer_config`, `num_query_tokens`, `ln_vision_eps`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MiniGPT4Error(f"cannot read MiniGPT-4 config {path}: {exc}") from None

        def place(value: str | None) -> str | None:
            if value is None:
                return None
            candidate = path.parent / value
            return str(candidate) if candidate.exists() else value  # not a local path: a hub id

        for key in ("llama_model", "projection_checkpoint"):
            if key not in data:
                raise MiniGPT4Error(f"{path} has no {key!r}")
        return cls(
            llama=place(data["llama_model"]),
            projection=place(data["projection_checkpoint"]),
            blip2=place(data.get("blip2_checkpoint")),
            variant=data.get("variant", "vicuna0"),
            vision_config=data.get("vision_config", {}),
            qformer_config=data.get("qformer_config", {}),
            num_query_tokens=data.get("num_query_tokens", 32),
            ln_vision_eps=data.get("ln_vision_eps", 1e-5),
        )


class MiniGPT4Captioner(Captioner):
    """Captions images with MiniGPT-4: image → ViT (→ Q-Former) → `llama_proj` → spliced into the prompt → LLM.

    `prompts[i]` is the question asked about image i (default: "Describe this image in detail."), placed in the
    variant's released conversation template.
    """

    def __init__(self, parts: MiniGPT4Parts, *, device: str = "auto", batch_size: int = 8, **generation: Any):
        from transformers import BlipImageProcessor, LlamaForCausalLM, LlamaTokenizer

        if parts.variant not in VARIANTS:
            raise MiniGPT4Error(f"unknown MiniGPT-4 variant {parts.variant!r} (use {' or '.join(VARIANTS)})")
        unknown = set(generation) - set(GENERATION_DEFAULTS)
        if unknown:
            raise MiniGPT4Error(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        if batch_size < 1:
            raise MiniGPT4Error(f"batch_size must be ≥ 1, got {batch_size}")
        self.parts, self.variant, self.batch_size = parts, parts.variant, batch_size
        self.model_id = f"minigpt4-{parts.variant}:{Path(parts.projection).name}+{Path(parts.llama).name}"
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.generation = {**GENERATION_DEFAULTS, **generation}

        qformer_config = parts.qformer_config if parts.variant == "vicuna0" else {}
        if parts.variant == "vicuna0":
            qformer_config = {"encoder_hidden_size": parts.vision_config.get("hidden_size", 1408), **qformer_config}
        self.vision = MiniGPT4VisionSide(
            {"layer_norm_eps": 1e-6, **parts.vision_config}, qformer_config, parts.num_query_tokens, parts.ln_vision_eps
        )
        self._load_vision(parts)
        llm_dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = LlamaTokenizer.from_pretrained(parts.llama, use_fast=False)
        with quiet_transformers_progress():
            self.llm = LlamaForCausalLM.from_pretrained(parts.llama, dtype=llm_dtype)
        self.llama_proj = self._load_projection(parts.projection, self.llm.config.hidden_size)
        self.vision.to(self.device).eval()
        self.llama_proj.to(self.device).eval()
        self.llm.to(self.device).eval()
        size = self.vision.vision_model.config.image_size
        # MiniGPT-4's `blip2_image_eval`: bicubic squash to a square, OpenAI-CLIP normalisation (spec §4).
        self.image_processor = BlipImageProcessor(
            size={"height": size, "width": size}, resample=Image.BICUBIC, image_mean=OPENAI_CLIP_MEAN,
            image_std=OPENAI_CLIP_STD, do_convert_rgb=True,
        )
        log.info("loaded MiniGPT-4 (%s) on %s", parts.variant, self.device)

    @classmethod
    def from_config(cls, path: str | os.PathLike, **kwargs: Any) -> "MiniGPT4Captioner":
        return cls(MiniGPT4Parts.from_json(path), **kwargs)

    # ---------------------------------------------------------------- loading

    def _load_vision(self, parts: MiniGPT4Parts) -> None:
        if parts.blip2 is None:
            raise MiniGPT4Error("MiniGPT-4 needs the BLIP-2 vision checkpoint (blip2_checkpoint)")
        if str(parts.blip2).endswith((".pth", ".pt", ".bin")):
            checkpoint = torch.load(parts.blip2, map_location="cpu", weights_only=True)
            state_dict = minigpt4_to_transformers(checkpoint.get("model", checkpoint))
        else:
            state_dict, _ = load_transformers_blip2(parts.blip2)
        if parts.variant == "llama2":
            # Only the ViT: no Q-Former, and ln_vision was never loaded in this variant (spec §1.1, §5.4).
            state_dict = {k: v for k, v in state_dict.items()
                          if k.startswith("vision_model.") and not k.startswith("vision_model.post_layernorm.")}
        try:
            result = self.vision.load_state_dict(state_dict, strict=False)
        except RuntimeError as exc:  # shapes that do not fit: the first line names the tensor
            raise MiniGPT4Error(f"the BLIP-2 checkpoint {parts.blip2} does not fit MiniGPT-4's vision side: "
                                f"{' '.join(str(exc).split())[:300]}") from None
        missing = [k for k in result.missing_keys
                   if not (parts.variant == "llama2" and k.startswith("vision_model.post_layernorm."))]
        if missing or result.unexpected_keys:
            raise MiniGPT4Error(
                f"the BLIP-2 checkpoint {parts.blip2} does not fit MiniGPT-4's vision side: "
                f"{len(missing)} missing tensor(s) (e.g. {missing[:2]}), {len(result.unexpected_keys)} unexpected "
                f"(e.g. {result.unexpected_keys[:2]})"
            )

    def _load_projection(self, path: str, llm_width: int) -> nn.Linear:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state_dict = checkpoint.get("model", checkpoint)
        if "llama_proj.weight" not in state_dict:
            raise MiniGPT4Error(f"{path} has no llama_proj.weight: not a MiniGPT-4 checkpoint")
        weight, bias = state_dict["llama_proj.weight"], state_dict["llama_proj.bias"]
        vision = self.vision.vision_model.config.hidden_size
        expected_in = 4 * vision if self.variant == "llama2" else self.vision.query_tokens.shape[-1]
        if tuple(weight.shape) != (llm_width, expected_in):
            raise MiniGPT4Error(
                f"llama_proj.weight in {path} is {tuple(weight.shape)}, expected {(llm_width, expected_in)} "
                f"for the {self.variant} variant with this LLM and vision side"
            )
        projection = nn.Linear(expected_in, llm_width)
        projection.load_state_dict({"weight": weight.float(), "bias": bias.float()})
        return projection

    # ---------------------------------------------------------------- captioning

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Return the LLM-space image tokens `[B, tokens, llm_width]` (32 for Vicuna v0, 64 for LLaMA-2)."""
        with torch.inference_mode(), self._autocast():
            pixel_values = pixel_values.to(self.device)
            if self.variant == "vicuna0":
                image_embeds = self.vision.vision_model(pixel_values=pixel_values).last_hidden_state  # ln_vision applied
                queries = self.vision.qformer(
                    query_embeds=self.vision.query_tokens.expand(len(pixel_values), -1, -1),
                    encoder_hidden_states=image_embeds,
                    encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long, device=self.device),
                ).last_hidden_state
                return self.llama_proj(queries)
            hidden = self.vision.vision_model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-1]
            width = hidden.shape[-1]
            normed = nn.functional.layer_norm(hidden.float(), (width,), eps=1e-5)  # the never-loaded ln_vision
            patches = normed[:, 1:, :].reshape(len(pixel_values), -1, 4 * width)  # 4 neighbouring patches per token
            return self.llama_proj(patches)

    def prompt(self, question: str | None) -> str:
        """Return the full prompt for one image: the variant's template around the question."""
        return PROMPT_TEMPLATES[self.variant].format(question or DEFAULT_QUESTION)

    def prepare(self, images: list[Image.Image], prompts: list[str | None] | None = None) -> dict:
        """Return the pixel values and the prompt pieces' token ids of one batch (CPU only)."""
        pixels = self.image_processor([image.convert("RGB") for image in images], return_tensors="pt").pixel_values
        pieces = []
        for question in prompts or [None] * len(images):
            before, after = self.prompt(question).split(IMAGE_PLACEHOLDER)
            # Only the first piece gets special tokens: one BOS at the very start (spec §1.6).
            pieces.append((
                self.tokenizer(before, add_special_tokens=True).input_ids,
                self.tokenizer(after, add_special_tokens=False).input_ids,
            ))
        return {"pixel_values": pixels, "pieces": pieces}

    def generate(self, prepared: dict) -> list[str]:
        image_tokens = self.encode_images(prepared["pixel_values"]).to(self.llm.dtype)
        embed = self.llm.get_input_embeddings()
        with torch.inference_mode():
            rows = [
                torch.cat([embed(torch.tensor(before, device=self.device)), tokens,
                           embed(torch.tensor(after, device=self.device))])
                for (before, after), tokens in zip(prepared["pieces"], image_tokens)
            ]
            # Left-padded with zero embeddings under a 0 attention mask, as MiniGPT-4's batch generate does.
            length = max(len(r) for r in rows)
            inputs = torch.zeros(len(rows), length, rows[0].shape[-1], dtype=rows[0].dtype, device=self.device)
            mask = torch.zeros(len(rows), length, dtype=torch.long, device=self.device)
            for i, r in enumerate(rows):
                inputs[i, length - len(r):] = r
                mask[i, length - len(r):] = 1
            sampling = {"top_p", "temperature"}  # only meaningful (and only accepted quietly) when sampling
            options = {k: v for k, v in self.generation.items() if self.generation["do_sample"] or k not in sampling}
            ids = self.llm.generate(
                inputs_embeds=inputs, attention_mask=mask, eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.eos_token_id, **options,
            )
        return [self._answer(text) for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def _answer(self, text: str) -> str:
        """Return the answer alone: cut at the next turn's separator, as the released post-processing does."""
        if self.variant == "vicuna0":
            text = text.split("###")[0].split("Assistant:")[-1]
        else:
            text = text.split("</s>")[0].split("[/INST]")[-1]
        return " ".join(text.split())


