"""Evaluation metrics of the VidRD paper: FVD (I3D), IS (C3D on UCF-101) and CLIPSIM (CLIP), computed as
stylegan-v and VidRD compute them, and content-debiased FVD (VideoMAE, Ge et al. 2024), with cached and resumable
feature extraction; every result carries a receipt (receipt.py).

The feature networks are TorchScript files that `torch.jit.load` runs as code: load only trusted files.
"""

from vidrd_model.eval.clipsim import ClipScorer, clipsim
from vidrd_model.eval.evaluate import EvalSettings, compute_clipsim, compute_fvd, compute_is
from vidrd_model.eval.extractors import MissingExtractor, load_extractor
from vidrd_model.eval.fvd import StatisticsMismatch, frechet_distance
from vidrd_model.eval.inception import inception_score
from vidrd_model.eval.videos import VideoRef, list_videos

__all__ = [
    "ClipScorer", "EvalSettings", "MissingExtractor", "VideoRef", "clipsim", "compute_clipsim", "compute_fvd",
    "compute_is", "frechet_distance", "StatisticsMismatch", "inception_score", "list_videos", "load_extractor",
]
