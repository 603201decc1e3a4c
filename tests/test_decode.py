"""The decode-ahead pipeline (run/decode.py): a decoder that segfaults, exits or hangs on a file fails that file's
row only and is remembered across resumes; CUDA out of memory is retried in halves; a lost device stops the stage."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.models.batches import outputs_in_halves
from vidrd_data.run.decode import FAILURES_FILE, DecodePool, DecoderCrashed, DecodeTimeout, map_ordered
from vidrd_data.run.runner import retry_failed, run_stage
from vidrd_data.run.stage import StageAbort
from vidrd_demo.corpus import write_long_videos
from vidrd_io.video import write_mp4

REPO = Path(__file__).resolve().parents[1]


def _calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _rows(out: Path) -> dict[str, dict]:
    return {Path(r["source_path"]).name: r for r in mf.Manifest.open(out).read().to_pylist()}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "bad.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / name)
        (folder / name).with_suffix(".txt").write_text(f"a picture called {name}")
    return sources.image_folder(folder)


# ---------------------------------------------------------------- the pool


def test_pool_gives_results_in_input_order_and_a_crashed_item_fails_alone():
    pool = DecodePool(2, name="test", timeout_s=30)  # builtins as tasks: a worker imports nothing else
    try:
        assert [v for _, v, _ in map_ordered(pool, abs, [-1, 2, -3, 4, -5], lambda x: None, ahead=3)] == [1, 2, 3, 4, 5]
        tasks = [pool.submit(abs, -1), pool.submit(os.abort, path=None), pool.submit(abs, -3)]
        assert tasks[0].result() == 1 and tasks[2].result() == 3
        with pytest.raises(DecoderCrashed) as caught:
            tasks[1].result()
        assert pool.submit(abs, -4).result() == 4  # the dead worker was replaced
    finally:
        pool.close()
    assert "killed by SIGABRT" in str(caught.value)
    assert "Fatal Python error: Aborted" in str(caught.value)  # the tail of the worker's stderr (faulthandler)


def test_pool_passes_an_items_own_exception_through_with_its_type():
    pool = DecodePool(1, name="test")
    try:
        with pytest.raises(TypeError):
            pool.submit(abs, "x").result()
        assert pool.submit(abs, -7).result() == 7  # the worker is still there
    finally:
        pool.close()


def test_a_pool_whose_supervisor_fails_fails_its_items_instead_of_leaving_them_waiting(monkeypatch):
    pool = DecodePool(1, name="test")
    try:
        assert pool.submit(abs, -1).result() == 1

        def cannot_start_workers():
            raise OSError(24, "Too many open files")

        monkeypatch.setattr(pool, "_dispatch", cannot_start_workers)
        task = pool.submit(abs, -2)
        with pytest.raises(DecoderCrashed, match="decode pool failed .*Too many open files"):
            task.result()
        with pytest.raises(RuntimeError, match="closed"):
            pool.submit(abs, -3)
    finally:
        pool.close()


def test_idle_workers_end_and_the_next_item_starts_new_ones(monkeypatch):
    import multiprocessing
    import time

    from vidrd_data.run import decode

    monkeypatch.setattr(decode, "IDLE_S", 0.5)
    pool = DecodePool(2, name="idle")
    try:
        assert pool.submit(abs, -2).result() == 2
        deadline = time.monotonic() + 10
        while any(p.name.startswith("idle-decode") for p in multiprocessing.active_children()):
            assert time.monotonic() < deadline, "idle decode workers did not end"
            time.sleep(0.1)
        assert pool.submit(abs, -3).result() == 3
    finally:
        pool.close()


# ---------------------------------------------------------------- an image stage


@pytest.mark.parametrize("how, reason", [("segv", "killed by SIGSEGV"), ("exit", "exited with status 3"),
                                         ("hang", "no result after 4 s")])
def test_image_decoder_that_crashes_or_hangs_fails_one_row_and_resume_does_not_decode_it_again(images, tmp_path, how,
                                                                                             reason):
    table, root = images
    calls, out = tmp_path / "calls.txt", tmp_path / "m"
    params = {"calls": str(calls), how: "bad.png"}
    run_stage("tests.crash_stage:CrashingImages", params, table, out, root=root, input_desc=["x"], workers=1,
              progress=False)
    rows = _rows(out)
    assert {name: r["status"] for name, r in rows.items()} == {"a.png": "ok", "bad.png": "failed", "c.png": "ok"}
    assert reason in rows["bad.png"]["error"]
    assert (DecodeTimeout if how == "hang" else DecoderCrashed).__name__ in rows["bad.png"]["error"]
    [entry] = [json.loads(line) for line in (out / FAILURES_FILE).read_text().splitlines()]
    assert entry["path"].endswith("bad.png") and reason in entry["reason"]
    assert _calls(calls).count("bad.png") == 1

    (out / mf.stats_name(0)).unlink()  # as if the run had been killed before its part was complete: resume redoes it
    run_stage("tests.crash_stage:CrashingImages", params, table, out, root=root, input_desc=["x"], workers=1,
              progress=False)
    again = _rows(out)
    assert _calls(calls).count("bad.png") == 1  # failed from the log, not decoded again
    assert _calls(calls).count("a.png") == 2
    assert again["bad.png"]["status"] == "failed" and "not decoded again" in again["bad.png"]["error"]
    assert reason in again["bad.png"]["error"]
    assert {n: r["sample_id"] for n, r in again.items()} == {n: r["sample_id"] for n, r in rows.items()}
    retry_failed(out, progress=False)  # `vidrd-data retry` honours the log too: the same bytes would crash again
    assert _calls(calls).count("bad.png") == 1 and _rows(out)["bad.png"]["status"] == "failed"


def test_a_file_changed_since_its_crash_is_decoded_again(images, tmp_path):
    table, root = images
    calls, out = tmp_path / "calls.txt", tmp_path / "m"
    params = {"calls": str(calls), "segv": "bad.png"}
    run_stage("tests.crash_stage:CrashingImages", params, table, out, root=root, input_desc=["x"], progress=False)
    Image.new("RGB", (40, 30), "red").save(Path(root) / "bad.png")  # replaced: another size, another mtime
    (out / mf.stats_name(0)).unlink()
    run_stage("tests.crash_stage:CrashingImages", params, table, out, root=root, input_desc=["x"], progress=False)
    assert _calls(calls).count("bad.png") == 2
    assert len((out / FAILURES_FILE).read_text().splitlines()) == 2
    run_stage("tests.crash_stage:CrashingImages", params, table, out, root=root, input_desc=["x"], progress=False,
              overwrite=True)  # the failure log is the run's own file: --overwrite deletes it with the parts
    assert len((out / FAILURES_FILE).read_text().splitlines()) == 1


def test_the_process_running_the_stage_exits_0_when_a_decoder_segfaults(images, tmp_path):
    table, root = images
    table_path = tmp_path / "images.csv"
    table_path.write_text("image,caption\n" + "".join(f"{p},{c}\n" for p, c in zip(
        table["source_path"].to_pylist(), table["caption"].to_pylist())))
    script = textwrap.dedent(f"""
        from vidrd_data import sources
        from vidrd_data.run.runner import retry_failed, run_stage
        table, root = sources.caption_table({str(table_path)!r}, path_col="image", root={str(root)!r})
        run_stage("tests.crash_stage:CrashingImages", {{"calls": {str(tmp_path / 'calls.txt')!r}, "segv": "bad.png"}},
                  table, {str(tmp_path / 'm')!r}, root=root, input_desc=["x"], workers=1, progress=False)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(r["status"] for r in _rows(tmp_path / "m").values()) == ["failed", "ok", "ok"]


# ---------------------------------------------------------------- a video stage


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    long = write_long_videos(folder / "long")
    good = sorted(long.glob("*.mp4"))[0]
    for name in ("a.mp4", "bad.mp4", "c.mp4"):
        (folder / name).write_bytes(good.read_bytes())
    return sources.video_folder(folder)


@pytest.mark.parametrize("how, reason", [("segv", "killed by SIGSEGV"), ("hang", "no result after 4 s")])
def test_segment_decoder_that_crashes_or_hangs_fails_one_row_and_resume_does_not_decode_it_again(videos, tmp_path, how,
                                                                                               reason):
    table, root = videos
    table = table.filter(np.isin(np.array([Path(p).name for p in table["source_path"].to_pylist()]),
                                 ["a.mp4", "bad.mp4", "c.mp4"]))
    calls, out = tmp_path / "calls.txt", tmp_path / "m"
    params = {"embedder": "histogram", "calls": str(calls), how: "bad.mp4"}
    run_stage("tests.crash_stage:CrashingSegment", params, table, out, root=root, input_desc=["x"], workers=1,
              progress=False)
    rows = list(mf.Manifest.open(out).read().to_pylist())
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and Path(failed[0]["source_path"]).name == "bad.mp4" and reason in failed[0]["error"]
    assert {Path(r["source_path"]).name for r in rows if r["status"] == "ok"} == {"a.mp4", "c.mp4"}
    (out / mf.stats_name(0)).unlink()
    run_stage("tests.crash_stage:CrashingSegment", params, table, out, root=root, input_desc=["x"], workers=1,
              progress=False)
    assert _calls(calls).count("bad.mp4") == 1
    again = mf.Manifest.open(out).read().to_pylist()
    assert [r["sample_id"] for r in again] == [r["sample_id"] for r in rows]


# ---------------------------------------------------------------- CUDA out of memory, a lost device


def test_out_of_memory_batches_are_retried_in_halves_and_only_items_that_never_fit_fail():
    sizes = []

    def run(start, stop):
        sizes.append(stop - start)
        if stop - start > 2 or start <= 5 < stop:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"item {i}" for i in range(start, stop)]

    out = outputs_in_halves(run, 8)
    assert sizes[:3] == [8, 4, 2]
    assert [o for i, o in enumerate(out) if i != 5] == [f"item {i}" for i in range(8) if i != 5]
    assert isinstance(out[5], torch.cuda.OutOfMemoryError)


def test_a_device_error_that_is_not_out_of_memory_raises_stage_abort_in_one_line():
    def run(start, stop):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be ...")

    with pytest.raises(StageAbort) as caught:
        outputs_in_halves(run, 4)
    assert "\n" not in str(caught.value) and "illegal memory access" in str(caught.value)


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory):
    from vidrd_demo.models import write_tiny_blip2

    return write_tiny_blip2(tmp_path_factory.mktemp("models") / "blip2")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(1)
    for i in range(3):
        write_mp4(folder / f"v{i}.mp4", rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), fps=8)
    return sources.video_folder(folder)


CAPTION = {"beams": 1, "max_new_tokens": 4, "batch_size": 4, "decode_in": "threads"}


def test_caption_stage_out_of_memory_above_one_frame_gives_the_same_captions(clips, blip2_dir, tmp_path, monkeypatch):
    from vidrd_data.models.captioners.blip2 import Blip2Captioner

    table, root = clips
    params = {"blip2": str(blip2_dir), **CAPTION}
    run_stage("caption", params, table, tmp_path / "plain", root=root, input_desc=["x"], workers=1, progress=False)
    real, sizes = Blip2Captioner.generate, []

    def generate(self, prepared):
        sizes.append(len(prepared["pixel_values"]))
        if len(prepared["pixel_values"]) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, prepared)

    monkeypatch.setattr(Blip2Captioner, "generate", generate)
    run_stage("caption", params, table, tmp_path / "oom", root=root, input_desc=["x"], workers=1, progress=False)
    plain, oom = (mf.Manifest.open(tmp_path / d).read().to_pylist() for d in ("plain", "oom"))
    assert max(sizes) > 1 and all(r["status"] == "ok" for r in oom)
    assert [(r["sample_id"], r["caption"]) for r in oom] == [(r["sample_id"], r["caption"]) for r in plain]


def test_caption_stage_stops_on_a_lost_device_and_writes_no_part(clips, blip2_dir, tmp_path, monkeypatch):
    from vidrd_data.models.captioners.blip2 import Blip2Captioner

    def generate(self, prepared):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(Blip2Captioner, "generate", generate)
    table, root = clips
    with pytest.raises(StageAbort, match="device-side assert triggered"):
        run_stage("caption", {"blip2": str(blip2_dir), **CAPTION}, table, tmp_path / "m", root=root,
                  input_desc=["x"], workers=1, progress=False)
    assert not list((tmp_path / "m").glob("part-*"))


def test_segment_embedder_out_of_memory_is_halved_and_a_lost_device_stops_the_stage(videos, tmp_path, monkeypatch):
    from vidrd_data.models.embedders import HistogramEmbedder

    table, root = videos
    table = table.slice(0, 2)
    params = {"embedder": "histogram", "batch_size": 8}
    run_stage("segment", params, table, tmp_path / "plain", root=root, input_desc=["x"], workers=1, progress=False)
    real = HistogramEmbedder.embed

    def embed_at_most_3(self, frames):
        if len(frames) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(self, frames)

    monkeypatch.setattr(HistogramEmbedder, "embed", embed_at_most_3)
    run_stage("segment", params, table, tmp_path / "oom", root=root, input_desc=["x"], workers=1, progress=False)
    plain, oom = (mf.Manifest.open(tmp_path / d).read().to_pylist() for d in ("plain", "oom"))
    assert plain == oom

    def lost(self, frames):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(HistogramEmbedder, "embed", lost)
    with pytest.raises(StageAbort, match="illegal memory access"):
        run_stage("segment", params, table, tmp_path / "lost", root=root, input_desc=["x"], workers=1, progress=False)
    assert not list((tmp_path / "lost").glob("part-*"))


def test_out_of_memory_reported_as_a_plain_cuda_runtime_error_is_halved_not_a_lost_device():
    from vidrd_data.models.batches import is_device_failure, is_out_of_memory

    for message in ("CUDA error: out of memory", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"):
        assert is_out_of_memory(RuntimeError(message)) and not is_device_failure(RuntimeError(message))
    assert is_device_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_out_of_memory(ValueError("out of memory"))

