import io
import json
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cli.data import main
from tests.conftest import REPO
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_io.images import open_image
from vidrd_data.ops.motion import draw_motion, motion_boxes, output_size, render_pseudo_video
from vidrd_data.stages.pseudo_video import MotionConfig
from vidrd_data.run.runner import run_stage
from vidrd_io.video import probe


def _photo(w, h, seed=0):
    """A smooth picture (JPEG-friendly) with structure in both directions."""
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.01, 0.05, 2)
    img = np.stack([127 + 120 * np.sin(xx * a), 127 + 120 * np.cos(yy * b), (xx + yy) % 256], -1)
    return Image.fromarray(img.astype(np.uint8))


@pytest.mark.parametrize("image_size", [(400, 300), (300, 400), (640, 256), (256, 256)])
@pytest.mark.parametrize("aspect", ["keep", "square"])
def test_every_frame_box_lies_inside_the_image_with_the_output_aspect(image_size, aspect):
    cfg = MotionConfig()
    out = output_size(image_size, 256, aspect)
    W, H = image_size
    seen = set()
    for seed in range(120):
        motion = draw_motion(np.random.default_rng(seed), image_size, out, cfg, seed)
        seen.add(motion["type"].split("_pan_")[0] if "_pan_" in motion["type"] else motion["type"].split("_")[0])
        boxes = motion_boxes(motion, 8)
        cx, cy, w, h = boxes.T
        assert np.all(cx - w / 2 >= -1e-9) and np.all(cx + w / 2 <= 1 + 1e-9)
        assert np.all(cy - h / 2 >= -1e-9) and np.all(cy + h / 2 <= 1 + 1e-9)
        assert np.allclose((w * W) / (h * H), out[0] / out[1], rtol=1e-9)
        zoom = boxes[0, 2] / boxes[-1, 2]
        if motion["type"] in ("zoom_in", "zoom_out"):
            assert cfg.zoom_range[0] - 1e-9 <= max(zoom, 1 / zoom) <= cfg.zoom_range[1] + 1e-9
        if motion["type"].startswith("pan_"):
            assert zoom == pytest.approx(1.0)
            travel = np.abs(boxes[-1, :2] - boxes[0, :2]).max()
            assert cfg.pan_range[0] - 1e-9 <= travel <= cfg.pan_range[1] + 1e-9
    assert seen == {"zoom", "pan", "zoom_in", "zoom_out"} or {"zoom", "pan"} <= seen


def test_easing_starts_and_ends_slowly():
    motion = {"start_box": [0.5, 0.5, 1.0, 1.0], "end_box": [0.5, 0.5, 0.5, 0.5], "easing": "ease_in_out"}
    widths = motion_boxes(motion, 9)[:, 2]
    steps = np.abs(np.diff(widths))
    assert widths[0] == 1.0 and widths[-1] == 0.5
    assert steps[0] < steps[4] and steps[-1] < steps[4]
    linear = np.abs(np.diff(motion_boxes({**motion, "easing": "linear"}, 9)[:, 2]))
    assert np.allclose(linear, linear[0])


def test_render_gives_frames_of_the_right_size_that_move():
    img = _photo(480, 320)
    motion = draw_motion(np.random.default_rng(3), img.size, (384, 256), MotionConfig(probs={"pan": 1}), 3)
    video = render_pseudo_video(img, motion, (384, 256), 8)
    assert video.shape == (8, 256, 384, 3) and video.dtype == np.uint8
    assert np.abs(video[0].astype(int) - video[-1]).mean() > 5
    # the first frame is the start box of the image, resized
    cx, cy, w, h = motion["start_box"]
    box = ((cx - w / 2) * 480, (cy - h / 2) * 320, (cx + w / 2) * 480, (cy + h / 2) * 320)
    expected = np.asarray(img.resize((384, 256), Image.BILINEAR, box=box))
    assert np.abs(video[0].astype(int) - expected).mean() < 1.0


def test_reducing_a_large_image_first_changes_little():
    yy, xx = np.mgrid[:1600, :2400]
    smooth = np.stack([127 + 120 * np.sin(xx / 200), 127 + 120 * np.cos(yy / 150), (xx + yy) / 16 % 256], -1)
    img = Image.fromarray(smooth.astype(np.uint8))  # detail coarser than the output pixels
    motion = {"start_box": [0.5, 0.5, 1.0, 1.0], "end_box": [0.4, 0.5, 0.7, 0.7], "easing": "linear"}
    fast = render_pseudo_video(img, motion, (96, 64), 4)
    boxes = motion_boxes(motion, 4)
    slow = np.stack([np.asarray(img.resize((96, 64), Image.BILINEAR, box=((cx - w / 2) * 2400, (cy - h / 2) * 1600,
                     (cx + w / 2) * 2400, (cy + h / 2) * 1600))) for cx, cy, w, h in boxes])
    assert np.abs(fast.astype(int) - slow).mean() < 3.0


@pytest.fixture
def photo_set(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    lines = ["image,caption"]
    for i in range(10):
        _photo(320 + 16 * i, 272, seed=i).save(root / f"p{i}.jpg", quality=90)
        lines.append(f"p{i}.jpg,a smooth pattern number {i}")
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return root / "captions.csv"


def _run(table_path, out, **params):
    table, root = sources.caption_table(table_path, path_col="image")
    return run_stage("pseudo-video", {"seed": 0, **params}, table, out, root=root, input_desc=["x"], shard_size=4, progress=False)


def test_same_seed_gives_identical_manifests_and_another_seed_other_motions(photo_set, tmp_path):
    _run(photo_set, tmp_path / "a")
    _run(photo_set, tmp_path / "b")
    _run(photo_set, tmp_path / "c", seed=1)
    a, b, c = (mf.Manifest.open(tmp_path / x).read().to_pylist() for x in "abc")
    assert a == b
    assert [r["motion"] for r in a] != [r["motion"] for r in c]
    assert [r["sample_id"] for r in a] != [r["sample_id"] for r in c]
    for part in range(3):
        assert (tmp_path / "a" / mf.part_name(part)).read_bytes() == (tmp_path / "b" / mf.part_name(part)).read_bytes()


def test_motion_does_not_depend_on_shards_or_order(photo_set, tmp_path):
    table, root = sources.caption_table(photo_set, path_col="image")
    run_stage("pseudo-video", {"seed": 5}, table, tmp_path / "a", root=root, input_desc=["x"], shard_size=3, progress=False)
    reversed_table = table.take(list(range(table.num_rows - 1, -1, -1)))
    run_stage("pseudo-video", {"seed": 5}, reversed_table, tmp_path / "b", root=root, input_desc=["x"], shard_size=7, progress=False)
    key = lambda rows: {r["sample_id"]: r["motion"] for r in rows}  # noqa: E731
    assert key(mf.Manifest.open(tmp_path / "a").read().to_pylist()) == key(mf.Manifest.open(tmp_path / "b").read().to_pylist())


def test_rows_describe_the_clip_and_render_back(photo_set, tmp_path):
    _run(photo_set, tmp_path / "m", frames=6, fps=4, size=128)
    m = mf.Manifest.open(tmp_path / "m")
    rows = m.read().to_pylist()
    assert len(rows) == 10 and all(r["status"] == "ok" and r["kind"] == "pseudo_video" for r in rows)
    r = rows[3]
    assert (r["num_frames"], r["fps"], r["start_time"], r["end_time"], r["end_frame"]) == (6, 4.0, 0.0, 1.5, 6)
    assert r["height"] == 128 and r["width"] == output_size((r["image_width"], r["image_height"]), 128, "keep")[0]
    from vidrd_data.stages.pseudo_video import render_row

    assert render_row(r, m.resolve(r["source_path"])).shape == (6, 128, r["width"], 3)


def test_materialize_writes_mp4s_matching_the_lazy_render(photo_set, tmp_path):
    _run(photo_set, tmp_path / "m", size=64, materialize=str(tmp_path / "mp4"))
    m = mf.Manifest.open(tmp_path / "m")
    row = m.read().to_pylist()[0]
    info = probe(row["materialized_path"])
    assert (info.num_frames, info.width, info.height) == (8, row["width"], 64)
    from vidrd_data.stages.pseudo_video import render_row
    from vidrd_io.video import read_frames

    lazy = render_row(row, m.resolve(row["source_path"]))
    decoded = read_frames(row["materialized_path"], info.timestamps + 1e-3)
    assert np.abs(decoded.astype(int) - lazy).mean() < 8


def _jpeg_with_orientation(path, orientation):
    img = _photo(300, 200)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes())


@pytest.fixture
def bad_images(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    good = _photo(400, 300)
    buf = io.BytesIO()
    good.save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[:700])
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not an image\n")
    good.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((np.asarray(good.convert("L"), np.uint16) * 256)).save(d / "sixteen.png")
    good.convert("P", palette=Image.ADAPTIVE).save(d / "palette.png")
    rgba = good.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "alpha.png")
    good.convert("L").save(d / "gray.png")
    _jpeg_with_orientation(d / "rotated.jpg", 6)
    good.save(d / "anim.gif", save_all=True, append_images=[good.rotate(90), good.rotate(180)])
    Image.new("L", (9000, 9000)).save(d / "bomb.png")  # 81 Mpx: over the limit we set below
    _photo(400, 300).save(d / "ünïcødé 写真.jpg")
    _photo(100, 80).save(d / "small.jpg")
    _photo(1200, 300).save(d / "panorama.jpg")
    names = [p.name for p in sorted(d.iterdir())] + ["missing.jpg"]
    for name in names:
        (d / name).with_suffix(".txt").write_text(f"caption of {name}") if name != "missing.jpg" else None
    (d / "gray.txt").write_bytes(b"caf\xe9 au lait")  # latin-1, not UTF-8
    (d / "small.txt").write_text("   ")
    return d


def test_bad_images_each_end_as_exactly_one_row_with_a_reason(bad_images, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000_000)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    table, root = sources.image_folder(bad_images)
    rows_in = table.to_pylist()
    run_stage("pseudo-video", {"seed": 0, "size": 128, "min_side": 128}, table, tmp_path / "m", root=root, input_desc=["x"], progress=False)
    rows = {r["source_path"]: r for r in mf.Manifest.open(tmp_path / "m").read().to_pylist()}
    assert len(rows) == len(rows_in)
    failed = {k: r["error"] for k, r in rows.items() if r["status"] == "failed"}
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert "truncated" in failed["truncated.jpg"].lower()
    assert "0 bytes" in failed["zero.jpg"]
    assert "identify" in failed["text.jpg"]
    assert "decompression bomb" in failed["bomb.png"]
    assert "not valid UTF-8" in failed["gray.png"]
    assert "empty caption" in failed["small.jpg"]
    assert "aspect ratio" in failed["panorama.jpg"]
    assert set(ok) == {"cmyk.jpg", "sixteen.png", "palette.png", "alpha.png", "rotated.jpg", "anim.gif", "ünïcødé 写真.jpg"}
    assert "first of 3 frames" in ok["anim.gif"]["image_note"]
    assert (ok["rotated.jpg"]["image_width"], ok["rotated.jpg"]["image_height"]) == (200, 300)  # upright
    sixteen = open_image(str(bad_images / "sixteen.png"))
    assert 60 < np.asarray(sixteen).mean() < 200  # scaled to 8 bits, not clipped to white
    alpha = np.asarray(open_image(str(bad_images / "alpha.png")), float)
    assert alpha.mean() > np.asarray(_photo(400, 300), float).mean()  # composited over white


def test_missing_file_fails_with_a_reason(photo_set, tmp_path):
    with open(photo_set, "a") as f:
        f.write("nowhere.jpg,a picture that does not exist\n")
    _run(photo_set, tmp_path / "m")
    row = [r for r in mf.Manifest.open(tmp_path / "m").read().to_pylist() if r["source_path"] == "nowhere.jpg"][0]
    assert row["status"] == "failed" and "No such file" in row["error"]


def _write_shard(path, items, parquet=True):
    with tarfile.open(path, "w") as tar:
        for key, img, caption in items:
            for name, data in ((f"{key}.jpg", img), (f"{key}.txt" if isinstance(caption, bytes) else f"{key}.json", caption if isinstance(caption, bytes) else json.dumps({"caption": caption}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    if parquet:
        pq.write_table(pa.table({"key": [k for k, _, _ in items], "url": [f"https://example.com/{k}.jpg" for k, _, _ in items]}),
                       path.with_suffix(".parquet"))


def test_webdataset_shards_become_pseudo_videos_read_from_the_tar(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    jpeg = lambda seed: (lambda b: (_photo(320, 288, seed).save(b, "JPEG"), b.getvalue())[1])(io.BytesIO())  # noqa: E731
    _write_shard(shards / "00000.tar", [("000000000", jpeg(0), b"a red pattern"), ("000000001", jpeg(1), "a json caption")])
    _write_shard(shards / "00001.tar", [("000010000", jpeg(2), b"\xff\xfe bad bytes"), ("000010001", b"garbage", b"broken image")])
    table, root = sources.webdataset_shards(str(shards / "*.tar"))
    run_stage("pseudo-video", {"seed": 0, "size": 128}, table, tmp_path / "m", root=root, input_desc=["x"], progress=False)
    rows = mf.Manifest.open(tmp_path / "m").read().to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed"]
    assert rows[0]["source_path"] == "00000.tar#000000000.jpg" and rows[1]["caption"] == "a json caption"
    assert rows[0]["url"] == "https://example.com/000000000.jpg" and rows[0]["key"] == "000000000"
    assert "UTF-8" in rows[2]["error"] and "identify" in rows[3]["error"]


def test_a_manifest_of_image_rows_is_an_input(photo_set, tmp_path, capsys):
    table, root = sources.caption_table(photo_set, path_col="image")
    run_stage("images", {}, table, tmp_path / "images", root=root, input_desc=["x"], progress=False)
    assert main(["pseudo-video", str(tmp_path / "images"), "--out", str(tmp_path / "pv"), "--no-progress", "--size", "128"]) == 0
    rows = mf.Manifest.open(tmp_path / "pv").read().to_pylist()
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert mf.Manifest.open(tmp_path / "pv").resolve(rows[0]["source_path"]) == str(photo_set.parent / rows[0]["source_path"])


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--size", "255"], "size must be an even"),
        (["--aspect", "wide"], "aspect must be"),
        (["--motion-probs", "spin=1"], "unknown motion"),
        (["--motion-probs", "zoom_in"], "name=weight"),
        (["--zoom-range", "0.5,2"], "zoom range"),
        (["--pan-range", "0.3"], "MIN,MAX"),
        (["--frames", "0"], "frames must be"),
    ],
)
def test_bad_options_exit_2_in_one_line(photo_set, tmp_path, capsys, extra, needle):
    code = main(["pseudo-video", str(photo_set), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_sigkill_mid_run_then_rerun_gives_the_clean_run_rows(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    lines = ["image,caption"]
    for i in range(48):
        _photo(288, 256, seed=i).save(root / f"{i:02d}.jpg")
        lines.append(f"{i:02d}.jpg,pattern {i}")
    (root / "c.csv").write_text("\n".join(lines) + "\n")
    cmd = lambda out: [sys.executable, "-m", "cli.data", "pseudo-video", str(root / "c.csv"), "--out", str(out),  # noqa: E731
                       "--no-progress", "--shard-size", "6", "--workers", "1", "--size", "256",
                       "--materialize", str(tmp_path / "mp4" / out.name)]
    subprocess.run(cmd(tmp_path / "clean"), check=True, cwd=REPO, capture_output=True)
    killed = 0
    for wait_s in (1.2, 0.8):
        proc = subprocess.Popen(cmd(tmp_path / "killed"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(wait_s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    subprocess.run(cmd(tmp_path / "killed"), check=True, cwd=REPO, capture_output=True)
    clean = mf.Manifest.open(tmp_path / "clean").read().drop_columns(["materialized_path"]).to_pylist()
    again = mf.Manifest.open(tmp_path / "killed").read().drop_columns(["materialized_path"]).to_pylist()
    assert killed >= 1, "the run ended before the kill; the test proved nothing"
    assert again == clean and len({r["sample_id"] for r in again}) == 48
