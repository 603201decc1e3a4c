"""Recipes: several sources, each through its stage, mixed into one training manifest with a build report.

A recipe is TOML (see `manifests/recipes/vidrd.toml`)::

    [recipe]
    root = "/data"            # relative paths below are taken from here (itself relative to the recipe file)
    val_fraction = 0.01       # deterministic train/val split, by source video (see split_by)
    split_by = "source"       # "source": all rows of one source file (and its near duplicates) on one side;
                              # "sample": by sample_id hash, the old split (leaks segments of a video into val)
    dedup = "exact"           # "exact" (same media content and span) or "none"
    near_dup_threshold = 0.0  # > 0: semantic dedup (k-means + cosine ≥ this inside clusters); the near
                              # duplicates stay in the mix as `status = "filtered"` rows
    near_dup_embedding = "thumbnail"  # thumbnail | histogram | column:NAME (a list<float> column of the sources)
    near_dup_clusters = 0     # k-means clusters; 0: about √rows
    cluster_cap = 1000        # with near-dup dedup: keep at most this many rows per cluster (a rebalance)

    [sources.laion]
    stage = "pseudo-video"    # images | videos | pseudo-video | caption | segment
    input = "laion/*.tar"
    weight = 1.0              # the trainer samples a source in proportion to its weight
    cap = 100000              # keep at most this many rows (a deterministic subset)
    size = 256                # any other key is an option of the stage (its CLI option, `-` → `_`)

This module reads and checks recipes and prepares each source's stage job; `vidrd_data.mix.mix.build` runs
every source's stage into `OUT/sources/NAME` (resuming finished work), then writes the mixed manifest
`OUT/mixed` (columns `source`, `split`, `source_weight`, `content_hash` added) and `OUT/report.md`,
`OUT/report.json`, `OUT/report.png`.
"""

from __future__ import annotations

import glob
import importlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vidrd_data import manifest as mf
from vidrd_data.run.stage import STAGES, StageJob
from vidrd_data.stages.arguments import accepted_names

SOURCE_KEYS = {"stage", "input", "weight", "cap", "shard_size"}
RECIPE_KEYS = {"name", "root", "val_fraction", "split_by", "dedup", "near_dup_threshold", "near_dup_embedding",
               "near_dup_clusters", "cluster_cap", "seed", "shard_size"}
SPLIT_BY = ("source", "sample")


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
    near_dup_embedding: str = "thumbnail"
    near_dup_clusters: int = 0
    cluster_cap: int | None = None
    split_by: str = "source"
    seed: int = 0
    shard_size: int = 1000
    name: str = "recipe"


def _stage_module(stage: str) -> str:
    """Return the module of a built-in stage (the one registry, `STAGES`): it has `prepare(input, **arguments)`."""
    if stage not in STAGES:
        raise RecipeError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
    return STAGES[stage].partition(":")[0]


def _stage_prepare(stage: str):
    module = _stage_module(stage)
    try:
        return importlib.import_module(module).prepare
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"stage {stage!r} is not available: {exc}") from None


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
    recipe.near_dup_clusters = int(_number(head, "near_dup_clusters", 0, "recipe", 0, None))
    cluster_cap = head.get("cluster_cap")
    if cluster_cap is not None and (isinstance(cluster_cap, bool) or not isinstance(cluster_cap, int) or cluster_cap < 1):
        raise RecipeError(f"recipe.cluster_cap: must be a whole number ≥ 1, got {cluster_cap!r}")
    if cluster_cap is not None and recipe.near_dup_threshold <= 0:
        raise RecipeError("recipe.cluster_cap: clusters come from near-duplicate dedup; set near_dup_threshold > 0")
    recipe.cluster_cap = cluster_cap
    recipe.near_dup_embedding = str(head.get("near_dup_embedding", "thumbnail"))
    if recipe.near_dup_embedding not in ("thumbnail", "histogram") and not (
            recipe.near_dup_embedding.startswith("column:") and len(recipe.near_dup_embedding) > len("column:")):
        raise RecipeError(f"recipe.near_dup_embedding: must be thumbnail, histogram or column:NAME, "
                          f"got {recipe.near_dup_embedding!r}")
    recipe.split_by = head.get("split_by", "source")
    if recipe.split_by not in SPLIT_BY:
        raise RecipeError(f"recipe.split_by: must be {' or '.join(SPLIT_BY)}, got {recipe.split_by!r}")
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
        _stage_prepare(spec["stage"])  # its module imports, or RecipeError
        options = {k.replace("-", "_"): v for k, v in spec.items() if k not in SOURCE_KEYS}
        accepted = accepted_names(spec["stage"])
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


# ---------------------------------------------------------------- stage jobs


def prepare_jobs(recipe: Recipe) -> list[tuple[Source, StageJob]]:
    """Return every source's stage job, reading its input (cheap: listings and tables) so that input problems
    also show before any work."""
    from vidrd_data.sources import InputError

    jobs = []
    for source in recipe.sources:
        prepare = _stage_prepare(source.stage)
        options = dict(source.options)
        if "source_dataset" in accepted_names(source.stage):
            options.setdefault("source_dataset", source.name)
        try:
            job = prepare(source.input, **options)
        except (InputError, ValueError, TypeError) as exc:
            raise RecipeError(f"sources.{source.name}: {exc}") from None
        jobs.append((source, job))
    return jobs
