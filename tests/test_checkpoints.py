"""Loading the release's ModelT2V.pth (Lightning checkpoint) strictly, and the documented key mappings."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

from vidrd_model.checkpoints import (
    load_release_checkpoint,
    map_release_text_encoder_keys,
    rename_legacy_vae_keys,
    unet_config_from_release,
)
from vidrd_model.unet import VideoUNet

SPECS = Path(__file__).resolve().parents[1].parent / "shared" / "specs"
GOLDEN = SPECS / "golden"
SPEC_FILE = SPECS / "vidrd_official_state_dict.json"
requires_golden = pytest.mark.skipif(
    not GOLDEN.is_dir(), reason=f"official golden vectors not found at {GOLDEN} (../shared/specs/golden)"
)
requires_spec = pytest.mark.skipif(not SPEC_FILE.is_file(), reason=f"release key/shape spec not found at {SPEC_FILE}")

TINY_UNET = {
    "sample_size": 8,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock3D", "DownBlock3D"),
    "up_block_types": ("UpBlock3D", "CrossAttnUpBlock3D"),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "num_attention_heads": (2, 4),
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "projection_dim": 16,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}


def release_text_encoder_keys(model: CLIPTextModel) -> dict:
    """Returns `model`'s weights under transformers-4.30 names, as the release saved them (with position_ids)."""
    state = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in model.state_dict().items()}
    state["text_model.embeddings.position_ids"] = torch.arange(model.config.max_position_embeddings)[None]
    return state


def save_release_checkpoint(path: Path, unet_state: dict, text_state: dict, extra: dict | None = None) -> Path:
    """Saves a PyTorch-Lightning-shaped checkpoint like the release's ModelT2V.pth."""
    state_dict = {f"unet.{k}": v for k, v in unet_state.items()}
    state_dict.update({f"text_encoder.{k}": v for k, v in text_state.items()})
    state_dict.update(extra or {})
    torch.save(
        {
            "epoch": 3,
            "global_step": 12000,
            "pytorch-lightning_version": "1.9.0",
            "state_dict": state_dict,
            "hyper_parameters": {"add_temp_embed": True, "add_temp_conv": True, "resolution": 256},
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        path,
    )
    return path


def random_tiny_models(seed: int = 0):
    torch.manual_seed(seed)
    unet = VideoUNet(**TINY_UNET)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_CLIP))
    with torch.no_grad():
        for param in [*unet.parameters(), *text_encoder.parameters()]:
            param.normal_()
    return unet, text_encoder


@requires_spec
def test_release_checkpoint_with_the_spec_keys_and_shapes_lands_every_tensor_in_place(tmp_path):
    """Full size: every released key (1,150 U-Net, 373 text encoder) loads strictly into the right parameter.

    Each tensor is one random value broadcast to its shape (stride 0), so the file stays tiny and a tensor that
    landed in the wrong place is caught by its value.
    """
    spec = json.loads(SPEC_FILE.read_text())
    generator = torch.Generator().manual_seed(0)
    values = {}

    def fake(prefix: str, shapes: dict) -> dict:
        out = {}
        for key, shape in shapes.items():
            if key.endswith("position_ids"):
                out[key] = torch.arange(shape[-1])[None]
                continue
            values[prefix + key] = torch.randn(1, generator=generator)
            out[key] = values[prefix + key].expand(shape)
        return out

    extra = {f"vae.{k}": v for k, v in fake("vae.", spec["vae"]).items()}
    extra["clip.logit_scale"] = torch.zeros(())
    path = save_release_checkpoint(
        tmp_path / "ModelT2V.pth", fake("unet.", spec["unet"]), fake("text_encoder.", spec["text_encoder"]), extra
    )
    with torch.device("meta"):
        unet = VideoUNet()
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec["config_used"]["text_encoder"]))

    unused = load_release_checkpoint(path, unet, text_encoder, assign=True)

    assert unused == sorted(extra)
    loaded = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    assert len(loaded) == len(spec["unet"]) == 1150
    text_state = text_encoder.state_dict()
    for key, value in values.items():
        if key.startswith("vae."):
            continue
        if key.startswith("unet."):
            tensor = loaded[key]
        else:
            tensor = text_state[map_release_key(key[len("text_encoder."):], text_state)]
        assert tensor.device.type == "cpu" and tensor.untyped_storage().nbytes() == 4, key  # the loaded broadcast
        assert tensor[(0,) * tensor.ndim] == value, key


def map_release_key(key: str, target: dict) -> str:
    return next(iter(map_release_text_encoder_keys({key: None}, target.keys())))


@requires_golden
def test_golden_unet_saved_as_a_release_checkpoint_reproduces_the_official_output(tmp_path):
    meta = json.loads((GOLDEN / "unet_tiny.json").read_text())
    io = load_file(GOLDEN / "unet_tiny_io.safetensors")
    _, text_encoder = random_tiny_models()
    path = save_release_checkpoint(
        tmp_path / "ModelT2V.pth", load_file(GOLDEN / "unet_tiny.safetensors"), release_text_encoder_keys(text_encoder)
    )
    unet = VideoUNet(**unet_config_from_release(meta["config"])).eval()
    fresh_text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_CLIP))
    assert load_release_checkpoint(path, unet, fresh_text_encoder) == []
    with torch.no_grad():
        out = unet(io["x"], io["timestep"], io["encoder_hidden_states"]).sample
    assert (out - io["out"]).abs().max().item() <= 2e-5
    expected = text_encoder.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in fresh_text_encoder.state_dict().items())


def test_release_checkpoint_round_trip_places_every_unet_and_text_encoder_tensor(tmp_path):
    unet, text_encoder = random_tiny_models(seed=1)
    path = save_release_checkpoint(
        tmp_path / "ModelT2V.pth", unet.state_dict(), release_text_encoder_keys(text_encoder)
    )
    fresh_unet, fresh_text_encoder = random_tiny_models(seed=2)
    load_release_checkpoint(path, fresh_unet, fresh_text_encoder)
    for source, target in ((unet, fresh_unet), (text_encoder, fresh_text_encoder)):
        expected = source.state_dict()
        assert all(torch.equal(v, expected[k]) for k, v in target.state_dict().items())


def test_release_checkpoint_missing_a_unet_key_is_refused(tmp_path):
    unet, text_encoder = random_tiny_models()
    state = unet.state_dict()
    del state["down_blocks.0.temp_convs.0.convs.15.weight"]
    path = save_release_checkpoint(tmp_path / "ModelT2V.pth", state, release_text_encoder_keys(text_encoder))
    with pytest.raises(KeyError, match="1 missing keys.*temp_convs.0.convs.15.weight"):
        load_release_checkpoint(path, unet, text_encoder)


def test_release_checkpoint_for_another_architecture_is_refused(tmp_path):
    unet, text_encoder = random_tiny_models()
    path = save_release_checkpoint(tmp_path / "ModelT2V.pth", unet.state_dict(), {})
    without_temp_conv = VideoUNet(**{**TINY_UNET, "add_temp_conv": False})
    with pytest.raises(KeyError, match="unexpected keys.*temp_convs"):
        load_release_checkpoint(path, without_temp_conv)


class NotAWeight:
    """Stands in for any object a malicious pickle could construct."""


def test_checkpoint_holding_arbitrary_python_objects_is_not_unpickled(tmp_path):
    unet, _ = random_tiny_models()
    path = tmp_path / "ModelT2V.pth"
    torch.save({"state_dict": {f"unet.{k}": v for k, v in unet.state_dict().items()}, "extra": NotAWeight()}, path)
    with pytest.raises(RuntimeError, match="weights_only=True"):
        load_release_checkpoint(path, unet)


def test_text_encoder_keys_follow_the_installed_transformers_layout():
    release = {
        "text_model.embeddings.position_ids": torch.arange(3)[None],
        "text_model.final_layer_norm.weight": torch.ones(2),
    }
    assert map_release_text_encoder_keys(release, ["final_layer_norm.weight"]) == {
        "final_layer_norm.weight": release["text_model.final_layer_norm.weight"]
    }
    wrapped = ["text_model.final_layer_norm.weight", "text_model.embeddings.position_ids"]
    assert map_release_text_encoder_keys(release, wrapped).keys() == set(wrapped)


def test_legacy_vae_attention_names_map_to_current_diffusers_names_only_in_the_mid_block():
    legacy = {
        "encoder.mid_block.attentions.0.query.weight": 1,
        "decoder.mid_block.attentions.0.proj_attn.bias": 2,
        "decoder.mid_block.attentions.0.group_norm.weight": 3,
        "decoder.up_blocks.0.temp_convs.0.convs.3.weight": 4,
    }
    assert rename_legacy_vae_keys(legacy) == {
        "encoder.mid_block.attentions.0.to_q.weight": 1,
        "decoder.mid_block.attentions.0.to_out.0.bias": 2,
        "decoder.mid_block.attentions.0.group_norm.weight": 3,
        "decoder.up_blocks.0.temp_convs.0.convs.3.weight": 4,
    }
