"""`vidrd-train` on the tiny Stable Diffusion and a small mixed manifest, on CPU: loss, resume, checkpoints, DDP, VAE."""

import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cli.train import main
from tests.tiny_sd import tiny_stable_diffusion
from tests.train_corpus import CORRUPT_ID, write_corpus
from vidrd_model import train as train_module
from vidrd_model.data import IMAGE, VIDEO, BatchPlan, ManifestClips, collate, kind_pools, read_rows
from vidrd_model.params import TRAINABLE_MODULES, freeze_for_training
from vidrd_model.train_config import PARAM_MODES, ConfigError, TrainConfig, VaeTrainConfig, load_config, save_config

REPO = Path(__file__).resolve().parents[1]
SEED = 1  # with this seed the first steps hold video and image batches and draw the undecodable clip


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("train_corpus"))


def _reset_accelerate():
    """Each run builds its own Accelerator; accelerate keeps process-wide singletons between them."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    _reset_accelerate()


def tiny_config(sd, manifest, output_dir, **overrides) -> TrainConfig:
    settings = dict(
        pretrained_model=str(sd), manifests=[str(manifest)], output_dir=str(output_dir), resolution=16, num_frames=2,
        batch_size=2, image_batch_size=2, image_ratio=0.5, num_workers=0, max_steps=4, checkpoint_every=2,
        log_every=1, learning_rate=1e-3, lr_schedule="cosine", lr_warmup_steps=1, ema=True, ema_decay=0.9,
        seed=SEED, progress=False,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def first_batches(config: TrainConfig, steps: int, world_size: int = 1, rank: int = 0):
    """Returns the config's training rows, its BatchPlan and that plan's first `steps` batches."""
    rows, _ = read_rows(config.manifests)
    plan = BatchPlan(kind_pools(rows), {VIDEO: config.batch_size, IMAGE: config.image_batch_size},
                     config.image_ratio, config.seed, world_size, rank)
    batches = iter(plan)
    return rows, plan, [next(batches) for _ in range(steps)]


@pytest.fixture(scope="module")
def uninterrupted_run(sd, manifest, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted")
    config = tiny_config(sd, manifest, run, gradient_accumulation_steps=2)
    model = train_module.train(config)
    _reset_accelerate()
    return config, run, model


def test_loss_falls_when_overfitting_one_fixed_batch(sd, manifest, tmp_path):
    config = tiny_config(sd, manifest, tmp_path, uncond_prob=0.0, lr_warmup_steps=0)
    pipe, unet, noise_scheduler = train_module.load_pipeline(config)
    params = freeze_for_training(unet, config.train_mode, [pipe.vae, pipe.text_encoder])
    optimizer, _ = train_module.make_optimizer(config, params)
    rows, _ = read_rows(config.manifests)
    dataset = ManifestClips(rows, config.resolution, config.num_frames, uncond_prob=0.0)
    ids = rows["sample_id"].to_pylist()
    batch = collate([dataset[(ids.index(i), 0)] for i in ("clip-0", "clip-1")])
    losses = []
    for _ in range(10):
        torch.manual_seed(0)  # the same noise, timesteps and latent sample every step: one fixed objective
        loss = train_module.diffusion_loss(unet, pipe, noise_scheduler, batch, torch.device("cpu"), torch.float32)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_image_batches_take_the_single_frame_path_and_keep_every_trained_parameter_in_the_graph(sd, manifest,
                                                                                                 tmp_path):
    config = tiny_config(sd, manifest, tmp_path)
    pipe, unet, noise_scheduler = train_module.load_pipeline(config)
    trainable = freeze_for_training(unet, "paper", [pipe.vae, pipe.text_encoder])
    rows, _ = read_rows(config.manifests)
    ids = rows["sample_id"].to_pylist()
    dataset = ManifestClips(rows, config.resolution, config.num_frames)
    batch = collate([dataset[(ids.index(i), 0)] for i in ("image-0", "image-1")])
    assert batch["pixel_values"].shape[1] == 1
    train_module.diffusion_loss(unet, pipe, noise_scheduler, batch, torch.device("cpu"), torch.float32).backward()
    named = {id(p): n for n, p in unet.named_parameters()}
    grads = {named[id(p)]: p.grad for p in trainable}
    assert all(g is not None for g in grads.values())  # what DDP needs: no unused parameter on F = 1
    assert all(not g.any() for n, g in grads.items() if "temp_" in n)  # temporal layers are x + 0·branch
    assert any(g.abs().sum() > 0 for n, g in grads.items() if ".attn1." in n or ".attn2." in n)


def test_interrupted_then_resumed_run_gives_the_uninterrupted_loss_curve_and_weights(
        uninterrupted_run, tmp_path, monkeypatch):
    config, reference, _ = uninterrupted_run
    micro_steps = config.max_steps * config.gradient_accumulation_steps
    rows, plan, batches = first_batches(config, micro_steps)
    assert set(plan.step_kinds(0, micro_steps)) == {True, False}  # mixed image and video batches
    ids = rows["sample_id"].to_pylist()
    corrupt_draws = sum(ids[row] == CORRUPT_ID for keys in batches for row, _ in keys)
    assert corrupt_draws > 0

    real_save = train_module.save_checkpoint

    def save_then_crash(*args, **kwargs):
        saved = real_save(*args, **kwargs)
        if saved.name == "checkpoint-000002":
            raise KeyboardInterrupt  # killed right after its first checkpoint
        return saved

    run = tmp_path / "run"
    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(dataclasses.replace(config, output_dir=str(run)))
    monkeypatch.undo()
    _reset_accelerate()
    assert [r["step"] for r in log_rows(run)] == ["1", "2"]
    train_module.train(dataclasses.replace(config, output_dir=str(run), resume="latest", num_workers=2))

    expected, resumed = log_rows(reference), log_rows(run)
    assert [r["step"] for r in resumed] == ["1", "2", "3", "4"]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in expected]
    assert resumed[-1]["skipped_rows"] == expected[-1]["skipped_rows"]
    assert int(expected[-1]["skipped_rows"]) >= corrupt_draws  # a substitute may be the broken clip again
    for name in ("trainable", "ema", "optimizer"):
        a = load_file(str(reference / "checkpoint-000004" / "state" / f"{name}.safetensors"))
        b = load_file(str(run / "checkpoint-000004" / "state" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_checkpoint_model_loads_in_vidrd_pipeline_and_samples_a_video(uninterrupted_run):
    from vidrd_model.pipeline import VidRDPipeline

    config, run, model = uninterrupted_run
    assert model == run / "model" and (run / "loss.png").is_file() and (run / "config.toml").is_file()
    pipe = VidRDPipeline.from_pretrained(run / "checkpoint-000004" / "model")
    pipe.set_progress_bar_config(disable=True)
    video = pipe("a square moving right", num_frames=2, num_inference_steps=2, height=16, width=16,
                 generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 2, 16, 16, 3) and np.isfinite(video).all()
    # with EMA on, the model the sampler gets holds the EMA weights, not the last step's
    ema = load_file(str(run / "checkpoint-000004" / "state" / "ema.safetensors"))
    raw = load_file(str(run / "checkpoint-000004" / "state" / "trainable.safetensors"))
    unet = dict(pipe.unet.named_parameters())
    assert all(torch.equal(unet[k], ema[k]) for k in ema)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)


def test_checkpoints_total_limit_keeps_the_newest(sd, manifest, tmp_path):
    run = tmp_path / "run"
    train_module.train(tiny_config(sd, manifest, run, max_steps=3, checkpoint_every=1, checkpoints_total_limit=2,
                                   ema=False))
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-000002", "checkpoint-000003"]
    assert not list(run.glob(".tmp-*"))


def test_resuming_with_another_data_order_is_refused_before_loading_the_model(uninterrupted_run, tmp_path,
                                                                              monkeypatch):
    config, reference, _ = uninterrupted_run
    changed = dataclasses.replace(config, output_dir=str(tmp_path), batch_size=3,
                                  resume=str(reference / "checkpoint-000002"))
    monkeypatch.setattr(train_module, "load_pipeline", lambda config: pytest.fail("loaded the model"))
    with pytest.raises(ConfigError, match="batch_size"):
        train_module.train(changed)


def test_a_fresh_run_into_a_directory_with_checkpoints_is_refused(uninterrupted_run, capsys):
    config, run, _ = uninterrupted_run
    argv = ["train", "--pretrained-model", config.pretrained_model, "--manifests", config.manifests[0],
            "--output-dir", str(run)]
    assert main(argv) == 2
    assert "already has checkpoints: --resume latest continues" in capsys.readouterr().err


def test_two_processes_under_accelerate_launch_train_mixed_batches(sd, manifest, tmp_path):
    config = tiny_config(sd, manifest, tmp_path / "ddp", max_steps=3, checkpoint_every=3)
    _, plan, _ = first_batches(config, config.max_steps, world_size=2)
    assert set(plan.step_kinds(0, config.max_steps)) == {True, False}  # both the F = 1 and the video path run
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cli.train", "train",
        "--pretrained-model", str(sd), "--manifests", str(manifest), "--output-dir", config.output_dir,
        "--resolution", "16", "--num-frames", "2", "--batch-size", "2", "--image-batch-size", "2",
        "--image-ratio", "0.5", "--max-steps", "3", "--checkpoint-every", "3", "--log-every", "1",
        "--num-workers", "0", "--seed", str(SEED), "--no-progress",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(config.output_dir)
    assert [r["step"] for r in log_rows(run)] == ["1", "2", "3"]
    state = run / "checkpoint-000003" / "state"
    assert (state / "rng-0.safetensors").is_file() and (state / "rng-1.safetensors").is_file()
    assert done.stdout.count("model: ") == 1  # printed by the main process only


def test_vae_finetuning_trains_only_decoder_temporal_layers_and_saves_a_loadable_vae(sd, manifest, tmp_path):
    from vidrd_model.train_vae import train_vae
    from vidrd_model.vae import TemporalAutoencoderKL

    config = VaeTrainConfig(pretrained_model=str(sd), manifests=[str(manifest)], output_dir=str(tmp_path / "vae"),
                            resolution=16, num_frames=3, batch_size=2, num_workers=0, max_steps=2, learning_rate=1e-3,
                            lr_warmup_steps=0, log_every=1, progress=False)
    model = train_vae(config)
    trained = TemporalAutoencoderKL.from_pretrained_2d(model).state_dict()
    base = TemporalAutoencoderKL.from_pretrained_2d(sd, subfolder="vae").state_dict()
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all(k.startswith("decoder.") and ".temp_convs." in k for k in changed)
    assert [r["step"] for r in log_rows(tmp_path / "vae")] == ["1", "2"]


def test_lpips_is_zero_for_identical_images_and_grows_with_the_difference(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    from vidrd_model.train_vae import LPIPS

    torch.manual_seed(0)
    features = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}
    linear = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS.CHANNELS)}
    torch.save(features, tmp_path / "vgg16.pth")
    torch.save(linear, tmp_path / "vgg.pth")
    lpips = LPIPS.from_files(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    noise = torch.randn_like(x)
    near, far = lpips(x, x + 0.05 * noise), lpips(x, x + 0.5 * noise)
    assert lpips(x, x).abs().max() < 1e-6
    assert near.shape == (2,) and (near > 0).all() and (far > near).all()


def test_every_parameter_mode_of_the_model_is_a_train_mode():
    assert PARAM_MODES == tuple(TRAINABLE_MODULES)


def test_options_override_the_toml_file_which_overrides_the_defaults(tmp_path, monkeypatch):
    toml = tmp_path / "train.toml"
    toml.write_text('[data]\nresolution = 64\nmanifests = ["a"]\n[optim]\nlearning_rate = 1\n[run]\nema = true\n')
    seen = {}
    monkeypatch.setattr(train_module, "train", lambda config: seen.setdefault("config", config) and tmp_path)
    assert main(["train", str(toml), "--manifests", "b", "--manifests", "c", "--no-ema", "--num-frames", "4"]) == 0
    config = seen["config"]
    assert (config.resolution, config.manifests, config.ema, config.num_frames) == (64, ["b", "c"], False, 4)
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.batch_size == TrainConfig().batch_size


def test_resolved_config_in_the_run_dir_loads_back_to_the_same_config(tmp_path):
    config = TrainConfig(pretrained_model="sd", manifests=["a b", 'q"uote'], image_ratio=0.25, ema=True,
                         validation_prompts=["a cat, jumping"], learning_rate=3e-5)
    save_config(config, tmp_path / "config.toml")
    assert load_config(TrainConfig, tmp_path / "config.toml") == config


def test_unknown_config_key_is_a_one_line_error_with_status_2(tmp_path, capsys):
    toml = tmp_path / "train.toml"
    toml.write_text("resolutoin = 64\n")
    assert main(["train", str(toml)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "vidrd-train: unknown config key 'resolutoin'"


def test_wrongly_typed_option_value_is_a_one_line_error_with_status_2(tmp_path, capsys):
    toml = tmp_path / "train.toml"
    toml.write_text('batch_size = "two"\n')
    assert main(["train", str(toml)]) == 2
    assert capsys.readouterr().err.strip() == "vidrd-train: config key 'batch_size' must be int, got 'two'"


def test_unknown_compile_mode_is_a_one_line_error_with_status_2(sd, manifest, tmp_path, capsys):
    toml = tmp_path / "train.toml"
    toml.write_text(f'pretrained_model = "{sd}"\nmanifests = ["{manifest}"]\ncompile = true\ncompile_mode = "fast"\n')
    assert main(["train", str(toml), "--output-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().startswith("vidrd-train: compile_mode must be one of default, ")


def test_missing_manifest_is_a_one_line_error_with_status_2(sd, tmp_path, capsys):
    code = main(["train", "--pretrained-model", str(sd), "--manifests", str(tmp_path / "nowhere"),
                 "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nowhere is not a directory" in err
    assert "Traceback" not in err


def test_vae_config_without_a_vae_to_start_from_is_refused(tmp_path, capsys):
    assert main(["vae", "--manifests", str(tmp_path)]) == 2
    assert "pretrained_model or vae is required" in capsys.readouterr().err


def test_lpips_files_without_their_pair_are_refused():
    from vidrd_model.train_config import check_vae_config

    with pytest.raises(ConfigError, match="both lpips_backbone and lpips_linear"):
        check_vae_config(VaeTrainConfig(pretrained_model="sd", manifests=["m"], lpips_backbone="vgg16.pth"))


def test_checkpoint_state_is_safetensors_and_json_only(uninterrupted_run):
    _, run, _ = uninterrupted_run
    state = run / "checkpoint-000004" / "state"
    assert sorted(p.suffix for p in state.iterdir()) == [".json"] * 4 + [".safetensors"] * 4


def test_grad_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    layer = torch.nn.Linear(3, 2)
    trainable = dict(layer.named_parameters())
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    for overflow in (True, False, False):  # one skipped step halves the scale; two good ones advance the tracker
        optimizer.zero_grad()
        scaler.scale(layer(torch.ones(1, 3)).sum()).backward()
        if overflow:
            layer.weight.grad[0, 0] = float("inf")
        scaler.step(optimizer)
        scaler.update()
    saved = scaler.state_dict()
    assert saved["scale"] == 512.0 and saved["_growth_tracker"] == 2
    checkpoint = train_module.save_checkpoint(accelerator, tmp_path, 3, trainable, optimizer, lr_scheduler, None, {},
                                              None, lambda target: target.mkdir(), scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    train_module.load_checkpoint(checkpoint, 0, trainable, optimizer, lr_scheduler, None, scaler=fresh)
    assert fresh.state_dict() == saved
    fresh.scale(layer(torch.ones(1, 3)).sum()).backward()  # the restored tracker grows the scale on the next step
    fresh.step(optimizer)
    fresh.update()
    assert fresh.get_scale() == 1024.0


def test_the_clean_variant_from_plain_sd_is_the_2d_unet_on_single_frames(sd, tmp_path):
    """unet_variant = "clean": no frame embedding in the residual stream, so F = 1 is exactly SD's 2-D U-Net;
    the release's default adds PE[0] there."""
    from diffusers import UNet2DConditionModel

    flat = UNet2DConditionModel.from_pretrained(sd, subfolder="unet").eval()
    x, t, text = torch.randn(2, 4, 1, 8, 8), torch.tensor([10, 10]), torch.randn(2, 77, 32)
    _, clean, _ = train_module.load_pipeline(tiny_config(sd, "unused", tmp_path, unet_variant="clean"))
    _, release, _ = train_module.load_pipeline(tiny_config(sd, "unused", tmp_path))
    with torch.no_grad():
        expected = flat(x[:, :, 0], t, text).sample
        assert torch.allclose(clean.eval()(x, t, text).sample[:, :, 0], expected, atol=1e-5)
        assert not torch.allclose(release.eval()(x, t, text).sample[:, :, 0], expected, atol=1e-5)
