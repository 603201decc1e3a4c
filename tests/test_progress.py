"""The run's progress bar: input rows done, rows/s and ETA; worker reports batched; Ray counts summed per batch."""

import io

from rich.console import Console

from vidrd_data.run import progress
from vidrd_data.run.progress import BatchedReport, RayCounter, run_progress
from vidrd_data.run.stage import Stage


def test_the_bar_counts_input_rows_and_shows_rows_per_second_and_an_eta():
    clock = iter(range(0, 1000, 2))  # two seconds between readings of the clock
    sink = io.StringIO()
    console = Console(file=sink, width=160, force_terminal=True, color_system=None,
                      get_time=lambda: float(next(clock)))
    with run_progress("segment", total=10, console=console) as advance:
        advance(3, 0)  # one input row that made three samples
        advance(0, 1)
        advance(5, 1, rows=2)  # a batch of two input rows
    last = sink.getvalue().rsplit("\r", 1)[-1]
    assert "4/10" in last  # rows, not the 10 samples
    assert "ok 8" in last and "failed 2" in last
    assert "rows/s" in last and "ETA" in last
    rate = float(last.split(" rows/s")[0].split()[-1])
    assert 0 < rate < 10


def test_worker_reports_are_summed_and_sent_at_most_every_quarter_second(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    sent = []
    report = BatchedReport(lambda *counts: sent.append(counts))
    for _ in range(5):
        report(1, 0)
        now[0] += 0.1
    report(0, 2)
    report.flush()
    report.flush()  # nothing new: nothing sent
    assert sent == [(4, 0, 4), (1, 2, 2)]  # sent at 0.3 s (past 0.25 s), the rest on flush
    assert sum(ok for ok, _, _ in sent) == 5 and sum(rows for *_, rows in sent) == 6


def test_the_ray_counter_hands_out_what_was_added_since_the_last_take():
    counter = RayCounter()
    counter.add(2, 1, 2)
    counter.add(1, 0, 1)
    assert counter.take() == (3, 1, 3)
    assert counter.take() == (0, 0, 0)


EVENTS = []


class Recording(Stage):
    """A stage that notes when it processes each row."""

    name = "recording"

    def process(self, row):
        EVENTS.append(("processed", row["input_row"]))
        return [{"sample_id": f"s{row['input_row']}", "kind": "image"}]


def test_rows_are_reported_while_the_shard_runs_not_when_it_ends(tmp_path, monkeypatch):
    import contextlib

    import pyarrow as pa

    from vidrd_data.run import executors
    from vidrd_data.run.runner import run_stage

    @contextlib.contextmanager
    def recording(label, total, enabled=True, console=None):
        yield lambda ok, failed, rows=1: EVENTS.append(("reported", rows))

    monkeypatch.setattr(executors, "run_progress", recording)
    EVENTS.clear()
    run_stage("tests.test_progress:Recording", {}, pa.table({"source_path": ["a", "b", "c"]}), tmp_path / "m",
              root=None, input_desc=["t"], shard_size=10, progress=False)
    assert EVENTS == [("processed", 0), ("reported", 1), ("processed", 1), ("reported", 1), ("processed", 2),
                      ("reported", 1)]


class Filtering(Stage):
    """A stage that keeps even rows, filters odd ones and fails every third."""

    name = "filtering"

    def process(self, row):
        i = row["input_row"]
        if i % 3 == 2:
            raise ValueError("unreadable")
        out = {"sample_id": f"s{i}", "kind": "image"}
        return [out | ({"status": "filtered", "filter": "max_x", "filter_score": 1.0} if i % 2 else {})]


def test_filtered_rows_are_not_counted_as_failed_in_the_progress(tmp_path, monkeypatch):
    import contextlib

    import pyarrow as pa

    from vidrd_data.run import executors
    from vidrd_data.run.runner import run_stage

    counts = []

    @contextlib.contextmanager
    def counting(label, total, enabled=True, console=None):
        yield lambda ok, failed, rows=1: counts.append((ok, failed))

    monkeypatch.setattr(executors, "run_progress", counting)
    summary = run_stage("tests.test_progress:Filtering", {}, pa.table({"source_path": list("abcd")}), tmp_path / "m",
                        root=None, input_desc=["t"], shard_size=10, progress=False)
    assert counts == [(1, 0), (0, 0), (0, 1), (0, 0)]  # rows 0 ok, 1 filtered, 2 failed, 3 filtered
    assert (summary.ok, summary.failed) == (1, 1)
