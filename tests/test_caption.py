"""The `caption` stage and the BLIP-2 captioner, with the tiny BLIP-2 loaded from a hub-layout directory through the
same `from_pretrained` path a user's `--blip2 Salesforce/...` takes."""

import pickle
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from cli.data import main
from tests.conftest import shared_video
from tests.crash_stage import DieOnWhiteFrames
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.ops.clips import choose_caption, clip_windows
from vidrd_data.stages.caption import CaptionClips, CaptionOptions, ClipDecoder, prepare
from vidrd_data.run.runner import retry_failed, run_stage
from vidrd_io.video import VideoError, write_mp4

# short greedy captions keep the tests quick; decode worker threads spare each test the processes' start-up (the
# default, processes, runs in the tests that ask for it and through the CLI)
FAST = {"beams": 1, "max_new_tokens": 4, "batch_size": 4, "decode_in": "threads"}


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory):
    from vidrd_demo.models.blip2 import write_tiny_blip2

    return write_tiny_blip2(tmp_path_factory.mktemp("models") / "blip2")


@pytest.fixture(scope="module")
def captioner(blip2_dir):
    from vidrd_data.models.captioners.blip2 import Blip2Captioner

    return Blip2Captioner(blip2_dir, num_beams=1, max_new_tokens=6, batch_size=8)


def _frames(n: int, seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    """n frames of a smooth random picture whose brightness changes every frame."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    return np.stack([np.clip(base.astype(int) + 8 * i - 40, 0, 255).astype(np.uint8) for i in range(n)])


def _write_vfr(path, times: list[float], size: int = 64) -> None:
    """Write an H.264 mp4 whose frame i starts at times[i] seconds (a variable frame rate) and is grey level 20·i."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_audio_only(path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for k in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _run(table, base, out, blip2_dir, **params):
    params = {"blip2": str(blip2_dir), **FAST, **params}
    run_stage("caption", params, table, out, root=base, input_desc=["test"], progress=False)
    return sorted(mf.Manifest.open(out).read().to_pylist(), key=lambda r: (r["input_row"], r["start_frame"] or 0))


# ---------------------------------------------------------------- the captioner


@pytest.mark.parametrize("prompts", [None, ["a video of juggling,", None, "a much longer prompt than the others,"]])
def test_prepare_from_worker_pixel_values_equals_the_blip2_processor(captioner, prompts):
    images = [Image.fromarray(_frames(1, seed, h=40 + 8 * seed, w=56)[0]) for seed in range(3)]
    if prompts is None:
        expected = captioner.processor(images=images, return_tensors="pt")
    else:
        expected = captioner.processor(images=images, text=[p or "" for p in prompts], padding=True, return_tensors="pt")
    image_inputs = pickle.loads(pickle.dumps(captioner.image_inputs()))  # as a decode worker process gets it
    for got in (captioner.prepare(images, prompts), captioner.assemble(image_inputs([np.asarray(i) for i in images]), prompts)):
        assert set(got) == set(expected)
        for key in expected:
            assert torch.equal(got[key], expected[key]), key


def test_a_decoder_that_kills_its_worker_fails_that_file_only(tmp_path, blip2_dir):
    root = tmp_path / "videos"
    for i in range(4):
        write_mp4(root / f"v{i}.mp4", _frames(12, i), fps=8)
    write_mp4(root / "v2.mp4", np.full((12, 32, 48, 3), 255, np.uint8), fps=8)  # white: its worker dies on it
    table, base = sources.video_folder(root)
    stage = CaptionClips(blip2=str(blip2_dir), **{**FAST, "decode_in": "processes", "decode_workers": 1})
    stage.root = str(base)
    stage.setup()
    stage._decoder = ClipDecoder(stage.options, stage.root, DieOnWhiteFrames(stage.captioner.image_inputs()))
    results = list(stage.process_many([dict(r, input_row=i) for i, r in enumerate(table.to_pylist())]))
    names = [Path(row["source_path"]).name for row, _ in results]
    assert names == ["v0.mp4", "v1.mp4", "v2.mp4", "v3.mp4"]
    assert isinstance(results[2][1], VideoError) and "decoder crashed" in str(results[2][1])
    assert all(out[0]["caption"] for i, (_, out) in enumerate(results) if i != 2)


def test_blip2_captioner_gives_one_caption_per_image_and_the_image_changes_it(captioner):
    images = [Image.fromarray(_frames(1, seed)[0]) for seed in range(3)]
    captions = captioner.caption(images)
    assert len(captions) == 3 and all(c and c == " ".join(c.split()) for c in captions)
    assert len(set(captions)) > 1
    assert captioner.model_id.endswith("blip2") and captioner.device.type == "cpu"


def test_captions_do_not_depend_on_batching_or_on_the_other_prompts_in_a_batch(captioner):
    images = [Image.fromarray(_frames(1, seed)[0]) for seed in range(5)]
    prompts = ["a video of juggling,", None, "a video of yo yo, two people", None, "a"]
    together = captioner.caption(images, prompts)  # one batch: prompts of unequal length, padded on the left
    alone = [captioner.caption([image], [prompt])[0] for image, prompt in zip(images, prompts)]
    assert together == alone
    assert together[0].startswith("a video of juggling,") and together[2].startswith("a video of yo yo, two people")
    assert captioner.caption(images[1:2]) == [alone[1]]  # no prompt is the same as an empty one


def test_check_model_refuses_a_directory_that_is_not_blip2(tmp_path, blip2_dir):
    from vidrd_data.models.captioners.blip2 import check_model

    check_model(blip2_dir)
    with pytest.raises(ValueError, match="cannot load a BLIP-2 config"):
        check_model(tmp_path)


def test_blip2_loading_never_allows_remote_code(blip2_dir, monkeypatch):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from vidrd_data.models.captioners.blip2 import Blip2Captioner

    seen = []
    for cls in (Blip2Processor, Blip2ForConditionalGeneration):
        original = cls.from_pretrained.__func__
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda c, *a, _o=original, **k: seen.append(k) or _o(c, *a, **k)))
    Blip2Captioner(blip2_dir, num_beams=1, max_new_tokens=2)
    assert len(seen) == 2 and not any(k.get("trust_remote_code") for k in seen)


# ---------------------------------------------------------------- clip windows and frame choice


def test_clip_windows_default_to_the_whole_video_then_to_max_seconds_windows():
    ts = np.arange(250) / 10.0  # 25 s at 10 fps
    whole = clip_windows(ts[:80], 8.0, (0.0, 8.0), CaptionOptions(blip2="m"))
    assert whole == [(0, 80)]
    assert clip_windows(ts, 25.0, (0.0, 25.0), CaptionOptions(blip2="m")) == [(0, 100), (100, 200), (200, 250)]
    tail_too_short = clip_windows(ts[:205], 20.5, (0.0, 20.5), CaptionOptions(blip2="m", min_seconds=1.0))
    assert tail_too_short == [(0, 100), (100, 200)]


def test_clip_windows_follow_clip_and_stride_seconds_and_stop_at_the_span_end():
    ts = np.arange(100) / 10.0  # 10 s
    opts = CaptionOptions(blip2="m", clip_seconds=4.0, stride_seconds=3.0)
    assert clip_windows(ts, 10.0, (0.0, 10.0), opts) == [(0, 40), (30, 70), (60, 100)]
    assert clip_windows(ts, 10.0, (2.0, 5.0), opts) == [(20, 50)]


def test_choose_caption_policies():
    captions = ["a dog", "a dog running on grass", "a dog"]
    assert choose_caption(captions, "middle") == "a dog running on grass"
    assert choose_caption(captions, "longest") == "a dog running on grass"
    assert choose_caption(captions, "concat") == "a dog; a dog running on grass"


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"frames": 3}, "middle captions one frame"),
        ({"frame_policy": "random"}, "unknown frame policy"),
        ({"prompt": "a video of {action}"}, "it may use only {label}"),
        ({"stride_seconds": 2.0}, "stride_seconds needs clip_seconds"),
        ({"clip_seconds": 0.0}, "clip_seconds must be > 0"),
        ({"beams": 0}, "beams must be ≥ 1"),
    ],
)
def test_caption_options_refuse_contradictions(options, needle):
    with pytest.raises(ValueError, match=needle.replace("{", r"\{").replace("}", r"\}")):
        CaptionOptions(blip2="m", **options)


# ---------------------------------------------------------------- the stage


@pytest.fixture
def action_root(tmp_path):
    """A UCF-101-style layout: 2 classes × 2 clips of 2 s at 8 fps, with classInd.txt and split files."""
    root = tmp_path / "ucf"
    for c, cls in enumerate(("ApplyEyeMakeup", "playing_guitar")):
        for g in (1, 2):
            write_mp4(root / cls / f"v_{cls}_g{g:02d}_c01.mp4", _frames(16, seed=10 * c + g), fps=8)
    (root / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 playing_guitar\n")
    (root / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.mp4 1\nplaying_guitar/v_playing_guitar_g02_c01.mp4 2\n"
        "playing_guitar/v_playing_guitar_g09_c01.mp4 2\n"  # listed but absent: must fail, not vanish
    )
    (root / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.mp4\n")
    return root


def test_action_layout_clips_are_captioned_from_the_label_prompt_and_record_model_and_prompt(action_root, tmp_path, blip2_dir):
    table, base = sources.video_folder(action_root, layout="action")
    rows = _run(table, base, tmp_path / "m", blip2_dir, prompt="a video of {label},", batch_size=3)
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert [r["label"] for r in rows] == ["ApplyEyeMakeup"] * 2 + ["playing_guitar"] * 2
    for r in rows:
        words = "apply eye makeup" if r["label"] == "ApplyEyeMakeup" else "playing guitar"
        assert r["caption"].startswith(f"a video of {words},") and len(r["caption"]) > len(f"a video of {words},")
        assert r["caption_source"] == "blip2" and r["kind"] == "video_clip"
        assert r["captioning"]["model"] == str(blip2_dir.resolve())
        assert r["captioning"]["prompt"] == f"a video of {words},"
        assert (r["start_frame"], r["end_frame"], r["num_frames"]) == (0, 16, 16)
        assert r["start_time"] == 0.0 and r["end_time"] == pytest.approx(2.0) and r["source_duration"] == pytest.approx(2.0)
        assert r["captioning"]["frame_times"] == [1.0]  # the middle frame
    declared = {c["name"]: c["type"] for c in mf.Manifest.open(tmp_path / "m").meta["schema"]["columns"]}
    assert declared["captioning"].startswith("struct<model: string, prompt: string")  # declared before any row


def test_ucf101_split_files_pick_the_listed_videos_and_their_class_names(action_root):
    train, base = sources.ucf101_split(action_root / "trainlist01.txt", root=action_root)
    assert train["source_path"].to_pylist() == [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.mp4",
        "playing_guitar/v_playing_guitar_g02_c01.mp4",
        "playing_guitar/v_playing_guitar_g09_c01.mp4",
    ]
    assert train["label"].to_pylist() == ["ApplyEyeMakeup", "playing_guitar", "playing_guitar"]
    test, _ = sources.ucf101_split(action_root / "testlist01.txt", root=action_root)
    assert test["label"].to_pylist() == ["ApplyEyeMakeup"]  # no class number: the folder names it
    (action_root / "bad.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.mp4 7\n")
    with pytest.raises(sources.InputError, match="class 7 is not in"):
        sources.ucf101_split(action_root / "bad.txt", root=action_root)


def test_broken_files_fail_with_their_reason_and_the_rest_of_the_shard_completes(tmp_path, blip2_dir):
    root = tmp_path / "videos"
    write_mp4(root / "a_good.mp4", _frames(16, 1), fps=8)
    write_mp4(root / "b_good.mp4", _frames(24, 2), fps=8)
    whole = (root / "a_good.mp4").read_bytes()
    (root / "cut_short.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "empty.mp4").write_bytes(b"")
    _write_audio_only(root / "audio_only.mp4")
    write_mp4(root / "one_frame.mp4", _frames(1, 3), fps=8)
    (root / "garbage.avi").write_bytes(b"RIFF" + b"\x00" * 200)
    table, base = sources.video_folder(root)
    rows = {r["source_path"]: r for r in _run(table, base, tmp_path / "m", blip2_dir, batch_size=2,
                                               decode_in="processes")}
    assert len(rows) == 7
    assert rows["a_good.mp4"]["status"] == rows["b_good.mp4"]["status"] == "ok"
    assert rows["a_good.mp4"]["caption"] and rows["b_good.mp4"]["caption"]
    reasons = {path: r["error"] for path, r in rows.items() if r["status"] == "failed"}
    assert "VideoError: cannot decode video" in reasons["cut_short.mp4"]
    assert "empty file (0 bytes)" in reasons["empty.mp4"]
    assert "no video stream" in reasons["audio_only.mp4"]
    assert "video has one frame" in reasons["one_frame.mp4"]
    assert "VideoError" in reasons["garbage.avi"]
    stats = mf.Manifest.open(tmp_path / "m").stats()[0]
    assert (stats["ok"], stats["failed"]) == (2, 5)


def test_a_clip_whose_decode_fails_fails_alone_while_the_other_clips_of_its_video_succeed(tmp_path, blip2_dir):
    root = tmp_path / "videos"
    root.mkdir()
    # moov before the data (faststart), so the index survives; zeroing the tail breaks only the last frames
    with av.open(str(root / "damaged.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt, stream.options = "yuv420p", {"g": "8"}
        # 960 frames: decord's decoder thread reads far ahead of frame 0, and on a short file it reached the damage
        # while opening (a timing-dependent failure of the first clips); 120 opens of this length never did
        for frame in _frames(960, 5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray((root / "damaged.mp4").read_bytes())
    cut = len(data) * 9 // 10  # far from the start, which the decoders read ahead of the frame they return
    data[cut:] = bytes(len(data) - cut)
    (root / "damaged.mp4").write_bytes(bytes(data))
    table, base = sources.video_folder(root)
    rows = _run(table, base, tmp_path / "m", blip2_dir, clip_seconds=30.0)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 240), (240, 480), (480, 720), (720, 960)], rows[0]["error"]
    statuses = [r["status"] for r in rows]
    assert statuses[:2] == ["ok", "ok"] and statuses[-1] == "failed", [r["error"][:400] for r in rows if r["error"]]
    assert all(r["caption"] for r in rows if r["status"] == "ok")
    # FFmpeg's threaded decoder reports the damage either raw or wrapped by read_frames, depending on timing
    assert all(r["error"].startswith("clip decode failed: ") and "InvalidDataError" in r["error"]
               for r in rows if r["status"] == "failed")
    assert len({r["sample_id"] for r in rows}) == 4


def test_variable_frame_rate_clips_and_frames_follow_the_timestamps(tmp_path, blip2_dir):
    root = tmp_path / "videos"
    root.mkdir()
    times = [0.0, 0.1, 0.2, 0.3, 1.0, 1.05, 1.1, 2.5, 2.6, 3.9]  # 10 frames, 4 s: 2.5 fps on average
    _write_vfr(root / "vfr.mp4", times)
    table, base = sources.video_folder(root)
    rows = _run(table, base, tmp_path / "m", blip2_dir, clip_seconds=1.0, min_seconds=0.5)
    spans = [(r["start_frame"], r["end_frame"], r["start_time"], r["end_time"]) for r in rows]
    # windows [0,1) [1,2) [2,3) [3,4): frame-count × fps would put them at frames 0-2, 2-5, …
    assert spans == [(0, 4, 0.0, 1.0), (4, 7, 1.0, 2.5), (7, 9, 2.5, 3.9)]  # [3,4) holds one frame: skipped
    assert [r["captioning"]["frame_times"] for r in rows] == [[0.3], [1.1], [2.6]]  # shown at 0.5, 1.75 and 3.2 s
    assert all(r["status"] == "ok" for r in rows)

    from vidrd_io.video import read_frames

    shown = read_frames(root / "vfr.mp4", [t for r in rows for t in r["captioning"]["frame_times"]])
    assert [round(f.mean() / 20) for f in shown] == [3, 6, 8]  # frames 3, 6 and 8 by their grey level


def test_frames_k_with_concat_captions_k_frames_and_joins_their_unique_captions(action_root, tmp_path, blip2_dir):
    table, base = sources.video_folder(action_root, layout="action")
    rows = _run(table.slice(0, 1), base, tmp_path / "m", blip2_dir, frames=3, frame_policy="concat")
    [row] = rows
    captioning = row["captioning"]
    assert captioning["frame_times"] == pytest.approx([0.25, 1.0, 1.625], abs=0.07)  # centres of 3 equal parts
    assert len(captioning["frame_captions"]) == 3 and captioning["frame_policy"] == "concat"
    assert row["caption"] == "; ".join(dict.fromkeys(captioning["frame_captions"]))


def test_video_list_spans_labels_and_captions_reach_the_clips(tmp_path, blip2_dir):
    root = tmp_path / "videos"
    write_mp4(root / "a.mp4", _frames(40, 1), fps=8)  # 5 s
    (root / "list.csv").write_text(
        "path,label,start,end,caption,licence\n"
        "a.mp4,PlayingCello,1.0,3.0,someone plays,cc-by\n"
        "a.mp4,PlayingCello,,,the whole video,cc0\n"
        "missing.mp4,YoYo,,,gone,cc0\n"
    )
    table, base = sources.video_list(root / "list.csv")
    assert table["start_time"].to_pylist() == [1.0, None, None] and table["label"].to_pylist()[0] == "PlayingCello"
    rows = _run(table, base, tmp_path / "m", blip2_dir, prompt="a video of {label},")
    first, whole, missing = rows
    assert (first["start_frame"], first["end_frame"], first["start_time"], first["end_time"]) == (8, 24, 1.0, 3.0)
    assert (whole["start_frame"], whole["end_frame"]) == (0, 40)
    assert first["captioning"]["input_caption"] == "someone plays" and first["caption"].startswith("a video of playing cello,")
    assert first["licence"] == "cc-by"  # other list columns are carried through
    assert missing["status"] == "failed" and "no such file" in missing["error"]
    assert len({r["sample_id"] for r in rows}) == 3


def test_ids_are_deterministic_and_a_retry_recaptions_a_repaired_file(tmp_path, blip2_dir):
    root = tmp_path / "videos"
    write_mp4(root / "a.mp4", _frames(16, 1), fps=8)
    (root / "b.mp4").write_bytes(b"not yet a video")
    table, base = sources.video_folder(root)
    first = _run(table, base, tmp_path / "m1", blip2_dir)
    again = _run(table, base, tmp_path / "m2", blip2_dir)
    assert [r["sample_id"] for r in first] == [r["sample_id"] for r in again]
    assert [r["caption"] for r in first] == [r["caption"] for r in again]
    assert [r["status"] for r in first] == ["ok", "failed"]
    write_mp4(root / "b.mp4", _frames(16, 2), fps=8)
    retry_failed(tmp_path / "m1", progress=False)
    fixed = sorted(mf.Manifest.open(tmp_path / "m1").read().to_pylist(), key=lambda r: r["input_row"])
    assert [r["status"] for r in fixed] == ["ok", "ok"] and fixed[0] == first[0]
    assert fixed[1]["caption_source"] == "blip2"


def test_real_videos_of_other_codecs_and_rotation_are_captioned(tmp_path, blip2_dir):
    paths = [shared_video(name) for name in ("counter.mp4", "fades.mp4", "issue-134-rotate.mp4")]
    lines = "path\n" + "".join(f"{p}\n" for p in paths)
    (tmp_path / "list.csv").write_text(lines)
    table, base = sources.video_list(tmp_path / "list.csv")
    rows = _run(table, base, tmp_path / "m", blip2_dir, decode_in="processes")
    assert all(r["status"] == "ok" and r["caption"] for r in rows), [r["error"][:400] for r in rows if r["error"]]
    by_name = {r["source_path"].rsplit("/", 1)[-1]: r for r in rows}
    assert (by_name["counter.mp4"]["start_frame"], by_name["counter.mp4"]["end_frame"]) == (0, 30)
    assert (by_name["fades.mp4"]["end_frame"], by_name["fades.mp4"]["fps"]) == (250, 25.0)
    assert (by_name["issue-134-rotate.mp4"]["width"], by_name["issue-134-rotate.mp4"]["height"]) == (544, 1280)


def test_a_failing_model_batch_fails_only_its_clips(action_root, blip2_dir):
    table, base = sources.video_folder(action_root, layout="action")
    stage = CaptionClips(blip2=str(blip2_dir), **{**FAST, "batch_size": 2})
    stage.root = str(base)
    stage.setup()
    real_generate, calls = stage.captioner.generate, []

    def generate_failing_second_batch(prepared):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")  # neither OOM nor a lost device
        return real_generate(prepared)

    stage.captioner.generate = generate_failing_second_batch
    rows = [dict(r, input_row=i) for i, r in enumerate(table.to_pylist())]
    results = list(stage.process_many(rows))
    assert [row["input_row"] for row, _ in results] == [0, 1, 2, 3]  # input order
    statuses = [out[0].get("status", "ok") for _, out in results]  # the runner fills in "ok"
    assert statuses == ["ok", "ok", "failed", "failed"]
    assert results[2][1][0]["error"] == ("captioning failed: RuntimeError: probability tensor contains either inf, nan "
                                         "or element < 0")


@pytest.mark.parametrize("decode_in", ["processes", "threads"])
def test_stopping_early_ends_the_feeder_thread(action_root, blip2_dir, decode_in):
    table, base = sources.video_folder(action_root, layout="action")
    stage = CaptionClips(blip2=str(blip2_dir), **{**FAST, "batch_size": 1, "prefetch_batches": 1, "decode_in": decode_in})
    stage.root = str(base)
    stage.setup()
    results = stage.process_many([dict(r, input_row=i) for i, r in enumerate(table.to_pylist())])
    next(results)
    assert any(t.name == "caption-feeder" for t in threading.enumerate())
    results.close()
    assert not any(t.name == "caption-feeder" for t in threading.enumerate())
    again = stage.process_many([dict(table.to_pylist()[0], input_row=0)])  # the stage goes on after a stop
    assert [row["input_row"] for row, _ in again] == [0]


# ---------------------------------------------------------------- the command


def _one_line_error(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vidrd-data: "), err
    return lines[0]


def test_caption_command_honours_a_ucf101_split_and_prints_the_summary(action_root, tmp_path, blip2_dir, capsys):
    out = tmp_path / "m"
    code = main(["caption", str(action_root), "--out", str(out), "--blip2", str(blip2_dir), "--split", "trainlist01.txt",
                 "--beams", "1", "--max-new-tokens", "3", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0 and "2 ok" in stdout and "1 failed" in stdout
    rows = mf.Manifest.open(out).read().to_pylist()
    assert sorted(r["label"] for r in rows) == ["ApplyEyeMakeup", "playing_guitar", "playing_guitar"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--blip2", "{tmp}"], "cannot load a BLIP-2 config"),
        (["--frames", "3"], "middle captions one frame"),
        (["--prompt", "a video of {action}"], "may use only {label}"),
        (["--dtype", "fp8"], "unknown dtype"),
        (["--split", "nosuchlist.txt"], "split file not found"),
        (["--min-seconds", "-1"], "min_seconds must be ≥ 0"),
    ],
)
def test_caption_command_bad_options_end_in_one_line_and_exit_status_2(action_root, tmp_path, blip2_dir, capsys, extra, needle):
    argv = ["caption", str(action_root), "--out", str(tmp_path / "m"), "--blip2", str(blip2_dir), "--no-progress"]
    code = main(argv + [e.replace("{tmp}", str(tmp_path)) for e in extra])
    assert needle in _one_line_error(code, capsys.readouterr().err)


def test_prepare_reads_a_manifest_of_video_rows_as_input(action_root, tmp_path, blip2_dir):
    table, base = sources.video_folder(action_root, layout="action")
    run_stage("videos", {}, table, tmp_path / "index", root=base, input_desc=["ucf"], progress=False)
    job = prepare(str(tmp_path / "index"), blip2=str(blip2_dir), **FAST)
    assert job.stage == "caption" and job.inputs.num_rows == 4 and str(job.root) == str(action_root.resolve())
    assert job.inputs["caption_source"].to_pylist() == ["label"] * 4
