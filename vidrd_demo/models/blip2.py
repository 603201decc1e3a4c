"""A tiny BLIP-2 (transformers, OPT language model) laid out as a Salesforce/blip2-opt-* hub directory."""

from __future__ import annotations

import json
from pathlib import Path

from vidrd_data.models.captioners import quiet_transformers_progress
from vidrd_demo.models.tokenizer_files import train_byte_level_bpe
from vidrd_demo.models.weights import CAPTIONER_INIT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, emit_only_words, randomize_parameters


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
    vocab, merges = train_byte_level_bpe(vocab_size=1024, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
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
    emit_only_words(model.get_output_embeddings(), tokenizer.get_vocab(), word=r"Ġ[a-z]+")
    with quiet_transformers_progress():
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    # The hub repos also carry the vocabulary files of the pure-Python GPT-2 tokenizer.
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return out_dir
