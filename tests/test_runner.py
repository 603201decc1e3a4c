import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import REPO
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.run.runner import retry_failed, run_stage
from vidrd_data.run.stage import RunnerError, Stage


def _rows(out):
    return sorted(mf.Manifest.open(out).read().drop_columns([]).to_pylist(), key=lambda r: r["input_row"])


def _ids(out):
    return [r["sample_id"] for r in _rows(out)]


@pytest.fixture
def many_images(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    rng = np.random.default_rng(1)
    lines = ["image,caption"]
    for i in range(60):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
        lines.append(f"{i:03d}.png,image {i}")
    lines.append("nope.png,missing")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root / "list.csv"


def _run_script(table_path, out, workers, delay):
    return textwrap.dedent(
        f"""
        from vidrd_data import sources
        from vidrd_data.run.runner import run_stage
        table, root = sources.caption_table({str(table_path)!r}, path_col="image")
        run_stage("tests.slow_stage:SlowImages", {{"delay": {delay}}}, table, {str(out)!r}, root=root,
                  input_desc=["x"], shard_size=7, workers={workers}, progress=False)
        """
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_resume_after_kill_yields_identical_manifest(many_images, tmp_path, workers):
    reference = tmp_path / "reference"
    table, root = sources.caption_table(many_images, path_col="image")
    run_stage("tests.slow_stage:SlowImages", {"delay": 0.03}, table, reference, root=root, input_desc=["x"], shard_size=7, progress=False)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = 0
    groups = []
    for wait_s in (1.5, 0.4, 0.9, 0.6):  # kill at several moments: during start-up, mid-shard, between parts
        proc = subprocess.Popen([sys.executable, "-c", _run_script(many_images, out, workers, 0.03)], env=env, cwd=REPO,
                                start_new_session=True)
        groups.append(proc.pid)
        time.sleep(wait_s)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # the run's process alone, as the OOM killer would
            kills += 1
        proc.wait()
        if mf.is_manifest(out):  # readers never see a torn part, even right after a kill
            m = mf.Manifest.open(out)
            for i in m.parts:
                assert pq.read_table(m.part_path(i)).num_rows == 7 or i == 8
    assert kills >= 2, "the run finished before it could be killed; the test proves nothing"
    # a pool worker killed before its start-up finished can outlive its parent (see the closing note): end them here
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    subprocess.run([sys.executable, "-c", _run_script(many_images, out, workers, 0.03)], env=env, cwd=REPO, check=True)
    for p in out.iterdir():
        assert not p.name.endswith(".tmp"), f"leftover temp file {p.name}"
    killed_rows, reference_rows = _rows(out), _rows(reference)
    assert len(killed_rows) == 61 and len({r["sample_id"] for r in killed_rows}) == 61
    assert killed_rows == reference_rows


def test_multiple_workers_give_the_same_rows_as_one(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    run_stage("images", {}, table, tmp_path / "one", root=root, input_desc=["x"], shard_size=9, workers=1, progress=False)
    run_stage("images", {}, table, tmp_path / "two", root=root, input_desc=["x"], shard_size=9, workers=2, progress=False)
    assert _rows(tmp_path / "one") == _rows(tmp_path / "two")


def test_rerun_of_a_complete_manifest_does_nothing(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], shard_size=9, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "m").iterdir()}
    summary = run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], shard_size=9, progress=False)
    assert summary.parts_skipped == summary.parts_total == 7
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "m").iterdir()} == before


def test_rerun_with_other_inputs_or_options_is_refused_unless_overwrite(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], shard_size=9, progress=False)
    with pytest.raises(RunnerError, match="--overwrite"):
        run_stage("images", {}, table, tmp_path / "m", root=root, input_desc=["x"], shard_size=10, progress=False)
    with pytest.raises(RunnerError, match="--overwrite"):
        run_stage("images", {}, table.slice(0, 10), tmp_path / "m", root=root, input_desc=["x"], shard_size=9, progress=False)
    s = run_stage("images", {}, table.slice(0, 10), tmp_path / "m", root=root, input_desc=["x"], shard_size=9,
                  overwrite=True, progress=False)
    assert s.input_rows == 10 and len(mf.Manifest.open(tmp_path / "m").parts) == 2


def test_output_directory_with_foreign_files_is_never_cleared(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(RunnerError):
        run_stage("images", {}, table, tmp_path / "mine", root=root, input_desc=["x"], progress=False)
    with pytest.raises(RunnerError):
        run_stage("images", {}, table, tmp_path / "mine", root=root, input_desc=["x"], overwrite=True, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_retry_reruns_only_failed_rows_and_rewrites_their_parts(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    out = tmp_path / "m"
    run_stage("images", {}, table, out, root=root, input_desc=["x"], shard_size=9, progress=False)
    m = mf.Manifest.open(out)
    assert m.read(status="failed").column("source_path").to_pylist() == ["nope.png"]
    untouched = {i: m.part_path(i).stat().st_mtime_ns for i in m.parts if i != 6}
    before = _rows(out)
    Image.new("RGB", (8, 8)).save(root / "nope.png")
    summary = retry_failed(out, progress=False)
    after = _rows(out)
    assert (summary.ok, summary.failed) == (61, 0)
    assert [r["sample_id"] for r in after] == [r["sample_id"] for r in before]
    assert after[:-1] == before[:-1] and after[-1]["status"] == "ok" and after[-1]["width"] == 8
    m = mf.Manifest.open(out)
    assert {i: m.part_path(i).stat().st_mtime_ns for i in m.parts if i != 6} == untouched
    assert m.stats()[6]["retried_input_rows"] == 1 and m.stats()[6]["failed"] == 0


class _WrongTypes(Stage):
    name = "wrong-types"
    kind = "image"

    def process(self, row):
        width = "wide" if row["input_row"] == 1 else 4
        return [{"sample_id": str(row["input_row"]), "source_path": row["source_path"], "width": width}]


class _Crashes(Stage):
    name = "crashes"
    kind = "image"

    def process(self, row):
        if row["input_row"] % 2:
            raise RuntimeError("decoder exploded")
        return []


def test_a_row_that_does_not_fit_the_schema_fails_alone(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    run_stage("tests.test_runner:_WrongTypes", {}, table.slice(0, 3), tmp_path / "m", root=root, input_desc=["x"], progress=False)
    rows = _rows(tmp_path / "m")
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"].startswith("SchemaError")


def test_exceptions_and_empty_results_become_failed_rows_with_reasons(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    run_stage("tests.test_runner:_Crashes", {}, table.slice(0, 4), tmp_path / "m", root=root, input_desc=["x"], progress=False)
    rows = _rows(tmp_path / "m")
    assert [r["status"] for r in rows] == ["failed"] * 4
    assert [r["error"] for r in rows] == ["stage produced no samples", "RuntimeError: decoder exploded"] * 2
    assert len({r["sample_id"] for r in rows}) == 4


def test_unknown_stage_is_a_runner_error(many_images, tmp_path):
    table, root = sources.caption_table(many_images, path_col="image")
    with pytest.raises(RunnerError, match="unknown stage"):
        run_stage("nope", {}, table, tmp_path / "m", root=root, input_desc=["x"], progress=False)
    with pytest.raises(RunnerError, match="cannot load stage"):
        run_stage("nope.module:Thing", {}, table, tmp_path / "m", root=root, input_desc=["x"], progress=False)
