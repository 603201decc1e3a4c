"""Independent clips: the naive baseline. Each clip of N frames is sampled from its own fresh noise, nothing shared.

ceil(F / N) clips are drawn one after another (noise of clip k drawn after clip k−1 is denoised), the last cut to F.
"""

import math

from .common import denoise, draw_noise


def sample(pipe, text_embeds, clip_shape, num_frames_total: int, num_inference_steps: int, guidance_scale: float,
           generator):
    """Yields the latents of each independent clip (b, c, ≤N, h, w), `num_frames_total` frames in all."""
    num_frames = clip_shape[2]
    for clip in range(math.ceil(num_frames_total / num_frames)):
        noise = draw_noise(pipe, clip_shape, generator, text_embeds.device, text_embeds.dtype)
        latents = denoise(pipe, noise, text_embeds, num_inference_steps, guidance_scale)
        yield latents[:, :, :num_frames_total - clip * num_frames]
