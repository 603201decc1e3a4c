"""Manifest rows → training batches: decoded clips, rendered pseudo-videos and stills, batched by kind.

A sample is `(frames, 3, R, R)` in [-1, 1] plus its caption. `video_clip` rows are decoded (N frames at
`sample_fps` inside [start_time, end_time]), `pseudo_video` rows are rendered with the pseudo-video stage's own
`render_pseudo_video`, `image` rows are one frame (the U-Net's F = 1 path). Videos and stills never share a batch.

Everything random about a sample — which row, where its clip starts, whether its caption is dropped — is a pure
function of the run's seed and the sample's place in the `BatchPlan`, so a resumed run sees exactly the samples an
uninterrupted one would, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset

from vidrd_io.images import open_image
from vidrd_data.manifest import Manifest
from vidrd_data.ops.motion import MOTION_TYPE, render_pseudo_video
from vidrd_io.video import open_video

log = logging.getLogger(__name__)

VIDEO, IMAGE = "video", "image"  # the two batch kinds
BATCH_KIND = {"video_clip": VIDEO, "pseudo_video": VIDEO, "image": IMAGE}
KIND_IDS = {VIDEO: 0, IMAGE: 1}
MAX_SUBSTITUTES = 10  # rows tried in place of one that fails to decode before the batch gives up
OPEN_VIDEOS = 4  # open readers each loader process keeps (clips of one long video come in runs, a few sources mix)

ROW_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("path", pa.string()),  # resolved against the manifest's root
        pa.field("caption", pa.string()),
        pa.field("start_time", pa.float64()),
        pa.field("end_time", pa.float64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("motion", MOTION_TYPE),
        pa.field("source", pa.string()),  # "<manifest index>:<source>": the unit `source_weight` applies to
        pa.field("source_weight", pa.float64()),
    ]
)


class DataError(Exception):
    """The manifests cannot feed this run (no usable rows of a kind the run needs, bad weights)."""


def read_rows(
    manifests: Sequence[str], root: str | None = None, split: str | None = "train", require_caption: bool = True,
    allow_partial: bool = False,
) -> tuple[pa.Table, Counter]:
    """Returns the usable rows of `manifests` in `ROW_SCHEMA`, and the count of rows left out, by reason.

    Usable: `status == "ok"`, a known kind, in `split` when the manifest has a `split` column (a manifest without
    one is all training data), and, with `require_caption`, a non-empty caption. A manifest without `source_weight`
    is one source of weight 1. A manifest with missing parts raises `IncompleteManifest` unless `allow_partial`.
    """
    tables, left_out = [], Counter()

    def keep(table: pa.Table, mask, reason: str) -> pa.Table:
        kept = table.filter(pc.fill_null(mask, False))
        left_out[reason] += table.num_rows - kept.num_rows
        return kept

    for index, path in enumerate(manifests):
        manifest = Manifest.open_for_work(path, root=root, allow_partial=allow_partial)
        table = manifest.read(status="ok")
        left_out["status failed"] += sum(s["failed"] for s in manifest.stats())
        left_out["status filtered"] += sum(s.get("filtered", 0) for s in manifest.stats())
        if split is not None and "split" in table.column_names:
            table = keep(table, pc.equal(table["split"], split), f"split not {split}")
        table = keep(table, pc.is_in(table["kind"], pa.array(list(BATCH_KIND))), "unknown kind")
        if require_caption:
            captioned = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table["caption"])), 0)
            table = keep(table, captioned, "no caption")
        tables.append(_to_row_schema(table, manifest, index))
    left_out = Counter({k: v for k, v in left_out.items() if v})
    return pa.concat_tables(tables) if tables else ROW_SCHEMA.empty_table(), left_out


def _to_row_schema(table: pa.Table, manifest: Manifest, index: int) -> pa.Table:
    n = table.num_rows
    names = table.column_names

    def column(name: str):
        return table[name] if name in names else pa.nulls(n, ROW_SCHEMA.field(name).type)

    sources = table["source"].to_pylist() if "source" in names else [None] * n
    weights = table["source_weight"].to_pylist() if "source_weight" in names else [None] * n
    return pa.Table.from_arrays(
        [
            column("sample_id"),
            column("kind"),
            pa.array([manifest.resolve(p) for p in table["source_path"].to_pylist()], pa.string()),
            column("caption"),
            column("start_time"),
            column("end_time"),
            column("fps"),
            column("width"),
            column("height"),
            column("motion").cast(MOTION_TYPE) if "motion" in names else pa.nulls(n, MOTION_TYPE),
            pa.array([f"{index}:{s or ''}" for s in sources], pa.string()),
            pa.array([1.0 if w is None else float(w) for w in weights], pa.float64()),
        ],
        schema=ROW_SCHEMA,
    )


# ---------------------------------------------------------------- which rows, in which order


@dataclass(frozen=True)
class KindPool:
    """The rows of one batch kind and how likely each is drawn (None: all equally, then epochs are permutations)."""

    rows: np.ndarray
    probs: np.ndarray | None


def kind_pools(rows: pa.Table) -> dict[str, KindPool]:
    """Returns the video and image pools of `rows`; a source is drawn in proportion to its weight, rows uniformly."""
    kinds = np.array([BATCH_KIND[k] for k in rows["kind"].to_pylist()])
    sources = np.array(rows["source"].to_pylist(), dtype=object)
    weights = rows["source_weight"].to_numpy(zero_copy_only=False)
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise DataError("source_weight must be finite and ≥ 0")
    pools = {}
    for kind in (VIDEO, IMAGE):
        index = np.flatnonzero(kinds == kind)
        if not len(index):
            continue
        _, inverse, counts = np.unique(sources[index], return_inverse=True, return_counts=True)
        per_row = weights[index] / counts[inverse]
        if per_row.sum() <= 0:
            raise DataError(f"every {kind} source has weight 0")
        uniform = np.allclose(per_row, per_row[0])
        pools[kind] = KindPool(index, None if uniform else per_row / per_row.sum())
    return pools


class BatchPlan:
    """The batches every process trains on, step by step; step s's batches are a pure function of (seed, s).

    Each step draws one kind for all processes (image with probability `image_ratio`), then process r takes the r-th
    `batch_sizes[kind]` rows of the next `world_size · batch_sizes[kind]` of that kind's stream. A kind's stream is a
    sequence of epochs, each as many draws as the kind has rows: a permutation when all rows are equally likely, else
    weighted draws with replacement. Iterating yields, from step `start_step` on (a resumed run's data position),
    lists of keys `(row, draw)` for `ManifestClips`.
    """

    KIND_CHUNK = 4096  # steps whose kinds come from one generator

    def __init__(self, pools: dict[str, KindPool], batch_sizes: dict[str, int], image_ratio: float, seed: int,
                 world_size: int = 1, rank: int = 0, start_step: int = 0):
        if not 0.0 <= image_ratio <= 1.0:
            raise DataError(f"image_ratio must be in [0, 1], got {image_ratio}")
        for kind, needed in ((IMAGE, image_ratio > 0), (VIDEO, image_ratio < 1)):
            if needed and kind not in pools:
                raise DataError(f"no usable {kind} rows, but image_ratio={image_ratio} asks for {kind} batches")
        self.pools, self.batch_sizes, self.image_ratio = pools, batch_sizes, image_ratio
        self.seed, self.world_size, self.rank, self.start_step = seed, world_size, rank, start_step
        self._orders: dict[str, tuple[int, np.ndarray]] = {}  # kind → (epoch, its order): the epoch being read

    def step_kinds(self, start: int, stop: int) -> np.ndarray:
        """Returns the kind of each step in [start, stop): True for an image batch."""
        if self.image_ratio in (0.0, 1.0):
            return np.full(max(stop - start, 0), self.image_ratio == 1.0)
        chunks = range(start // self.KIND_CHUNK, (stop - 1) // self.KIND_CHUNK + 1) if stop > start else []
        draws = [np.random.default_rng([self.seed, 0x6B1D, c]).random(self.KIND_CHUNK) for c in chunks]
        offset = start - (start // self.KIND_CHUNK) * self.KIND_CHUNK
        return (np.concatenate(draws)[offset: offset + stop - start] < self.image_ratio) if draws else np.zeros(0, bool)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        image_steps = int(self.step_kinds(0, self.start_step).sum())
        position = {IMAGE: image_steps, VIDEO: self.start_step - image_steps}  # steps of each kind so far
        step = self.start_step
        while True:
            for is_image in self.step_kinds(step, step + self.KIND_CHUNK):
                kind = IMAGE if is_image else VIDEO
                size = self.batch_sizes[kind]
                first = (position[kind] * self.world_size + self.rank) * size
                yield [self.key(kind, p) for p in range(first, first + size)]
                position[kind] += 1
            step += self.KIND_CHUNK

    def key(self, kind: str, position: int) -> tuple[int, int]:
        """Returns `(row, draw)` for position `position` of `kind`'s stream; `draw` seeds the sample's randomness."""
        pool = self.pools[kind]
        epoch, offset = divmod(position, len(pool.rows))
        return int(self.epoch_order(kind, epoch)[offset]), position * len(KIND_IDS) + KIND_IDS[kind]

    def epoch_order(self, kind: str, epoch: int) -> np.ndarray:
        """Returns the rows of `kind`'s stream in epoch `epoch`, in order."""
        if self._orders.get(kind, (None,))[0] != epoch:
            pool = self.pools[kind]
            rng = np.random.default_rng([self.seed, KIND_IDS[kind], epoch])
            order = rng.permutation(pool.rows) if pool.probs is None else rng.choice(pool.rows, len(pool.rows), p=pool.probs)
            self._orders[kind] = (epoch, order)
        return self._orders[kind][1]


def validation_batches(rows: pa.Table, batch_sizes: dict[str, int], limit: int) -> list[list[tuple[int, int]]]:
    """Returns fixed batches over the first `limit` rows of each kind (keys as `BatchPlan`'s, `draw` 0)."""
    kinds = np.array([BATCH_KIND[k] for k in rows["kind"].to_pylist()])
    batches = []
    for kind in (VIDEO, IMAGE):
        index = np.flatnonzero(kinds == kind)[:limit]
        size = batch_sizes[kind]
        batches += [[(int(i), 0) for i in index[j: j + size]] for j in range(0, len(index), size)]
    return batches


# ---------------------------------------------------------------- decoding


def clip_times(start: float, end: float, source_fps: float, num_frames: int, sample_fps: float,
               rng: np.random.Generator | None) -> np.ndarray:
    """Returns the times of `num_frames` frames `1/sample_fps` apart inside [start, end) — at a random start with
    `rng`, else centred. A clip too short for that span gets its frames spread evenly over the whole clip."""
    last_frame = end - 1.0 / source_fps if source_fps > 0 else end  # start time of the clip's last frame
    span = (num_frames - 1) / sample_fps
    room = last_frame - span - start
    if room < 0:
        return np.linspace(start, max(last_frame, start), num_frames)
    t0 = start + (rng.uniform(0.0, room) if rng is not None else room / 2)
    return t0 + np.arange(num_frames) / sample_fps


class OpenVideos:
    """The frames of a video at given times, from a small LRU of open readers of this process.

    Opening a long video costs far more than seeking in it (decord builds its frame index and decodes frame 0), so
    each DataLoader worker keeps its last `size` readers (`vidrd_io.video.open_video`: the same reader
    `read_frames` opens and drops each call, so the frames are the same). A reader is dropped (and so closed) when
    evicted. Readers never cross processes: after a fork the inherited ones are dropped unused, and pickling (spawn)
    carries none.
    """

    def __init__(self, size: int = OPEN_VIDEOS):
        self.size = size
        self.readers: OrderedDict[str, object] = OrderedDict()
        self.pid = os.getpid()
        self.opened = 0  # opens so far in this process (what the LRU saves is visible in tests and benchmarks)

    def read(self, path: str, times) -> np.ndarray:
        """Returns the frames of `path` shown at `times` (seconds) as uint8 (n, H, W, 3), upright."""
        if os.getpid() != self.pid:  # a forked worker: its parent's readers share file offsets with the parent
            self.readers, self.pid, self.opened = OrderedDict(), os.getpid(), 0
        read = self.readers.pop(path, None)
        if read is None:
            read = open_video(path)[1]
            self.opened += 1
        self.readers[path] = read  # most recently used last
        while len(self.readers) > self.size:  # size 0: every clip reopens its video
            self.readers.popitem(last=False)
        return read(times)

    def __getstate__(self) -> dict:
        return {"size": self.size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["size"])


def resize_center_crop(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """Returns uint8 frames (n, 3, H, W) resized (short side, antialiased) and centre-cropped to `resolution`²."""
    frames = TF.resize(frames, resolution, antialias=True)
    return TF.center_crop(frames, [resolution, resolution])


class ManifestClips(Dataset):
    """Samples of manifest rows by key `(row, draw)`: `{"pixel_values": (F, 3, R, R) in [-1, 1], "caption", ...}`.

    F is `num_frames` for videos and 1 for stills. With `train`, the clip start is random and the caption is
    dropped to "" with probability `uncond_prob` (classifier-free guidance); otherwise the clip is centred and the
    caption kept. A row that fails to decode is replaced by another row of its kind, chosen from `draw`, and
    reported in the sample's `skipped` list as `(sample_id, reason)`.
    """

    def __init__(self, rows: pa.Table, resolution: int = 256, num_frames: int = 8, sample_fps: float = 8.0,
                 uncond_prob: float = 0.1, seed: int = 0, train: bool = True, open_videos: int = OPEN_VIDEOS):
        if resolution < 8:
            raise DataError(f"resolution must be ≥ 8, got {resolution}")
        if num_frames < 1 or sample_fps <= 0:
            raise DataError(f"num_frames must be ≥ 1 and sample_fps > 0, got {num_frames}, {sample_fps}")
        if not 0.0 <= uncond_prob <= 1.0:
            raise DataError(f"uncond_prob must be in [0, 1], got {uncond_prob}")
        self.rows, self.resolution, self.num_frames, self.sample_fps = rows, resolution, num_frames, sample_fps
        self.uncond_prob, self.seed, self.train = uncond_prob, seed, train
        kinds = np.array([BATCH_KIND[k] for k in rows["kind"].to_pylist()])
        self.same_kind = {kind: np.flatnonzero(kinds == kind) for kind in (VIDEO, IMAGE)}
        self.videos = OpenVideos(open_videos)  # 0: reopen the video for every clip (what the benchmark compares)

    def __len__(self) -> int:
        return self.rows.num_rows

    def __getitem__(self, key: tuple[int, int]) -> dict:
        row_index, draw = key
        rng = np.random.default_rng([self.seed, draw])
        row, skipped = self.row(row_index), []
        for attempt in range(1, MAX_SUBSTITUTES + 1):
            try:
                frames = self.frames(row, rng if self.train else None)
                break
            except Exception as exc:  # noqa: BLE001 - any decode failure skips the row, the run goes on
                skipped.append((row["sample_id"], f"{type(exc).__name__}: {exc}"))
                pool = self.same_kind[BATCH_KIND[row["kind"]]]
                row = self.row(int(pool[np.random.default_rng([self.seed, draw, attempt]).integers(len(pool))]))
        else:
            raise RuntimeError(f"{MAX_SUBSTITUTES} rows in a row failed to decode; last: {skipped[-1][1]}")
        caption = (row["caption"] or "").strip()
        if self.train and rng.random() < self.uncond_prob:
            caption = ""
        pixels = resize_center_crop(torch.from_numpy(frames).permute(0, 3, 1, 2), self.resolution)
        return {
            "pixel_values": pixels.float() / 127.5 - 1.0,
            "caption": caption,
            "sample_id": row["sample_id"],
            "skipped": skipped,
        }

    def row(self, index: int) -> dict:
        return self.rows.slice(index, 1).to_pylist()[0]

    def frames(self, row: dict, rng: np.random.Generator | None) -> np.ndarray:
        """Returns the row's frames as uint8 (F, H, W, 3) at their stored size (F = 1 for stills)."""
        if row["kind"] == "image":
            return np.array(open_image(row["path"]))[None]
        if row["kind"] == "pseudo_video":
            width, height = row["width"], row["height"]
            scale = self.resolution / min(width, height)  # render at the training size, same aspect as stored
            size = (max(self.resolution, round(width * scale)), max(self.resolution, round(height * scale)))
            return render_pseudo_video(open_image(row["path"]), row["motion"], size, self.num_frames)
        start = row["start_time"] or 0.0
        end = row["end_time"]
        if end is None or end <= start:
            raise ValueError(f"clip has no span: start {start}, end {end}")
        times = clip_times(start, end, row["fps"] or 0.0, self.num_frames, self.sample_fps, rng)
        return self.videos.read(row["path"], times)


def collate(samples: list[dict]) -> dict:
    """Returns a batch: `pixel_values` (B, F, 3, R, R), `captions`, `sample_ids`, and every `skipped` row."""
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "captions": [s["caption"] for s in samples],
        "sample_ids": [s["sample_id"] for s in samples],
        "skipped": [entry for s in samples for entry in s["skipped"]],
    }


def make_loader(dataset: ManifestClips, batches, num_workers: int, pin_memory: bool = False,
                prefetch_factor: int = 4) -> torch.utils.data.DataLoader:
    """Returns a DataLoader over `batches` (lists of keys: a `BatchPlan` or fixed validation batches).

    Its own `generator` keeps worker seeding off the global torch RNG, whose state belongs to the training run.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=getattr(dataset, "collate", collate),  # a dataset of other samples (latents.py) brings its own
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        generator=torch.Generator(),
    )
