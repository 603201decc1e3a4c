"""Which torch device and dtype a model runs on: the one place stage code asks.

The executor pins each model worker to its GPU(s) with CUDA_VISIBLE_DEVICES before torch starts, so inside a
worker `auto` and `cuda` mean the worker's own GPU (cuda:0 as the worker sees it), never a choice made on the
driver.
"""

from __future__ import annotations

import torch

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def check_names(device: str, dtype: str = "auto") -> None:
    """Raise ValueError unless `device` and `dtype` are names a worker can resolve. Whether CUDA is there is left to
    the worker: the driver (a CPU-only head node, say) is not where the model runs."""
    if device != "auto":
        try:
            parsed = torch.device(device)
        except RuntimeError:
            raise ValueError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
        if parsed.type == "cuda" and (parsed.index or 0) > 0:
            raise ValueError(f"device {device!r}: each model worker sees only its own GPU as cuda; "
                             "use --device cuda and choose GPUs with --gpus")
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use auto, fp32, bf16 or fp16)")


def resolve_device(device: str) -> torch.device:
    """Return the torch device for `auto` (CUDA when available, else CPU) or an explicit name such as `cuda:1`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Return the weights' dtype: `auto` is bf16 on CUDA (fp16 where bf16 is unsupported) and fp32 on CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use auto, fp32, bf16 or fp16)")
    return DTYPES[dtype]
