"""Load the I3D (FVD) and C3D (IS) networks from stylegan-v's TorchScript files, or a VideoMAE (content-debiased
FVD) from a transformers folder, and run them on uint8 clips.

TorchScript files carry code as well as weights and `torch.jit.load` runs it: load only files you trust (the
published metric files, or the stand-ins that `vidrd_demo.models.extractors.write_standin_extractors` writes). A
VideoMAE folder is weights only (safetensors, no remote code).
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidrd_io.fs import file_sha256

log = logging.getLogger(__name__)

# Both files are the ones universome/stylegan-v's src/metrics/ download.
I3D_HINT = "stylegan-v's metric file https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"
C3D_HINT = "stylegan-v's metric file https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt"

# cd-FVD (Ge et al. 2024, songweige/content-debiased-fvd) uses VideoMAE-v2 ViT-g/14 fine-tuned on SSv2
# (vit_g_hybrid_pt_1200e_ssv2_ft.pth); transformers has the same architecture (fixed sinusoidal positions, mean
# pooling + fc_norm), so the checkpoint is read once converted to a VideoMAEForVideoClassification folder.
VIDEOMAE_HINT = ("cd-FVD's VideoMAE-v2 checkpoint (OpenGVLab/InternVideoMAE_models mae-g/vit_g_hybrid_pt_1200e_ssv2_"
                 "ft.pth) saved as a transformers VideoMAEForVideoClassification folder")
VIDEOMAE_WEIGHTS = "model.safetensors"

_KINDS = {
    # kind: (file name, metric, CLI option, hint)
    "i3d": ("i3d_torchscript.pt", "FVD", "--i3d", I3D_HINT),
    "c3d": ("c3d_ucf101.pt", "IS", "--c3d", C3D_HINT),
    "videomae": ("a VideoMAE folder (config.json, model.safetensors)", "cd-FVD", "--cd-fvd", VIDEOMAE_HINT),
}


class MissingExtractor(FileNotFoundError):
    """The TorchScript file a metric needs is not there; `str()` is one line saying which, why, and where from."""

    def __init__(self, kind: str, path: str | Path | None):
        name, metric, option, hint = _KINDS[kind]
        where = f"not found at {path}" if path is not None else "no path given"
        super().__init__(
            f"{metric} needs the {kind.upper()} network {name} ({where}); pass it with {option} PATH; "
            f"it is usually obtained from {hint}"
        )
        self.kind, self.path = kind, path


@dataclass
class Extractor:
    """A loaded feature network and where it came from (`sha256` pins the file in reports and cache keys)."""

    kind: str  # "i3d" | "c3d" | "videomae"
    path: Path
    sha256: str
    module: object  # torch.jit.ScriptModule, or transformers' VideoMAEForVideoClassification / VideoMAEModel
    device: str


def check_extractor_file(kind: str, path: str | Path | None) -> Path:
    """Return `path` when it is a TorchScript archive; raise MissingExtractor when it is not a file, ValueError
    ("--i3d PATH: not a TorchScript file (...)") when it is something else. Reads the archive's file list only: no
    code runs."""
    if kind not in _KINDS:
        raise ValueError(f"unknown extractor kind {kind!r} (use i3d, c3d or videomae)")
    if kind == "videomae":
        return check_videomae_folder(path)
    if path is None or not Path(path).is_file():
        raise MissingExtractor(kind, path)
    path = Path(path)
    option = _KINDS[kind][2]
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ValueError(f"{option} {path}: not a TorchScript file (not a zip archive; expected "
                         f"{_KINDS[kind][0]})") from None
    if not any(name.startswith("code/") or "/code/" in name for name in names):
        raise ValueError(f"{option} {path}: not a TorchScript file (a zip without code/, e.g. a torch.save "
                         f"checkpoint; expected {_KINDS[kind][0]})")
    return path


def load_extractor(kind: str, path: str | Path | None, device: str = "cpu") -> Extractor:
    """Return the TorchScript network `kind` ("i3d" or "c3d") loaded from `path` in eval mode on `device`.

    Raises MissingExtractor when `path` is None or not a file, ValueError when it is not a TorchScript file or
    torch cannot load it. The file's code runs on load: trusted files only.
    """
    path = check_extractor_file(kind, path)
    if kind == "videomae":
        return load_videomae(path, device)
    import torch

    with warnings.catch_warnings():  # torch deprecates TorchScript, but the published metric files exist only as such
        warnings.simplefilter("ignore", FutureWarning)
        try:
            module = torch.jit.load(str(path), map_location=device)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{_KINDS[kind][2]} {path}: not a TorchScript file torch can load on {device} "
                             f"({reason})") from None
    module.eval()
    log.info("loaded %s from %s on %s", kind, path, device)
    return Extractor(kind, path, file_sha256(path), module, device)


def check_videomae_folder(path: str | Path | None) -> Path:
    """Return `path` when it is a folder with config.json (model_type videomae) and model.safetensors; raise
    MissingExtractor when it is absent, ValueError naming what is wrong otherwise."""
    import json

    if path is None or not Path(path).exists():
        raise MissingExtractor("videomae", path)
    path = Path(path)
    config = path / "config.json"
    if not path.is_dir() or not config.is_file() or not (path / VIDEOMAE_WEIGHTS).is_file():
        raise ValueError(f"--cd-fvd {path}: not a VideoMAE folder (needs config.json and {VIDEOMAE_WEIGHTS})")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError):
        raise ValueError(f"--cd-fvd {path}: config.json is not a JSON object") from None
    if model_type != "videomae":
        raise ValueError(f"--cd-fvd {path}: config.json has model_type {model_type!r}, expected 'videomae'")
    return path


def load_videomae(path: str | Path, device: str = "cpu") -> Extractor:
    """Return the VideoMAE of a transformers folder (VideoMAEForVideoClassification when its config names it, whose
    fc_norm cd-FVD's features pass through; else VideoMAEModel), in eval mode on `device`; sha256 hashes the
    config's and the weights' sha256. Safetensors only, no remote code."""
    import hashlib

    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel

    path = check_videomae_folder(path)
    config = VideoMAEConfig.from_pretrained(path, local_files_only=True)
    classification = "VideoMAEForVideoClassification" in (config.architectures or [])
    model_class = VideoMAEForVideoClassification if classification else VideoMAEModel
    module = model_class.from_pretrained(path, local_files_only=True, use_safetensors=True).to(device).eval()
    digest = hashlib.sha256((file_sha256(path / "config.json") + file_sha256(path / VIDEOMAE_WEIGHTS)).encode())
    log.info("loaded %s from %s on %s", model_class.__name__, path, device)
    return Extractor("videomae", path, digest.hexdigest(), module, device)


def videomae_features(ext: Extractor, videos) -> np.ndarray:
    """Return cd-FVD's VideoMAE features `[B, D]` (float64) of uint8 videos `[B, T, H, W, 3]`: frames scaled to
    [0, 1] with no mean/std normalisation and resized (bilinear, squashed) to the model's size, as cd-FVD's
    `preprocess_videomae` does; then the mean of the last hidden states over the tokens, through `fc_norm` when the
    model has one (VideoMAE-v2's `forward_features` with `use_mean_pooling`)."""
    import torch
    import torch.nn.functional as F

    model = ext.module
    config = model.config
    x = _to_channels_first(videos)  # [B, 3, T, H, W]
    if x.shape[2] != config.num_frames:
        raise ValueError(f"the VideoMAE at {ext.path} takes {config.num_frames} frames, got {x.shape[2]}")
    b, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).to(ext.device, torch.float32) / 255
    frames = F.interpolate(frames, size=(config.image_size, config.image_size), mode="bilinear", align_corners=False)
    pixel_values = frames.reshape(b, t, c, config.image_size, config.image_size)
    backbone = getattr(model, "videomae", model)
    with torch.no_grad():
        pooled = backbone(pixel_values=pixel_values).last_hidden_state.mean(dim=1)
        if getattr(model, "fc_norm", None) is not None:
            pooled = model.fc_norm(pooled)
    return pooled.double().cpu().numpy()


def fvd_features(ext: Extractor, videos) -> np.ndarray:
    """Return the FVD features of uint8 videos `[B, T, H, W, 3]` under `ext`: I3D's, or VideoMAE's for cd-FVD."""
    return videomae_features(ext, videos) if ext.kind == "videomae" else i3d_features(ext, videos)


def _to_channels_first(videos, expected: tuple[int, ...] | None = None):
    """Return uint8 `[B, T, H, W, 3]` videos (numpy or torch) as a contiguous uint8 tensor `[B, 3, T, H, W]`."""
    import torch

    x = torch.as_tensor(np.asarray(videos) if not isinstance(videos, torch.Tensor) else videos)
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"videos must be uint8 [B, T, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    if expected is not None and tuple(x.shape[1:4]) != expected:
        raise ValueError(f"videos must have T, H, W = {expected}, got {tuple(x.shape[1:4])}")
    return x.permute(0, 4, 1, 2, 3).contiguous()


def i3d_features(ext: Extractor, videos) -> np.ndarray:
    """Return the I3D features `[B, D]` (float64) of uint8 videos `[B, T, H, W, 3]`, as stylegan-v's FVD takes them
    (the network rescales [0, 255] to [-1, 1] and resizes frames to 224×224 itself)."""
    import torch

    x = _to_channels_first(videos).to(ext.device)
    with torch.no_grad():
        features = ext.module(x, rescale=True, resize=True, return_features=True)
    return features.detach().double().cpu().numpy().reshape(len(x), -1)


def c3d_probabilities(ext: Extractor, videos) -> np.ndarray:
    """Return the C3D class probabilities `[B, K]` (float64) of uint8 videos `[B, 16, 112, 112, 3]`.

    We resize (short side) and centre-crop clips to 112×112 before the network, the C3D's training input. Whether
    stylegan-v's c3d_ucf101.pt also resizes internally is not known to us (stylegan-v passes dataset-resolution
    clips with no detector arguments); if it does, our 112×112 input goes through it unchanged in size.

    A network whose rows are not probabilities (negative, or not summing to 1) is refused with ValueError rather
    than softmaxed here: a wrong file would otherwise give a plausible-looking score.
    """
    import torch

    x = _to_channels_first(videos, expected=(16, 112, 112)).to(ext.device)
    with torch.no_grad():
        probs = ext.module(x).detach().double().cpu().numpy()
    if probs.ndim != 2 or len(probs) != len(x):
        raise ValueError(f"C3D network {ext.path} returned shape {probs.shape}, expected [{len(x)}, classes]")
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"C3D network {ext.path} does not return class probabilities (rows must be ≥ 0, sum to 1)")
    return probs
