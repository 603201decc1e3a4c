"""LoRA adapters on the VidRD U-Net: diffusers' attention-processor and PEFT adapter API, `vidrd-train --lora-rank`
(only adapters train; the model folder holds lora/ beside the unchanged U-Net) and `vidrd-sample --lora`."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.bench_unet import TINY
from cli.sample import main as sample_main
from tests.test_train import _reset_accelerate, tiny_config
from tests.tiny_sd import tiny_stable_diffusion
from tests.train_corpus import write_corpus
from vidrd_model import train as train_module
from vidrd_model.pipeline import VidRDPipeline
from vidrd_model.train import add_lora
from vidrd_model.unet import VideoUNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, 4, 8, 8, generator=g), torch.tensor([10]), torch.randn(1, 77, 32, generator=g)


def test_attention_processors_of_every_attention_can_be_read_and_set():
    from diffusers.models.attention_processor import AttnProcessor

    unet = VideoUNet(**TINY)
    processors = unet.attn_processors
    assert any("temp_attn" in name for name in processors) and any("attn2" in name for name in processors)
    x, t, text = _inputs()
    before = unet(x, t, text).sample
    unet.set_attn_processor(AttnProcessor())  # the plain processor: the same attention, computed another way
    assert torch.allclose(unet(x, t, text).sample, before, atol=1e-5)


def test_lora_adapts_every_attention_projection_starts_as_the_identity_and_alone_trains():
    unet = VideoUNet(**TINY)
    x, t, text = _inputs()
    before = unet(x, t, text).sample
    trainable = add_lora(unet, rank=2)
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[0] for n in trainable}  # the attention modules adapted
    assert any(n.endswith("temp_attn") for n in adapted) and any(n.endswith("attn1") for n in adapted)
    assert all(not p.requires_grad for n, p in unet.named_parameters() if n not in trainable)
    assert torch.equal(unet(x, t, text).sample, before)  # lora_B starts at zero


def test_saved_adapters_load_into_a_fresh_unet_and_reproduce_its_output(tmp_path):
    unet = VideoUNet(**TINY)
    fresh = copy.deepcopy(unet)
    add_lora(unet, rank=2)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    unet.save_lora_adapter(tmp_path, safe_serialization=True)
    keys = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    fresh.load_lora_adapter(str(tmp_path), weight_name="pytorch_lora_weights.safetensors", prefix=None)
    x, t, text = _inputs(1)
    assert torch.allclose(fresh(x, t, text).sample, unet(x, t, text).sample, atol=1e-6)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    sd = tiny_stable_diffusion(tmp_path_factory)
    manifest = write_corpus(tmp_path_factory.mktemp("lora_corpus"))
    run = tmp_path_factory.mktemp("lora_run")
    config = tiny_config(sd, manifest, run, lora_rank=2, learning_rate=1e-2, lr_warmup_steps=0)
    model = train_module.train(config)
    _reset_accelerate()
    return run, model


def test_lora_training_changes_only_the_adapters_and_writes_them_beside_the_unchanged_unet(lora_run):
    run, model = lora_run
    trained = load_file(run / "checkpoint-000004" / "state" / "trainable.safetensors")
    assert trained and all("lora_" in name for name in trained)
    assert (model / "lora" / "pytorch_lora_weights.safetensors").is_file()
    base = load_file(run / "base" / "unet" / "diffusion_pytorch_model.safetensors")
    saved = load_file(model / "unet" / "diffusion_pytorch_model.safetensors")
    assert base.keys() == saved.keys() and all(torch.equal(base[k], saved[k]) for k in base)
    lora_b = [v for k, v in load_file(model / "lora" / "pytorch_lora_weights.safetensors").items() if "lora_B" in k]
    assert any(v.abs().max() > 0 for v in lora_b)  # trained away from its zero start


def test_vidrd_sample_loads_the_adapters_and_records_them(lora_run, tmp_path, capsys):
    run, model = lora_run
    common = ["--model", str(model), "--prompt", "a red ball", "--clips", "1", "--frames", "2", "--steps", "2",
              "--no-progress"]
    assert sample_main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert sample_main([*common, "--lora", str(model / "lora"), "--out", str(tmp_path / "lora")]) == 0
    record = json.loads(next((tmp_path / "lora").glob("*.json")).read_text())
    assert record["model"]["lora"]["sha256"] and record["model"]["lora"]["scale"] == 1.0
    plain = VidRDPipeline.from_pretrained(model, load_lora=False)
    adapted = VidRDPipeline.from_pretrained(model, load_lora=False).load_lora(model / "lora")
    default = VidRDPipeline.from_pretrained(model)  # the folder's lora/ loads by default: its U-Net is the base
    x, t, text = torch.randn(1, 4, 2, 2, 2), torch.tensor([500]), torch.randn(1, 77, 32)
    assert not torch.allclose(plain.unet(x, t, text).sample, adapted.unet(x, t, text).sample)
    assert torch.equal(default.unet(x, t, text).sample, adapted.unet(x, t, text).sample)
    assert sample_main([*common, "--lora", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "--lora" in capsys.readouterr().err

