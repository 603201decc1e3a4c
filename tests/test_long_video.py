"""The long-video samplers (independent, FreeNoise, FIFO-Diffusion, Gen-L-Video) on a tiny SD: each one's invariants."""

import numpy as np
import pytest
import torch

from tests.tiny_sd import perturb_temporal_layers_, tiny_stable_diffusion
from vidrd_model.long_video import MODES, fifo, freenoise
from vidrd_model.pipeline import VidRDPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 16  # pixels; 8x8 latents
N = 4  # frames per window


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    pipe = VidRDPipeline.from_stable_diffusion(str(tiny_stable_diffusion(tmp_path_factory)))
    perturb_temporal_layers_(pipe.unet, seed=1)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, mode, total, seed=0, **kwargs):
    args = dict(prompt="a red ball", height=SIZE, width=SIZE, num_frames=N, num_inference_steps=2,
                generator=torch.Generator().manual_seed(seed), long_video=mode, num_frames_total=total,
                output_type="latent")
    return pipe(**{**args, **kwargs}).frames


class UNetFrames:
    """Records the number of frames of every U-Net input."""

    def __init__(self, pipe):
        self.pipe, self.frames = pipe, []

    def __enter__(self):
        self.handle = self.pipe.unet.register_forward_hook(lambda m, args, out: self.frames.append(args[0].shape[2]))
        return self.frames

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------- every mode


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_gives_the_asked_length_and_is_deterministic_for_a_seed(pipe, mode):
    total = 10
    first, again = sample(pipe, mode, total), sample(pipe, mode, total)
    expected = total if mode != "vidrd" else 8  # vidrd: num_clips·num_frames, here 2 clips of 4 (keep)
    if mode == "vidrd":
        first, again = (sample(pipe, mode, None, num_clips=2, overlap_frames=1) for _ in range(2))
    assert first.shape[2] == expected
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    other = sample(pipe, mode, total, seed=1) if mode != "vidrd" else \
        sample(pipe, mode, None, seed=1, num_clips=2, overlap_frames=1)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "vidrd"])
def test_unet_calls_see_one_window_whatever_the_length(pipe, mode):
    seen = {}
    for total in (8, 12):
        with UNetFrames(pipe) as frames:
            sample(pipe, mode, total, num_inference_steps=2)
        seen[total] = set(frames)
    assert seen[8] == seen[12] == {N}


def test_vidrd_mode_is_todays_output_bit_for_bit(pipe):
    args = dict(prompt="a red ball", height=SIZE, width=SIZE, num_frames=N, num_clips=2, num_inference_steps=3,
                overlap_frames=1, output_type="np")
    default = pipe(**args, generator=torch.Generator().manual_seed(3)).frames
    explicit = pipe(**args, generator=torch.Generator().manual_seed(3), long_video="vidrd").frames
    np.testing.assert_array_equal(default, explicit)


def test_pieces_are_streamed_and_join_to_the_whole_video(pipe):
    pieces = []
    whole = sample(pipe, "gen-l-video", 10, output_type="np")
    assert sample(pipe, "gen-l-video", 10, output_type="np",
                  callback_on_clip_end=lambda i, frames: pieces.append((i, frames))) is None
    assert [i for i, _ in pieces] == [0, 1, 2] and [p.shape[1] for _, p in pieces] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([p for _, p in pieces], axis=1), whole)


def test_bad_mode_and_latents_with_another_mode_are_refused(pipe):
    with pytest.raises(ValueError, match="long_video"):
        sample(pipe, "nope", 8)
    with pytest.raises(ValueError, match="latents"):
        sample(pipe, "fifo", 8, latents=torch.zeros(1, 4, N, 2, 2))
    with pytest.raises(ValueError, match="num_frames_total"):
        sample(pipe, "freenoise", 3)


# ---------------------------------------------------------------- independent


def test_independent_clips_are_the_plain_sampler_run_clip_after_clip(pipe):
    video = sample(pipe, "independent", 8)
    generator = torch.Generator().manual_seed(0)
    clips = [pipe(prompt="a red ball", height=SIZE, width=SIZE, num_frames=N, num_inference_steps=2,
                  generator=generator, output_type="latent").frames for _ in range(2)]
    torch.testing.assert_close(video, torch.cat(clips, dim=2), rtol=0, atol=0)


# ---------------------------------------------------------------- FreeNoise


@pytest.mark.parametrize("total,window,stride", [(16, 4, 4), (11, 4, 2), (21, 16, 4), (7, 7, 3), (13, 5, 1)])
@pytest.mark.parametrize("weighting", freenoise.WEIGHTINGS)
def test_freenoise_fusion_weights_sum_to_one_per_frame(total, window, stride, weighting):
    starts, weights = freenoise.fusion_weights(total, window, stride, weighting)
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(total, dtype=torch.float64))
    assert starts[-1] + window == total
    for row, start in enumerate(starts):  # zero outside the window, positive inside
        assert (weights[row, :start] == 0).all() and (weights[row, start + window:] == 0).all()
        assert (weights[row, start:start + window] > 0).all()


def test_freenoise_pyramid_weights_are_diffusers():
    assert freenoise.window_weights(4, "pyramid") == [1, 2, 2, 1]
    assert freenoise.window_weights(5, "pyramid") == [1, 2, 3, 2, 1]


def test_freenoise_noise_rescheduling_reuses_the_first_window_shuffled_locally():
    noise = torch.arange(4.0).view(1, 1, 4, 1, 1)
    latents = freenoise.reschedule_noise(noise, 11, 2, torch.Generator().manual_seed(0)).flatten()
    assert latents[:4].tolist() == [0, 1, 2, 3]
    for i in range(4, 11, 2):  # frames [i, i+2) are distinct frames of [i-4, i-2) (a prefix of a shuffle at the end)
        window, source = latents[i:i + 2].tolist(), latents[i - 4:i - 2].tolist()
        assert len(set(window)) == len(window) and set(window) <= set(source)
    assert set(latents.tolist()) == {0, 1, 2, 3}


# ---------------------------------------------------------------- FIFO-Diffusion


@pytest.mark.parametrize("partitions,lookahead", [(1, False), (2, True)])
def test_fifo_queue_levels_increase_and_each_frame_is_dequeued_after_the_whole_schedule(pipe, partitions, lookahead):
    queue_length = N * partitions
    records = []
    total = queue_length + 3
    sample(pipe, "fifo", total, long_video_options=dict(
        partitions=partitions, lookahead=lookahead, on_iteration=lambda i, levels, frame: records.append(
            (i, levels.clone(), frame))))
    assert [i for i, _, _ in records] == list(range(total + queue_length - N))  # the first L − N are discarded
    for _, levels, _ in records:
        assert levels.shape == (queue_length,) and (levels.diff() > 0).all()
    pipe.scheduler.set_timesteps(queue_length)
    assert records[0][1].tolist() == sorted(pipe.scheduler.timesteps.tolist())
    dequeued = {frame: i for i, _, frame in records}
    assert list(dequeued) == list(range(len(records)))  # first in, first out
    for frame in range(queue_length, len(records)):  # enqueued at the tail after iteration frame − L
        assert dequeued[frame] - (frame - queue_length) == queue_length


def test_fifo_update_windows_touch_every_queue_frame_once():
    for lookahead, context in ((False, 0), (True, 2)):  # lookahead: 2 context frames stand before the queue
        windows = fifo.update_windows(16, 4, lookahead)
        updated = [f for _, first, end in windows for f in range(first, end)]
        assert sorted(updated) == list(range(context, context + 16))
        assert all(end - start == 4 for start, _, end in windows) and windows[-1][2] == context + 16
    assert [first - start for start, first, _ in fifo.update_windows(16, 4, True)] == [2] * 8  # 2m windows, the latter half


def test_fifo_per_frame_ddim_step_matches_diffusers_step_at_one_time_step(pipe):
    generator = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 3, 2, 2, generator=generator), torch.randn(1, 4, 3, 2, 2, generator=generator)
    pipe.scheduler.set_timesteps(5)
    for k, t in enumerate(pipe.scheduler.timesteps):
        previous = pipe.scheduler.timesteps[k + 1] if k + 1 < 5 else torch.tensor(-1)
        ours = fifo.ddim_step_per_frame(pipe, x, eps, t.repeat(3), previous.repeat(3))
        torch.testing.assert_close(ours, pipe.scheduler.step(eps, t, x).prev_sample, rtol=1e-5, atol=1e-5)


def test_unet_per_frame_time_steps_equal_separate_calls_when_all_equal(pipe):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, N, 8, 8, generator=generator)
    text = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        scalar = pipe.unet(x, 500, encoder_hidden_states=text).sample
        per_frame = pipe.unet(x, torch.full((1, N), 500), encoder_hidden_states=text).sample
        mixed = pipe.unet(x, torch.tensor([[100, 500, 500, 500]]), encoder_hidden_states=text).sample
    torch.testing.assert_close(scalar, per_frame)
    assert not torch.allclose(mixed[:, :, 0], scalar[:, :, 0])


# ---------------------------------------------------------------- Gen-L-Video


def test_gen_l_video_one_window_is_the_plain_sampler(pipe):
    video = sample(pipe, "gen-l-video", N)
    plain = pipe(prompt="a red ball", height=SIZE, width=SIZE, num_frames=N, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="latent").frames
    torch.testing.assert_close(video, plain, rtol=0, atol=0)


def test_gen_l_video_bad_overlap_is_refused(pipe):
    with pytest.raises(ValueError, match="overlap"):
        sample(pipe, "gen-l-video", 8, long_video_options={"overlap": N})


@pytest.mark.parametrize("mode", ["freenoise", "fifo", "gen-l-video"])
def test_modes_that_step_per_window_or_frame_refuse_a_stateful_scheduler(mode):
    from types import SimpleNamespace

    from diffusers import EulerDiscreteScheduler

    from vidrd_model.long_video import long_video_chunks

    pipe = SimpleNamespace(scheduler=EulerDiscreteScheduler())
    with pytest.raises(ValueError, match="needs the DDIM scheduler"):
        long_video_chunks(mode, pipe, None, (1, 4, 4, 8, 8), 8, 2, 1.0, None)
