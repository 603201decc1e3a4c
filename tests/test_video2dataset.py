"""video2dataset's tar and Parquet shards of real videos as inputs of `videos`, `segment` and `caption`: every
sample and every member ends as an ok row or a failed row with its reason."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from tests.conftest import shared_video
from vidrd_data import manifest as mf
from vidrd_data.run.runner import run_stage
from vidrd_data.sources import video_layout
from vidrd_data.stages import caption, segment, videos

META = pa.schema([("url", pa.string()), ("key", pa.string()), ("status", pa.string()),
                  ("error_message", pa.string()), ("caption", pa.string())])


def _meta(key, caption="", status="success", error=None):
    return {"url": f"https://example.org/{key}.mp4", "key": key, "status": status, "error_message": error,
            "caption": caption}


def write_v2d_tar(folder, samples, failed=(), shard="00000"):
    """Write a shard as video2dataset's WebDatasetSampleWriter does: `KEY.mp4` + `KEY.txt` + `KEY.json` in the
    tar through webdataset's TarWriter, and every attempted sample's meta (failed downloads too) in the parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    metas = []
    with wds.TarWriter(str(folder / f"{shard}.tar")) as sink:
        for key, video, text in samples:
            meta = _meta(key, text)
            sample = {"__key__": key, "txt": text, "json": json.dumps(meta, indent=4)}
            if video is not None:
                sample["mp4"] = video
            sink.write(sample)
            metas.append(meta)
    metas += [_meta(key, status="failed_to_download", error=why) for key, why in failed]
    pq.write_table(pa.Table.from_pylist(metas, schema=META), folder / f"{shard}.parquet")
    return folder


@pytest.fixture
def shards(tmp_path):
    """Two real videos, a corrupt one, a key with no video, a failed download; a second shard cut short."""
    fades, counter = shared_video("fades.mp4").read_bytes(), shared_video("counter.mp4").read_bytes()
    folder = write_v2d_tar(tmp_path / "v2d", [
        ("000000000", fades, "fades in and out"),
        ("000000001", counter, "a counter counts"),
        ("000000002", b"\x00not a video" * 50, "garbage bytes"),
        ("000000003", None, "a caption without its video"),
    ], failed=[("000000004", "HTTP Error 404: Not Found")])
    write_v2d_tar(tmp_path / "v2d", [("000010000", counter, "first of a cut tar"),
                                     ("000010001", fades, "lost in the cut")], shard="00001")
    whole = (folder / "00001.tar").read_bytes()
    (folder / "00001.tar").write_bytes(whole[: len(whole) - len(fades) // 2 - 2048])  # cut inside the 2nd video
    (folder / "00001.parquet").unlink()
    return folder


def _run(job, out):
    run_stage(job.stage, job.params, job.inputs, out, root=job.root, input_desc=job.input_desc, progress=False)
    return mf.Manifest.open(out).read().to_pylist()


def _by_key(rows):
    return {r["key"] or r["source_path"]: r for r in rows}


def test_video2dataset_tars_become_one_row_per_sample_with_its_caption_key_and_url(shards):
    table, root = video_layout(str(shards))
    rows = table.to_pylist()
    assert root == shards.resolve()
    first = rows[0]
    assert first["source_path"] == "00000.tar#000000000.mp4" and first["caption"] == "fades in and out"
    assert first["key"] == "000000000" and first["url"] == "https://example.org/000000000.mp4"
    why = {r["key"] or r["source_path"]: r.get(mf.INPUT_ERROR) for r in rows}
    assert "no video member" in why["000000003"]
    assert "failed_to_download: HTTP Error 404" in why["000000004"]
    assert "is cut short in 000010001.mp4" in why["00001.tar"]
    assert why["000000000"] is None and why["000000002"] is None  # a corrupt video is the decoder's to refuse


def test_videos_stage_probes_videos_inside_the_tar_and_accounts_for_every_sample(shards, tmp_path):
    rows = _by_key(_run(videos.prepare(str(shards)), tmp_path / "m"))
    assert set(rows) == {"000000000", "000000001", "000000002", "000000003", "000000004", "000010000", "000010001",
                         "00001.tar"}
    fades, counter = rows["000000000"], rows["000000001"]
    assert fades["status"] == "ok" and (fades["width"], fades["height"], fades["num_frames"]) == (480, 320, 250)
    assert counter["status"] == "ok" and (counter["num_frames"], counter["width"]) == (30, 1920)
    assert counter["caption"] == "a counter counts" and counter["caption_source"] == "original"
    assert rows["000010000"]["status"] == "ok"  # the sample before the cut is kept
    assert "no video member" in rows["000010001"]["error"]  # its json came before its cut video
    assert "cut short" in rows["000010001"]["error"]
    for key in ("000000002", "000000003", "000000004", "00001.tar"):
        assert rows[key]["status"] == "failed" and rows[key]["error"], key
    assert "decode" in rows["000000002"]["error"].lower() or "video" in rows["000000002"]["error"].lower()


def test_segment_and_caption_read_videos_from_the_tar(shards, tmp_path):
    from vidrd_demo.models.blip2 import write_tiny_blip2

    cuts = shared_video("issue-134-rotate.mp4").read_bytes()  # hard cuts at 3.754 s and 8.759 s
    single = write_v2d_tar(tmp_path / "one", [("k0", cuts, "a movie clip")])
    segmented = _run(segment.prepare(str(single / "00000.tar"), embedder="histogram"), tmp_path / "seg")
    assert len(segmented) >= 2 and all(r["status"] == "ok" for r in segmented), segmented
    assert all(r["source_path"] == "00000.tar#k0.mp4" and r["key"] == "k0" for r in segmented)
    assert any(abs(r["end_time"] - 3.754) < 0.5 for r in segmented)
    blip2 = write_tiny_blip2(tmp_path / "blip2")
    job = caption.prepare(str(single), blip2=str(blip2), beams=1, max_new_tokens=4, decode_in="threads",
                          max_seconds=4.0)
    captioned = _run(job, tmp_path / "cap")
    assert captioned and all(r["status"] == "ok" for r in captioned), captioned
    assert captioned[0]["captioning"]["input_caption"] == "a movie clip" and captioned[0]["end_time"] < 4.1  # max_seconds reached the clips


def test_video2dataset_parquet_shards_hold_the_videos_and_their_failures(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    counter = shared_video("counter.mp4").read_bytes()
    pq.write_table(pa.table({
        "key": ["a", "b", "c"],
        "mp4": pa.array([counter, None, b""], pa.binary()),
        "txt": ["a counter", "", ""],
        "url": ["u0", "u1", "u2"],
        "status": ["success", "failed_to_download", "success"],
        "error_message": [None, "timeout", None],
    }), folder / "00000.parquet")
    rows = _by_key(_run(videos.prepare(str(folder)), tmp_path / "m"))
    assert rows["a"]["status"] == "ok" and rows["a"]["num_frames"] == 30 and rows["a"]["caption"] == "a counter"
    assert rows["a"]["source_path"] == "00000.parquet#a.mp4"
    assert rows["b"]["status"] == "failed" and "failed_to_download: timeout" in rows["b"]["error"]
    assert rows["c"]["status"] == "failed" and "no mp4 bytes" in rows["c"]["error"]


def test_a_tar_cut_between_members_is_reported_not_taken_for_a_complete_shard(tmp_path):
    fades = shared_video("fades.mp4").read_bytes()
    folder = write_v2d_tar(tmp_path / "v2d", [("a", fades, "one"), ("b", fades, "two")])
    whole = (folder / "00000.tar").read_bytes()
    (folder / "00000.tar").write_bytes(whole[: whole.index(b"b.json")])  # cut at the header of b's first member
    rows = {r["key"] or r["source_path"]: r for r in video_layout(str(folder))[0].to_pylist()}
    assert rows["a"].get(mf.INPUT_ERROR) is None
    why = rows["00000.tar"][mf.INPUT_ERROR]  # tarfile's own error, or our check of the end-of-archive marker
    assert "unreadable after 1 sample" in why or "no end-of-archive marker after 1 sample" in why, why
    assert "not read" in rows["b"][mf.INPUT_ERROR]  # listed in the parquet sidecar: its video was in the lost part


def test_a_killed_workers_member_cache_is_removed_by_the_next_one(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from vidrd_io import members

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(members, "_cache_dir", None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"vidrd-members-{gone.pid}-x"
    stale.mkdir()
    (stale / "big.mp4").write_bytes(b"0" * 100)
    folder = write_v2d_tar(tmp_path / "v2d", [("a", shared_video("counter.mp4").read_bytes(), "one")])
    local = members.local_file(str(folder / "00000.tar#a.mp4"))
    assert not stale.exists()
    assert local.startswith(str(tmp_path / f"vidrd-members-{os.getpid()}-"))
    assert open(local, "rb").read() == shared_video("counter.mp4").read_bytes()


def test_a_plain_list_table_is_not_taken_for_video2dataset_output(tmp_path):
    pq.write_table(pa.table({"path": ["a.mp4"], "key": ["a"]}), tmp_path / "list.parquet")
    assert video_layout(str(tmp_path / "list.parquet")) is None
    assert video_layout(str(tmp_path)) is None


def test_loose_videos_beside_an_unrelated_tar_are_not_taken_for_video2dataset_output(tmp_path):
    import io
    import tarfile

    (tmp_path / "a.mp4").write_bytes(shared_video("fades.mp4").read_bytes())
    with tarfile.open(tmp_path / "backup.tar", "w") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"notes"))
    assert video_layout(str(tmp_path)) is None
    assert video_layout(str(tmp_path / "*")) is None


def test_loose_videos_beside_video2dataset_shards_are_one_line_input_error(tmp_path):
    from vidrd_data.sources import InputError

    write_v2d_tar(tmp_path, [("000000000", shared_video("fades.mp4").read_bytes(), "fades")])
    (tmp_path / "loose.mp4").write_bytes(shared_video("counter.mp4").read_bytes())
    with pytest.raises(InputError, match="loose video.*loose.mp4.*00000.tar.*separate folders") as caught:
        video_layout(str(tmp_path))
    assert "\n" not in str(caught.value)
    (tmp_path / "loose.mp4").unlink()
    rows, _ = video_layout(str(tmp_path))
    assert rows.num_rows == 1
