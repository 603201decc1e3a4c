"""`vidrd-eval` end to end on a tiny model, the demo's UCF-101-shaped actions and the stand-in I3D / C3D."""

import json

import pytest
import torch

from cli.eval import main
from tests.conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--steps", "2", "--height", "16", "--width", "16", "--resolution", "32", "--batch-size", "4",
        "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny VidRD model folder, the demo's actions (3 classes × 2 clips of 16 frames) and stand-in extractors."""
    from tests.tiny_sd import perturb_temporal_layers_, tiny_stable_diffusion
    from vidrd_demo.corpus import write_actions
    from vidrd_demo.models.extractors import write_standin_extractors
    from vidrd_demo.models.videomae import write_tiny_videomae
    from vidrd_model.pipeline import VidRDPipeline

    root = tmp_path_factory.mktemp("eval_inputs")
    base = tiny_stable_diffusion(tmp_path_factory)
    pipe = VidRDPipeline.from_stable_diffusion(str(base))
    perturb_temporal_layers_(pipe.unet, seed=1)
    pipe.save_pretrained(root / "model")
    extractors = write_standin_extractors(root / "extractors")
    return {"model": root / "model", "base": base, "actions": write_actions(root / "actions"),
            "videomae": write_tiny_videomae(root / "videomae"), **extractors}


def protocol_args(inputs, out, *extra):
    return ["ucf101", "--ucf101", inputs["actions"], "--class-prompts", inputs["actions"] / "class_prompts.json",
            "--i3d", inputs["i3d"], "--c3d", inputs["c3d"], "--out", out, "--is-splits", "2", *FAST, *extra]


@pytest.fixture(scope="module")
def protocol_run(inputs, tmp_path_factory):
    """`vidrd-eval ucf101` generating 6 videos (2 per class) and measuring them (cd-FVD too), run once."""
    out = tmp_path_factory.mktemp("ucf101_run")
    assert main([str(a) for a in protocol_args(inputs, out, "--model", inputs["model"], "-n", "6",
                                               "--cd-fvd", inputs["videomae"])]) == 0
    return out


def run(capsys, *argv):
    return run_cli(main, capsys, *argv)


def one_line_error(code, err):
    return assert_one_line_error(code, err, "vidrd-eval")


def test_ucf101_writes_results_json_with_every_setting_a_receipt_and_a_flagged_table(protocol_run, inputs):
    from vidrd_io.video import probe
    from vidrd_model.eval.receipt import verify
    from vidrd_model.eval.report import is_standin_extractor

    videos = sorted(p.name for p in (protocol_run / "videos").glob("*.mp4"))
    assert videos == ["00000_BalloonRise.mp4", "00001_BalloonRise.mp4", "00002_PendulumSwing.mp4",
                      "00003_PendulumSwing.mp4", "00004_SquareSpin.mp4", "00005_SquareSpin.mp4"]
    assert probe(protocol_run / "videos" / videos[0]).num_frames == 16  # one 16-frame clip by default
    result = json.loads((protocol_run / "results.json").read_text())
    assert result["protocol"]["num_videos"] == 6 and result["protocol"]["num_real_listed"] == 6
    assert result["protocol"]["used"] == {"fvd_generated": 6, "fvd_real": 6, "is_generated": 6}
    assert result["protocol"]["real_split"] == "trainlist01" and result["warnings"] == []
    assert result["generation"]["crf"] == 10 and result["settings"]["match_fps"] == 8.0  # real clips fps-matched
    generation = result["generation"]
    assert generation["allocation"] == {"BalloonRise": 2, "PendulumSwing": 2, "SquareSpin": 2}
    assert generation["seed"] == 42 and generation["prompts"]["SquareSpin"] == "a yellow square spinning in place"
    assert {k: generation["sampler"][k] for k in ("num_clips", "num_frames", "overlap_frames", "overlap",
                                                  "num_inference_steps", "guidance_scale", "fps", "height",
                                                  "frames_per_video", "negative_prompt")} == {
        "num_clips": 1, "num_frames": 16, "overlap_frames": 4, "overlap": "keep", "num_inference_steps": 2,
        "guidance_scale": 10.0, "fps": 8.0, "height": 16, "frames_per_video": 16, "negative_prompt": "watermark"}
    assert len(generation["model"]["sha256"]["unet/diffusion_pytorch_model.safetensors"]) == 64
    assert result["settings"]["num_frames"] == 16 and result["settings"]["resolution"] == 32
    assert result["extractors"]["i3d"]["sha256"] == result["fvd"]["i3d"]["sha256"] and len(
        result["extractors"]["c3d"]["sha256"]) == 64
    assert result["standin_extractors"] is True
    assert is_standin_extractor(inputs["videomae"]) and not is_standin_extractor(inputs["actions"])
    assert result["is"]["splits"] == 2
    assert result["fvd"]["fvd"] == pytest.approx(_fvd_from_scratch(protocol_run, inputs["i3d"]), rel=1e-6)
    assert {"torch", "diffusers", "numpy", "scipy"} <= result["versions"].keys()
    assert {r["method"]: (r["fvd"], r["inception_score"]) for r in result["published"]}["VidRD"] == (363.19, 39.37)
    for receipt in (result["receipt"], result["fvd"]["receipt"], result["is"]["receipt"]):
        assert verify(receipt) and len(receipt["id"]) == 12
    fvd_receipt = result["fvd"]["receipt"]
    assert fvd_receipt["generated"]["fps"] == 8.0 and fvd_receipt["generated"]["frames"] == 16
    assert fvd_receipt["real"]["matched_to_fps"] == 8.0 and fvd_receipt["real"]["count"] == 6
    assert fvd_receipt["extractor"]["sha256"] == result["extractors"]["i3d"]["sha256"]
    assert fvd_receipt["context"]["seed"] == 42 and fvd_receipt["context"]["real_split"] == "trainlist01"
    assert fvd_receipt["context"]["sampler"]["guidance_scale"] == 10.0 and "torch" in fvd_receipt["versions"]
    assert result["receipt"]["fvd"] == fvd_receipt["sha256"]
    cd_fvd = result["cd_fvd"]
    assert cd_fvd["fvd"] > 0 and cd_fvd["receipt"]["metric"] == "cd-fvd" and cd_fvd["num_real"] == 6
    assert result["receipt"]["cd_fvd"] == cd_fvd["receipt"]["sha256"]
    # what differs from the paper's protocol is said in the row: the test's fast settings, and only those
    assert result["deviations"] == ["2 DDIM steps (release: 50)", "16×16 px (release: 256²)",
                                    "N = 6 (usual: 10,000)", "stand-in extractors"]
    table = (protocol_run / "results.md").read_text()
    assert "| VidRD | 363.19 | 39.37 | its paper's | — |" in table and "| PYoCo | 355.19 | 47.76 |" in table
    assert "| CogVideo (English) | 701.59 | 25.27 | its paper's; measured by Singer et al. 2022 | — |" in table
    assert f"differs²: 2 DDIM steps (release: 50); 16×16 px (release: 256²); N = 6 (usual: 10,000); stand-in " \
           f"extractors | {result['receipt']['id']} |" in table
    assert "STAND-IN EXTRACTORS: NUMBERS NOT COMPARABLE" in table
    assert f"cd-FVD (VideoMAE {cd_fvd['videomae']['sha256'][:12]}) {cd_fvd['fvd']:.2f}" in table
    assert "N = 6 planned; FVD on 6 generated vs 6 real (trainlist01); IS on 6 generated" in table
    assert result["extractors"]["i3d"]["sha256"][:12] in table and "H.264 CRF 10" in table


def _fvd_from_scratch(run, i3d):
    """The FVD of a protocol run recomputed apart: its saved real statistics against I3D features of its videos
    computed here in one batch, not through the chunk cache."""
    import numpy as np

    from vidrd_model.eval.extractors import i3d_features, load_extractor
    from vidrd_model.eval.fvd import Statistics, feature_statistics, frechet_distance
    from vidrd_model.eval.videos import list_videos, load_clip

    real = Statistics.load(run / "real_stats.npz")
    clips = np.stack([load_clip(ref, 16, 32) for ref in list_videos(run / "videos")])
    mu, sigma = feature_statistics(i3d_features(load_extractor("i3d", i3d), clips))
    return frechet_distance(mu, sigma, real.mu, real.sigma)


def test_ucf101_on_videos_generated_before_reuses_them_and_the_real_statistics(protocol_run, inputs, tmp_path,
                                                                               capsys):
    mtimes = {p: p.stat().st_mtime_ns for p in (protocol_run / "videos").glob("*.mp4")}
    code, _, err = run(capsys, *protocol_args(inputs, tmp_path, "--videos", protocol_run / "videos",
                                              "--real-stats", protocol_run / "real_stats.npz"))
    assert code == 0, err
    first = json.loads((protocol_run / "results.json").read_text())
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["fvd"]["real_stats_reused"] is True
    assert again["fvd"]["fvd"] == pytest.approx(first["fvd"]["fvd"])
    assert again["is"]["is_mean"] == pytest.approx(first["is"]["is_mean"])
    assert again["generation"] == first["generation"]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_report_prints_the_published_rows_and_one_row_per_results_file(protocol_run, tmp_path, capsys):
    code, stdout, err = run(capsys, "report", protocol_run / "results.json", protocol_run / "results.json",
                            "--out", tmp_path / "new" / "table.md")
    assert code == 0, err
    assert stdout.count("STAND-IN EXTRACTORS") == 2 and "| Make-A-Video | 367.23 | 33.00 |" in stdout
    assert "| CogVideo (English) | 701.59 | 25.27 |" in stdout and "| Video LDM | 550.61 | 33.45 |" in stdout
    row_receipt = json.loads((protocol_run / "results.json").read_text())["receipt"]["id"]
    assert stdout.count(f"| {row_receipt} |") == 2 and "Report receipt " in stdout
    assert (tmp_path / "new" / "table.md").read_text() == stdout


def test_fvd_is_and_real_stats_commands_write_results_json(protocol_run, inputs, tmp_path, capsys):
    generated, real = protocol_run / "videos", inputs["actions"]
    code, _, err = run(capsys, "real-stats", real, "--i3d", inputs["i3d"], "--out", tmp_path / "real.npz",
                       "--resolution", "32", "--no-progress")
    assert code == 0, err
    stats = json.loads((tmp_path / "real.json").read_text())
    assert stats["num_real"] == 6 and stats["settings"]["resolution"] == 32
    assert stats["receipt"]["real"]["matched_to_fps"] == 8.0 and stats["receipt"]["real"]["count"] == 6
    code, stdout, err = run(capsys, "fvd", generated, real, "--i3d", inputs["i3d"], "--real-stats",
                            tmp_path / "real.npz", "--cache", tmp_path / "cache", "--resolution", "32",
                            "--out", tmp_path / "fvd.json", "--no-progress")
    assert code == 0, err
    fvd = json.loads((tmp_path / "fvd.json").read_text())
    assert fvd["real_stats_reused"] is True and fvd["num_generated"] == 6
    assert f"FVD {fvd['fvd']:.2f}  (6 generated vs 6 real)  [receipt {fvd['receipt']['id']}]" in stdout
    assert fvd["receipt"]["real"]["matched_to_fps"] == 8.0  # auto: the generated videos' own rate
    assert fvd["receipt"]["context"]["generation"]["seed"] == 42  # read from the folder's plan.json
    assert fvd["command"] == "fvd" and fvd["generated"] == str(generated) and "versions" in fvd
    # the same videos and real clips (the actions folder is train split 1) as the protocol run: the same FVD
    protocol = json.loads((protocol_run / "results.json").read_text())
    assert fvd["fvd"] == pytest.approx(protocol["fvd"]["fvd"], rel=1e-6)
    code, stdout, err = run(capsys, "is", generated, "--c3d", inputs["c3d"], "--is-splits", "2", "--batch-size", "4",
                            "--out", tmp_path / "is.json", "--no-progress")
    assert code == 0, err
    inception = json.loads((tmp_path / "is.json").read_text())
    assert inception["splits"] == 2 and inception["num_generated"] == 6
    assert f"[receipt {inception['receipt']['id']}]" in stdout
    assert (inception["is_mean"], inception["is_std"]) == pytest.approx(
        (protocol["is"]["is_mean"], protocol["is"]["is_std"]), rel=1e-6)


def test_clipsim_scores_generated_videos_against_the_prompts_in_their_json(protocol_run, tmp_path, capsys):
    from vidrd_demo.models.open_clip import write_tiny_open_clip
    from vidrd_io.fs import file_sha256

    clip = write_tiny_open_clip(tmp_path / "clip")
    code, stdout, err = run(capsys, "clipsim", protocol_run / "videos", "--clip-config", clip.config_path,
                            "--clip-checkpoint", clip.checkpoint_path, "--num-frames", "4", "--resolution", "32",
                            "--out", tmp_path / "clipsim.json", "--no-progress")
    assert code == 0, err
    result = json.loads((tmp_path / "clipsim.json").read_text())
    assert result["videos"] == 6 and result["convention"] == "raw" and -1 <= result["clipsim"] <= 1
    assert f"[receipt {result['receipt']['id']}]" in stdout
    assert result["receipt"]["clip"]["checkpoint_sha256"] == file_sha256(clip.checkpoint_path)


def test_generate_command_writes_a_plan_and_refuses_other_settings_in_the_same_folder(inputs, tmp_path, capsys):
    args = ["generate", "--model", inputs["model"], "--ucf101", inputs["actions"], "--class-prompts",
            inputs["actions"] / "class_prompts.json", "--out", tmp_path, "-n", "1", "--clips", "1", *FAST[:6],
            "--device", "cpu", "--no-progress"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["num_videos"] == 1 and plan["allocation"] == {"BalloonRise": 1, "PendulumSwing": 0, "SquareSpin": 0}
    assert (tmp_path / "00000_BalloonRise.mp4").is_file()
    line = one_line_error(*run(capsys, *args, "--guidance", "5")[::2])
    assert "plan.json was written for other settings (sampler.guidance_scale 10.0 -> 5.0)" in line


@pytest.mark.parametrize("argv, needle", [
    (["fvd", "{gen}", "{real}"], "FVD needs the I3D network i3d_torchscript.pt (no path given); pass it with --i3d"),
    (["fvd", "{gen}", "{real}", "--i3d", "{tmp}/none.pt"], "not found at {tmp}/none.pt"),
    (["is", "{gen}"], "IS needs the C3D network c3d_ucf101.pt"),
    (["fvd", "{tmp}/nothing", "{real}", "--i3d", "{i3d}"], "GENERATED {tmp}/nothing: no such file or directory"),
    (["clipsim", "{gen}"], "pass either --clip-model NAME --clip-pretrained TAG, or --clip-config"),
    (["clipsim", "{gen}", "--clip-model", "ViT-B-32"], "pass either --clip-model NAME --clip-pretrained TAG"),
    (["clipsim", "{gen}", "--clip-config", "{tmp}/c.json", "--clip-checkpoint", "{tmp}/c.pt"], "no such file"),
    (["ucf101", "--ucf101", "{real}", "--out", "{tmp}/o", "--i3d", "{i3d}", "--c3d", "{c3d}"],
     "pass --model DIR or --release CKPT --base SD to generate the videos, or --videos DIR"),
    (["ucf101", "--ucf101", "{real}", "--out", "{tmp}/o", "--model", "{model}", "--release", "{tmp}/text.pt",
      "--base", "{tmp}", "--i3d", "{i3d}", "--c3d", "{c3d}"], "pass either --model DIR or --release CKPT"),
    (["generate", "--release", "{tmp}/text.pt", "--ucf101", "{real}", "--out", "{tmp}/o"],
     "--release needs --base"),
    (["generate", "--release", "{tmp}/none.pth", "--base", "{tmp}", "--ucf101", "{real}", "--out", "{tmp}/o"],
     "--release {tmp}/none.pth: no such file"),
    (["generate", "--model", "{model}", "--base", "{tmp}", "--ucf101", "{real}", "--out", "{tmp}/o"],
     "--base and --release-vae go with --release CKPT"),
    (["convert-release", "{tmp}/text.pt", "--base", "{tmp}", "--out", "{tmp}"], "--out {tmp} exists"),
    (["fvd", "{gen}", "{real}", "--cd-fvd", "{tmp}"], "--cd-fvd {tmp}: not a VideoMAE folder"),
    (["fvd", "{gen}", "{real}", "--cd-fvd", "{tmp}/none"], "cd-FVD needs the VIDEOMAE network"),
    (["fvd", "{gen}", "{real}", "--i3d", "{i3d}", "--cd-fvd", "{tmp}"], "either --i3d (FVD) or --cd-fvd"),
    (["ucf101", "--ucf101", "{real}", "--out", "{tmp}/o", "--model", "{model}", "--c3d", "{c3d}"], "--i3d PATH"),
    (["ucf101", "--ucf101", "{real}", "--out", "{tmp}/o", "--videos", "{tmp}", "--i3d", "{i3d}", "--c3d", "{c3d}"],
     "no plan.json"),
    (["ucf101", "--ucf101", "{real}", "--out", "{tmp}/o", "--videos", "{gen}", "-n", "5", "--i3d", "{i3d}",
      "--c3d", "{c3d}"], "-n 5 but --videos"),
    (["ucf101", "--ucf101", "{real}", "--out", "{tmp}/o", "--videos", "{gen}", "--i3d", "{i3d}", "--c3d", "{c3d}"],
     "no prompt for 3 of 3 classes: BalloonRise, PendulumSwing, SquareSpin"),
    (["generate", "--model", "{model}", "--ucf101", "{tmp}/none", "--out", "{tmp}/o"], "UCF-101 folder not found"),
    (["generate", "--model", "{tmp}", "--ucf101", "{real}", "--out", "{tmp}/o", "--class-prompts",
      "{real}/class_prompts.json"], "not a VidRD model directory"),
    (["generate", "--model", "{model}", "--ucf101", "{real}", "--out", "{tmp}/o", "-n", "0", "--class-prompts",
      "{real}/class_prompts.json"], "number of videos must be ≥ 1"),
    (["generate", "--model", "{model}", "--ucf101", "{real}", "--out", "{tmp}/o", "--overlap", "blend"],
     "`overlap` must be one of"),
    (["report", "{tmp}/none.json"], "none.json: no such file"),
    (["report", "{real}/class_prompts.json"], "not a results.json of `vidrd-eval ucf101`"),
    (["fvd", "{gen}", "{real}", "--i3d", "{i3d}", "--num-frames", "0"], "--num-frames must be ≥ 1"),
    (["fvd", "{gen}", "{real}", "--i3d", "{tmp}/text.pt"], "--i3d {tmp}/text.pt: not a TorchScript file (not a zip"),
    (["is", "{gen}", "--c3d", "{tmp}/state_dict.pt"], "--c3d {tmp}/state_dict.pt: not a TorchScript file (a zip "
                                                      "without code/"),
    (["ucf101", "--ucf101", "{real}", "--out", "{tmp}/o", "--model", "{model}", "--i3d", "{i3d}", "--c3d",
      "{tmp}/text.pt"], "--c3d {tmp}/text.pt: not a TorchScript file"),
    (["fvd", "{gen}", "{real}", "--i3d", "{i3d}", "--device", "cuda:99"], "--device cuda:99: "),
    (["is", "{gen}", "--c3d", "{c3d}", "--device", "tpu"], "--device tpu: "),
    (["generate", "--model", "{model}", "--ucf101", "{real}", "--out", "{tmp}/o", "--device", "cuda:99"],
     "--device cuda:99: "),
    (["real-stats", "{real}", "--i3d", "{i3d}", "-o", "{tmp}/real.json"], "must end in .npz"),
    (["fvd", "{gen}", "{real}", "--i3d", "{i3d}", "--real-stats", "{tmp}/real"], "must end in .npz"),
    (["fvd", "{gen}", "{real}", "--i3d", "{i3d}", "--stride", "0"], "--stride must be ≥ 1"),
    (["fvd", "{gen}", "{real}", "--i3d", "{i3d}", "--real-stride", "0"], "--real-stride must be auto or a whole"),
    (["fvd", "{gen}", "{real}", "--i3d", "{i3d}", "--real-stride", "fast"], "--real-stride must be auto or a whole"),
])
def test_bad_input_is_one_line_and_exit_status_2(protocol_run, inputs, tmp_path, capsys, argv, needle):
    values = {"gen": protocol_run / "videos", "real": inputs["actions"], "i3d": inputs["i3d"], "c3d": inputs["c3d"],
              "model": inputs["model"], "tmp": tmp_path}
    (tmp_path / "text.pt").write_text("not a network")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.pt")
    line = one_line_error(*run(capsys, *[a.format(**values) for a in argv])[::2])
    assert needle.format(**values) in line


def test_a_real_stats_file_of_other_settings_is_refused_before_any_work_and_left_alone(protocol_run, inputs, tmp_path,
                                                                                      capsys):
    stats = tmp_path / "real_stats.npz"
    stats.write_bytes((protocol_run / "real_stats.npz").read_bytes())
    before = stats.read_bytes()
    line = one_line_error(*run(capsys, "fvd", protocol_run / "videos", inputs["actions"], "--i3d", inputs["i3d"],
                               "--real-stats", stats, "--resolution", "24", "--no-progress")[::2])
    assert f"{stats} holds real statistics of other inputs or settings (resolution 32 -> 24" in line
    assert "--overwrite-real-stats" in line
    # ucf101 refuses it before generating anything
    line = one_line_error(*run(capsys, *protocol_args(inputs, tmp_path / "out", "--model", inputs["model"], "-n", "3",
                                                      "--real-stats", stats, "--real-stride", "2"))[::2])
    assert "real_stride 1 -> 2" in line and not (tmp_path / "out" / "videos").exists()
    assert stats.read_bytes() == before


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_ucf101_with_other_networks_and_an_unreadable_video_is_not_flagged_and_says_what_it_used(
        protocol_run, inputs, tmp_path, capsys):
    """The negative of the stand-in flag (TorchScript networks that are not the demo's), and the counts actually
    used when a generated video cannot be read."""
    import shutil

    from vidrd_model.eval.report import STANDIN_WARNING, is_standin_extractor

    class ChannelMeans(torch.nn.Module):  # an "I3D": per-channel means and spreads as features
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            x = x.float()
            return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)

    class ChannelSoftmax(torch.nn.Module):  # a "C3D": a softmax over channel means
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(x.float().mean(dim=(2, 3, 4)) / 10.0, dim=1)

    torch.jit.script(ChannelMeans()).save(str(tmp_path / "i3d.pt"))
    torch.jit.script(ChannelSoftmax()).save(str(tmp_path / "c3d.pt"))
    assert not is_standin_extractor(tmp_path / "i3d.pt") and is_standin_extractor(inputs["i3d"])
    videos = tmp_path / "videos"
    shutil.copytree(protocol_run / "videos", videos)
    (videos / "00003_PendulumSwing.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken" * 10)
    args = protocol_args(inputs, tmp_path / "out", "--videos", videos)
    args[args.index("--i3d") + 1], args[args.index("--c3d") + 1] = tmp_path / "i3d.pt", tmp_path / "c3d.pt"
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert "(5 generated vs 6 real), IS" in stdout and "(5 generated)" in stdout
    assert "warning: 1 of 6 generated videos could not be read and were left out: FVD used 5, IS 5" in err
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["standin_extractors"] is False
    assert result["protocol"]["used"] == {"fvd_generated": 5, "fvd_real": 6, "is_generated": 5}
    assert result["protocol"]["num_failed"] == {"generated": 1, "real": 0} and len(result["warnings"]) == 1
    assert [f["key"] for f in result["fvd"]["failed"]] == ["00003_PendulumSwing.mp4"]
    table = (tmp_path / "out" / "results.md").read_text()
    assert STANDIN_WARNING not in table.lower() and "stand-in" not in table.lower()
    assert "N = 6 planned; FVD on 5 generated vs 6 real (trainlist01); IS on 5 generated" in table
    assert "> **Warning — ours" in table and "1 of 6 generated videos could not be read" in table


@pytest.fixture(scope="module")
def release_checkpoint(inputs, tmp_path_factory):
    """The tiny model saved as the release saves ModelT2V.pth (a Lightning checkpoint with `unet.*` and
    transformers-4.30 `text_encoder.text_model.*` keys), over the tiny SD it was built on."""
    from tests.test_checkpoints import release_text_encoder_keys, save_release_checkpoint
    from vidrd_model.pipeline import VidRDPipeline

    model = VidRDPipeline.from_pretrained(inputs["model"])
    path = tmp_path_factory.mktemp("release") / "ModelT2V.pth"
    return save_release_checkpoint(path, model.unet.state_dict(), release_text_encoder_keys(model.text_encoder))


def test_convert_release_writes_a_folder_that_loads_and_samples_as_the_release_does(inputs, release_checkpoint,
                                                                                    tmp_path, capsys):
    import numpy as np

    from vidrd_model.pipeline import VidRDPipeline

    code, stdout, err = run(capsys, "convert-release", release_checkpoint, "--base", inputs["base"], "--out",
                            tmp_path / "converted")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "converted").iterdir()) == [
        "model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]
    assert not list((tmp_path / "converted").rglob("*.bin"))  # safetensors only
    converted = VidRDPipeline.from_pretrained(tmp_path / "converted")
    released = VidRDPipeline.from_release(str(inputs["base"]), str(release_checkpoint))
    ours = VidRDPipeline.from_pretrained(inputs["model"])
    assert all(torch.equal(v, ours.unet.state_dict()[k]) for k, v in converted.unet.state_dict().items())

    def sample(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe("a red ball", num_frames=3, num_inference_steps=2, height=16, width=16, output_type="np",
                    generator=torch.Generator().manual_seed(3)).frames

    assert np.array_equal(sample(converted), sample(released))
    line = one_line_error(*run(capsys, "convert-release", release_checkpoint, "--base", inputs["base"], "--out",
                               tmp_path / "converted")[::2])
    assert "exists; give a new folder" in line


def test_generate_evaluates_the_release_checkpoint_directly_with_release_decoding(inputs, release_checkpoint,
                                                                                 tmp_path, capsys):
    from vidrd_io.fs import file_sha256

    args = ["--ucf101", inputs["actions"], "--class-prompts", inputs["actions"] / "class_prompts.json", "-n", "1",
            "--frames", "4", *FAST[:6], "--device", "cpu", "--no-progress"]
    code, _, err = run(capsys, "generate", "--release", release_checkpoint, "--base", inputs["base"],
                       "--release-decode", "--out", tmp_path / "release", *args)
    assert code == 0, err
    plan = json.loads((tmp_path / "release" / "plan.json").read_text())
    assert plan["model"]["kind"] == "release" and plan["sampler"]["decode_per_frame"] is True
    assert plan["model"]["sha256"] == {"ModelT2V.pth": file_sha256(release_checkpoint)}
    record = json.loads((tmp_path / "release" / "00000_BalloonRise.json").read_text())
    assert record["decode_per_frame"] is True and record["frames"] == 4
