"""Semantic dedup (k-means + cosine threshold inside clusters) and its place in the mix: filtered rows, clusters,
the cluster cap, embeddings from a column."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tests import mix_corpus
from vidrd_data import manifest as mf
from vidrd_data.mix import dedup
from vidrd_data.mix.mix import mix


def _planted(n=3000, d=32, copies=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    dup = rng.choice(np.arange(n // 2, n), copies, replace=False)
    orig = rng.integers(0, n // 2, copies)
    x[dup] = x[orig] + 0.02 * rng.normal(size=(copies, d)).astype(np.float32)
    return x, dup, orig


def test_semantic_dedup_flags_exactly_the_planted_near_copies_and_points_at_the_earlier_row():
    x, dup, orig = _planted()
    found = dedup.semantic_duplicates(x, threshold=0.95)
    assert len(np.unique(found.cluster)) > 1  # k-means ran: rows are compared inside clusters only
    assert set(np.flatnonzero(found.duplicate_of >= 0)) == set(dup)
    assert (found.duplicate_of[dup] == orig).all() and (found.similarity[dup] >= 0.95).all()


def test_semantic_dedup_keeps_the_first_of_identical_rows_and_compares_a_block_boundary_too(monkeypatch):
    monkeypatch.setattr(dedup, "SEMANTIC_BLOCK", 3)
    x = np.random.default_rng(1).normal(size=(10, 8)).astype(np.float16)
    x[9] = x[0]  # in another block than row 0
    x[5] = x[4]
    found = dedup.semantic_duplicates(x, threshold=0.99, clusters=1)
    assert found.duplicate_of.tolist() == [-1, -1, -1, -1, -1, 4, -1, -1, -1, 0]


def test_near_duplicates_from_an_embedding_column_stay_as_filtered_rows_and_cluster_cap_rebalances(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(8, 16))
    vectors[6] = vectors[2] * 3  # same direction: cosine 1
    rows = [mix_corpus._row("pseudo_video", "emb", f"media/img_{k:02d}.png", k, f"still {k}",
                            emb=[float(v) for v in vectors[k]]) for k in range(8)]
    rows[7]["emb"] = None  # no embedding: not compared, stays
    mix_corpus.write_source(out, "emb", root, rows, part_rows=3, extra=[pa.field("emb", pa.list_(pa.float64()))])
    recipe = mix_corpus.recipe(root, near_dup_threshold=0.9)
    recipe.sources = [mix_corpus.Source(name="emb", stage="images", input="-")]
    recipe.near_dup_embedding = "column:emb"
    report = mix(recipe, out)
    table = mf.Manifest.open(out / "mixed").read()
    left = table.filter(pc.equal(table["status"], "filtered")).to_pylist()
    assert [(r["source_path"], r["filter"], r["duplicate_of"]) for r in left] == [
        ("media/img_06.png", "near_duplicate", rows[2]["sample_id"])]
    assert abs(left[0]["filter_score"] - 1.0) < 1e-5
    assert table["cluster"].null_count == 1 and report["sources"]["emb"]["near_duplicates"] == 1
    recipe.cluster_cap = 4  # one cluster (8 rows): 6 compared rows stay, 4 of them kept
    report = mix(recipe, out)
    table = mf.Manifest.open(out / "mixed").read()
    ok = table.filter(pc.equal(table["status"], "ok"))
    assert ok.num_rows == 4 + 1 and report["sources"]["emb"]["cluster_capped"] == 2
    assert report["rows"] == 5 and report["filtered"] == {"emb/near_duplicate": 1}


def test_consumers_treat_a_near_duplicate_as_not_ok_and_validate_accepts_it(tmp_path):
    from vidrd_data.inspection.summary import summarize, validate
    from vidrd_model.data import read_rows

    root, out = mix_corpus.corpus(tmp_path)
    mix(mix_corpus.recipe(root, near_dup_threshold=0.95), out)
    m = mf.Manifest.open(out / "mixed")
    assert validate(m) == []
    assert summarize(m)["filtered_by"] == {"near_duplicate": 1}
    rows, left_out = read_rows([str(out / "mixed")], split=None)
    assert not any(p.endswith("near_05.png") for p in rows["path"].to_pylist()) and left_out["status filtered"] == 1
    assert any(p.endswith("img_05.png") for p in rows["path"].to_pylist())


def test_column_embeddings_read_as_one_block_equal_those_read_row_by_row(tmp_path):
    import pyarrow.parquet as pq

    vectors = np.random.default_rng(2).normal(size=(5, 4))
    full = pa.table({"emb": pa.array(vectors.tolist(), pa.list_(pa.float64()))})
    holed = pa.table({"emb": pa.array([*vectors[:4].tolist(), None], pa.list_(pa.float64()))})
    pq.write_table(full, tmp_path / "full.parquet")
    pq.write_table(holed, tmp_path / "holed.parquet")
    recipe = mix_corpus.recipe(tmp_path, near_dup_threshold=0.9)
    recipe.near_dup_embedding = "column:emb"
    keep = [np.array([True, False, True, True, True])]
    where, block = dedup.kept_embeddings(recipe, [tmp_path / "full.parquet"], keep)
    where_h, rowwise = dedup.kept_embeddings(recipe, [tmp_path / "holed.parquet"], keep)
    assert where.tolist() == [0, 2, 3, 4] and where_h.tolist() == [0, 2, 3]
    np.testing.assert_allclose(block[:3], rowwise)
    np.testing.assert_allclose(block, vectors[[0, 2, 3, 4]].astype(np.float32))


def test_cluster_cap_never_removes_the_row_a_near_duplicate_points_at(tmp_path):
    root, out = mix_corpus.corpus(tmp_path)
    vectors = np.random.default_rng(0).normal(size=(8, 16))
    vectors[6] = vectors[2] * 3  # row 6 repeats row 2
    rows = [mix_corpus._row("pseudo_video", "emb", f"media/img_{k:02d}.png", k, f"still {k}",
                            emb=[float(v) for v in vectors[k]]) for k in range(8)]
    mix_corpus.write_source(out, "emb", root, rows, part_rows=3, extra=[pa.field("emb", pa.list_(pa.float64()))])
    recipe = mix_corpus.recipe(root, near_dup_threshold=0.9)
    recipe.cluster_cap = 1
    recipe.sources = [mix_corpus.Source(name="emb", stage="images", input="-")]
    recipe.near_dup_embedding = "column:emb"
    for seed in range(3):  # the cap's order is a hash of the seed: the target must stay whichever it is
        recipe.seed = seed
        report = mix(recipe, out)
        table = mf.Manifest.open(out / "mixed").read()
        ok = table.filter(pc.equal(table["status"], "ok"))["sample_id"].to_pylist()
        assert ok == [rows[2]["sample_id"]], seed  # one cluster, capped at one row: the kept original
        filtered = table.filter(pc.equal(table["status"], "filtered")).to_pylist()
        assert [r["duplicate_of"] for r in filtered] == [rows[2]["sample_id"]]
        assert report["sources"]["emb"]["cluster_capped"] == 6
