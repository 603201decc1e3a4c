"""Tiny randomly initialised models saved in the on-disk formats of the real ones.

The demo and the tests point the project's real loading code (`from_pretrained(dir)`, open_clip's factory,
MiniGPT-4's `torch.load(..., weights_only=True)["model"]`) at these instead of hub checkpoints, so everything runs offline. Each model
is built at a tiny size under a fixed seed, every parameter is overwritten by the same seeded rule, and the files are
laid out as the corresponding hub repository or released checkpoint lays them out; the video metrics' I3D and C3D
networks get TorchScript stand-ins with the published files' call signatures. Tokenizers are real tokenizer files
built offline: CLIP's from the BPE vocabulary that open_clip ships in its wheel, OPT's and LLaMA's trained on a small
fixed corpus.

One module per model family: blip2, open_clip, minigpt4, stable_diffusion, extractors (the I3D/C3D stand-ins),
videomae (cd-FVD's network);
weights.py holds the seeded weight rule they share, tokenizer_files.py the tokenizer builders. The heavy libraries
(transformers, diffusers, open_clip) are imported inside each writer so that importing the package stays cheap for
the CLI.
"""

from __future__ import annotations

from pathlib import Path

from vidrd_demo.models.aesthetic import write_tiny_aesthetic_head
from vidrd_demo.models.blip2 import write_tiny_blip2
from vidrd_demo.models.extractors import write_standin_extractors
from vidrd_demo.models.minigpt4 import write_tiny_minigpt4
from vidrd_demo.models.open_clip import write_tiny_open_clip
from vidrd_demo.models.stable_diffusion import write_tiny_stable_diffusion
from vidrd_demo.models.videomae import write_tiny_videomae


def write_tiny_models(out_dir: str | Path) -> dict[str, Path]:
    """Writes all four tiny models and the metric networks' stand-ins under `out_dir`; returns each part's path by name.

    The open_clip model's name is its config file's stem, as open_clip names the configs it registers.
    """
    out_dir = Path(out_dir)
    blip2 = write_tiny_blip2(out_dir / "blip2")
    open_clip = write_tiny_open_clip(out_dir / "open_clip")
    minigpt4 = write_tiny_minigpt4(out_dir / "minigpt4")
    stable_diffusion = write_tiny_stable_diffusion(out_dir / "stable_diffusion")
    extractors = write_standin_extractors(out_dir / "extractors")
    videomae = write_tiny_videomae(out_dir / "videomae")
    aesthetic_head = write_tiny_aesthetic_head(out_dir / "aesthetic")
    return {
        "blip2": blip2,
        "open_clip_config": open_clip.config_path,
        "open_clip_checkpoint": open_clip.checkpoint_path,
        "minigpt4_config": minigpt4.config_path,
        "minigpt4_blip2": minigpt4.blip2_checkpoint,
        "minigpt4_llama": minigpt4.llama_dir,
        "minigpt4_projection": minigpt4.projection_checkpoint,
        "stable_diffusion": stable_diffusion,
        "i3d": extractors["i3d"],
        "c3d": extractors["c3d"],
        "videomae": videomae,
        "aesthetic_head": aesthetic_head,
    }
