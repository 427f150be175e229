"""Import a command's heavy libraries on a background thread while it does GIL-free work (DuckDB, Arrow I/O).

A stage that needs Great Expectations (or matplotlib, scikit-learn) only at its end still paid their import
(~2 s for GX) on the critical path. `prefetch("great_expectations")` starts that import at once on a daemon
thread; whoever imports the module later simply gets it (or waits for the import in progress on the module's
lock). Call it only after the stage's own imports are done, so the two threads never import the same modules
in opposite orders. A failed background import is ignored: the ordinary import later raises as it always did.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

_started: dict[str, threading.Thread] = {}


def _load(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - the foreground import reports it
            log.debug("background import of %s failed: %s", name, e)
            return


def prefetch(*modules: str) -> threading.Thread | None:
    """Start importing `modules` (in order) on a daemon thread; returns the thread (None if nothing to do)."""
    todo = tuple(m for m in modules if m not in _started)
    if not todo:
        return None
    thread = threading.Thread(target=_load, args=(todo,), name=f"prefetch {', '.join(todo)}", daemon=True)
    for m in todo:
        _started[m] = thread
    thread.start()
    return thread


def wait(*modules: str) -> None:
    """Block until the background imports of `modules` (if any were started) have finished."""
    for m in modules:
        thread = _started.get(m)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
