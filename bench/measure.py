"""What every benchmark script measures about a child process: wall time and the peak summed RSS of its tree."""

from __future__ import annotations

import subprocess
import tempfile
import time


def run_tree(cmd: list[str], env: dict[str, str] | None = None,
             interval: float = 0.05) -> tuple[float, float, int, str]:
    """Run `cmd`; return (wall seconds, peak summed RSS of its process tree in MiB, exit code, stderr)."""
    import psutil

    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty child can never block on it
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        parent, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            try:
                peak = max(peak, sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(interval)
        wall = time.perf_counter() - t0
        err.seek(0)
        return wall, peak / 2**20, proc.returncode, err.read()
