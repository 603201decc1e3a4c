"""The mix reproduces what the mix of commit cb6ad81 (rows as Python dicts) wrote: ids, splits, order, columns.

`tests/data/mix_pinned.json` was written by `python -m tests.mix_corpus` from that code, before the rewrite.
"""

import json

import pytest

from tests import mix_corpus
from tests.conftest import REPO
from vidrd_data.mix.recipe import mix

PINNED = json.loads((REPO / "tests" / "data" / "mix_pinned.json").read_text())


@pytest.mark.parametrize("label, threshold", [("exact", 0.0), ("near_dup", 0.95)])
def test_mix_of_synthetic_sources_equals_the_pinned_mix_of_the_old_code(tmp_path, label, threshold):
    root, out = mix_corpus.corpus(tmp_path)
    report = mix(mix_corpus.recipe(root, threshold), out)
    pinned = PINNED[label]
    assert mix_corpus.mixed_summary(out) == pinned["mixed"]
    assert report["sources"] == pinned["sources"]
    assert report["splits"] == pinned["splits"]
    assert report["rows_by_source_and_kind"] == pinned["rows_by_source_and_kind"]
