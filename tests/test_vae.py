"""TemporalAutoencoderKL: official golden outputs, loading SD / release folders, temporal decoding and chunking."""

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from vidrd_model.vae import TemporalAutoencoderKL

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "golden"
requires_golden = pytest.mark.skipif(
    not GOLDEN.is_dir(), reason=f"official golden vectors not found at {GOLDEN} (../shared/specs/golden)"
)
GOLDEN_ATOL = 2e-5

TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 16,
}
LEGACY_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def randomize_(model: torch.nn.Module, seed: int, only: str | None = None) -> torch.nn.Module:
    """Overwrites parameters (those whose name contains `only`, or all): norms 1+0.02r, everything else 0.02r."""
    generator = torch.Generator().manual_seed(seed)
    norm_weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if only is None or only in name:
                r = 0.02 * torch.randn(param.shape, generator=generator)
                param.copy_(1 + r if name in norm_weights else r)
    return model


def to_legacy_names(state_dict: dict) -> dict:
    """Renames today's VAE mid-block attention keys back to diffusers 0.14's, as the release's files have them."""
    renamed = {}
    for key, value in state_dict.items():
        for new, old in LEGACY_NAMES.items():
            if ".mid_block.attentions.0." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = value
    return renamed


def write_release_vae_folder(folder: Path, config: dict, state_dict: dict) -> Path:
    """Writes a folder shaped like the release's `vae_finetuned`: config.json + diffusion_pytorch_model.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "TemporalAutoencoderKL", "_diffusers_version": "0.14.0", **config}
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(state_dict, folder / "diffusion_pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def sd_vae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd_vae")
    torch.manual_seed(0)
    randomize_(AutoencoderKL(**TINY_VAE), seed=1).save_pretrained(folder)
    return folder


def latents(frames=4, clips=1, seed=2):
    return torch.randn(clips * frames, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- official golden vectors


@pytest.fixture(scope="module")
def golden_vae(tmp_path_factory):
    """The golden VAE loaded the way a user loads the release's `vae_finetuned` folder."""
    meta = json.loads((GOLDEN / "vae_tiny.json").read_text())
    folder = write_release_vae_folder(
        tmp_path_factory.mktemp("vae_finetuned"), meta["config"], load_file(GOLDEN / "vae_tiny.safetensors")
    )
    return TemporalAutoencoderKL.from_pretrained_2d(folder).eval(), load_file(GOLDEN / "vae_tiny_io.safetensors")


@requires_golden
@pytest.mark.parametrize(
    "output, latent, num_frames",
    [
        ("decode_num_frames_4", "z", 4),
        ("decode_default_num_frames", "z", 1),
        ("decode_b2_num_frames_4", "z_b2", 4),
    ],
)
def test_golden_vae_decode_matches_official_code(golden_vae, output, latent, num_frames):
    vae, io = golden_vae
    with torch.no_grad():
        out = vae.decode(io[latent], num_frames=num_frames).sample
    assert out.shape == io[output].shape
    assert (out - io[output]).abs().max().item() <= GOLDEN_ATOL


@requires_golden
def test_golden_vae_encoder_matches_official_code(golden_vae):
    vae, io = golden_vae
    with torch.no_grad():
        posterior = vae.encode(io["img"]).latent_dist
    assert (posterior.mean - io["encode_mean"]).abs().max().item() <= GOLDEN_ATOL
    assert (posterior.logvar - io["encode_logvar"]).abs().max().item() <= GOLDEN_ATOL


@requires_golden
def test_golden_release_decoding_without_frame_count_loses_the_temporal_layers(golden_vae):
    """The release's path (num_frames=1) and the temporal path differ as much as the official code measured."""
    vae, io = golden_vae
    with torch.no_grad():
        temporal = vae.decode(io["z"], num_frames=4).sample
        per_frame = vae.decode(io["z"], num_frames=1).sample
    measured = ((temporal - per_frame).norm() / per_frame.norm()).item()
    expected = json.loads((GOLDEN / "vae_tiny.json").read_text())["checks"]["rel_L2_num_frames_4_vs_default"]
    assert measured == pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------- loading and identity at init


def test_plain_sd_vae_loads_with_temporal_layers_that_leave_decoding_unchanged(sd_vae_dir):
    sd_vae = AutoencoderKL.from_pretrained(sd_vae_dir).eval()
    vae = TemporalAutoencoderKL.from_pretrained_2d(sd_vae_dir).eval()
    # 2 up blocks × 2 resnets × 3 stages × (GroupNorm, Conv3d) × (weight, bias)
    assert sum("temp_convs" in k for k in vae.state_dict()) == 2 * 2 * 3 * 2 * 2
    z = latents(frames=4)
    with torch.no_grad():
        expected = sd_vae.decode(z).sample
        assert torch.equal(vae.decode(z, num_frames=1).sample, expected)
        assert torch.equal(vae.decode(z, num_frames=4).sample, expected)


def test_release_folder_with_legacy_attention_names_loads_every_tensor(sd_vae_dir, tmp_path):
    source = randomize_(TemporalAutoencoderKL(**TINY_VAE), seed=3)
    folder = write_release_vae_folder(tmp_path, {**TINY_VAE, "add_temp_conv": True},
                                      to_legacy_names(source.state_dict()))
    assert any(".query." in k for k in torch.load(folder / "diffusion_pytorch_model.bin", weights_only=True))
    loaded = TemporalAutoencoderKL.from_pretrained_2d(folder)
    expected = source.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())


def test_release_folder_with_an_unknown_key_is_refused(tmp_path):
    state = {**TemporalAutoencoderKL(**TINY_VAE).state_dict(), "decoder.extra.weight": torch.zeros(1)}
    folder = write_release_vae_folder(tmp_path, TINY_VAE, state)
    with pytest.raises(KeyError, match="decoder.extra.weight"):
        TemporalAutoencoderKL.from_pretrained_2d(folder)


def test_save_pretrained_round_trip_keeps_weights_and_temporal_config(tmp_path):
    vae = randomize_(TemporalAutoencoderKL(**TINY_VAE), seed=4)
    vae.save_pretrained(tmp_path)
    reloaded = TemporalAutoencoderKL.from_pretrained(tmp_path)
    assert reloaded.config.add_temp_conv is True
    expected = vae.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in reloaded.state_dict().items())


# ---------------------------------------------------------------- temporal decoding


@pytest.fixture(scope="module")
def trained_vae(sd_vae_dir):
    vae = TemporalAutoencoderKL.from_pretrained_2d(sd_vae_dir).eval()
    return randomize_(vae, seed=5, only="temp_convs")


def test_temporal_layers_mix_frames_within_a_clip_only(trained_vae):
    z = latents(frames=4, clips=2)
    moved = z.clone()
    moved[3] += 1.0  # last frame of clip 0
    with torch.no_grad():
        out, out_moved = (trained_vae.decode(v, num_frames=4).sample for v in (z, moved))
        per_frame, per_frame_moved = (trained_vae.decode(v, num_frames=1).sample for v in (z, moved))
    assert not torch.allclose(out_moved[0], out[0], atol=1e-4)  # frame 0 sees frame 3
    assert torch.allclose(out_moved[4:], out[4:], atol=1e-6)  # clip 1 does not
    assert torch.equal(per_frame_moved[0], per_frame[0])  # frame by frame, as released
    assert not torch.allclose(out, per_frame, atol=1e-3)


def test_decode_chunks_equal_decoding_each_chunk_as_its_own_clip(trained_vae):
    z = latents(frames=4, clips=2)
    with torch.no_grad():
        whole = trained_vae.decode(z, num_frames=4).sample
        assert torch.allclose(trained_vae.decode(z, num_frames=4, decode_chunk_size=4).sample, whole, atol=1e-6)
        chunked = trained_vae.decode(z, num_frames=4, decode_chunk_size=3).sample.unflatten(0, (2, 4))
        clips = z.unflatten(0, (2, 4))
        first = trained_vae.decode(clips[:, :3].flatten(0, 1), num_frames=3).sample.unflatten(0, (2, 3))
        last = trained_vae.decode(clips[:, 3:].flatten(0, 1), num_frames=1).sample.unflatten(0, (2, 1))
        per_frame = trained_vae.decode(z, num_frames=1).sample
        per_frame_chunked = trained_vae.decode(z, num_frames=1, decode_chunk_size=3).sample
    assert torch.allclose(chunked, torch.cat([first, last], dim=1), atol=1e-6)
    assert torch.allclose(per_frame_chunked, per_frame, atol=1e-6)


def test_decode_rejects_rows_that_are_not_whole_clips(trained_vae):
    with pytest.raises(ValueError, match="whole number of clips"):
        trained_vae.decode(latents(frames=3), num_frames=2)


def test_enable_slicing_decodes_one_clip_at_a_time_to_the_same_frames(trained_vae, monkeypatch):
    z = latents(frames=4, clips=3)
    with torch.no_grad():
        whole = trained_vae.decode(z, num_frames=4).sample
        whole_frames = trained_vae.decode(z, num_frames=1).sample
        rows_seen = []
        real = trained_vae._decode_clips
        monkeypatch.setattr(trained_vae, "_decode_clips", lambda x, f: rows_seen.append(x.shape[0]) or real(x, f))
        trained_vae.enable_slicing()
        try:
            sliced = trained_vae.decode(z, num_frames=4).sample
            sliced_frames = trained_vae.decode(z, num_frames=1).sample
        finally:
            trained_vae.disable_slicing()
    assert rows_seen == [4, 4, 4] + [1] * 12  # a clip per decoder call; frame by frame: a row per call
    torch.testing.assert_close(sliced, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sliced_frames, whole_frames, atol=1e-5, rtol=1e-5)


def test_decoder_gradient_checkpointing_gives_the_gradients_of_plain_backprop(sd_vae_dir, monkeypatch):
    import vidrd_model.vae as vae_module

    vae = randomize_(TemporalAutoencoderKL.from_pretrained_2d(sd_vae_dir), seed=7, only="temp_convs").train()
    vae.requires_grad_(False)
    temporal = [p for n, p in vae.named_parameters() if "temp_convs" in n]
    for param in temporal:
        param.requires_grad_(True)
    z = latents(frames=4, clips=2)

    def gradients():
        torch.manual_seed(3)  # the same dropout masks in both runs (checkpointing replays the RNG on recompute)
        for param in temporal:
            param.grad = None
        vae.decode(z, num_frames=4).sample.square().mean().backward()
        return [param.grad.clone() for param in temporal]

    plain = gradients()
    vae.enable_gradient_checkpointing()
    recomputed = []
    real = vae_module.checkpoint

    def counting(*args, **kwargs):
        recomputed.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(vae_module, "checkpoint", counting)
    checkpointed = gradients()
    assert len(recomputed) > len(vae.decoder.up_blocks)  # every ResNet + Temp-Conv pair went through checkpoint
    assert any(g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
