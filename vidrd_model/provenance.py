"""What a generated video or a measured number came from: the model's weights by sha256, the software versions.

Sampled videos (`vidrd-sample`), the evaluation's generated folders and its results record these, so two outputs
can be compared honestly and a folder moved between machines is still recognised by its weights, not its path.
"""

from __future__ import annotations

from pathlib import Path

from vidrd_io.fs import file_sha256

PACKAGES = ("vidrd", "torch", "diffusers", "transformers", "numpy", "scipy", "open_clip_torch", "av")


def model_identity(model_dir: str | Path) -> dict:
    """Return our model folder (`VidRDPipeline.save_pretrained`) and the sha256 of its U-Net, VAE and LoRA weights
    (`lora/`, which `VidRDPipeline.from_pretrained` loads when present)."""
    model_dir = Path(model_dir)
    weights = [w for part in ("unet", "vae", "lora") for w in sorted((model_dir / part).glob("*.safetensors"))]
    return {"kind": "vidrd", "model": str(model_dir.resolve()),
            "sha256": {w.relative_to(model_dir).as_posix(): file_sha256(w) for w in weights}}


def software_versions() -> dict:
    """Return the installed versions of the packages outputs depend on (None: not installed, e.g. a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
