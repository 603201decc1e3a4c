"""Opening stills the same way everywhere.

`open_image` is what the pseudo-video stage, the contact sheet and the trainer all use, so a still
looks the same in each: upright (EXIF orientation applied), 8-bit RGB whatever its mode (CMYK, 16-bit,
palette, alpha composited over white, grayscale), the first frame of an animation, and refused with a
reason when it is over PIL's decompression-bomb limit. A path `shard.tar#member` reads a member of a
(webdataset) tar; a URL (`s3://`, `http(s)://`, ...) is read through fsspec.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

from vidrd_io.members import TAR_MEMBER_SEP, member_bytes, split_member
from vidrd_io.remote import is_url, local_path
from vidrd_io.remote import read_bytes as remote_bytes

__all__ = ["TAR_MEMBER_SEP", "open_image", "read_bytes"]


def read_bytes(location: str) -> bytes:
    """Return the bytes of a file, a URL (`remote.read_bytes`), or of `archive.tar#member` (`members.member_bytes`)."""
    if is_url(location) and local_path(location) is None:
        return remote_bytes(location)
    location = local_path(location)
    if split_member(location) is not None:
        return member_bytes(location)
    with open(location, "rb") as f:
        return f.read()


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit integer images: scale the used range to 8 bits instead of clipping at 255
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(location: str, with_note: bool = False):
    """Return the upright 8-bit RGB image (and, with `with_note`, a note on what was done to it, or None)."""
    data = read_bytes(location)
    if not data:
        raise ValueError("empty file (0 bytes)")
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    notes.append(f"animated: first of {frames} frames")
                img.seek(0)
                img.load()
                if img.mode not in ("RGB", "L"):
                    notes.append(f"converted from {img.mode}")
                orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation tag
                upright = ImageOps.exif_transpose(img) if orientation != 1 else img
                if orientation != 1:
                    notes.append(f"EXIF orientation {orientation} applied")
                rgb = _to_rgb(upright)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ValueError(f"refused: decompression bomb ({exc})") from None
        except Image.UnidentifiedImageError:
            raise ValueError("not an image PIL can identify") from None
    return (rgb, "; ".join(notes) or None) if with_note else rgb
