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
