"""The mix: a recipe's built sources → one training manifest `OUT/mixed`, in Arrow, streaming, sliceable, mergeable.

Two steps, so that the costly one (reading media to fingerprint it) runs in slices on many machines:

1. **map** (`map_slice`): each complete part `p` of source `s` becomes one candidate file
   `OUT/mixing/s{s}-p{p}-{key}.parquet`: its ok rows in the mixed schema, with `source`, `split`,
   `source_weight`, `content_hash` (file fingerprints taken in a thread pool) and the row's cap key. Slice `i`
   of `N` maps the parts `p % N == i`: the very parts slice `i` of each stage wrote (`run_stage`'s slices), so
   a Slurm array job mixes what it built without waiting for the others. A candidate is written atomically and
   named after what it was made from (`key`: the mix's options and the source part's stats), so a killed map
   resumes where it stopped and a rebuilt source part is mapped again.
2. **merge** (`merge`): reads only small key columns of the candidates. Caps: per source, the `cap` rows with the
   smallest cap key over the *whole* source (a hash of the sample id, as before), decided here so the same rows
   survive however the parts were sliced. Exact dedup: the first occurrence in recipe order, part order, row
   order keeps its row, over all slices at once, in hash buckets of ≤ 4M keys so memory stays bounded. Then it
   streams the kept rows into parts of `MIXED_PART_ROWS`. `_manifest.json` (with `num_parts`) is written first
   and each part with its stats file last, so an interrupted merge leaves a manifest that strict readers refuse;
   re-running the merge rewrites it (it reads no media, so restarting is cheap). `OUT/mixing/` stays for
   the next merge (a rebuilt source part is mapped again, the rest reused); delete it to save the space.

Memory: one part at a time, plus per row 1 byte (keep mask) and, during the caps and dedup, 8–24 bytes of keys.

Why pyarrow + numpy and not DuckDB: what costs is fingerprinting (I/O, threads) and two hashes that must stay
bit-equal to the old mix's (blake2b of ids for cap/split, sha256 of Python-formatted spans for content) — neither
is SQL; the rest (a first-occurrence over fixed-size keys, a filter, a concat) is one numpy sort. DuckDB would add a
second table engine (and a ~40 MB wheel) to do what pyarrow, already the manifest's library, does here.

When a source is complete before its map runs (a single `build`), the cap is applied before fingerprinting, so
capped-away rows cost no media reads; a slice that maps an unfinished source fingerprints all its ok rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidrd_data import manifest as mf
from vidrd_data.mix import dedup
from vidrd_data.mix.recipe import Recipe, RecipeError, Source, prepare_jobs
from vidrd_data.run.options import RunOptions
from vidrd_data.run.runner import clear_output, run_stage
from vidrd_io import fs

log = logging.getLogger(__name__)

MIXED_FIELDS = [
    pa.field("source", pa.string()),
    pa.field("split", pa.string()),
    pa.field("source_weight", pa.float64()),
    pa.field("content_hash", pa.string()),
]
MIXED_PART_ROWS = 100_000
MIXING_DIR = "mixing"
# Written when near-duplicate dedup runs: the row's k-means cluster (what `cluster_cap` caps) and, for a row left
# `filtered` as a near duplicate, the sample it repeats (`filter_score`: their cosine similarity).
DEDUP_FIELDS = [pa.field("cluster", pa.int64()), pa.field("duplicate_of", pa.string())]
NEAR_DUPLICATE = "near_duplicate"  # the `filter` of a row semantic dedup left out
CAP_KEY = "_cap_key"  # the row's cap order: blake2b of seed|cap|sample_id in [0, 1)
HASH_ERROR = "_hash_error"  # why the row's file could not be fingerprinted (the row is dropped, counted)
SPLIT_UNIT = "_split_unit"  # what must not straddle the split: the source file (its fingerprint, else its path)
PRIVATE = (CAP_KEY, HASH_ERROR, SPLIT_UNIT)
DEDUP_BUCKET_KEYS = 4_000_000  # keys sorted at once: 16 B key + 8 B position each, times ~3 while sorting


# ---------------------------------------------------------------- build: stages, then the mix


def build(
    recipe: Recipe, out: str | os.PathLike, *, workers: int = RunOptions.workers, executor: str = RunOptions.executor,
    progress: bool = True, gpus: str | None = RunOptions.gpus, gpus_per_worker: float | None = RunOptions.gpus_per_worker,
    shard_index: int | None = None, num_shards: int | None = None, merge_only: bool = False,
    allow_partial: bool = False,
) -> dict | None:
    """Return the build report after running every source's stage and mixing them; a slice (`shard_index` of
    `num_shards`) runs and maps only its parts and returns None; `merge_only` mixes sources already built."""
    out = Path(out)
    jobs = prepare_jobs(recipe)
    if not merge_only:
        for source, job in jobs:
            run_stage(job.stage, job.params, job.inputs, out / "sources" / source.name, root=job.root,
                      input_desc=job.input_desc, shard_size=source.shard_size or recipe.shard_size, workers=workers,
                      progress=progress, executor=executor, gpus=gpus, gpus_per_worker=gpus_per_worker,
                      shard_index=shard_index, num_shards=num_shards)
        if shard_index is not None:
            map_slice(recipe, out, shard_index, num_shards)
            return None
    return mix(recipe, out, allow_partial=allow_partial)


def mix(recipe: Recipe, out: str | os.PathLike, *, allow_partial: bool = False) -> dict:
    """Return the build report after mapping whatever parts have no candidate yet and merging all of them."""
    out = Path(out)
    manifests = _open_sources(recipe, out, allow_partial)
    map_slice(recipe, out, manifests=manifests)
    return merge(recipe, out, manifests)


def _open_sources(recipe: Recipe, out: Path, allow_partial: bool) -> list[mf.Manifest]:
    """Return the built sources, each refused when incomplete unless `allow_partial`."""
    opened = []
    for source in recipe.sources:
        path = out / "sources" / source.name
        if not mf.is_manifest(path):
            raise RecipeError(f"sources.{source.name}: not built yet ({path}); run the build (or its slices) first")
        opened.append(mf.Manifest.open_for_work(path, allow_partial=allow_partial))
    return opened


# ---------------------------------------------------------------- map


def mixed_schema(manifests: list[mf.Manifest], recipe: Recipe | None = None) -> pa.Schema:
    """Return the mixed manifest's schema: base columns, the mix's own, then every source's extra columns, then
    (when the recipe runs near-duplicate dedup) the filter and dedup columns."""
    schemas = [mf.schema_from_json(m.meta["schema"]).remove_metadata() for m in manifests]
    unified = pa.unify_schemas(schemas, promote_options="permissive")
    own = {f.name for f in MIXED_FIELDS}
    extra = [f.with_nullable(True) for f in unified if f.name not in mf.BASE_COLUMNS and f.name not in own]
    if recipe is not None and recipe.near_dup_threshold > 0:
        names = {f.name for f in extra}
        extra += [f for f in [*mf.FILTER_FIELDS, *DEDUP_FIELDS] if f.name not in names]
    return pa.schema(list(mf.BASE_SCHEMA) + MIXED_FIELDS + extra)


def cap_mask(keys: np.ndarray, cap: int | None) -> np.ndarray:
    """Return which rows a cap keeps: the `cap` smallest keys, ties going to the earlier row (a stable sort's pick)."""
    if cap is None or len(keys) <= cap:
        return np.ones(len(keys), bool)
    if cap == 0:
        return np.zeros(len(keys), bool)
    threshold = np.partition(keys, cap - 1)[cap - 1]
    keep = keys < threshold
    ties = np.flatnonzero(keys == threshold)
    keep[ties[: cap - int(keep.sum())]] = True
    return keep


@dataclass
class _SourcePlan:
    """What the map of one source needs: its manifest, its digests and (once decided) its cap per part.

    A candidate made with every ok row fingerprinted is named from `digest` (the mix's options) and its own
    part's stats; one made after the cap was decided (only the cap's rows fingerprinted) from `capped_digest`,
    which also covers every stats file of the source, because the cap depends on all of its parts. The merge
    takes either: both give the same mix.
    """

    index: int
    source: Source
    manifest: mf.Manifest
    digest: str
    capped_digest: str | None
    cap_by_part: dict[int, np.ndarray] | None = None

    def names(self, part: int) -> list[str]:
        """Return the names a valid candidate of `part` may have, the preferred (made now) first."""
        stats = (self.manifest.path / mf.stats_name(part)).read_text()
        digests = [self.capped_digest, self.digest] if self.capped_digest else [self.digest]
        return [candidate_name(self.index, part, d, stats) for d in digests]

    def decide_cap(self, recipe: Recipe) -> None:
        """Decide which ok rows the cap keeps, part by part (reads only ids): capped rows are never fingerprinted."""
        m = self.manifest
        keys = [_cap_keys(recipe, m, p) for p in m.parts]
        keep = cap_mask(np.concatenate(keys) if keys else np.zeros(0), self.source.cap)
        bounds = np.cumsum([0] + [len(k) for k in keys])
        self.cap_by_part = {p: keep[bounds[k]:bounds[k + 1]] for k, p in enumerate(m.parts)}


def _plan(recipe: Recipe, index: int, source: Source, m: mf.Manifest, schema: pa.Schema) -> _SourcePlan:
    options = {"seed": recipe.seed, "val_fraction": recipe.val_fraction, "root": str(recipe.root), "index": index,
               "source": source.name, "weight": float(source.weight), "schema": schema.to_string(),
               "split_by": recipe.split_by}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    capped_digest = None
    if source.cap is not None and not m.missing_parts():  # a cap can be decided only over the whole source
        options["cap"] = [source.cap, [(m.path / mf.stats_name(p)).read_text() for p in m.parts]]
        capped_digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    return _SourcePlan(index, source, m, digest, capped_digest)


def _cap_keys(recipe: Recipe, m: mf.Manifest, part: int) -> np.ndarray:
    """Return the cap keys of a source part's ok rows (only ids are read)."""
    t = pq.read_table(m.part_path(part), columns=["sample_id", "status"])
    return dedup.unit_hashes(f"{recipe.seed}|cap|", t["sample_id"].filter(pc.equal(t["status"], "ok")).to_pylist())


def candidate_name(index: int, part: int, plan_digest: str, stats_text: str) -> str:
    """Return the file name of source `index`'s part `part` candidate, made under `plan_digest` from that part."""
    key = hashlib.sha256(f"{plan_digest}|{stats_text}".encode()).hexdigest()[:12]
    return f"s{index:03d}-p{part:05d}-{key}.parquet"


def map_slice(recipe: Recipe, out: str | os.PathLike, shard_index: int | None = None, num_shards: int | None = None,
              *, manifests: list[mf.Manifest] | None = None) -> int:
    """Return how many candidate files were written: one per complete source part of this slice that had none."""
    out = Path(out)
    if manifests is None:  # a slice: its own parts are complete, the others may still be running
        manifests = [mf.Manifest.open(out / "sources" / s.name) for s in recipe.sources]
    schema = mixed_schema(manifests, recipe)
    mixing = out / MIXING_DIR
    mixing.mkdir(parents=True, exist_ok=True)
    for torn in mixing.glob(".s*-p*.tmp"):  # a killed map's temp files: only this slice's (others may be writing)
        part = int(torn.name.split("-")[1][1:])
        if num_shards is None or part % num_shards == shard_index:
            torn.unlink(missing_ok=True)
    written = 0
    with dedup.Fingerprinter() as fingerprint:
        for index, (source, m) in enumerate(zip(recipe.sources, manifests)):
            plan = _plan(recipe, index, source, m, schema)
            todo = {}
            for part in m.parts:
                if num_shards is None or part % num_shards == shard_index:
                    names = plan.names(part)
                    if not any((mixing / n).is_file() for n in names):
                        todo[part] = mixing / names[0]
            if todo and plan.capped_digest:
                plan.decide_cap(recipe)
            for part, target in todo.items():
                for stale in mixing.glob(f"s{index:03d}-p{part:05d}-*.parquet"):
                    stale.unlink()
                fs.write_parquet_atomic(target, _candidate(recipe, plan, part, schema, fingerprint))
                written += 1
    return written


def _candidate(recipe: Recipe, plan: _SourcePlan, part: int, schema: pa.Schema, fingerprint) -> pa.Table:
    """Return one source part's ok rows in the mixed schema, with the mix's columns and the private cap/hash ones."""
    m = plan.manifest
    table = pq.read_table(m.part_path(part))
    ok = table.filter(pc.equal(table["status"], "ok"))
    n = ok.num_rows
    ids = ok["sample_id"].to_pylist()
    unique_paths = pc.unique(ok["source_path"])
    where = pc.index_in(ok["source_path"], value_set=unique_paths, skip_nulls=False)
    resolved_u = [m.resolve(p) for p in unique_paths.to_pylist()]
    stored_u = [p if p is None or mf.is_uri(p) else mf.relativize(p, recipe.root) for p in resolved_u]
    resolved = pa.array(resolved_u, pa.string()).take(where)
    hashed = plan.cap_by_part[part] if plan.cap_by_part is not None else np.ones(n, bool)
    fps, errors = fingerprint(resolved.filter(pa.array(hashed)))
    fp_list, err_list = [None] * n, [None] * n
    for i, fp, err in zip(np.flatnonzero(hashed), fps.to_pylist(), errors.to_pylist()):
        fp_list[i], err_list[i] = fp, err
    units = [fp if fp is not None else path for fp, path in zip(fp_list, resolved.to_pylist())]
    split_u = dedup.unit_hashes(f"{recipe.seed}|split|", units if recipe.split_by == "source" else ids)
    content = dedup.content_hashes(ok["kind"].to_pylist(), fp_list, ok["start_frame"].to_pylist(),
                                   ok["end_frame"].to_pylist(), ok["start_time"].to_pylist(), ok["end_time"].to_pylist())
    mine = {
        "source_path": pa.array(stored_u, pa.string()).take(where),
        "source": pa.array(np.full(n, plan.source.name, dtype=object), pa.string()),
        "split": pa.array(np.where(split_u < recipe.val_fraction, "val", "train").astype(object), pa.string()),
        "source_weight": pa.array(np.full(n, float(plan.source.weight)), pa.float64()),
        "content_hash": pa.array(content, pa.string()),
    }
    columns = [mine[f.name] if f.name in mine else ok[f.name].cast(f.type) if f.name in ok.column_names
               else pa.nulls(n, f.type) for f in schema]
    columns += [pa.array(dedup.unit_hashes(f"{recipe.seed}|cap|", ids)), pa.array(err_list, pa.string()),
                pa.array(units, pa.string())]
    fields = list(schema) + [pa.field(CAP_KEY, pa.float64()), pa.field(HASH_ERROR, pa.string()),
                             pa.field(SPLIT_UNIT, pa.string())]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# ---------------------------------------------------------------- merge


def _candidates(recipe: Recipe, out: Path, manifests: list[mf.Manifest]) -> list[list[Path]]:
    """Return each source's candidate files in part order, all of them present (the map ran)."""
    schema = mixed_schema(manifests, recipe)
    found = []
    for index, (source, m) in enumerate(zip(recipe.sources, manifests)):
        plan = _plan(recipe, index, source, m, schema)
        paths, missing = [], []
        for part in m.parts:
            present = [out / MIXING_DIR / n for n in plan.names(part) if (out / MIXING_DIR / n).is_file()]
            paths += present[:1]
            missing += [] if present else [part]
        if missing:
            raise RecipeError(f"sources.{source.name}: {len(missing)} parts not mapped yet (e.g. part {missing[0]})")
        found.append(paths)
    return found


def merge(recipe: Recipe, out: str | os.PathLike, manifests: list[mf.Manifest] | None = None) -> dict:
    """Return the build report after writing `OUT/mixed` from the candidates: caps, exact dedup, near-dup, parts."""
    t0 = time.perf_counter()
    out = Path(out)
    manifests = manifests or _open_sources(recipe, out, allow_partial=False)
    files = _candidates(recipe, out, manifests)
    per_source = {s.name: _stage_stats(m) for s, m in zip(recipe.sources, manifests)}
    capped_all = []
    for source, paths in zip(recipe.sources, files):
        keys = [pq.read_table(p, columns=[CAP_KEY])[CAP_KEY].to_numpy() for p in paths]
        capped = cap_mask(np.concatenate(keys) if keys else np.zeros(0), source.cap)
        per_source[source.name]["capped"] = int(len(capped) - capped.sum())
        capped_all.append(capped)
    # one flat mask over every candidate row, in mix order; `keep[f]` is file f's view of it
    keep_all = np.concatenate(capped_all) if capped_all else np.zeros(0, bool)
    lengths = [pq.ParquetFile(p).metadata.num_rows for paths in files for p in paths]
    offsets = np.cumsum([0] + lengths)
    keep = [keep_all[offsets[f]:offsets[f + 1]] for f in range(len(lengths))]
    flat = [p for paths in files for p in paths]
    file_source = [s.name for s, paths in zip(recipe.sources, files) for _ in paths]

    def kept_by_source() -> Counter:
        counts = Counter({s.name: 0 for s in recipe.sources})
        for name, mask in zip(file_source, keep):
            counts[name] += int(mask.sum())
        return counts

    _drop_unreadable(recipe, files, keep, per_source)
    before = kept_by_source()
    if recipe.dedup == "exact":
        _drop_exact_duplicates(flat, keep_all, offsets)
    for name, n in kept_by_source().items():
        per_source[name]["duplicates"] = before[name] - n
    found = None
    if recipe.near_dup_threshold > 0:
        found = _near_duplicates(recipe, files, keep, per_source)
    mixed_dir = _write_mixed(recipe, out, manifests, flat, keep, t0, found)
    from vidrd_data.mix.report import write_report

    return write_report(recipe, out, mf.Manifest.open(mixed_dir), per_source)


def _stage_stats(m: mf.Manifest) -> dict:
    """Return a source's row and failure counts from its parts' stats files (no part is read)."""
    reasons: dict[str, int] = {}
    rows = failed = filtered = 0
    for stats in m.stats():
        rows += stats["output_rows"]
        failed += stats["failed"]
        filtered += stats.get("filtered", 0)
        for reason, count in stats.get("failure_reasons", {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
    stats = {"rows": rows, "failed": failed, "filtered": filtered,
             "failure_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
             "capped": 0, "duplicates": 0, "unreadable": 0}
    if filtered and "filter" in m.schema().names:  # what each of the stage's filters left out (two small columns)
        by_filter = Counter()
        for table in m.iter_parts(columns=["filter"], status="filtered"):
            by_filter.update(table["filter"].to_pylist())
        stats["filtered_by"] = dict(by_filter.most_common())
    return stats


def _drop_unreadable(recipe: Recipe, files: list[list[Path]], keep: list[np.ndarray], per_source: dict) -> None:
    """Unset kept rows whose file could not be fingerprinted, counting them (and logging the first reason)."""
    k = 0
    for source, paths in zip(recipe.sources, files):
        first = None
        for p in paths:
            t = pq.read_table(p, columns=["content_hash", HASH_ERROR])
            no_hash = t["content_hash"].is_null().to_numpy(zero_copy_only=False)
            gone = keep[k] & no_hash
            if gone.any():
                errors = t[HASH_ERROR].to_pylist()
                if any(errors[i] is None for i in np.flatnonzero(gone)):
                    raise RecipeError(f"{p}: rows without a content hash; delete {p.parent} and build again")
                first = first or errors[int(np.flatnonzero(gone)[0])]
                per_source[source.name]["unreadable"] += int(gone.sum())
                keep[k] &= ~no_hash
            k += 1
        if first:
            log.warning("sources.%s: %d rows dropped, their file could not be read (first: %s)",
                        source.name, per_source[source.name]["unreadable"], first)


def _drop_exact_duplicates(files: list[Path], keep_all: np.ndarray, offsets: np.ndarray) -> None:
    """Keep, among kept rows with equal content hashes, only the first in mix order (bucketed by hash prefix)."""
    buckets = max(1, -(-int(keep_all.sum()) // DEDUP_BUCKET_KEYS))
    firsts = []
    for bucket in range(buckets):
        keys, where = [], []
        for f, path in enumerate(files):
            rows = np.flatnonzero(keep_all[offsets[f]:offsets[f + 1]])
            if not len(rows):
                continue
            hashes = pq.read_table(path, columns=["content_hash"])["content_hash"].take(pa.array(rows))
            k = dedup.hash_keys(hashes)
            if buckets > 1:
                prefix = np.frombuffer(k.tobytes(), np.uint8)[:: dedup.KEY_BYTES].astype(np.int64)
                mine = prefix * buckets // 256 == bucket
                k, rows = k[mine], rows[mine]
            keys.append(k)
            where.append(offsets[f] + rows)
        if keys:
            firsts.append(np.concatenate(where)[dedup.first_occurrences(np.concatenate(keys))])
    keep_all[:] = False
    for first in firsts:
        keep_all[first] = True


@dataclass
class _NearDuplicates:
    """Semantic dedup's verdict over the kept rows, as flat arrays over all candidate rows in mix order."""

    filtered: np.ndarray  # bool: a near duplicate, written as `status=filtered`
    cluster: np.ndarray  # int64, -1 where the row had no embedding (it was not compared)
    duplicate_of: np.ndarray  # int64 flat row it repeats, -1 for none
    similarity: np.ndarray  # float32
    split_root: dict  # split unit → the unit whose hash decides its side (one per near-duplicate component)


def _near_duplicates(recipe: Recipe, files: list[list[Path]], keep: list[np.ndarray], per_source: dict) -> _NearDuplicates:
    """Return semantic dedup's verdict on the kept rows, unsetting near duplicates and rows over `cluster_cap` in
    `keep` and counting both per source."""
    flat_files = [p for paths in files for p in paths]
    lengths = [len(k) for k in keep]
    offsets = np.cumsum([0] + lengths)
    total = int(offsets[-1])
    positions, vectors = dedup.kept_embeddings(recipe, flat_files, keep)
    result = _NearDuplicates(np.zeros(total, bool), np.full(total, -1, np.int64), np.full(total, -1, np.int64),
                             np.zeros(total, np.float32), {})
    if len(positions):
        found = dedup.semantic_duplicates(vectors, recipe.near_dup_threshold, recipe.near_dup_clusters or None,
                                          seed=recipe.seed)
        result.cluster[positions] = found.cluster
        dup = found.duplicate_of >= 0
        result.filtered[positions[dup]] = True
        result.duplicate_of[positions[dup]] = positions[found.duplicate_of[dup]]
        result.similarity[positions] = found.similarity
    keep_all = np.concatenate(keep) if keep else np.zeros(0, bool)
    before = keep_all.copy()
    keep_all &= ~result.filtered
    if recipe.cluster_cap is not None:
        keys = np.concatenate([pq.read_table(p, columns=[CAP_KEY])[CAP_KEY].to_numpy() for p in flat_files]) \
            if flat_files else np.zeros(0)
        rows = np.flatnonzero(keep_all & (result.cluster >= 0))
        # a row a near duplicate points at is never capped (else neither copy trains and `duplicate_of` names a row
        # not in the mix): targets rank first in their cluster, so the others are capped first; a cluster holding
        # more targets than the cap keeps them all
        target = np.zeros(total, bool)
        target[result.duplicate_of[result.filtered]] = True
        order = rows[np.lexsort((keys[rows], ~target[rows], result.cluster[rows]))]  # cluster, targets, cap key
        starts = np.r_[0, np.flatnonzero(np.diff(result.cluster[order])) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        keep_all[order[(rank >= recipe.cluster_cap) & ~target[order]]] = False
    file_source = [s.name for s, paths in zip(recipe.sources, files) for _ in paths]
    for f, name in enumerate(file_source):
        span = slice(offsets[f], offsets[f + 1])
        near = int(result.filtered[span].sum())
        per_source[name]["near_duplicates"] = per_source[name].get("near_duplicates", 0) + near
        per_source[name]["cluster_capped"] = per_source[name].get("cluster_capped", 0) + int(
            (before[span] & ~result.filtered[span] & ~keep_all[span]).sum())
        keep[f][:] = keep_all[span]
    rows = np.flatnonzero(result.filtered)
    needed = np.unique(np.concatenate([rows, result.duplicate_of[rows]]))  # only these rows' units are read
    units = {}
    for f, path in enumerate(flat_files):
        mine = needed[(needed >= offsets[f]) & (needed < offsets[f + 1])]
        if len(mine):
            column = pq.read_table(path, columns=[SPLIT_UNIT])[SPLIT_UNIT].take(pa.array(mine - offsets[f]))
            units.update(zip(mine.tolist(), column.to_pylist()))
    result.split_root = dedup.split_components([(units[r], units[d]) for r, d in
                                                zip(rows.tolist(), result.duplicate_of[rows].tolist())])
    return result


def _write_mixed(recipe: Recipe, out: Path, manifests: list[mf.Manifest], files: list[Path], keep: list[np.ndarray],
                 t0: float, near: _NearDuplicates | None = None) -> Path:
    """Write the kept rows (and the near duplicates, `filtered`) in order as `OUT/mixed` (its `_manifest.json`
    first, each part's stats file last)."""
    schema = mixed_schema(manifests, recipe)
    mixed_dir = out / "mixed"
    clear_output(mixed_dir)
    mixed_dir.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(k) for k in keep])
    emit = [k | near.filtered[offsets[f]:offsets[f + 1]] for f, k in enumerate(keep)] if near else keep
    n_rows = sum(int(k.sum()) for k in emit)
    n_parts = max(1, -(-n_rows // MIXED_PART_ROWS))
    meta = mf.new_meta(kind="mixed", stage="build", params={"recipe": str(recipe.path), "val_fraction": recipe.val_fraction,
                       "dedup": recipe.dedup, "near_dup_threshold": recipe.near_dup_threshold, "seed": recipe.seed,
                       "split_by": recipe.split_by, "near_dup_embedding": recipe.near_dup_embedding,
                       "cluster_cap": recipe.cluster_cap,
                       "sources": {s.name: {"stage": s.stage, "weight": s.weight, "cap": s.cap} for s in recipe.sources}},
                       inputs=[str(out / "sources" / s.name) for s in recipe.sources], root=recipe.root,
                       manifest_dir=mixed_dir, schema=schema, extra={"num_parts": n_parts})
    fs.write_json_atomic(mixed_dir / mf.MANIFEST_FILE, meta)
    pending, pending_rows, part = [], 0, 0

    def flush(rows: int) -> None:
        nonlocal pending, pending_rows, part
        table = pa.concat_tables(pending).combine_chunks() if pending else schema.empty_table()
        chunk, rest = table.slice(0, rows), table.slice(rows)
        fs.write_parquet_atomic(mixed_dir / mf.part_name(part), chunk)
        fs.write_json_atomic(mixed_dir / mf.stats_name(part), mf.part_stats(chunk, chunk.num_rows, time.perf_counter() - t0))
        part += 1
        pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    ids = None
    if near is not None and near.filtered.any():  # the sample ids that near duplicates point at
        targets = np.unique(near.duplicate_of[near.filtered])
        ids = {}
        for f, path in enumerate(files):
            mine = targets[(targets >= offsets[f]) & (targets < offsets[f + 1])]
            if len(mine):
                sample_ids = pq.read_table(path, columns=["sample_id"])["sample_id"].to_numpy(zero_copy_only=False)
                ids.update(zip(mine.tolist(), sample_ids[mine - offsets[f]].tolist()))
    for f, (path, mask) in enumerate(zip(files, emit)):
        if not mask.any():
            continue
        table = pq.read_table(path).filter(pa.array(mask))
        if near is not None:
            table = _with_dedup_columns(recipe, table, near, offsets[f] + np.flatnonzero(mask), ids)
        table = table.drop_columns(list(PRIVATE))
        pending.append(table.select(schema.names).cast(schema))
        pending_rows += table.num_rows
        while pending_rows >= MIXED_PART_ROWS:
            flush(MIXED_PART_ROWS)
    if pending_rows or part == 0:
        flush(pending_rows)
    return mixed_dir


def _with_dedup_columns(recipe: Recipe, table: pa.Table, near: _NearDuplicates, rows: np.ndarray,
                        ids: dict | None) -> pa.Table:
    """Return the rows (flat positions `rows`) with status, filter, cluster and duplicate columns from semantic
    dedup, and, splitting by source, each near-duplicate component's split."""
    filtered = near.filtered[rows]
    columns = {
        "status": np.where(filtered, "filtered", table["status"].to_numpy(zero_copy_only=False)).astype(object),
        "filter": np.where(filtered, NEAR_DUPLICATE, None).astype(object),
        "filter_score": np.where(filtered, near.similarity[rows], np.nan),
        "cluster": pa.array(near.cluster[rows], pa.int64(), mask=near.cluster[rows] < 0),  # < 0: not compared
        "duplicate_of": np.array([ids[d] if f else None for f, d in zip(filtered, near.duplicate_of[rows])], object),
    }
    if recipe.split_by == "source" and near.split_root:
        units = table[SPLIT_UNIT].to_numpy(zero_copy_only=False)
        roots = [near.split_root.get(u, u) for u in units]
        u = dedup.unit_hashes(f"{recipe.seed}|split|", roots)
        columns["split"] = np.where(u < recipe.val_fraction, "val", "train").astype(object)
    for name, values in columns.items():
        if not isinstance(values, pa.Array):
            values = pa.array(values, type=pa.float64() if name == "filter_score" else None, from_pandas=True)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table
