"""`vidrd-data`: build, inspect and validate vidrd manifests. Argument parsing and printing only."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cli._app import run_app
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Build video–text training data the VidRD way: stages write Parquet manifests.",
)
out = Console(soft_wrap=True)



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
    from vidrd_data.run.runner import run_stage

    _check_out(out_dir)
    summary = run_stage(
        stage, params, table, out_dir, root=root, input_desc=inputs, shard_size=shard_size, workers=workers,
        overwrite=overwrite, progress=progress,
    )
    _print_summary(summary)


def _run_job(job, out_dir: Path, workers: int, shard_size: int, overwrite: bool, progress: bool) -> None:
    _run(job.stage, job.params, job.inputs, job.root, job.input_desc, out_dir, workers, shard_size, overwrite, progress)


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
    from vidrd_data.stages.images import prepare

    job = prepare(str(input), image_col=image_col, caption_col=caption_col, root=root, source_dataset=source_dataset)
    _run_job(job, out_dir, workers, shard_size, overwrite, progress)


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
    from vidrd_data.stages.videos import prepare

    job = prepare(str(input), layout=layout, path_col=path_col, label_col=label_col, root=root,
                  source_dataset=source_dataset)
    _run_job(job, out_dir, workers, shard_size, overwrite, progress)


@app.command()
def caption(
    input: Path = typer.Argument(..., help="A folder of videos, an action-dataset root, a CSV/Parquet list (path[,label][,start,end][,caption]) or a manifest."),
    out_dir: Path = OutOpt,
    blip2: str = typer.Option(..., "--blip2", help="BLIP-2 hub id (e.g. Salesforce/blip2-opt-2.7b) or local directory."),
    layout: str = typer.Option("flat", "--layout", help="flat, or action: ROOT/ClassName/video.ext gives the label."),
    split: Optional[str] = typer.Option(None, "--split", help="UCF-101 split file (trainlist0N.txt / testlist0N.txt), a path or a name inside INPUT; labels from classInd.txt beside it."),
    path_col: str = typer.Option("path", "--path-col", help="List column holding video paths."),
    root: Optional[Path] = RootOpt,
    source_dataset: Optional[str] = typer.Option(None, "--source-dataset", help="Name recorded in source_dataset."),
    clip_seconds: Optional[float] = typer.Option(None, "--clip-seconds", help="Clip length; default: the whole video up to --max-seconds."),
    stride_seconds: Optional[float] = typer.Option(None, "--stride-seconds", help="Start of one clip to the next (default --clip-seconds)."),
    max_seconds: float = typer.Option(10.0, "--max-seconds", help="Without --clip-seconds, longer videos are cut into windows this long."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", help="Skip clips shorter than this."),
    frames: int = typer.Option(1, "--frames", help="Frames captioned per clip, evenly spaced (1: the middle frame)."),
    frame_policy: str = typer.Option("middle", "--frame-policy", help="middle, longest (caption), or concat (unique captions)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help='Prompt template; may use {label}, e.g. "a video of {label},".'),
    beams: int = typer.Option(5, "--beams", help="Beam search width."),
    max_new_tokens: int = typer.Option(30, "--max-new-tokens", help="Longest caption, in tokens."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="> 1 discourages repeated words."),
    batch_size: int = typer.Option(16, "--batch-size", help="Frames per model call."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."),
    decode_workers: int = typer.Option(0, "--decode-workers", help="Processes decoding and preprocessing frames ahead of the model, per worker (0: auto, a third of the cores on CPU, all but one on CUDA)."),
    decode_in: str = typer.Option("processes", "--decode-in", help="processes (default) or threads for the decode workers."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes (each loads the model)."),
    shard_size: int = ShardOpt,
    overwrite: bool = OverwriteOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Videos → clips captioned by BLIP-2 (`caption_source=blip2`); decoding runs ahead of the model."""
    from vidrd_data.stages.caption import prepare

    job = prepare(
        str(input), blip2=blip2, layout=layout, split=split, path_col=path_col, root=root,
        source_dataset=source_dataset, clip_seconds=clip_seconds, stride_seconds=stride_seconds,
        max_seconds=max_seconds, min_seconds=min_seconds, frames=frames, frame_policy=frame_policy, prompt=prompt,
        beams=beams, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
        batch_size=batch_size, device=device, dtype=dtype, decode_workers=decode_workers, decode_in=decode_in,
    )
    _run_job(job, out_dir, workers, shard_size, overwrite, progress)


@app.command()
def segment(
    input: Path = typer.Argument(..., help="A video file, a folder of videos, a CSV/Parquet list (path[,start,end][,caption]) or a manifest."),
    out_dir: Path = OutOpt,
    embedder: str = typer.Option("clip", "--embedder", help="clip (open_clip) or histogram (colour histograms, no weights)."),
    clip: str = typer.Option("ViT-B-32", "--clip", help="open_clip model name."),
    clip_pretrained: str = typer.Option("openai", "--clip-pretrained", help="open_clip pretrained tag."),
    clip_config: Optional[Path] = typer.Option(None, "--clip-config", help="Local open_clip model-config JSON (offline use)."),
    clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="Local open_clip checkpoint for --clip-config."),
    captioner: str = typer.Option("none", "--captioner", help="minigpt4, blip2 or none."),
    minigpt4: Optional[Path] = typer.Option(None, "--minigpt4", help="minigpt4.json naming MiniGPT-4's three parts."),
    blip2: Optional[str] = typer.Option(None, "--blip2", help="BLIP-2 hub id or directory, for --captioner blip2."),
    caption_frames: int = typer.Option(1, "--caption-frames", help="Frames captioned per segment (1: the middle one)."),
    caption_prompt: Optional[str] = typer.Option(None, "--caption-prompt", help="MiniGPT-4: the question; BLIP-2: the caption's start."),
    caption_max_new_tokens: Optional[int] = typer.Option(None, "--caption-max-new-tokens", help="Longest caption, in tokens."),
    sample_fps: float = typer.Option(2.0, "--sample-fps", help="Frames per second embedded."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Cut below this similarity of consecutive sampled frames (default: the embedder's)."),
    frame_change: float = typer.Option(27.0, "--frame-change", help="A hard cut changes one frame by at least this much (HSV, PySceneDetect's scale)."),
    min_shot_frames: int = typer.Option(15, "--min-shot-frames", help="Ignore a cut this few frames after the previous one."),
    transition_threshold: Optional[float] = typer.Option(None, "--transition-threshold", help="Drop segments whose first and last frames are less similar."),
    drop_static: bool = typer.Option(False, "--drop-static/--keep-static", help="Drop near-static segments."),
    static_threshold: Optional[float] = typer.Option(None, "--static-threshold", help="Near-static: every frame at least this similar."),
    min_seconds: float = typer.Option(0.5, "--min-seconds", help="Drop segments (and videos) shorter than this."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Split longer segments evenly."),
    trim: float = typer.Option(0.0, "--trim", help="Seconds trimmed off each end of a segment."),
    batch_size: int = typer.Option(32, "--batch-size", help="Frames per embedder call."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    path_col: str = typer.Option("path", "--path-col", help="List column holding video paths."),
    root: Optional[Path] = RootOpt,
    source_dataset: Optional[str] = typer.Option(None, "--source-dataset", help="Name recorded in source_dataset."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes (each loads the models)."),
    shard_size: int = ShardOpt,
    overwrite: bool = OverwriteOpt,
    progress: bool = ProgressOpt,
) -> None:
    """Long videos → coherent segments cut by frame similarity (`video_clip` rows), optionally captioned."""
    from vidrd_data.stages.segment import prepare

    job = prepare(
        str(input), path_col=path_col, root=root, source_dataset=source_dataset, embedder=embedder, clip=clip,
        clip_pretrained=clip_pretrained, clip_config=str(clip_config) if clip_config else None,
        clip_checkpoint=str(clip_checkpoint) if clip_checkpoint else None, captioner=captioner,
        minigpt4=str(minigpt4) if minigpt4 else None, blip2=blip2, caption_frames=caption_frames,
        caption_prompt=caption_prompt, caption_max_new_tokens=caption_max_new_tokens, sample_fps=sample_fps,
        threshold=threshold, frame_change=frame_change, min_shot_frames=min_shot_frames,
        transition_threshold=transition_threshold,
        drop_static=drop_static, static_threshold=static_threshold, min_seconds=min_seconds, max_seconds=max_seconds,
        trim=trim, batch_size=batch_size, device=device,
    )
    _run_job(job, out_dir, workers, shard_size, overwrite, progress)


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
    from vidrd_data.stages.pseudo_video import prepare

    job = prepare(
        input, captions=captions, image_col=image_col, caption_col=caption_col, root=root,
        source_dataset=source_dataset, size=size, aspect=aspect, frames=frames, fps=fps, seed=seed,
        motion_probs=motion_probs, zoom_range=zoom_range, pan_range=pan_range, easing=easing, min_side=min_side,
        max_aspect=max_aspect, min_caption_words=min_caption_words, max_caption_words=max_caption_words,
        materialize=str(materialize) if materialize else None,
    )
    _run_job(job, out_dir, workers, shard_size, overwrite, progress)


@app.command()
def build(
    recipe: Path = typer.Argument(..., help="A recipe TOML (see manifests/recipes/)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Build directory: sources/NAME, mixed/, report.*"),
    workers: int = WorkersOpt,
    executor: str = typer.Option("local", "--executor", help="local (process pool) or ray (RAY_ADDRESS or a local cluster)."),
    shard_index: Optional[int] = typer.Option(None, "--shard-index", help="Run only this slice of every stage (0-based)."),
    num_shards: Optional[int] = typer.Option(None, "--num-shards", help="Number of slices (one per Slurm array job)."),
    merge_only: bool = typer.Option(False, "--merge-only", help="Only mix finished sources (after all slices ran)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Override the recipe's root for relative paths."),
    progress: bool = ProgressOpt,
) -> None:
    """Run every source of a recipe through its stage, then write one mixed training manifest and a build report."""
    from vidrd_data.mix.recipe import build as build_recipe
    from vidrd_data.mix.recipe import load_recipe

    if (shard_index is None) != (num_shards is None):
        raise UsageProblem("--shard-index and --num-shards go together")
    if merge_only and shard_index is not None:
        raise UsageProblem("--merge-only runs no slice; drop --shard-index/--num-shards")
    _check_out(out_dir)
    spec = load_recipe(recipe, root=root)
    report = build_recipe(spec, out_dir, workers=workers, executor=executor, progress=progress,
                          shard_index=shard_index, num_shards=num_shards, merge_only=merge_only)
    if report is None:
        out.print(f"slice {shard_index} of {num_shards} done; when every slice has finished, run the same command "
                  "with --merge-only instead of --shard-index/--num-shards", markup=False)
        return
    splits = ", ".join(f"{k} {v}" for k, v in sorted(report["splits"].items()))
    out.print(f"[bold]{report['mixed_manifest']}[/]: {report['rows']} rows ({splits}), "
              f"{report['hours_total'] * 3600:.1f} s of video")
    for name, s in report["sources"].items():
        out.print(f"  {name}: {s['rows']} rows, {s['failed']} failed, {s['capped']} capped, "
                  f"{s['duplicates']} duplicates, {s.get('near_duplicates', 0)} near-duplicates", markup=False)
    out.print(f"report: {out_dir / 'report.md'}, {out_dir / 'report.json'}, {out_dir / 'report.png'}", markup=False)


@app.command()
def retry(
    manifest_dir: Path = typer.Argument(..., help="A finished manifest directory."),
    workers: int = WorkersOpt,
    progress: bool = ProgressOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """Re-run only the failed rows of a finished manifest, rewriting the parts that hold them."""
    from vidrd_data.run.runner import retry_failed

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
    from vidrd_data.inspection.summary import summarize

    m = _open(manifest_dir, root)
    info = summarize(m, samples=samples)
    if sheet is not None:
        from vidrd_data.inspection.sheet import contact_sheet

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
    from vidrd_data.inspection.summary import validate as validate_manifest

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
    from vidrd_demo.corpus import write_demo_corpus

    _check_out(out_dir)
    paths = write_demo_corpus(out_dir, models=models)
    out.print(f"demo corpus written to [bold]{out_dir}[/]")
    for name, path in paths.items():
        out.print(f"  {name}: {path if not isinstance(path, dict) else ', '.join(f'{k}={v}' for k, v in path.items())}")
    if run:
        _run_demo(out_dir)


def _run_demo(root: Path) -> None:
    from vidrd_data import sources
    from vidrd_data.inspection.summary import summarize, validate as validate_manifest
    from vidrd_data.manifest import Manifest
    from vidrd_data.inspection.sheet import contact_sheet

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
    if (root / "models" / "blip2").is_dir():
        from vidrd_data.stages.caption import prepare as prepare_caption

        job = prepare_caption(str(root / "actions"), blip2=str(root / "models" / "blip2"), split="trainlist01.txt",
                              source_dataset="demo_actions", prompt="a video of {label},")
        stage("actions_captioned", job.stage, job.params, job.inputs, job.root, ["actions", "--split trainlist01.txt"])
    table, base = sources.video_folder(root / "long", source_dataset="demo_long")
    stage("long", "videos", {}, table, base, ["long"])
    if (root / "models" / "open_clip").is_dir() and (root / "models" / "minigpt4").is_dir():
        from vidrd_data.ops.shots import cut_scores, manifest_cuts
        from vidrd_data.stages.segment import prepare as prepare_segment

        models = root / "models"
        job = prepare_segment(
            str(root / "long"), source_dataset="demo_long", embedder="clip",
            clip_config=str(models / "open_clip" / "vidrd-tiny-ViT-16.json"),
            clip_checkpoint=str(models / "open_clip" / "open_clip_pytorch_model.bin"),
            threshold=0.99,  # the random tiny CLIP keeps even two different scenes above 0.99 similar
            captioner="minigpt4", minigpt4=str(models / "minigpt4" / "minigpt4.json"),
        )
        stage("long_segments", job.stage, job.params, job.inputs, job.root, ["long", "--embedder clip --captioner minigpt4"])
        found = manifest_cuts(Manifest.open(manifests / "long_segments").read().to_pylist())
        for video, truth in json.loads((root / "long" / "cuts.json").read_text()).items():
            s = cut_scores(found.get(video, []), truth["cuts_s"])
            out.print(f"long_segments {video}: cut precision {s['precision']:.2f}, recall {s['recall']:.2f} "
                      f"(±0.5 s, {s['tp']} of {len(truth['cuts_s'])} true cuts found, {s['fp']} false)", markup=False)
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
    from vidrd_data.mix.recipe import RecipeError
    from vidrd_data.run.stage import RunnerError
    from vidrd_data.sources import InputError

    user_errors = (UsageProblem, InputError, ManifestError, RunnerError, RecipeError, FileNotFoundError, NotADirectoryError)
    return run_app(app, "vidrd-data", argv, user_errors)


if __name__ == "__main__":
    sys.exit(main())
