"""Real tokenizer files built offline: OPT's byte-level BPE and LLaMA's sentencepiece trained on a small fixed corpus,
CLIP's BPE vocabulary cut from the one open_clip ships in its wheel."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

# Sentences the OPT and LLaMA tokenizers are trained on: caption-like English plus MiniGPT-4's prompt strings, so
# those prompts tokenize into whole pieces as they do with the real vocabularies.
TOKENIZER_CORPUS = (
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


def train_byte_level_bpe(
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
    tokenizer.train_from_iterator(TOKENIZER_CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    return vocab, merges



def write_llama_tokenizer_files(out_dir: Path) -> dict[str, int]:
    """Trains a LLaMA-style sentencepiece BPE (byte fallback; <unk>=0, <s>=1, </s>=2) on the fixed corpus, writes
    tokenizer.model and a Vicuna-v0-style tokenizer config; returns the vocabulary (piece → id)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TOKENIZER_CORPUS),
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
