"""Fréchet Video Distance: the Fréchet distance between Gaussians fitted to I3D features of two video sets.

    FVD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

computed in float64 as pytorch-fid and stylegan-v do. The real videos' (μ, Σ) are cached in an .npz and reused while
the inputs, the clip settings and the I3D file are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import linalg

from vidrd_model.eval.extractors import Extractor, i3d_features
from vidrd_model.eval.features import extract, save_npz_atomic
from vidrd_model.eval.videos import VideoRef, inputs_digest, load_clip

log = logging.getLogger(__name__)

# The settings that change I3D features; the others (splits, CLIP convention, batch size) must not void a cache.
CLIP_SETTINGS = ("num_frames", "resolution", "stride", "pad_short")


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (μ, Σ) of feature rows in float64: the mean and the unbiased covariance (`np.cov(rowvar=False)`)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need at least 2 feature rows for a covariance, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


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
    reused: bool = False  # loaded from a cache file rather than computed (not saved)

    def save(self, path: str | Path) -> None:
        save_npz_atomic(
            Path(path),
            mu=self.mu,
            sigma=self.sigma,
            count=np.asarray(self.count),
            key=np.asarray(self.key),
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
            )


def clip_settings(settings: dict) -> dict:
    """Return the subset of `settings` that decides what each clip looks like (see CLIP_SETTINGS)."""
    return {name: settings[name] for name in CLIP_SETTINGS if name in settings}


def i3d_feature_fn(ext: Extractor, settings: dict):
    """Return fn(refs) → I3D features of the clips `load_clip` cuts with `settings`."""

    def features(refs: list[VideoRef]) -> np.ndarray:
        clips = [
            load_clip(ref, settings["num_frames"], settings["resolution"], settings.get("stride", 1),
                      pad=settings.get("pad_short", False))
            for ref in refs
        ]
        return i3d_features(ext, np.stack(clips))

    return features


def i3d_settings(ext: Extractor, settings: dict) -> dict:
    """Return what I3D features depend on: the clip settings and the network file's sha256."""
    return {**clip_settings(settings), "i3d_sha256": ext.sha256}


def real_statistics(
    refs: list[VideoRef],
    ext: Extractor,
    settings: dict,
    *,
    cache_path: str | Path | None,
    cache_dir: str | Path | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> Statistics:
    """Return (μ, Σ) of the real videos' I3D features, reused from `cache_path` when its key matches, else computed
    (features cached per chunk in `cache_dir`) and saved there."""
    used = i3d_settings(ext, settings)
    payload = json.dumps({"settings": used, "inputs": inputs_digest(refs)}, sort_keys=True)
    key = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    if cache_path is not None and Path(cache_path).is_file():
        try:
            cached = Statistics.load(cache_path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable real statistics %s (%s)", cache_path, exc)
        else:
            if cached.key == key:
                log.info("reusing real-video statistics from %s", cache_path)
                cached.reused = True
                return cached
            log.info("real-video statistics in %s are for other inputs or settings; recomputing", cache_path)
    result = extract(refs, i3d_feature_fn(ext, settings), cache_dir=cache_dir, settings=used,
                     batch_size=batch_size, progress=progress, desc="I3D real")
    result.require(2, "real videos")
    mu, sigma = feature_statistics(result.features)
    stats = Statistics(mu, sigma, len(result.keys), key, used, result.failed)
    if cache_path is not None:
        stats.save(cache_path)
    return stats
