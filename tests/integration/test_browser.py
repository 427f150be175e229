"""What a person sees: the Data Docs index, a validation page and the feature report, opened in headless Chromium
after a real `feedstore run` (Debian's /usr/bin/chromium; nothing is downloaded). Screenshots land in
<data-dir>/reports/screenshots/ for a human to look at; the module logs where at the end (and writes it to the
terminal). Skips, with the reason, only when no Chromium is installed (`.ci/run` installs it with apt-get where it
can)."""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SMALL = ["--users", "500", "--items", "1500", "--interactions", "20000", "--start", "2024-02-01",
         "--end", "2024-02-29", "--seed", "3"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (install it: "
                                "apt-get install -y chromium; .ci/run does so when it can)")
log = logging.getLogger(__name__)

#: The badge fills of docs_base.html.j2 (.status-passed, .status-quarantined-rows, .status-FAILED): what a person
#: sees as green / amber / red.
GREEN, AMBER, RED = (0xDF, 0xF3, 0xE4), (0xFF, 0xF1, 0xCC), (0xFB, 0xDC, 0xDC)


def browse(page: Path, profile: Path, *, screenshot: Path | None = None, height: int = 1600) -> str:
    """The DOM of `page` after its scripts ran (and a screenshot if asked), from headless Chromium."""
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars",
            f"--window-size=1400,{height}", "--virtual-time-budget=5000"]
    url = page.resolve().as_uri()
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=120)
        assert screenshot.exists() and screenshot.stat().st_size > 10_000, res.stderr[-2000:]
    res = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "<body" in res.stdout, res.stderr[-2000:]
    return res.stdout


def pixels(png: Path, colour: tuple[int, int, int]) -> int:
    """How many pixels of `png` have exactly this colour (badge fills are flat, so they count in full)."""
    from matplotlib.image import imread

    img = np.rint(imread(png)[:, :, :3] * 255).astype(np.int16)
    return int((np.abs(img - np.array(colour)).max(axis=2) == 0).sum())


def feedstore(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_DATA_DIR")}
    return subprocess.run([sys.executable, "-m", "feedstore", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, request) -> Iterator[Path]:
    """A small `feedstore run` (every stage), then a second `validate` so the site must keep history."""
    root = tmp_path_factory.mktemp("browser")
    data = root / "data"
    for args in (["run", *SMALL, "--data-dir", str(data)], ["validate", "--data-dir", str(data)]):
        res = feedstore(*args, cwd=root)
        assert res.returncode == 0, res.stderr[-3000:]
    yield data
    shots = sorted((data / "reports" / "screenshots").glob("*.png"))
    where = f"browser test screenshots ({len(shots)}): {data / 'reports' / 'screenshots'}"
    log.info("%s: %s", where, ", ".join(p.name for p in shots))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # on the terminal whatever -r / -s say
            if os.environ.get("PYTEST_XDIST_WORKER"):  # a pytest-xdist worker's stdout is /dev/null, its stderr
                sys.stderr.write(f"\n{where}\n")  # the terminal
            else:
                reporter.write_line(f"\n{where}")


@pytest.fixture(scope="module")
def with_failure(demo, tmp_path_factory) -> Path:
    """A copy of the demo's data dir where a third validation, of raw data with far too many faults, failed."""
    data = tmp_path_factory.mktemp("browser-failed") / "data"
    shutil.copytree(demo, data)
    res = feedstore("generate", *SMALL, "--inject-faults", "0.3", "--no-report", "--data-dir", str(data),
                    cwd=data.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    res = feedstore("validate", "--data-dir", str(data), cwd=data.parent)
    assert res.returncode == 4, res.stderr[-3000:]
    return data


def text(dom: str) -> str:
    """What is visible as text: the DOM without its tags and scripts."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def test_data_docs_index_lists_every_stage_with_status(demo, tmp_path):
    index = demo / "reports" / "data_docs" / "index.html"
    dom = browse(index, tmp_path / "profile", screenshot=demo / "reports" / "screenshots" / "data_docs_index.png")
    seen = text(dom)
    for suite in ("raw_users.v1", "raw_items.v1", "raw_interactions.v1", "raw_interactions_totals.v1",
                  "raw_interactions_daily.v1", "offline_user_daily_stats.v1", "offline_item_daily_stats.v1",
                  "offline_user_item_daily_stats.v1", "training_set.v1", "training_set_null_rates.v1"):
        assert suite in seen, f"{suite} missing from the Data Docs index"
    stages = set(re.findall(r'<tr data-stage="([^"]+)"', dom))
    assert stages == {"validate", "stats", "training-set"}
    assert "✓ passed" in seen  # statuses are text, not CDN icons
    assert pixels(demo / "reports" / "screenshots" / "data_docs_index.png", GREEN) > 500  # the badges are drawn
    # history: two validate runs of raw_interactions.v1 are both listed
    assert len(set(re.findall(r'href="runs/raw_interactions\.v1/([^"]+)\.html"', dom))) >= 2
    # nothing fetched from the network
    assert not re.search(r'(src|href)="https?://', dom)


def test_data_docs_index_shows_passed_and_failed_runs_apart(demo, with_failure, tmp_path):
    """Statuses a person can tell apart: a green ✓ passed, an amber ! quarantined rows (the faults were caught) and
    a red ✗ FAILED badge (too many of them), each in its run's row."""
    index = with_failure / "reports" / "data_docs" / "index.html"
    shot = demo / "reports" / "screenshots" / "data_docs_index_with_a_failed_run.png"
    dom = browse(index, tmp_path / "profile", screenshot=shot)
    badge = r'<td>\s*<span class="status status-{cls}">{mark} {label}</span>\s*</td>'
    failed = re.findall(r'<tr data-stage="validate" data-status="FAILED">.*?</tr>', dom, flags=re.S)
    passed = re.findall(r'<tr data-stage="[^"]+" data-status="passed">.*?</tr>', dom, flags=re.S)
    assert failed and passed
    assert all(re.search(badge.format(cls="FAILED", mark="✗", label="FAILED"), row) for row in failed)
    assert all(re.search(badge.format(cls="passed", mark="✓", label="passed"), row) for row in passed)
    quarantined = re.findall(r'<tr data-stage="validate" data-status="quarantined rows">.*?</tr>', dom, flags=re.S)
    assert quarantined and all(re.search(badge.format(cls="quarantined-rows", mark="!", label="quarantined rows"),
                                         row) for row in quarantined)
    # and drawn in colour: the green, amber and red badge fills are on the screenshot
    assert pixels(shot, GREEN) > 500 and pixels(shot, AMBER) > 500 and pixels(shot, RED) > 500


def test_validation_page_names_rules_like_the_cli(demo, tmp_path):
    docs = demo / "reports" / "data_docs"
    interactions = sorted((docs / "runs" / "raw_interactions.v1").glob("*.html"))[-1]
    dom = browse(interactions, tmp_path / "p1", screenshot=demo / "reports" / "screenshots" / "validation_run.png")
    seen = text(dom)
    assert "passing rules" in seen and "click_without_dwell" in seen and "dwell_time > 0 when there is a click" in seen
    assert "_dwell_if_click" not in seen and "_signup_date" not in seen  # helper columns are explained, not shown
    training = sorted((docs / "runs" / "training_set.v1").glob("*.html"))[-1]
    seen = text(browse(training, tmp_path / "p2"))
    assert "click_is_binary" in seen and "click is 0 or 1 in every row" in seen
    assert "_click_binary" not in seen


def test_feature_report_shows_summary_and_plots(demo, tmp_path):
    report = next((demo / "training").glob("*/report/index.html"))
    dom = browse(report, tmp_path / "profile", screenshot=demo / "reports" / "screenshots" / "feature_report.png")
    images = sorted(report.parent.glob("distributions_*.png"))
    assert images
    loaded = re.search(r'data-plots-loaded="(\d+)"', dom)
    assert loaded and int(loaded.group(1)) == len(images), "plot images did not load in the browser"
    assert 'data-plots-broken="0"' in dom
    seen = text(dom)
    assert "Rows per split" in seen and "Highest PSI" in seen and "Null-rate outliers" in seen
    assert "n/a" in seen  # binary features: PSI not applicable, with the reason
    assert "drift is expected under a time split" in seen
