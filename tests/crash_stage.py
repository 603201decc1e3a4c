"""A stage for fault-tolerance tests: the first worker to reach row 5 kills its own process (once)."""

import os
import signal
from pathlib import Path

from vidrd_data.images import ImageIngest


class CrashOnce(ImageIngest):
    name = "crash-once"

    def process(self, row):
        marker = Path(self.params["marker"])
        if row["input_row"] == 5 and not marker.exists():
            marker.write_text("crashed")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(row)
