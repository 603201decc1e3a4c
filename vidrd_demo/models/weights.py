"""What every tiny model shares: one seeded rule for its weights, the spreads it draws them with, and OpenAI-CLIP's
image normalisation."""

from __future__ import annotations

import re

import torch
from torch import nn

SEED = 0
INIT_STD = 0.02
# Wider draws where the demo needs the random model to respond to its input: the image must visibly change a greedy
# caption, and CLIP embeddings of a slightly moved frame must stay closer than those of another scene (at 0.02 every
# tiny-CLIP embedding has cosine similarity ~1 with every other).
CAPTIONER_INIT_STD = 0.3
EMBEDDER_INIT_STD = 0.1

# OpenAI-CLIP normalisation, used by BLIP-2's and MiniGPT-4's image processors and by open_clip.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def randomize_parameters(model: nn.Module, std: float = INIT_STD, seed: int = SEED) -> nn.Module:
    """Returns `model` with every parameter redrawn: norm weights 1 + std·r, everything else std·r, r ~ N(0, 1).

    One rule for every model, so the weights do not depend on each library's own init code (some of which zeroes
    layers or leaves them to lazy initialisation).
    """
    norm_weights = {
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()
    }
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            r = torch.randn(param.shape, generator=generator)
            param.copy_(1 + std * r if name in norm_weights else std * r)
    return model


def emit_only_words(output_embeddings: nn.Module, vocab: dict[str, int], word: str) -> None:
    """Zeroes the output rows of every token that is not a whole word (regex `word`)."""
    # A zero row gives logit 0, below the best of the random logits, so greedy decoding never picks those tokens:
    # captions are never empty, never cut at once by an end token, and read as random words rather than byte soup.
    non_words = sorted(i for token, i in vocab.items() if not re.fullmatch(word, token))
    with torch.no_grad():
        output_embeddings.weight[non_words] = 0.0
