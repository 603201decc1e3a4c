"""The `images` stage: image–text pairs → `kind=image` rows (decoded once to check them and read their size)."""

from __future__ import annotations

import warnings

from PIL import Image

from vidrd_data.manifest import make_sample_id
from vidrd_data.runner import Stage


def open_image(path: str) -> Image.Image:
    """Return the decoded RGB image; a decompression bomb (over PIL's pixel limit) raises instead of warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")


class ImageIngest(Stage):
    """Check each image decodes and has a non-empty caption; record its size."""

    name = "images"
    kind = "image"

    def input_sample_id(self, row: dict) -> str:
        source = row.get("source_path") or f"input:{row['input_row']}"
        return make_sample_id(self.kind, row.get("source_dataset"), source, variant=(row.get("caption") or "").strip())

    def process(self, row: dict) -> list[dict]:
        if not row.get("source_path"):
            raise ValueError("no image path")
        caption = (row.get("caption") or "").strip()
        if not caption:
            raise ValueError("empty caption")
        image = open_image(self.resolve(row["source_path"]))
        return [
            {
                "sample_id": self.input_sample_id(row),
                "kind": self.kind,
                "source_path": row["source_path"],
                "caption": caption,
                "caption_source": row.get("caption_source") or "original",
                "label": row.get("label"),
                "num_frames": 1,
                "width": image.width,
                "height": image.height,
            }
        ]
