"""The UCF-101 zero-shot table: our FVD / IS beside the numbers the papers published, with our row's settings."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from vidrd_io.fs import atomic_write


@dataclass(frozen=True)
class PublishedResult:
    method: str
    fvd: float  # lower is better
    inception_score: float  # higher is better
    source: str  # the method's paper
    reported_in: str  # the paper whose table the numbers come from (who ran the measurement)


# UCF-101 zero-shot FVD / IS. Each row names the method's paper and the paper that measured and published the
# numbers; each ran its own protocol.
PUBLISHED = (
    PublishedResult("CogVideo (English)", 701.59, 25.27, "Hong et al. 2022 (arXiv 2205.15868)",
                    "Singer et al. 2022, Make-A-Video (arXiv 2209.14792): CogVideo's own paper reports fine-tuned, "
                    "not zero-shot, UCF-101 numbers"),
    PublishedResult("Make-A-Video", 367.23, 33.00, "Singer et al. 2022 (arXiv 2209.14792)", "its own paper"),
    PublishedResult("Video LDM", 550.61, 33.45, "Blattmann et al. 2023 (arXiv 2304.08818)", "its own paper"),
    PublishedResult("PYoCo", 355.19, 47.76,
                    "Ge, Nah, Liu et al. 2023, Preserve Your Own Correlation (NVIDIA; ICCV 2023, arXiv 2305.10474)",
                    "its own paper"),
    PublishedResult("VidRD", 363.19, 39.37, "Gu et al. 2023, Reuse and Diffuse (arXiv 2309.03549)", "its own paper"),
)

PROTOCOL_NOTE = ("Published rows are copied from the papers named in results.json (`published`: the method's paper "
                 "and the paper that measured it). Their protocols differ (number of generated videos, frame count "
                 "and rate, resolution and preprocessing, real-video sampling, extractor versions), so differences "
                 "of a few percent are not meaningful; our rows' settings are listed below the table.")

# What is established of the protocol behind VidRD's published row, from the release's evaluator
# (anonymous0x233/ReuseAndDiffuse@3976e94: configs/example.yaml, model/model.py SDVideoModelEvaluator) and the
# usual UCF-101 zero-shot protocol. Not established (no UCF-101 script or numbers of frames/fps are public): the
# frame count and rate of the paper's videos, N, the prompts, the real clips' sampling.
PAPER_PROTOCOL = {
    "guidance_scale": 10.0,
    "negative_prompt": "watermark",
    "num_inference_steps": 50,
    "size": 256,  # the release's `resolution`
    "frames_per_video": 16,  # I3D / C3D clips
    "num_videos": 10_000,  # the common N (Make-A-Video, Video LDM, PYoCo); VidRD's own N is not published
}
STANDIN_WARNING = "stand-in extractors: numbers not comparable"


def published_as_dicts() -> list[dict]:
    """Returns the published rows as JSON-ready dicts (what results.json records beside our numbers)."""
    return [asdict(r) for r in PUBLISHED]


def is_standin_extractor(path: str | Path) -> bool:
    """Returns whether a TorchScript file is one of the demo's stand-in networks (its code lives in the
    `vidrd_demo` package, or in `vidrd_data/demo_models.py` for files written before the package existed), read
    from the archive's file list so the file's code is not run; or whether a VideoMAE folder is the demo's (its
    config.json says `vidrd_demo_standin`)."""
    if Path(path).is_dir():
        try:
            return bool(json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("vidrd_demo_standin"))
        except (OSError, ValueError, AttributeError):
            return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("code/__torch__/vidrd_demo/" in name or name.endswith("code/__torch__/vidrd_data/demo_models.py")
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` through a temporary file and a rename, creating the parent folder."""
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def protocol_deviations(result: dict) -> list[str]:
    """Returns, for a results.json of `vidrd-eval ucf101`, each way its settings differ from what is established of
    the paper's protocol (PAPER_PROTOCOL), seam jumps and unmatched frame rates included; [] when none is known."""
    sampler = (result.get("generation") or {}).get("sampler") or {}
    settings = result.get("settings") or {}
    known = PAPER_PROTOCOL
    out = []
    if sampler.get("num_clips", 1) > 1:
        out.append(f"{sampler['num_clips']} clips joined with overlap {sampler.get('overlap')} (seams: "
                   + ("jumps back" if sampler.get("overlap") == "drop" else "motion runs back") + " at each)")
    if sampler.get("guidance_scale") != known["guidance_scale"]:
        out.append(f"guidance {sampler.get('guidance_scale')} (release: {known['guidance_scale']:g})")
    if (sampler.get("negative_prompt") or "") != known["negative_prompt"]:
        out.append(f"negative prompt {sampler.get('negative_prompt')!r} (release: {known['negative_prompt']!r})")
    if sampler.get("num_inference_steps") != known["num_inference_steps"]:
        out.append(f"{sampler.get('num_inference_steps')} DDIM steps (release: {known['num_inference_steps']})")
    if (sampler.get("width"), sampler.get("height")) != (known["size"], known["size"]):
        out.append(f"{sampler.get('width')}×{sampler.get('height')} px (release: {known['size']}²)")
    if sampler.get("frames_per_video") != known["frames_per_video"] or settings.get("num_frames") != 16:
        out.append(f"{sampler.get('frames_per_video')} frames generated, {settings.get('num_frames')} measured "
                   f"(16 usual)")
    if not settings.get("match_fps"):
        out.append(f"real clips not frame-rate matched (real stride {settings.get('real_stride', 1)})")
    if (result.get("protocol") or {}).get("num_videos") != known["num_videos"]:
        out.append(f"N = {(result.get('protocol') or {}).get('num_videos')} (usual: {known['num_videos']:,})")
    if (result.get("protocol") or {}).get("real_split") != "trainlist01":
        out.append("real clips: not train split 1")
    if sampler.get("decode_per_frame"):
        out.append("decoded frame by frame (release decoding)")
    if result.get("standin_extractors"):
        out.append("stand-in extractors")
    return out


def _protocol_cell(result: dict) -> str:
    deviations = result.get("deviations")
    if deviations is None:  # a results.json written before deviations were recorded
        deviations = protocol_deviations(result)
    return "as established¹" if not deviations else "differs²: " + "; ".join(deviations)


def _receipt_cell(result: dict) -> str:
    return (result.get("receipt") or {}).get("id", "—")


def _number(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _default_name(result: dict) -> str:
    model = ((result.get("generation") or {}).get("model") or {}).get("model")
    return f"ours ({'/'.join(Path(model).parts[-2:])})" if model else "ours"


def _our_row(result: dict, name: str) -> tuple[str, str, str, str, str]:
    fvd, inception = result.get("fvd") or {}, result.get("is") or {}
    is_text = _number(inception.get("is_mean"))
    if inception.get("is_std") is not None:
        is_text += f" ± {inception['is_std']:.2f}"
    if result.get("standin_extractors"):
        name = f"**{name} — {STANDIN_WARNING.upper()}**"
    return name, _number(fvd.get("fvd")), is_text, _protocol_cell(result), _receipt_cell(result)


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
    cd_fvd = result.get("cd_fvd") or {}
    real_side = (f"real clips matched to {settings['match_fps']:g} fps (each video's stride round(fps / "
                 f"{settings['match_fps']:g}))" if settings.get("match_fps")
                 else f"real stride {settings.get('real_stride', 1)}")
    parts = [
        _counts(result),
        f"{sampler.get('frames_per_video', '?')} frames at {sampler.get('fps', '?')} fps, "
        f"generated at {sampler.get('width', '?')}×{sampler.get('height', '?')}"
        + (f", H.264 CRF {crf}" if crf is not None else ""),
        f"FVD on {settings.get('num_frames', '?')} frames from frame 0 (stride {settings.get('stride', '?')}, "
        f"{real_side}) resized to {settings.get('resolution', '?')} px, IS on C3D's 16×112×112",
        f"{sampler.get('num_clips', '?')} clip(s) of {sampler.get('num_frames', '?')} frames, "
        f"{sampler.get('num_inference_steps', '?')} DDIM steps, guidance {sampler.get('guidance_scale', '?')}, "
        f"negative prompt {sampler.get('negative_prompt', '?')!r}, overlap {sampler.get('overlap', '?')}",
        "extractor sha256 " + (", ".join(shas) if shas else "?"),
    ]
    if cd_fvd:
        parts.append(f"cd-FVD (VideoMAE {cd_fvd.get('videomae', {}).get('sha256', '?')[:12]}) "
                     f"{_number(cd_fvd.get('fvd'))} [receipt {(cd_fvd.get('receipt') or {}).get('id', '?')}]")
    if result.get("receipt"):
        parts.append(f"receipt {result['receipt']['id']} (results.json `receipt`; per metric under fvd/is)")
    line = f"- {name}: " + "; ".join(parts) + "."
    if result.get("standin_extractors"):
        line += " **Stand-in extractors (the demo's random I3D / C3D): numbers not comparable.**"
    return line


def results_table(results: list[dict], names: list[str] | None = None) -> str:
    """Returns the markdown table of the published rows followed by ours (one per results.json), with the notes."""
    names = names or [_default_name(r) for r in results]
    lines = ["| Method | FVD ↓ | IS ↑ | Protocol | Receipt |", "|---|---:|---:|---|---|"]
    lines += [f"| {r.method} | {r.fvd:.2f} | {r.inception_score:.2f} | its paper's"
              + ("" if r.reported_in == "its own paper" else f"; measured by {r.reported_in.split(',')[0]}")
              + " | — |" for r in PUBLISHED]
    lines += ["| {} | {} | {} | {} | {} |".format(*_our_row(result, name)) for result, name in zip(results, names)]
    lines += ["", "UCF-101 zero-shot: FVD (I3D) and IS (C3D) of videos generated from one prompt per class. "
              + PROTOCOL_NOTE, "",
              "¹ matches what is established of VidRD's protocol: one 16-frame generation (no seams), real clips "
              "matched to the generated frame rate, the release evaluator's sampler (50 DDIM steps, guidance 10, "
              "negative prompt \"watermark\", 256²), N = 10,000, train split 1. Not established, so not checked: "
              "the paper's frame count and rate, N and prompts. ² differs from it as listed.", ""]
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
