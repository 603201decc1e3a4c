"""The three parts of VidRD's iterative long-video sampling, as the released code runs them.

Each new clip reuses the previous one: Frame-level Noise Reversion (FNR) and Past-dependent Noise Sampling (PNS)
build its initial noise from the previous clip's, and Denoising with Staged Guidance (DSG) holds its first frames
on the previous clip's trajectory for the first denoising steps.

Notation: N frames per clip, M = overlap_frames, β = noise_recycle, g = denoise_guidance, T = denoising steps,
z⁽ᶜ⁾ᵢ[n] = clip c's latent of frame n at step i (i = 0 is pure noise). Latents are (b, c, f, h, w).
The release ties the overlap in reverse order: the new clip's frame n stands for the previous clip's frame N−1−n.
"""

import math

import torch


def frame_noise_reversion(previous_noise: torch.Tensor, overlap_frames: int) -> torch.Tensor:
    """Returns the new clip's first M initial noises: z⁽ᶜ⁺¹⁾₀[n] = z⁽ᶜ⁾₀[N−1−n] for n < M."""
    return previous_noise.flip(2)[:, :, :overlap_frames]


def past_dependent_noise_sampling(
    previous_noise: torch.Tensor, epsilon: torch.Tensor, noise_recycle: float, overlap_frames: int
) -> torch.Tensor:
    """Returns the new clip's other initial noises: z⁽ᶜ⁺¹⁾₀[n] = β/√(1+β²)·z⁽ᶜ⁾₀[N−1−n] + 1/√(1+β²)·ε[n] for n ≥ M.

    `epsilon` ~ N(0, I) has all N frames, as the release draws it; frames n < M are unused. β = 0 gives fresh noise.
    """
    recycled = previous_noise.flip(2)[:, :, overlap_frames:]
    fresh = epsilon[:, :, overlap_frames:] * (1 / math.sqrt(1 + noise_recycle**2))
    return noise_recycle / math.sqrt(1 + noise_recycle**2) * recycled + fresh


def staged_guidance(
    latents: torch.Tensor,
    previous_latents: torch.Tensor,
    step: int,
    num_steps: int,
    overlap_frames: int,
    denoise_guidance: float,
) -> torch.Tensor:
    """Returns the latents fed to step i: z⁽ᶜ⁺¹⁾ᵢ[n] ← z⁽ᶜ⁾ᵢ[N−1−n] for n < M while i < (M−n)·(T/M)·g.

    `previous_latents` is the previous clip's input to the U-Net at the same step.
    """
    held = [n for n in range(overlap_frames) if is_guided(step, n, num_steps, overlap_frames, denoise_guidance)]
    if not held:
        return latents
    latents = latents.clone()
    latents[:, :, held] = previous_latents.flip(2)[:, :, held]
    return latents


def is_guided(step: int, frame: int, num_steps: int, overlap_frames: int, denoise_guidance: float) -> bool:
    """Returns whether DSG holds overlapped frame n at step i: i < (M−n)·(T/M)·g, the release's expression."""
    return step < (overlap_frames - frame) * (num_steps / overlap_frames) * denoise_guidance


def staged_guidance_steps(num_steps: int, overlap_frames: int, denoise_guidance: float) -> list[int]:
    """Returns, for each overlapped frame n < M, the number of steps DSG holds it (T=50, M=4, g=0.4: 20, 15, 10, 5)."""
    return [
        sum(is_guided(i, n, num_steps, overlap_frames, denoise_guidance) for i in range(num_steps))
        for n in range(overlap_frames)
    ]


def guided_steps(num_steps: int, overlap_frames: int, denoise_guidance: float) -> int:
    """Returns how many leading steps DSG touches at all (those whose previous-clip latents must be kept)."""
    return max(staged_guidance_steps(num_steps, overlap_frames, denoise_guidance), default=0)
