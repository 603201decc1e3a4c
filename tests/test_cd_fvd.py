"""Content-debiased FVD: VideoMAE features from a transformers folder (the demo's tiny one in the real format)."""

import numpy as np
import pytest
import torch

from vidrd_io.video import write_mp4
from vidrd_model.eval.evaluate import EvalSettings, compute_fvd
from vidrd_model.eval.extractors import load_extractor, videomae_features
from vidrd_model.eval.videos import list_videos, load_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def videomae(tmp_path_factory):
    from vidrd_demo.models.videomae import write_tiny_videomae

    return write_tiny_videomae(tmp_path_factory.mktemp("videomae"))


@pytest.fixture(scope="module")
def video_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for side, brightness in (("real", 0), ("generated", 60)):
        for i in range(4):
            base = rng.integers(0, 196, (40, 96, 3), dtype=np.uint8) + brightness
            write_mp4(root / side / f"{side}{i}.mp4", np.stack([base[:, 2 * k: 2 * k + 48] for k in range(16)]), 8)
    return root


def test_videomae_features_through_the_head_give_the_models_own_logits(videomae):
    """Our pooled features, fed to the classifier head, equal transformers' forward on the same pixels: the
    features are fc_norm(mean of the last hidden states), VideoMAE-v2's forward_features."""
    ext = load_extractor("videomae", videomae)
    rng = np.random.default_rng(1)
    videos = rng.integers(0, 256, (2, 16, 32, 32, 3), dtype=np.uint8)  # already the model's size: no resize
    features = videomae_features(ext, videos)
    pixels = torch.from_numpy(videos).permute(0, 1, 4, 2, 3).float() / 255  # [B, T, C, H, W] in [0, 1]
    with torch.no_grad():
        logits = ext.module(pixel_values=pixels).logits.double().numpy()
        from_features = ext.module.classifier(torch.from_numpy(features).float()).double().numpy()
    assert features.shape == (2, 32) and np.allclose(from_features, logits, atol=1e-5)
    assert len(ext.sha256) == 64
    with pytest.raises(ValueError, match="takes 16 frames, got 8"):
        videomae_features(ext, videos[:, :8])


def test_cd_fvd_is_the_frechet_distance_of_videomae_features_and_has_its_receipt(videomae, video_sets):
    from vidrd_model.eval.fvd import feature_statistics, frechet_distance

    settings = EvalSettings(num_frames=16, resolution=32, batch_size=4, extractor="videomae")
    result = compute_fvd(video_sets / "generated", video_sets / "real", videomae, settings, progress=False)
    ext = load_extractor("videomae", videomae)

    def stats(folder):
        return feature_statistics(videomae_features(ext, np.stack([load_clip(r, 16, 32) for r in list_videos(folder)])))

    expected = frechet_distance(*stats(video_sets / "generated"), *stats(video_sets / "real"))
    assert result["fvd"] == pytest.approx(expected, rel=1e-5) and expected > 0
    assert result["receipt"]["metric"] == "cd-fvd" and result["receipt"]["extractor"]["kind"] == "videomae"
    assert result["videomae"]["sha256"] == ext.sha256
    same = compute_fvd(video_sets / "real", video_sets / "real", videomae, settings, progress=False)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6)


def _v2_state(hidden=32, depth=2, mlp=37, classes=5, patch=16, tubelet=2, seed=0):
    """A random state dict in VideoMAE-v2's fine-tuned VisionTransformer layout (its key names and shapes)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return 0.2 * torch.randn(*shape, generator=g)

    state = {"patch_embed.proj.weight": rand(hidden, 3, tubelet, patch, patch), "patch_embed.proj.bias": rand(hidden),
             "fc_norm.weight": 1 + rand(hidden), "fc_norm.bias": rand(hidden), "head.weight": rand(classes, hidden),
             "head.bias": rand(classes)}
    for i in range(depth):
        state.update({f"blocks.{i}.norm1.weight": 1 + rand(hidden), f"blocks.{i}.norm1.bias": rand(hidden),
                      f"blocks.{i}.attn.qkv.weight": rand(3 * hidden, hidden), f"blocks.{i}.attn.q_bias": rand(hidden),
                      f"blocks.{i}.attn.v_bias": rand(hidden), f"blocks.{i}.attn.proj.weight": rand(hidden, hidden),
                      f"blocks.{i}.attn.proj.bias": rand(hidden), f"blocks.{i}.norm2.weight": 1 + rand(hidden),
                      f"blocks.{i}.norm2.bias": rand(hidden), f"blocks.{i}.mlp.fc1.weight": rand(mlp, hidden),
                      f"blocks.{i}.mlp.fc1.bias": rand(mlp), f"blocks.{i}.mlp.fc2.weight": rand(hidden, mlp),
                      f"blocks.{i}.mlp.fc2.bias": rand(hidden)})
    return state


def _v2_features(state, x, heads, depth):
    """VideoMAE-v2's forward_features written out from its paper code's equations, apart from transformers:
    tubelet conv, + sinusoid table, pre-norm blocks (qkv bias = [q_bias, 0, v_bias], softmax(q·kᵀ/√d)), mean over
    tokens, fc_norm. `x`: float [B, 3, T, H, W] in [0, 1]."""
    import torch.nn.functional as F

    tokens = F.conv3d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                      stride=state["patch_embed.proj.weight"].shape[2:]).flatten(2).transpose(1, 2)
    n, d = tokens.shape[1:]
    angle = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d) // 2) / d)[None]
    table = np.where(np.arange(d) % 2 == 0, np.sin(angle), np.cos(angle))
    h = tokens + torch.tensor(table, dtype=torch.float32)
    for i in range(depth):
        p = {k[len(f"blocks.{i}."):]: v for k, v in state.items() if k.startswith(f"blocks.{i}.")}
        y = F.layer_norm(h, (d,), p["norm1.weight"], p["norm1.bias"], eps=1e-6)
        qkv = F.linear(y, p["attn.qkv.weight"], torch.cat([p["attn.q_bias"], torch.zeros(d), p["attn.v_bias"]]))
        q, k, v = qkv.reshape(len(h), n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attention = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        h = h + F.linear((attention @ v).transpose(1, 2).reshape(len(h), n, d), p["attn.proj.weight"],
                         p["attn.proj.bias"])
        y = F.layer_norm(h, (d,), p["norm2.weight"], p["norm2.bias"], eps=1e-6)
        h = h + F.linear(F.gelu(F.linear(y, p["mlp.fc1.weight"], p["mlp.fc1.bias"])), p["mlp.fc2.weight"],
                         p["mlp.fc2.bias"])
    return F.layer_norm(h.mean(1), (d,), state["fc_norm.weight"], state["fc_norm.bias"], eps=1e-6)


def test_a_converted_videomae_v2_checkpoint_gives_the_features_of_videomae_v2s_own_forward(tmp_path, capsys):
    from cli.eval import main
    from tests.conftest import run_cli

    state = _v2_state()
    torch.save({"model": state}, tmp_path / "vit_v2.pth")
    code, _, err = run_cli(main, capsys, "convert-videomae", tmp_path / "vit_v2.pth", "--heads", "2", "--image-size",
                           "32", "--out", tmp_path / "videomae")
    assert code == 0, err
    ext = load_extractor("videomae", tmp_path / "videomae")
    videos = np.random.default_rng(2).integers(0, 256, (2, 16, 32, 32, 3), dtype=np.uint8)
    expected = _v2_features(state, torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 255, heads=2, depth=2)
    assert np.allclose(videomae_features(ext, videos), expected.double().numpy(), atol=1e-4)
    state["blocks.0.gamma_1"] = torch.ones(32)  # layer scale: transformers' VideoMAE has no place for it
    torch.save(state, tmp_path / "scaled.pth")
    code, _, err = run_cli(main, capsys, "convert-videomae", tmp_path / "scaled.pth", "--heads", "2", "--out",
                           tmp_path / "other")
    assert code == 2 and "blocks.0.gamma_1" in err and not (tmp_path / "other").exists()
