"""The manifest: the one contract between vidrd's data stages and its trainer.

A manifest is a directory::

    _manifest.json              kind, schema_version, stage + params, inputs, root, version, created_at
    _inputs.parquet             the stage's input rows (what `retry` and resume re-run)
    part-00000.parquet          one Parquet file per shard, schema declared up front
    part-00000.stats.json       written last and atomically: its presence means the part is complete

Every part holds one row per sample with at least the columns of `BASE_SCHEMA`; stages add their own
struct columns and unknown input columns are carried through. The column reference for users lives in
`manifests/README.md`; a test keeps it and `BASE_SCHEMA` in agreement.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidrd_io import fs
from vidrd_io.remote import is_url

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_FILE = "_manifest.json"
INPUTS_FILE = "_inputs.parquet"
PART_RE = re.compile(r"^part-(\d{5})\.parquet$")
INPUT_ERROR = "_input_error"  # input column: why a source reader could not read a row (the row then fails)

KINDS = ("image", "pseudo_video", "video_clip")
STATUSES = ("ok", "failed", "filtered")  # filtered: usable media that a filter (score, dedup) left out
# Why a row is `filtered`: the filter's name and the value it judged (a score, or a similarity for a duplicate).
FILTER_FIELDS = (pa.field("filter", pa.string()), pa.field("filter_score", pa.float64()))
CAPTION_SOURCES = ("original", "label", "blip2", "minigpt4")  # extensible: any string is accepted

BASE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("source_path", pa.string()),
        pa.field("source_dataset", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("caption_source", pa.string()),
        pa.field("label", pa.string()),
        pa.field("start_time", pa.float64()),
        pa.field("end_time", pa.float64()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("fps", pa.float64()),
        pa.field("num_frames", pa.int64()),
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("source_duration", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("input_row", pa.int64(), nullable=False),
    ]
)
BASE_COLUMNS = tuple(BASE_SCHEMA.names)


class ManifestError(Exception):
    """The directory is not a readable manifest (missing, malformed, wrong schema version)."""


class IncompleteManifest(ManifestError):
    """The manifest lacks parts its `_manifest.json` promises (a stage still running, or killed)."""


# ---------------------------------------------------------------- ids and paths


def make_sample_id(
    kind: str, source_dataset: str | None, source: str | None, span: Any = None, variant: str | None = None
) -> str:
    """Return a 20-hex-digit id that depends only on what the sample is, never on when it was made.

    `source` is the stored (root-relative) path or any stable key (e.g. `shard.tar#key`); `span` is
    whatever pins the sample inside its source (a `(start_frame, end_frame)` pair, times in seconds
    rounded by the caller, or None for the whole source); `variant` tells apart samples that share
    source and span (one image with several captions, as COCO has).
    """
    parts = [kind, source_dataset or "", source or "", json.dumps(span, sort_keys=True)]
    if variant is not None:
        parts.append(variant)
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=10).hexdigest()


def is_uri(path: str) -> bool:
    """Return whether a stored path is a URL (`s3://`, `http://`, ...) rather than a file path."""
    return is_url(path)


def relativize(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """Return `path` as stored in a manifest: relative (POSIX) to `root` when inside it, else as given."""
    path = os.fspath(path)
    if root is None or is_uri(path):
        return path
    absolute = os.path.abspath(path)
    root_abs = os.path.abspath(os.fspath(root))
    if absolute == root_abs or absolute.startswith(root_abs.rstrip(os.sep) + os.sep):
        return Path(os.path.relpath(absolute, root_abs)).as_posix()
    return absolute


def resolve(path: str | None, root: str | os.PathLike | None) -> str | None:
    """Return the usable location of a stored path: URIs and absolute paths as they are, others under `root`."""
    if path is None or is_uri(path) or os.path.isabs(path) or root is None:
        return path
    return os.path.normpath(os.path.join(os.fspath(root), path))


# ---------------------------------------------------------------- schema


def output_schema(stage_fields: Iterable[pa.Field] = (), input_schema: pa.Schema | None = None) -> pa.Schema:
    """Return the declared schema of a stage's parts: base columns, the stage's own, then carried input columns."""
    fields = list(BASE_SCHEMA)
    names = set(BASE_COLUMNS)
    for f in stage_fields:
        if f.name in names:
            raise ValueError(f"stage column {f.name!r} collides with a base column")
        fields.append(f)
        names.add(f.name)
    for f in input_schema or []:
        if f.name not in names and not f.name.startswith("_"):
            fields.append(f.with_nullable(True))
            names.add(f.name)
    return pa.schema(fields)


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table in the declared schema; a value of the wrong type raises here, not in a reader later."""
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def schema_to_json(schema: pa.Schema) -> dict:
    """Return the schema readable by people (`columns`) and exactly restorable by pyarrow (`arrow`)."""
    return {
        "columns": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
        "arrow": base64.b64encode(schema.serialize().to_pybytes()).decode("ascii"),
    }


def schema_from_json(data: dict) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(data["arrow"])))


# ---------------------------------------------------------------- stats


def failure_reason(error: str) -> str:
    """Return the histogram key of an error message: its first line, with paths and numbers masked."""
    line = error.strip().splitlines()[0] if error.strip() else "unknown error"
    line = re.sub(r"'[^']*[/\\][^']*'|\"[^\"]*[/\\][^\"]*\"", "<path>", line)
    line = re.sub(r"\d+(\.\d+)?", "N", line)
    return line[:160]


def part_stats(table: pa.Table, input_rows: int, wall_time_s: float) -> dict:
    status = table.column("status").to_pylist()
    errors = [e for s, e in zip(status, table.column("error").to_pylist()) if s == "failed"]
    ok, filtered = status.count("ok"), status.count("filtered")
    return {
        "input_rows": input_rows,
        "output_rows": table.num_rows,
        "ok": ok,
        "failed": len(status) - ok - filtered,
        "filtered": filtered,
        "failure_reasons": dict(Counter(failure_reason(e or "") for e in errors).most_common()),
        "wall_time_s": round(wall_time_s, 4),
        "samples_per_s": round(input_rows / wall_time_s, 3) if wall_time_s > 0 else None,
    }


# ---------------------------------------------------------------- the directory


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def stats_name(index: int) -> str:
    return f"part-{index:05d}.stats.json"


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("vidrd")
    except Exception:
        return "0+unknown"


def new_meta(
    *,
    kind: str,
    stage: str,
    params: dict,
    inputs: list[str],
    root: str | os.PathLike | None,
    manifest_dir: str | os.PathLike,
    schema: pa.Schema,
    extra: dict | None = None,
) -> dict:
    """Return the `_manifest.json` content of a new manifest.

    `root` is stored relative to the manifest directory when possible, so a manifest moved together
    with its data stays valid; `Manifest.open(..., root=...)` overrides it when only the data moved.
    """
    stored_root = None
    if root is not None and not is_url(os.fspath(manifest_dir)):  # a manifest at a URL keeps the absolute root only
        root_abs = os.path.abspath(os.fspath(root))
        stored_root = Path(os.path.relpath(root_abs, os.path.abspath(os.fspath(manifest_dir)))).as_posix()
    meta = {
        "kind": kind,
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "params": params,
        "inputs": [os.fspath(i) for i in inputs],
        "root": stored_root,
        "root_absolute": os.path.abspath(os.fspath(root)) if root is not None else None,
        "package_version": package_version(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "schema": schema_to_json(schema),
    }
    meta.update(extra or {})
    return meta


@dataclass
class Manifest:
    """An opened manifest directory. Only complete parts (those with a stats file) are ever read."""

    path: Path | str  # a URL (str) for a manifest in an object store
    meta: dict
    root: str | None
    _parts: list[int] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike, root: str | os.PathLike | None = None) -> "Manifest":
        path = fs.location(path)
        meta_path = fs.join(path, MANIFEST_FILE)
        if isinstance(path, Path) and not path.is_dir():
            raise ManifestError(f"{path} is not a directory")
        if not fs.is_file(meta_path):
            raise ManifestError(f"{path} is not a manifest: no {MANIFEST_FILE}")
        try:
            meta = json.loads(fs.read_text(meta_path))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{meta_path} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or "schema_version" not in meta:
            raise ManifestError(f"{meta_path} has no schema_version")
        if meta["schema_version"] != SCHEMA_VERSION:
            raise ManifestError(
                f"{path} has schema_version {meta['schema_version']}, this vidrd reads {SCHEMA_VERSION}"
            )
        if root is None and meta.get("root") is not None and isinstance(path, Path):
            candidate = os.path.normpath(os.path.join(os.path.abspath(path), meta["root"]))
            root = candidate if os.path.isdir(candidate) else meta.get("root_absolute") or candidate
        elif root is None:
            root = meta.get("root_absolute")
        manifest = cls(path=path, meta=meta, root=os.fspath(root) if root is not None else None)
        manifest._parts = manifest.complete_parts()
        return manifest

    @classmethod
    def open_for_work(cls, path: str | os.PathLike, root: str | os.PathLike | None = None,
                      allow_partial: bool = False) -> "Manifest":
        """Return the opened manifest, refusing an incomplete one unless `allow_partial` (see `require_complete`)."""
        return cls.open(path, root=root).require_complete(allow_partial)

    def complete_parts(self) -> list[int]:
        """Return the indices of parts whose stats file exists, i.e. that were fully written."""
        names = set(fs.list_names(self.path))
        indices = []
        for name in names:
            m = PART_RE.match(name)
            if m and stats_name(int(m.group(1))) in names:
                indices.append(int(m.group(1)))
        return sorted(indices)

    @property
    def parts(self) -> list[int]:
        return list(self._parts)

    def missing_parts(self) -> list[int]:
        """Return the indices below `num_parts` that are not complete (absent, or written without a stats file)."""
        expected = self.meta.get("num_parts")
        if expected is None:
            return []
        present = set(self._parts)
        return [i for i in range(int(expected)) if i not in present]

    def completeness(self) -> str | None:
        """Return one line naming what is missing, or None when every promised part is complete."""
        missing = self.missing_parts()
        if not missing:
            return None
        shown = ", ".join(str(i) for i in missing[:10]) + (f" … ({len(missing)} in all)" if len(missing) > 10 else "")
        names = set(fs.list_names(self.path))
        torn = [i for i in missing if part_name(i) in names]
        why = f"; part {torn[0]} has no stats file" if len(torn) == 1 else (
            f"; {len(torn)} parts have no stats file" if torn else "")
        return (f"{self.path} is incomplete: part{'s' if len(missing) > 1 else ''} {shown} of {self.meta['num_parts']} "
                f"missing{why}")

    def require_complete(self, allow_partial: bool = False,
                         hint: str = "a stage still running or killed? re-run it, or pass --allow-partial") -> "Manifest":
        """Return this manifest if every promised part is complete; otherwise raise `IncompleteManifest` (one
        line ending in `hint`), or with `allow_partial` log a warning saying what is missing and return it anyway."""
        problem = self.completeness()
        if problem is None:
            return self
        if not allow_partial:
            raise IncompleteManifest(f"{problem} ({hint})")
        log.warning("%s; reading the %d complete parts anyway (--allow-partial)", problem, len(self._parts))
        return self

    def part_path(self, index: int) -> Path | str:
        return fs.join(self.path, part_name(index))

    def stats(self) -> list[dict]:
        return [json.loads(fs.read_text(fs.join(self.path, stats_name(i)))) for i in self._parts]

    def schema(self) -> pa.Schema:
        if self._parts:
            try:
                first = fs.location(self.part_path(self._parts[0]))
                if isinstance(first, Path):
                    return pq.read_schema(first)
                with fs.open_read(first) as f:
                    return pq.read_schema(f)
            except (pa.ArrowInvalid, OSError) as exc:
                raise ManifestError(f"{self.part_path(self._parts[0])} is not readable Parquet: {exc}") from None
        return schema_from_json(self.meta["schema"])

    def read(self, columns: list[str] | None = None, status: str | None = None) -> pa.Table:
        """Return all complete parts as one table (optionally only some columns, or one status)."""
        tables = list(self.iter_parts(columns=columns, status=status))
        if not tables:
            return self.schema().empty_table() if columns is None else self.schema().empty_table().select(columns)
        return pa.concat_tables(tables)

    def iter_parts(self, columns: list[str] | None = None, status: str | None = None) -> Iterator[pa.Table]:
        read_cols = columns
        if status is not None and columns is not None and "status" not in columns:
            read_cols = [*columns, "status"]
        for i in self._parts:
            try:
                table = read_parquet(self.part_path(i), columns=read_cols)
            except (pa.ArrowInvalid, OSError) as exc:  # a complete part that is not Parquet: corrupt on disk
                raise ManifestError(f"{self.part_path(i)} is not readable Parquet: {str(exc).splitlines()[0]}") from None
            if status is not None:
                table = table.filter(pc.equal(table.column("status"), status))
                if columns is not None:
                    table = table.select(columns)
            yield table

    def resolve(self, path: str | None) -> str | None:
        return resolve(path, self.root)

    def inputs(self) -> pa.Table | None:
        p = fs.join(self.path, INPUTS_FILE)
        return read_parquet(p) if fs.is_file(p) else None


def read_parquet(location: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Return a Parquet file's table (some columns), read from a local path or a URL."""
    location = fs.location(location)
    if isinstance(location, Path):
        return pq.read_table(location, columns=columns)
    with fs.open_read(location) as f:
        return pq.read_table(f, columns=columns)


def is_manifest(path: str | os.PathLike) -> bool:
    return fs.is_file(fs.join(path, MANIFEST_FILE))

