"""The export as a runner stage: shard i of a manifest's ok rows → one WebDataset tar or one Parquet file.

The runner gives a stage the rows of one shard at a time (`process_many`) and writes the shard's part and then its
done-marker; this stage writes the shard's media file, atomically, before handing the rows back, so a file whose
part has a done-marker is complete, and a shard killed part-way is redone whole on resume, to the same bytes
(fixed tar header times and owner, a deterministic single-threaded encoder).
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from vidrd_data.export.clips import bucket_name, clip_frames, mp4_bytes
from vidrd_data import manifest as mf
from vidrd_data.run.stage import Stage, StageAbort
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
        self._refuse_part_of_a_shard(index, rows)
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

    def _refuse_part_of_a_shard(self, index: int, rows: list[dict]) -> None:
        """Raise StageAbort unless `rows` are the whole shard: a shard's file is written from all its rows, so
        `vidrd-data retry` (which hands a stage only the failed rows) would write a file without the others."""
        meta = json.loads((Path(self.work_dir) / mf.MANIFEST_FILE).read_text(encoding="utf-8"))
        start = index * self.params["shard_size"]
        whole = range(start, min(start + self.params["shard_size"], int(meta["num_inputs"])))
        if [r["input_row"] for r in rows] != list(whole):
            raise StageAbort("an export's shards are written whole: its failed rows cannot be retried alone; fix "
                             "their sources and run the export again with --overwrite")

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
        groups: dict[str | None, list] = {}
        for row, clip in clips:
            groups.setdefault(clip["bucket"] if self.params["bucket"] else None, []).append((row, clip))
        written = {}
        for bucket, members in sorted(groups.items(), key=lambda kv: kv[0] or ""):
            name = shard_file("webdataset", index, bucket)

            def write(tmp, members=members):
                with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                    for row, clip in members:
                        meta = {n: row.get(n) for n in METADATA} | {"bucket": clip["bucket"]}
                        key = row["sample_id"]
                        _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
                        _add(tar, f"{key}.mp4", clip["mp4"])
                        _add(tar, f"{key}.txt", (row.get("caption") or "").encode("utf-8"))

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


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add one member as webdataset expects it (`KEY.EXT`, a sample's members adjacent), with fixed header fields.

    The stdlib's tarfile rather than `webdataset.TarWriter`: importing webdataset imports torch (over a second in
    every export worker) for what is a dozen lines of tar writing."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
    info.uname = info.gname = "vidrd"
    tar.addfile(info, io.BytesIO(data))
