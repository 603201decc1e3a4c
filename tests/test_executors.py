"""The run engine's executors, slices and resume rules: GPU pinning, load-once workers, StageAbort, bounded
retries, Slurm slices, the fingerprint and streamed inputs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import REPO
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.run import executors
from vidrd_data.run.runner import run_stage, slurm_slice
from vidrd_data.run.shard import read_rows
from vidrd_data.run.stage import RunnerError, StageAbort


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(2)
    lines = ["image,caption"]
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
        lines.append(f"{i:03d}.png,image {i}")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return sources.caption_table(root / "list.csv", path_col="image")


@pytest.fixture
def spawned_workers_import_tests(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _rows(out):
    return sorted(mf.Manifest.open(out).read().to_pylist(), key=lambda r: r["input_row"])


def _placements(out):
    return [tuple(r["placement"].split("|")) for r in _rows(out)]


# ---------------------------------------------------------------- placement


def test_gpus_option_picks_all_none_a_count_or_ids_of_the_visible_gpus():
    visible = ["4", "5", "6", "7"]  # as under Slurm: CUDA_VISIBLE_DEVICES=4,5,6,7
    assert executors.choose_gpus(None, visible) == visible
    assert executors.choose_gpus("none", visible) == []
    assert executors.choose_gpus("2", visible) == ["4", "5"]
    assert executors.choose_gpus("0,2,3", visible) == ["4", "6", "7"]
    for bad in ("5", "0,9", "1,1", "gpu0"):
        with pytest.raises(RunnerError, match="--gpus"):
            executors.choose_gpus(bad, visible)


def test_model_workers_are_dealt_over_gpus_and_cpu_stages_get_a_pool(monkeypatch):
    from tests.engine_stages import RecordsPlacement
    from vidrd_data.stages.images import ImageIngest

    monkeypatch.setattr(executors, "visible_gpus", lambda: ["0", "1"])
    model = {"device": "auto"}
    assert executors.local_slots(RecordsPlacement, model, 0, None, None) == ["0", "1"]
    assert executors.local_slots(RecordsPlacement, model, 0, None, 0.5) == ["0", "1", "0", "1"]
    assert executors.local_slots(RecordsPlacement, model, 2, None, 0.5) == ["0", "1"]
    assert executors.local_slots(RecordsPlacement, model, 0, None, 2) == ["0,1"]
    assert executors.local_slots(RecordsPlacement, model, 0, "none", None) == [""]  # GPUs hidden: auto is CPU
    assert executors.local_slots(RecordsPlacement, {"device": "cpu"}, 0, None, None) == [""]
    assert executors.local_slots(ImageIngest, {}, 3, None, None) == [None, None, None]
    with pytest.raises(RunnerError, match="needs 3 GPUs"):
        executors.local_slots(RecordsPlacement, model, 0, None, 3)


def test_two_fake_gpus_give_two_pinned_workers_that_each_set_up_once(images, tmp_path, monkeypatch,
                                                                     spawned_workers_import_tests):
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["0", "1"])
    table, root = images
    params = {"device": "auto", "setups": str(tmp_path / "setups"), "delay": 0.02}
    run_stage("tests.engine_stages:RecordsPlacement", params, table, tmp_path / "m", root=root, input_desc=["x"],
              shard_size=3, progress=False)
    placements = _placements(tmp_path / "m")
    assert len(placements) == 24
    assert {gpu for gpu, _ in placements} == {"0", "1"}
    by_pid = {}
    for gpu, pid in placements:
        by_pid.setdefault(pid, set()).add(gpu)
    assert len(by_pid) == 2 and all(len(gpus) == 1 for gpus in by_pid.values())  # one worker per GPU, pinned
    assert len(list((tmp_path / "setups").iterdir())) == 2  # the model loaded once per worker, not per shard


def test_a_half_gpu_stage_puts_two_workers_on_one_gpu(images, tmp_path, monkeypatch, spawned_workers_import_tests):
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["3"])
    table, root = images
    params = {"device": "cuda", "setups": str(tmp_path / "setups"), "delay": 0.02}
    run_stage("tests.engine_stages:RecordsPlacement", params, table, tmp_path / "m", root=root, input_desc=["x"],
              shard_size=3, gpus_per_worker=0.5, progress=False)
    placements = _placements(tmp_path / "m")
    assert {gpu for gpu, _ in placements} == {"3"} and len({pid for _, pid in placements}) == 2
    assert len(list((tmp_path / "setups").iterdir())) == 2


# ---------------------------------------------------------------- failures


def _torn(out):
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")
            or (mf.PART_RE.match(p.name) and not (out / p.name.replace(".parquet", ".stats.json")).exists())]


def test_stage_abort_stops_the_run_writing_nothing_for_its_shard_and_keeping_complete_parts(
        images, tmp_path, spawned_workers_import_tests):
    table, root = images
    out = tmp_path / "m"
    with pytest.raises(StageAbort, match="device lost"):
        run_stage("tests.engine_stages:AbortsOnSecondShard", {}, table, out, root=root, input_desc=["x"],
                  shard_size=5, workers=1, progress=False)
    m = mf.Manifest.open(out)
    assert m.parts == [0]  # the first shard is kept; the second wrote nothing; the run stopped there
    assert not _torn(out) and sorted(r["input_row"] for r in m.read().to_pylist()) == list(range(5))


def test_stage_abort_in_a_pool_worker_stops_every_worker(images, tmp_path, spawned_workers_import_tests):
    table, root = images
    out = tmp_path / "m"
    with pytest.raises(StageAbort, match="device lost"):
        run_stage("tests.engine_stages:AbortsOnSecondShard", {}, table, out, root=root, input_desc=["x"],
                  shard_size=2, workers=2, progress=False)
    m = mf.Manifest.open(out)
    assert 1 <= len(m.parts) < 12 and not _torn(out)
    for i, stats in zip(m.parts, m.stats()):
        assert pq.read_table(m.part_path(i)).num_rows == stats["output_rows"] == 2


def test_a_shard_that_keeps_killing_its_worker_is_named_and_the_others_are_written(images, tmp_path,
                                                                                   spawned_workers_import_tests):
    table, root = images
    out = tmp_path / "m"
    with pytest.raises(RunnerError, match=r"shard\(s\) 2 killed their worker 4 times"):
        run_stage("tests.engine_stages:KillsWorkerOnRow", {"row": 9}, table.slice(0, 16), out, root=root,
                  input_desc=["x"], shard_size=4, workers=2, progress=False)
    assert mf.Manifest.open(out).parts == [0, 1, 3]


def test_workers_that_die_on_start_up_end_the_run_after_a_bounded_number_of_restarts(
        images, tmp_path, monkeypatch, spawned_workers_import_tests):
    monkeypatch.setattr(executors, "MAX_DEATHS_WITHOUT_PROGRESS", 2)
    table, root = images
    with pytest.raises(RunnerError, match="died 3 times in a row without finishing a shard"):
        run_stage("tests.engine_stages:DiesInSetup", {}, table, tmp_path / "m", root=root, input_desc=["x"],
                  shard_size=4, workers=2, progress=False)
    assert mf.Manifest.open(tmp_path / "m").parts == []


# ---------------------------------------------------------------- resume


def _batched_script(out, batch_size):
    return textwrap.dedent(
        f"""
        from tests.test_executors import _images_table
        from vidrd_data.run.runner import run_stage
        table, root = _images_table({str(out.parent / 'imgs' / 'list.csv')!r})
        run_stage("tests.engine_stages:BatchedSlow", {{"batch_size": {batch_size}}}, table, {str(out)!r}, root=root,
                  input_desc=["x"], shard_size=4, workers=2, progress=False)
        """
    )


def _images_table(path):
    return sources.caption_table(path, path_col="image")


def test_a_killed_run_resumes_with_a_smaller_batch_size_to_the_rows_of_a_clean_run(images, tmp_path):
    table, root = images
    run_stage("tests.engine_stages:BatchedSlow", {"batch_size": 4}, table, tmp_path / "clean", root=root,
              input_desc=["x"], shard_size=4, workers=1, progress=False)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _batched_script(out, 4)], env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (mf.is_manifest(out) and mf.Manifest.open(out).parts):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = mf.Manifest.open(out).parts
    assert 0 < len(written) < 6, "the run was not killed part-way; the test proves nothing"
    subprocess.run([sys.executable, "-c", _batched_script(out, 1)], env=env, cwd=REPO, check=True)
    assert _rows(out) == _rows(tmp_path / "clean") and len(_rows(out)) == 24
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_manifest_of_another_schema_version_is_refused_in_one_line(images, tmp_path):
    table, root = images
    out = tmp_path / "m"
    run_stage("images", {}, table.slice(0, 4), out, root=root, input_desc=["x"], progress=False)
    meta = json.loads((out / mf.MANIFEST_FILE).read_text())
    (out / mf.MANIFEST_FILE).write_text(json.dumps({**meta, "schema_version": mf.SCHEMA_VERSION - 1}))
    with pytest.raises(RunnerError, match="schema version") as caught:
        run_stage("images", {}, table.slice(0, 4), out, root=root, input_desc=["x"], progress=False)
    assert "\n" not in str(caught.value)


def test_a_stage_whose_output_columns_changed_does_not_resume_an_older_run(images, tmp_path, monkeypatch):
    from vidrd_data.stages.images import ImageIngest

    table, root = images
    out = tmp_path / "m"
    run_stage("images", {}, table.slice(0, 4), out, root=root, input_desc=["x"], shard_size=2, progress=False)
    monkeypatch.setattr(ImageIngest, "fields", [*ImageIngest.fields, pa.field("added_later", pa.string())])
    with pytest.raises(RunnerError, match="output columns differ") as caught:
        run_stage("images", {}, table.slice(0, 4), out, root=root, input_desc=["x"], shard_size=2, progress=False)
    assert "\n" not in str(caught.value)


def test_speed_options_may_change_on_resume_but_output_options_may_not(images, tmp_path):
    table, root = images
    out = tmp_path / "m"
    run_stage("tests.engine_stages:BatchedSlow", {"batch_size": 4, "min_side": 1}, table, out, root=root,
              input_desc=["x"], shard_size=12, workers=1, progress=False)
    s = run_stage("tests.engine_stages:BatchedSlow", {"batch_size": 2, "min_side": 1}, table, out, root=root,
                  input_desc=["x"], shard_size=12, workers=1, progress=False)
    assert s.parts_skipped == 2
    with pytest.raises(RunnerError, match="--overwrite"):
        run_stage("tests.engine_stages:BatchedSlow", {"batch_size": 4, "min_side": 2}, table, out, root=root,
                  input_desc=["x"], shard_size=12, workers=1, progress=False)


# ---------------------------------------------------------------- slices and streamed inputs


def test_slurm_array_variables_choose_the_slice_and_pin_its_count(images, tmp_path, monkeypatch):
    table, root = images
    out = tmp_path / "m"
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "10")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "11")
    assert slurm_slice(None, None) == (1, 2) and slurm_slice(0, 3) == (0, 3)
    run_stage("images", {}, table, out, root=root, input_desc=["x"], shard_size=5, workers=1, progress=False)
    assert mf.Manifest.open(out).parts == [1, 3]
    with pytest.raises(RunnerError, match="being built in 2 slices"):
        run_stage("images", {}, table, out, root=root, input_desc=["x"], shard_size=5, workers=1, progress=False,
                  shard_index=0, num_shards=3)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "10")
    run_stage("images", {}, table, out, root=root, input_desc=["x"], shard_size=5, workers=1, progress=False)
    assert mf.Manifest.open(out).parts == [0, 1, 2, 3, 4]


def test_a_batch_stream_or_parquet_path_input_gives_the_manifest_of_the_table(images, tmp_path):
    table, root = images
    run_stage("images", {}, table, tmp_path / "table", root=root, input_desc=["x"], shard_size=5, workers=1,
              progress=False)
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7))
    run_stage("images", {}, reader, tmp_path / "stream", root=root, input_desc=["x"], shard_size=5, workers=1,
              progress=False)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=3)
    # resuming the table's manifest from the same rows, chunked otherwise, is accepted: the hash is of the rows
    s = run_stage("images", {}, tmp_path / "in.parquet", tmp_path / "table", root=root, input_desc=["x"],
                  shard_size=5, workers=1, progress=False)
    assert s.parts_skipped == 5
    assert _rows(tmp_path / "stream") == _rows(tmp_path / "table")
    inputs = pq.ParquetFile(tmp_path / "table" / mf.INPUTS_FILE)
    assert [inputs.metadata.row_group(g).num_rows for g in range(inputs.metadata.num_row_groups)] == [5] * 4 + [4]
    assert [r["input_row"] for r in read_rows(str(tmp_path / "table" / mf.INPUTS_FILE), 3, 12)] == list(range(3, 12))


# ---------------------------------------------------------------- Ray


def test_ray_actors_load_the_model_once_each_serve_every_shard_and_stop_on_stage_abort(images, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is an optional extra (pip install 'vidrd[ray]')")
    os.environ["PYTHONPATH"] = str(REPO)  # Ray's workers import the test stages from the repository
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        table, root = images
        params = {"device": "auto", "setups": str(tmp_path / "setups")}
        run_stage("tests.engine_stages:RecordsPlacement", params, table, tmp_path / "m", root=root,
                  input_desc=["x"], shard_size=2, executor="ray", progress=False)
        with pytest.raises(StageAbort, match="device lost"):
            run_stage("tests.engine_stages:AbortsOnSecondShard", {}, table, tmp_path / "aborted", root=root,
                      input_desc=["x"], shard_size=2, executor="ray", progress=False)
    finally:
        ray.shutdown()
    placements = _placements(tmp_path / "m")
    assert len(placements) == 24
    assert len(list((tmp_path / "setups").iterdir())) == 2  # 2 actors, 12 shards: loaded twice, not 12 times
    assert {gpu for gpu, _ in placements} == {"0", "1"}  # Ray pinned each actor to its declared GPU
    # Ray kills actors asynchronously: one may leave a temp file after the run returned (the next run deletes
    # it); what must hold is that the run stopped and every part it calls complete is whole
    m = mf.Manifest.open(tmp_path / "aborted")
    assert len(m.parts) < 12
    for i, stats in zip(m.parts, m.stats()):
        assert pq.read_table(m.part_path(i)).num_rows == stats["output_rows"] == 2
