"""What a training run keeps on disk, and how it reads it back: config, checkpoints, metrics, loss curve.

    RUN/config.toml                     the resolved config (every key, defaults included; train_config.py)
    RUN/log.csv                         one row per optimizer step: loss, lr, samples/s, data-wait fraction, skipped
                                        rows, validation loss (and RUN/tensorboard/ when TensorBoard is installed)
    RUN/loss.png                        the loss curve, drawn at the end
    RUN/base/                           the model training started from; its frozen parts are hard-linked into
                                        every checkpoint's model/
    RUN/checkpoint-000500/model/        what the sampler loads (`vidrd-sample --model`, `VidRDPipeline.from_pretrained`)
    RUN/checkpoint-000500/state/        what `--resume` needs besides: trained weights, optimizer, LR schedule, EMA,
                                        RNG states (one file per process), data position
    RUN/model/                          the final model: the last checkpoint's model/
    RUN/validation/step-000500/         a video per validation prompt

Checkpoints are written under a temporary name and renamed when complete, so `--resume latest` never picks a torn
one. Tensors go to safetensors, everything else to JSON; nothing is pickled.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
LOG_FILE = "log.csv"
LOG_COLUMNS = ("step", "loss", "lr", "samples_per_s", "data_wait", "skipped_rows", "val_loss")


# ---------------------------------------------------------------- checkpoints


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Returns the run's complete checkpoints, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """Returns the checkpoint `resume` names: "latest" (None when the run has none yet), a path, or None.

    A fresh start (`resume` None) in a run directory that has checkpoints is refused rather than mixed into it.
    """
    if resume is None:
        if checkpoint_dirs(run_dir):
            raise FileExistsError(f"{run_dir} already has checkpoints: --resume latest continues that run, or "
                                  "choose another --output-dir")
        return None
    if resume == "latest":
        found = checkpoint_dirs(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "state" / "trainer.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint directory (no state/trainer.json)")
    return path


def prune_checkpoints(run_dir: str | os.PathLike, keep: int | None) -> None:
    """Deletes the oldest checkpoints beyond the newest `keep`."""
    if keep is None:
        return
    found = checkpoint_dirs(run_dir)
    for old in found[: max(len(found) - keep, 0)]:
        shutil.rmtree(old)


def link_or_copy(src: str, dst: str) -> None:
    """Hard-links `src` to `dst` (frozen weights shared by every checkpoint), copying across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Writes `tensors` (on any device) to a safetensors file."""
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def optimizer_to_files(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Writes the optimizer's state as `optimizer.safetensors` (tensors) and `optimizer.json` (the rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    save_tensors(folder / "optimizer.safetensors", tensors)
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_from_files(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Loads the state `optimizer_to_files` wrote into `optimizer`."""
    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_files(folder: Path, process_index: int) -> None:
    """Writes this process's Python, NumPy, torch (and CUDA) RNG states."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_tensors(folder / f"rng-{process_index}.safetensors", tensors)
    np_state = np.random.get_state()
    py_state = random.getstate()
    (folder / f"rng-{process_index}.json").write_text(json.dumps({
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }))


def rng_from_files(folder: Path, process_index: int) -> None:
    """Restores this process's RNG states from what `rng_to_files` wrote."""
    path = folder / f"rng-{process_index}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no RNG state for process {process_index}")
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available() and "cuda.0" in tensors:
        torch.cuda.set_rng_state_all([tensors[f"cuda.{i}"] for i in range(torch.cuda.device_count())])
    states = json.loads((folder / f"rng-{process_index}.json").read_text())
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------- metrics


class MetricsLog:
    """Appends one row per optimizer step to `log.csv`, and to TensorBoard when it is installed.

    On resume the rows after the resumed step are dropped first, so the file is the run's one loss curve.
    """

    def __init__(self, run_dir: Path, resume_step: int | None, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.path = run_dir / LOG_FILE
        kept = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if int(row["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        except ImportError:
            log.info("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, rows: list[dict]) -> None:
        if not self.enabled or not rows:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS).writerows(rows)
        if self.tensorboard is not None:
            for row in rows:
                for key in LOG_COLUMNS[1:]:
                    if row.get(key) not in (None, ""):
                        self.tensorboard.add_scalar(key, float(row[key]), int(row["step"]))

    def close(self) -> None:
        if self.enabled and self.tensorboard is not None:
            self.tensorboard.close()


def read_losses(run_dir: str | os.PathLike) -> tuple[list[int], list[float]]:
    """Returns the (steps, losses) of a run's `log.csv`."""
    with open(Path(run_dir) / LOG_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], [float(r["loss"]) for r in rows]


def plot_loss_curve(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Draws the run's loss per step (and a moving average) to `loss.png`; returns its path."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    steps, losses = read_losses(run_dir)
    path = Path(path or Path(run_dir) / "loss.png")
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, lw=1.6, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
