import json
import os

import numpy as np
import pytest
from PIL import Image

from cli.data import main
from tests.conftest import REPO
from vidrd_data import manifest as mf
from vidrd_data.mix.mix import build
from vidrd_data.mix.recipe import load_recipe
from vidrd_data.run.runner import run_stage
from vidrd_io.video import write_mp4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    lines = ["image,caption"]
    for i in range(10):
        yy, xx = np.mgrid[:256, :320]
        img = np.stack([(xx * (i + 1)) % 256, (yy * 3) % 256, np.full_like(xx, 20 * i)], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "imgs" / f"{i}.png")
        lines.append(f"{i}.png,an image number {i}")
    Image.open(root / "imgs" / "0.png").save(root / "imgs" / "copy_of_0.png")  # same content, other name
    lines.append("copy_of_0.png,an image number 0")
    lines.append("missing.png,gone")
    (root / "imgs" / "captions.csv").write_text("\n".join(lines) + "\n")
    for cls in ("Jump", "Run"):
        for g in (1, 2):
            frames = rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
            write_mp4(root / "ucf" / cls / f"v_{cls}_g{g:02d}_c01.mp4", frames, fps=8)
    (root / "recipe.toml").write_text(
        """
[recipe]
root = "."
val_fraction = 0.3
seed = 1
shard_size = 4

[sources.stills]
stage = "pseudo-video"
input = "imgs/captions.csv"
size = 128
min_side = 128
weight = 2.0

[sources.again]
stage = "pseudo-video"
input = "imgs/captions.csv"
size = 128
min_side = 128
cap = 3

[sources.ucf]
stage = "videos"
input = "ucf"
layout = "action"
weight = 0.5
"""
    )
    return root


def _mixed_rows(out):
    return mf.Manifest.open(out / "mixed").read().to_pylist()


def test_build_writes_a_mixed_manifest_whose_counts_match_the_report(corpus, tmp_path):
    report = build(load_recipe(corpus / "recipe.toml"), tmp_path / "b", progress=False)
    rows = _mixed_rows(tmp_path / "b")
    assert report["rows"] == len(rows) == 10 + 4  # 11 images less the byte-identical copy; 'again' is all duplicates
    assert report["rows_by_source_and_kind"] == {"stills/pseudo_video": 10, "ucf/video_clip": 4}
    assert report["sources"]["stills"]["duplicates"] == 1 and report["sources"]["stills"]["failed"] == 1
    assert report["sources"]["again"]["capped"] == 8 and report["sources"]["again"]["duplicates"] == 3
    assert sum(report["splits"].values()) == len(rows) and set(report["splits"]) == {"train", "val"}
    assert {r["source"]: r["source_weight"] for r in rows} == {"stills": 2.0, "ucf": 0.5}
    assert all(r["content_hash"] and r["status"] == "ok" for r in rows)
    assert main(["validate", str(tmp_path / "b" / "mixed")]) == 0
    on_disk = json.loads((tmp_path / "b" / "report.json").read_text())
    assert on_disk["rows"] == len(rows) and (tmp_path / "b" / "report.png").stat().st_size > 1000
    assert "| stills |" in (tmp_path / "b" / "report.md").read_text()
    # paths are relative to the recipe root and resolve through the mixed manifest
    m = mf.Manifest.open(tmp_path / "b" / "mixed")
    assert all(os.path.exists(m.resolve(r["source_path"])) for r in rows)


def test_split_is_a_deterministic_function_of_the_sample_id(corpus, tmp_path):
    build(load_recipe(corpus / "recipe.toml"), tmp_path / "a", progress=False)
    build(load_recipe(corpus / "recipe.toml"), tmp_path / "b", progress=False)
    assert _mixed_rows(tmp_path / "a") == _mixed_rows(tmp_path / "b")


def test_two_slices_merged_equal_one_local_build(corpus, tmp_path):
    recipe = load_recipe(corpus / "recipe.toml")
    build(recipe, tmp_path / "local", workers=2, progress=False)
    for i in range(2):
        assert build(recipe, tmp_path / "sliced", shard_index=i, num_shards=2, progress=False) is None
    with pytest.raises(mf.IncompleteManifest, match="half/sources/stills is incomplete: part 1 of 3 missing"):
        build(recipe, tmp_path / "half", shard_index=0, num_shards=2, progress=False) or build(
            recipe, tmp_path / "half", merge_only=True, progress=False)
    build(recipe, tmp_path / "sliced", merge_only=True, progress=False)
    assert _mixed_rows(tmp_path / "sliced") == _mixed_rows(tmp_path / "local")


def test_a_killed_pool_worker_costs_a_retry_not_data(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    from vidrd_data import sources

    table, root = sources.caption_table(corpus / "imgs" / "captions.csv", path_col="image")
    params = {"marker": str(tmp_path / "marker")}
    run_stage("tests.crash_stage:CrashOnce", params, table, tmp_path / "m", root=root, input_desc=["x"],
              shard_size=3, workers=2, progress=False)
    assert (tmp_path / "marker").exists(), "no worker was killed; the test proved nothing"
    rows = mf.Manifest.open(tmp_path / "m").read().to_pylist()
    assert sorted(r["input_row"] for r in rows) == list(range(12))
    assert len({r["sample_id"] for r in rows}) == 12


ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install 'vidrd[ray]')")


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ["PYTHONPATH"] = str(REPO)  # Ray's workers import the test stages from the repository
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_executor_gives_the_same_rows_and_ids_as_local(corpus, tmp_path, ray_cluster):
    recipe = load_recipe(corpus / "recipe.toml")
    build(recipe, tmp_path / "local", progress=False)
    build(recipe, tmp_path / "ray", executor="ray", progress=False)
    assert _mixed_rows(tmp_path / "ray") == _mixed_rows(tmp_path / "local")


def test_a_killed_ray_worker_costs_a_retry_not_data(corpus, tmp_path, ray_cluster):
    from vidrd_data import sources

    table, root = sources.caption_table(corpus / "imgs" / "captions.csv", path_col="image")
    params = {"marker": str(tmp_path / "marker")}
    run_stage("tests.crash_stage:CrashOnce", params, table, tmp_path / "m", root=root, input_desc=["x"],
              shard_size=3, executor="ray", progress=False)
    assert (tmp_path / "marker").exists()
    rows = mf.Manifest.open(tmp_path / "m").read().to_pylist()
    assert sorted(r["input_row"] for r in rows) == list(range(12))


def test_merge_of_unfinished_slices_exits_2_naming_missing_parts_and_allow_partial_mixes_anyway(corpus, tmp_path, capsys):
    from tests.conftest import assert_one_line_error, run_cli

    recipe, build_dir = corpus / "recipe.toml", tmp_path / "b"
    code, out, _ = run_cli(main, capsys, "build", recipe, "--out", build_dir, "--shard-index", 0, "--num-shards", 2,
                           "--no-progress")
    assert code == 0 and "slice 0 of 2 done" in out
    assert sorted(p.name.split("-")[1] for p in (build_dir / "mixing").glob("*.parquet")) == [
        "p00000", "p00000", "p00000", "p00002", "p00002"]  # stills 3 parts, again 3, ucf 1: slice 0 maps 0 and 2
    code, _, err = run_cli(main, capsys, "build", recipe, "--out", build_dir, "--merge-only", "--no-progress")
    line = assert_one_line_error(code, err, "vidrd-data")
    assert "sources/stills is incomplete: part 1 of 3 missing" in line and "--allow-partial" in line
    assert not (build_dir / "mixed").exists()
    code, out, _ = run_cli(main, capsys, "build", recipe, "--out", build_dir, "--merge-only", "--allow-partial",
                           "--no-progress")
    assert code == 0 and mf.Manifest.open_for_work(build_dir / "mixed").read().num_rows > 0
