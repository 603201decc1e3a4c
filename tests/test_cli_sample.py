"""`vidrd-sample` on a tiny SD-2.1-style model: playable mp4s of the right length, JSON records, inputs, errors."""

import json
from importlib.metadata import version

import pytest
import torch

from cli.sample import load_pipeline, main
from tests.conftest import assert_one_line_error, run_cli
from tests.tiny_sd import perturb_temporal_layers_, tiny_stable_diffusion
from vidrd_io.video import probe, read_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--frames", "4", "--overlap-frames", "2", "--steps", "2", "--height", "16", "--width", "16", "--no-progress"]


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory)


@pytest.fixture(scope="module")
def vidrd_pipeline(sd_dir):
    """A "trained" model: the tiny SD inflated, temporal layers moved off their identity initialisation."""
    from vidrd_model.pipeline import VidRDPipeline

    pipe = VidRDPipeline.from_stable_diffusion(str(sd_dir))
    perturb_temporal_layers_(pipe.unet, seed=1)
    return pipe


@pytest.fixture(scope="module")
def model_dir(vidrd_pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vidrd_model")
    vidrd_pipeline.save_pretrained(folder)
    return folder


def run(capsys, *argv):
    return run_cli(main, capsys, *argv)


def one_line_error(code, err):
    return assert_one_line_error(code, err, "vidrd-sample")


@pytest.mark.parametrize("overlap, expected_frames", [("keep", 3 * 4), ("drop", 4 + 2 * (4 - 2))])
def test_writes_a_playable_mp4_of_the_assembled_length_and_a_json_of_every_parameter(
        capsys, model_dir, tmp_path, overlap, expected_frames):
    code, stdout, err = run(capsys, "--model", model_dir, "--prompt", "a red ball", "--clips", "3", "--overlap",
                            overlap, "--seed", "7", "--fps", "10", "--out", tmp_path, *FAST)
    assert code == 0, err
    video = tmp_path / "a_red_ball.mp4"
    assert str(video) in stdout
    info = probe(video)
    assert (info.num_frames, info.width, info.height, info.fps) == (expected_frames, 16, 16, 10.0)
    assert read_frames(video, [0.0, (expected_frames - 1) / 10]).shape == (2, 16, 16, 3)
    record = json.loads((tmp_path / "a_red_ball.json").read_text())
    assert record["frames"] == expected_frames and record["video"] == "a_red_ball.mp4"
    assert {k: record[k] for k in ("prompt", "seed", "num_clips", "num_frames", "num_inference_steps",
                                   "overlap_frames", "noise_recycle", "denoise_guidance", "overlap", "guidance_scale",
                                   "height", "width", "fps")} == {
        "prompt": "a red ball", "seed": 7, "num_clips": 3, "num_frames": 4, "num_inference_steps": 2,
        "overlap_frames": 2, "noise_recycle": 4.0, "denoise_guidance": 0.4, "overlap": overlap,
        "guidance_scale": 7.5, "height": 16, "width": 16, "fps": 10.0,
    }
    assert record["model"]["kind"] == "vidrd" and record["model"]["model"] == str(model_dir.resolve())
    assert len(record["model"]["sha256"]["unet/diffusion_pytorch_model.safetensors"]) == 64
    assert record["scheduler"]["class"] == "DDIMScheduler" and record["versions"]["torch"] == version("torch")


def test_gif_and_frames_dir_get_every_frame_of_the_video(capsys, model_dir, tmp_path):
    code, _, err = run(capsys, "--model", model_dir, "--prompt", "a cat", "--clips", "2", "--gif", "--frames-dir",
                       tmp_path / "frames", "--out", tmp_path, *FAST)
    assert code == 0, err
    from PIL import Image

    with Image.open(tmp_path / "a_cat.gif") as gif:
        assert gif.n_frames == 8
    assert sorted(p.name for p in (tmp_path / "frames" / "a_cat").iterdir()) == [f"{i:05d}.png" for i in range(8)]


def test_prompts_json_names_each_video_by_its_key_and_seeds_video_k_with_seed_plus_k(capsys, model_dir, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"ApplyEyeMakeup": "a person applying eye makeup", "Biking": ["a bike", "a bike."]}))
    code, _, err = run(capsys, "--model", model_dir, "--prompts", prompts, "--clips", "1", "--seed", "42",
                       "--negative-prompt", "watermark", "--out", tmp_path / "out", *FAST)
    assert code == 0, err
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")}
    assert {name: (r["prompt"], r["seed"]) for name, r in records.items()} == {
        "ApplyEyeMakeup": ("a person applying eye makeup", 42), "Biking_00": ("a bike", 43),
        "Biking_01": ("a bike.", 44),
    }
    assert all(r["negative_prompt"] == "watermark" for r in records.values())
    assert all((tmp_path / "out" / f"{name}.mp4").is_file() for name in records)


def test_prompts_text_file_gives_one_video_per_nonblank_line(tmp_path):
    from cli.sample import read_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dog running\n\n  a cat, sleeping  \n")
    assert read_prompts(prompts) == [("0000_a_dog_running", "a dog running"),
                                     ("0001_a_cat_sleeping", "a cat, sleeping")]


def test_release_checkpoint_loads_into_the_same_unet_and_text_encoder_and_samples(vidrd_pipeline, sd_dir, tmp_path):
    """A Lightning `state_dict` with the release's key names (`unet.*`, `text_encoder.text_model.*`) over --base."""
    state = {f"unet.{k}": v for k, v in vidrd_pipeline.unet.state_dict().items()}
    text_state = {k: v + 1 for k, v in vidrd_pipeline.text_encoder.state_dict().items()}  # differs from --base's
    state.update({f"text_encoder.text_model.{k}": v for k, v in text_state.items()})
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ModelT2V.pth")
    pipe = load_pipeline(None, str(sd_dir), tmp_path / "ModelT2V.pth", None)
    for module, expected in ((pipe.unet, vidrd_pipeline.unet.state_dict()), (pipe.text_encoder, text_state)):
        loaded = module.state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert not pipe.unet.training
    pipe.set_progress_bar_config(disable=True)
    latents = pipe("a cat", num_frames=2, num_inference_steps=1, height=16, width=16, output_type="latent").frames
    assert latents.shape == (1, 4, 2, 8, 8) and latents.isfinite().all()  # nothing left on the meta device


@pytest.mark.parametrize("argv, needle", [
    (["--prompt", "x"], "pass either --model DIR or --base"),
    (["--model", "{tmp}", "--base", "{tmp}", "--prompt", "x"], "pass either --model DIR or --base"),
    (["--model", "{tmp}", "--prompt", "x"], "not a VidRD model directory"),
    (["--base", "{tmp}", "--vidrd-ckpt", "{tmp}/none.pth", "--prompt", "x"], "--vidrd-ckpt"),
    (["--base", "{tmp}", "--prompt", "x", "--prompts", "{tmp}/p.txt"], "pass either --prompt TEXT or --prompts"),
    (["--base", "{tmp}", "--prompts", "{tmp}/bad.json"], "not valid JSON"),
    (["--base", "{tmp}", "--prompts", "{tmp}/wrong.json"], "must map to a prompt"),
    (["--base", "{tmp}", "--prompts", "{tmp}/missing.txt"], "no such file"),
    (["--base", "{tmp}", "--prompt", "x", "--clips", "2", "--frames", "4"], "`overlap_frames` must be in [0, num_frames) = [0, 4)"),
    (["--base", "{tmp}", "--prompt", "x", "--overlap", "blend"], "`overlap` must be one of"),
    (["--base", "{tmp}", "--prompt", "x", "--denoise-guidance", "2"], "`denoise_guidance` must be in [0, 1]"),
    (["--base", "{tmp}", "--prompt", "x", "--fps", "0"], "--fps must be > 0"),
    (["--base", "{tmp}", "--prompt", "x", "--clips", "many"], "--clips"),
    (["--base", "{tmp}/no-such-sd", "--prompt", "x"], "no-such-sd"),
    (["--base", "{tmp}", "--prompt", "x", "--cuda-graphs", "--device", "cpu"], "--cuda-graphs needs a CUDA device"),
    (["--base", "{tmp}", "--prompt", "x", "--cuda-graphs", "--compile"], "--compile-mode reduce-overhead"),
])
def test_bad_input_gets_one_line_and_exit_status_2(capsys, tmp_path, argv, needle):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "wrong.json").write_text(json.dumps({"a": 3}))
    code, _, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert needle in one_line_error(code, err)
