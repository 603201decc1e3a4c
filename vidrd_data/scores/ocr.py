"""Text area: the fraction of the frame covered by text, found by PP-OCRv4's text detector as
`rapidocr-onnxruntime` ships it (ONNX, inside its wheel: runs offline). Only the detector runs: the area needs
no recognition. The score is the mean over the stills of the union of the detected boxes' area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from vidrd_data.scores import Clip

DETECTOR_FILE = "ch_PP-OCRv4_det_infer.onnx"


class TextAreaScore:
    name = "ocr"
    columns = [pa.field("ocr_area", pa.float64())]

    def __init__(self):
        from rapidocr_onnxruntime import RapidOCR

        self.engine = RapidOCR()

    def identity(self) -> dict:
        """Return the detector's name and the sha256 of its ONNX file."""
        import rapidocr_onnxruntime

        from vidrd_io.fs import file_sha256

        path = Path(rapidocr_onnxruntime.__file__).parent / "models" / DETECTOR_FILE
        return {"name": f"rapidocr-onnxruntime PP-OCRv4 detector ({DETECTOR_FILE})", "sha256": file_sha256(path)}

    def __call__(self, clip: Clip) -> dict:
        """Return the mean fraction of the stills' area inside detected text boxes."""
        import cv2

        fractions = []
        for frame in clip.stills:
            boxes, _ = self.engine(np.ascontiguousarray(frame[..., ::-1]), use_det=True, use_cls=False, use_rec=False)
            mask = np.zeros(frame.shape[:2], np.uint8)
            for box in boxes or []:
                cv2.fillPoly(mask, [np.round(np.asarray(box, np.float32)).astype(np.int32)], 1)
            fractions.append(float(mask.mean()))
        return {"ocr_area": float(np.mean(fractions))}
