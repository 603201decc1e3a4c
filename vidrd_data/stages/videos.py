"""The `videos` stage: video files → one `video_clip` row per video spanning the whole file, with probe metadata.

Action-recognition layouts give a label; its words become the caption (`caption_source=label`) until a
captioning stage replaces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.manifest import make_sample_id
from vidrd_data.run.decode import DecodesRows
from vidrd_data.run.stage import Stage, StageJob
from vidrd_data.sources import humanize_label
from vidrd_io.video import VideoInfo, probe


@dataclass
class ProbeVideo:
    """What the decode workers run for a row: probe its video (stream metadata and frame timestamps)."""

    root: str | None

    def __call__(self, row: dict) -> VideoInfo:
        if not row.get("source_path"):
            raise ValueError("no video path")
        return probe(mf.resolve(row["source_path"], self.root))


class VideoIndex(DecodesRows, Stage):
    """One row per video file, probed in a decode worker process."""

    name = "videos"
    kind = "video_clip"
    fields = [pa.field("timestamps", pa.string())]  # clock of the probe: decord, pyav or index (VideoInfo)

    def row_decoder(self) -> ProbeVideo:
        return ProbeVideo(self.root)

    def process(self, row: dict) -> list[dict]:
        if not row.get("source_path"):
            raise ValueError("no video path")
        info = self.decoded(row)
        label = row.get("label")
        caption, caption_source = row.get("caption"), row.get("caption_source")
        if not caption and label:
            caption, caption_source = humanize_label(label), "label"
        return [
            {
                "sample_id": make_sample_id(self.kind, row.get("source_dataset"), row["source_path"], [0, info.num_frames]),
                "kind": self.kind,
                "source_path": row["source_path"],
                "caption": caption,
                "caption_source": caption_source,
                "label": label,
                "start_time": 0.0,
                "end_time": info.duration,
                "start_frame": 0,
                "end_frame": info.num_frames,
                "fps": info.fps,
                "num_frames": info.num_frames,
                "width": info.width,
                "height": info.height,
                "source_duration": info.duration,
                "timestamps": info.timestamp_source,
            }
        ]


def prepare(input: str, **arguments: Any) -> StageJob:
    """Read the input of the `videos` stage: a folder of videos (flat or action layout) or a list table.
    `arguments` are the fields of `VideosArguments`, their defaults declared there."""
    from pathlib import Path

    from vidrd_data.stages.arguments import read_arguments

    args, _ = read_arguments("videos", input, arguments)
    if (layout := sources.video_layout(input, source_dataset=args.source_dataset)) is not None:  # video2dataset
        table, base = layout
    elif Path(input).is_dir():
        table, base = sources.video_folder(input, layout=args.layout, source_dataset=args.source_dataset)
    else:
        table, base = sources.caption_table(input, path_col=args.path_col, caption_col=None, label_col=args.label_col,
                                            root=args.root, source_dataset=args.source_dataset)
    return StageJob("videos", {}, table, base, [str(input)])
