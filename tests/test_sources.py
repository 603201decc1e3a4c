"""Source readers on broken tables: a bad value fails its row with the reason; an unusable table is one line, exit 2."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cli.data import main
from tests.conftest import assert_one_line_error, run_cli
from vidrd_data import manifest as mf
from vidrd_data import sources


def _images(folder, n=22):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    return [f"im{i:02d}.png" for i in range(n)]


@pytest.fixture
def latin1_table(tmp_path):
    """22 good images and one row whose caption is latin-1 (`café`: byte 0xe9), as a CSV written in bytes."""
    names = _images(tmp_path / "imgs")
    lines = [b"image,caption"] + [f"{n},a picture numbered {i}".encode() for i, n in enumerate(names)]
    lines.insert(6, b"im03.png,un caf\xe9 au lait")  # input row 5
    path = tmp_path / "imgs" / "captions.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _rows(out):
    return sorted(mf.Manifest.open(out).read().to_pylist(), key=lambda r: r["input_row"])


@pytest.mark.parametrize("command", ["images", "pseudo-video"])
def test_non_utf8_caption_fails_its_row_and_every_other_row_runs(command, latin1_table, tmp_path, capsys):
    extra = ["--min-side", "16", "--size", "16", "--frames", "2"] if command == "pseudo-video" else []
    code, _, err = run_cli(main, capsys, command, latin1_table, "--out", tmp_path / "out", "--no-progress",
                           "--workers", "1", *extra)
    assert code == 0, err
    assert "Traceback" not in err
    rows = _rows(tmp_path / "out")
    assert len(rows) == 23
    bad = [r for r in rows if r["status"] == "failed"]
    assert [r["input_row"] for r in bad] == [5]
    assert "caption is not valid UTF-8 (byte 0xe9 at offset 6)" in bad[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 22


def test_caption_table_decodes_strictly_and_names_the_problem(tmp_path):
    (tmp_path / "t.csv").write_bytes(
        b"image,caption,label\n"
        b"a.png,plain,1\n"
        b"b.png,cp1252 \x93quoted\x94,2\n"
        b"c.png,nul\x00inside,3\n"
        b"d.png," + b"x" * (sources.MAX_TEXT_CHARS + 1) + b",4\n"
        b"e\xff.png,bad path,5\n"
        b"f.png,too,many,fields\n"
        b"007.png,007,6\n"
    )
    table, _ = sources.caption_table(tmp_path / "t.csv", path_col="image", label_col="label")
    rows = table.to_pylist()
    errors = [r[mf.INPUT_ERROR] for r in rows]
    assert errors[0] is None and rows[0]["caption"] == "plain" and rows[0]["label"] == "1"
    assert errors[1] == "caption is not valid UTF-8 (byte 0x93 at offset 7)" and rows[1]["caption"] is None
    assert errors[2].startswith("caption contains a NUL character (offset 3)")
    assert errors[3] == f"caption is {sources.MAX_TEXT_CHARS + 1} characters long (limit {sources.MAX_TEXT_CHARS})"
    assert errors[4] == "path is not valid UTF-8 (byte 0xff at offset 1)"
    assert rows[5]["caption"] == "007" and rows[5]["source_path"] == "007.png"  # text is never parsed as a number
    assert errors[6].startswith("line has 4 fields, the header 3") and rows[6]["source_path"] is None
    assert len(rows) == 7


def test_jsonl_with_bad_bytes_and_bad_lines_fails_those_rows(tmp_path):
    good = [json.dumps({"image": f"{i}.png", "caption": f"cap {i}"}).encode() for i in range(3)]
    (tmp_path / "t.jsonl").write_bytes(b"\n".join([
        good[0], b'{"image": "x.png", "caption": "caf\xe9"}', b"not json", b"[1, 2]", good[1],
        b'{"image": "y.png", "caption": 5}', good[2],
    ]) + b"\n")
    table, _ = sources.caption_table(tmp_path / "t.jsonl", path_col="image")
    rows = table.to_pylist()
    assert len(rows) == 7
    errors = [r[mf.INPUT_ERROR] for r in rows]
    assert errors[1] == "caption is not valid UTF-8 (byte 0xe9 at offset 3)"
    assert errors[2].startswith("line 3 is not JSON") and errors[3] == "line 4 is a JSON list, not an object"
    assert [rows[i]["caption"] for i in (0, 4, 5, 6)] == ["cap 0", "cap 1", "5", "cap 2"]
    assert [errors[i] for i in (0, 4, 5, 6)] == [None] * 4


def test_parquet_binary_caption_column_is_decoded_per_row(tmp_path):
    pq.write_table(pa.table({"image": ["a.png", "b.png"], "caption": pa.array([b"fine", b"\xc3\x28"], pa.binary())}),
                   tmp_path / "t.parquet")
    rows = sources.caption_table(tmp_path / "t.parquet", path_col="image")[0].to_pylist()
    assert rows[0]["caption"] == "fine" and rows[0][mf.INPUT_ERROR] is None
    assert rows[1][mf.INPUT_ERROR] == "caption is not valid UTF-8 (byte 0xc3 at offset 0)"


def test_span_values_that_are_not_seconds_fail_their_rows(tmp_path):
    (tmp_path / "l.csv").write_text("path,start,end\na.mp4,0,1\nb.mp4,nan,2\nc.mp4,-1,2\nd.mp4,0,inf\ne.mp4,x,2\nf.mp4,,\n")
    rows = sources.video_list(tmp_path / "l.csv")[0].to_pylist()
    errors = [r[mf.INPUT_ERROR] for r in rows]
    assert errors[0] is None and (rows[0]["start_time"], rows[0]["end_time"]) == (0.0, 1.0)
    assert all("is not a time in seconds" in e for e in errors[1:5])
    assert errors[5] is None and rows[5]["start_time"] is None  # empty cells: the whole video


@pytest.mark.parametrize("content, problem", [
    ("image,caption\na.png,x\n".encode("utf-16"), "UTF-16/UTF-32 text"),
    (b"", "cannot read"),
    (b"image,caption\n", "has no rows"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "header is not valid UTF-8"),
    (b"a,b\n1,2\n", "has no column 'image'"),
])
def test_unusable_table_is_one_line_and_exit_2(content, problem, tmp_path, capsys):
    (tmp_path / "t.csv").write_bytes(content)
    code, _, err = run_cli(main, capsys, "images", tmp_path / "t.csv", "--out", tmp_path / "out", "--no-progress")
    assert problem in assert_one_line_error(code, err, "vidrd-data")


def test_utf8_bom_table_reads_its_first_column(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbfimage,caption\na.png,hi\n")
    assert sources.caption_table(tmp_path / "t.csv", path_col="image")[0]["source_path"].to_pylist() == ["a.png"]


def test_caption_sidecar_with_nul_fails_that_image(tmp_path):
    _images(tmp_path, n=2)
    (tmp_path / "im00.txt").write_bytes("a caption".encode("utf-16"))
    (tmp_path / "im01.txt").write_text("fine")
    rows = sources.image_folder(tmp_path)[0].to_pylist()
    assert rows[0][mf.INPUT_ERROR].startswith("caption file im00.txt is not valid UTF-8 (byte 0xff at offset 0)")
    assert rows[1]["caption"] == "fine" and rows[1][mf.INPUT_ERROR] is None


def test_a_row_repeating_an_earlier_one_fails_as_its_duplicate(tmp_path):
    (tmp_path / "t.csv").write_text('image,caption\na.png,one\na.png,two\na.png,one\nb.png,"multi\nline"\n')
    rows = sources.caption_table(tmp_path / "t.csv", path_col="image")[0].to_pylist()
    assert [r[mf.INPUT_ERROR] for r in rows] == [None, None, "duplicate of input row 0 (same source_path, caption)", None]
    assert rows[3]["caption"] == "multi\nline"
    (tmp_path / "l.csv").write_text("path,start,end\nv.mp4,0,1\nv.mp4,1,2\nv.mp4,0,1\n")
    rows = sources.video_list(tmp_path / "l.csv")[0].to_pylist()
    assert [r.get(mf.INPUT_ERROR) for r in rows][2].startswith("duplicate of input row 0")


def test_webdataset_caption_that_is_not_text_fails_that_sample(tmp_path):
    import io
    import tarfile

    members = {"a.jpg": b"x", "a.txt": "caf\u00e9".encode("latin-1"), "b.jpg": b"x", "b.json": b"[1, 2]",
               "c.jpg": b"x", "c.json": b'{"caption": {"nested": 1}}', "d.jpg": b"x", "d.txt": b"fine"}
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = sources.webdataset_shards(str(tmp_path / "00000.tar"))[0].to_pylist()
    errors = {r["key"]: r[mf.INPUT_ERROR] for r in rows}
    assert errors["a"].startswith("caption of a is not valid UTF-8") and errors["b"].startswith("caption of b is not")
    assert errors["c"] == "caption of c in its .json is a dict, not text" and errors["d"] is None
    assert [r["caption"] for r in rows if r["key"] == "d"] == ["fine"]


def test_utf8_bom_jsonl_reads_its_first_line(tmp_path):
    (tmp_path / "t.jsonl").write_bytes(b'\xef\xbb\xbf{"image": "a.png", "caption": "hi"}\n')
    rows = sources.caption_table(tmp_path / "t.jsonl", path_col="image")[0].to_pylist()
    assert rows == [{"source_path": "a.png", "source_dataset": "t", "caption": "hi", "caption_source": "original"}]


def test_parquet_string_column_holding_invalid_utf8_fails_that_row(tmp_path):
    # a careless writer can store bytes that are not UTF-8 in a string column; pyarrow reads them back unchecked
    offsets = pa.py_buffer(np.array([0, 2, 4], dtype=np.int32).tobytes())
    captions = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ok\xe9x")])
    pq.write_table(pa.table({"image": ["a.png", "b.png"], "caption": captions}), tmp_path / "t.parquet")
    rows = sources.caption_table(tmp_path / "t.parquet", path_col="image")[0].to_pylist()
    assert rows[0]["caption"] == "ok" and rows[0][mf.INPUT_ERROR] is None
    assert rows[1][mf.INPUT_ERROR] == "caption is not valid UTF-8 (byte 0xe9 at offset 0)"


def test_a_table_at_a_file_url_reads_exactly_like_its_path(image_set):
    from vidrd_io.images import open_image

    by_path, root = sources.caption_table(image_set, path_col="image")
    by_url, url_root = sources.caption_table(f"file://{image_set}", path_col="image")
    assert by_url.equals(by_path) and url_root == root
    assert open_image(f"file://{image_set.parent / 'im03.png'}").size == (32, 24)


def test_a_table_missing_at_a_url_is_one_input_error_naming_it(tmp_path):
    with pytest.raises(sources.InputError, match="input table not found: file://.*nope.csv"):
        sources.read_table(f"file://{tmp_path}/nope.csv")
