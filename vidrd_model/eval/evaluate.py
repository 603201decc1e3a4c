"""The three metrics end to end, as the `vidrd-eval` CLI runs them: each returns a JSON-ready dict holding the value
and every setting it was computed with.

IS clips are resized (short side) and centre-cropped to C3D's 112×112 here, before the network. stylegan-v instead
passes clips at the dataset's resolution with no detector arguments, so its c3d_ucf101.pt may resize internally; we
do not know that it does, and chose to give it the input C3D was trained on (see extractors.c3d_probabilities).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from vidrd_model.eval.clipsim import ClipScorer, clipsim
from vidrd_model.eval.extractors import c3d_probabilities, load_extractor
from vidrd_io.video import VideoError
from vidrd_model.eval.features import decode_then_run, error_reason, extract
from vidrd_model.eval.fvd import feature_statistics, frechet_distance, i3d_feature_fn, i3d_settings, real_statistics
from vidrd_model.eval.inception import inception_score
from vidrd_model.eval.videos import VideoRef, list_videos, load_clip

# The clips the UCF-101 C3D was trained on: 16 frames of 112×112.
C3D_FRAMES, C3D_SIZE = 16, 112


@dataclass
class EvalSettings:
    """How clips are cut and scored; recorded in every result."""

    num_frames: int = 16
    resolution: int = 224  # short side resized to this, then centre-cropped square (I3D resizes to 224 itself)
    stride: int = 1  # take every stride-th frame of the generated videos
    real_stride: int = 1  # ... and of the real ones (FVD); e.g. 3 brings 25 fps UCF-101 near generated 8 fps
    pad_short: bool = False  # repeat the last frame of too-short videos instead of failing them
    batch_size: int = 8
    device: str = "cpu"
    is_splits: int = 10
    is_shuffle_seed: int | None = 42
    clip_convention: str = "raw"

    def as_dict(self) -> dict:
        return asdict(self)


def _refs(videos: str | os.PathLike | list[VideoRef]) -> list[VideoRef]:
    return list(videos) if isinstance(videos, (list, tuple)) else list_videos(videos)


def _failures(failed: list[tuple[str, str]], which: str) -> list[dict]:
    return [{"videos": which, "key": key, "reason": reason} for key, reason in failed]


def compute_fvd(
    generated, real, i3d_path, settings: EvalSettings, *, real_stats_path=None, cache_dir=None, progress=True,
    overwrite_real_stats: bool = False,
) -> dict:
    """Return {"fvd", ...}: the Fréchet distance of the generated videos' I3D features to the real videos'.

    `num_generated` and `num_real` are the videos actually used; those that could not be read are in `failed`. A
    `real_stats_path` of other inputs or settings raises StatisticsMismatch unless `overwrite_real_stats`.
    """
    ext = load_extractor("i3d", i3d_path, settings.device)
    gen_refs, real_refs = _refs(generated), _refs(real)
    real_stats = real_statistics(real_refs, ext, settings.as_dict(), cache_path=real_stats_path,
                                 cache_dir=cache_dir, batch_size=settings.batch_size, progress=progress,
                                 overwrite=overwrite_real_stats)
    gen = extract(gen_refs, i3d_feature_fn(ext, settings.as_dict()), cache_dir=cache_dir,
                  settings=i3d_settings(ext, settings.as_dict()), batch_size=settings.batch_size,
                  progress=progress, desc="I3D generated")
    gen.require(2, "generated videos")
    mu, sigma = feature_statistics(gen.features)
    return {
        "fvd": frechet_distance(mu, sigma, real_stats.mu, real_stats.sigma),
        "num_generated": len(gen.keys),
        "num_real": real_stats.count,
        "failed": _failures(gen.failed, "generated") + _failures(real_stats.failed, "real"),
        "i3d": {"path": str(ext.path), "sha256": ext.sha256},
        "settings": settings.as_dict(),
        "real_stats": str(real_stats_path) if real_stats_path is not None else None,
        "real_stats_reused": real_stats.reused,
    }


def compute_is(generated, c3d_path, settings: EvalSettings, *, cache_dir=None, progress=True) -> dict:
    """Return {"is_mean", "is_std", ...}: the Inception Score of the generated videos under the UCF-101 C3D."""
    ext = load_extractor("c3d", c3d_path, settings.device)
    refs = _refs(generated)

    def load(ref: VideoRef) -> np.ndarray:
        return load_clip(ref, C3D_FRAMES, C3D_SIZE, settings.stride, pad=settings.pad_short)

    probabilities = decode_then_run(load, lambda clips: c3d_probabilities(ext, clips))
    used = {"num_frames": C3D_FRAMES, "resolution": C3D_SIZE, "stride": settings.stride,
            "pad_short": settings.pad_short, "c3d_sha256": ext.sha256}
    result = extract(refs, probabilities, cache_dir=cache_dir, settings=used, batch_size=settings.batch_size,
                     progress=progress, desc="C3D generated")
    result.require(settings.is_splits, "generated videos")
    mean, std = inception_score(result.features, settings.is_splits, settings.is_shuffle_seed)
    return {
        "is_mean": mean,
        "is_std": std,
        "num_generated": len(result.keys),
        "splits": settings.is_splits,
        "failed": _failures(result.failed, "generated"),
        "c3d": {"path": str(ext.path), "sha256": ext.sha256},
        "settings": {**settings.as_dict(), "num_frames": C3D_FRAMES, "resolution": C3D_SIZE},
    }


def compute_clipsim(generated, scorer_kwargs: dict, settings: EvalSettings, *, progress=True) -> dict:
    """Return {"clipsim", ...}: CLIP frame–prompt similarity of the generated videos (prompts from VideoRef.text)."""
    from rich.progress import track

    scorer = ClipScorer(**{"device": settings.device, **scorer_kwargs})
    refs = _refs(generated)
    failed: list[tuple[str, str]] = []

    def clips():
        for ref in track(refs, description="CLIPSIM", disable=not progress):
            if not ref.text:
                failed.append((ref.key, "no prompt (VideoRef.text / sibling STEM.json)"))
                continue
            try:
                frames = load_clip(ref, settings.num_frames, settings.resolution, settings.stride,
                                   pad=settings.pad_short)
            except (VideoError, OSError) as exc:  # a video that cannot be read is reported, not fatal
                failed.append((ref.key, error_reason(exc)))
                continue
            yield frames, ref.text

    result = clipsim(scorer, clips(), settings.clip_convention)
    return {
        **result,
        "num_generated": result["videos"],
        "failed": _failures(failed, "generated"),
        "clip": {"model_id": scorer.model_id, **{k: str(v) for k, v in scorer_kwargs.items() if v is not None}},
        "settings": settings.as_dict(),
    }
