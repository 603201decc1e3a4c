"""FIFO-Diffusion (Kim et al. 2024, "FIFO-Diffusion: Generating Infinite Videos from Text without Training").

Diagonal denoising: a queue Q of L = N·m frame latents where frame j (0 = head) sits at noise level τ_{j+1}, with
τ₁ < τ₂ < … < τ_L the DDIM schedule of n = L steps (so the queue holds one frame per noise level). One iteration
(the paper's Algorithm 1):
  1. for each of the m partitions Q[kN : (k+1)N] (latent partitioning, m = 1 without it), run the U-Net once on its
     N frames, each at its own time step, and take one DDIM step per frame, τ_{j+1} → τ_j (τ₀ = clean);
  2. dequeue the head, now clean, as the next output frame;
  3. enqueue fresh noise ~ N(0, I) at the tail, level τ_L.
Every frame enqueued at the tail is therefore dequeued exactly n iterations later, having taken the n steps of the
schedule; at most L latents are held, whatever the video's length.

Lookahead denoising (option, the paper's §"lookahead denoising"): N/2 frames already past the head (the last ones
dequeued, held at level τ₁) stand before the queue as context; windows start every N/2 frames of that extended
queue and each updates only its latter N/2 frames, so every frame is denoised with N/2 less noisy frames before it
in view; twice the U-Net calls.

Queue initialisation, as the official code (`prepare_fifo_latents`): the first clip x₀ of N frames is sampled with
ordinary DDIM and queue frame j is x₀[max(0, j − (L − N))] noised to its level,
Q[j] = √ᾱ·x₀[…] + √(1−ᾱ)·ε; the first L − N frames dequeued (copies of x₀[0]) are discarded, so the video starts
with the first clip's frames re-denoised on the diagonal. Lookahead's initial context: x₀[0] noised to τ₁.

The head's last step goes from τ₁ to clean (DDIM's final ᾱ); the official code leaves it at τ₁ (DDIM with
steps_offset: ᾱ_τ₁ ≈ 1). DDIM here is written per frame (eta = 0, ε-prediction), since diffusers' scheduler steps
one time step for all frames.
"""

from collections.abc import Callable

import torch

from .common import denoise, draw_noise, predict_noise


def queue_timesteps(pipe, queue_length: int, device) -> torch.Tensor:
    """Returns the queue's time steps (L,), head first: τ₁ < τ₂ < … < τ_L, the DDIM schedule of L steps reversed."""
    pipe.scheduler.set_timesteps(queue_length, device=device)
    return pipe.scheduler.timesteps.flip(0).clone()


def alpha_bar(pipe, timesteps: torch.Tensor) -> torch.Tensor:
    """Returns ᾱ at each time step; ᾱ of a step < 0 (past the last) is the scheduler's final ᾱ."""
    alphas = pipe.scheduler.alphas_cumprod.to(timesteps.device)
    final = torch.as_tensor(pipe.scheduler.final_alpha_cumprod, dtype=alphas.dtype, device=timesteps.device)
    return torch.where(timesteps >= 0, alphas[timesteps.clamp(min=0)], final)


def ddim_step_per_frame(pipe, latents: torch.Tensor, noise_pred: torch.Tensor, timesteps: torch.Tensor,
                        previous_timesteps: torch.Tensor) -> torch.Tensor:
    """Returns DDIM's (eta = 0) x_{τ'} from x_τ and ε̂, frame f going from `timesteps[f]` to `previous_timesteps[f]`:
    x₀ = (x_τ − √(1−ᾱ_τ)·ε̂)/√ᾱ_τ, x_{τ'} = √ᾱ_{τ'}·x₀ + √(1−ᾱ_{τ'})·ε̂ (DDIM, Song et al. 2021, Eq. 12)."""
    shape = (1, 1, -1, 1, 1)
    now = alpha_bar(pipe, timesteps).to(latents.dtype).view(shape)
    before = alpha_bar(pipe, previous_timesteps).to(latents.dtype).view(shape)
    clean = (latents - (1 - now).sqrt() * noise_pred) / now.sqrt()
    return before.sqrt() * clean + (1 - before).sqrt() * noise_pred


def update_windows(queue_length: int, window: int, lookahead: bool) -> list[tuple[int, int, int]]:
    """Returns (window start, first updated frame, end) per U-Net call of one iteration, in the coordinates of the
    queue (lookahead: of the N/2 context frames followed by the queue); every queue frame is updated exactly once.
    Partitions: [kN, (k+1)N) all updated; lookahead: windows every N/2, the latter half updated."""
    if not lookahead:
        return [(start, start, start + window) for start in range(0, queue_length, window)]
    half = window // 2
    return [(start, start + half, start + window) for start in range(0, queue_length + half - window + 1, half)]


def sample(pipe, text_embeds, clip_shape, num_frames_total: int, num_inference_steps: int, guidance_scale: float,
           generator, partitions: int | None = None, lookahead: bool = False,
           on_iteration: Callable[[int, torch.Tensor, int], None] | None = None):
    """Yields the dequeued frames' latents N at a time, `num_frames_total` in all.

    `partitions` m: the queue holds N·m frames and the schedule has n = N·m steps (default: the m for which N·m is
    nearest `num_inference_steps`, at least 1). `lookahead`: lookahead denoising (needs an even N). `on_iteration`:
    `fn(iteration, queue time steps (L,), id of the frame dequeued)` (ids: 0… for the initial queue, then in
    enqueue order), for tests and inspection.
    """
    window = clip_shape[2]
    partitions = partitions or max(1, round(num_inference_steps / window))
    if partitions < 1:
        raise ValueError(f"FIFO `partitions` must be ≥ 1, got {partitions}")
    if lookahead and (window % 2 or window < 2):
        raise ValueError(f"FIFO lookahead needs an even number of frames per clip, got {window}")
    queue_length = window * partitions
    device, dtype = text_embeds.device, text_embeds.dtype

    half = window // 2 if lookahead else 0
    first_clip = denoise(pipe, draw_noise(pipe, clip_shape, generator, device, dtype), text_embeds, queue_length,
                         guidance_scale)
    levels = queue_timesteps(pipe, queue_length, device)
    previous_levels = torch.cat([levels.new_tensor([-1]), levels[:-1]])  # τ_{j+1} → τ_j, the head to clean
    clean = first_clip[:, :, (torch.arange(queue_length, device=device) - (queue_length - window)).clamp(min=0)]
    noise = draw_noise(pipe, (*clip_shape[:2], queue_length + half, *clip_shape[3:]), generator, device, dtype)
    extended_levels = torch.cat([levels[:1].repeat(half), levels])  # the lookahead context sits at τ₁
    now = alpha_bar(pipe, extended_levels).to(dtype).view(1, 1, -1, 1, 1)
    queue = now.sqrt() * torch.cat([first_clip[:, :, :1].repeat(1, 1, half, 1, 1), clean], dim=2) + \
        (1 - now).sqrt() * noise
    ids = list(range(queue_length))
    next_id = queue_length
    discarded = queue_length - window

    out = []
    for iteration in range(num_frames_total + discarded):
        updated = queue.clone()
        for start, first, end in update_windows(queue_length, window, lookahead):
            steps = extended_levels[start:end][None].expand(queue.shape[0], -1)
            noise_pred = predict_noise(pipe, queue[:, :, start:end], steps, text_embeds, guidance_scale)
            head = half + queue_length  # no step for the context frames (index < half)
            stepped = ddim_step_per_frame(pipe, queue[:, :, first:end], noise_pred[:, :, first - start:],
                                          extended_levels[first:end], previous_levels[first - half:min(end, head)
                                                                                      - half])
            updated[:, :, first:end] = stepped
        if on_iteration is not None:
            on_iteration(iteration, levels, ids[0])
        if iteration >= discarded:
            out.append(updated[:, :, half:half + 1])  # the head, now clean
        fresh = draw_noise(pipe, (*clip_shape[:2], 1, *clip_shape[3:]), generator, device, dtype)
        # the head at τ₁ (before its last step) joins the lookahead context
        queue = torch.cat([queue[:, :, 1:half + 1], updated[:, :, half + 1:], fresh], dim=2) if half else \
            torch.cat([updated[:, :, 1:], fresh], dim=2)
        ids = ids[1:] + [next_id]
        next_id += 1
        if len(out) == window or (out and iteration == num_frames_total + discarded - 1):
            yield torch.cat(out, dim=2)
            out = []
