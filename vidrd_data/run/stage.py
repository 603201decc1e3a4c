"""The stage API: what a processing step declares and implements, and the one registry of built-in stages."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import pyarrow as pa

from vidrd_data import manifest as mf

# Stage name → implementing class, so a manifest's `_manifest.json` is enough to re-run its stage (`retry`).
# Imported lazily ("module:Class"), so a worker only loads the libraries its stage needs; each module also has
# `prepare(input, **arguments) -> StageJob`, which the CLI and recipes call.
STAGES = {
    "images": "vidrd_data.stages.images:ImageIngest",
    "videos": "vidrd_data.stages.videos:VideoIndex",
    "caption": "vidrd_data.stages.caption:CaptionClips",
    "pseudo-video": "vidrd_data.stages.pseudo_video:PseudoVideo",
    "segment": "vidrd_data.stages.segment:SegmentVideos",
    "score": "vidrd_data.stages.score:ScoreClips",
}


class RunnerError(Exception):
    """The run cannot start (conflicting output directory, bad options)."""


class StageAbort(RunnerError):
    """The stage cannot go on (its device failed for good): the run stops, the shard in hand writes nothing,
    and every part already written stays."""


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs: the executor reads it, the stage never picks a device or a worker count.

    `gpus` counts only for a model stage (one whose params name a `device`) placed on GPUs: a fraction < 1
    shares a GPU between workers (0.5: two workers per GPU), > 1 gives a worker several. `cpus` is what a Ray
    actor reserves. A run may override `gpus` (`RunOptions.gpus_per_worker`).
    """

    cpus: float = 1.0
    gpus: float = 1.0


class Stage:
    """One processing step: takes an input row (a dict), returns its output sample rows.

    Subclasses set `name`, `kind` and `fields` (their own extra columns) and implement `process`.
    Raising from `process` turns the input row into one `failed` row carrying the exception's message;
    a stage may also return rows with `status="failed"` itself. `setup` runs once per worker process
    (load models there; the worker is already pinned to its GPU(s), so `models.device.resolve_device(device)`
    is the only device choice stage code makes). `root` is the absolute directory relative source paths are
    stored against. Raise `StageAbort` when the device failed for good.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "image"
    fields: ClassVar[list[pa.Field]] = []
    # params that change only speed or memory (batch sizes, decode workers): left out of the resume fingerprint,
    # so a run can resume with other values
    speed_options: ClassVar[frozenset[str]] = frozenset()
    # what one worker needs (data, so a run can override it); see Resources
    resources: ClassVar[Resources] = Resources()

    def __init__(self, **params: Any):
        self.params = params
        self.root: str | None = None
        self.work_dir: str | None = None  # the output directory of the run, for state a stage keeps across resumes

    def setup(self) -> None:
        pass

    @classmethod
    def uses_device(cls, params: dict) -> bool:
        """Return whether the stage is a model stage: its params put it on a device (`device`: auto, cuda, …)."""
        return bool(params.get("device"))

    def process(self, row: dict) -> list[dict]:
        raise NotImplementedError

    def process_many(self, rows: list[dict]) -> Iterator[tuple[dict, list[dict] | Exception]]:
        """Yield each input row with its output rows, or the exception it raised, in input order.

        Stages that batch or pipeline work across rows (decode ahead while a captioning model runs)
        override this; the default calls `process` row by row.
        """
        for row in rows:
            try:
                yield row, self.process(dict(row))
            except StageAbort:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of one sample must not end the shard
                yield row, exc

    def resolve(self, path: str | None) -> str | None:
        return mf.resolve(path, self.root)

    def input_sample_id(self, row: dict) -> str:
        """Return the id of the failed row that stands for an input; a stage whose one-sample-per-input ids
        carry more than the source (e.g. the caption) overrides it, so a retried row keeps its id."""
        source = row.get("source_path") or f"input:{row['input_row']}"
        return mf.make_sample_id(self.kind, row.get("source_dataset"), source)


def stage_class(name: str) -> type[Stage]:
    """Return the class of a built-in stage (`images`, …) or of a plug-in named `package.module:Class`."""
    target = STAGES.get(name) or (name if ":" in name else None)
    if target is None:
        raise RunnerError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))} (or module:Class)")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RunnerError(f"cannot load stage {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise RunnerError(f"{name!r} is not a vidrd Stage")
    return cls


@dataclass
class StageJob:
    """A stage with its options resolved and its input rows read: what `run_stage` needs besides where to write.

    Each stage module has a `prepare(input, **arguments) -> StageJob`, used by the CLI and by recipes alike.
    `inputs` is a table, or a stream of record batches (read once, written to the run's `_inputs.parquet`).
    """

    stage: str
    params: dict
    inputs: pa.Table | pa.RecordBatchReader
    root: Path | None
    input_desc: list[str]
