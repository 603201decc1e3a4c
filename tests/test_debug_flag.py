"""`--debug` anywhere on a vidrd command line turns a one-line error into the traceback, for all four CLIs."""

import os
import subprocess
import sys

import pytest

from cli import data, eval as eval_cli, sample, train
from cli._app import _take_debug
from tests.conftest import REPO, assert_one_line_error, run_cli


def _vidrd_data(*argv):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cli.data", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_debug_after_the_subcommand_shows_the_traceback_and_without_it_one_line(tmp_path):
    missing = tmp_path / "no_such_manifest"
    plain = _vidrd_data("inspect", missing)
    assert plain.returncode == 2 and plain.stderr.strip() == f"vidrd-data: {missing} is not a directory"
    debug = _vidrd_data("inspect", missing, "--debug")
    assert "Traceback (most recent call last)" in debug.stderr
    assert f"ManifestError: {missing} is not a directory" in debug.stderr and debug.returncode == 1


@pytest.mark.parametrize("main, prog, argv, error", [
    (data.main, "vidrd-data", ["validate", "{tmp}/none"], "ManifestError"),
    (train.main, "vidrd-train", ["train", "{tmp}/none.toml"], "FileNotFoundError"),
    (sample.main, "vidrd-sample", ["--prompt", "x", "--model", "{tmp}/none", "--out", "{tmp}/out"], "UsageProblem"),
    (eval_cli.main, "vidrd-eval", ["clipsim", "{tmp}", "-o", "{tmp}/x.json"], "UsageProblem"),
])
def test_every_cli_takes_debug_at_the_end(main, prog, argv, error, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert_one_line_error(*run_cli(main, capsys, *argv)[::2], prog)
    with pytest.raises(Exception) as raised:  # the exception propagates: the interpreter prints its traceback
        main([*argv, "--debug"])
    assert type(raised.value).__name__ == error


def test_debug_after_a_double_dash_is_an_argument_not_the_flag():
    assert _take_debug(["inspect", "--debug", "x", "--", "--debug"]) == (["inspect", "x", "--", "--debug"], True)
    assert _take_debug(["inspect", "x"]) == (["inspect", "x"], False)
