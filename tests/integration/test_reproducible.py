"""The same inputs and config give byte-identical Parquet under offline/ and training/, hence the same training-set
fingerprint folder, at a size where DuckDB runs every query on several threads."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

# big enough that DuckDB splits scans and aggregations across threads (several row groups per input)
SIZE = ["--users", "4000", "--items", "12000", "--interactions", "300000", "--start", "2024-01-01",
        "--end", "2024-03-31", "--seed", "5"]


def run_stages(data: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_CRASH_AT")}
    for args in (["generate", *SIZE, "--no-report"], ["validate", "--as-of", "2026-01-01"], ["stats"], ["apply"],
                 ["training-set"]):
        res = subprocess.run([sys.executable, "-m", "feedstore", "--data-dir", str(data), "--log-level", "WARNING",
                              *args], env=env, capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, (args, res.stderr[-3000:])


def parquet_digests(data: Path) -> dict[str, str]:
    """sha256 of every published Parquet file, by the path a reader uses (through the publication links; the hidden
    version folders behind them are named per run and are not what readers see)."""
    out = {}
    for folder in ("validated", "offline", "training"):
        root = data / folder
        for dirpath, dirnames, files in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(f for f in files if f.endswith(".parquet")):
                p = Path(dirpath) / name
                out[f"{folder}/{p.relative_to(root)}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_two_runs_write_the_same_bytes(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    run_stages(first)
    run_stages(second)
    a, b = parquet_digests(first), parquet_digests(second)
    assert any(k.startswith("offline/user_item_daily_stats/") for k in a)
    assert [k for k in a if k.startswith("training/")], "no training set written"
    assert sorted(a) == sorted(b)  # same files, so the same fp-<fingerprint> folder
    assert [k for k in a if a[k] != b[k]] == []
