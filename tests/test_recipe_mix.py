"""The mix reproduces what the mix of commit cb6ad81 (rows as Python dicts) wrote: ids, splits, order, columns;
and it is sliceable, mergeable and resumable without changing that.

`tests/data/mix_pinned.json` was written by `python -m tests.mix_corpus` from that code, before the rewrite.
"""

import json
import os

import pyarrow.compute as pc
import pytest

from tests import mix_corpus
from tests.conftest import REPO
from vidrd_data import manifest as mf
from vidrd_data.mix import mix as mixing
from vidrd_data.mix.mix import map_slice, merge, mix

PINNED = json.loads((REPO / "tests" / "data" / "mix_pinned.json").read_text())


def _candidates(out):
    return sorted(p.name for p in (out / mixing.MIXING_DIR).glob("*.parquet"))


@pytest.mark.parametrize("label, threshold", [("exact", 0.0), ("near_dup", 0.95)])
def test_mix_of_synthetic_sources_equals_the_pinned_mix_of_the_old_code(tmp_path, label, threshold):
    """The near-duplicate pass is now semantic dedup: its ok rows are the old mix's rows, and the near duplicate
    the old pass dropped stays as a `filtered` row naming the still it repeats."""
    root, out = mix_corpus.corpus(tmp_path)
    report = mix(mix_corpus.recipe(root, threshold), out)
    pinned = PINNED[label]
    new = {"unreadable": 0, "filtered": 0} | ({"cluster_capped": 0} if threshold else {})
    for name, stats in pinned["sources"].items():  # the old counts, plus the new ones (none here)
        assert report["sources"][name] == {**stats, **new}
    assert report["splits"] == pinned["splits"]
    assert report["rows_by_source_and_kind"] == pinned["rows_by_source_and_kind"]
    if not threshold:
        assert mix_corpus.mixed_summary(out) == pinned["mixed"]
        return
    table = mf.Manifest.open(out / "mixed").read()
    ok = table.filter(pc.equal(table["status"], "ok"))
    old = pinned["mixed"]["parts"][0]
    assert ok["sample_id"].to_pylist() == old["sample_id"] and ok["split"].to_pylist() == old["split"]
    left = table.filter(pc.equal(table["status"], "filtered")).to_pylist()
    assert [(r["source_path"], r["filter"]) for r in left] == [("media/near_05.png", "near_duplicate")]
    twin = ok.filter(pc.equal(ok["sample_id"], left[0]["duplicate_of"]))
    assert twin["source_path"].to_pylist() == ["media/img_05.png"] and left[0]["filter_score"] >= 0.95
    assert report["filtered"] == {"alpha/near_duplicate": 1}


def test_three_slices_then_merge_write_the_pinned_mix_and_each_slice_maps_only_its_parts(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    recipe = mix_corpus.recipe(root)
    seen = []
    for i in range(3):
        assert map_slice(recipe, out, i, 3) > 0
        now = _candidates(out)
        mine = [n for n in now if n not in seen]
        assert all(int(n.split("-")[1][1:]) % 3 == i for n in mine), mine
        seen = now
    merge(recipe, out)
    assert mix_corpus.mixed_summary(out) == PINNED["exact"]["mixed"]


def test_merge_refuses_a_source_part_that_no_slice_mapped(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    recipe = mix_corpus.recipe(root)
    map_slice(recipe, out, 0, 2)
    with pytest.raises(mixing.RecipeError, match="not mapped yet"):
        merge(recipe, out)


def test_killed_mix_resumes_mapping_only_what_is_missing_and_writes_the_same_manifest(tmp_path, monkeypatch):
    root, out = mix_corpus.corpus(tmp_path)
    recipe = mix_corpus.recipe(root)
    calls = []
    real = mixing._candidate

    def dies_on_the_fourth(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(mixing, "_candidate", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        mix(recipe, out)
    assert len(_candidates(out)) == 3 and not list((out / mixing.MIXING_DIR).glob(".*.tmp"))
    assert not (out / "mixed").exists()
    monkeypatch.setattr(mixing, "_candidate", real)
    assert map_slice(recipe, out) == (3 + 3 + 2) - 3  # parts of alpha, beta, gamma, less those mapped already
    mix(recipe, out)
    assert mix_corpus.mixed_summary(out) == PINNED["exact"]["mixed"]


def test_interrupted_merge_leaves_a_manifest_strict_readers_refuse(tmp_path, monkeypatch):
    root, out = mix_corpus.corpus(tmp_path)
    recipe = mix_corpus.recipe(root)
    monkeypatch.setattr(mixing, "MIXED_PART_ROWS", 5)
    real = mixing.fs.write_json_atomic

    def dies_on_second_stats(target, data):
        if str(target).endswith("part-00001.stats.json"):
            raise KeyboardInterrupt("killed")
        real(target, data)

    monkeypatch.setattr(mixing.fs, "write_json_atomic", dies_on_second_stats)
    with pytest.raises(KeyboardInterrupt):
        mix(recipe, out)
    with pytest.raises(mf.IncompleteManifest, match="part.* of 5 missing"):
        mf.Manifest.open_for_work(out / "mixed")
    monkeypatch.setattr(mixing.fs, "write_json_atomic", real)
    mix(recipe, out)
    m = mf.Manifest.open_for_work(out / "mixed")
    assert len(m.parts) == 5
    ids = [i for part in PINNED["exact"]["mixed"]["parts"] for i in part["sample_id"]]
    assert m.read(columns=["sample_id"])["sample_id"].to_pylist() == ids


def test_rows_whose_file_is_gone_are_dropped_and_counted_not_fatal(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    os.unlink(root / "media" / "img_07.png")  # alpha's row 7 (ok)
    report = mix(mix_corpus.recipe(root), out)
    assert report["sources"]["alpha"]["unreadable"] == 1
    assert report["rows"] == sum(len(p["sample_id"]) for p in PINNED["exact"]["mixed"]["parts"]) - 1
    assert "media/img_07.png" not in mf.Manifest.open(out / "mixed").read()["source_path"].to_pylist()


def test_mix_refuses_an_incomplete_source_unless_allow_partial(tmp_path, caplog):
    root, out = mix_corpus.corpus(tmp_path)
    os.unlink(out / "sources" / "beta" / mf.stats_name(1))
    with pytest.raises(mf.IncompleteManifest, match=r"sources/beta is incomplete: part 1 of 3 missing; part 1 has no stats"):
        mix(mix_corpus.recipe(root), out)
    report = mix(mix_corpus.recipe(root), out, allow_partial=True)
    assert report["sources"]["beta"]["rows"] == 15
    assert "--allow-partial" in caplog.text


def test_a_complete_capped_source_is_capped_before_its_files_are_fingerprinted(tmp_path):
    import pyarrow.parquet as pq

    root, out = mix_corpus.corpus(tmp_path)
    mix(mix_corpus.recipe(root), out)
    beta = [pq.read_table(p, columns=["content_hash"]) for p in sorted((out / mixing.MIXING_DIR).glob("s001-*"))]
    assert sum(t.num_rows for t in beta) == 24  # every ok row is a candidate (the merge decides the cap again)
    assert sum(t.num_rows - t["content_hash"].null_count for t in beta) == 12  # only the cap's 12 were hashed


def test_slices_mapped_while_a_source_was_unfinished_merge_without_mapping_again(tmp_path, monkeypatch):
    root, out = mix_corpus.corpus(tmp_path)
    recipe = mix_corpus.recipe(root)
    stats = out / "sources" / "beta" / mf.stats_name(1)  # beta's part 1 belongs to slice 1, still running
    stats.rename(stats.with_suffix(".later"))
    map_slice(recipe, out, 0, 2)  # beta incomplete: its cap cannot be decided, every ok row is fingerprinted
    stats.with_suffix(".later").rename(stats)
    map_slice(recipe, out, 1, 2)
    mapped_again = []
    real = mixing._candidate
    monkeypatch.setattr(mixing, "_candidate", lambda *args: mapped_again.append(args[2]) or real(*args))
    mix(recipe, out)
    assert mapped_again == []
    assert mix_corpus.mixed_summary(out) == PINNED["exact"]["mixed"]


def test_a_slice_removes_only_its_own_torn_temp_files(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    recipe = mix_corpus.recipe(root)
    (out / mixing.MIXING_DIR).mkdir()
    mine = out / mixing.MIXING_DIR / ".s000-p00002-0123456789ab.parquet.k2j4.tmp"
    theirs = out / mixing.MIXING_DIR / ".s000-p00001-0123456789ab.parquet.x9q1.tmp"
    mine.write_bytes(b"torn")
    theirs.write_bytes(b"being written")
    map_slice(recipe, out, 0, 2)
    assert not mine.exists() and theirs.exists()


@pytest.mark.parametrize("cap", [0, 1, 7, 50, 99, 100, 150])
def test_cap_mask_keeps_what_a_stable_argsort_kept_ties_included(cap):
    import numpy as np

    keys = np.random.default_rng(cap).integers(0, 20, 100).astype(float) / 20  # many ties
    old = np.zeros(len(keys), bool)
    old[np.argsort(keys, kind="stable")[:cap]] = True
    assert (mixing.cap_mask(keys, cap) == old).all()


def test_exact_dedup_in_many_hash_buckets_gives_the_pinned_mix(tmp_path, monkeypatch):
    monkeypatch.setattr(mixing, "DEDUP_BUCKET_KEYS", 4)  # 30-odd keys: 8+ buckets, as 10M rows get 3
    root, out = mix_corpus.corpus(tmp_path)
    report = mix(mix_corpus.recipe(root), out)
    assert mix_corpus.mixed_summary(out) == PINNED["exact"]["mixed"]
    assert {n: s["duplicates"] for n, s in report["sources"].items()} == {
        n: s["duplicates"] for n, s in PINNED["exact"]["sources"].items()}
