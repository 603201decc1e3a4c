"""Receipts: everything a measured number depends on, in one JSON object, hashed into a short id printed beside
the number, so two numbers with the same id were measured the same way on the same inputs.

A receipt holds the sample counts and which samples (a digest of their keys), the split, the resize and crop policy,
the frames and frame rates on both sides, the feature networks' sha256, the seeds and sampler settings of the
generated videos, and the software versions. The id is the first 12 hex digits of the sha256 of the receipt's
canonical JSON (sorted keys, no spaces) without its `id` and `sha256` fields; `verify` recomputes it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable

ID_LENGTH = 12

# How every metric cuts and scales a clip (vidrd_model.eval.videos.load_clip), recorded in each receipt.
RESIZE_POLICY = "short side resized to the metric's size (PIL bicubic, antialiased), then the centre square cropped"
CLIP_START = "frame 0 of each video (deterministic, no random offset)"


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def make_receipt(**sections) -> dict:
    """Returns `sections` (made JSON-plain) with "id" and "sha256", the hash of their canonical JSON."""
    body = json.loads(_canonical({k: v for k, v in sections.items() if k not in ("id", "sha256")}))
    digest = hashlib.sha256(_canonical(body)).hexdigest()
    return {"id": digest[:ID_LENGTH], "sha256": digest, **body}


def verify(receipt: dict) -> bool:
    """Returns whether a receipt's id and sha256 are the hash of its other fields (it was not edited after)."""
    body = {k: v for k, v in receipt.items() if k not in ("id", "sha256")}
    digest = hashlib.sha256(_canonical(body)).hexdigest()
    return receipt.get("sha256") == digest and receipt.get("id") == digest[:ID_LENGTH]


def keys_digest(keys: Iterable[str]) -> str:
    """Returns the sha256 of the sorted sample keys: which samples were used, independent of where they lie."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()


def with_receipt(text: str, receipt: dict) -> str:
    """Returns `text` followed by "[receipt ID]", how the CLI prints a number."""
    return f"{text}  [receipt {receipt['id']}]"
