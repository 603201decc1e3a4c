import hashlib
import json

import pytest

from cli.data import main
from tests.conftest import REPO
from vidrd_data import manifest as mf
from vidrd_demo.corpus import LONG_VIDEOS, write_demo_corpus
from vidrd_io.video import probe


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_corpus_is_byte_for_byte_deterministic(tmp_path):
    write_demo_corpus(tmp_path / "a", models=False)
    write_demo_corpus(tmp_path / "b", models=False)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 40


def test_demo_long_videos_have_their_cuts_where_cuts_json_says(tmp_path):
    write_demo_corpus(tmp_path, models=False)
    truth = json.loads((tmp_path / "long" / "cuts.json").read_text())
    for name, scenes in LONG_VIDEOS.items():
        assert truth[name]["cuts_s"] == [sum(scenes[: i + 1]) for i in range(len(scenes) - 1)]
        assert probe(tmp_path / "long" / name).duration == truth[name]["duration_s"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("demo_run")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", str(tmp_path / "demo"), "--run"])
    return tmp_path, code, buf.getvalue()


def test_demo_run_writes_valid_manifests_and_says_where(demo_run):
    tmp_path, code, stdout = demo_run
    assert code == 0
    assert "manifests in" in stdout and str(tmp_path / "demo") in stdout
    images = mf.Manifest.open(tmp_path / "demo" / "manifests" / "images").read()
    assert images.num_rows == 20 and images["status"].to_pylist().count("failed") == 2
    actions = mf.Manifest.open(tmp_path / "demo" / "manifests" / "actions").read().to_pylist()
    assert {r["label"] for r in actions} == {"BalloonRise", "PendulumSwing", "SquareSpin"}
    pseudo = mf.Manifest.open(tmp_path / "demo" / "manifests" / "pseudo_videos").read().to_pylist()
    assert len(pseudo) == 18 and all(r["status"] == "ok" and r["num_frames"] == 8 for r in pseudo)
    for name in ("images", "pseudo_videos", "actions", "long"):
        assert (tmp_path / "demo" / "manifests" / f"{name}_sheet.png").is_file()
        assert main(["validate", str(tmp_path / "demo" / "manifests" / name)]) == 0
    models = tmp_path / "demo" / "models"
    assert (models / "blip2" / "config.json").is_file() and (models / "stable_diffusion" / "model_index.json").is_file()
    assert "[models]" in (tmp_path / "demo" / "recipe.toml").read_text()


def test_demo_recipe_builds_a_mixed_manifest_whose_counts_match_the_report(demo_run):
    tmp_path, _, _ = demo_run
    out = tmp_path / "build"
    recipe = REPO / "manifests" / "recipes" / "demo.toml"
    assert main(["build", str(recipe), "--root", str(tmp_path / "demo"), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = mf.Manifest.open(out / "mixed").read().to_pylist()
    assert report["rows"] == len(rows) and sum(report["rows_by_source_and_kind"].values()) == len(rows)
    kinds = {k.split("/")[1] for k in report["rows_by_source_and_kind"]}
    assert kinds == {"pseudo_video", "video_clip"}
    assert {r["caption_source"] for r in rows} >= {"original", "blip2", "minigpt4"}
