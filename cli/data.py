"""`vidrd-data`: build, inspect and validate vidrd manifests. Argument parsing and printing only."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Build video–text training data the VidRD way: stages write Parquet manifests.",
)
out = Console(soft_wrap=True)


def _error(message: str) -> None:
    print(f"vidrd-data: {message}", file=sys.stderr, flush=True)

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


class UsageProblem(Exception):
    """Bad input from the user: reported as one line with exit status 2."""


def _check_out(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageProblem(f"--out {path} exists and is not a directory")


def _print_summary(summary) -> None:
    s = summary
    out.print(
        f"[bold]{s.out_dir}[/]: {s.output_rows} samples from {s.input_rows} inputs "
        f"([green]{s.ok} ok[/], [red]{s.failed} failed[/]); parts {s.parts_total} "
        f"({s.parts_skipped} already complete), {s.wall_time_s:.1f} s"
    )


def _run(stage: str, params: dict, table, root, inputs: list[str], out_dir: Path, workers, shard_size, overwrite, progress):
    from vidrd_data.runner import run_stage

    _check_out(out_dir)
    summary = run_stage(
        stage, params, table, out_dir, root=root, input_desc=inputs, shard_size=shard_size, workers=workers,
        overwrite=overwrite, progress=progress,
    )
    _print_summary(summary)


OutOpt = typer.Option(..., "--out", "-o", help="Manifest directory to write (resumed if it exists).")
WorkersOpt = typer.Option(DEFAULT_WORKERS, "--workers", "-w", help="Worker processes.")
ShardOpt = typer.Option(1000, "--shard-size", help="Input rows per shard (one Parquet part each).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Start over instead of resuming.")
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")
RootOpt = typer.Option(None, "--root", help="Directory that relative media paths are resolved against.")


@app.callback()
def _root_options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def images(
    input: Path = typer.Argument(..., help="A captions table (CSV/TSV/JSONL/Parquet) or a folder of images with .txt sidecars."),
    out_dir: Path = OutOpt,
    image_col: str = typer.Option("image", "--image-col", help="Table column holding image paths."),
    caption_col: str = typer.Option("caption", "--caption-col", help="Table column holding captions."),
    root: Optional[Path] = RootOpt,
    source_dataset: Optional[str] = typer.Option(None, "--source-dataset", help="Name recorded in source_dataset."),
    workers: int = WorkersOpt,
    shard_size: int = ShardOpt,
    overwrite: bool = OverwriteOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Image–text pairs → `kind=image` rows (each image decoded once to check it)."""
    from vidrd_data import sources

    if input.is_dir():
        table, base = sources.image_folder(input, source_dataset=source_dataset)
    else:
        table, base = sources.caption_table(
            input, path_col=image_col, caption_col=caption_col, root=root, source_dataset=source_dataset
        )
    _run("images", {}, table, base, [str(input)], out_dir, workers, shard_size, overwrite, progress)


@app.command()
def videos(
    input: Path = typer.Argument(..., help="A folder of videos (recursive) or a CSV/Parquet list with a `path` column."),
    out_dir: Path = OutOpt,
    layout: str = typer.Option("flat", "--layout", help="flat, or action: ROOT/ClassName/video.ext gives the label."),
    path_col: str = typer.Option("path", "--path-col", help="List column holding video paths."),
    label_col: Optional[str] = typer.Option(None, "--label-col", help="List column holding class labels."),
    root: Optional[Path] = RootOpt,
    source_dataset: Optional[str] = typer.Option(None, "--source-dataset", help="Name recorded in source_dataset."),
    workers: int = WorkersOpt,
    shard_size: int = ShardOpt,
    overwrite: bool = OverwriteOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Video files → one `video_clip` row per whole video, with probed duration, frames, fps and size."""
    from vidrd_data import sources

    if input.is_dir():
        table, base = sources.video_folder(input, layout=layout, source_dataset=source_dataset)
    else:
        table, base = sources.caption_table(
            input, path_col=path_col, caption_col=None, label_col=label_col, root=root, source_dataset=source_dataset
        )
    _run("videos", {}, table, base, [str(input)], out_dir, workers, shard_size, overwrite, progress)


def _parse_pairs(text: str, option: str) -> dict[str, float]:
    try:
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {k.strip(): float(v) for k, v in pairs}
    except ValueError:
        raise UsageProblem(f"{option} takes name=weight pairs separated by commas, got {text!r}") from None


def _parse_range(text: str, option: str) -> list[float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageProblem(f"{option} takes MIN,MAX, got {text!r}") from None
    return [lo, hi]


def _image_inputs(input: str, captions, image_col, caption_col, root, source_dataset):
    """Read any image–text input: a manifest, a folder (+ captions table), tar shards, or a captions table."""
    from vidrd_data import sources
    from vidrd_data.manifest import is_manifest

    path = Path(input)
    if path.is_dir() and is_manifest(path):
        table, base = sources.manifest_rows(path, kind="image", root=root)
        if table.num_rows == 0:
            raise UsageProblem(f"{path} has no ok rows of kind image")
        return table, base
    if path.is_dir() and not any(path.glob("*.tar")):
        return sources.image_folder(path, source_dataset=source_dataset, captions=captions,
                                    image_col=image_col, caption_col=caption_col)
    if path.is_dir() or input.endswith(".tar") or any(c in input for c in "*?["):
        return sources.webdataset_shards(input, source_dataset=source_dataset)
    return sources.caption_table(path, path_col=image_col, caption_col=caption_col, root=root, source_dataset=source_dataset)


@app.command("pseudo-video")
def pseudo_video(
    input: str = typer.Argument(..., help="A captions table, a folder of images, a glob of webdataset tars, or a manifest of image rows."),
    out_dir: Path = OutOpt,
    captions: Optional[Path] = typer.Option(None, "--captions", help="Captions table for a folder of images (instead of .txt sidecars)."),
    image_col: str = typer.Option("image", "--image-col", help="Table column holding image paths."),
    caption_col: str = typer.Option("caption", "--caption-col", help="Table column holding captions."),
    root: Optional[Path] = RootOpt,
    source_dataset: Optional[str] = typer.Option(None, "--source-dataset", help="Name recorded in source_dataset."),
    size: int = typer.Option(256, "--size", help="Short side of the frames (even)."),
    aspect: str = typer.Option("keep", "--aspect", help="keep (the image's aspect ratio) or square."),
    frames: int = typer.Option(8, "--frames", help="Frames per pseudo-video (the released VidRD model uses 8)."),
    fps: float = typer.Option(8.0, "--fps", help="Frame rate recorded for the pseudo-video."),
    seed: int = typer.Option(0, "--seed", help="Seed of the motion draws (same seed + input = same motion)."),
    motion_probs: str = typer.Option("zoom_in=0.2,zoom_out=0.2,pan=0.25,diagonal_pan=0.15,zoom_pan=0.2", "--motion-probs", help="Relative weights of the motion types."),
    zoom_range: str = typer.Option("1.15,1.5", "--zoom-range", help="MIN,MAX zoom factor."),
    pan_range: str = typer.Option("0.1,0.25", "--pan-range", help="MIN,MAX pan distance as a fraction of the image."),
    easing: str = typer.Option("ease_in_out", "--easing", help="ease_in_out or linear."),
    min_side: int = typer.Option(256, "--min-side", help="Reject images whose short side is smaller."),
    max_aspect: float = typer.Option(3.0, "--max-aspect", help="Reject images whose long/short side ratio is larger."),
    min_caption_words: Optional[int] = typer.Option(None, "--min-caption-words", help="Reject shorter captions."),
    max_caption_words: Optional[int] = typer.Option(None, "--max-caption-words", help="Reject longer captions."),
    materialize: Optional[Path] = typer.Option(None, "--materialize", help="Also write each pseudo-video as an H.264 mp4 here."),
    workers: int = WorkersOpt,
    shard_size: int = ShardOpt,
    overwrite: bool = OverwriteOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Image–text pairs → pseudo-videos: seeded camera motion over each still, stored lazily as motion parameters."""
    from vidrd_data.pseudo_video import MotionConfig

    if size < 16 or size % 2:
        raise UsageProblem(f"--size must be an even number ≥ 16, got {size}")
    if aspect not in ("keep", "square"):
        raise UsageProblem(f"--aspect must be keep or square, got {aspect!r}")
    if frames < 1 or fps <= 0:
        raise UsageProblem(f"--frames must be ≥ 1 and --fps > 0, got {frames} and {fps}")
    params = {
        "size": size, "aspect": aspect, "frames": frames, "fps": fps, "seed": seed,
        "motion_probs": _parse_pairs(motion_probs, "--motion-probs"),
        "zoom_range": _parse_range(zoom_range, "--zoom-range"),
        "pan_range": _parse_range(pan_range, "--pan-range"),
        "easing": easing, "min_side": min_side, "max_aspect": max_aspect,
        "min_caption_words": min_caption_words, "max_caption_words": max_caption_words,
        "materialize": str(materialize.resolve()) if materialize else None,
    }
    try:
        MotionConfig(probs=params["motion_probs"], zoom_range=tuple(params["zoom_range"]),
                     pan_range=tuple(params["pan_range"]), easing=easing)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    table, base = _image_inputs(input, captions, image_col, caption_col, root, source_dataset)
    _run("pseudo-video", params, table, base, [input], out_dir, workers, shard_size, overwrite, progress)


@app.command()
def retry(
    manifest_dir: Path = typer.Argument(..., help="A finished manifest directory."),
    workers: int = WorkersOpt,
    progress: bool = ProgressOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """Re-run only the failed rows of a finished manifest, rewriting the parts that hold them."""
    from vidrd_data.runner import retry_failed

    _print_summary(retry_failed(manifest_dir, workers=workers, progress=progress, root=root))


def _open(manifest_dir: Path, root: Optional[Path]):
    from vidrd_data.manifest import Manifest

    return Manifest.open(manifest_dir, root=root)


@app.command()
def inspect(
    manifest_dir: Path = typer.Argument(..., help="A manifest directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Also write a contact sheet PNG here."),
    samples: int = typer.Option(3, "--samples", help="Sample rows to show."),
    root: Optional[Path] = RootOpt,
) -> None:
    """Schema, counts by kind / dataset / status, caption and duration statistics, failures, sample rows."""
    from vidrd_data.inspection import summarize

    m = _open(manifest_dir, root)
    info = summarize(m, samples=samples)
    if sheet is not None:
        from vidrd_data.sheet import contact_sheet

        info["sheet"] = {"path": str(sheet), "samples": contact_sheet(m, str(sheet))}
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    _print_info(info)


def _print_info(info: dict) -> None:
    out.print(f"[bold]{info['path']}[/]  stage={info['stage']} kind={info['kind']} root={info['root']}")
    out.print(f"rows {info['rows']}, parts {info['parts_complete']}/{info['parts_expected']} complete")
    schema = Table(title="schema", show_header=True)
    schema.add_column("column")
    schema.add_column("type")
    for col in info["schema"]:
        schema.add_row(col["name"], col["type"])
    out.print(schema)
    for key in ("by_kind", "by_source_dataset", "by_status", "top_failure_reasons"):
        if info[key]:
            t = Table(title=key.replace("_", " "))
            t.add_column("value")
            t.add_column("rows", justify="right")
            for value, count in info[key].items():
                t.add_row(str(value), str(count))
            out.print(t)
    for key in ("caption_words", "caption_chars", "duration_s"):
        if info[key]:
            out.print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in info[key].items()))
    out.print(f"total hours of video: {info['total_hours']}")
    for row in info["sample_rows"]:
        out.print({k: v for k, v in row.items() if v is not None})
    if "sheet" in info:
        out.print(f"contact sheet: {info['sheet']['path']} ({info['sheet']['samples']} samples)")


@app.command()
def validate(
    manifest_dir: Path = typer.Argument(..., help="A manifest directory."),
    root: Optional[Path] = RootOpt,
    check_files: bool = typer.Option(True, "--files/--no-files", help="Check that source files exist."),
) -> None:
    """Check schema, unique ids, spans and source files. Exit 1 listing problems, 2 if not a manifest."""
    from vidrd_data.inspection import validate as validate_manifest

    m = _open(manifest_dir, root)
    problems = validate_manifest(m, check_files=check_files)
    for p in problems:
        out.print(f"problem: {p}", markup=False, highlight=False)
    if problems:
        out.print(f"{len(problems)} problem(s) in {manifest_dir}", markup=False)
        raise typer.Exit(1)
    out.print(f"{manifest_dir}: valid ({len(m.parts)} parts)", markup=False)


@app.command()
def demo(
    out_dir: Path = typer.Argument(Path("demo_out"), help="Where to write the demo corpus (and, with --run, its manifests)."),
    run: bool = typer.Option(False, "--run", help="Also run every stage on it, inspect and validate the results."),
    models: bool = typer.Option(True, "--models/--no-models", help="Write the tiny models too."),
) -> None:
    """Write the demo corpus and tiny models (offline, deterministic); with --run, run the pipeline on it."""
    from vidrd_data.demo import write_demo_corpus

    _check_out(out_dir)
    paths = write_demo_corpus(out_dir, models=models)
    out.print(f"demo corpus written to [bold]{out_dir}[/]")
    for name, path in paths.items():
        out.print(f"  {name}: {path if not isinstance(path, dict) else ', '.join(f'{k}={v}' for k, v in path.items())}")
    if run:
        _run_demo(out_dir)


def _run_demo(root: Path) -> None:
    from vidrd_data import sources
    from vidrd_data.inspection import summarize, validate as validate_manifest
    from vidrd_data.manifest import Manifest
    from vidrd_data.sheet import contact_sheet

    manifests = root / "manifests"
    built = []  # manifest names, in the order the stages ran

    def stage(name: str, stage_name: str, params: dict, table, base, inputs: list[str]) -> None:
        _run(stage_name, params, table, base, inputs, manifests / name, 1, 1000, True, False)
        built.append(name)

    table, base = sources.caption_table(root / "images" / "captions.csv", path_col="image", source_dataset="demo_images")
    stage("images", "images", {}, table, base, ["images/captions.csv"])
    table, base = sources.manifest_rows(manifests / "images", kind="image")
    stage("pseudo_videos", "pseudo-video", {"seed": 0}, table, base, ["manifests/images"])
    table, base = sources.video_folder(root / "actions", layout="action", source_dataset="demo_actions")
    stage("actions", "videos", {}, table, base, ["actions"])
    table, base = sources.video_folder(root / "long", source_dataset="demo_long")
    stage("long", "videos", {}, table, base, ["long"])
    for name in built:
        m = Manifest.open(manifests / name)
        info = summarize(m, samples=0)
        problems = validate_manifest(m)
        sheet = manifests / f"{name}_sheet.png"
        contact_sheet(m, str(sheet))
        out.print(
            f"{name}: {info['rows']} rows {info['by_status']}, {info['total_hours'] * 3600:.1f} s of video, "
            f"{'valid' if not problems else f'{len(problems)} problems'}; sheet {sheet}"
        )
        for reason, count in info["top_failure_reasons"].items():
            out.print(f"  failed ×{count}: {reason}", markup=False)
    out.print(f"manifests in [bold]{manifests}[/]; try: vidrd-data inspect {manifests / 'images'}")


def main(argv: list[str] | None = None) -> int:
    """Run the app; user errors become one line and exit status 2 (a traceback only with --debug)."""
    from vidrd_data.manifest import ManifestError
    from vidrd_data.runner import RunnerError
    from vidrd_data.sources import InputError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="vidrd-data", standalone_mode=False)
        return code if isinstance(code, int) else 0  # without standalone mode, Exit(n) comes back as n
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _error("aborted")
        return 130
    except typer.TyperException as exc:  # typer's (vendored click) usage errors: bad option, missing argument
        _error(exc.format_message())
        return 2
    except (UsageProblem, InputError, ManifestError, RunnerError, FileNotFoundError, NotADirectoryError) as exc:
        if debug:
            raise
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
