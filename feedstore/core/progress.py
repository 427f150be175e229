"""Progress of a long stage step: a tqdm bar on a terminal, one log line at most every `interval` seconds
otherwise (Airflow task logs and redirected output are not a TTY, and a bar there is noise or nothing)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two progress lines in a log (the first line comes after this long, so short steps log none).
LOG_INTERVAL = 15.0


class Progress:
    """`with Progress(total, "validate", unit="rows") as p: ... p.update(n)`.

    `bar`: None = decide by whether stderr is a terminal; False = never a bar (log lines only)."""

    def __init__(self, total: float | None, desc: str, *, unit: str = "it", bar: bool | None = None,
                 logger: logging.Logger | None = None, interval: float = LOG_INTERVAL):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0.0
        self._log = logger or log
        self._interval = interval
        self._t0 = self._last = time.monotonic()
        self._bar: Any = None
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True)

    def update(self, n: float = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._log.info("%s: %s", self.desc, self._status(now))

    def _status(self, now: float) -> str:
        elapsed = now - self._t0
        done = f"{self.done:,.0f}"
        if self.total:
            pct = self.done / self.total
            eta = f", ~{elapsed * (1 - pct) / pct:.0f} s left" if 0 < pct < 1 else ""
            return f"{done} / {self.total:,.0f} {self.unit} ({100 * pct:.0f}%), {elapsed:.0f} s{eta}"
        return f"{done} {self.unit}, {elapsed:.0f} s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
