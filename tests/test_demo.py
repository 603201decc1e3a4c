import hashlib
import json

from cli.data import main
from vidrd_data import manifest as mf
from vidrd_data.demo import LONG_VIDEOS, write_demo_corpus
from vidrd_data.video_io import probe


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


def test_demo_run_writes_valid_manifests_and_says_where(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--run"]) == 0
    stdout = capsys.readouterr().out
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
