"""Dedup keys: file fingerprints (hashed in a thread pool), content hashes, and first-occurrence selection.

A sample's content is its media file's fingerprint plus, for video clips, its span: the same still under
another name, or the same span of the same video from two sources, is one sample.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_CHUNK = 1 << 20
HASH_THREADS = min(32, 4 * (os.cpu_count() or 1))  # fingerprinting waits on storage, not on the GIL
KEY_BYTES = 16  # a content hash is 32 hex digits


def file_fingerprint(path: str) -> str:
    """Return a content hash of a media file: its size and three 1 MiB windows (start, middle, end).

    Identical files always match; hashing whole multi-GB videos would dominate the build for no gain.
    """
    from vidrd_io.images import read_bytes

    if not os.path.exists(path):  # a member of a tar shard
        return hashlib.sha256(read_bytes(path)).hexdigest()[:32]
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - _CHUNK // 2), max(0, size - _CHUNK)}):
            f.seek(offset)
            h.update(f.read(_CHUNK))
    return h.hexdigest()[:32]


def _fingerprint_or_error(path: str | None) -> tuple[str | None, str | None]:
    if path is None:
        return None, "no source_path"
    try:
        return file_fingerprint(path), None
    except Exception as exc:  # noqa: BLE001 - an unreadable file drops its rows (counted), it does not stop the mix
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


class Fingerprinter:
    """Fingerprints files in a thread pool, remembering the last `memory` paths (rows of one video are adjacent)."""

    def __init__(self, threads: int = HASH_THREADS, memory: int = 200_000):
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fingerprint")
        self._memory = memory
        self._known: dict[str, tuple[str | None, str | None]] = {}

    def __enter__(self) -> "Fingerprinter":
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown()

    def __call__(self, paths: pa.Array) -> tuple[pa.Array, pa.Array]:
        """Return (fingerprint, error) string arrays aligned with `paths` (resolved paths; a null path is an error)."""
        unique = pc.unique(paths)
        values = unique.to_pylist()
        todo = [p for p in values if p not in self._known]
        if len(self._known) + len(todo) > self._memory:
            self._known.clear()
            todo = values
        self._known.update(zip(todo, self._pool.map(_fingerprint_or_error, todo)))
        results = [self._known[p] for p in values]
        where = pc.index_in(paths, value_set=unique, skip_nulls=False)
        fingerprints = pa.array([r[0] for r in results], pa.string()).take(where)
        errors = pa.array([r[1] for r in results], pa.string()).take(where)
        return fingerprints, errors


def content_hashes(kinds: list, fingerprints: list, starts_f: list, ends_f: list, starts_t: list, ends_t: list) -> list:
    """Return each row's content hash (None where its file had no fingerprint).

    Python's own `str` of the span values, as the mix has always hashed them: Arrow's float formatting differs
    (`1.0` vs `1`), and changing it would change every content hash of existing builds.
    """
    out = []
    for kind, fp, sf, ef, st, et in zip(kinds, fingerprints, starts_f, ends_f, starts_t, ends_t):
        if fp is None:
            out.append(None)
            continue
        span = "" if kind in ("image", "pseudo_video") else f"{sf}:{ef}:{st}:{et}"
        out.append(hashlib.sha256(f"{kind}|{fp}|{span}".encode()).hexdigest()[:32])
    return out


def hash_keys(hashes: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Return 32-hex-digit content hashes (no nulls) as 16-byte numpy keys (`V16`), for sorting."""
    if isinstance(hashes, pa.ChunkedArray):
        hashes = hashes.combine_chunks()
    hashes = hashes.cast(pa.large_string())
    n = len(hashes)
    offsets = np.frombuffer(hashes.buffers()[1], np.int64)[hashes.offset:hashes.offset + n + 1]
    if n == 0:
        return np.zeros(0, dtype=f"V{KEY_BYTES}")
    if hashes.null_count or offsets[-1] - offsets[0] != 2 * KEY_BYTES * n:
        raise ValueError("content hashes must be 32 hex digits each")
    digits = memoryview(hashes.buffers()[2])[offsets[0]:offsets[-1]]  # contiguous: all the same length
    return np.frombuffer(bytes.fromhex(bytes(digits).decode("ascii")), dtype=f"V{KEY_BYTES}")


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Return the positions in `keys` of each key's first occurrence (a stable sort keeps the earliest)."""
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    _, first = np.unique(keys, return_index=True)  # return_index sorts stably: the first position per key
    return first


def unit_hashes(prefix: str, values: list[str]) -> np.ndarray:
    """Return each `prefix + value` mapped to [0, 1) uniformly and deterministically (blake2b, 64 bits).

    The same float as `int.from_bytes(digest, "little") / 2**64`: uint64 → float64 rounds to nearest exactly
    like Python's int division, and dividing by a power of two is exact.
    """
    digests = b"".join(hashlib.blake2b(f"{prefix}{v}".encode(), digest_size=8).digest() for v in values)
    return np.frombuffer(digests, "<u8").astype(np.float64) / 2**64


# ---------------------------------------------------------------- near duplicates


def thumbnail_embedding(kind: str, path: str | None, start: float | None, end: float | None) -> np.ndarray | None:
    """Return a weight-free embedding for near-duplicate search: the still (a clip's middle frame) at 16×16,
    mean-centred, unit length; None when the media cannot be read."""
    from PIL import Image

    from vidrd_io.images import open_image
    from vidrd_io.video import read_frames

    try:
        if kind == "video_clip":
            img = Image.fromarray(read_frames(path, [((start or 0.0) + (end or 0.0)) / 2])[0])
        else:
            img = open_image(path)
    except Exception:  # noqa: BLE001 - a row that cannot be read is simply not compared
        return None
    v = np.asarray(img.convert("RGB").resize((16, 16), Image.BILINEAR), np.float32).ravel()
    v -= v.mean()
    n = np.linalg.norm(v)
    return v / n if n > 0 else None


def drop_near_duplicates(recipe, files: list[list], keep: list[np.ndarray], per_source: dict) -> None:
    """Unset kept rows whose thumbnail is within `near_dup_threshold` cosine of an earlier kept row; count them.

    A plain O(n²) greedy pass over 768-d thumbnails, in mix order: fine up to ~100k rows; beyond that use an
    ANN index (faiss).
    """
    import pyarrow.parquet as pq

    from vidrd_data import manifest as mf

    kept = np.zeros((1024, 16 * 16 * 3), np.float32)
    n_kept = 0
    f = 0
    for source, paths in zip(recipe.sources, files):
        dropped = 0
        for path in paths:
            mask = keep[f]
            rows = np.flatnonzero(mask)
            table = pq.read_table(path, columns=["kind", "source_path", "start_time", "end_time"]).take(pa.array(rows))
            for row, kind, p, start, end in zip(rows, *(table[c].to_pylist() for c in table.column_names)):
                v = thumbnail_embedding(kind, mf.resolve(p, recipe.root), start, end)
                if v is not None and n_kept and float(np.max(kept[:n_kept] @ v)) >= recipe.near_dup_threshold:
                    mask[row] = False
                    dropped += 1
                    continue
                if v is not None:
                    if n_kept == len(kept):
                        kept = np.concatenate([kept, np.zeros_like(kept)])
                    kept[n_kept] = v
                    n_kept += 1
            f += 1
        per_source[source.name]["near_duplicates"] = dropped
