"""The trainer's data side: manifest rows → samples → batches by kind, deterministic for exact resume."""

import os
from collections import Counter

import numpy as np
import pytest
import torch

from tests.train_corpus import CORRUPT_ID, write_corpus
from vidrd_io.images import open_image
from vidrd_data.ops.motion import render_pseudo_video
from vidrd_model.data import (
    IMAGE,
    VIDEO,
    BatchPlan,
    DataError,
    ManifestClips,
    clip_times,
    collate,
    kind_pools,
    make_loader,
    read_rows,
    resize_center_crop,
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="module")
def rows(manifest):
    return read_rows([str(manifest)])


def _index(table, sample_id: str) -> int:
    return table["sample_id"].to_pylist().index(sample_id)


def test_read_rows_keeps_ok_captioned_train_rows_and_counts_the_rest(rows):
    table, left_out = rows
    assert Counter(table["kind"].to_pylist()) == {"image": 4, "pseudo_video": 4, "video_clip": 4}
    assert left_out == {"status failed": 1, "split not train": 1, "no caption": 1}
    assert all(os.path.isabs(path) for path in table["path"].to_pylist())  # resolved against the manifest's root


def test_samples_are_frames_at_resolution_in_unit_range_with_one_frame_for_images(rows):
    table, _ = rows
    dataset = ManifestClips(table, resolution=24, num_frames=3, uncond_prob=0.0)
    for sample_id, frames in (("image-0", 1), ("pseudo-0", 3), ("clip-0", 3)):
        sample = dataset[(_index(table, sample_id), 7)]
        pixels = sample["pixel_values"]
        assert pixels.shape == (frames, 3, 24, 24) and pixels.dtype == torch.float32
        assert pixels.min() >= -1.0 and pixels.max() <= 1.0 and pixels.std() > 0.05
        assert sample["caption"] and sample["skipped"] == []


def test_pseudo_video_samples_are_the_pseudo_video_stage_rendering(rows):
    table, _ = rows
    row = table.slice(_index(table, "pseudo-1"), 1).to_pylist()[0]
    dataset = ManifestClips(table, resolution=24, num_frames=4, uncond_prob=0.0)
    expected = render_pseudo_video(open_image(row["path"]), row["motion"], (32, 24), 4)  # short side 24, same aspect
    expected = resize_center_crop(torch.from_numpy(expected).permute(0, 3, 1, 2), 24).float() / 127.5 - 1
    assert torch.equal(dataset[(_index(table, "pseudo-1"), 0)]["pixel_values"], expected)


def test_consecutive_frames_of_a_clip_differ_as_the_square_moves(rows):
    table, _ = rows
    pixels = ManifestClips(table, resolution=32, num_frames=4, sample_fps=8.0)[(_index(table, "clip-1"), 3)]
    steps = (pixels["pixel_values"][1:] - pixels["pixel_values"][:-1]).abs().mean(dim=(1, 2, 3))
    assert (steps > 0.005).all()


def test_clip_times_start_at_random_inside_the_clip_for_training_and_centred_for_validation():
    rng = np.random.default_rng(0)
    starts = [clip_times(1.0, 4.0, 8.0, 8, 4.0, rng)[0] for _ in range(200)]
    last_frame_start = 4.0 - 1 / 8
    assert min(starts) >= 1.0 and max(starts) + 7 / 4.0 <= last_frame_start + 1e-9
    assert max(starts) - min(starts) > 0.5  # really random
    centred = clip_times(1.0, 4.0, 8.0, 8, 4.0, None)
    assert centred[0] - 1.0 == pytest.approx(last_frame_start - centred[-1])
    assert np.allclose(np.diff(centred), 0.25)


def test_a_clip_shorter_than_the_span_spreads_its_frames_over_the_whole_clip():
    times = clip_times(0.0, 1.0, 8.0, 8, 2.0, np.random.default_rng(0))
    assert times[0] == 0.0 and times[-1] == pytest.approx(1.0 - 1 / 8) and np.all(np.diff(times) > 0)


def test_captions_drop_to_empty_at_uncond_prob_in_training_only(rows):
    table, _ = rows
    index = _index(table, "image-2")
    train = ManifestClips(table, resolution=16, uncond_prob=0.3)
    dropped = np.mean([train[(index, draw)]["caption"] == "" for draw in range(300)])
    assert 0.22 < dropped < 0.38
    validation = ManifestClips(table, resolution=16, uncond_prob=0.3, train=False)
    assert all(validation[(index, draw)]["caption"] for draw in range(20))


def test_undecodable_row_is_replaced_by_a_row_of_its_kind_and_reported(rows):
    table, _ = rows
    dataset = ManifestClips(table, resolution=16, num_frames=2, uncond_prob=0.0)
    sample = dataset[(_index(table, CORRUPT_ID), 5)]
    assert [sample_id for sample_id, _ in sample["skipped"]] == [CORRUPT_ID]
    assert sample["sample_id"] != CORRUPT_ID and sample["sample_id"].startswith(("clip-", "pseudo-"))
    assert sample["pixel_values"].shape == (2, 3, 16, 16)
    batch = collate([sample, dataset[(_index(table, "clip-0"), 6)]])
    assert batch["pixel_values"].shape == (2, 2, 3, 16, 16) and len(batch["skipped"]) == 1


def _take(plan, n):
    batches = iter(plan)
    return [next(batches) for _ in range(n)]


def test_batch_plan_from_step_k_continues_exactly_where_step_k_of_a_full_run_is(rows):
    pools = kind_pools(rows[0])
    sizes = {VIDEO: 2, IMAGE: 3}
    full = _take(BatchPlan(pools, sizes, 0.4, seed=3), 40)
    assert _take(BatchPlan(pools, sizes, 0.4, seed=3, start_step=17), 23) == full[17:]
    assert _take(BatchPlan(pools, sizes, 0.4, seed=4), 40) != full


def test_batches_hold_one_kind_at_its_batch_size_and_images_come_at_image_ratio(rows):
    table, _ = rows
    kinds = np.array(["image" if k == "image" else "video" for k in table["kind"].to_pylist()])
    plan = BatchPlan(kind_pools(table), {VIDEO: 2, IMAGE: 3}, 0.25, seed=0)
    batches = _take(plan, 2000)
    batch_kinds = [set(kinds[[row for row, _ in keys]]) for keys in batches]
    assert all(len(k) == 1 for k in batch_kinds)
    assert all(len(keys) == (3 if k == {"image"} else 2) for keys, k in zip(batches, batch_kinds))
    assert 0.22 < np.mean([k == {"image"} for k in batch_kinds]) < 0.28
    draws = [draw for keys in batches for _, draw in keys]
    assert len(set(draws)) == len(draws)  # every sample its own randomness


def test_unweighted_epochs_visit_every_row_once(rows):
    table, _ = rows
    images = kind_pools(table)[IMAGE]
    assert images.probs is None
    plan = BatchPlan({IMAGE: images}, {IMAGE: 2}, 1.0, seed=0)
    epoch = [row for keys in _take(plan, 2) for row, _ in keys]
    assert sorted(epoch) == sorted(images.rows.tolist())


def test_sources_are_drawn_in_proportion_to_their_weight_whatever_their_size(rows):
    table, _ = rows
    video = kind_pools(table)[VIDEO]  # "stills" 4 pseudo-videos at weight 1, "clips" 4 clips at weight 2
    sources = np.array(table["source"].to_pylist())
    plan = BatchPlan({VIDEO: video}, {VIDEO: 4}, 0.0, seed=0)
    drawn = [sources[row] for keys in _take(plan, 1500) for row, _ in keys]
    share = np.mean([s.endswith(":clips") for s in drawn])
    assert 0.63 < share < 0.70  # 2 / (2 + 1)


def test_processes_get_different_rows_of_the_same_kind_at_each_step(rows):
    pools = kind_pools(rows[0])
    sizes = {VIDEO: 2, IMAGE: 2}
    rank0 = _take(BatchPlan(pools, sizes, 0.5, seed=0, world_size=2, rank=0), 50)
    rank1 = _take(BatchPlan(pools, sizes, 0.5, seed=0, world_size=2, rank=1), 50)
    kinds = np.array(["image" if k == "image" else "video" for k in rows[0]["kind"].to_pylist()])
    for a, b in zip(rank0, rank1):
        assert {kinds[r] for r, _ in a} == {kinds[r] for r, _ in b}
        assert not {d for _, d in a} & {d for _, d in b}


def test_image_batches_without_image_rows_are_refused(rows):
    table, _ = rows
    videos_only = table.filter(np.array([k != "image" for k in table["kind"].to_pylist()]))
    with pytest.raises(DataError, match="no usable image rows"):
        BatchPlan(kind_pools(videos_only), {VIDEO: 1, IMAGE: 1}, 0.5, seed=0)


def test_worker_processes_yield_the_same_batches_as_the_main_process(rows):
    table, _ = rows
    dataset = ManifestClips(table, resolution=16, num_frames=2)
    plan = BatchPlan(kind_pools(table), {VIDEO: 2, IMAGE: 2}, 0.5, seed=1)
    inline = iter(make_loader(dataset, plan, num_workers=0))
    workers = iter(make_loader(dataset, plan, num_workers=2))
    for _ in range(6):
        a, b = next(inline), next(workers)
        assert a["sample_ids"] == b["sample_ids"] and a["captions"] == b["captions"]
        assert torch.equal(a["pixel_values"], b["pixel_values"])


def _split_into_parts(manifest, out, n_parts: int):
    """Copy a one-part manifest into `n_parts` parts (as a stage with a small shard size writes it)."""
    import pyarrow.parquet as pq

    from vidrd_data import manifest as mf
    from vidrd_io import fs

    m = mf.Manifest.open(manifest)
    table = m.read()
    out.mkdir()
    meta = dict(m.meta, num_parts=n_parts, root=os.path.relpath(m.root, out))
    fs.write_json_atomic(out / mf.MANIFEST_FILE, meta)
    size = -(-table.num_rows // n_parts)
    for i in range(n_parts):
        chunk = table.slice(i * size, size)
        pq.write_table(chunk, out / mf.part_name(i))
        fs.write_json_atomic(out / mf.stats_name(i), mf.part_stats(chunk, chunk.num_rows, 1.0))
    return out


def test_read_rows_refuses_a_manifest_with_a_missing_part_naming_it_unless_allow_partial(manifest, tmp_path, caplog):
    from vidrd_data.manifest import IncompleteManifest, stats_name

    seven = _split_into_parts(manifest, tmp_path / "seven", 7)
    full, _ = read_rows([str(seven)])
    os.unlink(seven / stats_name(3))  # a part without its stats file is not complete
    with pytest.raises(IncompleteManifest, match=r"seven is incomplete: part 3 of 7 missing; part 3 has no stats file"):
        read_rows([str(seven)])
    partial, _ = read_rows([str(seven)], allow_partial=True)
    assert 0 < partial.num_rows < full.num_rows
    assert "reading the 6 complete parts anyway (--allow-partial)" in caplog.text


def test_vidrd_train_on_a_manifest_missing_one_of_7_parts_exits_2_and_trains_nothing(manifest, tmp_path, capsys,
                                                                                     tmp_path_factory, caplog):
    from cli.train import main
    from tests.conftest import assert_one_line_error
    from tests.tiny_sd import tiny_stable_diffusion

    seven = _split_into_parts(manifest, tmp_path / "seven", 7)
    os.unlink(seven / "part-00005.parquet")
    os.unlink(seven / "part-00005.stats.json")
    argv = ["train", "--pretrained-model", tiny_stable_diffusion(tmp_path_factory), "--manifests", seven, "--resolution", 16,
            "--num-frames", 2, "--batch-size", 2, "--image-batch-size", 2, "--num-workers", 0, "--max-steps", 1,
            "--checkpoint-every", 1, "--no-progress", "--no-ema", "--seed", 1]
    code = main([str(a) for a in argv + ["--output-dir", tmp_path / "refused"]])
    line = assert_one_line_error(code, capsys.readouterr().err, "vidrd-train")
    assert "seven is incomplete: part 5 of 7 missing" in line and "--allow-partial" in line
    assert not (tmp_path / "refused" / "log.csv").exists() and not list((tmp_path / "refused").glob("checkpoint*"))
    code = main([str(a) for a in argv + ["--output-dir", tmp_path / "partial", "--allow-partial"]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "--allow-partial" in r.getMessage()]
    assert warning and "seven is incomplete: part 5 of 7 missing; reading the 6 complete parts anyway" in warning[0]
    assert (tmp_path / "partial" / "log.csv").exists()


# ---------------------------------------------------------------- clip reading that seeks


def _long_video(path, seconds: int = 12, fps: float = 8.0) -> str:
    """An mp4 whose every frame differs (a bar that moves and a frame-numbered shade), keyframes 2 s apart."""
    from vidrd_io.video import write_mp4

    n = int(seconds * fps)
    frames = np.zeros((n, 32, 48, 3), np.uint8)
    for i in range(n):
        frames[i, :, :, 0] = (i * 5) % 256
        frames[i, 8:24, i % 40: i % 40 + 8, 1] = 255
    write_mp4(path, frames, fps)
    return str(path)


def _clips_of(path: str, starts, frames: int = 5, fps: float = 4.0) -> list:
    return [s + np.arange(frames) / fps for s in starts]


@pytest.mark.parametrize("name", ["testvideo.mp4", "fades.mp4", "counter.mp4", "generated"])
def test_clips_read_through_open_readers_are_the_frames_a_fresh_open_gives(name, tmp_path):
    from tests.conftest import shared_video
    from vidrd_io.video import read_frames
    from vidrd_model.data import OpenVideos

    path = _long_video(tmp_path / "long.mp4") if name == "generated" else str(shared_video(name))
    starts = [1.5, 0.0, 1.1, 0.3] if name == "counter.mp4" else [5.0, 0.2, 7.3, 6.9]  # seeks back and forth
    videos = OpenVideos(size=2)
    for times in _clips_of(path, starts, frames=3):
        assert np.array_equal(videos.read(path, times), read_frames(path, times))
    assert videos.opened == 1


def test_open_readers_are_an_lru_and_a_forked_or_unpickled_copy_opens_its_own(tmp_path):
    import pickle

    from vidrd_model.data import OpenVideos

    paths = [_long_video(tmp_path / f"v{i}.mp4", seconds=2) for i in range(3)]
    videos = OpenVideos(size=2)
    for path in (paths[0], paths[1], paths[0], paths[2], paths[0], paths[1]):
        videos.read(path, [0.5])
    assert videos.opened == 4 and list(videos.readers) == [paths[0], paths[1]]  # v1 evicted by v2, reopened
    copy = pickle.loads(pickle.dumps(videos))
    assert copy.readers == {} and copy.size == 2
    videos.pid = -1  # as a forked worker sees its parent's readers
    videos.read(paths[0], [0.5])
    assert videos.opened == 1 and list(videos.readers) == [paths[0]]


def test_a_worker_reads_many_clips_of_a_long_video_with_one_open(rows, tmp_path):
    table, _ = rows
    dataset = ManifestClips(table, resolution=24, num_frames=3, uncond_prob=0.0)
    clip = _index(table, "clip-1")
    for draw in range(6):
        dataset[(clip, draw)]
    assert dataset.videos.opened == 1
    reopen = ManifestClips(table, resolution=24, num_frames=3, uncond_prob=0.0, open_videos=0)
    for draw in range(3):
        assert torch.equal(reopen[(clip, draw)]["pixel_values"], dataset[(clip, draw)]["pixel_values"])
    assert reopen.videos.opened == 3
