"""BLIP-2 captions through transformers (`Blip2Processor` + `Blip2ForConditionalGeneration`).

`model` is a hub id (`Salesforce/blip2-opt-2.7b`, `Salesforce/blip2-flan-t5-xl`, …) or a local directory laid out
like one; both go through `from_pretrained`, never with remote code. Decoding defaults are LAVIS' BLIP-2 caption
defaults (5 beams, at most 30 tokens, no repetition penalty).

With a prompt, an OPT (decoder-only) model continues it, so the caption starts with the prompt ("a video of
juggling, a man …"); a Flan-T5 model answers it, so the caption is the answer alone.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, Blip2ForConditionalGeneration, Blip2Processor
from transformers.feature_extraction_utils import BatchFeature

from vidrd_data.models.captioners import Captioner, quiet_transformers_progress
from vidrd_data.models.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

def check_model(model: str | os.PathLike) -> None:
    """Raise ValueError unless `model` names a BLIP-2 checkpoint (reads its config only, not the weights)."""
    try:
        config = AutoConfig.from_pretrained(os.fspath(model))
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load a BLIP-2 config from {os.fspath(model)!r}: {first_line}") from None
    if config.model_type != "blip-2":
        raise ValueError(f"{os.fspath(model)!r} is a {config.model_type!r} checkpoint, not BLIP-2")




_IMAGE_PROCESSORS: dict[str, object] = {}  # model id → its image processor, loaded once per process


class Blip2ImageInputs:
    """Frames → BLIP-2 pixel values, exactly as `Blip2Processor` computes them (its own image processor).

    Picklable (the processor loads lazily, in the process that calls it), so the caption stage's decode workers
    preprocess frames beside decoding them and the model's process only assembles batches.
    """

    def __init__(self, model_id: str):
        self.model_id = model_id
        self._processor = None

    def __getstate__(self) -> dict:
        return {"model_id": self.model_id}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_id"])

    def __call__(self, images: list) -> np.ndarray:
        """Return float32 `(n, 3, H, W)` pixel values of PIL images or uint8 `(H, W, 3)` arrays."""
        if self._processor is None:  # each task unpickles a new copy: load once per process
            if self.model_id not in _IMAGE_PROCESSORS:
                with quiet_transformers_progress():
                    _IMAGE_PROCESSORS[self.model_id] = Blip2Processor.from_pretrained(self.model_id).image_processor
            self._processor = _IMAGE_PROCESSORS[self.model_id]
        images = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in images]
        return np.asarray(self._processor(images, return_tensors="np")["pixel_values"], dtype=np.float32)


class Blip2Captioner(Captioner):
    """Captions images with a BLIP-2 checkpoint; `caption(images, prompts)` batches them `batch_size` at a time."""

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        device: str = "auto",
        dtype: str = "auto",
        num_beams: int = 5,
        max_new_tokens: int = 30,
        repetition_penalty: float = 1.0,
        batch_size: int = 16,
    ):
        if num_beams < 1 or max_new_tokens < 1 or batch_size < 1:
            raise ValueError(
                f"num_beams, max_new_tokens and batch_size must be ≥ 1, got {num_beams}, {max_new_tokens}, {batch_size}"
            )
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")
        self.model_id = os.fspath(model)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.generate_kwargs = {
            "num_beams": num_beams,
            "max_new_tokens": max_new_tokens,
            "repetition_penalty": repetition_penalty,
            "do_sample": False,
        }
        with quiet_transformers_progress():
            self.processor = Blip2Processor.from_pretrained(self.model_id)
            self.model = Blip2ForConditionalGeneration.from_pretrained(self.model_id, dtype=self.dtype)
        self.model.to(self.device).eval()
        self._image_inputs = None
        if self.model.config.use_decoder_only_language_model:
            # A decoder-only model continues the last token of each row: pad prompts of unequal length on the left.
            self.processor.tokenizer.padding_side = "left"
        log.info("loaded BLIP-2 %s on %s (%s)", self.model_id, self.device, self.dtype)

    def image_inputs(self) -> Blip2ImageInputs:
        """Return the picklable frames → pixel values step of `prepare` (what decode workers run)."""
        return Blip2ImageInputs(self.model_id)

    def prepare(self, images: list[Image.Image], prompts: list[str | None] | None = None) -> BatchFeature:
        """Return pixel values (and prompt tokens) on the CPU; pinned for a non-blocking copy when on CUDA."""
        if self._image_inputs is None:
            self._image_inputs = Blip2ImageInputs(self.model_id)
            self._image_inputs._processor = self.processor.image_processor
        return self.assemble(self._image_inputs(images), prompts)

    def assemble(self, pixel_values: np.ndarray, prompts: list[str | None] | None = None) -> BatchFeature:
        """Return the model inputs of pixel values made by `image_inputs()` and their prompts, as `Blip2Processor`
        makes them from images and text: each prompt tokenized and padded, the model's image tokens before it."""
        inputs = {"pixel_values": torch.from_numpy(np.ascontiguousarray(pixel_values))}
        if prompts is not None and any(p is not None for p in prompts):
            # With OPT an empty prompt is the bare BOS token, what generation starts from without a prompt.
            tokenizer, query_tokens = self.processor.tokenizer, self.processor.num_query_tokens
            text = tokenizer([p or "" for p in prompts], padding=True)
            if query_tokens is not None:  # as the processor: image tokens first, unpadded, even before BOS
                image = tokenizer(self.processor.image_token.content * query_tokens, add_special_tokens=False)
                text = {k: [image[k] + row for row in rows] for k, rows in text.items()}
            inputs.update({k: torch.tensor(rows) for k, rows in text.items()})
        inputs = BatchFeature(inputs)
        if self.device.type == "cuda":
            inputs = BatchFeature({k: v.pin_memory() for k, v in inputs.items()})
        return inputs

    def generate(self, prepared: BatchFeature) -> list[str]:
        inputs = prepared.to(device=self.device, dtype=self.dtype, non_blocking=True)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, **self.generate_kwargs)
        return [" ".join(text.split()) for text in self.processor.batch_decode(ids, skip_special_tokens=True)]
