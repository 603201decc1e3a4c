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


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3 HTTP API (moto's standalone server) on 127.0.0.1, with the environment s3fs reads credentials and
    the endpoint from, and a download cache for the session (spawned workers inherit both; a stage cached in this
    process keeps the decode workers it started, so these are set once, not per test); yields the endpoint URL.
    Skips when moto is not installed."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"moto[server] is not importable ({exc}): no local S3 endpoint")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "VIDRD_CACHE_DIR": str(tmp_path_factory.mktemp("vidrd-cache"))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket on the local S3 server; yields its `s3://` URL."""
    import uuid

    import fsspec

    name = f"vidrd-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}"
