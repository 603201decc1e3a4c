"""Training VidRD's video U-Net on vidrd manifests: joint image–video batches, ε-prediction, on accelerate.

What trains: the U-Net's parameter group `train_mode` (the paper's: Temp-Conv, Temp-Attn, spatial self- and
cross-attention, see params.py); the text encoder and VAE stay frozen, in the compute dtype. One step: frames →
frozen VAE encoder → latents; noise at a random DDPM timestep (the base model's scheduler); the U-Net predicts the
noise (or v, if the base model is v-prediction); loss = MSE. Video batches (F frames) and image batches (F = 1)
alternate at `image_ratio`.

`train(config)` reads top to bottom: data, model, resume, then `fit`, the loop it shares with the VAE trainer
(train_vae.py). The run directory's layout is in run_dir.py. A checkpoint's `model/` is a `VidRDPipeline` folder,
so `vidrd-sample --model RUN/checkpoint-N/model` samples it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file

from . import run_dir as rd
from .data import IMAGE, VIDEO, BatchPlan, DataError, ManifestClips, collate, kind_pools, make_loader, read_rows, \
    validation_batches
from .latents import CachedLatents, LatentCache, fingerprint
from .params import freeze_for_training, trainable_parameters
from .train_config import (DATA_ORDER_KEYS, LR_SCHEDULES, UNET_VARIANTS, ConfigError, TrainConfig, check_train_config,
                           save_config)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the model


def load_pipeline(config: TrainConfig):
    """Returns a `VidRDPipeline` of the base model's parts, the U-Net to train (fp32), and the DDPM noise scheduler."""
    from diffusers import DDIMScheduler, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from .pipeline import VidRDPipeline
    from .unet import VideoUNet
    from .vae import TemporalAutoencoderKL

    base = config.pretrained_model
    unet = VideoUNet.from_pretrained(config.unet) if config.unet else \
        VideoUNet.from_pretrained_2d(base, **UNET_VARIANTS[config.unet_variant])
    vae = TemporalAutoencoderKL.from_pretrained_2d(config.vae) if config.vae else \
        TemporalAutoencoderKL.from_pretrained_2d(base, subfolder="vae")
    pipe = VidRDPipeline(
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
        unet=unet,
        vae=vae,
        scheduler=DDIMScheduler.from_pretrained(base, subfolder="scheduler"),  # the sampler's, saved with the model
    )
    unet.register_to_config(sample_size=config.resolution // pipe.vae_scale_factor)  # the sampler's default size
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    if noise_scheduler.config.prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError(f"unsupported prediction_type {noise_scheduler.config.prediction_type!r} in {base}")
    return pipe, unet.float(), noise_scheduler


def diffusion_loss(unet, pipe, noise_scheduler, batch: dict, device, dtype,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Returns the MSE between the U-Net's prediction and the noise (or v) added to the batch's latents.

    Training draws latents, noise and timesteps from the global RNG; validation passes a `generator` for fixed noise
    and timesteps, and takes the posterior's mean.
    """
    latents, text = encode_batch(pipe, batch, device, dtype, generator)
    draw_on = generator.device if generator is not None else device
    noise = torch.randn(latents.shape, generator=generator, device=draw_on).to(device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator, device=draw_on).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    if noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, encoder_hidden_states=text).sample
    return F.mse_loss(prediction.float(), target.float())


def encode_batch(pipe, batch: dict, device, dtype, generator: torch.Generator | None = None):
    """Returns the batch's scaled latents (b, c, f, h, w) in float32 and its text embeddings.

    Pixels go through the frozen VAE (a posterior sample; its mean with a `generator`) and captions through the text
    encoder; a latent-cache batch brings both (latents already sampled from the cached posterior).
    """
    scale = pipe.vae.config.scaling_factor
    if "latents" in batch:
        latents = batch["latents"].to(device, torch.float32, non_blocking=True) * scale
        return latents, batch["encoder_hidden_states"].to(device, dtype, non_blocking=True)
    pixels = batch["pixel_values"].to(device, dtype, non_blocking=True)  # (b, f, 3, H, W) in [-1, 1]
    num_frames = pixels.shape[1]
    with torch.no_grad():
        posterior = pipe.vae.encode(rearrange(pixels, "b f c h w -> (b f) c h w")).latent_dist
        latents = posterior.sample() if generator is None else posterior.mean
        latents = rearrange(latents.float() * scale, "(b f) c h w -> b c f h w", f=num_frames)
        text = pipe.encode_prompt(batch["captions"], device)
    return latents, text


# ---------------------------------------------------------------- data


def load_data(config: TrainConfig, num_processes: int, process_index: int):
    """Returns the training dataset and its `BatchPlan` (from step 0), and the validation dataset (or None)."""
    rows, left_out = read_rows(config.manifests, config.root, split=config.train_split,
                                allow_partial=config.allow_partial)
    if rows.num_rows == 0:
        raise DataError(f"no usable training rows in {', '.join(config.manifests)} ({dict(left_out)})")
    cache = None
    if config.latents:
        cache, rows, left_out = rows_from_cache(config, rows, left_out)
    pools = kind_pools(rows)
    image_ratio = config.image_ratio
    if image_ratio is None:
        image_ratio = len(pools[IMAGE].rows) / rows.num_rows if IMAGE in pools else 0.0
    plan = BatchPlan(pools, {VIDEO: config.batch_size, IMAGE: config.image_batch_size}, image_ratio, config.seed,
                     num_processes, process_index)
    if cache is not None:
        dataset = CachedLatents(rows, cache, config.uncond_prob, config.seed)
    else:
        dataset = ManifestClips(rows, config.resolution, config.num_frames, config.sample_fps, config.uncond_prob,
                                config.seed, train=True)
    counts = Counter(rows["kind"].to_pylist())
    log.info("training rows: %s; left out: %s; image batches: %.0f %%", dict(counts), dict(left_out), 100 * image_ratio)
    val_rows, _ = read_rows(config.manifests, config.root, split=config.val_split, allow_partial=config.allow_partial)
    validation = None
    if config.val_split != config.train_split and val_rows.num_rows:
        validation = ManifestClips(val_rows, config.resolution, config.num_frames, config.sample_fps, 0.0,
                                   config.seed, train=False)
    return dataset, plan, validation


def rows_from_cache(config: TrainConfig, rows, left_out: Counter):
    """Returns the latent cache, the rows it holds and the updated left-out counts; CacheError when it does not fit
    the config."""
    cache = LatentCache(config.latents)
    cache.check(fingerprint(config))
    rows, missing = cache.rows_in_cache(rows)
    if cache.failed:
        log.warning("%d rows failed to encode into the latent cache (see %s)", len(cache.failed),
                    Path(config.latents) / "report.json")
    if rows.num_rows == 0:
        raise DataError(f"the latent cache {config.latents} holds none of the training rows")
    return cache, rows, left_out + missing


def make_optimizer(config, params: list[torch.nn.Parameter]):
    """Returns AdamW over `params` and its warmup + constant/cosine learning-rate schedule (diffusers')."""
    from diffusers.optimization import get_scheduler

    # CUDA: torch's fused AdamW, one kernel pass over all parameters instead of foreach's several (the step is
    # launch-bound at small batches). Elsewhere torch's default implementation, unchanged.
    fused = bool(params) and all(param.device.type == "cuda" for param in params)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon,
                                  fused=True if fused else None)
    lr_scheduler = get_scheduler(LR_SCHEDULES[config.lr_schedule], optimizer,
                                 num_warmup_steps=config.lr_warmup_steps, num_training_steps=config.max_steps)
    return optimizer, lr_scheduler


def check_data_order(checkpoint: Path | None, order: dict) -> None:
    """Raises ConfigError when the checkpoint to resume was trained in another data order than this run's."""
    if checkpoint is None:
        return
    trainer_state = json.loads((checkpoint / "state" / "trainer.json").read_text())
    changed = sorted(k for k in order if trainer_state["data_order"].get(k) != order[k])
    if changed:
        raise ConfigError(f"{checkpoint} was trained with other {', '.join(changed)}: resuming would not continue "
                          "its data order")


def start_run(config) -> tuple:
    """Returns a run's accelerator, compute dtype, run directory, checkpoint to resume (None: a fresh run) and data
    order, after checking that the checkpoint was trained in this data order (ConfigError otherwise)."""
    accelerator, dtype = make_accelerator(config)
    run = Path(config.output_dir)
    checkpoint = rd.resolve_resume(config.resume, run)
    order = data_order(config, accelerator.num_processes)
    check_data_order(checkpoint, order)
    return accelerator, dtype, run, checkpoint, order


def data_order(config, num_processes: int) -> dict:
    """Returns what fixes the data order: a checkpoint's must equal the run resuming it."""
    order = {k: getattr(config, k) for k in DATA_ORDER_KEYS if hasattr(config, k)}
    order["manifests"] = [os.path.abspath(m) for m in config.manifests]
    return {**order, "num_processes": num_processes}


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(accelerator, run: Path, step: int, trainable: dict, optimizer, lr_scheduler, ema,
                    trainer_state: dict, limit: int | None, write_model: Callable[[Path], None],
                    scaler=None) -> Path:
    """Writes `run/checkpoint-{step}`: `model/` (by `write_model`) for the sampler, `state/` for resuming.

    `scaler`: the fp16 run's GradScaler (accelerator.scaler), whose loss scale and growth tracker go to trainer.json.
    """
    final = run / f"checkpoint-{step:06d}"
    tmp = run / f".tmp-checkpoint-{step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "state").mkdir(parents=True)
    accelerator.wait_for_everyone()
    rd.rng_to_files(tmp / "state", accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = tmp / "state"
        rd.save_tensors(state / "trainable.safetensors", trainable)
        rd.optimizer_to_files(optimizer, state)
        if ema is not None:
            rd.save_tensors(state / "ema.safetensors", dict(zip(trainable, ema.shadow_params)))
            ema_scalars = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
            (state / "ema.json").write_text(json.dumps(ema_scalars))
        scaler_state = {"grad_scaler": scaler.state_dict()} if scaler is not None else {}
        (state / "trainer.json").write_text(json.dumps(
            {**trainer_state, "step": step, "lr_scheduler": lr_scheduler.state_dict(), **scaler_state}, indent=2))
        write_model(tmp / "model")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        rd.prune_checkpoints(run, limit)
    accelerator.wait_for_everyone()
    return final


LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the projections of attn1, attn2 and Temp-Attn


def add_lora(unet, rank: int, alpha: float | None = None) -> dict:
    """Returns the LoRA parameters (by name) of rank `rank` that now adapt every attention projection of `unet`
    (spatial self- and cross-attention, Temp-Attn), the only ones left trainable: PEFT through diffusers'
    `add_adapter`, so `save_lora_adapter` writes the usual diffusers LoRA file."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=list(LORA_TARGETS)))
    return {name: p for name, p in unet.named_parameters() if p.requires_grad}


def write_pipeline(base: Path, target: Path, unet, trainable: dict, ema, lora: bool = False) -> None:
    """Writes a VidRDPipeline folder: the run's frozen parts (hard links to `base`) and `unet` (EMA weights if any);
    with `lora`, `base`'s U-Net unchanged and the adapters in `lora/pytorch_lora_weights.safetensors`."""
    shutil.copytree(base, target, ignore=None if lora else shutil.ignore_patterns("unet"),
                    copy_function=rd.link_or_copy)
    if ema is not None:
        ema.store(trainable.values())
        ema.copy_to(trainable.values())
    try:
        if lora:
            unet.save_lora_adapter(target / "lora", safe_serialization=True)
        else:
            unet.save_pretrained(target / "unet", safe_serialization=True)
    finally:
        if ema is not None:
            ema.restore(trainable.values())


def load_checkpoint(checkpoint: Path, process_index: int, trainable: dict, optimizer, lr_scheduler, ema,
                    scaler=None) -> dict:
    """Restores weights, optimizer, LR schedule, EMA, the fp16 GradScaler and this process's RNG states; returns
    `trainer.json`. A checkpoint without a scaler state (a bf16/fp32 run's) leaves `scaler` at its start."""
    state = checkpoint / "state"
    weights = load_file(str(state / "trainable.safetensors"))
    if set(weights) != set(trainable):
        raise ConfigError(f"{checkpoint} trained other parameters than train_mode selects now")
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(weights[name])
    rd.optimizer_from_files(optimizer, state)
    trainer_state = json.loads((state / "trainer.json").read_text())
    lr_scheduler.load_state_dict(trainer_state["lr_scheduler"])
    if scaler is not None and "grad_scaler" in trainer_state:
        scaler.load_state_dict(trainer_state["grad_scaler"])
    if ema is not None:
        if not (state / "ema.safetensors").is_file():
            raise ConfigError(f"{checkpoint} has no EMA weights; resume it with ema = false")
        shadow = load_file(str(state / "ema.safetensors"))
        ema.load_state_dict({**json.loads((state / "ema.json").read_text()),
                             "shadow_params": [shadow[name] for name in trainable]})
        ema.to(next(iter(trainable.values())).device)
    rd.rng_from_files(state, process_index)
    return trainer_state


# ---------------------------------------------------------------- validation


def validate(config: TrainConfig, pipe, unet, noise_scheduler, validation, trainable: dict, ema, step: int,
             run: Path, device, dtype) -> float | None:
    """Returns the validation loss (fixed noise and timesteps) and writes one video per validation prompt."""
    from vidrd_io.video import write_mp4

    unet.eval()
    if ema is not None:
        ema.store(trainable.values())
        ema.copy_to(trainable.values())
    val_loss = None
    try:
        if validation is not None:
            val_loss = validation_loss(config, pipe, unet, noise_scheduler, validation, device, dtype)
        folder = run / "validation" / f"step-{step:06d}"
        pipe.set_progress_bar_config(disable=True)
        for i, prompt in enumerate(config.validation_prompts):
            frames = pipe(prompt, num_frames=config.num_frames, num_inference_steps=config.validation_steps,
                          guidance_scale=config.validation_guidance, height=config.resolution,
                          width=config.resolution, generator=torch.Generator().manual_seed(config.seed)).frames[0]
            write_mp4(folder / f"prompt-{i:02d}.mp4", (frames * 255).round().astype(np.uint8), config.sample_fps)
        if config.validation_prompts:
            (folder / "prompts.json").write_text(json.dumps(config.validation_prompts, indent=2))
    finally:
        if ema is not None:
            ema.restore(trainable.values())
        unet.train()
    return val_loss


def validation_loss(config, pipe, unet, noise_scheduler, validation: ManifestClips, device, dtype) -> float:
    """Returns the mean loss over fixed validation batches, with noise and timesteps from a fixed generator."""
    batches = validation_batches(validation.rows, {VIDEO: config.batch_size, IMAGE: config.image_batch_size},
                                 config.validation_samples)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        losses = [diffusion_loss(unet, pipe, noise_scheduler, collate([validation[k] for k in keys]), device, dtype,
                                 generator).item() for keys in batches]
    return float(np.mean(losses))


# ---------------------------------------------------------------- the loop


def train(config: TrainConfig) -> Path:
    """Trains as `config` says; returns the folder of the final model (`RUN/model`, a VidRDPipeline folder)."""
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel

    check_train_config(config)
    accelerator, dtype, run, checkpoint, order = start_run(config)
    device = accelerator.device
    dataset, plan, validation = load_data(config, accelerator.num_processes, accelerator.process_index)
    if config.validate_every and validation is None and not config.validation_prompts:
        raise ConfigError(f"validate_every is set but there are no {config.val_split!r} rows and no "
                          "validation_prompts")
    set_seed(config.seed)  # the same fresh temporal layers in every process

    # the U-Net trains in fp32 (autocast computes in `dtype`); the frozen parts are stored in `dtype`
    pipe, unet, noise_scheduler = load_pipeline(config)
    trainable = trainable_parameters(unet, config.train_mode)
    freeze_for_training(unet, config.train_mode, frozen=[pipe.vae, pipe.text_encoder])
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        save_config(config, run / "config.toml")
        if not (run / "base" / "model_index.json").is_file():  # frozen parts at full precision, for every checkpoint
            pipe.save_pretrained(run / "base")  # before any adapter: with LoRA, base/unet is the U-Net it adapts
    if config.lora_rank:
        trainable = add_lora(unet, config.lora_rank, config.lora_alpha)
    if config.compile:  # in place: parameter names, checkpoints and save_pretrained are unchanged
        unet.compile(mode=config.compile_mode)
    for frozen in (pipe.vae, pipe.text_encoder):
        frozen.to(device).eval()
        if dtype != torch.float32:
            frozen.to(dtype)
    unet.to(device).train()
    optimizer, lr_scheduler = make_optimizer(config, list(trainable.values()))
    ema = EMAModel(list(trainable.values()), decay=config.ema_decay) if config.ema else None
    set_seed(config.seed, device_specific=True)  # each process its own noise and dropout

    state = resume(accelerator, checkpoint, order, trainable, optimizer, lr_scheduler, ema)

    def loss(model, batch):
        return diffusion_loss(model, pipe, noise_scheduler, batch, device, dtype)

    def validation_step(step):
        return validate(config, pipe, unet, noise_scheduler, validation, trainable, ema, step, run, device, dtype)

    last = fit(config, accelerator, unet, trainable, optimizer, lr_scheduler, ema, loss, dataset, plan, state,
               write_model=lambda target: write_pipeline(run / "base", target, unet, trainable, ema,
                                                         lora=bool(config.lora_rank)),
               validation_step=validation_step if config.validate_every else None)
    return finish(accelerator, run, last)


def make_accelerator(config):
    """Returns the Accelerator for `config` and the dtype its frozen models compute in."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=config.mixed_precision,
                              gradient_accumulation_steps=config.gradient_accumulation_steps)
    return accelerator, {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]


def resume(accelerator, checkpoint: Path | None, order: dict, trainable: dict, optimizer, lr_scheduler, ema) -> dict:
    """Returns the trainer state to start from: a fresh one, or the checkpoint's after restoring everything else."""
    if checkpoint is None:
        return {"step": 0, "data_step": 0, "skipped_rows": 0, "data_order": order}
    state = load_checkpoint(checkpoint, accelerator.process_index, trainable, optimizer, lr_scheduler, ema,
                            accelerator.scaler)
    log.info("resumed from %s at step %d", checkpoint, state["step"])
    return {**state, "data_order": order, "checkpoint": str(checkpoint)}


def fit(config, accelerator, model, trainable: dict, optimizer, lr_scheduler, ema, loss: Callable, dataset, plan,
        state: dict, write_model: Callable[[Path], None],
        validation_step: Callable[[int], float | None] | None = None) -> Path:
    """Trains `model` from `state` to `config.max_steps` (the loop both trainers share); returns the last checkpoint.

    Each optimizer step takes `gradient_accumulation_steps` batches from `plan`; metrics are written every
    `log_every` steps, checkpoints every `checkpoint_every` steps and at the end.
    """
    run = Path(config.output_dir)
    last_checkpoint = Path(state["checkpoint"]) if "checkpoint" in state else None
    step, data_step = state["step"], state["data_step"]
    skipped, new_skips = state["skipped_rows"], 0  # all processes' total at the last flush; this one's since then
    plan.start_step = data_step
    batches = iter(make_loader(dataset, plan, config.num_workers, pin_memory=accelerator.device.type == "cuda"))
    model, optimizer = accelerator.prepare(model, optimizer)
    metrics = rd.MetricsLog(run, step if "checkpoint" in state else None, enabled=accelerator.is_main_process)
    progress = _progress(config.progress and accelerator.is_main_process, config.max_steps, step)
    pending: list[dict] = []  # rows of steps not yet logged; losses stay tensors until then (no sync per step)
    while step < config.max_steps:
        started, waited, samples, losses = time.perf_counter(), 0.0, 0, []
        for _ in range(config.gradient_accumulation_steps):
            fetch = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - fetch
            data_step += 1
            new_skips += _report_skipped(batch["skipped"])
            with accelerator.accumulate(model):
                value = loss(model, batch)
                accelerator.backward(value)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(list(trainable.values()), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(value.detach())
            samples += len(batch["sample_ids"])
        lr_scheduler.step()
        if ema is not None:
            ema.step(list(trainable.values()))
        step += 1
        elapsed = time.perf_counter() - started
        pending.append({"step": step, "loss": torch.stack(losses).mean(), "lr": lr_scheduler.get_last_lr()[0],
                        "samples_per_s": samples * accelerator.num_processes / elapsed,
                        "data_wait": waited / elapsed, "skipped_rows": new_skips})

        last = step == config.max_steps
        validating = validation_step is not None and step % config.validate_every == 0
        if validating:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                pending[-1]["val_loss"] = validation_step(step)
            accelerator.wait_for_everyone()
        if step % config.log_every == 0 or step % config.checkpoint_every == 0 or last or validating:
            skipped = _flush(accelerator, pending, metrics, progress, skipped)
            pending, new_skips = [], 0
        if step % config.checkpoint_every == 0 or last:
            last_checkpoint = save_checkpoint(
                accelerator, run, step, trainable, optimizer, lr_scheduler, ema,
                {"data_step": data_step, "skipped_rows": skipped, "data_order": state["data_order"]},
                config.checkpoints_total_limit, write_model, scaler=accelerator.scaler,
            )
    if progress is not None:
        progress.stop()
    metrics.close()
    return last_checkpoint


def finish(accelerator, run: Path, checkpoint: Path) -> Path:
    """Links `checkpoint`'s model to `run/model`, draws `run/loss.png`; returns `run/model`."""
    final = run / "model"
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        shutil.copytree(checkpoint / "model", final, copy_function=rd.link_or_copy)
        rd.plot_loss_curve(run)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _report_skipped(skipped: list[tuple[str, str]]) -> int:
    for sample_id, reason in skipped:
        log.warning("skipped row %s: %s", sample_id, reason)
    return len(skipped)


def _flush(accelerator, pending: list[dict], metrics: rd.MetricsLog, progress, skipped: int) -> int:
    """Returns the new total of skipped rows, after writing the pending steps (main process) with losses averaged and
    skipped rows summed over processes."""
    losses = accelerator.reduce(torch.stack([row["loss"] for row in pending]), reduction="mean").tolist()
    new_skips = torch.tensor([row["skipped_rows"] for row in pending], device=accelerator.device)
    totals = [skipped + n for n in accelerator.reduce(new_skips, reduction="sum").tolist()]
    rows = [{**row, "loss": loss, "skipped_rows": total} for row, loss, total in zip(pending, losses, totals)]
    metrics.write([{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows])
    if progress is not None:
        last = rows[-1]
        progress.update(progress.task_ids[0], completed=last["step"],
                        info=f"loss {last['loss']:.4f}  lr {last['lr']:.2e}  {last['samples_per_s']:.1f} samples/s  "
                             f"data wait {100 * last['data_wait']:.0f} %")
    return totals[-1]


def _progress(enabled: bool, total: int, completed: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[info]}"))
    progress.add_task("train", total=total, completed=completed, info="")
    progress.start()
    return progress
