"""A built wheel, installed (not editable) into a fresh venv from the pinned demo lock, works from any directory:
config, presets and the Feast repository ship as package data, and every dependency it imports is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from tests.conftest import ROOT

TINY = ["--users", "300", "--items", "800", "--interactions", "8000", "--start", "2024-02-01", "--end", "2024-02-20",
        "--seed", "4"]


def sh(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 1800):
    res = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-3000:])
    return res


def test_wheel_installs_and_runs_from_another_directory(tmp_path):
    dist = tmp_path / "dist"
    sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT))
    wheel = next(dist.glob("feedstore-*.whl"))
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("feedstore/config/pipeline.yaml", "feedstore/config/presets/realistic.yaml",
                   "feedstore/feature_repo/feature_store.yaml", "feedstore/feature_repo/feature_views.py",
                   "feedstore/ingestion/stats/compute.py"):
        assert needed in names, needed

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    # nothing of the caller's environment: with PYTHONPATH on a source tree, pip would take that tree's
    # feedstore.egg-info (left by the `pip wheel` above) for an installed feedstore and skip the wheel
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDSTORE_", "VIRTUAL_ENV", "PYTHONPATH"))}
    # the lock pins every package, so nothing is resolved: pip only unpacks (from its cache when it has them);
    # --no-compile: byte-compiling every module of every dependency was half of pip's time, and Python compiles what
    # the commands below import anyway (the wheel itself is installed as a user would, compiled)
    sh(py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "-r",
       str(ROOT / "requirements" / "demo.lock"), env=env)
    sh(py, "-m", "pip", "install", "--quiet", "--no-deps", str(wheel), env=env)
    sh(py, "-m", "pip", "check", env=env)  # every declared dependency is in the lock, at a version that fits

    elsewhere = tmp_path / "somewhere else"
    elsewhere.mkdir()
    cli = str(env_dir / "bin" / "feedstore")
    where = sh(py, "-c", "import feedstore.core.feast_repo as f, feedstore.core.config as c; "
               "print(f.REPO_DIR); print(c.CONFIG_DIR)", cwd=elsewhere, env=env).stdout.split("\n")
    assert all(str(env_dir) in line for line in where[:2]), where  # the installed copy, not the source tree

    res = sh(cli, "--preset", "realistic", "--data-dir", "preset-data", "generate", *TINY, "--no-report",
             cwd=elsewhere, env=env)
    assert "realistic" in res.stderr or (elsewhere / "preset-data" / "raw" / "users.parquet").exists()
    res = sh(cli, "run", *TINY, cwd=elsewhere, env=env)
    assert "pipeline run complete" in res.stderr
    manifest = next((elsewhere / "data" / "training").glob("*/manifest.json"))
    assert "evaluation" in json.loads(manifest.read_text())
    res = subprocess.run([cli, "lookup", "--user", "1", "--items", "1,2"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
