"""VidRDPipeline: text → long video, one clip after another, reusing each clip for the next (FNR, PNS, DSG).

Every clip is N frames denoised by the video U-Net with DDIM and classifier-free guidance. Clip 0 starts from fresh
noise; each later clip starts from the previous clip's noise (Frame-level Noise Reversion for its first M frames,
Past-dependent Noise Sampling for the rest) and holds its first M frames on the previous clip's trajectory for the
first denoising steps (Denoising with Staged Guidance); see sampling.py. Random draws, their order and the reversed
overlap are the release's: with its weights and a seed, this gives its latents, and with `decode_per_frame=True` its
video (../shared/specs/golden/README.md, section 3).

Each clip is decoded as soon as it is denoised and handed to `callback_on_clip_end`, so memory does not grow with the
number of clips. How the clips join (`overlap`):
- "keep" (default, the release): all N frames of every clip, K·N frames. A later clip's first M frames replay the
  previous clip's last M in reverse, so the motion turns back at each seam for M frames, without a jump.
- "drop": a later clip's first M frames are dropped, N + (K−1)(N−M) frames, none repeated; but the frame after each
  seam continues from the previous clip's frame N−M, so the video jumps back M frames in time there.
"""

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from einops import rearrange

from .checkpoints import load_release_checkpoint, unet_config_from_2d
from .long_video import MODES as LONG_VIDEO_MODES
from .long_video import long_video_chunks
from .sampling import frame_noise_reversion, guided_steps, past_dependent_noise_sampling, staged_guidance
from .unet import VideoUNet
from .vae import TemporalAutoencoderKL

log = logging.getLogger(__name__)

OVERLAP_MODES = ("keep", "drop")
RELEASE_RESOLUTION = 256  # the released model was trained and sampled at 256x256 (configs/example.yaml)
OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class VidRDPipelineOutput(BaseOutput):
    """`frames`: the video, (b, f, h, w, 3) for "np", (b, f, 3, h, w) for "pt", lists of PIL images for "pil",
    latents (b, c, f, h/8, w/8) for "latent"; None when the clips went to `callback_on_clip_end` instead."""

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]] | None


def check_sampling_args(
    num_frames: int,
    num_clips: int,
    num_inference_steps: int,
    overlap_frames: int,
    noise_recycle: float,
    denoise_guidance: float,
    overlap: str,
) -> None:
    """Raises ValueError naming the first argument of a long-video call that is out of range."""
    if num_frames < 1 or num_clips < 1 or num_inference_steps < 1:
        raise ValueError(
            f"`num_frames`, `num_clips` and `num_inference_steps` must be ≥ 1, got {num_frames}, {num_clips}, "
            f"{num_inference_steps}"
        )
    if overlap not in OVERLAP_MODES:
        raise ValueError(f"`overlap` must be one of {OVERLAP_MODES}, got {overlap!r}")
    if num_clips > 1 and not 0 <= overlap_frames < num_frames:
        raise ValueError(f"`overlap_frames` must be in [0, num_frames) = [0, {num_frames}), got {overlap_frames}")
    if noise_recycle < 0:
        raise ValueError(f"`noise_recycle` must be ≥ 0, got {noise_recycle}")
    if not 0 <= denoise_guidance <= 1:
        raise ValueError(f"`denoise_guidance` must be in [0, 1], got {denoise_guidance}")


class VidRDPipeline(DiffusionPipeline):
    """Text-to-video with VidRD: the video U-Net reused clip after clip for long, consistent videos.

    Components: `text_encoder` (CLIPTextModel), `tokenizer` (CLIPTokenizer), `unet` (VideoUNet), `vae`
    (TemporalAutoencoderKL), `scheduler` (DDIMScheduler). The text encoder and tokenizer are optional when
    `prompt_embeds` are passed.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents"]

    def __init__(self, text_encoder, tokenizer, unet: VideoUNet, vae: TemporalAutoencoderKL, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, vae=vae, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.video_processor = VideoProcessor(do_resize=False, vae_scale_factor=self.vae_scale_factor)
        self._clip_index = 0

    @property
    def clip_index(self) -> int:
        """The clip being denoised (for `callback_on_step_end`)."""
        return self._clip_index

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, torch_dtype: torch.dtype | None = None,
                        device_map: str | torch.device | None = None, load_lora: bool = True,
                        **kwargs) -> "VidRDPipeline":
        """Returns the pipeline `save_pretrained` wrote (a folder, or a Hub id in the local cache), in eval mode.

        Takes diffusers' usual keywords: `torch_dtype` casts the U-Net and text encoder (the VAE stays as saved, as
        its `force_upcast` expects); `variant` and `use_safetensors` choose the weight files; `local_files_only`,
        `cache_dir`, `revision`, `token`, `force_download` and `proxies` go to every component's loader;
        `device_map` places the whole pipeline on one device ("cpu", "cuda", "cuda:1"; a strategy that splits it
        across devices, such as "balanced", is refused: the U-Net of one clip runs on one device). Keywords named
        after a component (`unet=...`) replace the loaded one; any other keyword is refused by name. A folder
        holding `lora/pytorch_lora_weights.safetensors` (`vidrd-train --lora-rank`) gets those adapters loaded into
        its U-Net unless `load_lora=False`: the folder's U-Net alone is the model before fine-tuning.
        Written out rather than inherited: diffusers resolves a component's loader by looking its base classes up in
        the component's module, which `vidrd_model.vae` does not re-export.
        """
        hub = {key: kwargs.pop(key) for key in HUB_KEYWORDS if key in kwargs}
        weights = {key: kwargs.pop(key) for key in WEIGHT_KEYWORDS if key in kwargs}
        unknown = sorted(set(kwargs) - set(COMPONENTS))
        if unknown:
            raise TypeError(f"VidRDPipeline.from_pretrained got unexpected keyword(s) {', '.join(unknown)} "
                            f"(it takes torch_dtype, device_map, {', '.join(HUB_KEYWORDS + WEIGHT_KEYWORDS)} and "
                            f"components: {', '.join(COMPONENTS)})")
        if device_map is not None and not (isinstance(device_map, torch.device) or (
                isinstance(device_map, str) and device_map.split(":")[0] in ("cpu", "cuda", "mps", "xpu"))):
            raise ValueError(f"device_map {device_map!r}: only one device is supported (e.g. 'cuda'), not a "
                             "strategy that splits the pipeline")
        components = dict(kwargs)
        index = cls.load_config(pretrained_model_name_or_path, **hub)
        for name in COMPONENTS:
            library, class_name = index.get(name) or (None, None)
            if name in components or class_name is None:
                components.setdefault(name, None)
                continue
            component_class = _component_class(library, class_name)
            extra = {} if name in ("tokenizer", "scheduler") else weights  # they have no weight files
            components[name] = component_class.from_pretrained(pretrained_model_name_or_path, subfolder=name,
                                                               **hub, **extra)
            if torch_dtype is not None and name in ("text_encoder", "unet"):
                components[name].to(dtype=torch_dtype)
        pipe = cls(**components)
        lora = Path(pretrained_model_name_or_path) / LORA_WEIGHTS
        if load_lora and "unet" not in kwargs and lora.is_file():  # a `vidrd-train --lora-rank` model folder
            log.info("loading the LoRA adapters of %s", lora)
            pipe.load_lora(lora)
        return pipe.to(device_map) if device_map is not None else pipe

    @classmethod
    def from_stable_diffusion(cls, base: str, **temporal_config) -> "VidRDPipeline":
        """Returns the pipeline on an SD 1.x / 2.x folder or Hub id, temporal layers at their initial values.

        A starting point for training, or a smoke test: untrained temporal layers add no learnt motion.
        Modules come back in eval mode (the temporal convs hold Dropout), as diffusers' `from_pretrained` returns them.
        """
        from transformers import CLIPTextModel, CLIPTokenizer

        return cls(
            text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
            tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
            unet=VideoUNet.from_pretrained_2d(base, **temporal_config).eval(),
            vae=TemporalAutoencoderKL.from_pretrained_2d(base, subfolder="vae").eval(),
            scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),
        )

    @classmethod
    def from_release(cls, base: str, vidrd_ckpt: str, vae: str | None = None) -> "VidRDPipeline":
        """Returns the pipeline with the released files: `ModelT2V.pth` (U-Net and text encoder) over its SD 2.1-base
        folder or Hub id `base`, and the released `vae_finetuned` folder `vae` (default: `base`'s plain SD VAE).

        The default frame size becomes the release's 256² (SD 2.1-base's config says 512²).
        """
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        config = unet_config_from_2d(UNet2DConditionModel.load_config(base, subfolder="unet"),
                                     sample_size=RELEASE_RESOLUTION // 8)
        with torch.device("meta"):  # the checkpoint's tensors are assigned, so the U-Net is never allocated twice
            unet = VideoUNet(**config)
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        load_release_checkpoint(vidrd_ckpt, unet, text_encoder, assign=True)
        return cls(
            text_encoder=text_encoder,
            tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
            unet=unet.eval(),
            vae=(TemporalAutoencoderKL.from_pretrained_2d(vae) if vae else
                 TemporalAutoencoderKL.from_pretrained_2d(base, subfolder="vae")).eval(),
            scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),
        )

    def load_lora(self, path: str | os.PathLike, adapter_name: str = "default", scale: float = 1.0
                  ) -> "VidRDPipeline":
        """Returns the pipeline with the LoRA adapters of `path` (a folder holding `pytorch_lora_weights.safetensors`,
        as `vidrd-train --lora-rank` and diffusers write it, or that file) loaded into its U-Net at `scale`."""
        path = Path(path)
        folder, weight_name = (path.parent, path.name) if path.is_file() else (path, "pytorch_lora_weights.safetensors")
        self.unet.load_lora_adapter(str(folder), weight_name=weight_name, prefix=None, adapter_name=adapter_name)
        self.unet.set_adapters([adapter_name], weights=[scale])
        return self

    def compile_unet(self, mode: str | None = None, fullgraph: bool = False, backend: str = "inductor"
                     ) -> "VidRDPipeline":
        """Returns the pipeline with its U-Net compiled in place by `torch.compile` (`nn.Module.compile`: the module,
        its parameter names and `save_pretrained` stay the same). The first call of each shape compiles (minutes for
        the full model); later calls run the compiled graph. `mode`: torch.compile's ("reduce-overhead" and
        "max-autotune" add CUDA graphs, which pay off in the sampler's fixed-shape loop)."""
        self.unet.compile(mode=mode, fullgraph=fullgraph, backend=backend)
        return self

    def enable_cuda_graphs(self) -> "VidRDPipeline":
        """Returns the pipeline with its eager U-Net replayed from CUDA graphs: torch.compile's `cudagraphs` backend
        (a TorchDynamo trace and a capture, without inductor's kernel generation). Each input shape is captured once;
        later calls of the sampler's loop replay the whole forward as one launch instead of one launch per kernel.
        Outputs equal the eager U-Net's within float tolerance (the trace skips eager's fused SiLU). On a CPU device
        torch skips the graphs and runs the traced forward."""
        return self.compile_unet(backend="cudagraphs")

    def predict_noise(self, model_input: torch.Tensor, timestep, text_embeds: torch.Tensor) -> torch.Tensor:
        """Returns the U-Net's noise prediction for `model_input` (the one place the samplers call the U-Net).

        When the U-Net is compiled (by `compile_unet`, `enable_cuda_graphs` or the trainer), each call starts a new
        CUDA-graph step and returns a copy: under CUDA graphs (`cudagraphs`, `reduce-overhead`, `max-autotune`) a
        replay overwrites the previous call's output buffers, and FreeNoise and Gen-L-Video keep several windows'
        predictions at once. Elsewhere both are cheap no-ops.
        """
        noise = self.unet(model_input, timestep, encoder_hidden_states=text_embeds).sample
        if getattr(self.unet, "_compiled_call_impl", None) is None:
            return noise
        noise = noise.clone()
        torch.compiler.cudagraph_mark_step_begin()  # the next call may reuse this call's graph buffers
        return noise

    # ------------------------------------------------------------------------------------------ pieces

    def encode_prompt(self, prompt: list[str], device: torch.device) -> torch.Tensor:
        """Returns the text encoder's last hidden states (b, 77, d) for `prompt`, as Stable Diffusion computes them."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError("this pipeline has no text encoder and tokenizer; pass `prompt_embeds` instead")
        tokens = self.tokenizer(
            prompt, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)  # SD's CLIP: no
        mask = tokens.attention_mask.to(device) if use_mask else None
        return self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]

    def prepare_latents(self, shape: tuple[int, ...], device, dtype, generator) -> torch.Tensor:
        """Returns clip 0's initial noise (b, c, f, h, w), drawn one frame at a time as the release does."""
        frame_shape = (*shape[:2], 1, *shape[3:])
        frames = [randn_tensor(frame_shape, generator=generator, device=device, dtype=dtype) for _ in range(shape[2])]
        return torch.cat(frames, dim=2) * self.scheduler.init_noise_sigma

    def next_clip_noise(self, previous_noise: torch.Tensor, noise_recycle: float, overlap_frames: int,
                        generator) -> torch.Tensor:
        """Returns a later clip's initial noise from the previous clip's: FNR for frames < M, PNS for the rest.

        The fresh noise is scaled by the scheduler's `init_noise_sigma`, as clip 0's is, so PNS mixes noises of one
        scale under any scheduler (Euler and DPM start at σ_max ≈ 14.6, not 1). With DDIM (σ = 1, the release's
        scheduler) this multiplies by 1.0: the output is bit-identical to the release's formula.
        """
        epsilon = randn_tensor(previous_noise.shape, generator=generator, device=previous_noise.device,
                               dtype=previous_noise.dtype) * self.scheduler.init_noise_sigma
        return torch.cat([
            frame_noise_reversion(previous_noise, overlap_frames),
            past_dependent_noise_sampling(previous_noise, epsilon, noise_recycle, overlap_frames),
        ], dim=2)

    def denoise_clip(
        self,
        latents: torch.Tensor,
        text_embeds: torch.Tensor,
        num_inference_steps: int,
        guidance_scale: float,
        previous_inputs: list[torch.Tensor] | None,
        overlap_frames: int,
        denoise_guidance: float,
        callback_on_step_end: Callable | None,
        progress_bar,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns a clip's denoised latents and its U-Net inputs at the steps the next clip's FNR/PNS/DSG read.

        With `previous_inputs` (the previous clip's), DSG holds the first frames before each U-Net call.
        """
        self.scheduler.set_timesteps(num_inference_steps, device=latents.device)  # also resets a stateful scheduler
        kept_steps = max(1, guided_steps(num_inference_steps, overlap_frames, denoise_guidance))
        do_classifier_free_guidance = guidance_scale > 1
        inputs = []
        for i, t in enumerate(self.scheduler.timesteps):
            if previous_inputs is not None and i < len(previous_inputs):
                latents = staged_guidance(latents, previous_inputs[i], i, num_inference_steps, overlap_frames,
                                          denoise_guidance)
            if i < kept_steps:
                inputs.append(latents)
            model_input = torch.cat([latents] * 2) if do_classifier_free_guidance else latents  # [uncond, text]
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = self.predict_noise(model_input, t, text_embeds)
            if do_classifier_free_guidance:
                noise_uncond, noise_text = noise_pred.chunk(2)
                noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
            latents = self.scheduler.step(noise_pred, t, latents).prev_sample
            if callback_on_step_end is not None:
                outputs = callback_on_step_end(self, i, t, {"latents": latents}) or {}
                latents = outputs.pop("latents", latents)
            progress_bar.update()
        return latents, inputs

    def decode_latents(self, latents: torch.Tensor, per_frame: bool = False,
                       decode_chunk_size: int | None = None) -> torch.Tensor:
        """Returns frames (b, 3, f, H, W) in [-1, 1]; the temporal VAE sees the clip's f frames (`per_frame`: one at a
        time, as the release decodes, whose temporal VAE layers therefore never run)."""
        num_frames = latents.shape[2]
        z = rearrange(latents / self.vae.config.scaling_factor, "b c f h w -> (b f) c h w")
        frames = self.vae.decode(z.to(self.vae.dtype), num_frames=1 if per_frame else num_frames,
                                 decode_chunk_size=decode_chunk_size).sample
        return rearrange(frames, "(b f) c h w -> b c f h w", f=num_frames)

    # ------------------------------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int = 8,
        num_clips: int = 1,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        overlap_frames: int = 4,
        noise_recycle: float = 4.0,
        denoise_guidance: float = 0.4,
        overlap: str = "keep",
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        decode_per_frame: bool = False,
        decode_chunk_size: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_clip_end: Callable[[int, object], None] | None = None,
        long_video: str = "vidrd",
        num_frames_total: int | None = None,
        long_video_options: dict | None = None,
    ) -> VidRDPipelineOutput | tuple:
        """Returns a video of `num_clips` clips of `num_frames` frames for `prompt`.

        Args:
            overlap_frames, noise_recycle, denoise_guidance: M, β and g of FNR / PNS / DSG (the release's 4, 4, 0.4).
            overlap: "keep" (K·N frames, the release) or "drop" (N + (K−1)(N−M) frames); see the module docstring.
            latents: clip 0's initial noise (b, c, N, h, w) instead of drawing it, used as given: scale it by
                `scheduler.init_noise_sigma` yourself (1 for DDIM; σ_max for Euler/DPM, as PNS scales later clips').
            decode_per_frame: decode frame by frame, reproducing the release (its temporal VAE layers never run).
            decode_chunk_size: decode at most this many frames of a clip at a time (bounds VAE memory).
            callback_on_step_end: `fn(pipe, step, timestep, {"latents": ...})` after each step of each clip
                (`pipe.clip_index` says which); it may return {"latents": ...} to replace them.
            callback_on_clip_end: `fn(clip_index, frames)` with each clip's frames (of `output_type`, overlap
                already dropped) as soon as it is decoded; the clips are then not kept and `frames` is None.
            long_video: the sampler, one of LONG_VIDEO_MODES: "vidrd" (FNR/PNS/DSG, the arguments above), or
                "independent", "freenoise", "fifo", "gen-l-video" (vidrd_model/long_video/), which make
                `num_frames_total` frames (default `num_clips`·`num_frames`) with windows of `num_frames` frames,
                take their own options from `long_video_options`, and hand out pieces of up to `num_frames` frames.
        """
        if long_video not in LONG_VIDEO_MODES:
            raise ValueError(f"`long_video` must be one of {LONG_VIDEO_MODES}, got {long_video!r}")
        if long_video != "vidrd" and latents is not None:
            raise ValueError("`latents` is for the vidrd sampler; the other samplers draw their own noise")
        check_sampling_args(num_frames, num_clips, num_inference_steps, overlap_frames, noise_recycle,
                            denoise_guidance, overlap)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of `prompt` and `prompt_embeds`")
        if decode_chunk_size is not None and decode_chunk_size < 1:
            raise ValueError(f"`decode_chunk_size` must be ≥ 1, got {decode_chunk_size}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"`generator` must be one torch.Generator, got {type(generator).__name__}")
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"`height` and `width` must be multiples of {self.vae_scale_factor}, got {height}x{width}")

        device = self._execution_device
        if prompt_embeds is None:
            prompt = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = self.encode_prompt(prompt, device)
        batch_size = prompt_embeds.shape[0]
        do_classifier_free_guidance = guidance_scale > 1
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative = negative_prompt or ""
            negative = [negative] * batch_size if isinstance(negative, str) else list(negative)
            if len(negative) != batch_size:
                raise ValueError(f"`negative_prompt` has {len(negative)} entries for {batch_size} prompts")
            negative_prompt_embeds = self.encode_prompt(negative, device)
        if do_classifier_free_guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])  # the U-Net batch is [uncond, text]
        text_embeds = prompt_embeds.to(device=device, dtype=self.unet.dtype)

        shape = (batch_size, self.unet.config.in_channels, num_frames,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}")

        clips = []
        if long_video != "vidrd":  # the other samplers, decoded and streamed piece by piece as VidRD's clips are
            pieces = long_video_chunks(long_video, self, text_embeds, shape, num_frames_total or num_clips * num_frames,
                                       num_inference_steps, guidance_scale, generator, **(long_video_options or {}))
            for clip, piece in enumerate(pieces):
                self._clip_index = clip
                frames = self._output_clip(piece, output_type, decode_per_frame, decode_chunk_size, first_frame=0)
                if callback_on_clip_end is not None:
                    callback_on_clip_end(clip, frames)
                else:
                    clips.append(frames)
            num_clips = 0  # VidRD's loop below has nothing left to do
        previous_inputs = None
        # before the first noise is drawn: a sigma-based scheduler's init_noise_sigma is that of these steps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        with self.progress_bar(total=num_clips * num_inference_steps) as progress_bar:
            for clip in range(num_clips):
                self._clip_index = clip
                if clip == 0:
                    noise = self.prepare_latents(shape, device, self.unet.dtype, generator) if latents is None else \
                        latents.to(device=device, dtype=self.unet.dtype)
                else:
                    noise = self.next_clip_noise(previous_inputs[0], noise_recycle, overlap_frames, generator)
                clip_latents, previous_inputs = self.denoise_clip(
                    noise, text_embeds, num_inference_steps, guidance_scale, previous_inputs, overlap_frames,
                    denoise_guidance, callback_on_step_end, progress_bar,
                )
                frames = self._output_clip(clip_latents, output_type, decode_per_frame, decode_chunk_size,
                                           first_frame=overlap_frames if clip > 0 and overlap == "drop" else 0)
                if callback_on_clip_end is not None:
                    callback_on_clip_end(clip, frames)
                else:
                    clips.append(frames)
        self.maybe_free_model_hooks()

        video = _concat_clips(clips, output_type) if clips else None
        if not return_dict:
            return (video,)
        return VidRDPipelineOutput(frames=video)

    def _output_clip(self, latents: torch.Tensor, output_type: str, per_frame: bool, decode_chunk_size: int | None,
                     first_frame: int):
        """Returns one clip's frames of `output_type` from `first_frame` on, decoding the whole clip."""
        if output_type == "latent":
            return latents[:, :, first_frame:]
        video = self.decode_latents(latents, per_frame, decode_chunk_size)[:, :, first_frame:]
        return self.video_processor.postprocess_video(video.float(), output_type=output_type)


COMPONENTS = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")
LORA_WEIGHTS = "lora/pytorch_lora_weights.safetensors"  # where vidrd-train --lora-rank writes a model's adapters
HUB_KEYWORDS = ("cache_dir", "force_download", "local_files_only", "revision", "token", "proxies")
WEIGHT_KEYWORDS = ("variant", "use_safetensors")


def _component_class(library: str, class_name: str) -> type:
    """Returns the class a model_index.json entry names: ours, or one of diffusers' or transformers'."""
    ours = {"VideoUNet": VideoUNet, "TemporalAutoencoderKL": TemporalAutoencoderKL}
    if library.startswith("vidrd_model.") and class_name in ours:
        return ours[class_name]
    if library in ("diffusers", "transformers") and hasattr(importlib.import_module(library), class_name):
        return getattr(importlib.import_module(library), class_name)
    raise ValueError(f"model_index.json names an unknown component [{library!r}, {class_name!r}]")


def _concat_clips(clips: list, output_type: str):
    """Returns the clips joined along time."""
    if output_type == "np":
        return np.concatenate(clips, axis=1)
    if output_type == "pt":
        return torch.cat(clips, dim=1)
    if output_type == "latent":
        return torch.cat(clips, dim=2)
    return [sum((clip[b] for clip in clips), []) for b in range(len(clips[0]))]
