"""`export(manifest, fmt, out)`: a manifest's ok rows → WebDataset shards, a Hugging Face datasets folder, or CSV."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from vidrd_data import manifest as mf
from vidrd_data.export.options import FORMATS, ExportArguments
from vidrd_data.export.shards import HF_DIR, HF_SCHEMA, SHARD_DIGITS
from vidrd_data.run.options import RunOptions
from vidrd_data.run.runner import RunSummary, run_stage
from vidrd_data.sources import InputError
from vidrd_io import fs
from vidrd_io.remote import local_path

log = logging.getLogger(__name__)

STAGE = "vidrd_data.export.shards:ExportShards"
PROGRESS_DIR = "_export"  # the runner's manifest of the export: one row per exported row, ok or failed with why
CSV_FILE = "rows.csv"
# the files an export writes (beside PROGRESS_DIR): what --overwrite removes, so no shard of an earlier run survives
_SHARD = rf"\d{{{SHARD_DIGITS}}}"
_EXPORT_FILES = re.compile(rf"({_SHARD}\.tar|r\d+_a\d+\.\d\d_f\d+/{_SHARD}\.tar|{HF_DIR}/train-{_SHARD}\.parquet"
                           rf"|{re.escape(CSV_FILE)})")
# manifest columns left out of the input rows: the runner numbers inputs itself, and only ok rows are exported
_DROPPED = ("status", "error", "input_row")


def export(arguments: ExportArguments, out: str | os.PathLike, **run_options) -> RunSummary | Path:
    """Export a manifest's ok rows into `out`; return the run's summary (webdataset, hf) or the CSV file written.

    `run_options` are `RunOptions` fields (shard size, workers, slices, overwrite, progress)."""
    a = arguments
    if a.format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {a.format!r}")
    if a.latents is not None:
        raise InputError("--latents is not supported yet: exports carry clips and metadata, no cached latents")
    if a.bucket and a.format != "webdataset":
        raise InputError("--bucket applies to --format webdataset only")
    if local_path(out) is None:  # shards are written through local temp files and renames; a store has neither
        raise InputError(f"--out {out} is a URL: export writes local folders; copy them to the store afterwards")
    manifest = mf.Manifest.open_for_work(a.manifest, root=a.root, allow_partial=a.allow_partial)
    rows = manifest.read(status="ok")
    rows = rows.drop_columns([c for c in _DROPPED if c in rows.column_names])
    out = Path(local_path(out))
    if run_options.get("overwrite") and run_options.get("shard_index") is None:
        _remove_previous_export(out)
    if a.format == "csv":
        if run_options.get("shard_index") is not None or run_options.get("num_shards") is not None:
            raise InputError("--format csv writes one file at once: --shard-index/--num-shards do not apply")
        return _write_csv(rows, out)
    if rows.num_rows == 0:
        raise InputError(f"{a.manifest} has no ok rows to export")
    shard_size = run_options.get("shard_size", RunOptions.shard_size)
    params = {"format": a.format, "bucket": a.bucket, "crf": a.crf, "shard_size": shard_size}
    summary = run_stage(STAGE, params, rows, out / PROGRESS_DIR, root=manifest.root, input_desc=[str(a.manifest)],
                        **run_options)
    if a.format == "hf" and not mf.Manifest.open(out / PROGRESS_DIR).missing_parts():
        fs.atomic_write(out / "README.md", lambda tmp: Path(tmp).write_text(dataset_card(str(a.manifest)),
                                                                             encoding="utf-8"))
    return summary


def _remove_previous_export(out: Path) -> list[Path]:
    """Remove the shard, Parquet, CSV files and dataset card an earlier export wrote into `out`; return them.

    Only names the export itself writes: another shard size or format would otherwise leave stale shards beside the
    new ones (duplicated samples). The runner clears PROGRESS_DIR itself."""
    if not out.is_dir():
        return []
    removed = [p for p in sorted(out.rglob("*"))
               if p.is_file() and _EXPORT_FILES.fullmatch(p.relative_to(out).as_posix())]
    card = out / "README.md"
    if card.is_file() and card.read_text(encoding="utf-8", errors="replace").startswith(dataset_card("")[:60]):
        removed.append(card)
    for path in removed:
        path.unlink()
    for folder in {p.parent for p in removed if p.parent != out}:
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _write_csv(rows: pa.Table, out: Path) -> Path:
    """Write the rows (media paths as stored, nested columns as JSON text) to `out/rows.csv`; return its path."""
    columns = {}
    for name in rows.column_names:
        column = rows[name]
        if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):  # CSV has no nested values
            column = pa.array([None if v is None else json.dumps(v, sort_keys=True, default=str)
                               for v in column.to_pylist()], pa.string())
        columns[name] = column
    table = pa.table(columns)
    target = out / CSV_FILE
    fs.atomic_write(target, lambda tmp: pacsv.write_csv(table, tmp))
    return target


def dataset_card(source: str) -> str:
    """Return the README.md of an hf export: the `datasets` config that points at its Parquet shards, and its
    schema."""
    described = {
        "sample_id": "vidrd sample id (stable across runs)",
        "kind": "video_clip (cut from a source video) or pseudo_video (a still image with camera motion)",
        "caption": "the text", "caption_source": "original, label, blip2 or minigpt4",
        "label": "class label, when the source has one", "source_path": "the clip's source as the manifest stores it",
        "source_dataset": "where it came from", "start_time": "span in the source, seconds",
        "end_time": "span in the source, seconds", "fps": "frame rate of the clip", "num_frames": "frames in the clip",
        "width": "as the manifest records it", "height": "as the manifest records it",
        "bucket": "resolution / aspect-ratio / frame-count bucket of the encoded clip",
        "mp4": "the clip, H.264 in mp4, as bytes",
    }
    lines = [f"| {f.name} | {f.type} | {described[f.name]} |" for f in HF_SCHEMA]
    return "\n".join([
        "---", "configs:", "- config_name: default", "  data_files:", "  - split: train",
        f"    path: {HF_DIR}/train-*.parquet", "---", "",
        f"# vidrd export of `{source}`", "",
        "Written by `vidrd-data export --format hf`: one row per ok manifest row. Open it with",
        "`datasets.load_dataset(\"parquet\", data_files=...)` or `datasets.load_dataset(THIS_FOLDER)`.", "",
        "| column | type | meaning |", "|---|---|---|", *lines, "",
    ])
