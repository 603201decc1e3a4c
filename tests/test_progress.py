"""The run's progress bar: input rows done, rows/s and ETA; worker reports batched; Ray counts summed per batch."""

import io

from rich.console import Console

from vidrd_data.run import progress
from vidrd_data.run.progress import BatchedReport, RayCounter, run_progress


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
