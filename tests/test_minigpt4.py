"""MiniGPT-4 on transformers modules: checkpoint keys mapped by the spec's rules, the three tiny parts loaded through
the real loaders, the released prompt templates, preprocessing, batching, and the LLaMA-2 variant."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import SHARED
from vidrd_data.models.captioners.minigpt4 import (
    MiniGPT4Captioner,
    MiniGPT4Error,
    MiniGPT4Parts,
    minigpt4_to_transformers,
)
from vidrd_demo.models.minigpt4 import MiniGPT4Arch, minigpt4_blip2_shapes

KEY_TABLE = SHARED / "specs" / "minigpt4_to_transformers_keys.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny MiniGPT-4's three parts and its minigpt4.json (written once per session)."""
    from vidrd_demo.models.minigpt4 import write_tiny_minigpt4

    root = tmp_path_factory.getbasetemp() / "tiny_minigpt4"
    if not (root / "minigpt4.json").exists():
        write_tiny_minigpt4(root)
    return root


@pytest.fixture(scope="module")
def captioner(tiny):
    return MiniGPT4Captioner.from_config(tiny / "minigpt4.json")


def _images():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    halves = np.concatenate([np.zeros((90, 60, 3), np.uint8), np.full((90, 60, 3), 255, np.uint8)], axis=1)
    return [Image.fromarray(noise), Image.fromarray(halves), Image.fromarray(noise[::-1].copy())]


def test_released_checkpoint_keys_rename_onto_transformers_blip2_modules_as_the_spec_table():
    if not KEY_TABLE.is_file():
        pytest.skip(f"{KEY_TABLE} is absent (../shared is not part of a fresh clone)")
    table = json.loads(KEY_TABLE.read_text())
    arch = MiniGPT4Arch()  # the released sizes: 39 ViT blocks of 1408, a BERT-base Q-Former, 32 queries
    checkpoint = {k: torch.empty(s, device="meta") for k, s in minigpt4_blip2_shapes(arch).items()}
    # LAVIS extras MiniGPT-4 never uses, as some checkpoints carry them
    checkpoint |= {k: torch.empty(4, device="meta") for k in (
        "t5_proj.weight", "Qformer.cls.predictions.bias", "Qformer.bert.embeddings.word_embeddings.weight",
        "Qformer.bert.encoder.layer.0.intermediate.dense.weight", "Qformer.bert.encoder.layer.0.output.dense.bias")}
    renamed = minigpt4_to_transformers(checkpoint)

    expected = {v.split(" ")[0].split("[")[0] for k, v in table.items() if k != "Qformer.bert.embeddings.position_ids"}
    assert set(renamed) == expected
    from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel

    configs = arch.hf_configs()
    with torch.device("meta"):
        modules = {"vision_model": Blip2VisionModel(Blip2VisionConfig(**configs["vision_config"])),
                   "qformer": Blip2QFormerModel(Blip2QFormerConfig(**configs["qformer_config"]))}
    shapes = {f"{p}.{k}": tuple(v.shape) for p, m in modules.items() for k, v in m.state_dict().items()}
    shapes["query_tokens"] = (1, 32, 768)
    assert {k: tuple(v.shape) for k, v in renamed.items()} == shapes


def test_q_and_v_biases_become_one_qkv_bias_with_no_key_bias():
    q, v = torch.arange(3.0), torch.arange(3.0) + 10
    renamed = minigpt4_to_transformers({"visual_encoder.blocks.4.attn.q_bias": q, "visual_encoder.blocks.4.attn.v_bias": v})
    assert list(renamed) == ["vision_model.encoder.layers.4.self_attn.qkv.bias"]
    assert renamed["vision_model.encoder.layers.4.self_attn.qkv.bias"].tolist() == [0, 1, 2, 0, 0, 0, 10, 11, 12]


def test_tiny_parts_load_strictly_and_caption_a_batch_exactly_as_one_by_one(captioner, tiny):
    checkpoint = torch.load(tiny / "blip2_pretrained_flant5xxl.pth", weights_only=True)["model"]
    side = captioner.vision
    assert torch.equal(side.vision_model.post_layernorm.weight, checkpoint["ln_vision.weight"])
    assert side.vision_model.post_layernorm.eps == 1e-5 and side.vision_model.encoder.layers[0].layer_norm1.eps == 1e-6
    assert torch.equal(side.query_tokens, checkpoint["query_tokens"])
    projection = torch.load(tiny / "pretrained_minigpt4.pth", weights_only=True)["model"]
    assert torch.equal(captioner.llama_proj.weight, projection["llama_proj.weight"])

    images = _images()
    batch = captioner.caption(images, ["What is in this picture?", None, None])
    alone = [captioner.caption([image], [prompt])[0] for image, prompt in zip(images, ["What is in this picture?", None, None])]
    assert batch == alone  # left padding under a zero attention mask changes nothing
    assert all(batch) and len(set(batch)) == 3  # the image (and the question) reach the caption


def test_vicuna_prompt_is_the_released_template_with_one_bos_at_the_start(captioner):
    assert captioner.prompt(None) == (
        "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to "
        "you. Please answer my questions.###Human: <Img><ImageHere></Img> Describe this image in detail.###Assistant: "
    )
    [(before, after)] = captioner.prepare(_images()[:1])["pieces"]
    bos = captioner.tokenizer.bos_token_id
    assert before[0] == bos and (before + after).count(bos) == 1
    tokens = captioner.encode_images(captioner.prepare(_images()[:1])["pixel_values"])
    assert tokens.shape == (1, 8, captioner.llm.config.hidden_size)  # one token per query


def test_images_are_squashed_to_the_vit_size_bicubic_with_openai_clip_normalisation(captioner):
    image = _images()[0]
    pixels = captioner.prepare([image])["pixel_values"][0].numpy().transpose(1, 2, 0)
    expected = np.asarray(image.resize((224, 224), Image.BICUBIC), np.float32) / 255
    expected = (expected - [0.48145466, 0.4578275, 0.40821073]) / [0.26862954, 0.26130258, 0.27577711]
    assert np.abs(pixels - expected).max() < 0.02  # rounding of the 8-bit resize only


def test_projection_of_the_wrong_size_is_refused_naming_both_shapes(tiny, tmp_path):
    torch.save({"model": {"llama_proj.weight": torch.zeros(64, 31), "llama_proj.bias": torch.zeros(64)}},
               tmp_path / "proj.pth")
    parts = MiniGPT4Parts.from_json(tiny / "minigpt4.json")
    with pytest.raises(MiniGPT4Error, match=r"\(64, 31\), expected \(64, 32\)"):
        MiniGPT4Captioner(MiniGPT4Parts(**{**parts.__dict__, "projection": str(tmp_path / "proj.pth")}))


def test_blip2_checkpoint_missing_a_tensor_is_refused_not_left_random(tiny, tmp_path):
    checkpoint = torch.load(tiny / "blip2_pretrained_flant5xxl.pth", weights_only=True)
    del checkpoint["model"]["visual_encoder.blocks.1.mlp.fc2.weight"]
    torch.save(checkpoint, tmp_path / "blip2.pth")
    parts = MiniGPT4Parts.from_json(tiny / "minigpt4.json")
    with pytest.raises(MiniGPT4Error, match="1 missing tensor.*layers.1.mlp.fc2.weight"):
        MiniGPT4Captioner(MiniGPT4Parts(**{**parts.__dict__, "blip2": str(tmp_path / "blip2.pth")}))


def test_transformers_blip2_checkpoint_gives_the_same_vision_side_as_the_lavis_file(captioner, tiny, tmp_path):
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    config = json.loads((tiny / "minigpt4.json").read_text())
    text = {"model_type": "opt", "vocab_size": 64, "hidden_size": 16, "word_embed_proj_dim": 16, "ffn_dim": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64}
    model = Blip2ForConditionalGeneration(Blip2Config(
        vision_config=config["vision_config"], qformer_config=config["qformer_config"], text_config=text,
        num_query_tokens=config["num_query_tokens"]))
    lavis = minigpt4_to_transformers(torch.load(tiny / "blip2_pretrained_flant5xxl.pth", weights_only=True)["model"])
    model.load_state_dict(lavis, strict=False)
    model.save_pretrained(tmp_path / "blip2", max_shard_size="100KB")  # sharded: read through the index
    assert (tmp_path / "blip2" / "model.safetensors.index.json").is_file()

    parts = MiniGPT4Parts.from_json(tiny / "minigpt4.json")
    from_hf = MiniGPT4Captioner(MiniGPT4Parts(**{**parts.__dict__, "blip2": str(tmp_path / "blip2")}))
    pixels = captioner.prepare(_images())["pixel_values"]
    assert torch.allclose(from_hf.encode_images(pixels), captioner.encode_images(pixels))


def test_llama2_variant_projects_groups_of_four_prenorm_vit_tokens(tiny, tmp_path):
    parts = MiniGPT4Parts.from_json(tiny / "minigpt4.json")
    width = parts.vision_config["hidden_size"]
    generator = torch.Generator().manual_seed(0)
    torch.save({"model": {"llama_proj.weight": 0.3 * torch.randn(64, 4 * width, generator=generator),
                          "llama_proj.bias": torch.zeros(64)}}, tmp_path / "llama2_proj.pth")
    llama2 = MiniGPT4Captioner(MiniGPT4Parts(**{**parts.__dict__, "variant": "llama2",
                                                 "projection": str(tmp_path / "llama2_proj.pth")}))
    assert llama2.prompt("Q?").endswith("Please answer my questions.<s>[INST] <Img><ImageHere></Img> Q? [/INST] ")
    pixels = llama2.prepare(_images()[:2])["pixel_values"]
    tokens = llama2.encode_images(pixels)
    assert tokens.shape == (2, 64, 64)  # 16×16 patches, 4 per token
    ln_vision = torch.load(tiny / "blip2_pretrained_flant5xxl.pth", weights_only=True)["model"]
    with torch.no_grad():
        last = llama2.vision.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
        plain = torch.nn.functional.layer_norm(last, (width,), eps=1e-5)[:, 1:]
        assert torch.allclose(tokens, llama2.llama_proj(plain.reshape(2, 64, 4 * width)), atol=1e-5)
        # never the BLIP-2 file's trained ln_vision: this variant's MiniGPT-4 never loaded it
        trained = torch.nn.functional.layer_norm(
            last, (width,), ln_vision["ln_vision.weight"], ln_vision["ln_vision.bias"], eps=1e-5)[:, 1:]
        assert not torch.allclose(tokens, llama2.llama_proj(trained.reshape(2, 64, 4 * width)), atol=1e-3)
    assert all(llama2.caption(_images()[:2]))
