"""Inception Score of class probabilities, computed as stylegan-v's video IS (C3D on UCF-101):

    IS = exp( E_x [ KL( p(y|x) ‖ p(y) ) ] )   per split, reported as mean ± std over the splits.
"""

from __future__ import annotations

import numpy as np
from scipy.special import rel_entr


def inception_score(probs: np.ndarray, splits: int = 10, shuffle_seed: int | None = 42) -> tuple[float, float]:
    """Return (mean, std) over `splits` parts of exp(mean over rows of KL(p(y|x) ‖ p(y))), p(y) the part's mean row.

    As stylegan-v: rows shuffled by `np.random.RandomState(shuffle_seed)` (None: kept in order), part i is rows
    `i·n//splits : (i+1)·n//splits`, std is numpy's population std. 0·log 0 counts as 0.
    """
    probs = np.array(probs, dtype=np.float64)  # a copy: the shuffle is in place
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be [N, classes], got shape {probs.shape}")
    n = len(probs)
    if splits < 1 or n < splits:
        raise ValueError(f"need at least as many videos as splits (≥ 1), got {n} videos and {splits} splits")
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(probs)
    scores = []
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        kl = rel_entr(part, marginal).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
