"""FreeNoise (Qiu et al. 2023, "FreeNoise: Tuning-Free Longer Video Diffusion via Noise Rescheduling").

Two parts, as the paper and diffusers' AnimateDiff implementation (`pipelines/free_noise_utils.py`,
`models/attention.py: FreeNoiseTransformerBlock`) run them:

1. Noise rescheduling: only the first N frames get fresh noise ε₁…ε_N; every later group of S frames
   [N + kS, N + (k+1)S) takes the noise of frames [kS, kS + S) in a random order (local shuffle), so the whole video
   reuses N noises and stays correlated over long ranges (diffusers: `_prepare_latents_for_free_noise`,
   noise_type="shuffle_context").
2. Window-based fusion: at each step the model runs on N-frame windows, S frames apart (the last window ending at the
   last frame), and each frame's result is the weighted mean of its windows' results, with the paper's weights
   that favour a window's middle frames (diffusers: "pyramid", the weighting it cites as FreeNoise's Eq. 9; "flat"
   is plain averaging).

Deviation, chosen on purpose: the paper fuses the temporal attention's outputs inside the U-Net and runs the U-Net's
other layers on the whole video. VideoUNet's group norms pool over all frames of their input and its temporal convs
see the input's borders, so running it on F frames would change every layer's statistics from what it was trained
on; we fuse the N-frame windows' noise predictions ε̂ with the same weights instead. Each U-Net call then sees N
frames, so its memory does not grow with F (the F frames' latents, 4·h/8·w/8 values each, do).
"""

import torch

from .common import chunks_of, draw_noise, predict_noise, window_starts

WEIGHTINGS = ("pyramid", "flat")


def window_weights(window: int, weighting: str) -> list[float]:
    """Returns the fusion weight of each frame of a window: "pyramid" 1, 2, …, N/2, N/2, …, 2, 1 (odd N: a single
    middle peak), as diffusers' `_get_frame_weights`; "flat" all ones."""
    if weighting == "flat":
        return [1.0] * window
    if weighting != "pyramid":
        raise ValueError(f"the FreeNoise weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    rising = [float(w) for w in range(1, window // 2 + 1)]
    return rising + ([float(window // 2 + 1)] if window % 2 else []) + rising[::-1]


def fusion_weights(num_frames_total: int, window: int, stride: int, weighting: str) -> tuple[list[int], torch.Tensor]:
    """Returns the windows' first frames and their normalised fusion weights (windows, F): for every frame, the
    weights of the windows that contain it sum to one, and are zero outside."""
    starts = window_starts(num_frames_total, window, stride)
    weights = torch.zeros(len(starts), num_frames_total, dtype=torch.float64)
    per_frame = torch.tensor(window_weights(window, weighting), dtype=torch.float64)
    for row, start in enumerate(starts):
        weights[row, start:start + window] = per_frame
    return starts, weights / weights.sum(dim=0, keepdim=True)


def reschedule_noise(noise: torch.Tensor, num_frames_total: int, stride: int, generator) -> torch.Tensor:
    """Returns F frames of initial noise (b, c, F, h, w) from the first N frames' `noise`: frames [i, i+S) for
    i = N, N+S, … are frames [i−N, i−N+S) shuffled (a prefix of the shuffle where fewer than S frames are left)."""
    window = noise.shape[2]
    latents = noise.new_empty((*noise.shape[:2], num_frames_total, *noise.shape[3:]))
    latents[:, :, :window] = noise[:, :, :num_frames_total]
    for i in range(window, num_frames_total, stride):
        start = i - window
        order = torch.randperm(stride, generator=generator, device=generator.device if generator else "cpu")
        length = min(stride, num_frames_total - i)
        latents[:, :, i:i + length] = latents[:, :, start + order[:length].to(latents.device)]
    return latents


def sample(pipe, text_embeds, clip_shape, num_frames_total: int, num_inference_steps: int, guidance_scale: float,
           generator, stride: int = 4, weighting: str = "pyramid"):
    """Yields the video's latents N frames at a time after denoising all F frames with window fusion.

    `stride` S and `weighting`: diffusers' defaults (4, "pyramid").
    """
    window = clip_shape[2]
    starts, weights = fusion_weights(num_frames_total, window, stride, weighting)
    if stride > window:
        raise ValueError(f"the FreeNoise stride ({stride}) must be ≤ the window of {window} frames")
    noise = draw_noise(pipe, clip_shape, generator, text_embeds.device, text_embeds.dtype)
    latents = reschedule_noise(noise, num_frames_total, stride, generator)
    weights = weights.to(device=latents.device, dtype=latents.dtype)
    pipe.scheduler.set_timesteps(num_inference_steps, device=latents.device)
    for t in pipe.scheduler.timesteps:
        fused = torch.zeros_like(latents)
        for row, start in enumerate(starts):
            noise_pred = predict_noise(pipe, latents[:, :, start:start + window], t, text_embeds, guidance_scale)
            fused[:, :, start:start + window] += weights[row, start:start + window, None, None] * noise_pred
        latents = pipe.scheduler.step(fused, t, latents).prev_sample
    yield from chunks_of(latents, window)
