"""What each stage's `prepare(input, **arguments)` takes besides its `*Options` dataclass: the input and how to read it
(and, for pseudo-video, which has no `*Options` dataclass, its frame, motion and filter options).

Every option of a stage is declared once, as a dataclass field: the field's default is the option's default, its
`metadata` gives the CLI help and, where they are not `--the-field-name`, the CLI flags. `declarations(stage)` lists
a stage's: its arguments here (`STAGE_ARGUMENTS`), then its module's `*Options` dataclasses (`CaptionOptions`,
`SegmentOptions`). `vidrd-data STAGE` builds its command from them plus `vidrd_data.run.options.RunOptions` (how the
stage runs); the field named `input` is the command's positional argument. Each `prepare()` reads its keywords with
`read_arguments`, so these fields are the only declaration of a stage's options, defaults included; recipes accept
the names `accepted_names(stage)` returns.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from vidrd_data.run.stage import STAGES
from vidrd_data.sources import InputError
from vidrd_data.stages.pseudo_video import MotionConfig


def _declare(default: Any, help: str, *flags: str) -> Any:
    """Return a dataclass field with this default whose metadata carries its CLI help (and flags, if given)."""
    return field(default=default, metadata={"help": help, **({"flags": flags} if flags else {})})


def _input(help: str) -> Any:
    return field(metadata={"help": help})


def _root() -> Any:
    return _declare(None, "Directory that relative media paths are resolved against.")


def _source_dataset() -> Any:
    return _declare(None, "Name recorded in source_dataset.")


def _path_col() -> Any:
    return _declare("path", "List column holding video paths.")


def _layout() -> Any:
    return _declare("flat", "flat, or action: ROOT/ClassName/video.ext gives the label.")


def _image_col() -> Any:
    return _declare("image", "Table column holding image paths.")


def _caption_col() -> Any:
    return _declare("caption", "Table column holding captions.")


def _allow_partial() -> Any:
    return _declare(False, "When INPUT is a manifest with missing parts: read its complete parts anyway (warns).",
                    "--allow-partial")


def _as_text(value: dict | tuple) -> str:
    """Return a default of `MotionConfig` in the text form the CLI and recipes give it: `a=1,b=2` or `1,2`."""
    if isinstance(value, dict):
        return ",".join(f"{name}={weight}" for name, weight in value.items())
    return ",".join(str(x) for x in value)


_MOTION = MotionConfig()


@dataclass(frozen=True)
class ImagesArguments:
    input: str = _input("A captions table (CSV/TSV/JSONL/Parquet) or a folder of images with .txt sidecars.")
    image_col: str = _image_col()
    caption_col: str = _caption_col()
    root: str | None = _root()
    source_dataset: str | None = _source_dataset()


@dataclass(frozen=True)
class VideosArguments:
    input: str = _input("A folder of videos (recursive) or a CSV/Parquet list with a `path` column.")
    layout: str = _layout()
    path_col: str = _path_col()
    label_col: str | None = _declare(None, "List column holding class labels.")
    root: str | None = _root()
    source_dataset: str | None = _source_dataset()


@dataclass(frozen=True)
class CaptionArguments:
    input: str = _input(
        "A folder of videos, an action-dataset root, a CSV/Parquet list (path[,label][,start,end][,caption]) or a "
        "manifest."
    )
    layout: str = _layout()
    split: str | None = _declare(
        None,
        "UCF-101 split file (trainlist0N.txt / testlist0N.txt), a path or a name inside INPUT; labels from "
        "classInd.txt beside it.",
    )
    path_col: str = _path_col()
    root: str | None = _root()
    source_dataset: str | None = _source_dataset()
    allow_partial: bool = _allow_partial()


@dataclass(frozen=True)
class SegmentArguments:
    input: str = _input(
        "A video file, a folder of videos, a CSV/Parquet list (path[,start,end][,caption]) or a manifest."
    )
    path_col: str = _path_col()
    root: str | None = _root()
    source_dataset: str | None = _source_dataset()
    allow_partial: bool = _allow_partial()


@dataclass(frozen=True)
class PseudoVideoArguments:
    input: str = _input(
        "A captions table, a folder of images, a glob of webdataset tars, or a manifest of image rows."
    )
    captions: str | None = _declare(None, "Captions table for a folder of images (instead of .txt sidecars).")
    image_col: str = _image_col()
    caption_col: str = _caption_col()
    root: str | None = _root()
    source_dataset: str | None = _source_dataset()
    allow_partial: bool = _allow_partial()
    size: int = _declare(256, "Short side of the frames (even).")
    aspect: str = _declare("keep", "keep (the image's aspect ratio) or square.")
    frames: int = _declare(8, "Frames per pseudo-video (the released VidRD model uses 8).")
    fps: float = _declare(8.0, "Frame rate recorded for the pseudo-video.")
    seed: int = _declare(0, "Seed of the motion draws (same seed + input = same motion).")
    motion_probs: str = _declare(_as_text(_MOTION.probs), "Relative weights of the motion types.")
    zoom_range: str = _declare(_as_text(_MOTION.zoom_range), "MIN,MAX zoom factor.")
    pan_range: str = _declare(_as_text(_MOTION.pan_range), "MIN,MAX pan distance as a fraction of the image.")
    easing: str = _declare(_MOTION.easing, "ease_in_out or linear.")
    min_side: int = _declare(256, "Reject images whose short side is smaller.")
    max_aspect: float = _declare(3.0, "Reject images whose long/short side ratio is larger.")
    min_caption_words: int | None = _declare(None, "Reject shorter captions.")
    max_caption_words: int | None = _declare(None, "Reject longer captions.")
    materialize: str | None = _declare(None, "Also write each pseudo-video as an H.264 mp4 here.")


@dataclass(frozen=True)
class ScoreArguments:
    input: str = _input("A manifest: its ok rows are scored (video clips, pseudo-videos or stills).")
    root: str | None = _root()
    allow_partial: bool = _allow_partial()


# Stage name (a key of `vidrd_data.run.stage.STAGES`, the one registry of stages) → what its prepare() takes.
STAGE_ARGUMENTS: dict[str, type] = {
    "images": ImagesArguments,
    "videos": VideosArguments,
    "caption": CaptionArguments,
    "segment": SegmentArguments,
    "pseudo-video": PseudoVideoArguments,
    "score": ScoreArguments,
}


def stage_module(stage: str) -> ModuleType:
    """Return the module of a built-in stage: its Stage class, `prepare()` and `*Options` dataclasses."""
    return importlib.import_module(STAGES[stage].partition(":")[0])


def declarations(stage: str) -> list[type]:
    """Return the dataclasses that declare a built-in stage's options: its arguments, then the `*Options`
    dataclasses its module defines (those that `prepare(**options)` takes, as recipes find them)."""
    module = stage_module(stage)
    options = [value for name, value in vars(module).items()
               if name.endswith("Options") and dataclasses.is_dataclass(value) and value.__module__ == module.__name__]
    return [STAGE_ARGUMENTS[stage], *options]


def accepted_names(stage: str) -> set[str]:
    """Return the keywords a built-in stage's `prepare(input, **arguments)` accepts: its declared fields but `input`."""
    return {f.name for cls in declarations(stage) for f in dataclasses.fields(cls)} - {"input"}


def read_arguments(stage: str, input: str, given: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Return the stage's `*Arguments` built from `input` and those of `given` it declares, and the rest of `given`
    (its `*Options` fields, checked by the stage); an undeclared keyword or a missing required one raises InputError."""
    unknown = set(given) - accepted_names(stage)
    if unknown:
        raise InputError(f"unknown {stage} option(s): {', '.join(sorted(unknown))}")
    missing = [f.name for cls in declarations(stage)[1:] for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in given]
    if missing:
        raise InputError(f"missing {stage} option(s): {', '.join(missing)}")
    cls = STAGE_ARGUMENTS[stage]
    own = {f.name for f in dataclasses.fields(cls)}
    arguments = cls(input=input, **{k: v for k, v in given.items() if k in own})
    return arguments, {k: v for k, v in given.items() if k not in own}
