"""Receipts (one id over everything a number depends on) and the protocol check beside each UCF-101 row."""

import pytest

from vidrd_model.eval.receipt import keys_digest, make_receipt, verify
from vidrd_model.eval.report import protocol_deviations


def test_receipt_id_ignores_key_order_and_changes_with_any_field():
    first = make_receipt(metric="fvd", generated={"count": 10, "fps": 8.0}, seeds=[1, 2])
    same = make_receipt(seeds=[1, 2], generated={"fps": 8.0, "count": 10}, metric="fvd")
    assert first["id"] == same["id"] and len(first["id"]) == 12 and first["sha256"].startswith(first["id"])
    for changed in (dict(metric="is"), dict(generated={"count": 11, "fps": 8.0}), dict(seeds=[1, 3])):
        assert make_receipt(**{**dict(metric="fvd", generated={"count": 10, "fps": 8.0}, seeds=[1, 2]),
                               **changed})["id"] != first["id"]


def test_an_edited_receipt_no_longer_verifies():
    receipt = make_receipt(metric="fvd", sampler={"guidance_scale": 10.0})
    assert verify(receipt)
    assert not verify({**receipt, "sampler": {"guidance_scale": 7.5}})
    assert keys_digest(["b", "a"]) == keys_digest(["a", "b"]) != keys_digest(["a"])


def _result(**sampler):
    base = {"num_clips": 1, "num_frames": 16, "overlap": "keep", "guidance_scale": 10.0, "negative_prompt": "watermark",
            "num_inference_steps": 50, "width": 256, "height": 256, "frames_per_video": 16}
    return {"generation": {"sampler": {**base, **sampler}}, "settings": {"num_frames": 16, "match_fps": 8.0},
            "protocol": {"num_videos": 10_000, "real_split": "trainlist01"}, "standin_extractors": False}


def test_the_paper_protocol_as_established_has_no_deviations():
    assert protocol_deviations(_result()) == []


def test_the_old_defaults_are_each_named_as_a_deviation():
    """The review's findings: 3 clips joined with drop (seam jumps), guidance 7.5, no negative prompt, real stride 1."""
    result = _result(num_clips=3, num_frames=8, overlap="drop", guidance_scale=7.5, negative_prompt="")
    result["settings"] = {"num_frames": 16, "real_stride": 1, "match_fps": None}
    assert protocol_deviations(result) == [
        "3 clips joined with overlap drop (seams: jumps back at each)", "guidance 7.5 (release: 10)",
        "negative prompt '' (release: 'watermark')", "real clips not frame-rate matched (real stride 1)"]


@pytest.mark.parametrize("change, needle", [
    (dict(num_clips=2, num_frames=8, overlap="keep"), "2 clips joined with overlap keep (seams: motion runs back"),
    (dict(num_inference_steps=25), "25 DDIM steps (release: 50)"),
    (dict(width=512, height=512), "512×512 px (release: 256²)"),
    (dict(frames_per_video=24), "24 frames generated, 16 measured"),
    (dict(decode_per_frame=True), "decoded frame by frame"),
])
def test_each_sampler_difference_is_named(change, needle):
    assert any(needle in d for d in protocol_deviations(_result(**change)))
