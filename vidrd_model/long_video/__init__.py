"""Long-video samplers over the same VideoUNet, side by side with VidRD's own (FNR/PNS/DSG, in the pipeline).

Each module's `sample(pipe, text_embeds, clip_shape, num_frames_total, num_inference_steps, guidance_scale,
generator, **options)` yields the video's latents (b, c, ≤N, h, w) in temporal order, so VidRDPipeline decodes and
hands out each piece as it comes (`callback_on_clip_end`), as it does VidRD's clips.
"""

from diffusers import DDIMScheduler

from . import fifo, freenoise, gen_l_video, independent

SAMPLERS = {
    "independent": independent.sample,
    "freenoise": freenoise.sample,
    "fifo": fifo.sample,
    "gen-l-video": gen_l_video.sample,
}
MODES = ("vidrd", *SAMPLERS)


def long_video_chunks(mode: str, pipe, text_embeds, clip_shape, num_frames_total: int, num_inference_steps: int,
                      guidance_scale: float, generator, **options):
    """Returns the iterator of latent pieces of `mode`'s sampler (any mode but "vidrd", which the pipeline runs)."""
    if mode not in SAMPLERS:
        raise ValueError(f"`long_video` must be one of {MODES}, got {mode!r}")
    if num_frames_total < 1:
        raise ValueError(f"`num_frames_total` must be ≥ 1, got {num_frames_total}")
    if mode != "independent" and not isinstance(pipe.scheduler, DDIMScheduler):
        # FIFO steps each frame from its own time step with DDIM's formula; FreeNoise and Gen-L-Video step one
        # scheduler once per window and time step, which only a stateless scheduler allows
        raise ValueError(f"`long_video={mode!r}` needs the DDIM scheduler, got {type(pipe.scheduler).__name__}")
    return SAMPLERS[mode](pipe, text_embeds, clip_shape, num_frames_total, num_inference_steps, guidance_scale,
                          generator, **options)
