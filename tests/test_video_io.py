import numpy as np
import pytest

from tests.conftest import shared_video
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_io import video as video_io
from vidrd_data.run.runner import run_stage


def test_probe_counter_clip_has_exact_frames_and_timestamps():
    info = video_io.probe(shared_video("counter.mp4"))
    assert (info.num_frames, info.fps, info.width, info.height) == (30, 10.0, 1920, 1080)
    assert info.duration == pytest.approx(3.0, abs=1e-3)
    assert np.allclose(info.timestamps, np.arange(30) / 10, atol=1e-3)  # PTS of frame k is (k-1)/10 s


@pytest.mark.parametrize("name", ["counter.mp4", "issue-134-rotate.mp4", "fades.mp4"])
def test_decord_and_pyav_agree_on_probe_and_frames(name):
    path = str(shared_video(name))
    a, b = video_io._probe_decord(path), video_io._probe_pyav(path)
    assert (a.num_frames, a.width, a.height, a.rotation) == (b.num_frames, b.width, b.height, b.rotation)
    assert a.duration == pytest.approx(b.duration, abs=0.02) and a.fps == pytest.approx(b.fps, rel=1e-3)
    times = np.array([0.0, a.duration / 3, a.duration - 0.05])
    fa, fb = video_io.read_frames(path, times), video_io._read_frames_pyav(path, times)
    assert fa.shape == fb.shape
    assert np.abs(fa.astype(int) - fb.astype(int)).mean() < 2.0  # same frames (decoders may round differently)


def test_rotation_metadata_gives_upright_frames():
    path = str(shared_video("issue-134-rotate.mp4"))
    info = video_io.probe(path)
    assert info.rotation in (90, -90, 270) and (info.width, info.height) == (544, 1280)
    assert video_io.read_frames(path, [1.0]).shape == (1, 1280, 544, 3)


def test_read_frames_picks_the_frame_shown_at_each_time():
    path = str(shared_video("counter.mp4"))
    frames = video_io.read_frames(path, [0.0, 0.05, 0.1, 1.0, 2.95])
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    again = video_io._read_frames_pyav(path, np.array([1.0, 0.0]))
    assert np.abs(again[1].astype(int) - frames[0]).mean() < 2 and np.abs(again[0].astype(int) - frames[3]).mean() < 2


def test_write_mp4_roundtrips_through_both_decoders(tmp_path):
    yy, xx = np.mgrid[:32, :48]
    smooth = np.stack([xx * 5, yy * 7, np.full_like(xx, 90)], -1).astype(np.uint8)  # chroma-subsampling friendly
    frames = np.repeat(smooth[None], 12, axis=0)
    frames[6:] = 255 - frames[6:]
    video_io.write_mp4(tmp_path / "x.mp4", frames, fps=6)
    info = video_io.probe(tmp_path / "x.mp4")
    assert (info.num_frames, info.width, info.height) == (12, 48, 32)
    assert info.duration == pytest.approx(2.0, abs=1e-3) and info.fps == pytest.approx(6.0)
    back = video_io.read_frames(tmp_path / "x.mp4", [0.1, 1.5])
    assert np.abs(back[0].astype(int) - frames[0]).mean() < 6 and np.abs(back[1].astype(int) - frames[9]).mean() < 6
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_mp4_refuses_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        video_io.write_mp4(tmp_path / "x.mp4", np.zeros((2, 31, 48, 3), np.uint8), fps=6)


def test_probe_of_garbage_raises_a_video_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(video_io.VideoError):
        video_io.probe(tmp_path / "bad.mp4")


def test_videos_stage_labels_action_layout_and_fails_broken_files(tmp_path):
    root = tmp_path / "ucf"
    for cls in ("ApplyEyeMakeup", "playing_guitar"):
        video_io.write_mp4(root / cls / f"v_{cls}_g01_c01.mp4", np.zeros((8, 16, 16, 3), np.uint8), fps=8)
    (root / "Broken").mkdir()
    (root / "Broken" / "v_Broken_g01_c01.avi").write_bytes(b"\x00" * 64)
    table, base = sources.video_folder(root, layout="action")
    run_stage("videos", {}, table, tmp_path / "m", root=base, input_desc=["ucf"], progress=False)
    rows = {r["label"]: r for r in mf.Manifest.open(tmp_path / "m").read().to_pylist()}
    assert rows["ApplyEyeMakeup"]["caption"] == "apply eye makeup" and rows["ApplyEyeMakeup"]["caption_source"] == "label"
    assert rows["playing_guitar"]["caption"] == "playing guitar"
    assert rows["playing_guitar"]["num_frames"] == 8 and rows["playing_guitar"]["end_time"] == pytest.approx(1.0)
    assert rows["Broken"]["status"] == "failed" and "VideoError" in rows["Broken"]["error"]


def test_humanize_label_handles_ucf_and_kinetics_names():
    assert sources.humanize_label("YoYo") == "yo yo"
    assert sources.humanize_label("PlayingDaf") == "playing daf"
    assert sources.humanize_label("riding_a_bike") == "riding a bike"
    assert sources.humanize_label("TaiChi") == "tai chi"


def _write_gops(path, frames: np.ndarray, fps: int, gop: int) -> None:
    """H.264 with B-frames and a keyframe every `gop` frames (write_mp4 leaves x264's 250)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.options = {"bf": "3", "keyint_min": str(gop), "sc_threshold": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize("gop", [250, 7])
def test_forward_reader_returns_decords_frames_without_falling_back(tmp_path, monkeypatch, gop):
    rng = np.random.default_rng(gop)
    frames = np.clip(rng.normal(128, 40, (40, 48, 64, 3)) + np.arange(40)[:, None, None, None] * 3, 0, 255)
    _write_gops(tmp_path / "v.mp4", frames.astype(np.uint8), fps=10, gop=gop)

    def no_fallback(path, times):
        raise AssertionError("the forward reader fell back to decoding from the start")

    info, decord_read = video_io.open_video(tmp_path / "v.mp4")
    monkeypatch.setattr(video_io, "_read_frames_pyav", no_fallback)
    forward_info, forward_read = video_io.open_video(tmp_path / "v.mp4", reader="pyav")
    assert (forward_info.num_frames, forward_info.width, forward_info.height) == (40, 64, 48)
    for times in ([2.0], [0.0, 0.05, 1.23, 3.9], [3.5, 0.4, 2.75, 2.75, 0.0], sorted(rng.uniform(0, 4, 9))):
        assert np.array_equal(forward_read(times), decord_read(times)), times


@pytest.mark.parametrize("name", ["issue-134-rotate.mp4", "fades.mp4"])
def test_forward_reader_matches_decord_on_real_videos(name):
    path = str(shared_video(name))
    info, decord_read = video_io.open_video(path)
    forward_info, forward_read = video_io.open_video(path, reader="pyav")
    assert (forward_info.width, forward_info.height) == (info.width, info.height)
    times = [info.duration / 2, 0.3, info.duration * 0.9, info.duration / 2]
    assert np.array_equal(forward_read(times), decord_read(times))


# ---------------------------------------------------------------- timestamps decord gets wrong

NO_TIMESTAMP = -3.074457505963704e17  # FFmpeg's AV_NOPTS_VALUE after decord divides it by the frame rate


def _write_h264_avi(path, n=60, fps=30, size=(48, 64), bframes=2, grey=lambda i: 4 * i):
    """Write an H.264 AVI whose frame i is grey level `grey(i)`: a file decord gives no timestamps for."""
    import av

    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": str(bframes)}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), grey(i), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _decord_timestamps(path):
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_frame_timestamp(range(len(reader)))


@pytest.mark.parametrize("bframes, clock", [(0, "pyav"), (2, "index")])
def test_h264_avi_with_bogus_decord_timestamps_probes_on_a_sane_clock(tmp_path, bframes, clock):
    # eva-decord 0.6 gives FFmpeg's "no timestamp" for every frame of these files; with B-frames PyAV's frame times
    # are the packets' (decode order, out of display order), so only the frame index / rate is left
    path = _write_h264_avi(tmp_path / "v.avi", bframes=bframes)
    assert (_decord_timestamps(path)[:, 0] < -1e9).all(), "decord gave timestamps: no longer exercises the fallback"
    info = video_io.probe(path)
    assert info.timestamp_source == clock
    assert (info.num_frames, info.fps, info.width, info.height) == (60, 30.0, 64, 48)
    assert info.duration == pytest.approx(2.0, abs=1e-3)
    assert np.allclose(info.timestamps, np.arange(60) / 30, atol=1e-3)
    for reader in ("decord", "pyav"):
        _, read = video_io.open_video(path, reader=reader)
        grey = read([0.0, 1.0, 1.99, 0.5]).mean(axis=(1, 2, 3))
        assert np.allclose(grey, [0, 120, 236, 60], atol=2), (reader, grey)


def _sentinel_timestamps(monkeypatch):
    import decord

    real = decord.VideoReader.get_frame_timestamp

    def sentinel(self, indices):
        ts = real(self, indices)
        return np.full_like(ts, NO_TIMESTAMP)

    monkeypatch.setattr(decord.VideoReader, "get_frame_timestamp", sentinel)


def test_sentinel_timestamps_fall_back_to_pyav_then_to_frame_index(tmp_path, monkeypatch):
    frames = np.repeat(np.arange(0, 240, 8, dtype=np.uint8)[:, None, None, None], 48, axis=1)
    frames = np.repeat(np.repeat(frames, 64, axis=2), 3, axis=3)
    video_io.write_mp4(tmp_path / "v.mp4", frames, fps=10)
    _sentinel_timestamps(monkeypatch)
    info = video_io.probe(tmp_path / "v.mp4")
    assert info.timestamp_source == "pyav" and info.duration == pytest.approx(3.0, abs=1e-3)
    assert np.allclose(info.timestamps, np.arange(30) / 10, atol=1e-3)

    def no_pyav(path):
        raise video_io.VideoError("PyAV is broken here too")

    monkeypatch.setattr(video_io, "_pyav_frame_times", no_pyav)
    info, read = video_io.open_video(tmp_path / "v.mp4", reader="pyav")
    assert info.timestamp_source == "index" and info.duration == pytest.approx(3.0)
    assert np.allclose(info.timestamps, np.arange(30) / 10)
    assert np.allclose(read([0.0, 1.55, 2.9]).mean(axis=(1, 2, 3)), [0, 120, 232], atol=3)


@pytest.mark.parametrize("starts, end, duration, problem", [
    ([0.0, 0.1, 0.2], 0.3, 0.3, None),
    ([NO_TIMESTAMP] * 3, NO_TIMESTAMP, 0.3, "the first frame starts at"),
    ([0.0, np.nan, 0.2], 0.3, None, "not finite"),
    ([0.0, 0.2, 0.1], 0.3, None, "decreasing"),
    ([0.0, 0.0, 0.0], 0.0, None, "every frame at"),
    ([0.0, 0.1, 0.2], 0.5, 0.25, None),  # headers may understate a duration
    ([0.0, 0.1, 0.2], 9.0, 0.3, "the container lasts"),
])
def test_timestamp_sanity_check_names_what_is_wrong(starts, end, duration, problem):
    found = video_io._timestamp_problem(np.asarray(starts), end, duration, fps=10.0)
    assert found is None if problem is None else problem in found


@pytest.mark.parametrize("bframes, clock", [(0, "pyav"), (2, "index")])
def test_video_stages_succeed_on_the_avi_and_record_the_clock(tmp_path, bframes, clock):
    from vidrd_data.stages.segment import prepare as prepare_segment

    folder = tmp_path / "videos"
    folder.mkdir()
    _write_h264_avi(folder / "v.avi", bframes=bframes, grey=lambda i: 40 if i < 30 else 200)  # a cut at 1 s
    table, base = sources.video_folder(folder)
    run_stage("videos", {}, table, tmp_path / "index", root=base, input_desc=["videos"], workers=1, progress=False)
    [row] = mf.Manifest.open(tmp_path / "index").read().to_pylist()
    assert row["status"] == "ok" and row["timestamps"] == clock and row["end_time"] == pytest.approx(2.0, abs=1e-3)
    job = prepare_segment(str(folder), embedder="histogram", device="cpu")
    run_stage(job.stage, job.params, job.inputs, tmp_path / "seg", root=job.root, input_desc=job.input_desc, workers=1,
              progress=False)
    rows = mf.Manifest.open(tmp_path / "seg").read().to_pylist()
    assert rows and all(r["status"] == "ok" and r["segmentation"]["timestamps"] == clock for r in rows), rows
    assert [t for r in rows for t in (r["start_time"], r["end_time"])] == pytest.approx([0, 1, 1, 2], abs=1e-3)


@pytest.mark.usefixtures("one_torch_thread")
def test_caption_stage_captions_the_avi_on_its_fallback_clock(tmp_path):
    from vidrd_data.stages.caption import prepare as prepare_caption
    from vidrd_demo.models import write_tiny_blip2

    folder = tmp_path / "videos"
    folder.mkdir()
    _write_h264_avi(folder / "v.avi", n=45, bframes=2)
    blip2 = write_tiny_blip2(tmp_path / "blip2")
    job = prepare_caption(str(folder), blip2=str(blip2), device="cpu", beams=1, max_new_tokens=3, decode_in="threads")
    run_stage(job.stage, job.params, job.inputs, tmp_path / "cap", root=job.root, input_desc=job.input_desc,
              workers=1, progress=False)
    [row] = mf.Manifest.open(tmp_path / "cap").read().to_pylist()
    assert row["status"] == "ok", row["error"]
    assert row["captioning"]["timestamps"] == "index" and row["end_time"] == pytest.approx(1.5, abs=1e-3)
    assert row["captioning"]["frame_times"] == pytest.approx([22 / 30], abs=1e-3)  # the middle frame
