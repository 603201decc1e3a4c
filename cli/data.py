"""`vidrd-data`: build, inspect and validate vidrd manifests. Argument parsing and printing only."""

from __future__ import annotations

import inspect
import json
import logging
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cli._app import UsageProblem, run_app, typer_app
from vidrd_data.run.options import RunOptions
from vidrd_data.run.stage import STAGES
from vidrd_data.stages.arguments import declarations, stage_module

app = typer_app("Build video–text training data the VidRD way: stages write Parquet manifests.")
out = Console(soft_wrap=True)



def _check_out(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageProblem(f"--out {path} exists and is not a directory")


def _print_summary(summary) -> None:
    s = summary
    filtered = s.output_rows - s.ok - s.failed  # rows a filter left out (the score stage's thresholds)
    out.print(
        f"[bold]{s.out_dir}[/]: {s.output_rows} samples from {s.input_rows} inputs "
        f"([green]{s.ok} ok[/], [red]{s.failed} failed[/]{f', {filtered} filtered' if filtered else ''}); parts {s.parts_total} "
        f"({s.parts_skipped} already complete), {s.wall_time_s:.1f} s"
    )


def _run_options_for(function, given: dict) -> dict:
    """Return the run options the user changed from `RunOptions`' defaults, as keywords of `function`
    (`run_stage`, `retry_failed`), which applies those defaults itself; one it does not take is a usage problem."""
    accepted = inspect.signature(function).parameters
    changed = {f.name: given[f.name] for f in fields(RunOptions) if f.name in given and given[f.name] != f.default}
    for name in changed.keys() - accepted.keys():
        raise UsageProblem(f"{_flags(RunOptions, name)[0]} is not supported by {function.__name__} in this version")
    return changed


def _run(job, out_dir: str | Path, run_options: dict):
    """Run a prepared stage job into `out_dir` (a directory, or a URL prefix in an object store) and print its
    summary."""
    from vidrd_data.run.runner import run_stage
    from vidrd_io.fs import location

    out_dir = location(out_dir)
    if isinstance(out_dir, Path):
        _check_out(out_dir)
    summary = run_stage(job.stage, job.params, job.inputs, out_dir, root=job.root, input_desc=job.input_desc,
                        **_run_options_for(run_stage, run_options))
    _print_summary(summary)


def _field_help(cls, name: str) -> str:
    """Return the help a dataclass declares for one of its fields."""
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


OutOpt = typer.Option(..., "--out", "-o", help="Manifest directory to write (resumed if it exists).")
WorkersOpt = typer.Option(RunOptions.workers, "--workers", "-w", help=_field_help(RunOptions, "workers"))
ProgressOpt = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")
RootOpt = typer.Option(None, "--root", help="Directory that relative media paths are resolved against.")


@app.callback()
def _root_options(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------- stage commands, built from the declarations
# Each option of a stage is a dataclass field declared once in the library (its default, and in its metadata the help
# and, unless `--the-field-name`, the flags): the stage's arguments (vidrd_data/stages/arguments.py), its `*Options`
# dataclass and `RunOptions`. Typer reads a command's parameters from its signature, so each stage command gets one
# made from those fields.


def _flags(cls: type, name: str) -> tuple[str, ...]:
    """Return the CLI flags of field `name` of the declaration `cls`."""
    metadata = next(f for f in fields(cls) if f.name == name).metadata
    return tuple(metadata.get("flags") or (f"--{name.replace('_', '-')}",))


def _parameters(cls: type) -> list[inspect.Parameter]:
    """Return the command parameters declared by the fields of dataclass `cls`: `input` becomes the positional
    argument, every other field an option with its default, flags and help."""
    hints = typing.get_type_hints(cls)
    parameters = []
    for f in fields(cls):
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} declares no help (field metadata)")
        default = ... if f.default is MISSING else f.default
        if f.name == "input":
            info = typer.Argument(default, help=f.metadata["help"])
        else:
            info = typer.Option(default, *_flags(cls, f.name), help=f.metadata["help"])
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=hints[f.name]))
    return parameters


def _stage_command(stage: str):
    """Return the command function of a built-in stage: prepare its job from the given options, then run it."""
    module = stage_module(stage)
    run_names = {f.name for f in fields(RunOptions)}

    def command(out_dir: str, **given) -> None:
        job = module.prepare(**{k: v for k, v in given.items() if k not in run_names})
        _run(job, out_dir, {k: v for k, v in given.items() if k in run_names})

    parameters = [p for cls in [*declarations(stage), RunOptions] for p in _parameters(cls)]
    # str, not Path: Path("s3://b/m") would lose a slash of the URL
    out_dir = inspect.Parameter("out_dir", inspect.Parameter.KEYWORD_ONLY, default=OutOpt, annotation=str)
    command.__signature__ = inspect.Signature([parameters[0], out_dir, *parameters[1:]])  # INPUT, --out, the options
    command.__doc__ = (module.__doc__ or "").strip().splitlines()[0]  # the stage module's one-line summary
    return command


for _stage in STAGES:
    app.command(_stage)(_stage_command(_stage))


@app.command()
def build(
    recipe: Path = typer.Argument(..., help="A recipe TOML (see manifests/recipes/)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Build directory: sources/NAME, mixed/, report.*"),
    workers: int = WorkersOpt,
    executor: str = typer.Option(RunOptions.executor, "--executor", help=_field_help(RunOptions, "executor")),
    gpus: Optional[str] = typer.Option(RunOptions.gpus, "--gpus", help=_field_help(RunOptions, "gpus")),
    gpus_per_worker: Optional[float] = typer.Option(RunOptions.gpus_per_worker, "--gpus-per-worker",
                                                    help=_field_help(RunOptions, "gpus_per_worker")),
    shard_index: Optional[int] = typer.Option(None, "--shard-index", help="Run only this slice of every stage (0-based)."),
    num_shards: Optional[int] = typer.Option(None, "--num-shards", help="Number of slices (one per Slurm array job)."),
    merge_only: bool = typer.Option(False, "--merge-only", help="Only mix finished sources (after all slices ran)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Override the recipe's root for relative paths."),
    allow_partial: bool = typer.Option(False, "--allow-partial",
                                       help="With --merge-only: mix sources with missing parts anyway (warns)."),
    progress: bool = ProgressOpt,
) -> None:
    """Run every source of a recipe through its stage, then write one mixed training manifest and a build report.

    Slices (`--shard-index/--num-shards`) run and map their parts of every source; `--merge-only` then
    mixes them into the manifest one build writes."""
    from vidrd_data.mix.mix import build as build_recipe
    from vidrd_data.mix.recipe import load_recipe
    from vidrd_data.run.runner import slurm_slice

    if not merge_only:
        shard_index, num_shards = slurm_slice(shard_index, num_shards)  # a Slurm array task is a slice
    if (shard_index is None) != (num_shards is None):
        raise UsageProblem("--shard-index and --num-shards go together")
    if merge_only and shard_index is not None:
        raise UsageProblem("--merge-only runs no slice; drop --shard-index/--num-shards")
    _check_out(out_dir)
    spec = load_recipe(recipe, root=root)
    report = build_recipe(spec, out_dir, workers=workers, executor=executor, progress=progress, gpus=gpus,
                          gpus_per_worker=gpus_per_worker,
                          shard_index=shard_index, num_shards=num_shards, merge_only=merge_only,
                          allow_partial=allow_partial)
    if report is None:
        out.print(f"slice {shard_index} of {num_shards} done; when every slice has finished, run the same command "
                  "with --merge-only instead of --shard-index/--num-shards", markup=False)
        return
    splits = ", ".join(f"{k} {v}" for k, v in sorted(report["splits"].items()))
    out.print(f"[bold]{report['mixed_manifest']}[/]: {report['rows']} rows ({splits}), "
              f"{report['hours_total'] * 3600:.1f} s of video")
    for name, s in report["sources"].items():
        out.print(f"  {name}: {s['rows']} rows, {s['failed']} failed, {s['capped']} capped, {s['unreadable']} unreadable, "
                  f"{s['duplicates']} duplicates, {s.get('near_duplicates', 0)} near-duplicates", markup=False)
    out.print(f"report: {out_dir / 'report.md'}, {out_dir / 'report.json'}, {out_dir / 'report.png'}", markup=False)


def _retry_command():
    """Return the `retry` command function; its run options are the `RunOptions` fields `retry_failed` takes."""
    from vidrd_data.run.runner import retry_failed

    def retry(manifest_dir: str, root: Optional[Path], **given) -> None:
        """Re-run only the failed rows of a finished manifest, rewriting the parts that hold them."""
        _print_summary(retry_failed(manifest_dir, root=root, **_run_options_for(retry_failed, given)))

    accepted = inspect.signature(retry_failed).parameters
    run_options = [p for p in _parameters(RunOptions) if p.name in accepted]
    manifest = typer.Argument(..., help="A finished manifest directory.")
    retry.__signature__ = inspect.Signature([
        inspect.Parameter("manifest_dir", inspect.Parameter.KEYWORD_ONLY, default=manifest, annotation=str),  # or a URL
        *run_options,
        inspect.Parameter("root", inspect.Parameter.KEYWORD_ONLY, default=RootOpt, annotation=Optional[Path]),
    ])
    return retry


app.command("retry")(_retry_command())


# ---------------------------------------------------------------- export (WebDataset, Hugging Face datasets, CSV)


def _export_command():
    """Return the `export` command function: `ExportArguments` and the `RunOptions` that `run_stage` takes."""
    from vidrd_data.export.options import ExportArguments

    def export(out_dir: str, **given) -> None:
        """Export a manifest's ok rows as WebDataset tar shards, a Hugging Face datasets folder, or CSV."""
        from vidrd_data.export.run import export as run_export
        from vidrd_data.run.runner import run_stage
        from vidrd_io.remote import local_path

        if local_path(out_dir) is not None:  # a store URL is refused by export itself; Path() would fold its `//`
            _check_out(Path(local_path(out_dir)))
        run_names = {f.name for f in fields(RunOptions)}
        arguments = ExportArguments(**{k: v for k, v in given.items() if k not in run_names})
        result = run_export(arguments, out_dir, **_run_options_for(run_stage, given))
        if isinstance(result, Path):
            out.print(f"[bold]{result}[/]")
        else:
            _print_summary(result)

    options = [p for p in [*_parameters(ExportArguments), *_parameters(RunOptions)] if p.name != "manifest"]
    manifest = typer.Argument(..., help=_field_help(ExportArguments, "manifest"))
    export.__signature__ = inspect.Signature([  # MANIFEST, --out, the options
        inspect.Parameter("manifest", inspect.Parameter.KEYWORD_ONLY, default=manifest, annotation=str),
        inspect.Parameter("out_dir", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Option(..., "--out", "-o", help="Folder to export into (resumed).")),
        *options,
    ])
    return export


app.command("export")(_export_command())


def _open(manifest_dir: Path, root: Optional[Path]):
    from vidrd_data.manifest import Manifest

    return Manifest.open(manifest_dir, root=root)


@app.command("inspect")
def inspect_manifest(
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
    if info["incomplete"]:
        out.print(f"[red]{info['incomplete']}[/] (readers for work refuse it without --allow-partial)")
    schema = Table(title="schema", show_header=True)
    schema.add_column("column")
    schema.add_column("type")
    for col in info["schema"]:
        schema.add_row(col["name"], col["type"])
    out.print(schema)
    for key in ("by_kind", "by_source_dataset", "by_status", "filtered_by", "top_failure_reasons"):
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


@app.command("shot-eval")
def shot_eval(
    videos: Path = typer.Argument(..., help="A video, or a folder of videos with their annotations."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="Folder of annotation files, or one "
                                               "ClipShots JSON (default: beside the videos)."),
    fmt: str = typer.Option("auto", "--format", help="Annotation format: auto, shots (BBC/RAI), cuts "
                            "(PySceneDetect's BBC/AutoShot), clipshots or json."),
    detectors: str = typer.Option("histogram,content,adaptive,transnetv2", "--detectors",
                                  help="Comma-separated: histogram, clip, content, adaptive, transnetv2."),
    tolerance: int = typer.Option(2, "--tolerance", help="Frames a hard cut may be off by."),
    reference: bool = typer.Option(True, "--reference/--no-reference",
                                   help="Also run PySceneDetect's own pipeline (ContentDetector) as a peer."),
    clip_config: Optional[Path] = typer.Option(None, "--clip-config", help="Local open_clip config (clip)."),
    clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="Its checkpoint."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (TransNetV2, CLIP)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
) -> None:
    """Score shot detectors against annotated cuts (P/R/F1 at a frame tolerance) with their time per video-hour."""
    from vidrd_data.inspection import shot_eval as se

    names = [d.strip() for d in detectors.split(",") if d.strip()]
    unknown = [d for d in names if d not in se.EVAL_DETECTORS]
    if unknown or not names:
        raise UsageProblem(f"unknown detector(s) {', '.join(unknown) or '(none given)'} "
                           f"(use {', '.join(se.EVAL_DETECTORS)})")
    if tolerance < 0:
        raise UsageProblem(f"--tolerance must be ≥ 0, got {tolerance}")
    if fmt not in ("auto", *se.FORMATS):
        raise UsageProblem(f"unknown --format {fmt!r} (use auto, {', '.join(se.FORMATS)})")
    from vidrd_data.models.device import resolve_device

    try:  # the detectors run in this process: the device must be here (not a worker's, as in stages)
        resolve_device(device)
    except ValueError as exc:
        raise UsageProblem(f"--device: {exc}") from None
    try:
        pairs = se.pair_videos(videos, annotations, fmt)
    except (ValueError, OSError, KeyError) as exc:
        raise UsageProblem(str(exc)) from None
    results = se.evaluate(pairs, names, tolerance, reference, device=device,
                          clip_config=str(clip_config) if clip_config else None,
                          clip_checkpoint=str(clip_checkpoint) if clip_checkpoint else None)
    if as_json:
        print(json.dumps({"tolerance_frames": tolerance, "videos": [p for p, _ in pairs],
                          "results": [se.result_dict(r) for r in results]}, indent=2))
        return
    out.print(f"{len(pairs)} video(s), tolerance ±{tolerance} frames", markup=False)
    out.print(se.table(results, tolerance), markup=False, highlight=False)


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
    from vidrd_data.run.stage import StageJob

    manifests = root / "manifests"
    built = []  # manifest names, in the order the stages ran

    def stage(name: str, stage_name: str, params: dict, table, base, inputs: list[str]) -> None:
        _run(StageJob(stage_name, params, table, base, inputs), manifests / name,
             {"workers": 1, "overwrite": True, "progress": False})
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
