"""Run a feature function over many videos in chunks, saving each finished chunk so an interrupted run resumes.

A chunk is saved as `cache_dir/<key>/chunk-000000.npz` (written to a temporary file, then renamed), where `key`
hashes the settings, the chunk size and the inputs (`inputs_digest`): any change starts a fresh set of chunks.

Only decoding may fail per video (`decode_then_run`): a video that cannot be decoded is recorded as failed and the
rest of its chunk goes on. Anything the network raises (CUDA out of memory, a wrong TorchScript file, a bad output
shape) stops the run and no chunk is saved for it, so a rerun retries it rather than reading a "failed" video
from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vidrd_io.fs import atomic_write
from vidrd_io.video import VideoError
from vidrd_model.eval.videos import VideoRef, inputs_digest

log = logging.getLogger(__name__)


@dataclass
class FeatureResult:
    """Features of the videos that could be read, in input order; `failed` holds (key, reason) of the others."""

    features: np.ndarray  # float64 [N, D]
    keys: list[str]
    failed: list[tuple[str, str]]
    reused_chunks: int
    transient_failures: bool = False  # some failure may not recur (an unreadable file): its chunk was not saved

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


@dataclass
class ChunkFeatures:
    """What a feature function returns for a chunk when some of its videos could not be decoded: the rows of the
    others (`keys`, in chunk order) and (key, reason) of the failed. `cacheable` is False when a failure may be
    transient (an OSError reading the file): such a chunk is not saved, so the next run tries those videos again."""

    rows: np.ndarray  # [len(keys), D]
    keys: list[str]
    failed: list[tuple[str, str]]
    cacheable: bool = True


def decode_then_run(load: Callable[[VideoRef], np.ndarray], network: Callable[[np.ndarray], np.ndarray]):
    """Return fn(chunk) for `extract`: each video decoded alone by `load(ref)`, then `network(np.stack(clips))`
    called once on the decoded ones.

    Only decode errors are caught, per video: `VideoError` (including `VideoTooShort`: the file's content; cached)
    and `OSError` (a missing or unreadable file: recorded, but the chunk is not cached). The network's exceptions
    propagate.
    """

    def fn(chunk: list[VideoRef]) -> ChunkFeatures:
        clips, keys, failed, cacheable = [], [], [], True
        for ref in chunk:
            try:
                clips.append(load(ref))
            except VideoError as exc:
                failed.append((ref.key, error_reason(exc)))
            except OSError as exc:
                failed.append((ref.key, error_reason(exc)))
                cacheable = False
            else:
                keys.append(ref.key)
        rows = network(np.stack(clips)) if clips else np.zeros((0, 0))
        return ChunkFeatures(rows, keys, failed, cacheable)

    return fn


def extract(
    refs: list[VideoRef],
    fn: Callable[[list[VideoRef]], "np.ndarray | ChunkFeatures"],
    *,
    cache_dir: str | Path | None,
    settings: dict,
    batch_size: int,
    progress: bool = True,
    desc: str = "",
) -> FeatureResult:
    """Return `fn`'s rows for `refs`, computed `batch_size` videos at a time and cached per chunk under `cache_dir`.

    `fn(chunk)` returns either one row per video or a `ChunkFeatures` naming the videos it could not decode (see
    `decode_then_run`). Whatever `fn` raises propagates and that chunk is not saved; interruptions
    (KeyboardInterrupt) included: the chunks saved so far are reused by the next run.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    chunk_dir = Path(cache_dir) / cache_key(settings, refs, batch_size) if cache_dir is not None else None
    features, keys, failed, reused, transient = [], [], [], 0, False
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
                result = _run_chunk(fn, chunk)
                if path is not None and result.cacheable:
                    _save_chunk(path, result.rows, result.keys, result.failed)
                transient |= not result.cacheable
                saved = result.rows, result.keys, result.failed
            chunk_features, chunk_keys, chunk_failed = saved
            if len(chunk_keys):
                features.append(chunk_features)
            keys += chunk_keys
            failed += chunk_failed
            bar.update(task, advance=len(chunk))
    for key, reason in failed:
        log.warning("%s: %s", key, reason)
    stacked = np.concatenate(features).astype(np.float64) if features else np.zeros((0, 0))
    return FeatureResult(stacked, keys, failed, reused, transient)


def _run_chunk(fn, chunk: list[VideoRef]) -> ChunkFeatures:
    result = fn(chunk)
    if not isinstance(result, ChunkFeatures):
        return ChunkFeatures(_check_rows(result, len(chunk)), [ref.key for ref in chunk], [])
    if sorted(result.keys + [k for k, _ in result.failed]) != sorted(ref.key for ref in chunk):
        raise ValueError("feature function's keys and failures do not cover its chunk")
    rows = _check_rows(result.rows, len(result.keys)) if result.keys else np.zeros((0, 0))
    return ChunkFeatures(rows, list(result.keys), list(result.failed), result.cacheable)


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
    except UNREADABLE_NPZ as exc:
        log.warning("ignoring unreadable cached chunk %s (%s); recomputing it", path, error_reason(exc))
        return None
    if sorted(keys + [k for k, _ in failed]) != sorted(ref.key for ref in chunk):
        return None
    return features, keys, failed


# What np.load raises on a truncated, corrupt or foreign .npz (or one missing an array).
UNREADABLE_NPZ = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write `arrays` as an .npz at `path` through a temporary file and a rename: a reader never sees half a file.
    (np.savez gets a file object, so no ".npz" is appended to the temporary name.)"""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(Path(path), write)
