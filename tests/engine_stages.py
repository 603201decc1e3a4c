"""Stages for the executor tests (importable by spawned workers and Ray actors as `tests.engine_stages:Name`)."""

import os
import signal
import time
import uuid
from pathlib import Path

import pyarrow as pa

from vidrd_data.run.stage import Stage, StageAbort
from vidrd_data.stages.images import ImageIngest


class RecordsPlacement(Stage):
    """A model stage (it has a `device` param) that touches no model: `setup` leaves one file per call in
    `params["setups"]`, and each row records the worker's `CUDA_VISIBLE_DEVICES` and pid."""

    name = "records-placement"
    kind = "image"
    fields = [pa.field("placement", pa.string())]

    def setup(self) -> None:
        folder = Path(self.params["setups"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{os.getpid()}-{uuid.uuid4().hex}").write_text("loaded")

    def process(self, row):
        time.sleep(float(self.params.get("delay", 0.0)))
        placement = f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}|{os.getpid()}"
        return [{"sample_id": f"s{row['input_row']}", "source_path": row.get("source_path"), "placement": placement}]


class AbortsOnSecondShard(ImageIngest):
    """Each worker's second shard finds its device gone for good."""

    name = "aborts-on-second-shard"

    def __init__(self, **params):
        super().__init__(**params)
        self.shards_seen = 0

    def process_many(self, rows):
        self.shards_seen += 1
        if self.shards_seen == 2:
            raise StageAbort("CUDA error: device lost (test)")
        yield from super().process_many(rows)


class BatchedSlow(ImageIngest):
    """Images in batches of `batch_size` (a speed option), slowed down so a run can be killed part-way."""

    name = "batched-slow"
    speed_options = frozenset({"batch_size"})

    def process_many(self, rows):
        size = int(self.params["batch_size"])
        for i in range(0, len(rows), size):
            time.sleep(0.02 * len(rows[i:i + size]))
            yield from super().process_many(rows[i:i + size])


class KillsWorkerOnRow(ImageIngest):
    """Every time it meets row `params["row"]`, its worker process dies (a decoder segfault, say)."""

    name = "kills-worker-on-row"

    def process(self, row):
        if row["input_row"] == self.params["row"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(row)


class DiesInSetup(ImageIngest):
    """A stage whose model load kills its worker every time (a segfault in a native library, say)."""

    name = "dies-in-setup"

    def setup(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
