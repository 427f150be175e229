"""The `feedstore` CLI end to end in a temp directory: outputs, logs, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import read_raw

SMALL = ["--users", "500", "--items", "1500", "--interactions", "20000", "--start", "2024-02-01",
         "--end", "2024-02-29", "--seed", "3"]


def feedstore(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FEEDSTORE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "feedstore", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=1200)


def test_generate_writes_contract_and_reports(tmp_path):
    res = feedstore("--data-dir", str(tmp_path / "d"), "generate", *SMALL, "--inject-faults", "0.01", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "wrote 20,000 interactions" in res.stderr
    assert "realism report" in res.stderr
    assert res.stdout == ""  # logs go to stderr, nothing is printed
    data = tmp_path / "d"
    ev, users, _ = read_raw(data)
    assert len(ev) == 20_000 and len(users) == 500
    faults = json.loads((data / "raw" / "faults.json").read_text())
    assert faults["rate"] == 0.01 and faults["total"] > 0
    report = json.loads((data / "reports" / "realism.json").read_text())
    assert report["passed"] + report["failed"] == len(report["checks"]) > 20


def test_data_dir_from_environment_and_default(tmp_path):
    res = feedstore("generate", *SMALL, "--no-report", cwd=tmp_path, env={"FEEDSTORE_DATA_DIR": str(tmp_path / "e")})
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "e" / "raw" / "users.parquet").exists()
    env = {k: v for k, v in os.environ.items() if k != "FEEDSTORE_DATA_DIR"}
    for args in (["generate", *SMALL, "--no-report"], ["validate"]):
        res = subprocess.run([sys.executable, "-m", "feedstore", *args], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, res.stderr
    assert (tmp_path / "data" / "raw" / "interactions").is_dir()  # default ./data, relative to the caller
    assert (tmp_path / "data" / "reports" / "data_docs" / "index.html").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["generate", "--users", "-5"], "generation.users"),
        (["generate", "--start", "2024-05-01", "--end", "2024-04-01"], "before start"),
        (["--preset", "nope", "generate"], "preset 'nope'"),
        (["--config", "missing.yaml", "generate"], "missing.yaml: config file not found"),
    ],
)
def test_bad_configuration_is_one_line_exit_2(tmp_path, args, fragment):
    res = feedstore("--data-dir", str(tmp_path), *args, cwd=tmp_path)
    assert res.returncode == 2
    assert fragment in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_misspelt_config_key(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("generation:\n  interactons: 10\n")
    res = feedstore("--config", str(cfg), "generate", cwd=tmp_path)
    assert res.returncode == 2
    assert "generation.interactons: unknown key" in res.stderr and str(cfg) in res.stderr


def test_help_on_every_command(tmp_path):
    for args in (["--help"], ["generate", "--help"], ["run", "--help"]):
        res = feedstore(*args, cwd=tmp_path)
        assert res.returncode == 0 and "Usage:" in res.stdout


def test_help_lists_commands_in_pipeline_order_with_an_example_each(tmp_path):
    out = feedstore("--help", cwd=tmp_path).stdout
    listed = [line.split()[0] for line in out.split("Commands, in pipeline order")[1].splitlines()[1:]
              if line.strip() and not line.strip().startswith("$")]
    assert listed == ["run", "generate", "validate", "stats", "apply", "materialize", "lookup", "serve", "check-skew",
                      "training-set", "evaluate", "ui"]
    assert out.count("$ feedstore ") == len(listed)
    run_help = feedstore("run", "--help", cwd=tmp_path).stdout
    for option in ("--online-store", "--inject-faults", "--skip-generate", "--data-dir", "--config"):
        assert option in run_help


def test_global_options_also_after_the_subcommand(tmp_path):
    res = feedstore("generate", *SMALL, "--no-report", "--data-dir", str(tmp_path / "after"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "after" / "raw" / "users.parquet").exists()
    assert "[generate] done in" in res.stderr  # the stage's one summary line
    assert "\x1b[" not in res.stderr  # redirected: no bar, no escape codes
    res = feedstore("validate", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and "missing.yaml: config file not found" in res.stderr


def test_run_skip_generate_needs_raw_data(tmp_path):
    res = feedstore("run", "--skip-generate", "--data-dir", str(tmp_path / "empty"), cwd=tmp_path)
    assert res.returncode == 3
    assert "no raw data to start from" in res.stderr and len(res.stderr.strip().splitlines()) == 1
