"""What every long-video sampler shares: classifier-free-guided noise prediction, fresh noise, a plain DDIM clip.

Written here rather than reused from VidRDPipeline.denoise_clip, which interleaves VidRD's staged guidance with the
DDIM loop; these samplers need the guided prediction alone, on windows and with one time step per frame.
"""

import torch


def predict_noise(pipe, latents: torch.Tensor, timestep, text_embeds: torch.Tensor,
                  guidance_scale: float) -> torch.Tensor:
    """Returns the guided noise prediction for `latents` (b, c, f, h, w); `timestep` is a number or (b, f) per frame.

    `text_embeds` is [uncond, text] when `guidance_scale` > 1, as VidRDPipeline builds it.
    """
    guided = guidance_scale > 1
    model_input = torch.cat([latents] * 2) if guided else latents
    if torch.is_tensor(timestep) and timestep.ndim == 2 and guided:
        timestep = torch.cat([timestep] * 2)
    model_input = pipe.scheduler.scale_model_input(model_input, timestep)
    noise = pipe.predict_noise(model_input, timestep, text_embeds)
    if not guided:
        return noise
    noise_uncond, noise_text = noise.chunk(2)
    return noise_uncond + guidance_scale * (noise_text - noise_uncond)


def draw_noise(pipe, shape: tuple[int, ...], generator, device, dtype) -> torch.Tensor:
    """Returns fresh initial noise (b, c, f, h, w), drawn one frame at a time as VidRD's first clip draws it."""
    return pipe.prepare_latents(shape, device, dtype, generator)


def denoise(pipe, latents: torch.Tensor, text_embeds: torch.Tensor, num_inference_steps: int,
            guidance_scale: float) -> torch.Tensor:
    """Returns `latents` denoised by DDIM over `num_inference_steps` steps, all frames at one time step."""
    pipe.scheduler.set_timesteps(num_inference_steps, device=latents.device)
    for t in pipe.scheduler.timesteps:
        noise = predict_noise(pipe, latents, t, text_embeds, guidance_scale)
        latents = pipe.scheduler.step(noise, t, latents).prev_sample
    return latents


def window_starts(num_frames_total: int, window: int, stride: int) -> list[int]:
    """Returns the first frame of each `window`-frame window, `stride` apart, the last one ending at the last frame.

    As diffusers' FreeNoise (`FreeNoiseTransformerBlock._get_frame_indices` plus its out-of-bounds window).
    """
    if num_frames_total < window:
        raise ValueError(f"`num_frames_total` ({num_frames_total}) must be ≥ the window of {window} frames")
    if stride < 1:
        raise ValueError(f"the window stride must be ≥ 1, got {stride}")
    starts = list(range(0, num_frames_total - window + 1, stride))
    if starts[-1] + window < num_frames_total:
        starts.append(num_frames_total - window)
    return starts


def chunks_of(latents: torch.Tensor, size: int):
    """Yields `latents` (b, c, f, h, w) in pieces of `size` frames along time (the last one may be shorter)."""
    for start in range(0, latents.shape[2], size):
        yield latents[:, :, start:start + size]
