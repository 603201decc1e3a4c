"""The UCF-101 protocol's bookkeeping: split files, class allocation, prompts, real clips; resumable generation."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from vidrd_model.eval import generate as gen
from vidrd_model.eval.ucf101 import (allocate, class_distribution, load_class_prompts, locate, read_class_index,
                                     read_train_list, real_videos)

# classInd.txt of the official UCF101TrainTestSplits-RecognitionTask.zip, in its order
UCF101_CLASSES = [
    "ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching", "BaseballPitch",
    "Basketball", "BasketballDunk", "BenchPress", "Biking", "Billiards", "BlowDryHair", "BlowingCandles",
    "BodyWeightSquats", "Bowling", "BoxingPunchingBag", "BoxingSpeedBag", "BreastStroke", "BrushingTeeth",
    "CleanAndJerk", "CliffDiving", "CricketBowling", "CricketShot", "CuttingInKitchen", "Diving", "Drumming",
    "Fencing", "FieldHockeyPenalty", "FloorGymnastics", "FrisbeeCatch", "FrontCrawl", "GolfSwing", "Haircut",
    "Hammering", "HammerThrow", "HandstandPushups", "HandstandWalking", "HeadMassage", "HighJump", "HorseRace",
    "HorseRiding", "HulaHoop", "IceDancing", "JavelinThrow", "JugglingBalls", "JumpingJack", "JumpRope", "Kayaking",
    "Knitting", "LongJump", "Lunges", "MilitaryParade", "Mixing", "MoppingFloor", "Nunchucks", "ParallelBars",
    "PizzaTossing", "PlayingCello", "PlayingDaf", "PlayingDhol", "PlayingFlute", "PlayingGuitar", "PlayingPiano",
    "PlayingSitar", "PlayingTabla", "PlayingViolin", "PoleVault", "PommelHorse", "PullUps", "Punch", "PushUps",
    "Rafting", "RockClimbingIndoor", "RopeClimbing", "Rowing", "SalsaSpin", "ShavingBeard", "Shotput",
    "SkateBoarding", "Skiing", "Skijet", "SkyDiving", "SoccerJuggling", "SoccerPenalty", "StillRings",
    "SumoWrestling", "Surfing", "Swing", "TableTennisShot", "TaiChi", "TennisSwing", "ThrowDiscus",
    "TrampolineJumping", "Typing", "UnevenBars", "VolleyballSpiking", "WalkingWithDog", "WallPushups",
    "WritingOnBoard", "YoYo",
]


def write_ucf(root, clips_per_class, official_layout=True, listed=None):
    """A UCF-101-shaped folder of empty clip files; `listed` (default: all) go into trainlist01.txt."""
    videos = root / "UCF-101" if official_layout else root
    lists = root / "ucfTrainTestlist" if official_layout else root
    lists.mkdir(parents=True, exist_ok=True)
    classes = list(clips_per_class)
    lines = []
    for number, (cls, count) in enumerate(clips_per_class.items(), start=1):
        (videos / cls).mkdir(parents=True)
        for g in range(count):
            rel = f"{cls}/v_{cls}_g{g + 8:02d}_c01.avi"
            (videos / rel).write_bytes(b"")
            if listed is None or rel in listed:
                lines.append(f"{rel} {number}")
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, start=1)))
    (lists / "trainlist01.txt").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------------------------- split files


def test_class_index_is_read_in_class_number_order(tmp_path):
    (tmp_path / "classInd.txt").write_text("2 ApplyLipstick\n1 ApplyEyeMakeup\n\n3 Archery\n")
    assert read_class_index(tmp_path / "classInd.txt") == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]


@pytest.mark.parametrize("text, needle", [("1 A\nx B\n", "line 2 is not 'NUMBER ClassName'"),
                                          ("1 A\n3 B\n", "not 1..2")])
def test_malformed_class_index_is_refused_naming_the_problem(tmp_path, text, needle):
    (tmp_path / "classInd.txt").write_text(text)
    with pytest.raises(ValueError, match=needle):
        read_class_index(tmp_path / "classInd.txt")


def test_train_list_maps_class_numbers_to_names_and_unnumbered_lines_to_their_folder(tmp_path):
    (tmp_path / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c01.avi\n")
    assert read_train_list(tmp_path / "trainlist01.txt", ["ApplyEyeMakeup", "Archery"]) == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup"), ("Archery/v_Archery_g08_c01.avi", "Archery")]
    (tmp_path / "bad.txt").write_text("Archery/v_Archery_g08_c01.avi 7\n")
    with pytest.raises(ValueError, match="class number 7 is not in 1..2"):
        read_train_list(tmp_path / "bad.txt", ["ApplyEyeMakeup", "Archery"])


@pytest.mark.parametrize("official_layout", [True, False])
def test_class_distribution_counts_train_split_1_in_either_layout(tmp_path, official_layout):
    listed = {"Archery/v_Archery_g08_c01.avi", "Biking/v_Biking_g08_c01.avi", "Biking/v_Biking_g09_c01.avi"}
    write_ucf(tmp_path, {"Archery": 3, "Biking": 2, "Rowing": 1}, official_layout, listed)
    layout = locate(tmp_path)
    assert layout.videos_root == (tmp_path / "UCF-101" if official_layout else tmp_path)
    assert class_distribution(layout) == {"Archery": 1, "Biking": 2, "Rowing": 0}


def test_without_split_files_classes_are_the_folders_sorted_case_insensitively(tmp_path):
    for cls, n in {"HammerThrow": 2, "Hammering": 1, "apply": 1}.items():
        (tmp_path / cls).mkdir()
        for g in range(n):
            (tmp_path / cls / f"v_{cls}_g{g:02d}_c01.avi").write_bytes(b"")
    layout = locate(tmp_path)
    assert layout.class_index is None and layout.train_list is None
    assert class_distribution(layout) == {"apply": 1, "Hammering": 1, "HammerThrow": 2}


def test_real_videos_are_the_listed_clips_labelled_and_a_missing_one_is_an_error(tmp_path):
    write_ucf(tmp_path, {"Archery": 2, "Biking": 1}, listed={"Archery/v_Archery_g09_c01.avi",
                                                           "Biking/v_Biking_g08_c01.avi"})
    refs = real_videos(locate(tmp_path))
    assert [(r.key, r.label) for r in refs] == [("Archery/v_Archery_g09_c01.avi", "Archery"),
                                                ("Biking/v_Biking_g08_c01.avi", "Biking")]
    assert refs[0].path == str((tmp_path / "UCF-101" / refs[0].key).resolve())
    (tmp_path / "UCF-101" / "Biking" / "v_Biking_g08_c01.avi").unlink()
    with pytest.raises(ValueError, match="1 of 2 listed clips are missing .* e.g. Biking/v_Biking_g08_c01.avi"):
        real_videos(locate(tmp_path))


# ---------------------------------------------------------------------------------------------- allocation


@pytest.mark.parametrize("num_videos", [10_000, 2_048, 2_020, 101, 7, 1])
def test_allocation_sums_to_n_and_each_class_is_within_one_video_of_its_share(num_videos):
    counts = dict(zip(UCF101_CLASSES, np.random.default_rng(0).integers(70, 122, size=101).tolist()))
    allocation = allocate(counts, num_videos)
    assert list(allocation) == UCF101_CLASSES and sum(allocation.values()) == num_videos
    total = sum(counts.values())
    assert all(abs(allocation[c] - num_videos * counts[c] / total) < 1 for c in counts)


def test_allocation_is_exact_when_shares_are_whole_and_ties_go_to_the_class_listed_first():
    assert allocate({"a": 2, "b": 6}, 4) == {"a": 1, "b": 3}
    assert allocate({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}
    assert allocate({"a": 1, "b": 1, "c": 1}, 4) == {"a": 2, "b": 1, "c": 1}
    assert allocate({"a": 0, "b": 3}, 5) == {"a": 0, "b": 5}


def test_allocation_refuses_no_videos_or_no_clips():
    with pytest.raises(ValueError, match="number of videos must be ≥ 1"):
        allocate({"a": 1}, 0)
    with pytest.raises(ValueError, match="not all 0"):
        allocate({"a": 0}, 3)


# ---------------------------------------------------------------------------------------------- prompts


def test_shipped_prompts_cover_the_101_official_classes_in_class_index_order():
    prompts = load_class_prompts(UCF101_CLASSES)
    assert list(prompts) == UCF101_CLASSES
    assert len(set(prompts.values())) == 101 and all(len(p.split()) >= 4 for p in prompts.values())


def test_prompts_file_missing_classes_is_one_line_naming_them(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"Archery": "an archer"}))
    with pytest.raises(ValueError) as info:
        load_class_prompts(["Archery", "Biking", "Rowing"], path)
    assert str(info.value) == f"--class-prompts {path}: no prompt for 2 of 3 classes: Biking, Rowing"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_class_prompts(["Archery"], path)


# ---------------------------------------------------------------------------------------------- generation


def test_plan_orders_videos_class_by_class_seeding_video_i_with_seed_plus_i():
    plan = gen.GenerationPlan({"Archery": 2, "Biking": 0, "Rowing": 1}, {"Archery": "an archer", "Biking": "a bike",
                              "Rowing": "a boat"}, 42, gen.SamplerSettings(), {"sha256": {}})
    assert [(i.stem, i.prompt, i.seed) for i in plan.items()] == [
        ("00000_Archery", "an archer", 42), ("00001_Archery", "an archer", 43), ("00002_Rowing", "a boat", 44)]
    assert plan.sampler.frames_per_video == 16 and plan.as_dict()["prompts"] == {"Archery": "an archer",
                                                                                  "Rowing": "a boat"}


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from tests.tiny_sd import perturb_temporal_layers_, tiny_stable_diffusion
    from vidrd_model.pipeline import VidRDPipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads contend on a shared 2-core machine
    pipe = VidRDPipeline.from_stable_diffusion(str(tiny_stable_diffusion(tmp_path_factory)))
    perturb_temporal_layers_(pipe.unet, seed=1)
    yield pipe
    torch.set_num_threads(threads)


FAST = gen.SamplerSettings(num_clips=2, num_frames=4, overlap_frames=2, overlap="drop", num_inference_steps=2, height=16,
                          width=16)


def test_generation_resumes_skipping_videos_whose_mp4_and_json_exist(tiny_pipe, tmp_path):
    from vidrd_io.video import probe

    plan = gen.GenerationPlan({"Archery": 2, "Rowing": 1}, {"Archery": "an archer", "Rowing": "a boat"}, 7, FAST,
                              {"sha256": {"unet": "0" * 64}})
    gen.open_folder(tmp_path, plan)
    first = gen.generate_videos(tiny_pipe, plan, tmp_path, progress=False)
    assert (first.written, first.skipped) == (3, 0)
    record = json.loads((tmp_path / "00002_Rowing.json").read_text())
    assert (record["prompt"], record["class"], record["seed"], record["num_inference_steps"]) == ("a boat", "Rowing",
                                                                                                 9, 2)
    assert record["frames"] == probe(tmp_path / "00002_Rowing.mp4").num_frames == 6
    kept = (tmp_path / "00000_Archery.mp4").stat().st_mtime_ns
    video = (tmp_path / "00001_Archery.mp4").read_bytes()
    (tmp_path / "00001_Archery.json").unlink()  # as if killed between the mp4 and its JSON
    gen.open_folder(tmp_path, plan)
    second = gen.generate_videos(tiny_pipe, plan, tmp_path, progress=False)
    assert (second.written, second.skipped) == (1, 2)
    assert (tmp_path / "00000_Archery.mp4").stat().st_mtime_ns == kept
    assert (tmp_path / "00001_Archery.mp4").read_bytes() == video  # same seed, same video
    assert gen.missing_videos(tmp_path, gen.read_plan(tmp_path)) == []


def test_generating_into_a_folder_planned_with_other_settings_is_refused(tmp_path):
    prompts = {"Archery": "an archer"}
    gen.open_folder(tmp_path, gen.GenerationPlan({"Archery": 2}, prompts, 42, FAST, {"sha256": {"u": "1"}}))
    gen.open_folder(tmp_path, gen.GenerationPlan({"Archery": 2}, prompts, 42, FAST, {"sha256": {"u": "1"},
                                                                                      "model": "/elsewhere"}))
    other = gen.GenerationPlan({"Archery": 2}, prompts, 42, gen.SamplerSettings(num_inference_steps=3, height=16,
                                                                                width=16), {"sha256": {"u": "1"}})
    with pytest.raises(ValueError, match=r"other settings \(sampler.frames_per_video 6 -> 16; .*"
                                         r"sampler.num_inference_steps 2 -> 3.*delete this one"):
        gen.open_folder(tmp_path, other)


def test_a_folder_ignores_decode_chunk_size_but_not_the_crf(tmp_path):
    prompts = {"Archery": "an archer"}
    gen.open_folder(tmp_path, gen.GenerationPlan({"Archery": 2}, prompts, 42, FAST, {"sha256": {}}))
    assert gen.read_plan(tmp_path)["crf"] == gen.EVAL_CRF == 10
    chunked = dataclasses.replace(FAST, decode_chunk_size=2)  # memory only: the same frames
    gen.open_folder(tmp_path, gen.GenerationPlan({"Archery": 2}, prompts, 42, chunked, {"sha256": {}}))
    with pytest.raises(ValueError, match=r"other settings \(crf 10 -> 23\)"):
        gen.open_folder(tmp_path, gen.GenerationPlan({"Archery": 2}, prompts, 42, FAST, {"sha256": {}}, crf=23))


def test_only_old_temporary_files_of_the_plan_are_removed(tmp_path):
    import os
    import time

    plan = gen.GenerationPlan({"Archery": 2}, {"Archery": "an archer"}, 42, FAST, {"sha256": {}})
    names = [".00000_Archery.mp4.tmp.mp4", ".00001_Archery.json.k2j3h4.tmp", ".plan.json.x1y2.tmp",
             ".00000_Archery.json.fresh.tmp", ".00007_Rowing.mp4.tmp.mp4", ".notes.txt.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - 2 * gen.STALE_TEMP_SECONDS
    for name in names:
        if "fresh" not in name:
            os.utime(tmp_path / name, (old, old))
    removed = gen.remove_stale_temps(tmp_path, plan)
    assert sorted(p.name for p in removed) == sorted(names[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])  # a running write's, and not ours
