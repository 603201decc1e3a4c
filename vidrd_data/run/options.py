"""How a stage runs (not what it computes): declared once here, read by the runner, the CLI and recipes.

None of these change a stage's output, so none is part of the resume fingerprint: a run may resume with
other values (fewer workers, other GPUs, a slice of the shards).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _opt(help: str, *flags: str, **extra):
    return {"help": help, "flags": flags, **extra}


@dataclass
class RunOptions:
    """Where and how a stage's shards run; each field's metadata gives its CLI flags and help."""

    workers: int = field(default=0, metadata=_opt(
        "Worker processes or actors (0: auto: one per chosen GPU (or GPU share) for a model stage, one for a model "
        "stage on CPU, else min(4, cores)).", "--workers", "-w"))
    shard_size: int = field(default=1000, metadata=_opt("Input rows per shard (one Parquet part each).", "--shard-size"))
    overwrite: bool = field(default=False, metadata=_opt("Start over instead of resuming.", "--overwrite"))
    progress: bool = field(default=True, metadata=_opt("Show a progress bar.", "--progress/--no-progress"))
    executor: str = field(default="local", metadata=_opt(
        "local (processes on this machine) or ray (actors on the cluster at RAY_ADDRESS).", "--executor"))
    gpus: str | None = field(default=None, metadata=_opt(
        "GPUs for model workers on this machine: all, none, a count, or ids like 0,2,3 (default: all visible).",
        "--gpus"))
    gpus_per_worker: float | None = field(default=None, metadata=_opt(
        "GPUs each model worker takes (0.5: two workers share a GPU; default: what the stage declares, 1).",
        "--gpus-per-worker"))
    shard_index: int | None = field(default=None, metadata=_opt(
        "Run only shards i with i % --num-shards == this (a Slurm array task; default: $SLURM_ARRAY_TASK_ID "
        "minus $SLURM_ARRAY_TASK_MIN).",
        "--shard-index"))
    num_shards: int | None = field(default=None, metadata=_opt(
        "Number of slices the shards are dealt into (default: $SLURM_ARRAY_TASK_COUNT).", "--num-shards"))
