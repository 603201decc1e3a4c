"""Fréchet Video Distance: the Fréchet distance between Gaussians fitted to I3D features of two video sets.

    FVD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

computed in float64 as pytorch-fid and stylegan-v do, Σ divided by N as stylegan-v's FeatureStats does. The real
videos' (μ, Σ) are cached in an .npz and reused while the inputs, the clip settings and the I3D file are unchanged;
a statistics file of other inputs or settings is replaced only when asked (`overwrite=True`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import linalg

from vidrd_model.eval.extractors import Extractor, fvd_features
from vidrd_model.eval.features import UNREADABLE_NPZ, decode_then_run, error_reason, extract, save_npz_atomic
from vidrd_model.eval.videos import VideoRef, inputs_digest, load_clip

log = logging.getLogger(__name__)

# The settings that change I3D features; the others (splits, CLIP convention, batch size) must not void a cache.
# The real side has its own frame stride (`real_stride`, e.g. to bring 25 fps UCF-101 near generated 8 fps).
# `match_fps` (set: each real video's stride is round(its fps / match_fps)) replaces `real_stride` when set.
CLIP_SETTINGS = ("num_frames", "resolution", "stride", "pad_short")
REAL_CLIP_SETTINGS = ("num_frames", "resolution", "real_stride", "pad_short", "match_fps")


class StatisticsMismatch(ValueError):
    """A real-statistics file holds other inputs or settings (or is not ours) and was not to be replaced."""


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (μ, Σ) of feature rows in float64: the mean and the covariance divided by N
    (`np.cov(rowvar=False, bias=True)`), as stylegan-v's FeatureStats.get_mean_cov computes it."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature rows for a covariance, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False, bias=True)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Return ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2 Tr((Σ₁ Σ₂)^½) in float64.

    As pytorch-fid: when the square root of Σ₁Σ₂ is not finite (singular product), ε·I is added to both
    covariances; an imaginary part is dropped only when negligible (|Im diag| ≤ 1e-3), otherwise ValueError.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"mismatched statistics: μ {mu1.shape} vs {mu2.shape}, Σ {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("Σ₁Σ₂ is singular; adding %g to the diagonals", eps)
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"√(Σ₁Σ₂) has an imaginary part of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@dataclass
class Statistics:
    """(μ, Σ) of `count` videos' features; `key` hashes what they were computed from (settings, I3D, inputs)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    key: str
    settings: dict
    failed: list[tuple[str, str]] = field(default_factory=list)
    inputs: str = ""  # inputs_digest of the real videos
    reused: bool = False  # loaded from a cache file rather than computed (not saved)

    def save(self, path: str | Path) -> None:
        save_npz_atomic(
            Path(path),
            mu=self.mu,
            sigma=self.sigma,
            count=np.asarray(self.count),
            key=np.asarray(self.key),
            inputs=np.asarray(self.inputs),
            settings=np.asarray(json.dumps(self.settings, sort_keys=True)),
            failed_keys=np.asarray([k for k, _ in self.failed], dtype=str),
            failed_reasons=np.asarray([r for _, r in self.failed], dtype=str),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Statistics":
        with np.load(path, allow_pickle=False) as data:
            return cls(
                mu=data["mu"],
                sigma=data["sigma"],
                count=int(data["count"]),
                key=str(data["key"]),
                settings=json.loads(str(data["settings"])),
                failed=list(zip(data["failed_keys"].tolist(), data["failed_reasons"].tolist())),
                inputs=str(data["inputs"]) if "inputs" in data.files else "",
            )


def clip_settings(settings: dict, real: bool = False) -> dict:
    """Return the subset of `settings` that decides what each clip looks like: CLIP_SETTINGS, or for the real
    videos REAL_CLIP_SETTINGS (`real_stride` 1 when absent)."""
    if real:  # match_fps only when set, so statistics saved before it existed keep their key
        return {"real_stride": 1, **{name: settings[name] for name in REAL_CLIP_SETTINGS
                                     if settings.get(name) is not None}}
    return {name: settings[name] for name in CLIP_SETTINGS if name in settings}


def feature_fn(ext: Extractor, settings: dict, real: bool = False):
    """Return fn(refs) for `extract`: FVD features (I3D, or VideoMAE for cd-FVD) of the clips `load_clip` cuts with `settings` (every
    `real_stride`-th frame for the real videos, every `stride`-th for the others), each video decoded alone and the
    network run once per chunk (`decode_then_run`)."""
    stride = settings.get("real_stride", 1) if real else settings.get("stride", 1)
    match_fps = settings.get("match_fps") if real else None

    def load(ref: VideoRef) -> np.ndarray:
        return load_clip(ref, settings["num_frames"], settings["resolution"], stride,
                         pad=settings.get("pad_short", False), match_fps=match_fps)

    return decode_then_run(load, lambda clips: fvd_features(ext, clips))


def feature_settings(ext: Extractor, settings: dict, real: bool = False) -> dict:
    """Return what the features depend on: the (real or generated side's) clip settings and the network's sha256
    (under "i3d_sha256" or "videomae_sha256")."""
    return {**clip_settings(settings, real), f"{ext.kind}_sha256": ext.sha256}


def _mismatch(cached: Statistics, used: dict, inputs: str) -> str:
    """Return what differs between a statistics file and what is asked for, for a one-line message."""
    diffs = [f"{name} {cached.settings.get(name)!r} -> {used.get(name)!r}"
             for name in sorted(cached.settings.keys() | used.keys()) if cached.settings.get(name) != used.get(name)]
    if not cached.inputs:
        diffs.append("inputs unknown")
    elif cached.inputs != inputs:
        diffs.append(f"other real videos ({cached.count} used there)")
    return "; ".join(diffs) or "other inputs or settings"


def _statistics_key(used: dict, inputs: str) -> str:
    return hashlib.sha256(json.dumps({"settings": used, "inputs": inputs}, sort_keys=True).encode("utf-8")).hexdigest()


def _reusable(path: str | Path | None, used: dict, inputs: str, overwrite: bool) -> Statistics | None:
    """Return the statistics in `path` when they are of these settings and inputs; None when there are none, they
    are corrupt, or they are to be replaced (`overwrite`, with a warning); otherwise raise StatisticsMismatch."""
    if path is None or not Path(path).is_file():
        return None
    replace = "pass --overwrite-real-stats to recompute and replace it, or give another --real-stats path"
    try:
        cached = Statistics.load(path)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        log.warning("real-video statistics %s are truncated or corrupt (%s); recomputing them", path,
                    error_reason(exc))
        return None
    except UNREADABLE_NPZ as exc:
        if not overwrite:
            raise StatisticsMismatch(f"{path} is not a real-statistics file of vidrd-eval ({error_reason(exc)}); "
                                     f"{replace}") from None
        log.warning("replacing %s, which is not a real-statistics file (%s)", path, error_reason(exc))
        return None
    if cached.key == _statistics_key(used, inputs):
        return cached
    what = _mismatch(cached, used, inputs)
    if not overwrite:
        raise StatisticsMismatch(f"{path} holds real statistics of other inputs or settings ({what}); {replace}")
    log.warning("real-video statistics in %s are for other inputs or settings (%s); recomputing and replacing them",
                path, what)
    return None


def check_real_statistics(path: str | Path | None, refs: list[VideoRef], extractor_sha256: str, settings: dict,
                          overwrite: bool = False, kind: str = "i3d") -> bool:
    """Return whether `path` holds reusable statistics of `refs`; raise StatisticsMismatch as `real_statistics`
    would, without loading the network: lets a command refuse before hours of generation."""
    used = {**clip_settings(settings, real=True), f"{kind}_sha256": extractor_sha256}
    return _reusable(path, used, inputs_digest(refs), overwrite) is not None


def real_statistics(
    refs: list[VideoRef],
    ext: Extractor,
    settings: dict,
    *,
    cache_path: str | Path | None,
    cache_dir: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
    overwrite: bool = False,
) -> Statistics:
    """Return (μ, Σ) of the real videos' features (the extractor's), reused from `cache_path` when its key matches, else computed
    (features cached per chunk in `cache_dir`) and saved there.

    A `cache_path` holding statistics of other inputs or settings, or a file that is not real statistics, raises
    StatisticsMismatch before any work unless `overwrite` (then a warning, and it is replaced); a truncated or
    corrupt one is recomputed with a warning. Statistics with a possibly transient failure (an unreadable file) are
    returned but not saved.
    """
    used = feature_settings(ext, settings, real=True)
    inputs = inputs_digest(refs)
    key = _statistics_key(used, inputs)
    cached = _reusable(cache_path, used, inputs, overwrite)
    if cached is not None:
        log.info("reusing real-video statistics from %s", cache_path)
        cached.reused = True
        return cached
    result = extract(refs, feature_fn(ext, settings, real=True), cache_dir=cache_dir, settings=used,
                     batch_size=batch_size, progress=progress, desc=f"{ext.kind.upper()} real")
    result.require(2, "real videos")
    mu, sigma = feature_statistics(result.features)
    stats = Statistics(mu, sigma, len(result.keys), key, used, result.failed, inputs)
    if cache_path is not None:
        if result.transient_failures:
            log.warning("not saving real statistics to %s: some real videos could not be read (see the failures); "
                        "a rerun tries them again", cache_path)
        else:
            stats.save(cache_path)
    return stats
