"""Progress in log mode (not a terminal: redirected output, an Airflow task log): plain lines, on update and as a
heartbeat while a step is still running, none after close, no ANSI codes."""

from __future__ import annotations

import logging
import threading

from feedstore.core.progress import Progress


class _Clock:
    """A monotonic clock the test moves by hand (no sleeping, no timing assertions)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.progress"]


def test_log_mode_writes_plain_lines_at_most_once_per_interval(monkeypatch, caplog):
    clock = _Clock()
    monkeypatch.setattr("feedstore.core.progress._now", clock)
    caplog.set_level(logging.INFO, logger="test.progress")
    logger = logging.getLogger("test.progress")
    # the heartbeat thread waits out the first interval before looking again: a huge one keeps it out of this test
    with Progress(1000, "validate interactions", unit="rows", bar=False, logger=logger, interval=1e9) as p:
        p.update(100)
        assert _lines(caplog) == []  # within the interval: nothing
        p._interval = 10.0
        clock.now += 10
        p.update(150)
        clock.now += 3
        p.update(50)  # 3 s after the last line: nothing
        clock.now += 10
        p.update(200)
    lines = _lines(caplog)
    assert lines == ["validate interactions: 250 / 1,000 rows (25%), 10 s, ~30 s left",
                     "validate interactions: 500 / 1,000 rows (50%), 23 s, ~23 s left"]
    assert not any("\x1b" in line or "\r" in line for line in lines)


def test_heartbeat_logs_while_a_step_runs_without_updates_and_stops_at_close(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    logger = logging.getLogger("test.progress")
    beat = threading.Event()
    logger.addFilter(lambda record: beat.set() or True)
    p = Progress(None, "materialize into sqlite", unit="views", bar=False, logger=logger, interval=0.05)
    p.step = "user_daily_stats"
    try:
        assert beat.wait(30), "no heartbeat line while the step ran"  # one slow call, no update()
    finally:
        p.close()
    assert p._heartbeat is None
    assert _lines(caplog) and all(line.startswith("materialize into sqlite: 0 views, ")
                                and line.endswith("; now: user_daily_stats") for line in _lines(caplog))
    assert not any("\x1b" in line for line in _lines(caplog))
    assert not [t for t in threading.enumerate() if t.name == "progress: materialize into sqlite"]
