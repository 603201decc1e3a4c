"""The latent cache (`vidrd-train cache`, `vidrd-train train --latents`) on the tiny Stable Diffusion, on CPU."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cli.train import main
from tests.conftest import assert_one_line_error, run_cli
from tests.test_train import _reset_accelerate
from tests.tiny_sd import tiny_stable_diffusion
from tests.train_corpus import CORRUPT_ID, write_corpus
from vidrd_model import latents as lt
from vidrd_model import train as train_module
from vidrd_model.data import ManifestClips, read_rows
from vidrd_model.train_config import CacheConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FRAMES = 8


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("latents_corpus"))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    _reset_accelerate()


def cache_config(sd, manifest, out, **overrides) -> CacheConfig:
    settings = dict(manifests=[str(manifest)], out=str(out), pretrained_model=str(sd), resolution=16,
                    num_frames=FRAMES, clips_per_row=2, shard_size=5, num_workers=0)
    return CacheConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def cache(sd, manifest, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("cache") / "latents"
    code = main(["cache", str(manifest), "--out", str(out), "--pretrained-model", str(sd), "--resolution", "16",
                 "--num-frames", str(FRAMES), "--clips-per-row", "2", "--shard-size", "5", "--num-workers", "0"])
    assert code == 0
    _reset_accelerate()
    return out


def train_config(sd, manifest, cache, output_dir, **overrides) -> TrainConfig:
    settings = dict(pretrained_model=str(sd), manifests=[str(manifest)], latents=cache and str(cache),
                    output_dir=str(output_dir), resolution=16, num_frames=FRAMES, batch_size=2, image_batch_size=2,
                    image_ratio=0.5, num_workers=0, max_steps=4, checkpoint_every=2, log_every=1,
                    learning_rate=1e-3, lr_warmup_steps=1, seed=1, progress=False)
    return TrainConfig(**{**settings, **overrides})


def test_every_ok_row_is_cached_or_reported_failed_with_its_reason(cache, manifest):
    rows, _ = read_rows([str(manifest)])
    report = json.loads((cache / lt.REPORT_FILE).read_text())
    assert [r["sample_id"] for r in report["failed"]] == [CORRUPT_ID]
    assert "VideoError" in report["failed"][0]["reason"]
    assert report["ok"] == rows.num_rows - 1
    assert report["left_out"] == {"status failed": 1, "split not train": 1, "no caption": 1}
    held = lt.LatentCache(cache)
    assert set(held.index) == set(rows["sample_id"].to_pylist()) - {CORRUPT_ID}
    clips = {sample_id: n for sample_id, (_, _, n) in held.index.items()}
    assert clips["clip-0"] == 2 and clips["image-0"] == 1 and clips["pseudo-0"] == 1


def test_cached_posterior_and_text_are_the_frozen_encoders_outputs(cache, sd, manifest):
    config = cache_config(sd, manifest, cache)
    pipe = lt.load_encoders(str(sd), None, torch.device("cpu"), torch.float32)
    rows, _ = read_rows([str(manifest)])
    ids = rows["sample_id"].to_pylist()
    clips = ManifestClips(rows, 16, FRAMES, train=False)
    held = lt.LatentCache(cache)
    for sample_id in ("clip-1", "pseudo-2", "image-3"):
        row = ids.index(sample_id)
        _, _, pixels, _ = lt.ClipPixels(clips, [(row, 1 if sample_id == "clip-1" else 0)], config.clip_policy,
                                        config.seed)[0]
        with torch.no_grad():
            posterior = pipe.vae.encode(pixels).latent_dist
            text = pipe.encode_prompt([rows["caption"][row].as_py()], torch.device("cpu"))[0]
        shard, j, _ = held.index[sample_id]
        stored = load_file(str(cache / lt.shard_name(shard)))
        clip = 1 if sample_id == "clip-1" else 0
        torch.testing.assert_close(stored[f"{j}.{clip}.mean"], posterior.mean.permute(1, 0, 2, 3))
        torch.testing.assert_close(stored[f"{j}.{clip}.std"], posterior.std.permute(1, 0, 2, 3))
        torch.testing.assert_close(stored[f"{j}.text"], text)
    # the two random clips of a video row are different clips
    shard, j, _ = held.index["clip-0"]
    stored = load_file(str(cache / lt.shard_name(shard)))
    assert not torch.equal(stored[f"{j}.0.mean"], stored[f"{j}.1.mean"])


def test_caption_dropout_gives_the_cached_empty_caption_embedding(cache, sd, manifest):
    rows, _ = read_rows([str(manifest)])
    held = lt.LatentCache(cache)
    rows, _ = held.rows_in_cache(rows)
    pipe = lt.load_encoders(str(sd), None, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        empty = pipe.encode_prompt([""], torch.device("cpu"))[0]
    dropped = lt.CachedLatents(rows, held, uncond_prob=1.0)[(0, 3)]
    kept = lt.CachedLatents(rows, held, uncond_prob=0.0)[(0, 3)]
    torch.testing.assert_close(dropped["encoder_hidden_states"], empty)
    assert dropped["caption"] == "" and kept["caption"]
    assert not torch.allclose(kept["encoder_hidden_states"], empty)
    # the latent is a fresh posterior sample per draw, the same for the same key
    again = lt.CachedLatents(rows, held, uncond_prob=0.0)
    assert torch.equal(again[(0, 3)]["latents"], kept["latents"])
    assert not torch.equal(again[(0, 4)]["latents"], kept["latents"])


def test_a_cache_killed_mid_build_resumes_to_the_uninterrupted_cache(cache, sd, manifest, tmp_path, monkeypatch):
    out = tmp_path / "latents"
    real = lt.encode_shard
    done = []

    def encode_then_die(*args, **kwargs):
        if done:
            raise KeyboardInterrupt  # killed while encoding the second shard
        real(*args, **kwargs)
        done.append(args[5])

    monkeypatch.setattr(lt, "encode_shard", encode_then_die)
    with pytest.raises(KeyboardInterrupt):
        lt.build_cache(cache_config(sd, manifest, out))
    monkeypatch.undo()
    _reset_accelerate()
    assert sorted(p.name for p in out.glob("shard-*")) == [lt.marker_name(0), lt.shard_name(0)]
    with pytest.raises(lt.CacheError, match="incomplete"):
        lt.LatentCache(out)
    first_shard = (out / lt.shard_name(0)).stat().st_mtime_ns
    lt.build_cache(cache_config(sd, manifest, out))
    assert (out / lt.shard_name(0)).stat().st_mtime_ns == first_shard  # done shards are not redone
    for shard in range(lt.LatentCache(out).meta["num_shards"]):
        a, b = load_file(str(cache / lt.shard_name(shard))), load_file(str(out / lt.shard_name(shard)))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_processes_encode_every_nth_shard(cache, sd, manifest, tmp_path, monkeypatch):
    import accelerate

    out = tmp_path / "latents"
    encoded = []
    monkeypatch.setattr(lt, "encode_shard", lambda *args, **kwargs: encoded.append(args[5]))

    class SecondOfTwo:  # what process 1 of `accelerate launch --num_processes 2` sees
        process_index, num_processes, is_main_process, device = 1, 2, False, torch.device("cpu")

        def wait_for_everyone(self):
            pass

    monkeypatch.setattr(accelerate, "PartialState", SecondOfTwo)
    lt.build_cache(cache_config(sd, manifest, out))
    assert encoded == [1]  # 12 rows in shards of 5: process 1 of 2 encodes shard 1 of 0, 1, 2


def test_an_existing_cache_of_other_settings_is_refused(cache, sd, manifest):
    with pytest.raises(lt.CacheError, match="num_frames 8 ≠ 4"):
        lt.build_cache(cache_config(sd, manifest, cache, num_frames=4))


def test_a_cache_built_for_8_frames_is_refused_by_a_16_frame_config_in_one_line(cache, sd, manifest, tmp_path,
                                                                               capsys):
    code, _, err = run_cli(main, capsys, "train", "--pretrained-model", str(sd), "--manifests", str(manifest),
                           "--latents", str(cache), "--resolution", "16", "--num-frames", "16",
                           "--output-dir", str(tmp_path / "run"), "--no-progress")
    line = assert_one_line_error(code, err, "vidrd-train")
    assert "num_frames 8 ≠ 16" in line and not (tmp_path / "run").exists()


def test_a_cache_of_another_vae_is_refused(cache, sd, manifest, tmp_path):
    import shutil

    other = tmp_path / "sd"
    shutil.copytree(sd, other)
    weights = next((other / "vae").glob("*.safetensors"))
    tensors = load_file(str(weights))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1
    from safetensors.torch import save_file

    save_file(tensors, str(weights))
    config = train_config(other, manifest, cache, tmp_path / "run")
    with pytest.raises(lt.CacheError, match="another vae"):
        train_module.load_data(config, 1, 0)


def test_a_cache_of_media_under_another_root_is_refused(cache, sd, manifest, tmp_path):
    config = train_config(sd, manifest, cache, tmp_path / "run")
    config.root = str(tmp_path)  # relative paths would resolve to other files than the cache encoded
    with pytest.raises(lt.CacheError, match="root"):
        train_module.load_data(config, 1, 0)


def test_a_run_killed_and_resumed_from_the_latent_cache_gives_the_uninterrupted_losses(cache, sd, manifest, tmp_path,
                                                                                    monkeypatch):
    from tests.test_train import log_rows

    reference = tmp_path / "reference"
    train_module.train(train_config(sd, manifest, cache, reference))
    _reset_accelerate()
    real_save = train_module.save_checkpoint

    def save_then_crash(*args, **kwargs):
        saved = real_save(*args, **kwargs)
        if saved.name == "checkpoint-000002":
            raise KeyboardInterrupt
        return saved

    run = tmp_path / "run"
    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(train_config(sd, manifest, cache, run))
    monkeypatch.undo()
    _reset_accelerate()
    train_module.train(train_config(sd, manifest, cache, run, resume="latest", num_workers=2))
    expected, resumed = log_rows(reference), log_rows(run)
    assert [r["step"] for r in resumed] == ["1", "2", "3", "4"]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]
    assert len({r["loss"] for r in expected}) == 4  # the losses are real, distinct numbers
    a = load_file(str(reference / "checkpoint-000004" / "state" / "trainable.safetensors"))
    b = load_file(str(run / "checkpoint-000004" / "state" / "trainable.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_pixel_run_from_a_latent_cache_is_refused(cache, sd, manifest, tmp_path):
    from vidrd_model.train_config import ConfigError

    run = tmp_path / "run"
    train_module.train(train_config(sd, manifest, None, run, max_steps=2))
    _reset_accelerate()
    with pytest.raises(ConfigError, match="latents"):
        train_module.train(train_config(sd, manifest, cache, run, max_steps=4, resume="latest"))


def test_cache_takes_its_manifests_from_a_config_file_and_flags_add_to_none(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(lt, "build_cache", lambda config: seen.append(config) or tmp_path / "latents")
    toml = tmp_path / "cache.toml"
    toml.write_text('manifests = ["m1", "m2"]\nout = "latents"\npretrained_model = "sd"\n')
    code, _, err = run_cli(main, capsys, "cache", "--config", str(toml))
    assert code == 0, err
    assert seen[0].manifests == ["m1", "m2"] and seen[0].out == "latents"
    code, _, err = run_cli(main, capsys, "cache", "m3", "--config", str(toml))
    assert code == 0, err
    assert seen[1].manifests == ["m3"]  # the command line overrides the file


def test_cache_without_manifests_anywhere_is_one_line_and_exit_2(tmp_path, capsys):
    toml = tmp_path / "cache.toml"
    toml.write_text('out = "latents"\npretrained_model = "sd"\n')
    code, _, err = run_cli(main, capsys, "cache", "--config", str(toml))
    assert "manifests is required" in assert_one_line_error(code, err, "vidrd-train")
