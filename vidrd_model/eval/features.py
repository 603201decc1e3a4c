"""Run a feature function over many videos in chunks, saving each finished chunk so an interrupted run resumes.

A chunk is saved as `cache_dir/<key>/chunk-000000.npz` (written to a temporary file, then renamed), where `key`
hashes the settings, the chunk size and the inputs (`inputs_digest`): any change starts a fresh set of chunks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vidrd_model.eval.videos import VideoRef, inputs_digest

log = logging.getLogger(__name__)


@dataclass
class FeatureResult:
    """Features of the videos that could be read, in input order; `failed` holds (key, reason) of the others."""

    features: np.ndarray  # float64 [N, D]
    keys: list[str]
    failed: list[tuple[str, str]]
    reused_chunks: int

    def require(self, minimum: int, what: str) -> None:
        """Raise ValueError when fewer than `minimum` videos could be read, quoting the first failure."""
        if len(self.keys) < minimum:
            total = len(self.keys) + len(self.failed)
            first = f"; first failure: {self.failed[0][0]}: {self.failed[0][1]}" if self.failed else ""
            raise ValueError(f"only {len(self.keys)} of {total} {what} could be read, need {minimum}{first}")


def cache_key(settings: dict, refs: list[VideoRef], batch_size: int) -> str:
    """Return the sha256 naming the chunk folder of these settings, chunk size and inputs."""
    payload = json.dumps({"settings": settings, "batch_size": batch_size, "inputs": inputs_digest(refs)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def extract(
    refs: list[VideoRef],
    fn: Callable[[list[VideoRef]], np.ndarray],
    *,
    cache_dir: str | Path | None,
    settings: dict,
    batch_size: int,
    progress: bool = True,
    desc: str = "",
) -> FeatureResult:
    """Return `fn`'s rows for `refs`, computed `batch_size` videos at a time and cached per chunk under `cache_dir`.

    When `fn` raises on a chunk, each of its videos is retried alone and those that still raise are recorded as
    failed with the error as reason. Interruptions (KeyboardInterrupt) are not caught: the chunks saved so far are
    reused by the next run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    chunk_dir = Path(cache_dir) / cache_key(settings, refs, batch_size) if cache_dir is not None else None
    features, keys, failed, reused = [], [], [], 0
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(desc or "features", total=len(refs))
        for index, start in enumerate(range(0, len(refs), batch_size)):
            chunk = refs[start : start + batch_size]
            path = chunk_dir / f"chunk-{index:06d}.npz" if chunk_dir is not None else None
            saved = _load_chunk(path, chunk) if path is not None else None
            if saved is not None:
                reused += 1
            else:
                saved = _run_chunk(fn, chunk)
                if path is not None:
                    _save_chunk(path, *saved)
            chunk_features, chunk_keys, chunk_failed = saved
            if len(chunk_keys):
                features.append(chunk_features)
            keys += chunk_keys
            failed += chunk_failed
            bar.update(task, advance=len(chunk))
    for key, reason in failed:
        log.warning("%s: %s", key, reason)
    stacked = np.concatenate(features).astype(np.float64) if features else np.zeros((0, 0))
    return FeatureResult(stacked, keys, failed, reused)


def _run_chunk(fn, chunk: list[VideoRef]) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    try:
        return _check_rows(fn(chunk), len(chunk)), [ref.key for ref in chunk], []
    except Exception as exc:  # noqa: BLE001 - one bad video must not cost the chunk: retry each alone
        if len(chunk) == 1:
            return np.zeros((0, 0)), [], [(chunk[0].key, error_reason(exc))]
    rows, keys, failed = [], [], []
    for ref in chunk:
        try:
            rows.append(_check_rows(fn([ref]), 1))
            keys.append(ref.key)
        except Exception as exc:  # noqa: BLE001 - recorded as this video's failure
            failed.append((ref.key, error_reason(exc)))
    return (np.concatenate(rows) if rows else np.zeros((0, 0))), keys, failed


def _check_rows(rows: np.ndarray, expected: int) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or len(rows) != expected:
        raise ValueError(f"feature function returned shape {rows.shape} for {expected} videos")
    return rows


def error_reason(exc: BaseException) -> str:
    """Return "ExceptionType: first line of its message", the reason recorded for a failed video."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _save_chunk(path: Path, features: np.ndarray, keys: list[str], failed: list[tuple[str, str]]) -> None:
    save_npz_atomic(
        path,
        features=features,
        keys=np.asarray(keys, dtype=str),
        failed_keys=np.asarray([k for k, _ in failed], dtype=str),
        failed_reasons=np.asarray([r for _, r in failed], dtype=str),
    )


def _load_chunk(path: Path, chunk: list[VideoRef]):
    """Return a saved chunk as (features, keys, failed), or None when absent, unreadable or for other videos."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            features, keys = data["features"], data["keys"].tolist()
            failed = list(zip(data["failed_keys"].tolist(), data["failed_reasons"].tolist()))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable cached chunk %s (%s)", path, exc)
        return None
    if sorted(keys + [k for k, _ in failed]) != sorted(ref.key for ref in chunk):
        return None
    return features, keys, failed


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write `arrays` as an .npz at `path` through a temporary file and a rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
