"""video2dataset's outputs as stage inputs: its webdataset tar shards of videos and its Parquet shards.

video2dataset (github.com/iejMac/video2dataset, `data_writer.py`) writes, per shard `NNNNN`:

- webdataset format: `NNNNN.tar` holding per sample `KEY.mp4` (or another video extension), `KEY.txt` (the caption,
  when a caption column was given) and `KEY.json` (its meta: `url`, `key`, `status`, `error_message`, `caption`, the
  saved extra columns, subsampler metadata), beside `NNNNN.parquet` with one meta row per *attempted* sample, those
  that failed to download included (`status` is then not `success`);
- parquet format: `NNNNN.parquet` with `key`, the video bytes in a column named by its extension (`mp4`), `txt`
  and the meta columns.

Every sample becomes one input row: `source_path` is `NNNNN.tar#KEY.mp4` (or `NNNNN.parquet#KEY.mp4`), decoded from
a cached local copy when the stage runs (`vidrd_io.members`); `caption` comes from `KEY.txt`, else the json's
`caption`; `key` and `url` are carried. Nothing is dropped silently: a sample video2dataset failed to download, a
key with sidecars but no video, a sidecar row whose video is not in the tar, and an unreadable or truncated tar
each become a row carrying why in `_input_error`, which the stage turns into a failed row.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidrd_data import manifest as mf
from vidrd_data.sources import InputError, sample_key, text_problem, text_values
from vidrd_io.images import TAR_MEMBER_SEP
from vidrd_io.video import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

VIDEO_COLUMNS = tuple(ext.lstrip(".") for ext in VIDEO_EXTENSIONS)  # parquet format: the video's column


def read_input(input: str, *, source_dataset: str | None = None) -> tuple[pa.Table, Path] | None:
    """Return the input rows and root of a video2dataset output (a folder, a glob, one tar or one Parquet shard),
    or None when `input` is not one (the caller tries its other readers)."""
    tars, parquets = _shards(input)
    if tars:
        return _tar_rows(tars, source_dataset)
    if parquets:
        return _parquet_rows(parquets, source_dataset)
    return None


def _shards(input: str) -> tuple[list[Path], list[Path]]:
    """Return the tar shards, else the Parquet shards holding videos, that `input` names (both empty: not ours)."""
    path = Path(input)
    if path.is_dir() and mf.is_manifest(path):
        return [], []
    if path.is_dir():
        matched = sorted(path.iterdir())
    elif any(c in input for c in "*?["):
        matched = sorted(Path(p) for p in glob.glob(input))
    elif path.suffix == ".tar" and path.is_file():
        return [path], []
    elif path.suffix == ".parquet" and path.is_file():
        return [], [path] if _video_column(path) is not None else []
    else:
        return [], []
    found = [p for p in matched if p.suffix == ".tar"]
    if found:
        return _video_tars(found, [p for p in matched if p.suffix.lower() in VIDEO_EXTENSIONS], input)
    return [], [p for p in matched if p.suffix == ".parquet" and _video_column(p) is not None]


def _video_tars(tars: list[Path], loose: list[Path], input: str) -> tuple[list[Path], list[Path]]:
    """Return `tars` as video2dataset shards when no loose video is beside them; none when the tars are not
    video2dataset's (the loose videos are the input); raise InputError when both are there (either would be lost)."""
    if not loose:
        return tars, []
    if not any(_video_shard(t) for t in tars):
        return [], []
    raise InputError(f"{input} holds {len(loose)} loose video file(s) (e.g. {loose[0].name}) beside "
                     f"{len(tars)} video2dataset tar shard(s) (e.g. {tars[0].name}): put them in separate folders")


def _video_shard(tar: Path, headers: int = 16) -> bool:
    """Return whether a tar looks like video2dataset's: an `NNNNN.parquet` beside it or a video among its first
    members."""
    if tar.stem.isdigit() and tar.with_suffix(".parquet").is_file():
        return True
    try:
        with tarfile.open(tar, "r") as archive:
            for _, info in zip(range(headers), archive):
                if Path(info.name).suffix.lower() in VIDEO_EXTENSIONS:
                    return True
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def _video_column(path: Path) -> str | None:
    """Return the column of a video2dataset Parquet shard that holds the videos, or None (a plain table)."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):
        return None
    if "key" not in schema.names:
        return None
    binary = {f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)}
    return next((c for c in VIDEO_COLUMNS if c in binary), None)


class _Rows:
    """Input rows as they are found, one per sample (ok or with why it cannot be used)."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {"source_path": [], "caption": [], "key": [], "url": [], mf.INPUT_ERROR: []}

    def add(self, source_path: str, key: str, caption: str | None, url: str | None, error: str | None) -> None:
        for name, value in zip(self.columns, (source_path, caption, key, url, error)):
            self.columns[name].append(value)

    def table(self, source_dataset: str) -> pa.Table:
        n = len(self.columns["source_path"])
        errors = self.columns.pop(mf.INPUT_ERROR)
        columns = {
            "source_path": self.columns["source_path"],
            "source_dataset": [source_dataset] * n,
            "caption": self.columns["caption"],
            "caption_source": ["original"] * n,
            "key": self.columns["key"],
            "url": self.columns["url"],
        }
        if any(errors):
            columns[mf.INPUT_ERROR] = errors
        return pa.table(columns, schema=pa.schema([(name, pa.string()) for name in columns]))


def _tar_rows(tars: list[Path], source_dataset: str | None) -> tuple[pa.Table, Path]:
    root = Path(os.path.commonpath([str(t.resolve().parent) for t in tars]))
    rows = _Rows()
    for tar_path in tars:
        stored = mf.relativize(tar_path.resolve(), root)
        samples, problem = _scan_tar(tar_path)
        attempted = _sidecar_meta(tar_path.with_suffix(".parquet"))
        for key in sorted(samples):
            sample = samples[key]
            meta, meta_error = _meta(sample.get(".json"), key)
            caption, caption_error = _caption(sample.get(".txt"), meta, key)
            video = sample.get("video")
            error = None if video else (f"no video member: {problem}" if problem else
                                        f"video2dataset sample {key} has no video member in {tar_path.name}")
            location = f"{stored}{TAR_MEMBER_SEP}{video or key}"
            rows.add(location, key.rsplit("/", 1)[-1], caption, _text(meta.get("url")),
                     error or meta_error or caption_error)
        seen = {k.rsplit("/", 1)[-1] for k in samples}
        for key, meta in attempted.items():
            if key in seen:
                continue
            if meta.get("status") not in (None, "success"):
                error = (f"video2dataset did not get it ({meta.get('status')}: "
                         f"{str(meta.get('error_message') or 'no message')[:200]})")
            elif problem:
                error = f"not read: {problem}"
            else:
                error = f"listed in {tar_path.with_suffix('.parquet').name} but not in {tar_path.name}"
            rows.add(f"{stored}{TAR_MEMBER_SEP}{key}", key, _text(meta.get("caption")), _text(meta.get("url")), error)
        if problem:
            rows.add(stored, "", None, None, problem)  # the unreadable rest of the tar: one row says so
    if not rows.columns["source_path"]:
        raise InputError(f"no samples in {len(tars)} video2dataset tar shard(s) under {root}")
    return rows.table(source_dataset or root.name), root


def _scan_tar(tar_path: Path) -> tuple[dict[str, dict], str | None]:
    """Return the samples of a tar (key → video member name and sidecar bytes) and, when it is cut short or
    corrupt, why: the samples before the break are kept.

    The headers are read by seeking over the members' data, so listing a shard reads a few kB, not its videos;
    tarfile then takes a missing end as the archive's end, so a cut is found from the sizes and the end marker.
    """
    samples: dict[str, dict] = {}
    size = tar_path.stat().st_size
    try:
        with tarfile.open(tar_path, "r:") as tar:  # uncompressed, as video2dataset writes them: members seekable
            for member in tar:
                if member.offset_data + member.size > size:
                    return samples, f"tar shard {tar_path.name} is cut short in {member.name} " \
                                    f"(after {len(samples)} sample(s))"
                if not member.isfile():
                    continue
                key, ext = sample_key(member.name)
                sample = samples.setdefault(key, {})
                if ext in VIDEO_EXTENSIONS:
                    sample["video"] = member.name
                elif ext in (".txt", ".json"):
                    sample[ext] = tar.extractfile(member).read()
            end = tar.offset
    except (tarfile.TarError, OSError, EOFError) as exc:
        return samples, f"tar shard {tar_path.name} is unreadable after {len(samples)} sample(s): " \
                        f"{type(exc).__name__}: {exc}"
    with open(tar_path, "rb") as f:
        f.seek(end)
        marker = f.read(2 * tarfile.BLOCKSIZE)
    if marker != bytes(2 * tarfile.BLOCKSIZE):
        return samples, f"tar shard {tar_path.name} is cut short (no end-of-archive marker after " \
                        f"{len(samples)} sample(s))"
    return samples, None


def _sidecar_meta(path: Path) -> dict[str, dict]:
    """Return video2dataset's per-shard meta rows by key (every attempted sample), or nothing without the file."""
    if not path.is_file():
        return {}
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        log.warning("cannot read video2dataset meta %s (%s); using the tar alone", path, exc)
        return {}
    if "key" not in table.column_names:
        return {}
    keep = [c for c in ("key", "url", "caption", "status", "error_message") if c in table.column_names]
    return {row["key"]: row for row in table.select(keep).to_pylist() if row["key"]}


def _meta(raw: bytes | None, key: str) -> tuple[dict, str | None]:
    if raw is None:
        return {}, None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return {}, f"{key}.json is not UTF-8 JSON ({type(exc).__name__})"
    return (meta, None) if isinstance(meta, dict) else ({}, f"{key}.json is a JSON {type(meta).__name__}, not an object")


def _caption(raw: bytes | None, meta: dict, key: str) -> tuple[str | None, str | None]:
    """Return the caption of a sample (its `.txt`, else the json's `caption`) and why it is unusable, if it is."""
    if raw is not None:
        try:
            caption = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            return None, f"{key}.txt is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
    else:
        caption = meta.get("caption")
        if caption is not None and not isinstance(caption, str):
            return None, f"caption of {key} in its .json is a {type(caption).__name__}, not text"
    caption = caption or None  # video2dataset writes "" when there is no caption
    error = text_problem(caption, f"caption of {key}")
    return (None, error) if error else (caption, None)


def _text(value) -> str | None:
    return None if value is None else str(value)


def _parquet_rows(parquets: list[Path], source_dataset: str | None) -> tuple[pa.Table, Path]:
    root = Path(os.path.commonpath([str(p.resolve().parent) for p in parquets]))
    rows = _Rows()
    for path in parquets:
        stored = mf.relativize(path.resolve(), root)
        column = _video_column(path)
        names = pq.read_schema(path).names
        meta_cols = [c for c in ("key", "txt", "caption", "url", "status", "error_message") if c in names]
        table = pq.read_table(path, columns=meta_cols)  # the videos stay on disk: read per row when decoded
        present = _has_video(path, column)
        keys = text_values(table["key"], "key")[0]
        captions, caption_errors = (text_values(table["txt"], "caption") if "txt" in names
                                    else text_values(table["caption"], "caption") if "caption" in names
                                    else ([None] * len(keys), [None] * len(keys)))
        for i, key in enumerate(keys):
            status = table["status"][i].as_py() if "status" in names else None
            error = caption_errors[i]
            if key is None:
                error = f"row {i} of {path.name} has no key"
            elif status not in (None, "success"):
                message = table["error_message"][i].as_py() if "error_message" in names else None
                error = f"video2dataset did not get it ({status}: {str(message or 'no message')[:200]})"
            elif not present[i]:
                error = f"row {i} of {path.name} has no {column} bytes"
            url = table["url"][i].as_py() if "url" in names else None
            rows.add(f"{stored}{TAR_MEMBER_SEP}{key}.{column}", key or "", captions[i] or None, _text(url), error)
    return rows.table(source_dataset or root.name), root


def _has_video(path: Path, column: str) -> list[bool]:
    """Return, per row of a Parquet shard, whether its video column holds bytes (one row group in memory at a time)."""
    out: list[bool] = []
    shard = pq.ParquetFile(path)
    for group in range(shard.num_row_groups):
        values = shard.read_row_group(group, columns=[column])[column]
        out.extend(pc.fill_null(pc.greater(pc.binary_length(values), 0), False).to_pylist())
    return out
