"""The UCF-101 zero-shot table: our FVD / IS beside the numbers the papers published, with our row's settings."""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from vidrd_io.fs import atomic_write


@dataclass(frozen=True)
class PublishedResult:
    method: str
    fvd: float  # lower is better
    inception_score: float  # higher is better
    source: str


# UCF-101 zero-shot, as VidRD's paper (Gu et al. 2023) lists them; each paper ran its own protocol.
PUBLISHED = (
    PublishedResult("CogVideo", 701.59, 25.27, "Hong et al. 2022"),
    PublishedResult("Make-A-Video", 367.23, 33.00, "Singer et al. 2022"),
    PublishedResult("Video LDM", 550.61, 33.45, "Blattmann et al. 2023"),
    PublishedResult("PYoCo", 355.19, 47.76, "Ge et al. 2023"),
    PublishedResult("VidRD", 363.19, 39.37, "Gu et al. 2023"),
)

PROTOCOL_NOTE = ("Published rows are copied from the papers. Their protocols differ (number of generated videos, "
                 "frame count and rate, resolution and preprocessing, real-video sampling, extractor versions), so "
                 "differences of a few percent are not meaningful; our rows' settings are listed below the table.")
STANDIN_WARNING = "stand-in extractors: numbers not comparable"


def published_as_dicts() -> list[dict]:
    """Returns the published rows as JSON-ready dicts (what results.json records beside our numbers)."""
    return [asdict(r) for r in PUBLISHED]


def is_standin_extractor(path: str | Path) -> bool:
    """Returns whether a TorchScript file is one of the demo's stand-in networks (its code lives in the
    `vidrd_demo` package, or in `vidrd_data/demo_models.py` for files written before the package existed), read
    from the archive's file list so the file's code is not run."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("code/__torch__/vidrd_demo/" in name or name.endswith("code/__torch__/vidrd_data/demo_models.py")
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` through a temporary file and a rename, creating the parent folder."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _number(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _default_name(result: dict) -> str:
    model = ((result.get("generation") or {}).get("model") or {}).get("model")
    return f"ours ({'/'.join(Path(model).parts[-2:])})" if model else "ours"


def _our_row(result: dict, name: str) -> tuple[str, str, str]:
    fvd, inception = result.get("fvd") or {}, result.get("is") or {}
    is_text = _number(inception.get("is_mean"))
    if inception.get("is_std") is not None:
        is_text += f" ± {inception['is_std']:.2f}"
    if result.get("standin_extractors"):
        name = f"**{name} — {STANDIN_WARNING.upper()}**"
    return name, _number(fvd.get("fvd")), is_text


def _counts(result: dict) -> str:
    """Returns the videos each metric actually used (fewer than planned when some could not be read)."""
    protocol, fvd, inception = result.get("protocol") or {}, result.get("fvd") or {}, result.get("is") or {}
    return (f"N = {protocol.get('num_videos', '?')} planned; FVD on {fvd.get('num_generated', '?')} generated vs "
            f"{fvd.get('num_real', protocol.get('num_real', '?'))} real ({protocol.get('real_split', '?')}); "
            f"IS on {inception.get('num_generated', '?')} generated")


def _settings_line(result: dict, name: str) -> str:
    sampler = (result.get("generation") or {}).get("sampler") or {}
    crf = (result.get("generation") or {}).get("crf")
    settings = result.get("settings") or {}
    shas = [f"{kind.upper()} {info['sha256'][:12]}" for kind, info in (result.get("extractors") or {}).items()
            if info and info.get("sha256")]
    parts = [
        _counts(result),
        f"{sampler.get('frames_per_video', '?')} frames at {sampler.get('fps', '?')} fps, "
        f"generated at {sampler.get('width', '?')}×{sampler.get('height', '?')}"
        + (f", H.264 CRF {crf}" if crf is not None else ""),
        f"FVD on {settings.get('num_frames', '?')} frames from frame 0 (stride {settings.get('stride', '?')}, "
        f"real stride {settings.get('real_stride', 1)}) resized to {settings.get('resolution', '?')} px, "
        f"IS on C3D's 16×112×112",
        f"{sampler.get('num_inference_steps', '?')} DDIM steps, guidance {sampler.get('guidance_scale', '?')}, "
        f"overlap {sampler.get('overlap', '?')}",
        "extractor sha256 " + (", ".join(shas) if shas else "?"),
    ]
    line = f"- {name}: " + "; ".join(parts) + "."
    if result.get("standin_extractors"):
        line += " **Stand-in extractors (the demo's random I3D / C3D): numbers not comparable.**"
    return line


def results_table(results: list[dict], names: list[str] | None = None) -> str:
    """Returns the markdown table of the published rows followed by ours (one per results.json), with the notes."""
    names = names or [_default_name(r) for r in results]
    lines = ["| Method | FVD ↓ | IS ↑ |", "|---|---:|---:|"]
    lines += [f"| {r.method} | {r.fvd:.2f} | {r.inception_score:.2f} |" for r in PUBLISHED]
    lines += ["| {} | {} | {} |".format(*_our_row(result, name)) for result, name in zip(results, names)]
    lines += ["", "UCF-101 zero-shot: FVD (I3D) and IS (C3D) of videos generated from one prompt per class. "
              + PROTOCOL_NOTE, ""]
    lines += [_settings_line(result, name) for result, name in zip(results, names)]
    warnings = [(name, text) for result, name in zip(results, names) for text in result.get("warnings") or []]
    if warnings:
        for name, text in warnings:
            lines += ["", f"> **Warning — {name}:** {text}"]
    if any(r.get("standin_extractors") for r in results):
        lines += ["", f"> **Warning — {STANDIN_WARNING}.** Rows marked so were measured with randomly initialised "
                      "stand-in networks (the demo's); only the real i3d_torchscript.pt / c3d_ucf101.pt give "
                      "numbers comparable to the table."]
    return "\n".join(lines) + "\n"
