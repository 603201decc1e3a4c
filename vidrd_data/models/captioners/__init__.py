"""Image captioners that turn frames into text: the interface the `caption` and `segment` stages use.

A captioner is used as `captioner.caption(images, prompts)`. It splits that call in two so a stage can pipeline
it: `prepare` (CPU preprocessing: resize, normalise, tokenise) runs off the model's thread, `generate` (the model)
in the main one. `Blip2Captioner` splits `prepare` once more for the caption stage's worker processes: a picklable
`image_inputs()` step there, `assemble` (pixel values + prompts) beside the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any

from PIL import Image


@contextmanager
def quiet_transformers_progress():
    """Hide transformers' per-checkpoint "Loading weights" / "Writing model shards" bars (they tear through the
    stage's own progress bar), then restore the previous setting."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


class Captioner(ABC):
    """Frames → captions. Subclasses set `model_id` and `batch_size` and implement `generate` (and `prepare`)."""

    model_id: str
    batch_size: int = 8  # images per `generate` call

    def caption(self, images: list[Image.Image], prompts: list[str | None] | None = None) -> list[str]:
        """Return one caption per image; `prompts[i]`, when given, is the text the caption of image i starts from."""
        if prompts is not None and len(prompts) != len(images):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            captions += self.generate(self.prepare(images[start:stop], None if prompts is None else prompts[start:stop]))
        return captions

    def prepare(self, images: list[Image.Image], prompts: list[str | None] | None = None) -> Any:
        """Return the model inputs of one batch, ready for `generate`; safe to call from another thread."""
        return images, prompts

    @abstractmethod
    def generate(self, prepared: Any) -> list[str]:
        """Return the captions of one batch made by `prepare`."""
