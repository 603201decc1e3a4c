"""Sharpness: the variance of the Laplacian of the grey frames (Pech-Pacheco et al. 2000), the usual cheap blur
score. Low is blurry; its scale depends on the frame size, so the stage scores frames of one short side."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vidrd_data.scores import Clip


class BlurScore:
    name = "blur"
    columns = [pa.field("sharpness", pa.float64())]

    def identity(self) -> dict:
        """Return the score's identity: an OpenCV formula, no weights."""
        import cv2

        return {"name": f"opencv-{cv2.__version__} laplacian variance", "sha256": None}

    def __call__(self, clip: Clip) -> dict:
        """Return the mean Laplacian variance of the stills' grey images."""
        import cv2

        values = [cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for f in clip.stills]
        return {"sharpness": float(np.mean(values))}
