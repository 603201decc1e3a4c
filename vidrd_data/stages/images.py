"""The `images` stage: image–text pairs → `kind=image` rows, each image decoded once to check it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vidrd_data import manifest as mf
from vidrd_data.manifest import make_sample_id
from vidrd_data.run.decode import DecodesRows
from vidrd_data.run.stage import Stage, StageJob
from vidrd_io.images import open_image


@dataclass
class ImageSize:
    """What the decode workers run for a row: open its image (the whole decode) and return its upright size."""

    root: str | None

    def __call__(self, row: dict) -> tuple[int, int]:
        if not row.get("source_path"):
            raise ValueError("no image path")
        return open_image(mf.resolve(row["source_path"], self.root)).size


class ImageIngest(DecodesRows, Stage):
    """Check each image decodes (in a decode worker process) and has a non-empty caption; record its size."""

    name = "images"
    kind = "image"

    def input_sample_id(self, row: dict) -> str:
        source = row.get("source_path") or f"input:{row['input_row']}"
        return make_sample_id(self.kind, row.get("source_dataset"), source, variant=(row.get("caption") or "").strip())

    def row_decoder(self) -> ImageSize:
        return ImageSize(self.root)

    def process(self, row: dict) -> list[dict]:
        if not row.get("source_path"):
            raise ValueError("no image path")
        caption = (row.get("caption") or "").strip()
        if not caption:
            raise ValueError("empty caption")
        width, height = self.decoded(row)
        return [
            {
                "sample_id": self.input_sample_id(row),
                "kind": self.kind,
                "source_path": row["source_path"],
                "caption": caption,
                "caption_source": row.get("caption_source") or "original",
                "label": row.get("label"),
                "num_frames": 1,
                "width": width,
                "height": height,
            }
        ]


def prepare(input: str, **arguments: Any) -> StageJob:
    """Read the input of the `images` stage: a captions table or a folder of images with `.txt` sidecars.
    `arguments` are the fields of `ImagesArguments`, their defaults declared there."""
    from vidrd_data import sources
    from vidrd_data.stages.arguments import read_arguments

    args, _ = read_arguments("images", input, arguments)
    if os.path.isdir(input):
        table, base = sources.image_folder(input, source_dataset=args.source_dataset)
    else:
        table, base = sources.caption_table(input, path_col=args.image_col, caption_col=args.caption_col,
                                            root=args.root, source_dataset=args.source_dataset)
    return StageJob("images", {}, table, base, [str(input)])
