import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from vidrd_data import manifest as mf
from vidrd_io import fs
from vidrd_data import sources
from vidrd_data.run.runner import run_stage


def _reference_columns():
    text = (REPO / "manifests" / "README.md").read_text()
    section = text.split("## Columns", 1)[1]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (yes|no) \|", section, flags=re.M)
    assert rows, "no column table found in manifests/README.md"
    return rows


def test_column_reference_matches_base_schema():
    reference = _reference_columns()
    assert [name for name, _, _ in reference] == list(mf.BASE_COLUMNS)
    for name, type_name, nullable in reference:
        field = mf.BASE_SCHEMA.field(name)
        assert str(field.type) == type_name, name
        assert field.nullable == (nullable == "yes"), name


def test_every_written_part_matches_the_reference(image_set, tmp_path):
    table, root = sources.caption_table(image_set, path_col="image")
    run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], shard_size=5, progress=False)
    reference = _reference_columns()
    m = mf.Manifest.open(tmp_path / "m")
    assert len(m.parts) == 3
    for i in m.parts:
        schema = pq.read_schema(m.part_path(i))
        assert [(f.name, str(f.type)) for f in schema][: len(reference)] == [(n, t) for n, t, _ in reference]
        assert schema.names[len(reference):] == ["licence"]  # unknown input column carried through


def test_sample_id_is_deterministic_and_depends_on_kind_source_and_span():
    a = mf.make_sample_id("video_clip", "ucf", "a/b.mp4", [0, 16])
    assert a == mf.make_sample_id("video_clip", "ucf", "a/b.mp4", [0, 16])
    assert re.fullmatch(r"[0-9a-f]{20}", a)
    others = {
        mf.make_sample_id("pseudo_video", "ucf", "a/b.mp4", [0, 16]),
        mf.make_sample_id("video_clip", "k400", "a/b.mp4", [0, 16]),
        mf.make_sample_id("video_clip", "ucf", "a/c.mp4", [0, 16]),
        mf.make_sample_id("video_clip", "ucf", "a/b.mp4", [16, 32]),
    }
    assert a not in others and len(others) == 4
    captions = {mf.make_sample_id("image", "coco", "1.jpg", variant=c) for c in ("a dog", "a brown dog")}
    assert len(captions) == 2


def test_paths_are_stored_relative_to_root_and_uris_kept(tmp_path):
    assert mf.relativize(tmp_path / "x" / "y.jpg", tmp_path) == "x/y.jpg"
    assert mf.relativize("/elsewhere/y.jpg", tmp_path) == "/elsewhere/y.jpg"
    assert mf.relativize("s3://bucket/y.jpg", tmp_path) == "s3://bucket/y.jpg"
    assert mf.resolve("x/y.jpg", "/data") == "/data/x/y.jpg"
    assert mf.resolve("s3://bucket/y.jpg", "/data") == "s3://bucket/y.jpg"


def test_manifest_moved_with_its_data_still_resolves_and_root_override_works(image_set, tmp_path):
    table, root = sources.caption_table(image_set, path_col="image")
    out = image_set.parent / "manifest"
    run_stage("images", {}, table, out, root=root, input_desc=["x"], progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(image_set.parent, moved)
    shutil.rmtree(image_set.parent)
    m = mf.Manifest.open(moved / "manifest")
    row = m.read(status="ok").slice(0, 1).to_pylist()[0]
    assert (moved / row["source_path"]).is_file()
    assert m.resolve(row["source_path"]) == str(moved / row["source_path"])
    assert mf.Manifest.open(moved / "manifest", root="/mnt/other").resolve("a.png") == "/mnt/other/a.png"


def test_manifest_json_records_the_run(image_set, tmp_path):
    table, root = sources.caption_table(image_set, path_col="image")
    run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=[str(image_set)], progress=False)
    meta = json.loads((tmp_path / "m" / "_manifest.json").read_text())
    for key in ("kind", "schema_version", "stage", "params", "inputs", "package_version", "created_at", "root"):
        assert key in meta
    assert meta["kind"] == "image" and meta["stage"] == "images" and meta["inputs"] == [str(image_set)]
    assert mf.schema_from_json(meta["schema"]).names[: len(mf.BASE_COLUMNS)] == list(mf.BASE_COLUMNS)


def test_stats_count_rows_and_failure_reasons(image_set, tmp_path):
    table, root = sources.caption_table(image_set, path_col="image")
    run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], progress=False)
    (stats,) = mf.Manifest.open(tmp_path / "m").stats()
    assert stats["input_rows"] == stats["output_rows"] == 14
    assert (stats["ok"], stats["failed"]) == (12, 2)
    assert sum(stats["failure_reasons"].values()) == 2
    assert any("empty caption" in r for r in stats["failure_reasons"])
    assert stats["wall_time_s"] > 0 and stats["samples_per_s"] > 0


def test_incomplete_part_without_stats_is_invisible(image_set, tmp_path):
    table, root = sources.caption_table(image_set, path_col="image")
    run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], shard_size=5, progress=False)
    (tmp_path / "m" / mf.stats_name(1)).unlink()
    m = mf.Manifest.open(tmp_path / "m")
    assert m.parts == [0, 2]
    assert m.read().num_rows == 5 + 4


def test_open_rejects_what_is_not_a_manifest(tmp_path):
    with pytest.raises(mf.ManifestError, match="not a manifest"):
        mf.Manifest.open(tmp_path)
    (tmp_path / "_manifest.json").write_text("{broken")
    with pytest.raises(mf.ManifestError, match="not valid JSON"):
        mf.Manifest.open(tmp_path)
    (tmp_path / "_manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(mf.ManifestError, match="schema_version 99"):
        mf.Manifest.open(tmp_path)


def test_rows_to_table_rejects_a_value_of_the_wrong_type():
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError)):
        mf.rows_to_table([{"sample_id": "a", "kind": "image", "status": "ok", "input_row": 0, "width": "wide"}], mf.BASE_SCHEMA)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    import os
    import stat

    fs.write_json_atomic(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) and mode != 0o600


@pytest.fixture
def seven_parts(image_set, tmp_path):
    """A finished 7-part manifest of the images stage (12 inputs + 2 broken, 2 rows a part)."""
    table, root = sources.caption_table(image_set, path_col="image")
    run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], shard_size=2, progress=False)
    assert len(mf.Manifest.open(tmp_path / "m").parts) == 7
    return tmp_path / "m"


def test_require_complete_names_the_missing_parts_and_allow_partial_only_warns(seven_parts, caplog):
    (seven_parts / mf.part_name(3)).unlink()
    (seven_parts / mf.stats_name(3)).unlink()
    (seven_parts / mf.stats_name(5)).unlink()  # a part without its stats file is as missing as an absent one
    m = mf.Manifest.open(seven_parts)  # opening (to inspect) still works
    assert m.missing_parts() == [3, 5]
    with pytest.raises(mf.IncompleteManifest) as error:
        m.require_complete()
    assert str(error.value) == (f"{seven_parts} is incomplete: parts 3, 5 of 7 missing; part 5 has no stats file "
                                "(a stage still running or killed? re-run it, or pass --allow-partial)")
    assert isinstance(error.value, mf.ManifestError)
    assert mf.Manifest.open_for_work(seven_parts, allow_partial=True).parts == [0, 1, 2, 4, 6]
    assert "parts 3, 5 of 7 missing; part 5 has no stats file; reading the 5 complete parts anyway (--allow-partial)" \
        in caplog.text


def test_inspect_shows_missing_parts_validate_and_retry_refuse_with_one_line(seven_parts, capsys):
    from cli.data import main
    from tests.conftest import assert_one_line_error, run_cli

    (seven_parts / mf.part_name(6)).unlink()
    (seven_parts / mf.stats_name(6)).unlink()
    code, out, _ = run_cli(main, capsys, "inspect", seven_parts, "--json")
    info = json.loads(out)
    assert code == 0 and info["parts_missing"] == [6] and "part 6 of 7 missing" in info["incomplete"]
    code, out, _ = run_cli(main, capsys, "inspect", seven_parts)
    assert code == 0 and "part 6 of 7 missing" in out
    code, out, _ = run_cli(main, capsys, "validate", seven_parts, "--no-files")
    assert code == 1 and "part 6 of 7 missing" in out
    code, _, err = run_cli(main, capsys, "retry", seven_parts)
    assert "is incomplete: part 6 of 7 missing" in assert_one_line_error(code, err, "vidrd-data")


def test_eval_video_list_refuses_an_incomplete_manifest(seven_parts):
    from vidrd_model.eval.videos import list_videos

    assert len(list_videos(seven_parts)) == 12
    (seven_parts / mf.stats_name(2)).unlink()
    with pytest.raises(ValueError, match=r"is incomplete: part 2 of 7 missing; part 2 has no stats file \(a stage"):
        list_videos(seven_parts)
