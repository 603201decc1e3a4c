"""The `segment` stage: frame sampling on stream timestamps, the cut and stitch rules, provenance, bad inputs,
captions through the real tiny MiniGPT-4 / BLIP-2 loaders, and cuts on real footage."""

import json
import re
from fractions import Fraction

import numpy as np
import pytest

from cli.data import main
from tests.conftest import shared_video
from vidrd_data import manifest as mf
from vidrd_demo.corpus import write_long_videos
from vidrd_data.ops.shots import cut_scores, manifest_cuts, segment_video
from vidrd_data.stages.segment import SegmentOptions, prepare
from vidrd_data.run.runner import run_stage
from vidrd_io.video import write_mp4

HISTOGRAM = {"embedder": "histogram"}


def _run(tmp_path, input, name="m", **options):
    job = prepare(str(input), **{**HISTOGRAM, **options})
    out = tmp_path / name
    run_stage(job.stage, job.params, job.inputs, out, root=job.root, input_desc=job.input_desc, progress=False)
    return mf.Manifest.open(out).read().to_pylist()


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    """The demo's long videos: distinct scenes joined by hard cuts, true cut times in cuts.json."""
    folder = write_long_videos(tmp_path_factory.mktemp("long"))
    return folder, json.loads((folder / "cuts.json").read_text())


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """The tiny open_clip, MiniGPT-4 and BLIP-2 models in their real formats (written once per session)."""
    from vidrd_demo.models.blip2 import write_tiny_blip2
    from vidrd_demo.models.minigpt4 import write_tiny_minigpt4
    from vidrd_demo.models.open_clip import write_tiny_open_clip

    root = tmp_path_factory.getbasetemp() / "tiny_models"
    if not (root / "done").exists():
        write_tiny_open_clip(root / "open_clip")
        write_tiny_minigpt4(root / "minigpt4")
        write_tiny_blip2(root / "blip2")
        (root / "done").touch()
    return root


# ---------------------------------------------------------------- the rules on arrays


def _decoded(scene_of_frame, fps=10.0, sample_every=5, jump_frames=(), change=40.0):
    """A span whose frame k belongs to scene `scene_of_frame[k]`: timestamps, frame changes, samples, embeddings."""
    n = len(scene_of_frame)
    timestamps = np.arange(n) / fps
    changes = np.full(n, 1.0)
    changes[list(jump_frames)] = change
    samples = np.arange(0, n, sample_every)
    scenes = np.asarray(scene_of_frame)[samples]
    embeddings = np.eye(8)[scenes]  # one orthogonal direction per scene: similarity 1 within, 0 across
    return timestamps, n / fps, changes, samples, embeddings


def _segment(decoded, **options):
    return segment_video(*decoded, SegmentOptions(**{**HISTOGRAM, "min_seconds": 0.5, **options}))


def test_cut_lands_on_the_frame_that_jumps_between_two_dissimilar_samples():
    scenes = [0] * 37 + [1] * 43
    seg = _segment(_decoded(scenes, jump_frames=[37]))
    assert [(s.start, s.stop) for s in seg.segments] == [(0, 37), (37, 80)]
    assert seg.time(37) == pytest.approx(3.7)  # not the sample at 4.0 s: the frame where the picture changed
    assert seg.segments[0].end_similarity == seg.segments[1].start_similarity == 0.0


def test_shot_change_between_similar_samples_is_merged_not_cut():
    decoded = _decoded([0] * 80, jump_frames=[37])  # a camera flash or a second view of the same scene
    seg = _segment(decoded)
    assert [(s.start, s.stop) for s in seg.segments] == [(0, 80)]
    assert seg.segments[0].rules == ["cut", "merge"] and len(seg.kept_inside["merge"]) == 1


def test_cut_too_soon_after_the_previous_one_is_not_taken():
    scenes = [0] * 30 + [1] * 10 + [2] * 40
    seg = _segment(_decoded(scenes, jump_frames=[30, 40]), min_shot_frames=15, transition_threshold=-1.0)
    assert [(s.start, s.stop) for s in seg.segments] == [(0, 30), (30, 80)]
    assert seg.segments[1].rules == ["cut", "min_shot"]


def test_gradual_change_without_a_jumping_frame_is_not_cut():
    scenes = [0] * 37 + [1] * 43  # the samples disagree but no single frame changes much: a fade or a pan
    seg = _segment(_decoded(scenes), transition_threshold=-1.0)
    assert [(s.start, s.stop) for s in seg.segments] == [(0, 80)]
    assert seg.cuts == []


def test_segment_whose_first_and_last_frames_differ_is_dropped_as_a_transition():
    scenes = [0] * 30 + [1] * 20 + [2] * 30  # a cut, then a gradual change inside the second shot
    seg = _segment(_decoded(scenes, jump_frames=[30]), halve_transitions=False)
    assert [(s.start, s.stop) for s in seg.segments] == [(0, 30)]
    assert seg.dropped == {"transition": 1}
    halved = _segment(_decoded(scenes, jump_frames=[30]))  # the default keeps the halves on either side of it
    assert [(s.start, s.stop) for s in halved.segments] == [(0, 30), (30, 43), (55, 80)]
    assert halved.dropped == {"transition": 1}


def test_near_static_segment_is_dropped_only_when_asked():
    decoded = _decoded([0] * 40 + [1] * 40, jump_frames=[40])
    assert len(_segment(decoded).segments) == 2
    seg = _segment(decoded, drop_static=True)
    assert seg.segments == [] and seg.dropped == {"static": 2}


def test_long_segment_is_split_evenly_and_trim_takes_both_ends():
    seg = _segment(_decoded([0] * 100, fps=10.0), max_seconds=4.0, trim=0.5)
    spans = [(round(seg.time(s.start), 3), round(seg.time(s.stop), 3)) for s in seg.segments]
    assert spans == [(0.5, 3.5), (3.5, 6.5), (6.5, 9.5)]  # 9 s after trimming → 3 parts of 3 s
    assert all(s.rules == ["cut", "trim", "split"] for s in seg.segments)


def test_segment_shorter_than_min_seconds_is_dropped():
    seg = _segment(_decoded([0] * 15 + [1] * 65, jump_frames=[15]), min_seconds=2.0)
    assert [(s.start, s.stop) for s in seg.segments] == [(15, 80)]
    assert seg.dropped == {"min_seconds": 1}


def test_cut_scores_match_each_reference_cut_at_most_once():
    scores = cut_scores([1.0, 1.2, 5.0, 9.0], [1.1, 5.4, 7.0])
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 2, 1)
    assert scores["f1"] == pytest.approx(4 / 7)


# ---------------------------------------------------------------- the stage on video files


def test_segments_are_video_clips_at_the_true_cuts_with_provenance_and_stable_ids(tmp_path, long_videos):
    folder, truth = long_videos
    rows = _run(tmp_path, folder)
    again = _run(tmp_path, folder, name="again")
    assert [r["sample_id"] for r in rows] == [r["sample_id"] for r in again]
    assert all(r["status"] == "ok" and r["kind"] == "video_clip" for r in rows)
    for video, expected in truth.items():
        mine = [r for r in rows if r["source_path"] == video]
        assert [r["start_time"] for r in mine[1:]] == pytest.approx(expected["cuts_s"], abs=1e-6)
        assert mine[-1]["end_time"] == pytest.approx(expected["duration_s"])
        assert all(r["source_duration"] == pytest.approx(expected["duration_s"]) for r in mine)
        assert [r["end_frame"] for r in mine[:-1]] == [r["start_frame"] for r in mine[1:]]
        assert all(r["num_frames"] == r["end_frame"] - r["start_frame"] for r in mine)
        first = mine[0]
        assert first["sample_id"] == mf.make_sample_id(
            "video_clip", first["source_dataset"], video, [first["start_frame"], first["end_frame"]]
        )
        provenance = mine[1]["segmentation"]
        assert provenance["start_cut_time"] == mine[1]["start_time"] and provenance["rules"] == ["cut"]
        assert provenance["start_cut_similarity"] < 0.95 <= provenance["min_similarity"] <= provenance["mean_similarity"]
        assert mine[0]["segmentation"]["start_cut_similarity"] is None
    assert manifest_cuts(rows) == {v: pytest.approx(t["cuts_s"]) for v, t in truth.items()}


def _write_vfr_mp4(path, scenes):
    """Write an H.264 mp4 whose frames sit at the given times: [(color, [t0, t1, ...]), ...] (seconds)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for color, times in scenes:
            for t in times:
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), color, np.uint8), format="rgb24")
                frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_variable_frame_rate_video_is_cut_at_its_timestamps_not_at_frame_count_over_fps(tmp_path):
    # 2 s at 12 fps, then 2 s at 30 fps: frame 24 starts the second scene at 2.0 s (24 / average fps: 1.14 s)
    slow = (20, 200, 20), list(np.arange(24) / 12)
    fast = (200, 20, 200), list(2.0 + np.arange(60) / 30)
    folder = tmp_path / "vfr"
    folder.mkdir()
    _write_vfr_mp4(folder / "vfr.mp4", [slow, fast])
    rows = _run(tmp_path, folder, min_seconds=1.0)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 24), (24, 84)]
    assert [r["start_time"] for r in rows] == pytest.approx([0.0, 2.0], abs=1e-3)
    assert rows[0]["end_time"] == pytest.approx(2.0, abs=1e-3)


def _truncated(path):
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:  # index first, data after
        stream = container.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(64):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


BAD_INPUTS = {
    "unreadable": (lambda p: p.write_bytes(b"this is not a video " * 50), "unreadable: cannot decode video"),
    "truncated": (_truncated, "truncated: "),
    "zero-length": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "shorter-than-min-seconds": (
        lambda p: write_mp4(p, np.zeros((3, 32, 32, 3), np.uint8), fps=8), "0.38 s of video, shorter than --min-seconds 0.5"
    ),
    "single-frame": (lambda p: write_mp4(p, np.zeros((1, 32, 32, 3), np.uint8), fps=8), "single-frame video"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_video_becomes_one_failed_row_with_its_reason(tmp_path, case):
    make, reason = BAD_INPUTS[case]
    folder = tmp_path / "videos"
    folder.mkdir()
    make(folder / "bad.mp4")
    [row] = _run(tmp_path, folder)
    assert row["status"] == "failed" and reason in row["error"], row["error"]
    assert row["source_path"] == "bad.mp4" and row["segmentation"] is None


def test_video_whose_segments_all_fail_the_rules_gets_a_failed_row_naming_them(tmp_path):
    folder = tmp_path / "videos"
    frames = np.zeros((40, 32, 32, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, 40)[:, None, None]  # a 5 s dissolve from blue to red: first ≠ last
    frames[..., 2] = np.linspace(255, 0, 40)[:, None, None]
    write_mp4(folder / "fade.mp4", frames, fps=8)
    [row] = _run(tmp_path, folder)
    # the hue wraps from magenta to red in the last frames: PySceneDetect's scale (no wrap) sees a jump, and the
    # sliver after it is under --min-seconds; the dissolve's halves all fail the transition test down to min-seconds
    assert row["status"] == "failed", row
    assert re.fullmatch(r"ValueError: no segment survived the rules \(dropped: [1-9]\d* transition(, 1 min-seconds)?\)",
                        row["error"]), row["error"]


def test_input_span_is_segmented_within_itself(tmp_path, long_videos):
    folder, truth = long_videos
    table = tmp_path / "list.csv"
    table.write_text(f"path,start,end\n{folder / 'long_b.mp4'},3.0,12.0\n")
    rows = _run(tmp_path, table)
    assert [r["start_time"] for r in rows] == pytest.approx([3.0, 5.0, 9.0])
    assert rows[0]["segmentation"]["start_cut_time"] is None  # the span's start is not a cut


# ---------------------------------------------------------------- real footage (../shared/data/videos)


@pytest.mark.parametrize(
    "name, reference",
    [("issue-134-rotate.mp4", [3.754, 8.759]), ("testvideo.mp4", [1.001, 6.006, 13.146])],
)
def test_histogram_cuts_of_real_footage_match_the_reference_within_half_a_second(tmp_path, name, reference):
    path = shared_video(name)
    rows = _run(tmp_path, path)
    scores = cut_scores(manifest_cuts(rows)[name], reference)
    assert (scores["tp"], scores["fp"]) == (len(reference), 0), manifest_cuts(rows)


def test_rotated_real_clip_gives_upright_sizes_and_exact_cut_frame(tmp_path):
    rows = _run(tmp_path, shared_video("issue-134-rotate.mp4"))
    assert all((r["width"], r["height"]) == (544, 1280) for r in rows)
    assert rows[1]["start_frame"] == 90  # 3.754 s at 23.976 fps


def test_counter_clip_cuts_on_the_exact_frames_where_its_colour_changes(tmp_path):
    rows = _run(tmp_path, shared_video("counter.mp4"), min_seconds=0.5, frame_change=20.0, min_shot_frames=5)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 10), (10, 20), (20, 30)]
    assert [r["start_time"] for r in rows] == pytest.approx([0.0, 1.0, 2.0])  # PTS of frame k is k/10 s


# ---------------------------------------------------------------- models through their real loaders


def test_tiny_clip_and_tiny_minigpt4_segment_and_caption_end_to_end(tmp_path, long_videos, tiny_models):
    folder, truth = long_videos
    rows = _run(
        tmp_path, folder, embedder="clip", threshold=0.99,
        clip_config=str(tiny_models / "open_clip" / "vidrd-tiny-ViT-16.json"),
        clip_checkpoint=str(tiny_models / "open_clip" / "open_clip_pytorch_model.bin"),
        captioner="minigpt4", minigpt4=str(tiny_models / "minigpt4" / "minigpt4.json"),
    )
    assert manifest_cuts(rows) == {v: pytest.approx(t["cuts_s"]) for v, t in truth.items()}
    assert all(r["status"] == "ok" and r["caption_source"] == "minigpt4" and r["caption"] for r in rows)
    assert len({r["caption"] for r in rows}) > 1  # the frame reaches the caption


def test_blip2_captioner_is_accepted_for_segments(tmp_path, long_videos, tiny_models):
    folder, _ = long_videos
    table = tmp_path / "list.csv"
    table.write_text(f"path\n{folder / 'long_a.mp4'}\n")
    rows = _run(tmp_path, table, captioner="blip2", blip2=str(tiny_models / "blip2"), caption_frames=2,
                caption_batch_size=4)  # 6 frames: two batches, the second read while the first is captioned
    assert len(rows) == 3 and all(r["caption_source"] == "blip2" and r["caption"] for r in rows)


def test_segment_captioner_out_of_memory_is_retried_in_halves_with_the_same_captions(tmp_path, long_videos, tiny_models,
                                                                                    monkeypatch):
    import torch

    from vidrd_data.models.captioners.blip2 import Blip2Captioner

    folder, _ = long_videos
    job = prepare(str(folder / "long_a.mp4"), **HISTOGRAM, captioner="blip2", blip2=str(tiny_models / "blip2"),
                  caption_frames=2)

    def run(name):
        run_stage(job.stage, job.params, job.inputs, tmp_path / name, root=job.root, input_desc=job.input_desc,
                  workers=1, progress=False)
        return mf.Manifest.open(tmp_path / name).read().to_pylist()

    plain = run("plain")
    real, sizes = Blip2Captioner.generate, []

    def generate_one_at_a_time(self, prepared):
        sizes.append(len(prepared["pixel_values"]))
        if len(prepared["pixel_values"]) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(self, prepared)

    monkeypatch.setattr(Blip2Captioner, "generate", generate_one_at_a_time)
    assert run("oom") == plain and max(sizes) > 1 and all(r["status"] == "ok" for r in plain)


# ---------------------------------------------------------------- the command


def test_segment_command_writes_a_manifest_and_reports(tmp_path, capsys, long_videos):
    folder, _ = long_videos
    code = main(["segment", str(folder / "long_a.mp4"), "--out", str(tmp_path / "o"), "--embedder", "histogram",
                 "--no-progress"])
    assert code == 0 and "3 samples from 1 inputs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--embedder", "resnet"], "unknown embedder 'resnet'"),
        (["--captioner", "minigpt4"], "captioner minigpt4 needs its parts"),
        (["--captioner", "llava"], "unknown captioner 'llava'"),
        (["--sample-fps", "0"], "sample_fps must be > 0"),
        (["--embedder", "clip", "--clip", "ViT-Nope"], "open_clip has no model 'ViT-Nope'"),
        (["--minigpt4", "/no/such/minigpt4.json", "--captioner", "minigpt4"], "file not found"),
    ],
)
def test_bad_segment_options_get_one_line_and_exit_status_2(tmp_path, capsys, long_videos, extra, needle):
    folder, _ = long_videos
    code = main(["segment", str(folder), "--out", str(tmp_path / "o"), "--embedder", "histogram", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_missing_video_file_is_one_line_and_exit_status_2(tmp_path, capsys):
    code = main(["segment", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o"), "--embedder", "histogram"])
    assert code == 2 and "video not found" in capsys.readouterr().err


def test_long_drifting_shot_survives_as_pieces_the_transition_test_judges_one_by_one():
    drift = np.linspace(0.0, 1.0, 300)  # a 30 s continuous shot whose look drifts from scene 0 to scene 1
    timestamps, end, changes, samples, _ = _decoded([0] * 300, fps=10.0)
    t = drift[samples][:, None]
    embeddings = np.cos(t * np.pi / 2) * np.eye(8)[0] + np.sin(t * np.pi / 2) * np.eye(8)[1]  # first·last = 0
    seg = _segment((timestamps, end, changes, samples, embeddings), max_seconds=10.0)
    spans = [(round(seg.time(s.start), 3), round(seg.time(s.stop), 3)) for s in seg.segments]
    assert spans == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)] and seg.dropped == {}
    whole = _segment((timestamps, end, changes, samples, embeddings), max_seconds=60.0, halve_transitions=False)
    assert whole.segments == [] and whole.dropped == {"transition": 1}  # unsplit, its ends are other scenes


def test_a_long_drifting_shot_left_whole_by_max_seconds_is_halved_until_its_pieces_pass():
    drift = np.linspace(0.0, 1.0, 300)  # 30 s whose look turns from scene 0 to scene 1; max_seconds leaves it whole
    timestamps, end, changes, samples, _ = _decoded([0] * 300, fps=10.0)
    t = drift[samples][:, None]
    embeddings = np.cos(t * np.pi / 2) * np.eye(8)[0] + np.sin(t * np.pi / 2) * np.eye(8)[1]
    seg = _segment((timestamps, end, changes, samples, embeddings), max_seconds=60.0)
    spans = [(round(seg.time(s.start), 2), round(seg.time(s.stop), 2)) for s in seg.segments]
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(30.0) and len(spans) > 1 and seg.dropped == {}
    assert all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))  # contiguous: no footage lost
    for s in seg.segments:  # every piece passes the test its parent failed
        inside = seg.samples_in(s)
        assert embeddings[inside[0]] @ embeddings[inside[-1]] >= SegmentOptions(**HISTOGRAM).rule_thresholds().transition


def test_a_fade_inside_a_shot_costs_only_the_pieces_around_it():
    looks = np.r_[np.zeros(100), np.linspace(0, 1, 20), np.ones(100)]  # 10 s, a 2 s fade, 10 s: one shot, no cut
    timestamps, end, changes, samples, _ = _decoded([0] * len(looks), fps=10.0)
    t = looks[samples][:, None]
    embeddings = np.cos(t * np.pi) * np.eye(8)[0] + np.sin(t * np.pi) * np.eye(8)[1]  # its ends opposite looks
    seg = _segment((timestamps, end, changes, samples, embeddings), min_seconds=1.0)
    spans = [(seg.time(s.start), seg.time(s.stop)) for s in seg.segments]
    assert seg.dropped == {"transition": 1} and spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(22.0)
    gaps = [(b, c) for (_, b), (c, _) in zip(spans, spans[1:]) if c > b]
    assert gaps and all(10.0 <= b and c <= 12.5 for b, c in gaps)  # footage is lost only inside the fade


def test_drifting_pan_video_keeps_its_pieces(tmp_path):
    folder = tmp_path / "videos"
    x = np.arange(48 + 240) / (48 + 240)  # a panorama going from blue to red, panned 1 px a frame for 30 s at 8 fps
    panorama = np.zeros((32, len(x), 3), np.uint8)
    panorama[..., 0], panorama[..., 2] = (60 + 100 * x)[None], (60 + 100 * (1 - x))[None]
    panorama[..., 1] = (60 + 40 * np.sin(np.arange(32) / 3))[:, None]
    write_mp4(folder / "pan.mp4", np.stack([panorama[:, i : i + 48] for i in range(240)]), fps=8)
    [whole] = _run(tmp_path, folder, name="whole", max_seconds=60.0, halve_transitions=False)
    assert whole["error"] == "ValueError: no segment survived the rules (dropped: 1 transition)"  # its ends differ
    halved = _run(tmp_path, folder, name="halved", max_seconds=60.0)  # the default: halved until pieces pass
    assert {r["status"] for r in halved} == {"ok"} and len(halved) > 1
    assert halved[0]["start_time"] == 0.0 and halved[-1]["end_time"] == pytest.approx(30.0)
    rows = _run(tmp_path, folder, max_seconds=5.0)
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 6
    assert rows[0]["start_time"] == 0.0 and rows[-1]["end_time"] == pytest.approx(30.0)


def test_hard_cut_just_before_the_end_of_the_video_is_found(tmp_path):
    folder = tmp_path / "videos"
    frames = np.zeros((100, 32, 48, 3), np.uint8)  # 10 s at 10 fps; a cut 0.3 s before the end
    frames[:97, ..., 0] = 200
    frames[97:, ..., 2] = 200
    frames[:97, :16, :, 1] = 120
    write_mp4(folder / "tail.mp4", frames, fps=10)
    rows = _run(tmp_path, folder)
    ok = [r for r in rows if r["status"] == "ok"]
    assert [(r["start_time"], r["end_time"]) for r in ok] == [(0.0, pytest.approx(9.7))]
    assert ok[0]["segmentation"]["end_cut_time"] == pytest.approx(9.7)


def test_caption_frames_are_read_at_the_captioners_input_size(long_videos):
    from types import SimpleNamespace

    from vidrd_data.stages.segment import caption_input_size, read_frames_at

    folder, _ = long_videos
    captioner = SimpleNamespace(image_processor=SimpleNamespace(size={"height": 32, "width": 48}))
    assert caption_input_size(captioner) == (48, 32) and caption_input_size(object()) is None
    frames = read_frames_at(str(folder / "long_a.mp4"), [0.5, 3.0, 7.25], (48, 32))
    assert frames.shape == (3, 32, 48, 3) and frames.dtype == np.uint8


def _write_with_keyframes(path, frames, fps, gop):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def test_span_late_in_a_video_seeks_and_decodes_the_same_frames_as_from_the_start(tmp_path, monkeypatch):
    from vidrd_io import sampling
    from vidrd_io.video import probe

    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (12, 36, 64, 3), dtype=np.uint8), 10, axis=0)  # 12 s at 10 fps
    frames[:, :, :, 1] = np.arange(120, dtype=np.uint8)[:, None, None] * 2  # every frame differs a little
    path = tmp_path / "keyed.mp4"
    _write_with_keyframes(path, frames, 10, gop=10)
    info = probe(path)
    first, stop = 75, 110
    seeks = []
    real_seek = sampling.FrameSampler._seek
    monkeypatch.setattr(sampling.FrameSampler, "_seek", staticmethod(lambda *a: seeks.append(a[2]) or real_seek(*a)))

    def chunks():
        sampler = sampling.FrameSampler(2.0, 36)
        return list(sampler.chunks(str(path), info, first, stop, float(info.timestamps[first])))

    sought = chunks()
    monkeypatch.setattr(sampling, "SEEK_AFTER_S", 1e9)
    from_start = chunks()
    assert seeks == [pytest.approx(7.5)]  # one seek, for the span; none when seeking is off
    for a, b in zip(sought, from_start, strict=True):
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.sample_positions, b.sample_positions)
        np.testing.assert_allclose(a.changes, b.changes)
        np.testing.assert_array_equal(a.samples, b.samples)
    assert np.concatenate([c.timestamps for c in sought]) == pytest.approx(np.arange(first, stop) / 10)
