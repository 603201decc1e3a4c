"""The metrics library of vidrd_model.eval: known answers for FVD, IS and CLIPSIM, caching, resume, failures."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from vidrd_demo.models.extractors import write_standin_extractors
from vidrd_demo.models.open_clip import write_tiny_open_clip
from vidrd_io.video import write_mp4
from vidrd_model.eval.clipsim import ClipScorer, clipsim
from vidrd_model.eval.evaluate import EvalSettings, compute_clipsim, compute_fvd, compute_is
from vidrd_model.eval.extractors import (
    MissingExtractor,
    c3d_probabilities,
    i3d_features,
    load_extractor,
)
from vidrd_io.video import VideoError
from vidrd_model.eval.features import decode_then_run, extract
from vidrd_model.eval.fvd import StatisticsMismatch, feature_statistics, frechet_distance, real_statistics
from vidrd_model.eval.inception import inception_score
from vidrd_model.eval.videos import VideoRef, VideoTooShort, inputs_digest, list_videos, load_clip

SMALL = EvalSettings(num_frames=8, resolution=32, batch_size=2)


def _video(path, seed, num_frames=18, size=(40, 48), fps=8):
    """Write a video of a random texture sliding 2 px a frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0], size[1] * 2, 3), dtype=np.uint8)
    frames = np.stack([base[:, i * 2 : i * 2 + size[1]] for i in range(num_frames)])
    write_mp4(path, frames, fps)


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    return write_standin_extractors(tmp_path_factory.mktemp("extractors"))


@pytest.fixture(scope="module")
def video_sets(tmp_path_factory):
    """Two folders of 4 videos of 18 frames each ("real", "generated"), the generated ones with prompt sidecars."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(4):
        _video(root / "real" / f"r{i}.mp4", seed=i)
        _video(root / "generated" / f"g{i}.mp4", seed=100 + i)
        (root / "generated" / f"g{i}.json").write_text(json.dumps({"prompt": f"a dog runs on the beach {i}"}))
    return root


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # Commuting covariances: Tr((Σ₁Σ₂)^½) = Σ √(a_i b_i), so FD = ‖Δμ‖² + Σ (√a_i − √b_i)².
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert expected == pytest.approx(1 + 6.25 + 4 + 1)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_eigendecomposition_for_general_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    # Independent route: Tr((Σ₁Σ₂)^½) = Tr((Σ₁^½ Σ₂ Σ₁^½)^½), the root of a symmetric PSD matrix, by eigh.
    w, v = np.linalg.eigh(sigma1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    trace_root = np.sum(np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_rejects_a_root_with_large_imaginary_part():
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


def test_feature_statistics_are_mean_and_covariance_divided_by_n_as_stylegan_v():
    features = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    mu, sigma = feature_statistics(features)
    assert mu == pytest.approx([2.0, 2.0])
    assert sigma == pytest.approx(np.array([[8.0, 6.0], [6.0, 6.0]]) / 3)  # divided by n = 3, not n − 1
    # stylegan-v's FeatureStats.get_mean_cov: Σ = (Σᵢ xᵢxᵢᵀ) / n − μμᵀ
    assert sigma == pytest.approx(features.T @ features / 3 - np.outer(mu, mu), rel=1e-12)


# ---------------------------------------------------------------- Inception Score


def test_inception_score_of_confident_uniform_predictions_is_the_class_count():
    probs = np.tile(np.eye(5), (4, 1))  # every class predicted with certainty, equally often
    assert inception_score(probs, splits=1) == pytest.approx((5.0, 0.0))


def test_inception_score_of_identical_rows_is_one():
    probs = np.tile([0.2, 0.3, 0.5], (20, 1))
    assert inception_score(probs, splits=4) == pytest.approx((1.0, 0.0))


def test_inception_score_of_a_hand_computed_two_by_two_case():
    # p(y) = (0.75, 0.25); KL rows: log(4/3) and ½·log(2/3) + ½·log 2.
    expected = math.exp(0.5 * (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)))
    mean, std = inception_score(np.array([[1.0, 0.0], [0.5, 0.5]]), splits=1)
    assert mean == pytest.approx(expected, rel=1e-12)
    assert mean == pytest.approx(1.24081, abs=1e-5)
    assert std == 0.0


def test_inception_score_std_is_over_splits_in_order_without_shuffle():
    probs = np.concatenate([np.tile(np.eye(2), (2, 1)), np.tile([0.5, 0.5], (4, 1))])  # IS 2, then IS 1
    assert inception_score(probs, splits=2, shuffle_seed=None) == pytest.approx((1.5, 0.5))


def test_inception_score_matches_stylegan_v_shuffled_splits():
    probs = np.random.default_rng(3).dirichlet(np.ones(7), size=23)
    reference = probs.copy()  # stylegan-v's video_inception_score, written out
    np.random.RandomState(42).shuffle(reference)
    scores = []
    for i in range(4):
        part = reference[i * 23 // 4 : (i + 1) * 23 // 4]
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    assert inception_score(probs, splits=4) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-12)
    assert inception_score(probs, splits=4) != pytest.approx(inception_score(probs, splits=4, shuffle_seed=None))


def test_inception_score_refuses_fewer_videos_than_splits():
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.eye(3), splits=10)


# ---------------------------------------------------------------- extractors


def test_missing_extractor_message_is_one_line_naming_the_file(tmp_path):
    for kind, name, metric in (("i3d", "i3d_torchscript.pt", "FVD"), ("c3d", "c3d_ucf101.pt", "IS")):
        for path in (None, tmp_path / name):
            with pytest.raises(MissingExtractor) as info:
                load_extractor(kind, path)
            message = str(info.value)
            assert "\n" not in message and name in message and metric in message and "dropbox" in message
            assert isinstance(info.value, FileNotFoundError)


def test_standin_i3d_rescales_and_resizes_as_documented(extractors):
    ext = load_extractor("i3d", extractors["i3d"])
    videos = np.random.default_rng(0).integers(0, 256, (2, 4, 20, 30, 3), dtype=np.uint8)
    x = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # [B, 3, T, H, W] in [-1, 1]
    frames = x.permute(0, 2, 1, 3, 4).reshape(8, 3, 20, 30)
    resized = torch.nn.functional.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    with torch.no_grad():
        manual = ext.module(resized.reshape(2, 4, 3, 224, 224).permute(0, 2, 1, 3, 4), return_features=True)
    features = i3d_features(ext, videos)
    assert features.dtype == np.float64 and features.shape == (2, 32)
    assert features == pytest.approx(manual.double().numpy(), abs=1e-5)
    assert np.abs(features[0] - features[1]).max() > 1e-3  # different videos, different features


def test_standin_extractors_are_deterministic(extractors, tmp_path):
    again = write_standin_extractors(tmp_path)
    for kind in ("i3d", "c3d"):
        assert load_extractor(kind, again[kind]).sha256 == load_extractor(kind, extractors[kind]).sha256


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_c3d_probabilities_are_checked(extractors, tmp_path):
    videos = np.random.default_rng(0).integers(0, 256, (3, 16, 112, 112, 3), dtype=np.uint8)
    probs = c3d_probabilities(load_extractor("c3d", extractors["c3d"]), videos)
    assert probs.shape == (3, 101) and probs.sum(axis=1) == pytest.approx(np.ones(3))

    class Logits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float().mean(dim=(1, 2, 3, 4)).unsqueeze(1).repeat(1, 101)

    torch.jit.script(Logits()).save(str(tmp_path / "logits.pt"))
    with pytest.raises(ValueError, match="probabilities"):
        c3d_probabilities(load_extractor("c3d", tmp_path / "logits.pt"), videos)
    with pytest.raises(ValueError, match="16, 112, 112"):
        c3d_probabilities(load_extractor("c3d", extractors["c3d"]), videos[:, :8])


# ---------------------------------------------------------------- videos


def test_list_videos_reads_folders_recursively_with_prompt_sidecars(video_sets, tmp_path):
    folder = tmp_path / "videos"
    shutil.copytree(video_sets, folder)
    (folder / "generated" / ".g9.mp4.tmp.mp4").write_bytes(b"half-written")  # what a killed write_mp4 leaves
    refs = list_videos(folder)
    assert [r.key for r in refs] == [f"generated/g{i}.mp4" for i in range(4)] + [f"real/r{i}.mp4" for i in range(4)]
    assert refs[0].text == "a dog runs on the beach 0" and refs[4].text is None
    with pytest.raises(ValueError, match="neither"):
        list_videos(tmp_path / "nowhere")


def test_list_videos_reads_manifest_rows(video_sets, tmp_path):
    from vidrd_data.run.runner import run_stage
    from vidrd_data.stages.videos import prepare

    job = prepare(str(video_sets / "real"))
    run_stage(job.stage, job.params, job.inputs, tmp_path / "m", root=job.root, input_desc=job.input_desc,
              progress=False)
    refs = list_videos(tmp_path / "m")
    assert sorted(r.path for r in refs) == sorted(str(p) for p in (video_sets / "real").glob("*.mp4"))
    assert all(r.start == 0.0 and r.end > 1.0 for r in refs)


def test_load_clip_resizes_crops_strides_and_pads(tmp_path):
    _video(tmp_path / "v.mp4", seed=0, num_frames=10, size=(40, 48))
    clip = load_clip(VideoRef("v", str(tmp_path / "v.mp4")), num_frames=4, size=20, stride=2)
    assert clip.shape == (4, 20, 20, 3) and clip.dtype == np.uint8
    # stride 2 from the start: frames 0, 2, 4, 6 (texture shifted 2 px a frame), compared after the same resize
    again = load_clip(VideoRef("v", str(tmp_path / "v.mp4")), num_frames=7, size=20, stride=1)
    assert np.array_equal(clip, again[[0, 2, 4, 6]])
    assert np.abs(clip[1].astype(int) - clip[0]).mean() > 5
    with pytest.raises(VideoTooShort):
        load_clip(VideoRef("v", str(tmp_path / "v.mp4")), num_frames=6, size=20, stride=2)
    padded = load_clip(VideoRef("v", str(tmp_path / "v.mp4")), num_frames=6, size=20, stride=2, pad=True)
    last = load_clip(VideoRef("v", str(tmp_path / "v.mp4")), num_frames=9, size=20)[8]
    assert np.array_equal(padded[:4], clip) and np.array_equal(padded[4], last) and np.array_equal(padded[5], last)
    late = load_clip(VideoRef("v", str(tmp_path / "v.mp4"), start=0.5), num_frames=2, size=20)  # 8 fps: frame 4
    assert np.array_equal(late[0], again[4])


def test_load_clip_matching_a_frame_rate_takes_each_videos_own_stride(tmp_path):
    from vidrd_model.eval.videos import fps_stride

    assert (fps_stride(25, 8), fps_stride(29.97, 8), fps_stride(8, 8), fps_stride(4, 8), fps_stride(24, 8)) == (
        3, 4, 1, 1, 3)
    _video(tmp_path / "v24.mp4", seed=0, num_frames=24, size=(40, 48), fps=24)
    ref = VideoRef("v", str(tmp_path / "v24.mp4"))
    every = load_clip(ref, num_frames=24, size=20)
    matched = load_clip(ref, num_frames=8, size=20, match_fps=8)  # 24 fps → every 3rd frame
    assert np.array_equal(matched, every[0:24:3])


# ---------------------------------------------------------------- cached, resumable extraction


def _refs(n):
    return [VideoRef(f"k{i}", f"/nonexistent/{i}.mp4") for i in range(n)]


def _key_features(refs):
    return np.array([[int(r.key[1:]), int(r.key[1:]) ** 2, 1.0] for r in refs])


def test_extract_resumes_from_saved_chunks_after_an_interruption(tmp_path):
    refs = _refs(7)
    calls = []

    def interrupted(chunk):
        calls.append(chunk)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _key_features(chunk)

    with pytest.raises(KeyboardInterrupt):
        extract(refs, interrupted, cache_dir=tmp_path, settings={"a": 1}, batch_size=3, progress=False)
    resumed = extract(refs, _key_features, cache_dir=tmp_path, settings={"a": 1}, batch_size=3, progress=False)
    fresh = extract(refs, _key_features, cache_dir=None, settings={"a": 1}, batch_size=3, progress=False)
    assert resumed.reused_chunks >= 1 and fresh.reused_chunks == 0
    assert resumed.keys == fresh.keys == [r.key for r in refs]
    assert np.array_equal(resumed.features, fresh.features)
    again = extract(refs, interrupted, cache_dir=tmp_path, settings={"a": 1}, batch_size=3, progress=False)
    assert again.reused_chunks == 3 and len(calls) == 2  # everything from the cache, fn never called
    changed = extract(refs, _key_features, cache_dir=tmp_path, settings={"a": 2}, batch_size=3, progress=False)
    assert changed.reused_chunks == 0


def _decoding(loads, batches, broken=(), unreadable=()):
    """A decode_then_run feature fn over _refs: `broken` keys raise VideoError, `unreadable` ones OSError."""

    def load(ref):
        loads.append(ref.key)
        if ref.key in broken:
            raise VideoError("cannot decode\nsecond line")
        if ref.key in unreadable:
            raise OSError("Input/output error")
        return np.array([int(ref.key[1:])])

    def network(clips):
        batches.append(len(clips))
        return np.array([[k, k**2, 1.0] for k in clips[:, 0]])

    return decode_then_run(load, network)


def test_extract_records_videos_that_cannot_be_decoded_and_caches_only_content_failures(tmp_path):
    loads, batches = [], []
    fn = _decoding(loads, batches, broken={"k4"}, unreadable={"k1"})
    result = extract(_refs(6), fn, cache_dir=tmp_path, settings={}, batch_size=4, progress=False)
    assert result.keys == ["k0", "k2", "k3", "k5"]
    assert np.array_equal(result.features, _key_features(_refs(6))[[0, 2, 3, 5]])
    assert result.failed == [("k1", "OSError: Input/output error"), ("k4", "VideoError: cannot decode")]
    assert loads == [f"k{i}" for i in range(6)] and batches == [3, 1]  # each video decoded once, one pass a chunk
    assert result.transient_failures
    # k4's chunk is cached with its failure; k1's chunk (an OSError, maybe transient) is not, and is tried again
    again = extract(_refs(6), _decoding(loads, batches, broken={"k4"}), cache_dir=tmp_path, settings={},
                    batch_size=4, progress=False)
    assert again.reused_chunks == 1 and again.failed == [("k4", "VideoError: cannot decode")]
    assert again.keys == ["k0", "k1", "k2", "k3", "k5"] and not again.transient_failures


def test_a_network_error_propagates_and_caches_nothing(tmp_path):
    loads = []

    def load(ref):
        loads.append(ref.key)
        return np.zeros(1)

    def out_of_memory(clips):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    fn = decode_then_run(load, out_of_memory)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        extract(_refs(5), fn, cache_dir=tmp_path, settings={}, batch_size=2, progress=False)
    assert loads == ["k0", "k1"] and not list(tmp_path.rglob("*.npz"))  # no retry alone, no chunk saved
    with pytest.raises(ValueError, match=r"shape \(1, 3\) for 2 videos"):  # a network's bad output is no failure
        extract(_refs(2), lambda chunk: _key_features(chunk[:1]), cache_dir=tmp_path, settings={}, batch_size=2,
                progress=False)
    assert not list(tmp_path.rglob("*.npz"))


def test_a_truncated_cached_chunk_is_recomputed_with_a_warning(tmp_path, caplog):
    extract(_refs(4), _key_features, cache_dir=tmp_path, settings={}, batch_size=2, progress=False)
    (chunk,) = [p for p in tmp_path.rglob("chunk-000001.npz")]
    chunk.write_bytes(chunk.read_bytes()[:40])  # as a full disk or a killed copy leaves it
    calls = []
    again = extract(_refs(4), lambda c: calls.append(c) or _key_features(c), cache_dir=tmp_path, settings={},
                    batch_size=2, progress=False)
    assert again.reused_chunks == 1 and [r.key for r in calls[0]] == ["k2", "k3"]
    assert np.array_equal(again.features, _key_features(_refs(4)))
    assert "ignoring unreadable cached chunk" in caplog.text and "BadZipFile" in caplog.text
    assert extract(_refs(4), _key_features, cache_dir=tmp_path, settings={}, batch_size=2,
                   progress=False).reused_chunks == 2  # rewritten whole


def test_real_statistics_are_reused_until_a_setting_or_an_input_changes(extractors, tmp_path):
    for i in range(3):
        _video(tmp_path / "real" / f"r{i}.mp4", seed=i)
    ext = load_extractor("i3d", extractors["i3d"])
    cache = tmp_path / "real_stats.npz"
    settings = SMALL.as_dict()

    def stats(overwrite=True, **changes):
        return real_statistics(list_videos(tmp_path / "real"), ext, {**settings, **changes}, cache_path=cache,
                               batch_size=2, progress=False, overwrite=overwrite)

    first = stats()
    assert not first.reused and cache.is_file() and first.count == 3
    second = stats()
    assert second.reused and np.array_equal(second.mu, first.mu) and np.array_equal(second.sigma, first.sigma)
    # settings that do not change the real clips keep the cache: the generated side's stride included
    assert stats(is_splits=3, batch_size=1, stride=3).reused
    with pytest.raises(StatisticsMismatch, match=r"\(real_stride 1 -> 2\); pass --overwrite-real-stats"):
        stats(overwrite=False, real_stride=2)
    assert stats(overwrite=False).reused  # refused, so left as it was
    assert not stats(real_stride=2, num_frames=5).reused
    assert not stats().reused  # the cache now holds the real-stride-2 statistics
    _video(tmp_path / "real" / "r1.mp4", seed=50)
    with pytest.raises(StatisticsMismatch, match="other real videos"):
        stats(overwrite=False)
    changed = stats()
    assert not changed.reused and not np.array_equal(changed.mu, first.mu)
    assert stats().reused
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: nothing to keep, recomputed even without overwrite
    assert not stats(overwrite=False).reused and stats(overwrite=False).reused
    cache.write_text("not statistics")  # someone else's file: not replaced without overwrite
    with pytest.raises(StatisticsMismatch, match="not a real-statistics file"):
        stats(overwrite=False)
    assert cache.read_text() == "not statistics"


# ---------------------------------------------------------------- end to end


def test_compute_fvd_is_zero_against_itself_and_reports_a_corrupt_video(extractors, video_sets, tmp_path):
    same = compute_fvd(video_sets / "real", video_sets / "real", extractors["i3d"], SMALL, progress=False)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-6) and same["num_real"] == 4

    generated = list_videos(video_sets / "generated")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 10)
    generated.append(VideoRef("broken.mp4", str(tmp_path / "broken.mp4")))
    result = compute_fvd(generated, video_sets / "real", extractors["i3d"], SMALL, progress=False,
                         real_stats_path=tmp_path / "real.npz", cache_dir=tmp_path / "cache")
    assert result["fvd"] > 0.01 and result["num_generated"] == 4
    (failure,) = result["failed"]
    assert failure["key"] == "broken.mp4" and failure["videos"] == "generated" and failure["reason"]
    assert result["i3d"]["sha256"] == load_extractor("i3d", extractors["i3d"]).sha256
    assert result["settings"]["num_frames"] == 8 and result["real_stats_reused"] is False
    again = compute_fvd(generated, video_sets / "real", extractors["i3d"], SMALL, progress=False,
                        real_stats_path=tmp_path / "real.npz", cache_dir=tmp_path / "cache")
    assert again["real_stats_reused"] is True and again["fvd"] == result["fvd"]


def _independent_fvd(first: np.ndarray, second: np.ndarray) -> float:
    """FVD written out apart from fvd.py: numpy moments (covariance divided by N), and Tr √(Σ₁Σ₂) as the sum of the
    square roots of Σ₁Σ₂'s eigenvalues (real and ≥ 0 for a product of covariances), no scipy.linalg.sqrtm."""
    mu1, mu2 = first.mean(axis=0), second.mean(axis=0)
    c1 = (first - mu1).T @ (first - mu1) / len(first)
    c2 = (second - mu2).T @ (second - mu2) / len(second)
    eigenvalues = np.linalg.eigvals(c1 @ c2)
    root_trace = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * root_trace)


def test_compute_fvd_equals_an_independent_numpy_computation_on_the_same_clips(extractors, video_sets):
    settings = EvalSettings(num_frames=8, resolution=32, batch_size=3)
    result = compute_fvd(video_sets / "generated", video_sets / "real", extractors["i3d"], settings, progress=False)
    ext = load_extractor("i3d", extractors["i3d"])

    def features(folder):
        return i3d_features(ext, np.stack([load_clip(r, 8, 32) for r in list_videos(folder)]))

    expected = _independent_fvd(features(video_sets / "generated"), features(video_sets / "real"))
    assert result["fvd"] == pytest.approx(expected, rel=1e-5) and expected > 0.01


def test_compute_is_equals_a_hand_computed_score_of_the_c3d_probabilities(extractors, video_sets, tmp_path):
    """One split of the 4 videos, not shuffled: exp(mean_x KL(p(y|x) ‖ p(y))) written out with numpy logs."""
    short_video = tmp_path / "short.mp4"
    _video(short_video, seed=7, num_frames=10)
    settings = EvalSettings(is_splits=1, is_shuffle_seed=None, batch_size=4)
    result = compute_is(video_sets / "generated", extractors["c3d"], settings, progress=False)
    clips = np.stack([load_clip(r, 16, 112) for r in list_videos(video_sets / "generated")])
    with torch.no_grad():
        p = load_extractor("c3d", extractors["c3d"]).module(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).double()
    p = p.numpy()
    marginal = p.mean(axis=0)
    mean_kl = np.mean([np.sum(row * (np.log(row) - np.log(marginal))) for row in p])
    assert result["num_generated"] == 4 and result["splits"] == 1
    # compared as log IS (the mean KL): the stand-in's IS is near 1, so its distance from 1 is what must agree
    assert math.log(result["is_mean"]) == pytest.approx(mean_kl, rel=1e-5) and mean_kl > 1e-3
    assert result["is_std"] == 0.0
    assert result["settings"]["num_frames"] == 16 and result["settings"]["resolution"] == 112
    settings = EvalSettings(is_splits=2, batch_size=4)
    short = list_videos(video_sets / "generated")[:1] + [VideoRef("short.mp4", str(short_video))]
    with pytest.raises(ValueError, match=r"only 1 of 2 generated videos could be read, need 2; first failure: short"):
        compute_is(short, extractors["c3d"], settings, progress=False)


# ---------------------------------------------------------------- CLIPSIM


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    tiny = write_tiny_open_clip(tmp_path_factory.mktemp("clip"))
    return {"config": tiny.config_path, "checkpoint": tiny.checkpoint_path}


def _independent_cosines(tiny_clip, frames, text):
    import open_clip
    from PIL import Image

    open_clip.add_model_config(tiny_clip["config"])
    name = tiny_clip["config"].stem
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(tiny_clip["checkpoint"]))
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames]))
        words = model.encode_text(open_clip.get_tokenizer(name)([text]))
    image = image / image.norm(dim=1, keepdim=True)
    words = words / words.norm(dim=1, keepdim=True)
    return (image @ words.T)[:, 0].double().numpy()


def test_clipsim_is_the_mean_frame_cosine_and_clipscore_its_clamped_hundredfold(tiny_clip):
    rng = np.random.default_rng(0)
    videos = [(rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8), "a dog runs on the beach"),
              (rng.integers(0, 256, (2, 48, 80, 3), dtype=np.uint8), "a man plays the guitar")]
    scorer = ClipScorer(**tiny_clip)
    cosines = [_independent_cosines(tiny_clip, frames, text) for frames, text in videos]
    assert scorer.frame_text_cosine(*videos[0]) == pytest.approx(cosines[0], abs=1e-6)

    raw = clipsim(scorer, videos, "raw")
    assert raw == {"clipsim": pytest.approx(np.mean([c.mean() for c in cosines]), abs=1e-6),
                   "convention": "raw", "videos": 2}
    score = clipsim(scorer, videos, "clipscore")["clipsim"]
    assert score == pytest.approx(np.mean([np.maximum(100 * c, 0).mean() for c in cosines]), abs=1e-4)
    with pytest.raises(ValueError, match="convention"):
        clipsim(scorer, videos, "percent")


def test_compute_clipsim_reads_prompts_from_sidecars(tiny_clip, video_sets):
    settings = EvalSettings(num_frames=4, resolution=64)
    result = compute_clipsim(video_sets / "generated", tiny_clip, settings, progress=False)
    refs = list_videos(video_sets / "generated")
    expected = np.mean([_independent_cosines(tiny_clip, load_clip(r, 4, 64), r.text).mean() for r in refs])
    assert result["clipsim"] == pytest.approx(expected, abs=1e-6)
    assert result["videos"] == 4 and result["failed"] == [] and result["convention"] == "raw"
    unprompted = refs + list_videos(video_sets / "real")[:1]
    mixed = compute_clipsim(unprompted, tiny_clip, settings, progress=False)
    assert mixed["clipsim"] == result["clipsim"] and mixed["failed"][0]["key"] == "r0.mp4"
    assert "no prompt" in mixed["failed"][0]["reason"]


def test_inputs_digest_changes_with_span_and_file(tmp_path):
    _video(tmp_path / "a.mp4", seed=0)
    ref = VideoRef("a", str(tmp_path / "a.mp4"))
    digest = inputs_digest([ref])
    assert inputs_digest([ref]) == digest
    assert inputs_digest([VideoRef("a", str(tmp_path / "a.mp4"), start=1.0)]) != digest
    _video(tmp_path / "a.mp4", seed=1)
    assert inputs_digest([ref]) != digest


class _FixedCosines:
    """A scorer whose frame cosines are given, to pin clipsim's averaging and clamping by hand."""

    def __init__(self, cosines):
        self.cosines = cosines

    def frame_text_cosine(self, frames, text):
        return np.asarray(self.cosines[text])


def test_clipsim_averages_frames_then_videos_and_clipscore_clamps_negatives():
    scorer = _FixedCosines({"a": [-0.2, 0.4], "b": [0.3]})
    videos = [(None, "a"), (None, "b")]
    assert clipsim(scorer, videos, "raw")["clipsim"] == pytest.approx((0.1 + 0.3) / 2)
    assert clipsim(scorer, videos, "clipscore")["clipsim"] == pytest.approx((20.0 + 30.0) / 2)
    positive = _FixedCosines({"a": [0.2, 0.4], "b": [0.3]})  # no negative cosine: clipscore is 100 × raw
    assert clipsim(positive, videos, "raw")["clipsim"] == pytest.approx(0.3)
    assert clipsim(positive, videos, "clipscore")["clipsim"] == pytest.approx(30.0)
