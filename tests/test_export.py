"""`vidrd-data export`: WebDataset shards the webdataset loader reads back, a folder `datasets.load_dataset` opens,
CSV; clips cut from their source span or rendered from their pseudo-video; resumed after SIGKILL to the same files."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.csv as pacsv
import pytest

from cli.data import main
from tests.conftest import assert_one_line_error, run_cli, shared_video
from vidrd_data import manifest as mf
from vidrd_data.export.clips import bucket_name, clip_frames
from vidrd_data.export.run import dataset_card
from vidrd_data.export.shards import HF_SCHEMA
from vidrd_data.run.runner import run_stage
from vidrd_data.stages import pseudo_video, videos
from vidrd_io.video import probe, read_frames, write_mp4


def _frames(n, h, w, seed):
    """n frames of a smooth picture that brightens frame by frame (compresses well, differs per frame)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 160, (h // 8, w // 8, 3)).repeat(8, 0).repeat(8, 1)
    return np.stack([np.clip(base + 6 * i, 0, 255) for i in range(n)]).astype(np.uint8)


def _manifest(job, out):
    run_stage(job.stage, job.params, job.inputs, out, root=job.root, input_desc=job.input_desc, progress=False)
    return out


@pytest.fixture
def clips(tmp_path):
    """A `videos` manifest: three small videos of two sizes, and a list row whose file is missing (failed)."""
    folder = tmp_path / "vids"
    write_mp4(folder / "a.mp4", _frames(16, 48, 64, 0), fps=8)
    write_mp4(folder / "b.mp4", _frames(12, 48, 64, 1), fps=8)
    write_mp4(folder / "c.mp4", _frames(9, 64, 64, 2), fps=8)
    (folder / "list.csv").write_text("path\na.mp4\nb.mp4\nc.mp4\ngone.mp4\n")
    return _manifest(videos.prepare(str(folder / "list.csv")), tmp_path / "m")


def _export(capsys, manifest, out, *options):
    code, stdout, err = run_cli(main, capsys, "export", manifest, "--out", out, "--no-progress", *options)
    assert code == 0, err
    return stdout


def test_webdataset_export_is_read_back_by_the_webdataset_loader(clips, tmp_path, capsys):
    import webdataset as wds

    out = tmp_path / "wds"
    _export(capsys, clips, out, "--format", "webdataset", "--shard-size", "2")
    tars = sorted(str(p) for p in out.glob("*.tar"))
    assert [os.path.basename(t) for t in tars] == ["00000.tar", "00001.tar"]
    ok = mf.Manifest.open(clips).read(status="ok").to_pylist()
    samples = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [r["sample_id"] for r in ok]
    for sample, row in zip(samples, ok):
        meta = json.loads(sample["json"])
        assert meta["sample_id"] == row["sample_id"] and meta["num_frames"] == row["num_frames"]
        clip = tmp_path / f"{sample['__key__']}.mp4"
        clip.write_bytes(sample["mp4"])
        info = probe(clip)
        assert (info.num_frames, info.width, info.height) == (row["num_frames"], row["width"], row["height"])
    accounted = mf.Manifest.open(out / "_export").read().to_pylist()
    assert len(accounted) == 3 and all(r["status"] == "ok" for r in accounted)
    assert {r["export_file"] for r in accounted} == {"00000.tar", "00001.tar"}


def test_a_video_clip_row_is_cut_from_its_source_span():
    counter = shared_video("counter.mp4")  # frame k shows its own number
    row = {"kind": "video_clip", "start_frame": 10, "end_frame": 20, "fps": 10.0}
    frames, fps = clip_frames(row, str(counter))
    source = read_frames(counter, np.arange(30) / 10.0)
    assert fps == 10.0 and len(frames) == 10
    assert np.array_equal(frames, source[10:20])
    assert not np.array_equal(frames[0], source[9])


def test_pseudo_video_rows_are_rendered_by_the_trainers_renderer(image_set, tmp_path, capsys):
    import webdataset as wds

    from vidrd_data.stages.pseudo_video import render_row

    job = pseudo_video.prepare(str(image_set), size=16, frames=4, min_side=16)
    manifest = _manifest(job, tmp_path / "pv")
    out = tmp_path / "wds"
    _export(capsys, manifest, out, "--format", "webdataset", "--crf", "0")
    first = mf.Manifest.open(manifest).read(status="ok").to_pylist()[0]
    sample = next(iter(wds.WebDataset(str(out / "00000.tar"), shardshuffle=False, empty_check=False)))
    (tmp_path / "pv.mp4").write_bytes(sample["mp4"])
    expected = render_row(first, str(image_set.parent / first["source_path"]))
    got = read_frames(tmp_path / "pv.mp4", (np.arange(4) + 0.5) / first["fps"])
    assert got.shape == expected.shape
    luma = np.array([0.299, 0.587, 0.114])  # yuv420p halves chroma (these images are noise): compare brightness

    def error(a, b):
        return np.abs(a @ luma - b @ luma).mean()

    assert error(got, expected) < 3
    assert error(got, expected[::-1]) > 3 * error(got, expected)  # the motion moves the frames apart


def test_bucketing_puts_each_clip_in_the_folder_of_its_resolution_aspect_and_frames(clips, tmp_path, capsys):
    out = tmp_path / "b"
    _export(capsys, clips, out, "--format", "webdataset", "--bucket")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tar")) == [
        "r64_a1.00_f8/00000.tar", "r64_a1.33_f16/00000.tar", "r64_a1.33_f8/00000.tar"]
    assert bucket_name(1920, 1080, 30) == "r1024_a1.78_f24" and bucket_name(480, 854, 5) == "r448_a0.56_f5"


def test_hf_export_opens_with_datasets_load_dataset_and_documents_its_schema(clips, tmp_path, capsys):
    import datasets

    out = tmp_path / "hf"
    _export(capsys, clips, out, "--format", "hf", "--shard-size", "2")
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    ok = mf.Manifest.open(clips).read(status="ok").to_pylist()
    assert loaded["sample_id"] == [r["sample_id"] for r in ok]
    assert set(loaded.column_names) == set(HF_SCHEMA.names)
    (tmp_path / "x.mp4").write_bytes(loaded[0]["mp4"])
    assert probe(tmp_path / "x.mp4").num_frames == ok[0]["num_frames"]
    card = (out / "README.md").read_text()
    assert all(f"| {name} |" in card for name in HF_SCHEMA.names) and card == dataset_card(str(clips))


def test_a_clip_that_cannot_be_read_fails_its_row_and_retry_refuses_to_rewrite_a_shard(clips, tmp_path, capsys):
    from vidrd_data.run.runner import retry_failed
    from vidrd_data.run.stage import StageAbort

    (clips.parent / "vids" / "b.mp4").unlink()  # gone after the manifest was made
    out = tmp_path / "wds"
    _export(capsys, clips, out, "--format", "webdataset")
    rows = {r["source_path"]: r for r in mf.Manifest.open(out / "_export").read().to_pylist()}
    assert rows["b.mp4"]["status"] == "failed" and "no such file" in rows["b.mp4"]["error"]
    assert rows["a.mp4"]["status"] == "ok" and rows["a.mp4"]["export_file"] == "00000.tar"
    before = (out / "00000.tar").read_bytes()
    with pytest.raises(StageAbort, match="cannot be retried alone"):
        retry_failed(out / "_export", progress=False)
    assert (out / "00000.tar").read_bytes() == before


def test_csv_export_holds_the_ok_rows(clips, tmp_path, capsys):
    _export(capsys, clips, tmp_path / "c", "--format", "csv")
    table = pacsv.read_csv(tmp_path / "c" / "rows.csv")
    assert table.num_rows == 3 and set(table["source_path"].to_pylist()) == {"a.mp4", "b.mp4", "c.mp4"}


@pytest.mark.parametrize("options, needle", [
    (["--format", "mov"], "--format must be one of"),
    (["--latents", "cache"], "--latents is not supported yet"),
    (["--format", "hf", "--bucket"], "--bucket applies to --format webdataset only"),
    (["--format", "csv", "--shard-index", "0", "--num-shards", "2"], "--shard-index/--num-shards do not apply"),
    (["--out", "s3://bucket/exported"], "export writes local folders; copy them to the store afterwards"),
])
def test_bad_export_options_end_in_one_line_and_exit_status_2(clips, tmp_path, capsys, monkeypatch, options, needle):
    monkeypatch.chdir(tmp_path)  # a URL taken for a path would make a folder `s3:` here
    code, _, err = run_cli(main, capsys, "export", clips, "--out", tmp_path / "o", *options)
    assert needle in assert_one_line_error(code, err, "vidrd-data")
    assert not (tmp_path / "s3:").exists()


def test_a_killed_export_resumes_to_the_same_files(tmp_path, capsys):
    write_mp4(tmp_path / "v" / "a.mp4", _frames(16, 48, 64, 0), fps=8)  # shard 0: quick
    (tmp_path / "v" / "b.mp4").write_bytes(shared_video("counter.mp4").read_bytes())  # shard 1: 1080p, slow to encode
    _manifest(videos.prepare(str(tmp_path / "v")), tmp_path / "m")
    command = [sys.executable, "-m", "cli.data", "export", str(tmp_path / "m"), "--shard-size", "1", "--workers", "1",
               "--no-progress", "--out"]
    subprocess.run([*command, str(tmp_path / "whole")], check=True, capture_output=True)
    killed = subprocess.Popen([*command, str(tmp_path / "killed")], start_new_session=True)
    first_done = tmp_path / "killed" / "_export" / mf.stats_name(0)
    deadline = time.monotonic() + 120
    while not first_done.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "_export" / mf.stats_name(1)).exists(), "the export ended before the kill"
    subprocess.run([*command, str(tmp_path / "killed")], check=True, capture_output=True)
    whole = sorted(p.name for p in (tmp_path / "whole").glob("*.tar"))
    assert whole == ["00000.tar", "00001.tar"]
    assert sorted(p.name for p in (tmp_path / "killed").iterdir() if not p.name.startswith("_")) == whole
    for name in whole:
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_overwrite_removes_the_shards_of_an_earlier_export_with_another_shard_size(clips, tmp_path, capsys):
    out = tmp_path / "wds"
    _export(capsys, clips, out, "--shard-size", "1", "--bucket")
    _export(capsys, clips, out, "--format", "hf", "--shard-size", "1", "--overwrite")
    (out / "notes.tar").write_bytes(b"not the export's")  # a name the export never writes stays
    _export(capsys, clips, out, "--shard-size", "2", "--overwrite")
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "_export" not in p.parts)
    assert left == ["00000.tar", "00001.tar", "notes.tar"]
