"""Recipes: several sources, each through its stage, mixed into one training manifest with a build report.

A recipe is TOML (see `manifests/recipes/vidrd.toml`)::

    [recipe]
    root = "/data"            # relative paths below are taken from here (itself relative to the recipe file)
    val_fraction = 0.01       # deterministic train/val split by sample_id hash
    dedup = "exact"           # "exact" (same media content and span) or "none"
    near_dup_threshold = 0.0  # > 0: also drop rows whose thumbnail embedding has cosine ≥ this with a kept row

    [sources.laion]
    stage = "pseudo-video"    # images | videos | pseudo-video | caption | segment
    input = "laion/*.tar"
    weight = 1.0              # the trainer samples a source in proportion to its weight
    cap = 100000              # keep at most this many rows (a deterministic subset)
    size = 256                # any other key is an option of the stage (its CLI option, `-` → `_`)

`build` runs every source's stage into `OUT/sources/NAME` (resuming finished work), then writes the
mixed manifest `OUT/mixed` (columns `source`, `split`, `source_weight`, `content_hash` added) and
`OUT/report.md`, `OUT/report.json`, `OUT/report.png`.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib
import inspect
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidrd_data import manifest as mf
from vidrd_io import fs
from vidrd_data.run.runner import clear_output, run_stage
from vidrd_data.run.stage import StageJob

# stage name → module with `prepare(input, **options) -> StageJob`
STAGE_MODULES = {
    "images": "vidrd_data.stages.images",
    "videos": "vidrd_data.stages.videos",
    "pseudo-video": "vidrd_data.stages.pseudo_video",
    "caption": "vidrd_data.stages.caption",
    "segment": "vidrd_data.stages.segment",
}
SOURCE_KEYS = {"stage", "input", "weight", "cap", "shard_size"}
RECIPE_KEYS = {"name", "root", "val_fraction", "dedup", "near_dup_threshold", "seed", "shard_size"}
MIXED_FIELDS = [
    pa.field("source", pa.string()),
    pa.field("split", pa.string()),
    pa.field("source_weight", pa.float64()),
    pa.field("content_hash", pa.string()),
]
MIXED_PART_ROWS = 100_000


class RecipeError(Exception):
    """The recipe is malformed: raised before any work starts, naming the key."""


@dataclass
class Source:
    name: str
    stage: str
    input: str
    weight: float = 1.0
    cap: int | None = None
    shard_size: int | None = None
    options: dict = field(default_factory=dict)


@dataclass
class Recipe:
    path: Path
    root: Path
    sources: list[Source]
    val_fraction: float = 0.0
    dedup: str = "exact"
    near_dup_threshold: float = 0.0
    seed: int = 0
    shard_size: int = 1000
    name: str = "recipe"


def _stage_prepare(stage: str):
    if stage not in STAGE_MODULES:
        raise RecipeError(f"unknown stage {stage!r} (known: {', '.join(STAGE_MODULES)})")
    try:
        return importlib.import_module(STAGE_MODULES[stage]).prepare
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"stage {stage!r} is not available: {exc}") from None


def _accepted_options(stage: str, prepare) -> set[str]:
    """Return the option names of a stage: `prepare`'s keywords, plus the fields of the module's `*Options`
    dataclass when `prepare` takes `**options`."""
    parameters = inspect.signature(prepare).parameters
    accepted = {name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD} - {"input"}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        module = importlib.import_module(STAGE_MODULES[stage])
        for name, value in vars(module).items():
            if name.endswith("Options") and dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                accepted |= {f.name for f in dataclasses.fields(value)}
    return accepted


def _resolve_path(value: str, base: Path) -> str:
    """A relative path that exists under the recipe's root is taken from there; anything else (a hub id) stays."""
    if os.path.isabs(value) or mf.is_uri(value):
        return value
    candidate = base / value
    return str(candidate) if candidate.exists() or glob.glob(str(candidate)) else value


def load_recipe(path: str | os.PathLike, root: str | os.PathLike | None = None, check_paths: bool = True) -> Recipe:
    """Read and check a recipe; every problem raises `RecipeError` naming its key, before any work."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"recipe", "sources", "models"}
    if unknown:
        raise RecipeError(f"unknown top-level key {sorted(unknown)[0]!r} (known: recipe, sources, models)")
    head = data.get("recipe", {})
    for key in set(head) - RECIPE_KEYS:
        raise RecipeError(f"recipe.{key}: unknown key (known: {', '.join(sorted(RECIPE_KEYS))})")
    base = Path(root) if root is not None else (path.parent / head.get("root", ".")).resolve()
    recipe = Recipe(path=path, root=base, sources=[], name=str(head.get("name", path.stem)))
    recipe.val_fraction = _number(head, "val_fraction", 0.0, "recipe", 0.0, 1.0)
    recipe.near_dup_threshold = _number(head, "near_dup_threshold", 0.0, "recipe", 0.0, 1.0)
    recipe.seed = int(_number(head, "seed", 0, "recipe", 0, None))
    recipe.shard_size = int(_number(head, "shard_size", 1000, "recipe", 1, None))
    recipe.dedup = head.get("dedup", "exact")
    if recipe.dedup not in ("exact", "none"):
        raise RecipeError(f"recipe.dedup: must be exact or none, got {recipe.dedup!r}")
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise RecipeError("sources: the recipe names no sources ([sources.NAME] tables)")
    for name, spec in sources.items():
        where = f"sources.{name}"
        if not isinstance(spec, dict):
            raise RecipeError(f"{where}: must be a table")
        for key in ("stage", "input"):
            if key not in spec:
                raise RecipeError(f"{where}.{key}: missing")
        prepare = _stage_prepare(spec["stage"])
        options = {k.replace("-", "_"): v for k, v in spec.items() if k not in SOURCE_KEYS}
        accepted = _accepted_options(spec["stage"], prepare)
        for key in options:
            if key not in accepted:
                raise RecipeError(f"{where}.{key}: not an option of stage {spec['stage']} (options: {', '.join(sorted(accepted))})")
        input_path = _resolve_path(str(spec["input"]), base)
        if check_paths and not (os.path.exists(input_path) or glob.glob(input_path)):
            raise RecipeError(f"{where}.input: {input_path} does not exist")
        options = {k: _resolve_path(v, base) if isinstance(v, str) and k not in ("motion_probs",) else v for k, v in options.items()}
        cap = spec.get("cap")
        if cap is not None and (not isinstance(cap, int) or cap < 0):
            raise RecipeError(f"{where}.cap: must be a whole number ≥ 0, got {cap!r}")
        recipe.sources.append(
            Source(name=name, stage=spec["stage"], input=input_path, weight=_number(spec, "weight", 1.0, where, 0.0, None),
                   cap=cap, shard_size=spec.get("shard_size"), options=options)
        )
    return recipe


def _number(table: dict, key: str, default, where: str, lo, hi):
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"{where}.{key}: must be a number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RecipeError(f"{where}.{key}: must be in [{lo}, {hi if hi is not None else '∞'}], got {value}")
    return value


# ---------------------------------------------------------------- building


def prepare_jobs(recipe: Recipe) -> list[tuple[Source, StageJob]]:
    """Read every source's input (cheap: listings and tables), so input problems also show before any work."""
    jobs = []
    for source in recipe.sources:
        from vidrd_data.sources import InputError

        prepare = _stage_prepare(source.stage)
        options = dict(source.options)
        if "source_dataset" in inspect.signature(prepare).parameters:
            options.setdefault("source_dataset", source.name)
        try:
            job = prepare(source.input, **options)
        except (InputError, ValueError, TypeError) as exc:
            raise RecipeError(f"sources.{source.name}: {exc}") from None
        jobs.append((source, job))
    return jobs


def build(
    recipe: Recipe, out: str | os.PathLike, *, workers: int = 1, executor: str = "local", progress: bool = True,
    shard_index: int | None = None, num_shards: int | None = None, merge_only: bool = False,
) -> dict | None:
    """Run every source's stage (or only a slice of each), then mix; return the report (None for a slice)."""
    out = Path(out)
    jobs = prepare_jobs(recipe)
    if not merge_only:
        for source, job in jobs:
            run_stage(job.stage, job.params, job.inputs, out / "sources" / source.name, root=job.root,
                      input_desc=job.input_desc, shard_size=source.shard_size or recipe.shard_size, workers=workers,
                      progress=progress, executor=executor, shard_index=shard_index, num_shards=num_shards)
        if shard_index is not None:
            return None
    for source, _ in jobs:
        path = out / "sources" / source.name
        if not mf.is_manifest(path):
            raise RecipeError(f"sources.{source.name}: not built yet ({path}); run the build (or its slices) first")
        m = mf.Manifest.open(path)
        if len(m.parts) != m.meta["num_parts"]:
            raise RecipeError(f"sources.{source.name}: {len(m.parts)} of {m.meta['num_parts']} parts complete; "
                              "run the remaining slices first")
    return mix(recipe, out)


def _unit_hash(text: str) -> float:
    """Map a string to [0, 1) uniformly and deterministically."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") / 2**64


_CHUNK = 1 << 20


def file_fingerprint(path: str) -> str:
    """Return a content hash of a media file: its size and three 1 MiB windows (start, middle, end).

    Identical files always match; hashing whole multi-GB videos would dominate the build for no gain.
    """
    from vidrd_io.images import read_bytes

    if not os.path.exists(path):  # a member of a tar shard
        return hashlib.sha256(read_bytes(path)).hexdigest()[:32]
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - _CHUNK // 2), max(0, size - _CHUNK)}):
            f.seek(offset)
            h.update(f.read(_CHUNK))
    return h.hexdigest()[:32]


def _content_hash(row: dict, file_hash: str) -> str:
    """Return what makes two samples the same media: the still for images and pseudo-videos (another motion
    over the same photo is no new content), the file and span for video clips."""
    if row["kind"] in ("image", "pseudo_video"):
        span = ""
    else:
        span = f"{row.get('start_frame')}:{row.get('end_frame')}:{row.get('start_time')}:{row.get('end_time')}"
    return hashlib.sha256(f"{row['kind']}|{file_hash}|{span}".encode()).hexdigest()[:32]


def mix(recipe: Recipe, out: Path) -> dict:
    """Combine the sources' ok rows: cap, dedup, split, weight; write `OUT/mixed` and the build report."""
    t0 = time.perf_counter()
    tables, per_source = [], {}
    file_hashes: dict[str, str] = {}
    seen_content: set[str] = set()
    for source in recipe.sources:
        m = mf.Manifest.open(out / "sources" / source.name)
        table = m.read()
        stats = {"rows": table.num_rows, "failed": table.num_rows - int(pc.sum(pc.equal(table["status"], "ok")).as_py() or 0)}
        stats["failure_reasons"] = _reasons(m)
        ok = table.filter(pc.equal(table["status"], "ok"))
        if source.cap is not None and ok.num_rows > source.cap:
            order = np.argsort([_unit_hash(f"{recipe.seed}|cap|{i}") for i in ok["sample_id"].to_pylist()], kind="stable")
            ok = ok.take(np.sort(order[: source.cap]))
        stats["capped"] = stats["rows"] - stats["failed"] - ok.num_rows
        rows = ok.to_pylist()
        keep, duplicates = [], 0
        for row in rows:
            resolved = m.resolve(row["source_path"])
            if resolved not in file_hashes:
                file_hashes[resolved] = file_fingerprint(resolved)
            content = _content_hash(row, file_hashes[resolved])
            if recipe.dedup == "exact" and content in seen_content:
                duplicates += 1
                continue
            seen_content.add(content)
            row["source_path"] = mf.relativize(resolved, recipe.root) if not mf.is_uri(resolved) else resolved
            row["source"] = source.name
            row["split"] = "val" if _unit_hash(f"{recipe.seed}|split|{row['sample_id']}") < recipe.val_fraction else "train"
            row["source_weight"] = float(source.weight)
            row["content_hash"] = content
            keep.append(row)
        stats["duplicates"] = duplicates
        per_source[source.name] = stats
        tables.append((source, keep, m.schema()))
    if recipe.near_dup_threshold > 0:
        _drop_near_duplicates(tables, recipe, per_source, out)
    schema = _mixed_schema([s for _, _, s in tables])
    mixed_dir = out / "mixed"
    clear_output(mixed_dir)
    mixed_dir.mkdir(parents=True, exist_ok=True)
    all_rows = [r for _, keep, _ in tables for r in keep]
    n_parts = max(1, -(-len(all_rows) // MIXED_PART_ROWS))
    meta = mf.new_meta(kind="mixed", stage="build", params={"recipe": str(recipe.path), "val_fraction": recipe.val_fraction,
                       "dedup": recipe.dedup, "near_dup_threshold": recipe.near_dup_threshold, "seed": recipe.seed,
                       "sources": {s.name: {"stage": s.stage, "weight": s.weight, "cap": s.cap} for s in recipe.sources}},
                       inputs=[str(out / "sources" / s.name) for s in recipe.sources], root=recipe.root,
                       manifest_dir=mixed_dir, schema=schema, extra={"num_parts": n_parts})
    fs.write_json_atomic(mixed_dir / mf.MANIFEST_FILE, meta)
    for i in range(n_parts):
        chunk = all_rows[i * MIXED_PART_ROWS:(i + 1) * MIXED_PART_ROWS]
        table = mf.rows_to_table(chunk, schema)
        fs.write_parquet_atomic(mixed_dir / mf.part_name(i), table)
        fs.write_json_atomic(mixed_dir / mf.stats_name(i), mf.part_stats(table, len(chunk), time.perf_counter() - t0))
    from vidrd_data.mix.report import write_report

    return write_report(recipe, out, mf.Manifest.open(mixed_dir), per_source)


def _reasons(m: mf.Manifest) -> dict:
    reasons: dict[str, int] = {}
    for stats in m.stats():
        for reason, count in stats.get("failure_reasons", {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1]))


def _mixed_schema(schemas: list[pa.Schema]) -> pa.Schema:
    unified = pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    extra = [f.with_nullable(True) for f in unified if f.name not in mf.BASE_COLUMNS]
    return pa.schema(list(mf.BASE_SCHEMA) + MIXED_FIELDS + [f for f in extra if f.name not in {m.name for m in MIXED_FIELDS}])


def _thumbnail_embedding(row: dict, m_root: Path) -> np.ndarray | None:
    """A weight-free embedding for near-duplicate search: the first frame at 16×16, mean-centred, unit length."""
    from PIL import Image

    from vidrd_io.images import open_image
    from vidrd_io.video import read_frames

    path = mf.resolve(row["source_path"], m_root)
    try:
        if row["kind"] == "video_clip":
            frame = read_frames(path, [((row["start_time"] or 0.0) + (row["end_time"] or 0.0)) / 2])[0]
            img = Image.fromarray(frame)
        else:
            img = open_image(path)
    except Exception:  # noqa: BLE001 - a row that cannot be read is simply not compared
        return None
    v = np.asarray(img.convert("RGB").resize((16, 16), Image.BILINEAR), np.float32).ravel()
    v -= v.mean()
    n = np.linalg.norm(v)
    return v / n if n > 0 else None


def _drop_near_duplicates(tables, recipe: Recipe, per_source: dict, out: Path) -> None:
    """Drop rows whose thumbnail embedding is within `near_dup_threshold` cosine of an earlier kept row.

    A plain O(n²) pass over 768-d thumbnails: fine up to ~100k rows; beyond that use an ANN index.
    """
    kept = np.zeros((1024, 16 * 16 * 3), np.float32)
    n_kept = 0
    for i, (source, rows, schema) in enumerate(tables):
        survivors, dropped = [], 0
        for row in rows:
            v = _thumbnail_embedding(row, recipe.root)
            if v is not None and n_kept and float(np.max(kept[:n_kept] @ v)) >= recipe.near_dup_threshold:
                dropped += 1
                continue
            if v is not None:
                if n_kept == len(kept):
                    kept = np.concatenate([kept, np.zeros_like(kept)])
                kept[n_kept] = v
                n_kept += 1
            survivors.append(row)
        per_source[source.name]["near_duplicates"] = dropped
        tables[i] = (source, survivors, schema)
