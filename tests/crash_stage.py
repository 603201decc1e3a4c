"""Fault-tolerance helpers: a stage whose first worker to reach row 5 kills its own process (once), a caption
image step that kills its decode worker on white frames, and image/segment stages whose decoders segfault, exit or
hang on chosen files."""

import os
import signal
import time
from pathlib import Path

from vidrd_data.stages.images import ImageIngest
from vidrd_data.stages.segment import SegmentVideos


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


class CrashOn:
    """Wraps a stage's row decoder (picklable, run in its decode workers): on the file named `segv` the worker
    segfaults, on `exit` it ends with os._exit(3), on `hang` it sleeps for an hour; every call is logged (one line
    per call, in `calls`) so a test can tell whether a file was decoded again."""

    def __init__(self, inner, calls: str, segv: str = "", exit: str = "", hang: str = ""):
        self.inner, self.calls, self.segv, self.exit, self.hang = inner, calls, segv, exit, hang

    def __call__(self, *args):
        row = args[-1]
        name = Path(row["source_path"]).name
        with open(self.calls, "a") as f:
            f.write(name + "\n")
        if name == self.segv:
            os.kill(os.getpid(), signal.SIGSEGV)
        if name == self.exit:
            os._exit(3)
        if name == self.hang:
            time.sleep(3600)
        return self.inner(*args)


def _crash_on(stage, inner):
    p = stage.params
    return CrashOn(inner, p["calls"], p.get("segv", ""), p.get("exit", ""), p.get("hang", ""))


class CrashingImages(ImageIngest):
    """The images stage, its decoder crashing or hanging on the files its params name."""

    name = "crashing-images"
    decode_timeout_s = 4.0

    def row_decoder(self):
        return _crash_on(self, super().row_decoder())


class CrashingSegment(SegmentVideos):
    """The segment stage (histogram embedder), its decoder crashing or hanging on the files its params name."""

    name = "crashing-segment"
    decode_timeout_s = 4.0

    def __init__(self, **params):
        self.test_params = {k: params.pop(k) for k in ("calls", "segv", "exit", "hang") if k in params}
        super().__init__(**params)

    def span_decoder(self):
        return CrashOn(super().span_decoder(), **self.test_params)
