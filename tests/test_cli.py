import json
import shutil
import subprocess
import sys

import pytest

from cli.data import main
from vidrd_data import manifest as mf


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def built(image_set, tmp_path, capsys):
    out = tmp_path / "m"
    code, stdout, _ = _run(capsys, "images", str(image_set), "--out", str(out), "--no-progress", "--shard-size", "5")
    assert code == 0 and "12 ok" in stdout and "2 failed" in stdout
    return out


def _one_line_error(code, err, expected_code=2):
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vidrd-data: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["images", "/no/such/list.csv", "--out", "{tmp}/o"], "not found"),
        (["images", "{tmp}/list.txt", "--out", "{tmp}/o"], "unknown table format"),
        (["images", "{tmp}/bad.csv", "--out", "{tmp}/o"], "no column 'image'"),
        (["images", "{tmp}/bad.csv", "--out", "{tmp}/o", "--workers", "0"], "no column"),
        (["videos", "{tmp}", "--out", "{tmp}/o"], "no videos"),
        (["videos", "{tmp}", "--out", "{tmp}/o", "--layout", "sideways"], "unknown layout"),
        (["inspect", "{tmp}"], "not a manifest"),
        (["validate", "/no/such/dir"], "not a directory"),
        (["retry", "{tmp}"], "not a manifest"),
        (["images"], "Missing argument"),
        (["images", "x", "--out", "o", "--shard-size", "many"], "--shard-size"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_gets_one_line_and_exit_status_2(capsys, tmp_path, argv, needle):
    (tmp_path / "list.txt").write_text("a b c\n")
    (tmp_path / "bad.csv").write_text("path,text\na.jpg,hello\n")
    code, _, err = _run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert needle in _one_line_error(code, err)


def test_negative_workers_is_refused(capsys, image_set, tmp_path):
    code, _, err = _run(capsys, "images", str(image_set), "--out", str(tmp_path / "o"), "--workers", "-1")
    assert "--workers must be" in _one_line_error(code, err)


def test_inspect_json_reports_counts_and_failures(built, capsys):
    code, stdout, _ = _run(capsys, "inspect", str(built), "--json")
    info = json.loads(stdout)
    assert code == 0
    assert info["rows"] == 14 and info["by_status"] == {"ok": 12, "failed": 2}
    assert info["by_kind"] == {"image": 14} and info["by_source_dataset"] == {"captions": 14}
    assert sum(info["top_failure_reasons"].values()) == 2
    assert info["caption_words"]["min"] == 3 and info["caption_words"]["max"] == 3
    assert [c["name"] for c in info["schema"]][:3] == ["sample_id", "kind", "source_path"]
    assert len(info["sample_rows"]) == 3


def test_inspect_prints_tables_and_writes_a_contact_sheet(built, capsys, tmp_path):
    sheet = tmp_path / "sheet.png"
    code, stdout, _ = _run(capsys, "inspect", str(built), "--sheet", str(sheet))
    assert code == 0 and "by status" in stdout and "contact sheet" in stdout
    from PIL import Image

    with Image.open(sheet) as img:
        assert img.width > 0 and img.height >= 8 * 128


def test_validate_passes_a_good_manifest(built, capsys):
    code, stdout, _ = _run(capsys, "validate", str(built))
    assert code == 0 and "valid" in stdout


def test_validate_lists_each_problem_of_a_hand_broken_manifest(built, capsys, image_set):
    import pyarrow.parquet as pq

    part = built / mf.part_name(0)
    table = pq.read_table(part)
    ids = table["sample_id"].to_pylist()
    ids[1] = ids[0]  # a duplicate id
    status = table["status"].to_pylist()
    status[2] = "maybe"  # an unknown status
    table = table.set_column(0, "sample_id", __import__("pyarrow").array(ids)).set_column(
        table.schema.get_field_index("status"), "status", __import__("pyarrow").array(status)
    )
    pq.write_table(table, part)
    (image_set.parent / "im05.png").unlink()  # a source that no longer exists
    code, stdout, _ = _run(capsys, "validate", str(built))
    assert code == 1, stdout
    assert "duplicate sample_id" in stdout and "unknown status 'maybe'" in stdout and "source file missing" in stdout


def test_validate_flags_a_span_past_the_source_duration(built, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = built / mf.part_name(0)
    table = pq.read_table(part)
    n = table.num_rows
    for name, value in (("start_time", 0.0), ("end_time", 9.0), ("source_duration", 5.0)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array([value] * n, pa.float64()))
    pq.write_table(table, part)
    code, stdout, _ = _run(capsys, "validate", str(built))
    assert code == 1 and "after the source's 5.000 s" in stdout


def test_validate_of_a_non_manifest_exits_2_in_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, "validate", str(tmp_path))
    assert "not a manifest" in _one_line_error(code, err)


def test_malformed_manifest_json_exits_2(built, capsys):
    (built / "_manifest.json").write_text("{")
    code, _, err = _run(capsys, "inspect", str(built))
    assert "not valid JSON" in _one_line_error(code, err)


@pytest.mark.parametrize("stage, options", [("pseudo-video", []), ("caption", ["--blip2", "no/such-model"]),
                                            ("segment", ["--embedder", "histogram"])])
def test_a_stage_refuses_an_incomplete_manifest_as_input_in_one_line(built, capsys, tmp_path, stage, options):
    (built / mf.part_name(1)).unlink()
    code, _, err = _run(capsys, stage, str(built), "--out", str(tmp_path / "o"), "--no-progress", *options)
    line = _one_line_error(code, err)
    assert "--allow-partial" in line and "1" in line
    assert not (tmp_path / "o").exists()


def test_allow_partial_runs_a_stage_over_the_complete_parts_of_a_manifest_and_warns(built, capsys, caplog, tmp_path):
    complete = mf.Manifest.open(built).read(status="ok")
    (built / mf.part_name(1)).unlink()
    left = mf.Manifest.open(built).read(status="ok").num_rows
    assert 0 < left < complete.num_rows
    out = tmp_path / "pv"
    code, stdout, _ = _run(capsys, "pseudo-video", str(built), "--out", str(out), "--no-progress", "--allow-partial",
                           "--size", "16", "--min-side", "16", "--frames", "2")
    assert code == 0, stdout
    assert mf.Manifest.open(out).read().num_rows == left
    assert any(r.levelname == "WARNING" and "--allow-partial" in r.getMessage() for r in caplog.records)


def test_retry_cli_recovers_a_fixed_row(built, capsys, image_set):
    shutil.copy(image_set.parent / "im01.png", image_set.parent / "gone.png")
    code, stdout, _ = _run(capsys, "retry", str(built), "--no-progress")
    assert code == 0 and "13 ok" in stdout and "1 failed" in stdout  # the empty caption stays failed


def test_installed_entry_point_exits_2_without_traceback(tmp_path):
    exe = shutil.which("vidrd-data", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "vidrd-data is not installed in this environment"
    proc = subprocess.run([exe, "inspect", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run([exe, "--debug", "inspect", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


# ---------------------------------------------------------------- stage commands come from the declarations


def _commands():
    import typer

    from cli.data import app

    return typer.main.get_command(app).commands


def test_the_stage_commands_are_exactly_the_registered_stages():
    from vidrd_data.run.stage import STAGES

    takes_input = {name for name, command in _commands().items() if any(p.name == "input" for p in command.params)}
    assert takes_input == set(STAGES)


@pytest.mark.parametrize("stage", ["images", "videos", "pseudo-video", "caption", "segment", "score"])
def test_each_stage_command_offers_every_declared_option_once_with_its_default_and_help(stage, capsys, monkeypatch):
    from dataclasses import MISSING, fields

    from vidrd_data.run.options import RunOptions
    from vidrd_data.stages.arguments import declarations

    declared = [f for cls in [*declarations(stage), RunOptions] for f in fields(cls)]
    params = {p.name: p for p in _commands()[stage].params}
    assert sorted(params) == sorted([f.name for f in declared] + ["out_dir"])  # a name declared twice would show here
    for f in declared:
        assert params[f.name].help == f.metadata["help"]
        assert params[f.name].required == (f.default is MISSING)
        if f.default is not MISSING:
            assert params[f.name].default == f.default, f.name
    monkeypatch.setenv("COLUMNS", "200")  # rich shortens long flags on a narrow terminal
    code, stdout, _ = _run(capsys, stage, "--help")
    flags = {flag for f in declared if f.name != "input" for flag in (params[f.name].opts + params[f.name].secondary_opts)}
    assert code == 0 and not {flag for flag in flags if flag not in stdout}
    assert {"--executor", "--gpus", "--shard-index", "--num-shards", "--workers", "--shard-size"} <= flags


@pytest.mark.parametrize("stage", ["images", "videos", "pseudo-video", "caption", "segment", "score"])
def test_prepare_declares_no_option_itself_and_refuses_an_undeclared_keyword(stage, tmp_path):
    """`prepare(input, **arguments)`: the stage's options (defaults included) are declared only in its dataclasses;
    a keyword none of them declares is one InputError line naming it."""
    import inspect

    from vidrd_data.sources import InputError
    from vidrd_data.stages.arguments import STAGE_ARGUMENTS, declarations, stage_module

    prepare = stage_module(stage).prepare
    kinds = [(name, p.kind) for name, p in inspect.signature(prepare).parameters.items()]
    assert kinds == [("input", inspect.Parameter.POSITIONAL_OR_KEYWORD), ("arguments", inspect.Parameter.VAR_KEYWORD)]
    assert declarations(stage)[0] is STAGE_ARGUMENTS[stage]
    with pytest.raises(InputError, match=r"^unknown .* option\(s\): no_such_option$"):
        prepare(str(tmp_path), no_such_option=1)


def test_a_recipe_accepts_every_option_a_stage_command_declares(tmp_path):
    from dataclasses import fields

    from vidrd_data.mix.recipe import load_recipe
    from vidrd_data.run.stage import STAGES
    from vidrd_data.stages.arguments import declarations

    lines = []
    for stage in STAGES:
        lines += [f"[sources.{stage.replace('-', '_')}]", f'stage = "{stage}"', 'input = "in"']
        for f in (f for cls in declarations(stage) for f in fields(cls) if f.name != "input"):
            # only the name is checked here: None (not TOML) and required options get a string
            lines.append(f"{f.name} = {json.dumps(f.default if isinstance(f.default, (str, int, float)) else 'x')}")
    recipe = tmp_path / "all_options.toml"
    recipe.write_text("\n".join(lines) + "\n")
    assert [s.stage for s in load_recipe(recipe, check_paths=False).sources] == list(STAGES)


def _rows(out):
    return mf.Manifest.open(out).read().sort_by("sample_id").to_pylist()


def test_two_slices_of_a_stage_run_by_the_cli_into_one_out_give_the_rows_of_one_run(image_set, tmp_path, capsys):
    sliced, whole = tmp_path / "sliced", tmp_path / "whole"
    common = ["images", str(image_set), "--shard-size", "5", "--no-progress", "--workers", "1"]
    for index, parts_done in (("1", [1]), ("0", [0, 1, 2])):  # 14 rows: parts 0, 1, 2; slice 1 of 2 is part 1
        code, _, err = _run(capsys, *common, "--out", str(sliced), "--shard-index", index, "--num-shards", "2")
        assert code == 0, err
        assert sorted(mf.Manifest.open(sliced).complete_parts()) == parts_done
    assert _run(capsys, *common, "--out", str(whole))[0] == 0
    assert len(_rows(sliced)) == 14 and _rows(sliced) == _rows(whole)


def test_a_run_option_the_runner_does_not_take_is_refused_in_one_line(image_set, tmp_path, capsys, monkeypatch):
    import vidrd_data.run.runner as runner

    def run_stage_without_gpus(stage_name, params, inputs, out_dir, *, root, input_desc, workers=0, progress=True):
        raise AssertionError("must not run")

    monkeypatch.setattr(runner, "run_stage", run_stage_without_gpus)
    code, _, err = _run(capsys, "images", str(image_set), "--out", str(tmp_path / "o"), "--gpus", "0,1")
    assert "--gpus is not supported" in _one_line_error(code, err)


def test_stage_options_given_on_the_command_line_reach_the_manifest_params(image_set, tmp_path, capsys):
    out = tmp_path / "pv"
    code, _, err = _run(capsys, "pseudo-video", str(image_set), "--out", str(out), "--no-progress", "--frames", "4",
                        "--seed", "3", "--zoom-range", "1.2,1.3", "--min-side", "16")
    assert code == 0, err
    params = mf.Manifest.open(out).meta["params"]
    assert (params["frames"], params["seed"], params["zoom_range"], params["min_side"]) == (4, 3, [1.2, 1.3], 16)
    assert params["size"] == 256 and params["easing"] == "ease_in_out"  # the declared defaults


def test_a_cuda_device_is_checked_by_name_on_the_driver_and_a_misspelt_one_is_refused(tmp_path, capsys):
    """A head node without CUDA plans a `--device cuda` run (its workers resolve the device); a bad name is one line."""
    from vidrd_data.stages.segment import prepare as prepare_segment
    from vidrd_demo.corpus import write_demo_corpus

    paths = write_demo_corpus(tmp_path / "demo", models=False)
    videos = str(paths["long"])
    job = prepare_segment(videos, embedder="histogram", device="cuda")
    assert job.params["device"] == "cuda"
    code, _, err = _run(capsys, "segment", videos, "--out", str(tmp_path / "s"), "--embedder", "histogram",
                        "--device", "cdua")
    assert "unknown device 'cdua'" in _one_line_error(code, err)
    code, _, err = _run(capsys, "segment", videos, "--out", str(tmp_path / "s"), "--embedder", "histogram",
                        "--device", "cuda:1")
    assert "choose GPUs with --gpus" in _one_line_error(code, err)  # a pinned worker has no cuda:1
