"""Crash-safe publishing: every stage is SIGKILLed at its publish step (FEEDSTORE_CRASH_AT=<stage>.publish) and the
previous outputs must be intact, nothing hidden or staged may sit where a Feast source glob reads, and the rerun
must publish cleanly and remove the killed run's leftovers."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from feedstore.core.catalog import STAGE_OUTPUTS
from tests.conftest import require_spark

SMALL = ["--users", "400", "--items", "1500", "--interactions", "15000", "--start", "2024-02-01",
         "--end", "2024-03-31", "--seed", "11"]
VIEWS = ("user_daily_stats", "item_daily_stats", "user_item_daily_stats")


def feedstore(data: Path, *args: str, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_CRASH_AT")}
    if crash:
        env["FEEDSTORE_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "feedstore", "--data-dir", str(data), *args], env=env,
                          capture_output=True, text=True, timeout=600)


def snapshot(data: Path, stage: str) -> dict[str, str]:
    """Every file a stage publishes (through its output links) -> sha256 of its bytes."""
    out = {}
    for name in STAGE_OUTPUTS[stage]:
        root = data / name
        if not root.exists():
            continue
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(data))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def hidden_entries(data: Path) -> list[str]:
    """Hidden or staging files and folders inside any published output (where globs such as Feast's read)."""
    found = []
    for outputs in STAGE_OUTPUTS.values():
        for name in outputs:
            root = data / name
            if root.exists():
                found += [str(p) for p in root.rglob("*") if p.name.startswith(".") or "staging" in p.name]
    return found


def rows(data: Path) -> dict[str, list]:
    """Every offline view's rows, sorted."""
    out = {}
    for view in VIEWS:
        glob = str(data / "offline" / view / "**" / "*.parquet")
        out[view] = duckdb.execute("SELECT * FROM read_parquet($g, hive_partitioning = false) ORDER BY ALL",
                                   {"g": glob}).fetchall()
    return out


def leftovers(data: Path) -> list[str]:
    return [str(p) for p in data.glob(".*.versions/*") if p.name.endswith((".staging", ".trash"))]


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """generate -> validate -> stats on a small config, through the CLI."""
    data = tmp_path_factory.mktemp("crash") / "data"
    for args in (["generate", *SMALL], ["validate", "--as-of", "2026-01-01"], ["stats"]):
        res = feedstore(data, *args)
        assert res.returncode == 0, res.stderr
    return data


def copy_of(published: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(published, data, symlinks=True)
    return data


@pytest.mark.parametrize("stage, args", [
    ("generate", ["generate", *SMALL[:-1], "12"]),  # another seed: different bytes
    ("validate", ["validate", "--as-of", "2026-01-01", "--start", "2024-03-01", "--end", "2024-03-31"]),
    ("stats", ["stats", "--start", "2024-03-10", "--end", "2024-03-12"]),
])
def test_kill_at_publish_keeps_previous_outputs_and_rerun_cleans(published, tmp_path, stage, args):
    data = copy_of(published, tmp_path)
    before = {s: snapshot(data, s) for s in STAGE_OUTPUTS}
    assert before[stage]

    killed = feedstore(data, *args, crash=f"{stage}.publish")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert {s: snapshot(data, s) for s in STAGE_OUTPUTS} == before  # every output exactly as before
    assert hidden_entries(data) == []
    assert leftovers(data), "the killed run's staging version should still be there (the rerun removes it)"
    if stage == "stats":  # what Feast's source glob reads: the old rows, once each
        for view in VIEWS:
            glob = str(data / "offline" / view / "**" / "*.parquet")
            n = duckdb.execute("SELECT count(*) FROM read_parquet($g, hive_partitioning = false)",
                               {"g": glob}).fetchone()[0]
            assert n == sum(duckdb.execute("SELECT count(*) FROM read_parquet($f)", {"f": str(data / f)}).fetchone()[0]
                            for f in before["stats"] if f.startswith(f"offline/{view}/"))

    rerun = feedstore(data, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert leftovers(data) == [] and hidden_entries(data) == []
    versions = [p for p in (data / f".{stage}.versions").iterdir() if not p.name.startswith(".")
                and p.name != "current"]
    assert len(versions) <= 2  # the published version and the one before it (for readers still on it)
    if stage == "stats":  # a recompute of the same inputs changes no row (the incremental engine's files are not
        # byte-identical to a full run's: see the report)
        assert rows(data) == rows(published)


def test_copied_data_dir_with_real_folders_is_republished(published, tmp_path):
    """A copy that followed the links (real folders instead of symlinks) still reads its own files, and the next
    publish turns the folders back into links without losing anything."""
    data = tmp_path / "data"
    shutil.copytree(published, data, symlinks=False)
    assert not (data / "offline").is_symlink()
    before = snapshot(data, "stats")
    res = feedstore(data, "stats", "--start", "2024-03-10", "--end", "2024-03-10")
    assert res.returncode == 0, res.stderr
    assert (data / "offline").is_symlink()
    assert before and rows(data) == rows(published)


def test_kill_training_set_at_publish_keeps_the_previous_set(published, tmp_path):
    data = copy_of(published, tmp_path)
    assert feedstore(data, "apply").returncode == 0
    built = feedstore(data, "training-set", "--version", "v1")
    assert built.returncode == 0, built.stderr[-3000:]

    def files() -> dict[str, str]:
        root = data / "training" / "v1"
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    before = files()
    killed = feedstore(data, "training-set", "--version", "v1", "--start", "2024-03-01", crash="training-set.publish")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert files() == before
    assert [p for p in (data / "training").glob(".v1.versions/*.staging")]
    rerun = feedstore(data, "training-set", "--version", "v1", "--start", "2024-03-01")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert files() != before and not list((data / "training").glob(".v1.versions/*.staging"))


def test_kill_spark_stats_at_publish_keeps_previous_outputs(published, tmp_path):
    """The Spark engine publishes through the same versioned publication: killed at the switch, offline/ is the
    previous version whole, nothing staged sits under it; the next run (on DuckDB: the clean-up is the
    publication's, whatever the engine, and test_engines compares the days Spark recomputes with DuckDB's; one JVM
    fewer) removes the killed run's leftovers and publishes the same rows."""
    require_spark()  # Spark runs in the child processes: no session in this one
    data = copy_of(published, tmp_path)
    before = snapshot(data, "stats")
    args = ["--engine", "spark", "stats", "--start", "2024-03-10", "--end", "2024-03-12"]
    killed = feedstore(data, *args, crash="stats.publish")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert snapshot(data, "stats") == before
    assert hidden_entries(data) == [] and not list((data / "offline").glob(".*"))
    assert leftovers(data)

    rerun = feedstore(data, *args[2:])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert leftovers(data) == [] and hidden_entries(data) == []
    assert rows(data) == rows(published)
