"""The export as a runner stage: shard i of a manifest's ok rows → one WebDataset tar or one Parquet file.

The runner gives a stage the rows of one shard at a time (`process_many`) and writes the shard's part and then its
done-marker; this stage writes the shard's media file, atomically, before handing the rows back, so a file whose
part has a done-marker is complete, and a shard killed part-way is redone whole on resume, to the same bytes
(fixed tar header times and owner, a deterministic single-threaded encoder).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from vidrd_data.export.clips import bucket_name, clip_frames, mp4_bytes
from vidrd_data.run.stage import Stage
from vidrd_io.fs import atomic_write

log = logging.getLogger(__name__)

TAR_MTIME = 946684800.0  # 2000-01-01: a fixed header time, so a redone shard is byte-identical
SHARD_DIGITS = 5
HF_DIR = "data"  # the hf format's Parquet shards, where `load_dataset(DIR)` looks for them
# metadata of a sample: the manifest columns a trainer reads (json in a tar, columns in hf)
METADATA = ("sample_id", "kind", "caption", "caption_source", "label", "source_path", "source_dataset", "start_time",
            "end_time", "fps", "num_frames", "width", "height")
HF_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string()), pa.field("kind", pa.string()), pa.field("caption", pa.string()),
    pa.field("caption_source", pa.string()), pa.field("label", pa.string()), pa.field("source_path", pa.string()),
    pa.field("source_dataset", pa.string()), pa.field("start_time", pa.float64()), pa.field("end_time", pa.float64()),
    pa.field("fps", pa.float64()), pa.field("num_frames", pa.int64()), pa.field("width", pa.int64()),
    pa.field("height", pa.int64()), pa.field("bucket", pa.string()), pa.field("mp4", pa.binary()),
])


def shard_file(fmt: str, index: int, bucket: str | None = None) -> str:
    """Return where shard `index` of an export is written, relative to the export folder."""
    name = f"{index:0{SHARD_DIGITS}d}"
    if fmt == "hf":
        return f"{HF_DIR}/train-{name}.parquet"
    return f"{bucket}/{name}.tar" if bucket else f"{name}.tar"


class ExportShards(Stage):
    """One output row per exported manifest row: where its clip went (`export_file`, `export_key`), or why not."""

    name = "export"
    kind = "video_clip"  # the runner's default; each row keeps its own kind
    fields = [pa.field("export_file", pa.string()), pa.field("export_key", pa.string()),
              pa.field("bucket", pa.string())]

    def input_sample_id(self, row: dict) -> str:
        """Return the exported row's own id: a failed export row names the manifest sample it stands for."""
        return row["sample_id"]

    def process_many(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        if not rows:
            return
        p = self.params
        index = rows[0]["input_row"] // p["shard_size"]
        encoded = [(row, self._encode(row)) for row in rows]
        ok = [(row, clip) for row, clip in encoded if not isinstance(clip, Exception)]
        written = self._write_webdataset(index, ok) if p["format"] == "webdataset" else self._write_hf(index, ok)
        for row, clip in encoded:
            if isinstance(clip, Exception):
                yield row, clip
                continue
            out = {name: row.get(name) for name in METADATA}
            out.update(export_file=written[row["sample_id"]], export_key=row["sample_id"], bucket=clip["bucket"])
            yield row, [out]

    def _encode(self, row: dict) -> dict | Exception:
        """Return a row's clip (mp4 bytes, bucket, size) or the exception that stopped it (the row then fails)."""
        try:
            frames, fps = clip_frames(row, self.resolve(row["source_path"]))
            n, h, w = frames.shape[:3]
            return {"mp4": mp4_bytes(frames, fps, self.params["crf"]), "bucket": bucket_name(w, h, n)}
        except Exception as exc:  # noqa: BLE001 - one unreadable clip fails its row, not the shard
            return exc

    def _out(self) -> Path:
        return Path(self.work_dir).parent  # the runner's manifest is DIR/_export; the files go in DIR

    def _write_webdataset(self, index: int, clips: list[tuple[dict, dict]]) -> dict[str, str]:
        import webdataset as wds

        groups: dict[str | None, list] = {}
        for row, clip in clips:
            groups.setdefault(clip["bucket"] if self.params["bucket"] else None, []).append((row, clip))
        written = {}
        for bucket, members in sorted(groups.items(), key=lambda kv: kv[0] or ""):
            name = shard_file("webdataset", index, bucket)

            def write(tmp, members=members):
                with wds.TarWriter(tmp, user="vidrd", group="vidrd", mtime=TAR_MTIME) as sink:
                    for row, clip in members:
                        meta = {name: row.get(name) for name in METADATA} | {"bucket": clip["bucket"]}
                        sink.write({"__key__": row["sample_id"], "mp4": clip["mp4"], "txt": row.get("caption") or "",
                                    "json": json.dumps(meta, sort_keys=True).encode("utf-8")})

            atomic_write(self._out() / name, write)
            written.update({row["sample_id"]: name for row, _ in members})
        return written

    def _write_hf(self, index: int, clips: list[tuple[dict, dict]]) -> dict[str, str]:
        name = shard_file("hf", index)
        records = [{**{n: row.get(n) for n in METADATA}, "bucket": clip["bucket"], "mp4": clip["mp4"]}
                   for row, clip in clips]
        table = pa.Table.from_pylist(records, schema=HF_SCHEMA)
        atomic_write(self._out() / name, lambda tmp: pq.write_table(table, tmp))
        return {row["sample_id"]: name for row, _ in clips}
