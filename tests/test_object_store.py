"""Stages read from and write to a real S3 HTTP API (moto's standalone server on 127.0.0.1, see conftest)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import fsspec
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, shared_video
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.run.runner import run_stage
from vidrd_io import fs, remote
from vidrd_io.images import open_image
from vidrd_io.video import probe


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
    cache = tmp_path / "cache"
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
    for name in ("counter.mp4", "fades.mp4"):
        _put(f"{s3_bucket}/in/clips/{name}", shared_video(name).read_bytes())
    _put(f"{s3_bucket}/in/clips/empty.mp4", b"")
    _put(f"{s3_bucket}/in/list.csv", b"path,label\nclips/counter.mp4,a\nclips/fades.mp4,b\nclips/missing.mp4,c\n"
                                     b"clips/empty.mp4,d\n")
    return f"{s3_bucket}/in/list.csv"


def test_videos_stage_reads_a_table_and_videos_from_s3_and_writes_its_manifest_back(s3_videos, s3_bucket):
    table, root = sources.caption_table(s3_videos, path_col="path", caption_col=None, label_col="label")
    assert root is None and table["source_path"].to_pylist()[0] == f"{s3_bucket}/in/clips/counter.mp4"
    out = f"{s3_bucket}/out"
    summary = run_stage("videos", {}, table, out, root=root, input_desc=[s3_videos], shard_size=2, progress=False)
    assert (summary.input_rows, summary.ok, summary.failed) == (4, 2, 2)
    assert _names(out) == ["_inputs.parquet", "_manifest.json", "part-00000.parquet", "part-00000.stats.json",
                           "part-00001.parquet", "part-00001.stats.json"]
    rows = {r["label"]: r for r in mf.Manifest.open(out).read().to_pylist()}
    assert rows["a"]["status"] == "ok" and rows["a"]["num_frames"] == probe(shared_video("counter.mp4")).num_frames
    assert rows["b"]["status"] == "ok"
    assert rows["c"]["status"] == "failed" and "missing.mp4" in rows["c"]["error"]
    assert rows["d"]["status"] == "failed" and rows["d"]["error"]
    again = run_stage("videos", {}, table, out, root=root, input_desc=[s3_videos], shard_size=2, progress=False)
    assert again.parts_skipped == again.parts_total == 2  # resumed from the bucket: nothing redone


def test_a_part_without_its_stats_marker_in_the_bucket_is_never_read_and_is_redone(s3_videos, s3_bucket):
    table, root = sources.caption_table(s3_videos, path_col="path", caption_col=None, label_col="label")
    out = f"{s3_bucket}/torn"
    run_stage("videos", {}, table, out, root=root, input_desc=[s3_videos], shard_size=2, progress=False)
    reference = mf.Manifest.open(out).read().to_pylist()
    fs.remove(f"{out}/part-00001.stats.json")  # as if killed between the part's upload and its marker's
    _put(f"{out}/part-00001.parquet", b"torn bytes")
    m = mf.Manifest.open(out)
    assert m.parts == [0] and "part 1 has no stats file" in m.completeness()
    summary = run_stage("videos", {}, table, out, root=root, input_desc=[s3_videos], shard_size=2, progress=False)
    assert summary.parts_skipped == 1
    assert mf.Manifest.open(out).read().to_pylist() == reference


def _run_script(images_csv: str, out: str) -> str:
    return textwrap.dedent(
        f"""
        from vidrd_data import sources
        from vidrd_data.run.runner import run_stage
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
