"""Dedup keys: file fingerprints (hashed in a thread pool), content hashes, and first-occurrence selection.

A sample's content is its media file's fingerprint plus, for video clips, its span: the same still under
another name, or the same span of the same video from two sources, is one sample.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_CHUNK = 1 << 20
HASH_THREADS = min(32, 4 * (os.cpu_count() or 1))  # fingerprinting waits on storage, not on the GIL
KEY_BYTES = 16  # a content hash is 32 hex digits


def file_fingerprint(path: str) -> str:
    """Return a content hash of a media file: its size and three 1 MiB windows (start, middle, end).

    Identical files always match; hashing whole multi-GB videos would dominate the build for no gain. A URL or a
    tar/Parquet member is first made a local file (`members.local_file`, cached), so it hashes like a local copy.
    """
    from vidrd_io.members import local_file

    path = local_file(path)
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


SEMANTIC_BLOCK = 4096  # rows compared at once inside a cluster: a block × cluster similarity matrix


@dataclass
class SemanticDuplicates:
    """What semantic dedup found, aligned with the input rows (in their priority order)."""

    cluster: np.ndarray  # int64: the row's k-means cluster
    duplicate_of: np.ndarray  # int64: the earlier row it duplicates, -1 for a row that stays
    similarity: np.ndarray  # float32: cosine similarity to that row (to its most similar earlier row if it stays)


def default_clusters(n: int) -> int:
    """Return the number of k-means clusters for `n` rows: about √n, which balances the assignment (n·k) against
    the pairwise work inside clusters (n²/k), with at least 64 rows a centroid (fewer make k-means noise; under
    128 rows everything is one cluster, i.e. compared exactly)."""
    return max(1, min(n // 64, int(round(np.sqrt(n)))))


def semantic_duplicates(embeddings: np.ndarray, threshold: float, clusters: int | None = None, seed: int = 0,
                        niter: int = 10, chunk: int = 65536) -> SemanticDuplicates:
    """Return each row's cluster and, for a near duplicate, the earlier row it repeats (NeMo Curator's SemDeDup).

    SemDeDup (Abbas et al. 2023, as NeMo Curator runs it): spherical k-means over L2-normalised embeddings, then
    inside each cluster a row whose cosine similarity to any *earlier* row (earlier = higher priority; here the
    mix order, so the first occurrence wins as in the exact dedup) is ≥ `threshold` is a duplicate of the most
    similar such row. Rows in different clusters are never compared: the price of scaling, as in the method.
    `embeddings` may be float16 (1M × 768 then takes 1.5 GiB); chunks are made float32 and normalised as they
    are used. faiss does the k-means (trained on a sample of ≤ 256 rows per centroid) and the assignment.
    """
    import faiss

    n, d = embeddings.shape
    k = clusters or default_clusters(n)
    k = max(1, min(k, n))

    def rows(index) -> np.ndarray:
        x = np.ascontiguousarray(embeddings[index], dtype=np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    cluster = np.zeros(n, np.int64)
    duplicate_of = np.full(n, -1, np.int64)
    similarity = np.zeros(n, np.float32)
    if n == 0:
        return SemanticDuplicates(cluster, duplicate_of, similarity)
    if k > 1:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, min(n, 256 * k), replace=False))
        kmeans = faiss.Kmeans(d, k, niter=niter, spherical=True, seed=seed, verbose=False)
        kmeans.train(rows(sample))
        for start in range(0, n, chunk):
            _, assigned = kmeans.index.search(rows(slice(start, start + chunk)), 1)
            cluster[start:start + chunk] = assigned[:, 0]
    order = np.argsort(cluster, kind="stable")  # rows of one cluster together, in priority order
    bounds = np.flatnonzero(np.diff(cluster[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        x = rows(members)
        for start in range(1, len(members), SEMANTIC_BLOCK):
            stop = min(start + SEMANTIC_BLOCK, len(members))
            sims = x[start:stop] @ x[:stop].T  # each row against the rows before it (and a few after: masked)
            later = np.arange(stop)[None, :] >= np.arange(start, stop)[:, None]
            sims[later] = -np.inf
            best = sims.argmax(axis=1)
            best_sim = sims[np.arange(stop - start), best]
            similarity[members[start:stop]] = best_sim
            dup = best_sim >= threshold
            duplicate_of[members[start:stop][dup]] = members[best[dup]]
    return SemanticDuplicates(cluster, duplicate_of, similarity)


EMBEDDINGS = ("thumbnail", "histogram", "column:NAME")
EMBEDDED_FRAMES = 3  # a clip's embedding is the mean of frames at 1/6, 1/2 and 5/6 of its span


def histogram_embedding(kind: str, path: str | None, start: float | None, end: float | None) -> np.ndarray | None:
    """Return the segment stage's colour-histogram embedding (`HistogramEmbedder`) of a few frames of a clip (their
    mean, unit length) or of a still; None when the media cannot be read."""
    from vidrd_data.models.embedders import HistogramEmbedder
    from vidrd_io.images import open_image
    from vidrd_io.video import read_frames

    try:
        if kind == "video_clip":
            a, b = start or 0.0, end or 0.0
            frames = np.stack(read_frames(path, [a + (b - a) * (2 * k + 1) / (2 * EMBEDDED_FRAMES)
                                                 for k in range(EMBEDDED_FRAMES)]))
        else:
            frames = np.asarray(open_image(path).convert("RGB"))[None]
    except Exception:  # noqa: BLE001 - a row that cannot be read is simply not compared
        return None
    v = HistogramEmbedder().embed(frames).mean(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def kept_embeddings(recipe, files: list, keep: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return (flat positions, float32 unit rows) of the kept rows that have an embedding, in mix order.

    `recipe.near_dup_embedding`: `thumbnail` (weight-free 16×16 still), `histogram` (the segment stage's colour
    embedder on a few frames), or `column:NAME` (a list<float> column the sources carry, e.g. CLIP embeddings a
    stage wrote); a row without one (unreadable, null) is not compared and stays.
    """
    import pyarrow.parquet as pq

    from vidrd_data import manifest as mf

    how = recipe.near_dup_embedding
    positions, vectors = [], []
    offset = 0
    for path, mask in zip(files, keep):
        rows = np.flatnonzero(mask)
        if how.startswith("column:"):
            column = pq.read_table(path, columns=[how[len("column:"):]]).column(0).take(pa.array(rows))
            column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
            if len(column) and column.null_count == 0 and (lengths == lengths[0]).all():  # the usual case: one block
                flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
                found = list(flat.reshape(len(column), -1))
            else:
                found = [None if v is None else np.asarray(v, np.float32) for v in column.to_pylist()]
        else:
            embed = thumbnail_embedding if how == "thumbnail" else histogram_embedding
            table = pq.read_table(path, columns=["kind", "source_path", "start_time", "end_time"]).take(pa.array(rows))
            found = [embed(kind, mf.resolve(p, recipe.root), start, end)
                     for kind, p, start, end in zip(*(table[c].to_pylist() for c in table.column_names))]
        for row, v in zip(rows, found):
            if v is not None and np.isfinite(v).all() and np.linalg.norm(v) > 0:
                positions.append(offset + row)
                vectors.append(v)
        offset += len(mask)
    if not vectors:
        return np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    if len({len(v) for v in vectors}) > 1:
        raise ValueError(f"near_dup_embedding {how}: the embeddings have different lengths")
    return np.asarray(positions, np.int64), np.stack(vectors).astype(np.float32)


def split_components(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Return, for every unit in `pairs`, the least unit of its connected component (union-find): units joined
    by a near-duplicate pair go to one side of the split together."""
    parent: dict[str, str] = {}

    def find(u: str) -> str:
        parent.setdefault(u, u)
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {u: find(u) for u in parent}
