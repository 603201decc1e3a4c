"""What every worker process of a run shares: how many cores it may use, ending with its parent, and sending an
exception back over a pipe."""

from __future__ import annotations

import os
import pickle
import time


def cores() -> int:
    """Return the number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (killed with SIGKILL, say): no orphans left behind."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def picklable(exc: BaseException, stand_in: type[Exception] = RuntimeError) -> BaseException:
    """Return `exc`, or when it cannot be pickled a `stand_in` that reads the same (its type's name and message)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: keep the type's name and message
        return stand_in(f"{type(exc).__name__}: {exc}")
