"""Aesthetics: the LAION aesthetic predictor (christophschuhmann/improved-aesthetic-predictor), an MLP over unit
CLIP ViT-L/14 image embeddings, from its published state dict (`sac+logos+ava1-l14-linearMSE.pth`: keys
`layers.{0,2,4,6,7}.{weight,bias}`), read with `torch.load(weights_only=True)`. The clip's score is the mean over
its stills (about 1–10; LAION-Aesthetics kept images ≥ 5 or ≥ 6)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from vidrd_data.scores import Clip
from vidrd_data.scores.clip_similarity import ClipModel


def aesthetic_mlp(input_size: int):
    """Return the predictor's network, layer for layer as published (the dropouts keep the state-dict indices)."""
    from torch import nn

    return nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


class AestheticHead:
    """The MLP with its published weights, its input size read from the file."""

    def __init__(self, path: str | Path):
        import torch

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"aesthetic head not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("layers."): v for k, v in state.items()}  # published with the `layers.` prefix
        if "0.weight" not in state:
            raise ValueError(f"{path} is not an aesthetic predictor state dict (no layers.0.weight)")
        self.input_size = int(state["0.weight"].shape[1])
        self.network = aesthetic_mlp(self.input_size).eval()
        self.network.load_state_dict(state)
        self.path = path

    def __call__(self, embeddings):
        """Return one score per unit embedding row."""
        import torch

        with torch.inference_mode():
            return self.network(embeddings.float())[:, 0]


class AestheticScore:
    name = "aesthetic"
    columns = [pa.field("aesthetic", pa.float64())]

    def __init__(self, clip: ClipModel, head: str | Path):
        self.clip, self.head = clip, AestheticHead(head)
        dim = int(clip.model.visual.output_dim)
        if dim != self.head.input_size:
            raise ValueError(f"aesthetic head {head} takes {self.head.input_size}-d embeddings, the CLIP model "
                             f"gives {dim}-d (the published head is for ViT-L/14)")

    def identity(self) -> dict:
        """Return the head's file name and sha256, and the CLIP model it reads."""
        from vidrd_io.fs import file_sha256

        return {"name": f"laion-aesthetic-mlp:{self.head.path.name} over {self.clip.model_id}",
                "sha256": file_sha256(self.head.path), "clip": self.clip.identity()}

    def __call__(self, clip: Clip) -> dict:
        """Return the mean predicted aesthetic score of the stills."""
        return {"aesthetic": float(self.head(self.clip.images(clip.stills)).mean())}
