"""Tiny randomly initialised models saved in the on-disk formats of the real ones.

The demo and the tests point the project's real loading code (`from_pretrained(dir)`, open_clip's factory,
MiniGPT-4's `torch.load(..., weights_only=True)["model"]`) at these instead of hub checkpoints, so everything runs offline. Each model
is built at a tiny size under a fixed seed, every parameter is overwritten by the same seeded rule, and the files are
laid out as the corresponding hub repository or released checkpoint lays them out; the video metrics' I3D and C3D
networks get TorchScript stand-ins with the published files' call signatures. Tokenizers are real tokenizer files
built offline: CLIP's from the BPE vocabulary that open_clip ships in its wheel, OPT's and LLaMA's trained on a small
fixed corpus.

The heavy libraries are imported inside each writer so that importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vidrd_data.models.captioners import quiet_transformers_progress

SEED = 0
INIT_STD = 0.02
# Wider draws where the demo needs the random model to respond to its input: the image must visibly change a greedy
# caption, and CLIP embeddings of a slightly moved frame must stay closer than those of another scene (at 0.02 every
# tiny-CLIP embedding has cosine similarity ~1 with every other).
CAPTIONER_INIT_STD = 0.3
EMBEDDER_INIT_STD = 0.1

# OpenAI-CLIP normalisation, used by BLIP-2's and MiniGPT-4's image processors and by open_clip.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Sentences the OPT and LLaMA tokenizers are trained on: caption-like English plus MiniGPT-4's prompt strings, so
# those prompts tokenize into whole pieces as they do with the real vocabularies.
_TOKENIZER_CORPUS = (
    "a man is riding a bicycle down a quiet street",
    "two children play football on the green grass in a park",
    "a woman slices fresh vegetables in a bright kitchen",
    "the camera pans across a snowy mountain at sunrise",
    "a dog runs along the beach chasing a red ball",
    "people walk through a busy city square at night",
    "a chef pours sauce over a plate of pasta",
    "a group of friends dance at an outdoor concert",
    "a boy jumps into a swimming pool on a sunny day",
    "a close up of a cat sleeping on a wooden table",
    "waves crash against the rocks under a cloudy sky",
    "a car drives slowly along a winding road in the forest",
    "a girl plays the violin in front of a small audience",
    "an old man reads a newspaper on a bench",
    "a horse gallops across an open field",
    "a person is typing on a laptop in a coffee shop",
    "the players shoot the basketball into the hoop",
    "a woman is doing yoga on a mat in her living room",
    "a bird flies over a calm lake at sunset",
    "a man is climbing a steep rock wall with a rope",
    "someone is playing the guitar and singing a song",
    "a baby laughs while playing with colourful toys",
    "a train passes through a station in the rain",
    "a skier slides down a white slope very fast",
    "a hand writes notes with a blue pen on paper",
    "a boat sails on the sea near a small island",
    "two men are boxing in a ring while people watch",
    "a teenager rides a skateboard down a ramp",
    "a time lapse of clouds moving over the hills",
    "a woman brushes her long hair in front of a mirror",
    "apply eye makeup, brush teeth, cut in kitchen, juggling balls, knitting",
    "playing cello, playing piano, pole vault, push ups, rock climbing indoor",
    "1 2 3 4 5 6 7 8 9 0 10 100 2023 3.5 seconds, minutes and hours.",
    "What is in this video? Who is there? Where is it? How many people?",
    "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. "
    "Please answer my questions.###Human: <Img><ImageHere></Img> Describe this image in detail.###Assistant: ",
    "<s>[INST] <Img><ImageHere></Img> Take a look at this image and describe what you notice. [/INST] ",
    "Please provide a detailed description of the picture.",
    "Could you describe the contents of this image for me?",
    "a video of a person, a photo of a scene, a picture of an object",
)


def write_tiny_models(out_dir: str | Path) -> dict[str, Path]:
    """Writes all four tiny models and the metric networks' stand-ins under `out_dir`; returns each part's path by name.

    The open_clip model's name is its config file's stem, as open_clip names the configs it registers.
    """
    out_dir = Path(out_dir)
    blip2 = write_tiny_blip2(out_dir / "blip2")
    open_clip = write_tiny_open_clip(out_dir / "open_clip")
    minigpt4 = write_tiny_minigpt4(out_dir / "minigpt4")
    stable_diffusion = write_tiny_stable_diffusion(out_dir / "stable_diffusion")
    extractors = write_standin_extractors(out_dir / "extractors")
    return {
        "blip2": blip2,
        "open_clip_config": open_clip.config_path,
        "open_clip_checkpoint": open_clip.checkpoint_path,
        "minigpt4_config": minigpt4.config_path,
        "minigpt4_blip2": minigpt4.blip2_checkpoint,
        "minigpt4_llama": minigpt4.llama_dir,
        "minigpt4_projection": minigpt4.projection_checkpoint,
        "stable_diffusion": stable_diffusion,
        "i3d": extractors["i3d"],
        "c3d": extractors["c3d"],
    }


def randomize_parameters(model: nn.Module, std: float = INIT_STD, seed: int = SEED) -> nn.Module:
    """Returns `model` with every parameter redrawn: norm weights 1 + std·r, everything else std·r, r ~ N(0, 1).

    One rule for every model, so the weights do not depend on each library's own init code (some of which zeroes
    layers or leaves them to lazy initialisation).
    """
    norm_weights = {
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()
    }
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            r = torch.randn(param.shape, generator=generator)
            param.copy_(1 + std * r if name in norm_weights else std * r)
    return model


def _emit_only_words(output_embeddings: nn.Module, vocab: dict[str, int], word: str) -> None:
    """Zeroes the output rows of every token that is not a whole word (regex `word`)."""
    # A zero row gives logit 0, below the best of the random logits, so greedy decoding never picks those tokens:
    # captions are never empty, never cut at once by an end token, and read as random words rather than byte soup.
    non_words = sorted(i for token, i in vocab.items() if not re.fullmatch(word, token))
    with torch.no_grad():
        output_embeddings.weight[non_words] = 0.0




# ---------------------------------------------------------------------------------------------------------------------
# BLIP-2 (transformers, OPT language model)


def write_tiny_blip2(out_dir: str | Path) -> Path:
    """Writes a Salesforce/blip2-opt-style directory (config, safetensors, generation config, processor and
    tokenizer files) and returns it; loads with `Blip2Processor` / `Blip2ForConditionalGeneration.from_pretrained`."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GPT2Tokenizer,
        OPTConfig,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = _train_byte_level_bpe(vocab_size=1024, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    # As facebook/opt-*: "</s>" doubles as BOS, EOS and UNK, and a BOS is prepended.
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        bos_token="</s>",
        eos_token="</s>",
        unk_token="</s>",
        pad_token="<pad>",
        add_bos_token=True,
    )
    image_processor = BlipImageProcessor(
        size={"height": 224, "width": 224},
        resample=3,  # bicubic, as LAVIS' blip_image_eval
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
        do_convert_rgb=True,
    )
    num_query_tokens = 8
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    tokenizer = processor.tokenizer  # now holds the added "<image>" token, as the hub repos do
    newline_id = tokenizer.convert_tokens_to_ids("Ċ")  # BLIP-2-OPT stops captions at "\n"
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")

    text_config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        word_embed_proj_dim=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=newline_id,
        pad_token_id=1,
    )
    config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 224,
            "patch_size": 14,
        },
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "encoder_hidden_size": 32,
            "cross_attention_frequency": 1,
        },
        text_config=text_config.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_id,
    )
    model = randomize_parameters(Blip2ForConditionalGeneration(config).eval(), std=CAPTIONER_INIT_STD)
    _emit_only_words(model.get_output_embeddings(), tokenizer.get_vocab(), word=r"Ġ[a-z]+")
    with quiet_transformers_progress():
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    # The hub repos also carry the vocabulary files of the pure-Python GPT-2 tokenizer.
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return out_dir


def _train_byte_level_bpe(
    vocab_size: int, special_tokens: list[str]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Returns (vocab ordered by id, merges) of a GPT-2-style byte-level BPE trained on the fixed corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    return vocab, merges


# ---------------------------------------------------------------------------------------------------------------------
# open_clip


@dataclass(frozen=True)
class TinyOpenClip:
    """Where the tiny open_clip model is: register `config_path` with `open_clip.add_model_config`, then create
    `model_name` with `pretrained=str(checkpoint_path)`."""

    model_name: str
    config_path: Path
    checkpoint_path: Path


OPEN_CLIP_MODEL_NAME = "vidrd-tiny-ViT-16"


def write_tiny_open_clip(out_dir: str | Path) -> TinyOpenClip:
    """Writes an open_clip model-config JSON (tiny ViT and text tower) and a torch.save'd state_dict checkpoint."""
    from open_clip.model import CLIP

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        # open_clip's built-in tokenizer always emits ids of the full 49408-entry CLIP vocabulary.
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    }
    config_path = out_dir / f"{OPEN_CLIP_MODEL_NAME}.json"  # open_clip names a config after its file stem
    config_path.write_text(json.dumps(model_config, indent=4))
    model = randomize_parameters(CLIP(**model_config).eval(), std=EMBEDDER_INIT_STD)
    checkpoint_path = out_dir / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), checkpoint_path)
    return TinyOpenClip(OPEN_CLIP_MODEL_NAME, config_path, checkpoint_path)


# ---------------------------------------------------------------------------------------------------------------------
# MiniGPT-4 (Vicuna v0 variant): see shared/specs/minigpt4.md


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
    vocab = _write_llama_tokenizer_files(out_dir)
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
    _emit_only_words(model.get_output_embeddings(), vocab, word=r"▁[a-z]+")
    with quiet_transformers_progress():
        model.save_pretrained(out_dir)
    return hidden_size


def _write_llama_tokenizer_files(out_dir: Path) -> dict[str, int]:
    """Trains a LLaMA-style sentencepiece BPE (byte fallback; <unk>=0, <s>=1, </s>=2) on the fixed corpus, writes
    tokenizer.model and a Vicuna-v0-style tokenizer config; returns the vocabulary (piece → id)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_TOKENIZER_CORPUS),
        model_writer=model,
        model_type="bpe",
        vocab_size=1024,
        hard_vocab_limit=False,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "pad_token": None,
        "sp_model_kwargs": {},
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps({**config, **special}, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    pieces = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    return {pieces.id_to_piece(i): i for i in range(pieces.get_piece_size())}


# ---------------------------------------------------------------------------------------------------------------------
# Stable Diffusion 2.1-base layout (diffusers)

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


def clip_bpe_vocabulary(vocab_size: int) -> tuple[dict[str, int], list[str]]:
    """Returns (vocab, merges) of the CLIP BPE cut to `vocab_size` entries, built from open_clip's bundled BPE file
    exactly as CLIP builds its full 49408-entry vocabulary: 256 byte symbols, the same with "</w>", the first merges,
    then <|startoftext|> and <|endoftext|>."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    num_merges = vocab_size - 2 * 256 - 2
    if num_merges < 0:
        raise ValueError(f"vocab_size must be at least 514 (bytes, bytes</w>, two specials), got {vocab_size}")
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 1 + num_merges]  # line 0 is a header
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


# ---------------------------------------------------------------------------------------------------------------------
# Stand-ins for stylegan-v's metric networks (I3D for FVD, C3D for IS)


class StandinI3D(nn.Module):
    """A tiny network with the call signature of stylegan-v's `i3d_torchscript.pt`: uint8 `[B, 3, T, H, W]` in;
    `rescale` maps [0, 255] to [-1, 1], `resize` resizes frames bilinearly to 224×224; returns 32 features
    (`return_features`) or 400 Kinetics-style logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(2, 16, 16), stride=(2, 16, 16))
        self.features = nn.Linear(16, 32)
        self.logits = nn.Linear(32, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            b, c, t, h, w = x.shape
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            frames = nn.functional.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
            x = frames.reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4)
        h = torch.tanh(self.conv(x)).flatten(2)  # [B, 8, positions]
        features = self.features(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))
        return features if return_features else self.logits(features)


class StandinC3D(nn.Module):
    """A tiny network with the call signature of stylegan-v's `c3d_ucf101.pt`: uint8 `[B, 3, 16, 112, 112]` in,
    softmax probabilities over the 101 UCF-101 classes out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(4, 16, 16), stride=(4, 16, 16))
        self.classes = nn.Linear(16, 101)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x.float() / 127.5 - 1.0)).flatten(2)
        logits = self.classes(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))
        return torch.softmax(logits, dim=1)


def write_standin_extractors(out_dir: str | Path) -> dict[str, Path]:
    """Writes TorchScript stand-ins for the FVD and IS networks, `i3d_torchscript.pt` and `c3d_ucf101.pt`, under
    `out_dir` and returns their paths by kind ("i3d", "c3d"). Seeded weights: the same files on every run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"i3d": out_dir / "i3d_torchscript.pt", "c3d": out_dir / "c3d_ucf101.pt"}
    # Wide draws (std 1): at 0.02 every video would get nearly the same features and the same class probabilities.
    for kind, module in (("i3d", StandinI3D()), ("c3d", StandinC3D())):
        with warnings.catch_warnings():  # torch deprecates TorchScript; the files it stands in for are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.script(randomize_parameters(module.eval(), std=1.0)).save(str(paths[kind]))
    return paths
