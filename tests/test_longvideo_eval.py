"""`vidrd-eval longvideo`: each metric against an independent computation on tiny inputs, and the command end to end."""

import json

import numpy as np
import pytest
import torch

from cli.eval import main
from tests.conftest import assert_one_line_error, run_cli
from vidrd_model.eval import longvideo, receipt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_seam_starts_are_the_first_frame_of_every_later_clip():
    assert longvideo.seam_starts(16, 4) == [4, 8, 12]
    assert longvideo.seam_starts(10, 4) == [4, 8]
    assert longvideo.seam_starts(4, 4) == []


def test_pixel_changes_are_the_mean_absolute_step_in_unit_range():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 3, 2, 3), dtype=np.uint8)
    expected = [sum(abs(int(frames[t + 1][idx]) - int(frames[t][idx])) for idx in np.ndindex(3, 2, 3)) / 18 / 255
                for t in range(4)]
    np.testing.assert_allclose(longvideo.pixel_changes(frames), expected)


def test_embedding_changes_are_one_minus_cosine():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(6, 5))
    expected = [1 - torch.nn.functional.cosine_similarity(torch.tensor(embeddings[t]), torch.tensor(embeddings[t + 1]),
                                                          dim=0).item() for t in range(5)]
    np.testing.assert_allclose(longvideo.embedding_changes(embeddings), expected)


def test_seam_discontinuity_separates_steps_into_seam_frames_from_the_others():
    changes = np.array([1.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0, 3.0, 2.0])  # steps 0→1 … 8→9; seams at frames 4 and 8
    result = longvideo.seam_discontinuity(changes, [4, 8])
    assert result == {"seam": 4.0, "inside": 8 / 7, "ratio": 4.0 / (8 / 7)}
    assert longvideo.seam_discontinuity(changes, [])["ratio"] is None


def test_content_drift_compares_first_and_last_clip_and_each_with_the_prompt():
    image = np.array([[1.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 1, 1]])
    text = np.array([0.0, 3, 0])
    result = longvideo.content_drift(image, text, 2)
    assert result["first_last"] == pytest.approx(0.0)
    assert result["prompt_first"] == pytest.approx(0.0)
    assert result["prompt_last"] == pytest.approx((1 + 1 / np.sqrt(2)) / 2)
    result = longvideo.content_drift(image[[2, 3, 2, 3]], text, 2)
    assert result["first_last"] == pytest.approx(1.0)


def test_fvd_of_features_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, 2.0]
    generated = rng.normal(size=(300, 3)) * [2.0, 1.0, 1.5] + [1.0, 1.0, 0.0]
    # decorrelate exactly (population covariance diagonal) so the closed form applies
    real, generated = (x - x.mean(0) for x in (real, generated))
    real = real @ np.linalg.inv(np.linalg.cholesky(np.cov(real, rowvar=False, bias=True))).T * [1.0, 2.0, 0.5]
    generated = generated @ np.linalg.inv(np.linalg.cholesky(np.cov(generated, rowvar=False, bias=True))).T \
        * [2.0, 1.0, 1.5]
    real, generated = real + [0.0, 1.0, 2.0], generated + [1.0, 1.0, 0.0]
    var_r, var_g = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 2.25])
    expected = (1 + 0 + 4) + np.sum(var_r + var_g - 2 * np.sqrt(var_r * var_g))
    mu, sigma = real.mean(0), np.cov(real, rowvar=False, bias=True)
    assert longvideo.fvd_of_features(generated, mu, sigma) == pytest.approx(expected, rel=1e-6)


def test_seam_strip_shows_the_frames_around_each_seam():
    frames = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 3, 3), np.uint8)
    strip = longvideo.seam_strip(frames, [4, 8], context=2)
    assert strip.shape == (4, 12, 3)
    assert strip[0, ::3, 0].tolist() == [2, 3, 4, 5] and strip[2, ::3, 0].tolist() == [6, 7, 8, 9]


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from tests.tiny_sd import perturb_temporal_layers_, tiny_stable_diffusion
    from vidrd_demo.corpus import write_actions
    from vidrd_demo.models.extractors import write_standin_extractors
    from vidrd_demo.models.open_clip import write_tiny_open_clip
    from vidrd_model.pipeline import VidRDPipeline

    root = tmp_path_factory.mktemp("longvideo_inputs")
    pipe = VidRDPipeline.from_stable_diffusion(str(tiny_stable_diffusion(tmp_path_factory)))
    perturb_temporal_layers_(pipe.unet, seed=1)
    pipe.save_pretrained(root / "model")
    (root / "prompts.txt").write_text("a red ball\n\na blue sky\n")
    clip = write_tiny_open_clip(root / "clip")
    return {"model": root / "model", "prompts": root / "prompts.txt", "actions": write_actions(root / "actions"),
            "clip_config": clip.config_path, "clip_checkpoint": clip.checkpoint_path,
            **write_standin_extractors(root / "extractors")}


def command(inputs, out, *extra):
    return ["longvideo", "--model", inputs["model"], "--prompts", inputs["prompts"], "--out", out,
            "--clip-config", inputs["clip_config"], "--clip-checkpoint", inputs["clip_checkpoint"],
            "--frames", "4", "--steps", "1", "--lengths", "8", "--height", "16", "--width", "16", "--device", "cpu",
            *extra]


def test_longvideo_writes_results_report_plots_and_seam_strips_and_a_rerun_reuses_the_videos(inputs, tmp_path,
                                                                                            capsys):
    out = tmp_path / "out"
    argv = command(inputs, out, "--modes", "independent,fifo", "--fvd-windows", "4,8", "--real", inputs["actions"],
                   "--i3d", inputs["i3d"], "--resolution", "32")
    code, stdout, err = run_cli(main, capsys, *argv)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["flag"] == longvideo.FLAG_MEANINGLESS  # stand-in I3D
    assert results["settings"]["modes"] == ["independent", "fifo"] and results["prompts"] == ["a red ball",
                                                                                                "a blue sky"]
    assert len(results["videos"]) == 4 and all(v["frames"] == 8 and v["seams"] == [4] for v in results["videos"])
    for mode in ("independent", "fifo"):
        row = results["summary"][mode]["8f"]
        assert row["videos"] == 2 and row["seconds_per_frame"] > 0 and row["seam_pixels_ratio"] > 0
        assert np.isfinite(results["fvd"]["4"]["fvd"][mode]["8f"]) and np.isfinite(results["fvd"]["8"]["fvd"][mode]["8f"])
    assert (out / "metrics.png").is_file() and (out / "seams" / "fifo_8f_000.png").is_file()
    report = (out / "report.md").read_text()
    assert longvideo.FLAG_MEANINGLESS in report and "| fifo |" in report and "FVD8" in report
    videos = {v["video"]: v["seconds"] for v in results["videos"]}

    assert run_cli(main, capsys, *argv)[0] == 0
    again = json.loads((out / "results.json").read_text())
    assert {v["video"]: v["seconds"] for v in again["videos"]} == videos  # reused, not generated again
    assert receipt.verify(results["receipt"]) and results["receipt"]["real"]["videos"] >= 2
    assert results["receipt"]["id"] == again["receipt"]["id"]  # same settings, model and inputs: same id


@pytest.mark.parametrize("extra,needle", [
    (["--modes", "vidrd,nope"], "--modes vidrd,nope: each must be one of"),
    (["--lengths", "8,x"], "--lengths 8,x: expected comma-separated integers"),
    (["--real", "{actions}"], "FVD needs both --real and --i3d"),
])
def test_longvideo_bad_input_is_one_line_and_exit_status_2(inputs, tmp_path, capsys, extra, needle):
    extra = [str(e).format(actions=inputs["actions"]) for e in extra]
    code, _, err = run_cli(main, capsys, *command(inputs, tmp_path / "out", *extra))
    assert needle in assert_one_line_error(code, err, "vidrd-eval")
