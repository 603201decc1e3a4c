"""VidRDPipeline on a tiny SD-2.1-style model: FNR / PNS / DSG step by step, assembly, streaming, decoding, loading."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

import vidrd_model.pipeline as pipeline_module
from tests.tiny_sd import perturb_temporal_layers_, tiny_stable_diffusion
from vidrd_model.pipeline import VidRDPipeline
from vidrd_model.sampling import (
    frame_noise_reversion,
    past_dependent_noise_sampling,
    staged_guidance,
    staged_guidance_steps,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 16  # pixels; 8x8 latents


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    pipe = VidRDPipeline.from_stable_diffusion(str(tiny_stable_diffusion(tmp_path_factory)))
    perturb_temporal_layers_(pipe.unet, seed=1)
    perturb_temporal_layers_(pipe.vae, seed=2)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, **kwargs):
    args = dict(prompt="a red ball", height=SIZE, width=SIZE, num_frames=6, num_inference_steps=3,
                overlap_frames=2, generator=torch.Generator().manual_seed(0))
    return pipe(**{**args, **kwargs}).frames


class UNetInputs:
    """Records the latents the U-Net receives, as inputs[clip][step] (batch 1: the first row of a CFG batch)."""

    def __init__(self, pipe):
        self.pipe, self.inputs = pipe, []

    def __enter__(self):
        def record(unet, args, kwargs, output):
            if len(self.inputs) <= self.pipe.clip_index:
                self.inputs.append([])
            self.inputs[-1].append(args[0][:1].clone())

        self.handle = self.pipe.unet.register_forward_hook(record, with_kwargs=True)
        return self.inputs

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------- the three modules as functions


def numbered_frames(num_frames=8) -> torch.Tensor:
    """(1, 1, f, 1, 1) holding each frame's index, so a reordering is easy to read."""
    return torch.arange(num_frames, dtype=torch.float32).view(1, 1, -1, 1, 1)


def test_fnr_gives_the_previous_clips_last_noises_in_reverse_order():
    first = frame_noise_reversion(numbered_frames(8), overlap_frames=4)
    assert first.flatten().tolist() == [7, 6, 5, 4]


def test_pns_mixes_the_reversed_previous_noise_with_fresh_noise_by_beta():
    previous, epsilon = numbered_frames(8), torch.full((1, 1, 8, 1, 1), 10.0)
    rest = past_dependent_noise_sampling(previous, epsilon, noise_recycle=4.0, overlap_frames=4)
    expected = [4 / math.sqrt(17) * p + 10 / math.sqrt(17) for p in (3, 2, 1, 0)]
    assert rest.flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_pns_with_zero_recycle_is_fresh_noise():
    epsilon = torch.randn(1, 4, 8, 2, 2, generator=torch.Generator().manual_seed(0))
    rest = past_dependent_noise_sampling(torch.randn(1, 4, 8, 2, 2), epsilon, noise_recycle=0.0, overlap_frames=4)
    assert torch.equal(rest, epsilon[:, :, 4:])


@pytest.mark.parametrize("noise_recycle", [0.5, 4.0])
def test_pns_keeps_unit_variance_and_the_recycled_correlation_over_many_draws(noise_recycle):
    generator = torch.Generator().manual_seed(0)
    previous = torch.randn(64, 4, 8, 32, 32, generator=generator)
    rest = past_dependent_noise_sampling(previous, torch.randn(previous.shape, generator=generator), noise_recycle, 4)
    assert rest.var().item() == pytest.approx(1.0, abs=0.01)  # 1M values: the variance's std error is 0.0014
    correlation = (rest * previous.flip(2)[:, :, 4:]).mean().item()
    assert correlation == pytest.approx(noise_recycle / math.sqrt(1 + noise_recycle**2), abs=0.01)


def test_dsg_holds_the_overlapped_frames_20_15_10_5_steps_at_the_release_defaults():
    assert staged_guidance_steps(num_steps=50, overlap_frames=4, denoise_guidance=0.4) == [20, 15, 10, 5]
    assert staged_guidance_steps(num_steps=4, overlap_frames=4, denoise_guidance=1.0) == [4, 3, 2, 1]


def test_dsg_replaces_frame_n_with_the_previous_clips_frame_n_minus_1_minus_n_while_guided():
    latents, previous = torch.zeros(1, 1, 8, 1, 1), numbered_frames(8)
    at_step_10 = staged_guidance(latents, previous, step=10, num_steps=50, overlap_frames=4, denoise_guidance=0.4)
    assert at_step_10.flatten().tolist() == [7, 6, 0, 0, 0, 0, 0, 0]  # frames 0, 1 are held past step 10; 2, 3 not


def test_dsg_with_zero_guidance_replaces_nothing():
    latents, previous = torch.randn(1, 4, 8, 2, 2), torch.randn(1, 4, 8, 2, 2)
    assert staged_guidance_steps(50, 4, 0.0) == [0, 0, 0, 0]
    for step in range(50):
        assert torch.equal(staged_guidance(latents, previous, step, 50, 4, 0.0), latents)


# ---------------------------------------------------------------- the three modules inside the pipeline


def plain_ddim(pipe, noise, prompt_embeds, negative_prompt_embeds, steps, guidance_scale):
    """Single-clip text-to-video DDIM with classifier-free guidance, written out with diffusers' scheduler."""
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    latents, text = noise, torch.cat([negative_prompt_embeds, prompt_embeds])
    for t in scheduler.timesteps:
        uncond, cond = pipe.unet(torch.cat([latents] * 2), t, encoder_hidden_states=text).sample.chunk(2)
        latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
    return latents


def test_one_clip_equals_plain_ddim_sampling_with_classifier_free_guidance(pipe):
    noise = torch.randn(1, 4, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(["a red ball"], "cpu"), pipe.encode_prompt([""], "cpu")
        expected = plain_ddim(pipe, noise, positive, negative, steps=3, guidance_scale=7.5)
    out = sample(pipe, latents=noise, output_type="latent", num_clips=1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_clip0_noise_is_drawn_one_frame_at_a_time_from_the_generator(pipe):
    generator = torch.Generator().manual_seed(5)
    expected = torch.cat([torch.randn(1, 4, 1, 8, 8, generator=generator) for _ in range(6)], dim=2)
    with UNetInputs(pipe) as inputs:
        sample(pipe, num_inference_steps=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(inputs[0][0], expected)


def test_later_clip_starts_from_fnr_and_pns_of_the_previous_clips_noise(pipe, monkeypatch):
    draws = []
    draw = pipeline_module.randn_tensor
    monkeypatch.setattr(pipeline_module, "randn_tensor", lambda *a, **k: draws.append(draw(*a, **k)) or draws[-1])
    with UNetInputs(pipe) as inputs:
        sample(pipe, num_clips=2, num_frames=6, overlap_frames=2, noise_recycle=3.0)
    previous, start, epsilon = inputs[0][0], inputs[1][0], draws[-1]
    assert len(draws) == 6 + 1 and epsilon.shape == previous.shape  # one per frame, then one full-shape draw
    assert torch.equal(start[:, :, 0], previous[:, :, 5]) and torch.equal(start[:, :, 1], previous[:, :, 4])  # FNR
    pns = 3 / math.sqrt(10) * previous.flip(2)[:, :, 2:] + epsilon[:, :, 2:] / math.sqrt(10)
    assert torch.allclose(start[:, :, 2:], pns, atol=1e-6)  # PNS


def held_steps(inputs, overlap_frames):
    """Returns, per overlapped frame n, the steps at which clip 1's frame n equals clip 0's frame N−1−n."""
    previous, current = inputs[0], inputs[1]
    return [
        [i for i in range(len(current)) if torch.equal(current[i][:, :, n], previous[i][:, :, -1 - n])]
        for n in range(overlap_frames)
    ]


def test_pns_under_a_sigma_scheduler_mixes_noises_of_one_scale(pipe):
    from diffusers import EulerDiscreteScheduler

    euler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    euler.set_timesteps(10)
    sigma = float(euler.init_noise_sigma)
    assert sigma > 10  # σ_max: the fresh noise must be scaled like the previous clip's
    original = pipe.scheduler
    try:
        pipe.scheduler = euler
        previous = torch.randn(4, 4, 8, 16, 16, generator=torch.Generator().manual_seed(0)) * sigma
        noise = pipe.next_clip_noise(previous, 1.0, 2, torch.Generator().manual_seed(1))
        assert float(noise[:, :, 2:].std()) == pytest.approx(sigma, rel=0.05)  # β = 1: half fresh, half recycled
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # DDIM: σ = 1, the release's formula
        unit = previous / sigma
        eps = torch.randn(unit.shape, generator=torch.Generator().manual_seed(1))
        assert torch.equal(pipe.next_clip_noise(unit, 1.0, 2, torch.Generator().manual_seed(1))[:, :, 2:],
                           past_dependent_noise_sampling(unit, eps, 1.0, 2))
    finally:
        pipe.scheduler = original


def test_dsg_holds_frames_for_20_15_10_5_of_50_steps_in_the_pipeline(pipe):
    with UNetInputs(pipe) as inputs:
        sample(pipe, num_clips=2, num_frames=5, overlap_frames=4, num_inference_steps=50, denoise_guidance=0.4,
               guidance_scale=1.0, output_type="latent")
    assert held_steps(inputs, 4) == [list(range(20)), list(range(15)), list(range(10)), list(range(5))]


def test_zero_denoise_guidance_ties_the_overlap_only_through_the_initial_noise(pipe):
    with UNetInputs(pipe) as inputs:
        sample(pipe, num_clips=2, num_frames=6, overlap_frames=2, num_inference_steps=4, denoise_guidance=0.0,
               output_type="latent")
    assert held_steps(inputs, 2) == [[0], [0]]  # step 0 is FNR; no step is replaced


def test_third_clip_follows_the_second_not_the_first(pipe):
    with UNetInputs(pipe) as inputs:
        sample(pipe, num_clips=3, num_frames=6, overlap_frames=2, num_inference_steps=4, denoise_guidance=1.0,
               output_type="latent")
    assert held_steps(inputs[1:], 2) == [[0, 1, 2, 3], [0, 1]]
    assert not torch.equal(inputs[2][0][:, :, 0], inputs[0][0][:, :, 5])


# ---------------------------------------------------------------- assembly, determinism, streaming, decoding


def test_same_seed_gives_the_same_video_and_another_seed_a_different_one(pipe):
    first, again = sample(pipe, num_clips=2), sample(pipe, num_clips=2)
    other = sample(pipe, num_clips=2, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)


def test_keep_has_k_times_n_frames_and_drop_removes_each_later_clips_first_overlap_frames(pipe):
    keep = sample(pipe, num_clips=3, num_frames=6, overlap_frames=2, overlap="keep")
    drop = sample(pipe, num_clips=3, num_frames=6, overlap_frames=2, overlap="drop")
    assert keep.shape == (1, 3 * 6, SIZE, SIZE, 3)
    assert drop.shape == (1, 6 + 2 * (6 - 2), SIZE, SIZE, 3)
    assert np.array_equal(drop, np.concatenate([keep[:, :6], keep[:, 8:12], keep[:, 14:18]], axis=1))


def test_each_clip_is_decoded_and_streamed_before_the_next_clip_is_denoised(pipe):
    events, streamed = [], []
    handle = pipe.unet.register_forward_hook(lambda *args: events.append(("unet", pipe.clip_index)))

    def on_clip(index, frames):
        events.append(("clip", index))
        streamed.append(frames)

    try:
        out = sample(pipe, num_clips=3, num_frames=6, overlap_frames=2, overlap="drop", callback_on_clip_end=on_clip)
    finally:
        handle.remove()
    assert out is None
    assert [e for e in events if e[0] == "clip"] == [("clip", 0), ("clip", 1), ("clip", 2)]
    assert events.index(("clip", 0)) < events.index(("unet", 1)) and events.index(("clip", 1)) < events.index(
        ("unet", 2))
    assert [f.shape[1] for f in streamed] == [6, 4, 4]
    kept = sample(pipe, num_clips=3, num_frames=6, overlap_frames=2, overlap="drop")
    assert np.array_equal(np.concatenate(streamed, axis=1), kept)


def test_clips_are_decoded_by_the_temporal_vae_over_their_frames_unless_per_frame(pipe):
    latents = sample(pipe, num_clips=1, output_type="latent")
    video = sample(pipe, num_clips=1, output_type="pt")  # (b, f, 3, h, w) in [0, 1]
    per_frame = sample(pipe, num_clips=1, output_type="pt", decode_per_frame=True)
    z = latents[0].permute(1, 0, 2, 3) / pipe.vae.config.scaling_factor
    with torch.no_grad():
        temporal = pipe.vae.decode(z, num_frames=6).sample
        frame_by_frame = pipe.vae.decode(z, num_frames=1).sample
    assert torch.allclose(video[0], (temporal / 2 + 0.5).clamp(0, 1), atol=1e-6)
    assert torch.allclose(per_frame[0], (frame_by_frame / 2 + 0.5).clamp(0, 1), atol=1e-6)
    assert not torch.allclose(video, per_frame, atol=1e-3)


def test_prompt_is_encoded_with_an_empty_negative_prompt_by_default(pipe):
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(["a red ball"], "cpu"), pipe.encode_prompt([""], "cpu")
    from_text = sample(pipe, output_type="latent")
    from_embeds = sample(pipe, prompt=None, prompt_embeds=positive, negative_prompt_embeds=negative,
                         output_type="latent")
    with_negative = sample(pipe, negative_prompt="watermark", output_type="latent")
    assert torch.equal(from_text, from_embeds)
    assert not torch.allclose(from_text, with_negative, atol=1e-4)


def test_guidance_scale_one_runs_the_unet_without_the_unconditional_batch(pipe):
    batches = []
    handle = pipe.unet.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    try:
        sample(pipe, guidance_scale=1.0, output_type="latent")
        sample(pipe, guidance_scale=2.0, output_type="latent")
    finally:
        handle.remove()
    assert batches == [1, 1, 1, 2, 2, 2]


def test_save_pretrained_then_from_pretrained_samples_the_same_video(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "vidrd")
    reloaded = VidRDPipeline.from_pretrained(tmp_path / "vidrd")
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.unet).__name__ == "VideoUNet" and type(reloaded.vae).__name__ == "TemporalAutoencoderKL"
    assert isinstance(reloaded.scheduler, DDIMScheduler)
    assert np.array_equal(sample(reloaded, num_clips=2), sample(pipe, num_clips=2))


def test_from_pretrained_takes_diffusers_usual_keywords_and_refuses_others_by_name(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "vidrd")
    reloaded = VidRDPipeline.from_pretrained(tmp_path / "vidrd", torch_dtype=torch.float64, variant=None,
                                             local_files_only=True, use_safetensors=True, device_map="cpu")
    assert reloaded.unet.dtype == torch.float64 and reloaded.text_encoder.dtype == torch.float64
    assert reloaded.vae.dtype == torch.float32 and reloaded.device.type == "cpu"
    with pytest.raises(TypeError, match="unexpected keyword.*low_cpu_mem_usagee"):
        VidRDPipeline.from_pretrained(tmp_path / "vidrd", low_cpu_mem_usagee=True)
    with pytest.raises(ValueError, match="only one device"):
        VidRDPipeline.from_pretrained(tmp_path / "vidrd", device_map="balanced")
    with pytest.raises(OSError):  # a variant with no such weight files is refused by diffusers' loader
        VidRDPipeline.from_pretrained(tmp_path / "vidrd", variant="fp16")


def test_a_compiled_unet_samples_the_same_video_and_keeps_its_names(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "vidrd")
    compiled = VidRDPipeline.from_pretrained(tmp_path / "vidrd").compile_unet(backend="eager")  # dynamo, no codegen
    compiled.set_progress_bar_config(disable=True)
    assert list(compiled.unet.state_dict()) == list(pipe.unet.state_dict())  # in place: no `_orig_mod.` prefix
    # atol: eager's fused SiLU (a strided write) may round an ulp away from the traced path's; that grows to ~1e-5
    assert np.allclose(sample(compiled, num_clips=2), sample(pipe, num_clips=2), atol=5e-5)


def test_cuda_graph_sampling_traces_the_whole_unet_and_samples_the_same_video(pipe, tmp_path, monkeypatch):
    """The cudagraphs backend on CPU: TorchDynamo must capture the forward (graphs themselves need CUDA, so torch
    runs the captured graph without them here); the sampler's step marks and output copies run as on a GPU."""
    pipe.save_pretrained(tmp_path / "vidrd")
    graphed = VidRDPipeline.from_pretrained(tmp_path / "vidrd").enable_cuda_graphs()
    graphed.set_progress_bar_config(disable=True)
    assert list(graphed.unet.state_dict()) == list(pipe.unet.state_dict())
    marks = []
    mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1) or mark())
    video = sample(graphed, num_clips=2)
    assert len(marks) == 2 * 3  # one graph step per U-Net call: 2 clips × 3 steps
    assert np.allclose(video, sample(pipe, num_clips=2), atol=5e-5)  # as the compiled one
    assert len(marks) == 6  # the eager pipeline marks nothing


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, message", [
    ({"num_clips": 2, "num_frames": 4, "overlap_frames": 4}, r"`overlap_frames` must be in \[0, num_frames\)"),
    ({"overlap": "blend"}, "`overlap` must be one of"),
    ({"denoise_guidance": 1.5}, r"`denoise_guidance` must be in \[0, 1\]"),
    ({"noise_recycle": -1.0}, "`noise_recycle` must be ≥ 0"),
    ({"height": 15}, "multiples of 2"),
    ({"prompt_embeds": torch.zeros(1, 77, 32)}, "exactly one of `prompt` and `prompt_embeds`"),
    ({"latents": torch.zeros(1, 4, 5, 8, 8)}, r"`latents` must have shape \(1, 4, 6, 8, 8\)"),
    ({"output_type": "gif"}, "`output_type` must be one of"),
    ({"decode_chunk_size": 0}, "`decode_chunk_size` must be ≥ 1"),
])
def test_bad_arguments_are_refused_before_any_denoising(pipe, kwargs, message):
    calls = []
    handle = pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=message):
            sample(pipe, **kwargs)
    finally:
        handle.remove()
    assert not calls
