"""Frame embedders: the weight-free colour histogram and open_clip from a local config + checkpoint."""

import numpy as np
import pytest

from vidrd_data.models.embedders import EmbedderError, HistogramEmbedder, OpenClipEmbedder, make_embedder


def _scene(seed, h=72, w=128):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
    return np.asarray(np.kron(small, np.ones((h // 3, w // 4, 1))), np.uint8)


def test_histogram_embeddings_are_unit_rows_equal_for_equal_frames_and_far_apart_across_scenes():
    frames = np.stack([_scene(0), _scene(0), np.roll(_scene(0), 3, axis=1), _scene(1)])
    e = HistogramEmbedder().embed(frames)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    similarity = e @ e.T
    assert similarity[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert similarity[0, 2] > 0.95 > 0.5 > similarity[0, 3]  # a small move keeps it; another scene does not


def test_histogram_similarity_falls_smoothly_as_a_colour_fades():
    grey = np.stack([np.full((36, 64, 3), v, np.uint8) for v in range(100, 181, 4)])
    e = HistogramEmbedder().embed(grey)
    to_first = e @ e[0]
    steps = e[1:] @ e[:-1].T
    assert np.all(np.diff(to_first) <= 1e-6) and to_first[5] < to_first[1] and to_first[-1] < 0.05  # further: less alike
    assert np.diag(steps).min() > 0.8  # soft bins: crossing a bin edge is not a jump to 0 as with hard bins


def test_histogram_tells_where_colours_are_not_only_which():
    left_right = _scene(2)
    mirrored = left_right[:, ::-1]
    e = HistogramEmbedder().embed(np.stack([left_right, mirrored]))
    assert e[0] @ e[1] < 0.9


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from vidrd_demo.models.open_clip import write_tiny_open_clip

    return write_tiny_open_clip(tmp_path_factory.mktemp("open_clip"))


def test_open_clip_embedder_loads_local_config_and_checkpoint_through_open_clip(tiny_clip):
    import open_clip
    import torch
    from PIL import Image

    embedder = OpenClipEmbedder(config=tiny_clip.config_path, checkpoint=tiny_clip.checkpoint_path, batch_size=2)
    frames = np.stack([_scene(0, 64, 96), _scene(1, 64, 96), _scene(2, 64, 96)])
    e = embedder.embed(frames)  # two forward passes of batch_size 2
    assert embedder.frame_size == 64 and e.shape == (3, 16)
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_clip.model_name, pretrained=str(tiny_clip.checkpoint_path))
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]), normalize=True)
    assert np.allclose(e, expected.numpy(), atol=1e-5)


def test_unknown_embedder_and_missing_weights_are_refused_with_a_reason(tmp_path, tiny_clip):
    with pytest.raises(EmbedderError, match="unknown embedder 'dino'"):
        make_embedder("dino")
    with pytest.raises(EmbedderError, match="checkpoint not found"):
        make_embedder("clip", clip_config=str(tiny_clip.config_path), clip_checkpoint=str(tmp_path / "none.bin"))
