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

from vidrd_io.fs import file_sha256
from vidrd_io.video import VideoError
from vidrd_model.eval.clipsim import ClipScorer, clipsim
from vidrd_model.eval.extractors import c3d_probabilities, load_extractor
from vidrd_model.eval.features import decode_then_run, error_reason, extract
from vidrd_model.eval.fvd import feature_fn, feature_settings, feature_statistics, frechet_distance, real_statistics
from vidrd_model.eval.inception import inception_score
from vidrd_model.eval.receipt import CLIP_START, RESIZE_POLICY, keys_digest, make_receipt
from vidrd_model.eval.videos import VideoRef, first_fps, list_videos, load_clip

# The clips the UCF-101 C3D was trained on: 16 frames of 112×112.
C3D_FRAMES, C3D_SIZE = 16, 112


@dataclass
class EvalSettings:
    """How clips are cut and scored; recorded in every result."""

    num_frames: int = 16
    resolution: int = 224  # short side resized to this, then centre-cropped square (I3D resizes to 224 itself)
    stride: int = 1  # take every stride-th frame of the generated videos
    real_stride: int = 1  # ... and of the real ones (FVD); e.g. 3 brings 25 fps UCF-101 near generated 8 fps
    match_fps: float | None = None  # set: each real video's stride is round(its fps / match_fps) (replaces real_stride)
    extractor: str = "i3d"  # FVD's features: "i3d" (FVD) or "videomae" (content-debiased FVD, Ge et al. 2024)
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


def _used_keys(refs: list[VideoRef], failed) -> list[str]:
    bad = {key for key, _ in failed}
    return [ref.key for ref in refs if ref.key not in bad]


def _generated_side(refs: list[VideoRef], keys: list[str], num_frames: int, stride: int) -> dict:
    fps = first_fps(refs)
    return {"count": len(keys), "keys_sha256": keys_digest(keys), "frames": num_frames, "stride": stride,
            "fps": fps, "clip_fps": fps / stride if fps else None}


def _versions() -> dict:
    from vidrd_model.provenance import software_versions

    return software_versions()


def compute_fvd(
    generated, real, extractor_path, settings: EvalSettings, *, real_stats_path=None, cache_dir=None,
    progress=True, overwrite_real_stats: bool = False, context: dict | None = None,
) -> dict:
    """Return {"fvd", "receipt", ...}: the Fréchet distance of the generated videos' features (I3D; VideoMAE with
    `settings.extractor = "videomae"`, i.e. cd-FVD) to the real videos'.

    `num_generated` and `num_real` are the videos actually used; those that could not be read are in `failed`. A
    `real_stats_path` of other inputs or settings raises StatisticsMismatch unless `overwrite_real_stats`.
    `context` (split, seeds, sampler settings of the generated videos) goes into the receipt.
    """
    ext = load_extractor(settings.extractor, extractor_path, settings.device)
    gen_refs, real_refs = _refs(generated), _refs(real)
    real_stats = real_statistics(real_refs, ext, settings.as_dict(), cache_path=real_stats_path,
                                 cache_dir=cache_dir, batch_size=settings.batch_size, progress=progress,
                                 overwrite=overwrite_real_stats)
    gen = extract(gen_refs, feature_fn(ext, settings.as_dict()), cache_dir=cache_dir,
                  settings=feature_settings(ext, settings.as_dict()), batch_size=settings.batch_size,
                  progress=progress, desc=f"{ext.kind.upper()} generated")
    gen.require(2, "generated videos")
    mu, sigma = feature_statistics(gen.features)
    real_keys = _used_keys(real_refs, real_stats.failed)
    receipt = make_receipt(
        metric="cd-fvd" if ext.kind == "videomae" else "fvd",
        extractor={"kind": ext.kind, "sha256": ext.sha256},
        generated=_generated_side(gen_refs, gen.keys, settings.num_frames, settings.stride),
        real={"count": real_stats.count, "keys_sha256": keys_digest(real_keys), "frames": settings.num_frames,
              "stride": (f"per video: round(fps / {settings.match_fps:g})" if settings.match_fps
                         else settings.real_stride),
              "fps": first_fps(real_refs), "matched_to_fps": settings.match_fps},
        preprocess={"resize": RESIZE_POLICY, "size": settings.resolution, "start": CLIP_START,
                    "pad_short": settings.pad_short,
                    "network": ("VideoMAE: [0, 1], bilinear squash to its image size, mean of tokens + fc_norm"
                                if ext.kind == "videomae" else "I3D: rescaled to [-1, 1], resized to 224² inside")},
        statistics="float64 mean, covariance divided by N; sqrtm of Σ₁Σ₂ (scipy)",
        context=context or {},
        versions=_versions(),
    )
    return {
        "fvd": frechet_distance(mu, sigma, real_stats.mu, real_stats.sigma),
        "receipt": receipt,
        "num_generated": len(gen.keys),
        "num_real": real_stats.count,
        "failed": _failures(gen.failed, "generated") + _failures(real_stats.failed, "real"),
        ext.kind: {"path": str(ext.path), "sha256": ext.sha256},
        "settings": settings.as_dict(),
        "real_stats": str(real_stats_path) if real_stats_path is not None else None,
        "real_stats_reused": real_stats.reused,
    }


def compute_is(generated, c3d_path, settings: EvalSettings, *, cache_dir=None, progress=True,
               context: dict | None = None) -> dict:
    """Return {"is_mean", "is_std", "receipt", ...}: the Inception Score of the generated videos under the UCF-101
    C3D; `context` (split, seeds, sampler settings) goes into the receipt."""
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
    receipt = make_receipt(
        metric="is", extractor={"kind": "c3d", "sha256": ext.sha256},
        generated=_generated_side(refs, result.keys, C3D_FRAMES, settings.stride),
        preprocess={"resize": RESIZE_POLICY, "size": C3D_SIZE, "start": CLIP_START, "pad_short": settings.pad_short},
        splits=settings.is_splits, shuffle_seed=settings.is_shuffle_seed, context=context or {}, versions=_versions(),
    )
    return {
        "is_mean": mean,
        "is_std": std,
        "receipt": receipt,
        "num_generated": len(result.keys),
        "splits": settings.is_splits,
        "failed": _failures(result.failed, "generated"),
        "c3d": {"path": str(ext.path), "sha256": ext.sha256},
        "settings": {**settings.as_dict(), "num_frames": C3D_FRAMES, "resolution": C3D_SIZE},
    }


def compute_clipsim(generated, scorer_kwargs: dict, settings: EvalSettings, *, progress=True,
                    context: dict | None = None) -> dict:
    """Return {"clipsim", "receipt", ...}: CLIP frame–prompt similarity of the generated videos (prompts from
    VideoRef.text); `context` (seeds, sampler settings) goes into the receipt."""
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
    bad = {key for key, _ in failed}
    used = [ref.key for ref in refs if ref.key not in bad]
    checkpoint = scorer_kwargs.get("checkpoint")
    receipt = make_receipt(
        metric="clipsim", convention=settings.clip_convention,
        clip={"model_id": scorer.model_id, "pretrained": scorer_kwargs.get("pretrained"),
              "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
              "config_sha256": file_sha256(scorer_kwargs["config"]) if scorer_kwargs.get("config") else None},
        generated=_generated_side(refs, used, settings.num_frames, settings.stride),
        preprocess={"frames": f"the first {settings.num_frames} (stride {settings.stride}) cut as "
                              f"{RESIZE_POLICY} ({settings.resolution} px), then open_clip's own preprocessing",
                    "start": CLIP_START, "pad_short": settings.pad_short},
        context=context or {}, versions=_versions(),
    )
    return {
        **result,
        "receipt": receipt,
        "num_generated": result["videos"],
        "failed": _failures(failed, "generated"),
        "clip": {"model_id": scorer.model_id, **{k: str(v) for k, v in scorer_kwargs.items() if v is not None}},
        "settings": settings.as_dict(),
    }
