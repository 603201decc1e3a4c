"""The score stage and its scores: sensible orderings on built media, models in their real file formats, and
thresholds that leave rows `filtered` (never gone)."""


import cv2
import numpy as np
import pytest

from cli.data import main
from tests import mix_corpus
from tests.conftest import assert_one_line_error, run_cli
from vidrd_data import manifest as mf
from vidrd_data.run.runner import run_stage
from vidrd_data.scores import Clip
from vidrd_data.scores.blur import BlurScore
from vidrd_data.scores.motion import MotionScore
from vidrd_data.sources import InputError
from vidrd_data.stages import score
from vidrd_io.video import write_mp4

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXTURE = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (200, 320, 3), dtype=np.uint8), (5, 5), 0)


def _pan(n=12, speed=3):
    return np.stack([np.roll(TEXTURE, k * speed, axis=1)[:, :160] for k in range(n)])


def _static(n=12):
    return np.stack([TEXTURE[:, :160]] * n)


def _clip(frames):
    return Clip(frames[[2, 6, 10]], [(frames[k], frames[k + 1]) for k in (2, 6, 10)], None)


def test_a_static_clip_scores_less_motion_than_a_pan_and_is_flagged_static():
    static, pan = MotionScore()(_clip(_static())), MotionScore()(_clip(_pan()))
    assert static["motion_flow"] < 0.1 < pan["motion_flow"] and static["frame_diff"] < pan["frame_diff"]
    assert static["motion_flag"] == "static" and pan["motion_flag"] is None
    # a pan at 3 px/frame on 200-px-high frames is ~1.9 px/frame at the 128-px flow scale
    assert 1.2 < pan["motion_flow"] < 2.6


def test_camera_shake_back_and_forth_is_flagged_and_a_steady_pan_is_not():
    shake = [np.roll(TEXTURE, s, axis=1)[:, :160] for s in (0, 6, 0, -6, 0, 6)]
    clip = Clip(np.stack(shake[::2]), [(shake[0], shake[1]), (shake[2], shake[3]), (shake[4], shake[5]),
                                       (shake[1], shake[2])], None)
    assert MotionScore()(clip)["motion_flag"] == "shake"


def test_a_blurred_frame_scores_less_sharpness():
    sharp = np.random.default_rng(1).integers(0, 255, (1, 120, 160, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp[0], (9, 9), 3)[None]
    assert BlurScore()(Clip(blurred, [], None))["sharpness"] < 0.1 * BlurScore()(Clip(sharp, [], None))["sharpness"]


def test_a_frame_with_large_text_has_a_larger_ocr_area_than_one_without():
    from vidrd_data.scores.ocr import TextAreaScore

    plain = np.full((360, 640, 3), 90, np.uint8)
    text = plain.copy()
    cv2.putText(text, "BIG TEXT", (20, 220), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 10)
    scorer = TextAreaScore()
    with_text, without = scorer(Clip(text[None], [], None)), scorer(Clip(plain[None], [], None))
    assert without["ocr_area"] == 0.0 and 0.1 < with_text["ocr_area"] < 0.6
    assert len(scorer.identity()["sha256"]) == 64


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from vidrd_demo.models.aesthetic import write_tiny_aesthetic_head
    from vidrd_demo.models.open_clip import write_tiny_open_clip

    out = tmp_path_factory.mktemp("models")
    clip = write_tiny_open_clip(out / "open_clip")
    return clip, write_tiny_aesthetic_head(out / "aesthetic")


def test_aesthetic_is_the_published_mlp_head_over_the_clip_image_embedding(tiny_clip):
    import torch

    from vidrd_data.scores.aesthetic import AestheticScore, aesthetic_mlp
    from vidrd_data.scores.clip_similarity import ClipModel

    clip, head = tiny_clip
    state = torch.load(head, weights_only=True)
    assert sorted(state) == sorted(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
    model = ClipModel("x", None, str(clip.config_path), str(clip.checkpoint_path), "cpu")
    scorer = AestheticScore(model, head)
    frames = _pan()[[1, 5]]
    mlp = aesthetic_mlp(16).eval()
    mlp.load_state_dict({k.removeprefix("layers."): v for k, v in state.items()})
    with torch.no_grad():
        expected = mlp(model.images(frames).clone()).mean().item()
    assert scorer(Clip(frames, [], None))["aesthetic"] == pytest.approx(expected, rel=1e-5)
    assert scorer.identity()["sha256"] == __import__("hashlib").sha256(head.read_bytes()).hexdigest()


def test_an_aesthetic_head_for_other_embeddings_is_refused_naming_both_sizes(tiny_clip, tmp_path):
    from vidrd_data.scores.aesthetic import AestheticScore
    from vidrd_data.scores.clip_similarity import ClipModel
    from vidrd_demo.models.aesthetic import write_tiny_aesthetic_head

    clip, _ = tiny_clip
    model = ClipModel("x", None, str(clip.config_path), str(clip.checkpoint_path), "cpu")
    with pytest.raises(ValueError, match="takes 768-d embeddings, the CLIP model gives 16-d"):
        AestheticScore(model, write_tiny_aesthetic_head(tmp_path, input_size=768))


def _clips_manifest(tmp_path):
    root, out = tmp_path / "root", tmp_path / "build"
    (root / "v").mkdir(parents=True)
    write_mp4(root / "v" / "static.mp4", _static(16), fps=8)
    write_mp4(root / "v" / "pan.mp4", _pan(16), fps=8)
    (root / "v" / "broken.mp4").write_bytes(b"not a video" * 10)
    rows = [mix_corpus._row("video_clip", "t", f"v/{name}.mp4", k, f"a {name} shot", span=(0, 16))
            for k, name in enumerate(("static", "pan", "broken"))]
    mix_corpus.write_source(out, "clips", root, rows, part_rows=2)
    return out / "sources" / "clips", rows


def test_score_stage_keeps_every_row_and_id_filters_the_static_clip_and_records_its_models(tmp_path, tiny_clip):
    manifest, rows = _clips_manifest(tmp_path)
    clip, head = tiny_clip
    job = score.prepare(str(manifest), scores="motion,blur,aesthetic,clip_similarity", min_motion=0.5,
                        aesthetic_head=str(head), clip_config=str(clip.config_path),
                        clip_checkpoint=str(clip.checkpoint_path), device="cpu")
    run_stage(job.stage, job.params, job.inputs, tmp_path / "scored", root=job.root, input_desc=job.input_desc,
              progress=False, workers=1)
    m = mf.Manifest.open(tmp_path / "scored")
    t = {r["source_path"]: r for r in m.read().to_pylist()}
    assert [t[r["source_path"]]["sample_id"] for r in rows[:2]] == [r["sample_id"] for r in rows[:2]]
    assert t["v/static.mp4"]["status"] == "filtered" and t["v/static.mp4"]["filter"] == "min_motion"
    assert t["v/static.mp4"]["filter_score"] == t["v/static.mp4"]["motion_flow"] < 0.5
    assert t["v/pan.mp4"]["status"] == "ok" and t["v/pan.mp4"]["motion_flow"] > 0.5 and t["v/pan.mp4"]["filter"] is None
    assert t["v/broken.mp4"]["status"] == "failed" and t["v/broken.mp4"]["error"]
    assert all(t[p][c] is not None for p in ("v/static.mp4", "v/pan.mp4")
               for c in ("aesthetic", "clip_similarity", "sharpness"))
    assert t["v/pan.mp4"]["ocr_area"] is None  # not asked for
    models = m.meta["params"]["score_models"]
    assert set(models) == {"motion", "blur", "aesthetic", "clip_similarity"}
    assert len(models["aesthetic"]["sha256"]) == 64 and len(models["clip_similarity"]["sha256"]) == 64
    assert sum(s["filtered"] for s in m.stats()) == 1 and sum(s["failed"] for s in m.stats()) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--scores", "beauty"], "unknown score 'beauty'"),
    (["--scores", "blur", "--min-motion", "1"], "--min-motion filters on the motion score"),
    (["--scores", "aesthetic"], "needs --aesthetic-head"),
])
def test_bad_score_options_are_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    manifest, _ = _clips_manifest(tmp_path)
    code, _, err = run_cli(main, capsys, "score", str(manifest), "--out", str(tmp_path / "o"), *argv)
    assert needle in assert_one_line_error(code, err, "vidrd-data")


def test_build_report_shows_score_distributions_what_each_filter_removed_and_extreme_clips(tmp_path):
    from PIL import Image

    from vidrd_data.mix.mix import mix

    manifest, _ = _clips_manifest(tmp_path)
    out = tmp_path / "build"
    job = score.prepare(str(manifest), scores="motion,blur", min_motion=0.5)
    run_stage(job.stage, job.params, job.inputs, out / "sources" / "scored", root=job.root,
              input_desc=job.input_desc, progress=False, workers=1)
    recipe = mix_corpus.recipe(tmp_path / "root")
    recipe.sources = [mix_corpus.Source(name="scored", stage="score", input="-")]
    report = mix(recipe, out)
    assert report["sources"]["scored"]["filtered_by"] == {"min_motion": 1}
    assert report["scores"]["motion_flow"]["rows"] == 1 and report["scores"]["motion_flow"]["min"] > 0.5  # the pan alone
    assert set(report["score_sheets"]) == {"motion_flow", "frame_diff", "sharpness"}
    sheet = Image.open(out / report["score_sheets"]["motion_flow"])
    assert sheet.height > 128  # one line: the one ok clip is both the lowest and the highest
    text = (out / "report.md").read_text()
    assert "| scored | min_motion | 1 | its stage |" in text and "| motion_flow | 1 |" in text


def test_the_aesthetic_and_similarity_scores_of_one_clip_embed_its_frames_once(tiny_clip):
    from vidrd_data.scores.aesthetic import AestheticScore
    from vidrd_data.scores.clip_similarity import ClipModel, ClipSimilarityScore

    clip_files, head = tiny_clip
    model = ClipModel("x", None, str(clip_files.config_path), str(clip_files.checkpoint_path), "cpu")
    calls = []
    encode = model.model.encode_image
    model.model.encode_image = lambda *a, **k: calls.append(1) or encode(*a, **k)
    clip = Clip(_pan()[[1, 5]], [], "a texture")
    AestheticScore(model, head)(clip), ClipSimilarityScore(model)(clip)
    assert len(calls) == 1
    ClipSimilarityScore(model)(Clip(_pan()[[1, 5]], [], "a texture"))  # another clip: embedded again
    assert len(calls) == 2


def test_score_refuses_a_manifest_without_ok_rows_in_one_line(tmp_path, capsys):
    from vidrd_data.stages import videos

    (tmp_path / "list.csv").write_text("path\ngone.mp4\n")
    job = videos.prepare(str(tmp_path / "list.csv"))
    run_stage(job.stage, job.params, job.inputs, tmp_path / "m", root=job.root, input_desc=job.input_desc,
              progress=False)
    code, _, err = run_cli(main, capsys, "score", str(tmp_path / "m"), "--out", str(tmp_path / "o"),
                           "--scores", "blur")
    assert "has no ok rows" in assert_one_line_error(code, err, "vidrd-data")
    assert not (tmp_path / "o").exists()


def test_score_checks_its_input_is_a_manifest_before_building_any_scorer(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(score, "build_scorers", lambda params: built.append(params) or [])
    with pytest.raises(InputError, match="is not a manifest"):
        score.prepare(str(tmp_path), scores="blur")
    assert built == []
