"""Stage name → implementing class, so a manifest's `_manifest.json` is enough to re-run its stage (`retry`).

Stages are imported lazily (by "module:Class") so a worker only loads the libraries its stage needs.
"""

STAGES = {
    "images": "vidrd_data.images:ImageIngest",
    "videos": "vidrd_data.videos:VideoIndex",
    "caption": "vidrd_data.caption:CaptionClips",
    "pseudo-video": "vidrd_data.pseudo_video:PseudoVideo",
    "segment": "vidrd_data.segment:SegmentVideos",
}
