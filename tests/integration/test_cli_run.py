"""`feedstore run` end to end through the CLI: its whole log redirected to a file (no escape codes), and
`--skip-generate` taking the raw data as it is (its own date range, not the config's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_cli_generate import SMALL, feedstore


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory) -> tuple[Path, bytes]:
    """One small `run --inject-faults` for February 2024 (the config says all of 2024), stdout and stderr
    redirected to one file as a cron job or `make demo > log` would: (data dir, the log's bytes)."""
    root = tmp_path_factory.mktemp("run")
    data, log_file = root / "data", root / "run.log"
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_DATA_DIR")}
    with open(log_file, "wb") as out:
        res = subprocess.run([sys.executable, "-m", "feedstore", "run", *SMALL, "--inject-faults", "0.005",
                              "--data-dir", str(data)], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                             timeout=1800)
    text = log_file.read_bytes()
    assert res.returncode == 0, text.decode(errors="replace")[-3000:]
    return data, text


def test_redirected_run_log_has_no_escape_codes(faulty_run):
    _, raw = faulty_run
    assert b"\x1b" not in raw and b"\r" not in raw  # no colours, no bars, no carriage-return redraws
    text = raw.decode("utf-8")  # readable: plain UTF-8 lines
    lines = text.splitlines()
    for stage in ("generate", "validate", "stats", "apply", "materialize", "training-set", "evaluate"):
        assert any(f"[{stage}] done in" in line for line in lines), stage  # one summary line per stage
    assert "pipeline run complete" in text and "Feast UI: `feedstore ui`" in lines[-1]
    assert not [line for line in lines if len(line) > 2000]  # no dumped blobs
    # the feature report's line names where the report is once published, not the staging folder it was built in
    report = [line for line in lines if "feature report: highest PSI" in line]
    assert len(report) == 1 and ".staging" not in report[0]
    assert Path(report[0].rsplit(" -> ", 1)[1]).is_file()


def test_skip_generate_takes_the_raw_data_as_it_is(faulty_run, tmp_path):
    data, _ = faulty_run
    # without --start/--end the config says 2024-01-01..2024-12-31; the raw data says February: it wins
    res = feedstore("run", "--skip-generate", "--data-dir", str(data), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "the raw data was generated for 2024-02-01..2024-02-29" in res.stderr
    assert "[generate] skipped" in res.stderr and "pipeline run complete" in res.stderr
    # generation options that contradict the raw data: a usage error naming both, before any work
    res = feedstore("run", "--skip-generate", "--start", "2024-03-01", "--end", "2024-03-31", "--data-dir",
                    str(data), cwd=tmp_path)
    assert res.returncode == 2
    assert "covers 2024-02-01..2024-02-29" in res.stderr and "--start 2024-03-01" in res.stderr
    assert "pipeline run:" not in res.stderr
    # faults are injected while generating: asking for them on raw data that is taken as it is is a usage error
    res = feedstore("run", "--skip-generate", "--inject-faults", "0.01", "--data-dir", str(data), cwd=tmp_path)
    assert res.returncode == 2 and "--inject-faults" in res.stderr and "pipeline run:" not in res.stderr
    # raw data without a generation record: its date partitions must match the config's range, else one line
    (data / "raw" / "generation.json").unlink()
    res = feedstore("run", "--skip-generate", "--data-dir", str(data), cwd=tmp_path)
    assert res.returncode == 3 and len(res.stderr.strip().splitlines()) == 1
    assert "the raw data covers 2024-02-01.." in res.stderr and "the config says 2024-01-01..2024-12-31" in res.stderr


#: Runs the CLI in this interpreter, then prints which of these modules the process loaded (stderr, last line).
#: Run as a script file, never `python -c`: pyspark.sql.connect takes a `__main__` without a file for a doctest run
#: of its own and exits the process with 0 while Great Expectations imports it.
_CLI_THEN_MODULES = """
import json, sys
from feedstore.shell.cli import main
code = None
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"rc": code, "pyspark": "pyspark" in sys.modules,
                  "gx": "great_expectations.expectations" in sys.modules}), file=sys.stderr)
"""


def test_the_duckdb_cli_loads_no_pyspark_even_through_great_expectations(faulty_run, tmp_path):
    """GX imports pyspark whenever it is installed (`make test` installs the spark extra); on the DuckDB engine the
    CLI has GX import without it (feedstore.core.gx_fast.without_spark), so validate and stats run, their gates
    included, with no pyspark in the process."""
    import json
    import shutil

    data, _ = faulty_run
    shutil.copytree(data / "raw", tmp_path / "d" / "raw")
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_DATA_DIR",
                                                            "FEEDSTORE_ENGINE")}
    script = tmp_path / "cli_then_modules.py"
    script.write_text(_CLI_THEN_MODULES)
    for stage in (["validate", "--end", "2024-02-29"], ["stats", "--end", "2024-02-29"]):
        res = subprocess.run([sys.executable, str(script), "--log-level", "WARNING", "--data-dir",
                              str(tmp_path / "d"), *stage], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=1200)
        loaded = json.loads(res.stderr.strip().splitlines()[-1])
        assert loaded["rc"] in (0, None), res.stderr[-3000:]
        assert loaded["gx"], "the stage's gate ran on Great Expectations"
        assert not loaded["pyspark"], f"{stage[0]} on DuckDB loaded pyspark"
