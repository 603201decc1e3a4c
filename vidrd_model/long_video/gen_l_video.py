"""Gen-L-Video (Wang et al. 2023, "Gen-L-Video: Multi-Text to Long Video Generation via Temporal Co-Denoising").

The long video v of F frames is seen as overlapping short clips vᵢ = v[sᵢ : sᵢ + N] (stride N − M, the last clip
ending at the last frame). Every frame starts from its own fresh noise. At each step every clip takes one ordinary
denoising step on its own, vᵢ,ₜ₋₁ = Φ(vᵢ,ₜ), and the long video's next latent is the paper's temporal co-denoising
solution (its least-squares objective over all clips, solved in closed form):

    v_{t−1} = Σᵢ Fᵢ⁻¹(Wᵢ ⊙ vᵢ,ₜ₋₁) / Σᵢ Fᵢ⁻¹(Wᵢ)

with Fᵢ⁻¹ placing clip i back at its frames and Wᵢ its weights: uniform here (our choice; every clip counts
the same for the frames it holds). Unlike FreeNoise the noise is not rescheduled and the averaged quantity is the
clip's next latent v_{t−1}; with deterministic DDIM the step is affine in ε̂ per frame, so the two averages coincide
for equal weights.

Memory: each U-Net call sees N frames; the F frames' latents are held (4·h/8·w/8 values per frame).
"""

import torch

from .common import chunks_of, draw_noise, predict_noise, window_starts


def sample(pipe, text_embeds, clip_shape, num_frames_total: int, num_inference_steps: int, guidance_scale: float,
           generator, overlap: int | None = None):
    """Yields the video's latents N frames at a time after co-denoising all F frames.

    `overlap` M: frames shared by neighbouring clips (default N/2, the paper's half-overlapping clips).
    """
    window = clip_shape[2]
    overlap = window // 2 if overlap is None else overlap
    if not 0 <= overlap < window:
        raise ValueError(f"the Gen-L-Video overlap must be in [0, {window}), got {overlap}")
    starts = window_starts(num_frames_total, window, window - overlap)
    shape = (*clip_shape[:2], num_frames_total, *clip_shape[3:])
    latents = draw_noise(pipe, shape, generator, text_embeds.device, text_embeds.dtype)
    counts = torch.zeros(num_frames_total, device=latents.device, dtype=latents.dtype)
    for start in starts:
        counts[start:start + window] += 1  # Σᵢ Fᵢ⁻¹(Wᵢ), Wᵢ = 1
    pipe.scheduler.set_timesteps(num_inference_steps, device=latents.device)
    for t in pipe.scheduler.timesteps:
        summed = torch.zeros_like(latents)
        for start in starts:
            clip = latents[:, :, start:start + window]
            noise_pred = predict_noise(pipe, clip, t, text_embeds, guidance_scale)
            summed[:, :, start:start + window] += pipe.scheduler.step(noise_pred, t, clip).prev_sample
        latents = summed / counts[:, None, None]
    yield from chunks_of(latents, window)
