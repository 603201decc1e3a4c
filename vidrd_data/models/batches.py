"""Model calls over a batch that survive running out of GPU memory, and stop the run when the device is lost.

CUDA out of memory depends on the batch: the batch is retried in halves, down to single items, and only an item
that does not fit alone fails (its row says so). Any other CUDA/accelerator error (an illegal memory access, a
device-side assert, an ECC error) leaves the device unusable for the rest of the process: every later batch
would fail too, so the stage stops (`StageAbort`) instead of writing parts full of failed rows.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from vidrd_data.run.stage import StageAbort

log = logging.getLogger(__name__)

# messages of errors after which a CUDA/ROCm/XPU context cannot be trusted again
DEVICE_FAILURES = (
    "CUDA error", "device-side assert", "illegal memory access", "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error",
    "ECC error", "HIP error", "NCCL error", "XPU error", "unspecified launch failure",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Return whether `exc` is an accelerator out-of-memory error: torch's own, or one that cuBLAS/cuDNN report as a
    plain RuntimeError ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED")."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    message = str(exc) if isinstance(exc, RuntimeError) else ""
    return "out of memory" in message or "CUBLAS_STATUS_ALLOC_FAILED" in message


def is_device_failure(exc: BaseException) -> bool:
    """Return whether `exc` is an accelerator error other than out-of-memory (the device is lost for this process)."""
    import torch

    accelerator_error = getattr(torch, "AcceleratorError", ())
    if is_out_of_memory(exc) or not isinstance(exc, RuntimeError):
        return False
    return isinstance(exc, accelerator_error) or any(marker in str(exc) for marker in DEVICE_FAILURES)


def device_failure(exc: BaseException) -> StageAbort:
    """Return the one-line `StageAbort` for a lost device."""
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return StageAbort(f"the accelerator failed ({type(exc).__name__}: {first_line}); the stage stops, parts already "
                      "written are kept: run the same command again once the device works to resume")


def outputs_in_halves(run: Callable[[int, int], Sequence[Any]], n: int) -> list[Any]:
    """Return the n outputs of `run(0, n)` (one per item); after CUDA out of memory, those of its two halves, each
    retried the same way down to single items, an item that does not fit alone getting the error in its place.
    A lost device raises `StageAbort`; any other error is raised as it is."""

    def attempt(start: int, stop: int) -> list[Any]:
        try:
            return list(run(start, stop))
        except Exception as exc:  # noqa: BLE001 - sorted below: out of memory, a lost device, anything else
            if is_device_failure(exc):
                raise device_failure(exc) from exc
            if not is_out_of_memory(exc):
                raise
            _free_cached_memory()
            if stop - start == 1:
                return [exc]
            middle = start + (stop - start + 1) // 2
            log.warning("out of GPU memory on %d items; retrying as %d and %d", stop - start, middle - start,
                        stop - middle)
            return attempt(start, middle) + attempt(middle, stop)

    return attempt(0, n) if n else []


def _free_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
