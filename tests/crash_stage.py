"""Fault-tolerance helpers: a stage whose first worker to reach row 5 kills its own process (once), and a caption
image step that kills its decode worker on white frames."""

import os
import signal
from pathlib import Path

from vidrd_data.stages.images import ImageIngest


class CrashOnce(ImageIngest):
    name = "crash-once"

    def process(self, row):
        marker = Path(self.params["marker"])
        if row["input_row"] == 5 and not marker.exists():
            marker.write_text("crashed")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(row)


class DieOnWhiteFrames:
    """Wraps a caption stage's image step (picklable, run in its decode workers): a white frame ends the worker
    process the way a decoder crashing on a malformed file would."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, frames):
        if any(frame.min() > 250 for frame in frames):
            os._exit(1)
        return self.inner(frames)
