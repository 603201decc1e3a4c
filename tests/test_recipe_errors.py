import pytest

from cli.data import main
from tests.conftest import REPO
from vidrd_demo.corpus import demo_recipe
from vidrd_data.mix.recipe import load_recipe

GOOD_SOURCE = '[sources.a]\nstage = "images"\ninput = "list.csv"\n'


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[sources.a]\nstage = "teleport"\ninput = "list.csv"\n', "unknown stage 'teleport'"),
        ('[sources.a]\nstage = "images"\ninput = "nowhere.csv"\n', "sources.a.input"),
        (GOOD_SOURCE + "weight = -1\n", "sources.a.weight"),
        (GOOD_SOURCE + 'weight = "heavy"\n', "sources.a.weight"),
        (GOOD_SOURCE + "cap = 2.5\n", "sources.a.cap"),
        (GOOD_SOURCE + "colour = 3\n", "sources.a.colour"),
        ("[recipe]\nflavour = 1\n" + GOOD_SOURCE, "recipe.flavour"),
        ("[recipe]\nval_fraction = 2\n" + GOOD_SOURCE, "recipe.val_fraction"),
        ("[recipe]\ndedup = 'fuzzy'\n" + GOOD_SOURCE, "recipe.dedup"),
        ("[recipe]\nsplit_by = 'row'\n" + GOOD_SOURCE, "recipe.split_by"),
        ("[recipe]\ncluster_cap = 10\n" + GOOD_SOURCE, "recipe.cluster_cap: clusters come from"),
        ("[recipe]\nnear_dup_threshold = 0.9\ncluster_cap = 0\n" + GOOD_SOURCE, "recipe.cluster_cap"),
        ("[recipe]\nnear_dup_embedding = 'column:'\n" + GOOD_SOURCE, "recipe.near_dup_embedding"),
        ('[sources.a]\nstage = "images"\n', "sources.a.input"),
        ("[extras]\nx = 1\n" + GOOD_SOURCE, "unknown top-level key 'extras'"),
        ("[recipe]\n", "names no sources"),
        ("this is = not [toml", "not valid TOML"),
        ('[sources.a]\nstage = "pseudo-video"\ninput = "list.csv"\nsize = 7\n', "size must be an even"),
        ('[sources.a]\nstage = "caption"\ninput = "list.csv"\nblip2 = "x"\nbeam_width = 3\n', "sources.a.beam_width"),
        ('[sources.a]\nstage = "segment"\ninput = "list.csv"\ntreshold = 0.5\n', "sources.a.treshold"),
    ],
)
def test_malformed_recipe_fails_before_any_work_with_one_line_naming_the_key(tmp_path, capsys, text, needle):
    (tmp_path / "list.csv").write_text("image,caption\na.png,hello\n")
    (tmp_path / "r.toml").write_text(text)
    code = main(["build", str(tmp_path / "r.toml"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_slice_options_exit_2(tmp_path, capsys):
    (tmp_path / "list.csv").write_text("image,caption\na.png,hello\n")
    (tmp_path / "r.toml").write_text(GOOD_SOURCE)
    assert main(["build", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--shard-index", "0"]) == 2
    assert main(["build", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--shard-index", "3", "--num-shards", "2"]) == 2
    assert main(["build", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--executor", "spark"]) == 2


def test_shipped_demo_recipe_is_the_demo_corpus_recipe():
    assert (REPO / "manifests" / "recipes" / "demo.toml").read_text() == demo_recipe("../../demo_out")


def test_shipped_vidrd_template_uses_only_known_stages_and_options():
    recipe = load_recipe(REPO / "manifests" / "recipes" / "vidrd.toml", check_paths=False)
    assert {s.stage for s in recipe.sources} == {"pseudo-video", "caption", "segment"}
