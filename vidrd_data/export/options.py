"""What `vidrd-data export` takes besides `RunOptions`, declared once (field metadata: CLI help and flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMATS = ("webdataset", "hf", "csv")


def _declare(default: Any, help: str, *flags: str) -> Any:
    return field(default=default, metadata={"help": help, **({"flags": flags} if flags else {})})


@dataclass(frozen=True)
class ExportArguments:
    manifest: str = field(metadata={"help": "A manifest directory: its ok rows are exported."})
    format: str = _declare("webdataset", "webdataset (tar shards: mp4 + json + txt), hf (a Hugging Face datasets "
                           "folder of Parquet shards) or csv (the rows, no media).", "--format")
    bucket: bool = _declare(False, "webdataset: put each clip in a folder named by its bucket of resolution, aspect "
                            "ratio and frame count (`r256_a1.78_f16/00000.tar`).", "--bucket/--no-bucket")
    crf: int = _declare(18, "H.264 quality of the re-encoded clips (lower: better and larger).", "--crf")
    root: str | None = _declare(None, "Directory the manifest's relative media paths are resolved against "
                                "(default: the one it records).", "--root")
    allow_partial: bool = _declare(False, "Export the complete parts of a manifest with missing parts (warns).",
                                   "--allow-partial")
    latents: str | None = _declare(None, "A latent cache to add to each sample (not supported yet: refused).",
                                   "--latents")
