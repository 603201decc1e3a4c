"""The UCF-101 zero-shot protocol: which classes, how many generated videos per class, which prompt, which real clips.

VidRD (like Make-A-Video, Video LDM and PYoCo) reports FVD and IS on UCF-101 by generating videos from one prompt per
class, with the classes in proportion to the dataset, and comparing them with real UCF-101 clips. This module holds
that bookkeeping; generation is in generate.py and the metrics in fvd.py / inception.py.

Layout read (the official archives unpacked side by side, or everything in one folder as the demo writes it):

    ROOT/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi     or ROOT/ApplyEyeMakeup/...
    ROOT/ucfTrainTestlist/classInd.txt      "1 ApplyEyeMakeup"   or ROOT/classInd.txt
    ROOT/ucfTrainTestlist/trainlist01.txt   "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"

Without classInd.txt the classes are the video folders sorted case-insensitively (which is classInd.txt's order for
UCF-101); without trainlist01.txt every clip under the folders counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DEFAULT_NUM_VIDEOS = 10_000
COMMON_NUM_VIDEOS = (10_000, 2_048, 2_020)  # what papers report with; 10,000 is the most common
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")
PROMPTS_RESOURCE = "ucf101_prompts.json"


@dataclass(frozen=True)
class UCF101Layout:
    """Where one UCF-101 copy keeps its clips and split files (`None`: that file is absent)."""

    videos_root: Path
    class_index: Path | None
    train_list: Path | None


def locate(root: str | Path) -> UCF101Layout:
    """Returns the layout under `root`: the clips' folder and the split files, wherever the archives put them."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"UCF-101 folder not found: {root}")
    videos_root = root / "UCF-101" if (root / "UCF-101").is_dir() else root

    def find(name: str) -> Path | None:
        for folder in (root, root / "ucfTrainTestlist", videos_root):
            if (folder / name).is_file():
                return folder / name
        return None

    return UCF101Layout(videos_root, find("classInd.txt"), find("trainlist01.txt"))


def read_class_index(path: str | Path) -> list[str]:
    """Returns the class names of a `classInd.txt` ("1 ApplyEyeMakeup" per line) in class-number order."""
    path = Path(path)
    classes: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].isdigit():
            raise ValueError(f"{path} line {number} is not 'NUMBER ClassName': {line!r}")
        classes[int(fields[0])] = fields[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise ValueError(f"{path}: class numbers are not 1..{len(classes)}")
    return [classes[i] for i in sorted(classes)]


def read_train_list(path: str | Path, classes: list[str]) -> list[tuple[str, str]]:
    """Returns (relative path, class) per line of a split file ("Class/v_Class_g08_c01.avi 1"; the number optional)."""
    path = Path(path)
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise ValueError(f"{path} line {number} is not 'Class/video.avi [NUMBER]': {line!r}")
        rel = Path(fields[0]).as_posix()
        if len(fields) == 2:
            if not 1 <= int(fields[1]) <= len(classes):
                raise ValueError(f"{path} line {number}: class number {fields[1]} is not in 1..{len(classes)}")
            cls = classes[int(fields[1]) - 1]
        else:
            cls = rel.split("/")[0]
        if cls not in classes:
            raise ValueError(f"{path} line {number}: class {cls!r} is not in the class list")
        items.append((rel, cls))
    if not items:
        raise ValueError(f"{path} lists no videos")
    return items


def class_names(layout: UCF101Layout) -> list[str]:
    """Returns the classes in classInd.txt order (else the video folders, sorted case-insensitively)."""
    if layout.class_index is not None:
        return read_class_index(layout.class_index)
    folders = sorted((p.name for p in layout.videos_root.iterdir() if p.is_dir()), key=str.lower)
    if not folders:
        raise ValueError(f"no classInd.txt and no class folders under {layout.videos_root}")
    return folders


def train_clips(layout: UCF101Layout) -> list[tuple[str, str]]:
    """Returns (path relative to the clips' folder, class) of train split 1 (every clip when there is no list)."""
    classes = class_names(layout)
    if layout.train_list is not None:
        return read_train_list(layout.train_list, classes)
    clips = [(p.relative_to(layout.videos_root).as_posix(), cls) for cls in classes
             for p in sorted((layout.videos_root / cls).glob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS]
    if not clips:
        raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in the class folders under {layout.videos_root}")
    return clips


def class_distribution(layout: UCF101Layout) -> dict[str, int]:
    """Returns the number of train-split-1 clips per class, in class order (classes without clips count 0)."""
    counts = dict.fromkeys(class_names(layout), 0)
    for _, cls in train_clips(layout):
        counts[cls] += 1
    return counts


def allocate(counts: dict[str, int], num_videos: int) -> dict[str, int]:
    """Returns how many of `num_videos` generated videos each class gets, in proportion to `counts`, summing to
    exactly `num_videos`.

    Largest-remainder (Hamilton) apportionment in exact integer arithmetic: class c's quota is
    num_videos · count_c / total; every class gets the floor of its quota, and the seats left go one each to the
    classes with the largest remainders, ties to the class listed first (classInd order), so the result is
    deterministic and never more than one video from the exact proportion.
    """
    total = sum(counts.values())
    if num_videos < 1:
        raise ValueError(f"the number of videos must be ≥ 1, got {num_videos}")
    if total <= 0 or any(c < 0 for c in counts.values()):
        raise ValueError("class counts must be ≥ 0 and not all 0")
    shares = {cls: divmod(num_videos * count, total) for cls, count in counts.items()}
    allocation = {cls: whole for cls, (whole, _) in shares.items()}
    left = num_videos - sum(allocation.values())
    order = list(counts)
    by_remainder = sorted(order, key=lambda cls: (-shares[cls][1], order.index(cls)))
    for cls in by_remainder[:left]:
        allocation[cls] += 1
    return allocation


def load_class_prompts(classes: list[str], path: str | Path | None = None) -> dict[str, str]:
    """Returns one prompt per class, in class order, from `path` (a JSON object class → prompt) or, without it, the
    prompts we ship for the 101 UCF-101 classes (ucf101_prompts.json; ours — the papers' prompts are not public)."""
    where = "--class-prompts " + str(path) if path is not None else f"the shipped {PROMPTS_RESOURCE}"
    if path is None:
        text = resources.files(__package__).joinpath(PROMPTS_RESOURCE).read_text(encoding="utf-8")
    else:
        if not Path(path).is_file():
            raise ValueError(f"{where}: no such file")
        text = Path(path).read_text(encoding="utf-8")
    try:
        prompts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) and v.strip() for v in prompts.values()):
        raise ValueError(f"{where}: expected a JSON object mapping each class name to a non-empty prompt")
    missing = [cls for cls in classes if cls not in prompts]
    if missing:
        raise ValueError(f"{where}: no prompt for {len(missing)} of {len(classes)} classes: {', '.join(missing)}")
    return {cls: prompts[cls].strip() for cls in classes}


def real_videos(layout: UCF101Layout) -> list:
    """Returns train split 1's clips (every clip without trainlist01.txt) as labelled `VideoRef`s, FVD's real side."""
    from vidrd_model.eval.videos import VideoRef

    clips = train_clips(layout)
    missing = [rel for rel, _ in clips if not (layout.videos_root / rel).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} of {len(clips)} listed clips are missing under {layout.videos_root}, "
                         f"e.g. {missing[0]}")
    root = layout.videos_root.resolve()
    return [VideoRef(key=rel, path=str(root / rel), label=cls) for rel, cls in clips]
