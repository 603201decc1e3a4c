"""Leak-free splits: every row of one source file (and of its near duplicates' files) lands on one side."""

from collections import defaultdict

import pyarrow.compute as pc

from tests import mix_corpus
from vidrd_data import manifest as mf
from vidrd_data.mix import dedup
from vidrd_data.mix.mix import mix


def _sides_by_file(out) -> dict[str, set]:
    table = mf.Manifest.open(out / "mixed").read(columns=["source_path", "split", "content_hash"])
    sides = defaultdict(set)
    for path, split in zip(table["source_path"].to_pylist(), table["split"].to_pylist()):
        sides[path].add(split)
    return sides


def test_split_by_source_keeps_each_video_and_each_byte_copy_on_one_side_where_the_sample_split_leaks(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    recipe = mix_corpus.recipe(root, split_by="sample")
    recipe.val_fraction, recipe.dedup = 0.5, "none"  # no dedup: the byte copy of img_03 stays in the mix
    mix(recipe, out)
    assert any(len(s) == 2 for s in _sides_by_file(out).values())  # the old split: clips of a video on both sides
    recipe.split_by = "source"
    mix(recipe, out)
    sides = _sides_by_file(out)
    assert all(len(s) == 1 for s in sides.values()), sides
    assert {s for ss in sides.values() for s in ss} == {"train", "val"}
    assert sides["media/img_03.png"] == sides["media/copy_03.png"]  # one content under two names: one side


def test_near_duplicates_of_two_files_join_one_side_even_where_each_file_alone_would_not(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    units = [dedup.file_fingerprint(str(root / "media" / n)) for n in ("img_05.png", "near_05.png")]
    seed = next(s for s in range(100)  # a seed whose per-file split separates the two stills
                if len({bool(u < 0.5) for u in dedup.unit_hashes(f"{s}|split|", units)}) == 2)
    recipe = mix_corpus.recipe(root, near_dup_threshold=0.95, split_by="source")
    recipe.val_fraction, recipe.seed = 0.5, seed
    mix(recipe, out)
    table = mf.Manifest.open(out / "mixed").read()
    pair = table.filter(pc.is_in(table["source_path"], mf.pa.array(["media/img_05.png", "media/near_05.png"])))
    assert sorted(pair["status"].to_pylist()) == ["filtered", "ok"]
    assert len(set(pair["split"].to_pylist())) == 1


def test_split_components_join_units_linked_by_any_chain_of_pairs():
    roots = dedup.split_components([("b", "c"), ("d", "e"), ("c", "a"), ("f", "f")])
    assert roots == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "d", "f": "f"}
