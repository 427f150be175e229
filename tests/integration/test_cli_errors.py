"""Every hostile input found so far: a one-line error, the documented exit code, no traceback, no secret."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import _free_port, redis_server_binary

SMALL = ["--users", "400", "--items", "1500", "--interactions", "15000", "--start", "2024-02-01",
         "--end", "2024-03-31", "--seed", "11"]


def feedstore(data: Path, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_CRASH_AT")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "feedstore", "--data-dir", str(data), *args], env=full,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert res.returncode == code, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last
    return last


@pytest.mark.parametrize("args, code, needle", [
    (["lookup", "--user", "1", "--items", ",,,"], 2, "--items"),
    (["lookup", "--user", "9223372036854775808", "--items", "1"], 2, "--user"),
    (["lookup", "--user", "1", "--items", "1,99999999999999999999"], 2, "--items"),
    (["training-set", "--version", "../../escape"], 2, "version"),
    (["training-set", "--version", "/tmp/absolute"], 2, "version"),
    (["evaluate", "--version", "../x"], 2, "version"),
    (["training-set"], 3, "feedstore stats"),  # before any stats: no DuckDB "No files found"
    (["materialize"], 3, None),
])
def test_usage_and_missing_input_errors(tmp_path, args, code, needle):
    res = feedstore(tmp_path / "empty", *args)
    if code == 3 and needle is None:  # materialize before anything: whichever input is missing, one line
        assert res.returncode in (3, 5) and "Traceback" not in res.stderr, res.stderr[-2000:]
        return
    one_line_error(res, code, *([needle] if needle else []))


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    one_line_error(feedstore(f, "generate", *SMALL), 2, "not a directory")


def test_injected_faults_with_the_realism_report(tmp_path):
    res = feedstore(tmp_path / "d", "generate", *SMALL, "--inject-faults", "0.005")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "realism report" in res.stderr


def test_stray_parquet_outside_a_partition_is_reported(stats_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(stats_data, data, symlinks=True)
    day = next((data / "raw" / "interactions").glob("date=*"))
    shutil.copy(next(day.glob("*.parquet")), data / "raw" / "interactions" / "stray.parquet")
    one_line_error(feedstore(data, "validate", "--as-of", "2026-01-01"), 3, "stray.parquet",
                   "outside any date=")


@pytest.fixture(scope="module")
def applied(stats_data, tmp_path_factory):
    """A copy of the pipeline data (in a folder whose name has an apostrophe), applied to SQLite."""
    data = tmp_path_factory.mktemp("errors") / "it's data"
    shutil.copytree(stats_data, data, symlinks=True)
    res = feedstore(data, "apply")
    assert res.returncode == 0, res.stderr[-3000:]
    return data


def test_lookup_before_materialize_is_an_error_not_nulls(applied):
    one_line_error(feedstore(applied, "lookup", "--user", "1", "--items", "1,2"), 5, "feedstore materialize")


def test_materialize_far_after_the_data_is_refused(applied):
    one_line_error(feedstore(applied, "materialize", "--end", "2099-01-01"), 2, "newest offline snapshot")


def test_a_copied_data_dir_reads_its_own_statistics(applied, tmp_path):
    """The registry stores source paths relative to the data dir: a copy materializes from the copy, even with
    the original gone."""
    copy = tmp_path / "copy"
    shutil.copytree(applied, copy, symlinks=True)
    moved = applied.with_name("moved away")
    applied.rename(moved)
    try:
        res = feedstore(copy, "materialize")
        assert res.returncode == 0, res.stderr[-3000:]
        assert str(applied) not in res.stderr
        res = feedstore(copy, "lookup", "--user", "1", "--items", "1,2")
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        moved.rename(applied)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own (it gets paused, stopped or killed)."""
    port = _free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    for _ in range(400):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            proc.poll()
            if proc.returncode is not None:
                pytest.fail("redis-server did not start")
            import time

            time.sleep(0.05)
    yield port, proc, client
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_stalling_during_materialize_fails_with_exit_5(applied, tmp_path, own_redis):
    """Redis answers the first ping, then stops answering writes (CLIENT PAUSE): every command has a timeout, so
    materialize fails (exit 5, one line), it does not hang."""
    port, _, client = own_redis
    data = tmp_path / "data"
    shutil.copytree(applied, data, symlinks=True)
    env = {"REDIS_CONNECTION_STRING": f"127.0.0.1:{port}"}
    assert feedstore(data, "apply", "--online-store", "redis", env=env).returncode == 0
    client.execute_command("CLIENT", "PAUSE", 600_000, "WRITE")
    try:
        res = feedstore(data, "materialize", "--online-store", "redis", env=env, timeout=300)
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
    one_line_error(res, 5, "online store failed")


def test_redis_password_is_never_printed(applied, tmp_path):
    port = _free_port()  # nothing listens there
    env = {"REDIS_CONNECTION_STRING": f"127.0.0.1:{port},password=hunter2-secret"}
    res = feedstore(applied, "lookup", "--user", "1", "--items", "1", "--online-store", "redis", env=env)
    last = one_line_error(res, 5, "password=***")
    assert "hunter2" not in res.stderr + res.stdout, last
