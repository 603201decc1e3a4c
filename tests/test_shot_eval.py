"""Shot-boundary evaluation: the public sets' annotation formats, PySceneDetect's scoring rules, montages with
known truth, and the `vidrd-data shot-eval` command."""

import json

import numpy as np
import pytest

from cli.data import main
from tests.conftest import assert_one_line_error, run_cli
from vidrd_data.inspection.shot_eval import ShotTruth, montage, pair_videos, read_truth, score, write_montage


def test_shot_list_of_bbc_and_rai_gives_hard_cuts_where_shots_meet_and_gradual_ones_in_gaps(tmp_path):
    path = tmp_path / "ep.txt"
    path.write_text("0 99\n100 180\n191\t250\n251 300\n")  # frames 181–190 belong to no shot: a dissolve
    truth = read_truth(path)
    assert truth.hard_cuts == [100, 251] and truth.gradual == [(181, 190)]


def test_pyscenedetect_cut_list_reads_its_second_column_as_the_cut_frame(tmp_path):
    path = tmp_path / "01-scenes.txt"
    path.write_text("0\t120\t0:00:04.8\n1\t300\t0:00:12\n")
    assert read_truth(path) == ShotTruth([120, 300])


def test_clipshots_json_splits_cuts_from_gradual_transitions(tmp_path):
    path = tmp_path / "clipshots.json"
    path.write_text(json.dumps({"a.mp4": {"frame_num": 500, "transitions": [[99, 100], [200, 215]]}}))
    assert read_truth(path) == {"a.mp4": ShotTruth([100], [(201, 214)])}


def test_scoring_matches_gradual_intervals_first_then_hard_cuts_one_to_one_within_tolerance():
    truth = ShotTruth([100, 200], [(300, 310)])
    counts = score([99, 101, 203, 302, 305, 400], truth, tolerance=2)
    assert (counts["gradual"].matched, counts["gradual"].false_positives, counts["gradual"].missed) == (1, 1, 0)
    assert (counts["hard"].matched, counts["hard"].false_positives, counts["hard"].missed) == (1, 3, 1)
    assert counts["all"].f1 == pytest.approx(2 * 2 / (2 * 2 + 4 + 1))
    assert score([203], truth, tolerance=3)["hard"].matched == 1  # the tolerance is what makes 203 match 200


def test_montage_truth_marks_each_transition_where_its_frames_are():
    frames, truth = montage(1, ["cut", "fade", "dissolve"], fps=10.0, size=(18, 32), gradual_frames=6)
    assert truth.hard_cuts and len(truth.gradual) == 2
    cut = truth.hard_cuts[0]
    assert np.abs(frames[cut].astype(int) - frames[cut - 1]).mean() > 20  # a jump
    start, end = truth.gradual[0]
    assert end - start == 5 and frames[start : end + 1].mean() < frames[start - 1].mean()  # darker: a fade
    assert len(frames) > truth.gradual[1][1]


def test_shot_eval_command_prints_each_detector_beside_pyscenedetect(tmp_path, capsys):
    write_montage(tmp_path / "m.mp4", 2, ["cut", "cut"], size=(48, 80), shot_seconds=(1.0, 1.4))
    assert main(["shot-eval", str(tmp_path), "--detectors", "histogram,content", "--tolerance", "1"]) == 0
    printed = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in printed.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"histogram", "content", "pyscenedetect"}
    assert "| 1.000 | 1.000 | 1.000 |" in rows["content"]  # two hard cuts in a clean montage: both found


def test_shot_eval_without_annotations_or_with_bad_options_exits_2_in_one_line(tmp_path, capsys):
    (tmp_path / "v.mp4").write_bytes(b"")
    assert main(["shot-eval", str(tmp_path)]) == 2
    assert "has annotations" in capsys.readouterr().err
    assert main(["shot-eval", str(tmp_path), "--detectors", "sift"]) == 2
    assert main(["shot-eval", str(tmp_path), "--format", "xml"]) == 2
    with pytest.raises(ValueError, match="no video"):
        pair_videos(tmp_path)


@pytest.mark.parametrize("device, needle", [("bogus", "unknown device 'bogus'"),
                                            ("cuda", "CUDA is not available")])
def test_shot_eval_refuses_an_unknown_or_absent_device_in_one_line(tmp_path, capsys, monkeypatch, device, needle):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    write_montage(tmp_path / "m.mp4", 2, ["cut", "cut"], size=(48, 80), shot_seconds=(1.0, 1.4))
    code, _, err = run_cli(main, capsys, "shot-eval", tmp_path, "--detectors", "histogram", "--device", device)
    assert needle in assert_one_line_error(code, err, "vidrd-data")
