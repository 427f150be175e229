"""Progress of a long stage step: a tqdm bar on a terminal, otherwise one log line every `interval` seconds while
the step runs (Airflow task logs and redirected output are not a TTY, and a bar there is noise or nothing).

In log mode a line comes at most every `interval` seconds (from `update`, or from a heartbeat thread when no
update came for that long: a single slow call, e.g. one Feast materialization, still shows it is alive), so a
quiet log means the step ended, not that it hangs."""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two progress lines in a log (the first line comes after this long, so short steps log none).
LOG_INTERVAL = 15.0

_now = time.monotonic  # (tests move a clock of their own)


class Progress:
    """`with Progress(total, "validate", unit="rows") as p: ... p.update(n)`; `close()` (or the `with`) ends it.

    `bar`: None = decide by whether stderr is a terminal; False = never a bar (log lines only). `step`: what is
    running now (e.g. a view's name), shown at the end of a log line."""

    def __init__(self, total: float | None, desc: str, *, unit: str = "it", bar: bool | None = None,
                 logger: logging.Logger | None = None, interval: float = LOG_INTERVAL):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0.0
        self.step = ""
        self._log = logger or log
        self._interval = interval
        self._t0 = self._last = _now()
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True)
        else:
            # the thread holds the Progress weakly: one a failed step never closed stops beating once collected
            self._heartbeat = threading.Thread(target=_beat, args=(weakref.ref(self), self._stop),
                                               name=f"progress: {desc}", daemon=True)
            self._heartbeat.start()

    def update(self, n: float = 1) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
                return
            self._maybe_log()

    def _maybe_log(self) -> None:
        now = _now()
        if now - self._last >= self._interval:
            self._last = now
            self._log.info("%s: %s", self.desc, self._status(now))

    def _status(self, now: float) -> str:
        elapsed = now - self._t0
        done = f"{self.done:,.0f}"
        if self.total:
            pct = self.done / self.total
            eta = f", ~{elapsed * (1 - pct) / pct:.0f} s left" if 0 < pct < 1 else ""
            status = f"{done} / {self.total:,.0f} {self.unit} ({100 * pct:.0f}%), {elapsed:.0f} s{eta}"
        else:
            status = f"{done} {self.unit}, {elapsed:.0f} s"
        return f"{status}; now: {self.step}" if self.step else status

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _beat(ref: weakref.ref[Progress], stop: threading.Event) -> None:
    """Log mode's heartbeat: a line when `interval` seconds passed without one (the step is still running)."""
    while (p := ref()) is not None:
        wait = max(p._interval - (_now() - p._last), 0.05)
        del p  # not kept alive while waiting
        if stop.wait(wait) or (p := ref()) is None:
            return
        with p._lock:
            p._maybe_log()
        del p
