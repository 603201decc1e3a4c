"""Fuzzing suite: every stage, through the CLI, over seeded broken and awkward media and tables.

The property, for every stage: each input row ends as exactly one ok/failed row (clip stages: at least one row, all
of its source), every failed row says why, no traceback reaches stderr, the exit status is 0 (rows failed) or 2
(unusable arguments or table), files every decoder reads end ok, and a rerun on the same --out resumes to the same
rows. Inputs come from `tests/fuzz_inputs.py` with `SEED` (env VIDRD_FUZZ_SEED), so a failure reproduces; the
long mode (`pytest -m fuzz_long`, or `python benchmarks/run.py fuzz`) mutates more files and seeds.

Stages run in a child process running `cli.data.main([...])`: a decoder that crashes the stage process (a segfault)
shows up as a signal exit status here instead of taking pytest down with it.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cli.data import main
from tests.conftest import assert_one_line_error, run_cli
from tests.fuzz_inputs import run_stage_cli, stage_commands, write_fuzz_corpus
from vidrd_data import manifest as mf
from vidrd_data import sources

SEED = int(os.environ.get("VIDRD_FUZZ_SEED", "0"))

# Files every decoder reads: they must end ok wherever the stage's own rules let them (cases in fuzz_inputs.py).
DECODABLE_IMAGES = {"real JPEG, unchanged", "JPEG named .png", "PNG RGBA (alpha)", "PNG palette with transparency",
                    "PNG 16-bit greyscale", "JPEG CMYK", "PNG 1-bit", "animated GIF", "JPEG with EXIF orientation 6"}
DECODABLE_VIDEOS = {"real mp4, unchanged", "variable frame rate", "rotation metadata (display matrix 90°)",
                    "H.264 4:4:4", "H.264 10-bit (yuv420p10le)", "VP9 webm with alpha (yuva420p)",
                    "H.264 AVI (decord: no timestamps)", "HEVC in Matroska", "mp4 named .avi", "valid span"}
# Rows that must fail whatever the stage: what the reader or every decoder refuses.
BROKEN_IMAGES = {"zero-length", "mp4 named .jpg", "text named .png", "PNG IHDR 100000x100000 (bomb by header)",
                 "JPEG SOF 65000x65000", "missing file", "empty path", "non-UTF-8 path", "NUL in path",
                 "latin-1 caption", "cp1252 caption", "UTF-16 caption (NULs, BOM)", "NUL in caption",
                 "very long caption", "empty caption", "truncated UTF-8 sequence"}
BROKEN_VIDEOS = {"zero-length", "mp4 with an audio stream only", "missing file", "non-UTF-8 path", "NUL in path",
                 "empty path"}
BROKEN_SPANS = {"NaN span", "infinite end", "negative start", "start after end", "span past the end", "text span"}


def accounted(out: Path, clip_stage: bool) -> dict[int, list[dict]]:
    """Assert every input row of a finished run ended as its rows (see the module docstring); return them by input."""
    inputs = pq.read_table(out / mf.INPUTS_FILE).to_pylist()
    rows = mf.Manifest.open(out).read().to_pylist()
    by_input: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_input[row["input_row"]].append(row)
    assert sorted(by_input) == list(range(len(inputs))), "input rows without output rows, or output rows of none"
    for i, source_row in enumerate(inputs):
        produced = by_input[i]
        assert len(produced) == 1 or (clip_stage and produced), (i, produced)
        for row in produced:
            assert row["source_path"] == source_row["source_path"], (source_row, row)
            assert row["status"] in mf.STATUSES, row
            assert row["status"] == "ok" or row["error"], f"failed row without a reason: {row}"
    return by_input


def outcome(rows: list[dict]) -> str:
    """Return what one input row ended as: ok, failed, or ok+failed (a clip stage's mix)."""
    statuses = sorted({r["status"] for r in rows})
    return "+".join(statuses)


def check_stage(stage: str, corpus, out: Path) -> Counter:
    """Run a stage over the fuzz corpus twice (the second a resume) and check the property; return outcome counts."""
    args, clip_stage = stage_commands(corpus)[stage]
    cases = corpus.image_cases if stage in ("images", "pseudo-video") else corpus.video_cases
    decodable = DECODABLE_IMAGES if stage in ("images", "pseudo-video") else DECODABLE_VIDEOS
    broken = BROKEN_IMAGES if stage in ("images", "pseudo-video") else BROKEN_VIDEOS
    if clip_stage:  # the stages that cut spans read the list's start/end (videos carries them as they are)
        broken = broken | BROKEN_SPANS
    if stage != "segment":  # its every frame shows a new number: segment's rules drop it as one long transition
        decodable = decodable | {"real clip counter.mp4 from ../shared"}
    first = run_stage_cli(stage, args, out)
    assert first.returncode == 0, f"exit {first.returncode} (negative: killed by that signal)\n{first.stderr[-3000:]}"
    assert "Traceback" not in first.stderr, first.stderr[-3000:]
    by_input = accounted(out, clip_stage)
    assert len(by_input) == len(cases)
    for i, case in enumerate(cases):
        ended = outcome(by_input[i])
        duplicate = (by_input[i][0]["error"] or "").startswith("ValueError: duplicate of input row")
        if case in decodable and not duplicate:  # the corpus repeats some files: a repeat is the same sample
            assert ended == "ok", (stage, case, by_input[i][0]["source_path"], by_input[i][0]["error"])
        if case in broken:
            assert ended == "failed", (stage, case, by_input[i])
    again = run_stage_cli(stage, args, out)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert "(1 already complete)" in again.stdout, again.stdout
    key = lambda r: (r["input_row"], r["sample_id"], r["status"], r["error"])  # noqa: E731
    assert sorted(map(key, mf.Manifest.open(out).read().to_pylist())) == sorted(
        key(r) for rows in by_input.values() for r in rows)
    return Counter(f"{cases[i]}: {outcome(rows)}" for i, rows in by_input.items())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_fuzz_corpus(tmp_path_factory.mktemp("fuzz"), seed=SEED)


@pytest.mark.parametrize("stage", ["images", "pseudo-video", "videos", "caption", "segment"])
def test_stage_accounts_for_every_mutated_input_and_resumes_to_the_same_rows(stage, corpus, tmp_path):
    check_stage(stage, corpus, tmp_path / "out")


# ---------------------------------------------------------------- unusable tables: one line, exit 2

UNUSABLE_TABLES = {
    "UTF-16 table": ("t.csv", "image,caption\na.png,x\n".encode("utf-16"), "UTF-16/UTF-32 text"),
    "empty file": ("t.csv", b"", "cannot read"),
    "header only": ("t.csv", b"image,caption,path\n", "has no rows"),
    "binary named .csv": ("t.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not valid UTF-8"),
    "no such column": ("t.csv", b"a,b\n1,2\n", "has no column"),
    "JSON array named .jsonl": ("t.jsonl", b'[{"image": "a.png"},\n{"image": "b.png"}]\n', "no line is a JSON object"),
    "garbage parquet": ("t.parquet", b"PAR1" + bytes(range(256)) * 4, "cannot read"),
    "unknown extension": ("t.xlsx", b"PK\x03\x04", "unknown table format"),
}


@pytest.mark.parametrize("stage", ["images", "pseudo-video", "videos", "caption", "segment"])
@pytest.mark.parametrize("case", sorted(UNUSABLE_TABLES))
def test_unusable_table_is_one_line_and_exit_2_for_every_stage(stage, case, tmp_path, capsys):
    name, content, needle = UNUSABLE_TABLES[case]
    (tmp_path / name).write_bytes(content)
    extra = {"caption": ["--blip2", str(tmp_path / "no_model")], "segment": ["--embedder", "histogram"]}
    code, _, err = run_cli(main, capsys, stage, tmp_path / name, "--out", tmp_path / "out", "--no-progress",
                           *extra.get(stage, []))
    line = assert_one_line_error(code, err, "vidrd-data")
    assert needle in line or (stage == "caption" and "no_model" in line), line


# ---------------------------------------------------------------- tables and spans, generated

CELLS = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"nan", b"inf", b"-1", b"1e308", b"0", b"\x00", b"\xff\xfe", "é".encode("latin-1")]),
)


def _csv_cell(value: bytes) -> bytes:
    return b'"' + value.replace(b'"', b'""') + b'"'


@settings(max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(CELLS, CELLS, CELLS, CELLS), min_size=1, max_size=8))
def test_any_bytes_in_a_video_list_become_values_or_row_errors(rows, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(b"path,caption,start,end\n" + b"".join(b",".join(map(_csv_cell, r)) + b"\n" for r in rows))
    try:
        table, _ = sources.video_list(path)
    except sources.InputError as exc:  # the whole table unusable: allowed, with a message
        assert str(exc)
        return
    out = table.to_pylist()
    assert len(out) == len(rows)
    for row in out:
        if row.get(mf.INPUT_ERROR):
            continue
        for name in ("source_path", "caption"):
            assert row[name] is None or ("\x00" not in row[name] and len(row[name]) <= sources.MAX_TEXT_CHARS)
        for name in ("start_time", "end_time"):
            assert row[name] is None or (row[name] >= 0 and row[name] != float("inf"))


@settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(
    st.fixed_dictionaries({"image": st.text(max_size=10), "caption": st.one_of(st.text(max_size=20), st.integers(),
                                                                                st.none(), st.lists(st.integers()))}),
    st.binary(max_size=30)), min_size=1, max_size=6))
def test_any_jsonl_lines_become_rows_or_row_errors(lines, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join((json.dumps(x).encode() if isinstance(x, dict) else x.replace(b"\n", b" ")) + b"\n"
                              for x in lines))
    try:
        table, _ = sources.caption_table(path, path_col="image")
    except sources.InputError as exc:
        assert str(exc)
        return
    assert table.num_rows <= len(lines)
    for row in table.to_pylist():
        assert row.get(mf.INPUT_ERROR) or row["caption"] is None or isinstance(row["caption"], str)


# ---------------------------------------------------------------- malformed recipes and manifests

RECIPES = {
    "TOML syntax error": "[recipe\nname = 'x'\n",
    "unknown key": "[recipe]\nname = 'x'\n[sources.a]\nstage = 'images'\ninput = 'imgs'\nspeed = 3\n",
    "wrong type": "[recipe]\nname = 'x'\n[sources.a]\nstage = 'images'\ninput = 'imgs'\nweight = 'heavy'\n",
    "missing input": "[recipe]\nname = 'x'\n[sources.a]\nstage = 'images'\ninput = 'nowhere/captions.csv'\n",
    "unknown stage": "[recipe]\nname = 'x'\n[sources.a]\nstage = 'teleport'\ninput = 'imgs'\n",
    "no sources": "[recipe]\nname = 'x'\n",
    "not UTF-8": b"[recipe]\nname = 'caf\xe9'\n",
    "empty file": "",
}


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_malformed_recipe_is_one_line_and_exit_2(case, tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    text = RECIPES[case]
    (tmp_path / "r.toml").write_bytes(text if isinstance(text, bytes) else text.encode())
    code, _, err = run_cli(main, capsys, "build", tmp_path / "r.toml", "--out", tmp_path / "build", "--no-progress")
    assert_one_line_error(code, err, "vidrd-data")


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    """A small finished images manifest with two parts, to break."""
    from PIL import Image

    root = tmp_path_factory.mktemp("manifest")
    lines = ["image,caption"]
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(root / f"{i}.png")
        lines.append(f"{i}.png,picture {i}")
    (root / "c.csv").write_text("\n".join(lines) + "\n")
    assert main(["images", str(root / "c.csv"), "--out", str(root / "m"), "--shard-size", "2", "--no-progress",
                 "--workers", "1"]) == 0
    return root / "m"


def _break(path: Path, case: str) -> None:
    if case == "missing part":
        (path / mf.part_name(1)).unlink()
    elif case == "missing part, stats kept":
        (path / mf.part_name(0)).unlink()
    elif case == "garbage part":
        (path / mf.part_name(0)).write_bytes(b"PAR1" + os.urandom(64) + b"PAR1")
    elif case == "truncated part":
        data = (path / mf.part_name(1)).read_bytes()
        (path / mf.part_name(1)).write_bytes(data[: len(data) // 2])
    elif case == "manifest.json not JSON":
        (path / mf.MANIFEST_FILE).write_text("{not json")
    elif case == "manifest.json a list":
        (path / mf.MANIFEST_FILE).write_text("[1, 2]")
    elif case == "manifest.json missing keys":
        (path / mf.MANIFEST_FILE).write_text("{}")
    elif case == "manifest.json future version":
        meta = json.loads((path / mf.MANIFEST_FILE).read_text())
        (path / mf.MANIFEST_FILE).write_text(json.dumps({**meta, "schema_version": 99}))
    elif case == "manifest.json not UTF-8":
        (path / mf.MANIFEST_FILE).write_bytes(b'{"kind": "caf\xe9"}')
    elif case == "no manifest.json":
        (path / mf.MANIFEST_FILE).unlink()
    elif case == "stats not JSON":
        (path / mf.stats_name(0)).write_text("{")
    else:
        raise ValueError(case)


MANIFEST_CASES = ["missing part", "missing part, stats kept", "garbage part", "truncated part",
                  "manifest.json not JSON", "manifest.json a list", "manifest.json missing keys",
                  "manifest.json future version", "manifest.json not UTF-8", "no manifest.json", "stats not JSON"]


@pytest.mark.parametrize("command", ["inspect", "validate"])
@pytest.mark.parametrize("case", MANIFEST_CASES)
def test_malformed_manifest_gets_an_answer_not_a_traceback(command, case, manifest_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(manifest_dir, broken)
    _break(broken, case)
    code, out, err = run_cli(main, capsys, command, broken)
    assert "Traceback" not in err and "unexpected" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code == 2:
        assert_one_line_error(code, err, "vidrd-data")
    if command == "validate":
        assert code != 0, f"validate passed a manifest with {case}: {out}"


# ---------------------------------------------------------------- long mode

@pytest.mark.fuzz_long
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("stage", ["images", "pseudo-video", "videos", "caption", "segment"])
def test_long_mode_more_seeds_and_mutations(stage, seed, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"fuzz{seed}")
    corpus = write_fuzz_corpus(root, seed=seed, scale=4)
    check_stage(stage, corpus, root / f"out_{stage}")
