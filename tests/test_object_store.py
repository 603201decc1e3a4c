"""Stages read from and write to a real S3 HTTP API (moto's standalone server on 127.0.0.1, see conftest)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import fsspec
import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image

from tests.conftest import REPO, shared_video
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.run.runner import retry_failed, run_stage
from vidrd_io import fs, remote
from vidrd_io.images import open_image
from vidrd_io.video import probe, write_mp4


def _put(url: str, data: bytes) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(data)


def _names(url: str) -> list[str]:
    return sorted(fs.list_names(url))


def test_probe_and_open_image_read_objects_from_s3(s3_bucket, tmp_path):
    video = shared_video("counter.mp4")
    _put(f"{s3_bucket}/v/counter.mp4", video.read_bytes())
    Image.fromarray(np.full((6, 8, 3), 200, np.uint8)).save(tmp_path / "a.png")
    _put(f"{s3_bucket}/i/a.png", (tmp_path / "a.png").read_bytes())
    assert probe(f"{s3_bucket}/v/counter.mp4").as_dict() == probe(video).as_dict()
    assert np.array_equal(np.asarray(open_image(f"{s3_bucket}/i/a.png")), np.asarray(open_image(tmp_path / "a.png")))
    with pytest.raises(FileNotFoundError):
        probe(f"{s3_bucket}/v/absent.mp4")


def test_the_video_cache_evicts_least_recently_used_files_beyond_its_bound(s3_bucket, tmp_path, monkeypatch):
    cache = tmp_path / "cache"  # local_copy runs in this process here: the variables reach it
    monkeypatch.setenv("VIDRD_CACHE_DIR", str(cache))
    monkeypatch.setenv("VIDRD_CACHE_BYTES", "2500")
    for name in "abc":
        _put(f"{s3_bucket}/{name}.bin", name.encode() * 1000)
    a = remote.local_copy(f"{s3_bucket}/a.bin")
    b = remote.local_copy(f"{s3_bucket}/b.bin")
    old = time.time() - 3600
    os.utime(a, (old, old - 10))  # a used an hour ago, b just before it: a is the least recently used
    os.utime(b, (old, old))
    assert remote.local_copy(f"{s3_bucket}/a.bin") == a  # a hit: a becomes the most recent, b the least
    os.utime(a, (old + 5, old + 5))
    c = remote.local_copy(f"{s3_bucket}/c.bin")
    kept = sorted(p.name for p in cache.iterdir() if p.is_file())
    assert os.path.exists(a) and os.path.exists(c) and not os.path.exists(b), kept
    assert sum(p.stat().st_size for p in cache.iterdir() if p.is_file()) <= 2500
    assert open(c, "rb").read() == b"c" * 1000


def test_a_replaced_object_is_fetched_again_not_served_stale_from_the_cache(s3_bucket):
    _put(f"{s3_bucket}/x.bin", b"old contents")
    assert open(remote.local_copy(f"{s3_bucket}/x.bin"), "rb").read() == b"old contents"
    _put(f"{s3_bucket}/x.bin", b"new contents, longer")
    assert open(remote.local_copy(f"{s3_bucket}/x.bin"), "rb").read() == b"new contents, longer"


@pytest.fixture
def s3_videos(s3_bucket):
    """A bucket with real videos, an empty one and a list naming them plus a missing one (paths relative to it)."""
    for name in ("counter.mp4", "testvideo.mp4"):
        _put(f"{s3_bucket}/in/clips/{name}", shared_video(name).read_bytes())
    _put(f"{s3_bucket}/in/clips/empty.mp4", b"")
    _put(f"{s3_bucket}/in/list.csv", b"path,label\nclips/counter.mp4,a\nclips/testvideo.mp4,b\nclips/missing.mp4,c\n"
                                     b"clips/empty.mp4,d\n")
    return f"{s3_bucket}/in/list.csv"


def test_videos_stage_reads_from_s3_writes_its_manifest_back_and_redoes_a_part_missing_its_marker(s3_videos, s3_bucket):
    table, root = sources.caption_table(s3_videos, path_col="path", caption_col=None, label_col="label")
    assert root is None and table["source_path"].to_pylist()[0] == f"{s3_bucket}/in/clips/counter.mp4"
    out = f"{s3_bucket}/out"
    summary = run_stage("videos", {}, table, out, root=root, input_desc=[s3_videos], shard_size=2, progress=False)
    assert (summary.input_rows, summary.ok, summary.failed) == (4, 2, 2)
    assert _names(out) == ["_inputs.parquet", "_manifest.json", "part-00000.parquet", "part-00000.stats.json",
                           "part-00001.parquet", "part-00001.stats.json"]
    reference = mf.Manifest.open(out).read().to_pylist()
    rows = {r["label"]: r for r in reference}
    assert rows["a"]["status"] == "ok" and rows["a"]["num_frames"] == probe(shared_video("counter.mp4")).num_frames
    assert rows["b"]["status"] == "ok"
    assert rows["c"]["status"] == "failed" and "missing.mp4" in rows["c"]["error"]
    assert rows["d"]["status"] == "failed" and rows["d"]["error"]

    fs.remove(f"{out}/part-00001.stats.json")  # as if killed between the part's upload and its marker's
    _put(f"{out}/part-00001.parquet", b"torn bytes")
    m = mf.Manifest.open(out)
    assert m.parts == [0] and "part 1 has no stats file" in m.completeness()  # never read as done
    again = run_stage("videos", {}, table, out, root=root, input_desc=[s3_videos], shard_size=2, progress=False)
    assert (again.parts_total, again.parts_skipped) == (2, 1)  # resumed from the bucket: only the torn part redone
    assert mf.Manifest.open(out).read().to_pylist() == reference
    retried = retry_failed(out, progress=False)  # rewrites the parts holding failed rows, in the bucket
    assert (retried.ok, retried.failed) == (2, 2) and mf.Manifest.open(out).read().to_pylist() == reference
    assert [s.get("retried_input_rows") for s in mf.Manifest.open(out).stats()] == [None, 2]  # part 1 holds both


def _run_script(images_csv: str, out: str) -> str:
    return textwrap.dedent(
        f"""
        from vidrd_data import sources
        from vidrd_data.run.runner import retry_failed, run_stage
        table, root = sources.caption_table({images_csv!r}, path_col="image")
        run_stage("tests.slow_stage:SlowImages", {{"delay": 0.05}}, table, {out!r}, root=root, input_desc=["x"],
                  shard_size=5, workers=1, progress=False)
        """
    )


def test_a_run_writing_to_s3_killed_mid_run_resumes_with_every_row_accounted_for(s3_bucket, tmp_path):
    rng = np.random.default_rng(2)
    lines = ["image,caption"]
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "im.png")
        _put(f"{s3_bucket}/imgs/{i:02d}.png", (tmp_path / "im.png").read_bytes())
        lines.append(f"{i:02d}.png,image {i}")
    lines.append("nope.png,missing")
    _put(f"{s3_bucket}/imgs/list.csv", ("\n".join(lines) + "\n").encode())
    out = f"{s3_bucket}/killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = _run_script(f"{s3_bucket}/imgs/list.csv", out)
    kills = 0
    for wait_s in (3.0, 2.0):
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, start_new_session=True)
        time.sleep(wait_s)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        if mf.is_manifest(out):  # readers never see a torn part, even right after a kill
            m = mf.Manifest.open(out)
            assert m.read().num_rows == sum(s["output_rows"] for s in m.stats())
    assert kills >= 1, "the run finished before it could be killed; the test proves nothing"
    subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, check=True, timeout=120)
    rows = mf.Manifest.open(out).require_complete().read().to_pylist()
    assert sorted(r["input_row"] for r in rows) == list(range(31))
    assert len({r["sample_id"] for r in rows}) == 31
    statuses = {r["source_path"].rsplit("/", 1)[-1]: r["status"] for r in rows}
    assert statuses.pop("nope.png") == "failed" and set(statuses.values()) == {"ok"}
    assert not [n for n in _names(out) if n.endswith(".tmp")]


def test_cli_stages_chain_through_the_bucket_videos_then_segment_from_its_manifest(s3_videos, s3_bucket, capsys):
    from cli.data import main
    from tests.conftest import run_cli

    videos, segments = f"{s3_bucket}/m/videos", f"{s3_bucket}/m/segments"
    code, _, err = run_cli(main, capsys, "videos", s3_videos, "--out", videos, "--no-progress")
    assert code == 0, err
    code, _, err = run_cli(main, capsys, "segment", videos, "--out", segments, "--embedder", "histogram",
                           "--no-progress")
    assert code == 0, err
    source = mf.Manifest.open(videos).read(status="ok")
    clips = mf.Manifest.open(segments).require_complete().read()
    assert source.num_rows == 2 and mf.Manifest.open(segments).meta["num_inputs"] == 2
    assert set(clips["input_row"].to_pylist()) == {0, 1}  # every input accounted for
    ok = clips.filter(pc.equal(clips["status"], "ok"))
    assert ok.num_rows >= 2 and f"{s3_bucket}/in/clips/testvideo.mp4" in set(ok["source_path"].to_pylist())
    assert set(clips["source_path"].to_pylist()) <= set(source["source_path"].to_pylist())
    assert all(p.startswith(f"{s3_bucket}/in/clips/") for p in clips["source_path"].to_pylist())


def test_write_mp4_to_a_url_uploads_a_whole_video_that_reads_back(s3_bucket):
    frames = np.random.default_rng(3).integers(0, 255, (6, 16, 24, 3), dtype=np.uint8)
    write_mp4(f"{s3_bucket}/clips/x.mp4", frames, fps=8)
    assert _names(f"{s3_bucket}/clips") == ["x.mp4"]  # no temp object left beside it
    info = probe(f"{s3_bucket}/clips/x.mp4")
    assert (info.num_frames, info.width, info.height) == (6, 24, 16)
