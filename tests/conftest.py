import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_VIDEOS = SHARED / "data" / "videos"


def shared_video(name: str) -> Path:
    """Return a real test clip from ../shared/data/videos, or skip: a user's fresh clone has no ../shared."""
    path = SHARED_VIDEOS / name
    if not path.is_file():
        pytest.skip(f"real test video {path} is absent (../shared is not part of a fresh clone)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (use: `pytestmark = pytest.mark.usefixtures("one_torch_thread")`): on a
    shared 2-core machine two threads contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(main, capsys, *argv) -> tuple[int, str, str]:
    """Run a CLI's `main` on `argv` (made strings); return its exit status, stdout and stderr."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, prog: str) -> str:
    """Assert a usage error: exit status 2 and one line `prog: …` on stderr, no traceback; return that line."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def image_set(tmp_path):
    """A small image-text set: 12 images with a captions.csv, plus one missing and one empty-caption row."""
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = ["image,caption,licence"]
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / f"im{i:02d}.png")
        lines.append(f"im{i:02d}.png,picture number {i},cc-by")
    lines.append("gone.png,a missing picture,cc0")
    lines.append("im00.png,,cc0")
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return root / "captions.csv"
