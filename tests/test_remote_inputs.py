"""URL lists: videos at http(s):// URLs are read through fsspec with a timeout and retries; a truncated or stalled
response fails its row with the reason, the others are ok (a threaded HTTP server on 127.0.0.1, in the test)."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import shared_video
from vidrd_data import manifest as mf
from vidrd_data import sources
from vidrd_data.run.runner import run_stage
from vidrd_io import remote


class _Handler(BaseHTTPRequestHandler):
    video = b""
    counts: dict = {}

    def log_message(self, *args):  # keep the test's output quiet
        pass

    def _send(self, body_sent: bool) -> None:
        self.counts[self.path] = self.counts.get(self.path, 0) + 1
        if self.path == "/slow.mp4":
            time.sleep(3)  # longer than the client's timeout
        if self.path not in ("/ok.mp4", "/truncated.mp4", "/slow.mp4", "/flaky.mp4", "/list.csv"):
            self.send_error(404)
            return
        body = self.server.list_csv if self.path == "/list.csv" else self.video
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body_sent:
            return
        if self.path == "/truncated.mp4" or (self.path == "/flaky.mp4" and self.counts[self.path] <= 2):
            self.wfile.write(body[: len(body) // 2])  # then the connection closes: fewer bytes than announced
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_HEAD(self):
        self._send(body_sent=False)

    def do_GET(self):
        self._send(body_sent=True)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that gave up (the timeout) breaks the pipe: expected
        pass


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Yield the base URL of a local server of one real video as ok.mp4, truncated.mp4 (half its bytes), slow.mp4
    (nothing for 3 s), flaky.mp4 (truncated on its first GETs, whole after) and a list.csv naming them."""
    _Handler.video = shared_video("counter.mp4").read_bytes()
    _Handler.counts = {}
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    base = f"http://127.0.0.1:{server.server_address[1]}"
    server.list_csv = "\n".join(["path,label", *(f"{base}/{n},{n}" for n in
                                                 ("ok.mp4", "truncated.mp4", "slow.mp4", "flaky.mp4", "absent.mp4"))]
                                ).encode() + b"\n"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("VIDRD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIDRD_HTTP_TIMEOUT_S", "1")
    monkeypatch.setenv("VIDRD_HTTP_RETRIES", "2")
    yield base
    server.shutdown()
    server.server_close()


def test_a_url_list_ends_ok_for_whole_responses_and_failed_with_reasons_for_bad_ones(http_server, tmp_path):
    table, root = sources.caption_table(f"{http_server}/list.csv", path_col="path", caption_col=None,
                                        label_col="label")
    # three shards: a fresh worker pool, started with this test's timeout and retries in its environment
    summary = run_stage("videos", {}, table, tmp_path / "out", root=root, input_desc=["urls"], shard_size=2,
                        progress=False)
    rows = {r["label"]: r for r in mf.Manifest.open(tmp_path / "out").read().to_pylist()}
    assert summary.input_rows == 5 and len(rows) == 5
    assert rows["ok.mp4"]["status"] == "ok" and rows["ok.mp4"]["num_frames"] == 30
    assert rows["flaky.mp4"]["status"] == "ok"  # retried until whole
    truncated = rows["truncated.mp4"]
    assert truncated["status"] == "failed" and any(w in truncated["error"].lower() for w in ("truncated", "payload"))
    assert rows["slow.mp4"]["status"] == "failed" and "no data for 1 s" in rows["slow.mp4"]["error"]
    assert rows["absent.mp4"]["status"] == "failed" and "absent.mp4" in rows["absent.mp4"]["error"]


def test_a_truncated_download_is_retried_then_refused_never_cached(http_server, tmp_path):
    with pytest.raises(OSError, match="3 attempt"):
        remote.local_copy(f"{http_server}/truncated.mp4")
    assert _Handler.counts["/truncated.mp4"] >= 3
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_file()]
