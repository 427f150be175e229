"""The validation gate on real files with real Great Expectations."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedstore.core.config import PipelineConfig
from feedstore.core.errors import InputDataError, ValidationFailed
from feedstore.ingestion.generate.faults import KINDS
from feedstore.ingestion.generate.run import write_raw_events
from feedstore.ingestion.validate.run import validate_events
from tests.conftest import small_generation
from tests.helpers import read_raw
from tests.unit.test_faults import violations

AS_OF = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_config(data_dir: Path, **validation) -> PipelineConfig:
    gen = small_generation(users=600, items=1500, interactions=25_000, start="2024-02-01", end="2024-02-29")
    return PipelineConfig(data_dir=data_dir, generation=gen, validation=validation)


def read_dir(path: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clean")
    write_raw_events(make_config(d).generation, d, progress=False)
    return d


@pytest.fixture
def clean_copy(clean_dir, tmp_path) -> Path:
    shutil.copytree(clean_dir / "raw", tmp_path / "raw")
    return tmp_path


def test_clean_data_passes_with_nothing_quarantined(clean_copy):
    cfg = make_config(clean_copy)
    summary = validate_events(cfg, as_of=AS_OF)
    assert summary.passed
    for name in ("users", "items", "interactions"):
        res = summary.tables[name]
        assert res.quarantined == 0 and res.validated == res.rows_in > 0
    ev, _, _ = read_raw(clean_copy)
    validated = read_dir(clean_copy / "validated" / "interactions")
    assert len(validated) == len(ev) == 25_000
    assert not (clean_copy / "quarantine" / "interactions").exists() or not any(
        (clean_copy / "quarantine" / "interactions").rglob("*.parquet"))
    report = json.loads((clean_copy / "reports" / "validation" / "interactions.json").read_text())
    assert report["gate"] == "pass" and report["reconciles"]
    rules = {e["rule"]: e for e in report["expectations"]}
    assert {"ctr_in_range", "rows_every_day", "before_signup", "unknown_user_id", "duplicate_impression"} <= set(rules)
    assert rules["ctr_in_range"]["observed_value"] == pytest.approx(ev.click.mean())


def test_a_bad_entity_row_is_quarantined_with_its_source(clean_copy):
    path = clean_copy / "raw" / "users.parquet"
    users = pq.read_table(path).to_pandas()
    users.loc[7, "segment"] = "bogus"
    pq.write_table(pa.Table.from_pandas(users, preserve_index=False), path)
    validate_events(make_config(clean_copy), as_of=AS_OF)
    q = pd.read_parquet(clean_copy / "quarantine" / "users.parquet")
    assert q["user_id"].tolist() == [users.user_id[7]] and q["_reason"].tolist() == ["unknown_segment"]
    assert q["_source_file"].tolist() == [str(path)] and q["_source_row"].tolist() == [7]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("faulty")
    cfg = make_config(d, max_quarantine_fraction=0.1)
    write_raw_events(cfg.generation, d, fault_rate=0.04, progress=False)
    return d, cfg, validate_events(cfg, as_of=AS_OF)


def test_every_injected_defect_is_quarantined_with_its_reason(faulty_run):
    d, cfg, summary = faulty_run
    faults = json.loads((d / "raw" / "faults.json").read_text())
    res = summary.tables["interactions"]
    for kind in KINDS:
        assert faults["counts"][kind] > 0
        assert res.by_reason.get(kind, 0) == faults["counts"][kind], kind
    report = json.loads((d / "reports" / "validation" / "interactions.json").read_text())
    assert report["fault_reconciliation"]["all_match"]
    assert res.quarantined == faults["total"]
    assert res.rows_in == res.validated + res.quarantined == cfg.generation.interactions


def test_quarantine_keeps_rows_with_reason_and_source(faulty_run):
    d, cfg, _ = faulty_run
    ev, users, items = read_raw(d)
    truth = violations(ev, users, items, cfg.generation)
    expected_reason = truth.idxmax(axis=1).where(truth.any(axis=1))
    q = read_dir(d / "quarantine" / "interactions")
    assert set(q["_reason"]) <= set(KINDS)
    # every quarantined row is the raw row it came from, with the reason an independent check gives it
    for _, row in q.sample(60, random_state=1).iterrows():
        raw = pq.read_table(row["_source_file"]).slice(int(row["_source_row"]), 1).to_pandas().iloc[0]
        assert raw["interaction_id"] == row["interaction_id"]
        same_dwell = ev.dwell_time.fillna(-1e9) == (raw["dwell_time"] if pd.notna(raw["dwell_time"]) else -1e9)
        matches = ev.index[(ev.interaction_id == raw["interaction_id"])
                           & (ev.event_timestamp == raw["event_timestamp"]) & same_dwell]
        assert row["_reason"] in set(expected_reason.loc[matches].dropna())
    validated = read_dir(d / "validated" / "interactions")
    assert len(validated) + len(q) == len(ev)
    assert validated.interaction_id.is_unique
    # validated rows are exactly the rows no rule flags
    assert len(validated) == int((~truth.any(axis=1)).sum())


def test_too_many_bad_rows_stop_the_pipeline_and_publish_nothing(clean_copy, tmp_path):
    cfg = make_config(clean_copy)
    write_raw_events(cfg.generation, clean_copy, fault_rate=0.05, progress=False)
    with pytest.raises(ValidationFailed) as e:
        validate_events(cfg, as_of=AS_OF)
    msg = str(e.value)
    assert "interactions:" in msg and "% > 1% threshold" in msg and "\n" not in msg
    assert not (clean_copy / "validated" / "interactions").exists()
    assert any((clean_copy / "quarantine" / "interactions").rglob("*.parquet"))
    report = json.loads((clean_copy / "reports" / "validation" / "interactions.json").read_text())
    assert report["gate"] == "fail" and report["failures"]


@pytest.mark.parametrize(
    ("validation", "rule"),
    [({"ctr": (0.5, 0.9)}, "ctr_in_range"), ({"like_rate": (0.2, 0.3)}, "like_rate_in_range"),
     ({"daily_rows_vs_median": (0.99, 1.01)}, "daily_volume_vs_median")],
)
def test_table_level_statistics_stop_the_pipeline(clean_copy, validation, rule):
    with pytest.raises(ValidationFailed, match=rf"interactions\.{rule} failed"):
        validate_events(make_config(clean_copy, **validation), as_of=AS_OF)


def test_a_missing_day_is_a_gap(clean_copy):
    shutil.rmtree(clean_copy / "raw" / "interactions" / "date=2024-02-10")
    with pytest.raises(ValidationFailed, match=r"rows_every_day failed .*2024-02-10"):
        validate_events(make_config(clean_copy), as_of=AS_OF)


def test_key_collapse_stops_even_under_the_quarantine_threshold(clean_copy):
    cfg = make_config(clean_copy, max_quarantine_fraction=0.5, max_duplicate_id_fraction=0.001)
    write_raw_events(cfg.generation, clean_copy, fault_rate=0.05, progress=False)
    with pytest.raises(ValidationFailed, match="interaction_id_uniqueness"):
        validate_events(cfg, as_of=AS_OF)


def test_events_after_as_of_are_in_the_future(clean_copy):
    cfg = make_config(clean_copy, max_quarantine_fraction=1.0, min_rows_per_day=0,
                      daily_rows_vs_median=(0.0, 100.0))
    summary = validate_events(cfg, as_of=datetime(2024, 2, 15, tzinfo=timezone.utc))
    ev, _, _ = read_raw(clean_copy)
    assert summary.tables["interactions"].by_reason["in_future"] == int(
        (ev.event_timestamp > pd.Timestamp("2024-02-15", tz="UTC")).sum())


def _rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def test_null_and_out_of_set_values_are_quarantined_not_crashing(clean_copy):
    part = sorted((clean_copy / "raw" / "interactions" / "date=2024-02-05").glob("*.parquet"))[0]
    t = pq.read_table(part)
    click = t.column("click").to_pylist()
    ids = t.column("interaction_id").to_pylist()
    click[0], ids[1] = None, None
    t = t.set_column(t.schema.get_field_index("click"), "click", pa.array(click, pa.int8()))
    t = t.set_column(t.schema.get_field_index("interaction_id"), "interaction_id", pa.array(ids, pa.string()))
    _rewrite(part, t)
    summary = validate_events(make_config(clean_copy), as_of=AS_OF)
    res = summary.tables["interactions"]
    assert res.by_reason["null_click"] == 1 and res.by_reason["null_interaction_id"] == 1
    assert res.quarantined == 2


def test_rerun_is_idempotent_and_a_day_range_touches_only_its_days(clean_copy):
    cfg = make_config(clean_copy)
    validate_events(cfg, as_of=AS_OF)
    out = clean_copy / "validated" / "interactions"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    first = read_dir(out)
    validate_events(cfg, start=date(2024, 2, 10), end=date(2024, 2, 11), as_of=AS_OF)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    changed = {p.parent.name for p in after if after[p] != before.get(p)}
    assert changed == {"date=2024-02-10", "date=2024-02-11"}
    pd.testing.assert_frame_equal(read_dir(out).sort_values("interaction_id").reset_index(drop=True),
                                  first.sort_values("interaction_id").reset_index(drop=True))


def test_data_docs_are_built_and_readable_offline(clean_copy):
    validate_events(make_config(clean_copy), as_of=AS_OF)
    docs = clean_copy / "reports" / "data_docs"
    index = (docs / "index.html").read_text()
    assert "raw_interactions" in index
    pages = list(docs.rglob("*.html"))
    assert len(pages) >= 4
    for page in pages:  # nothing from a CDN: no remote script, stylesheet, image or font
        assert not re.search(r'(src|href)="https?://|url\(["\']?https?://', page.read_text())
    validation_pages = [p.read_text() for p in pages if "runs" in p.parts]
    assert len(validation_pages) == 5  # users, items, one interactions chunk, totals, daily
    # rules by the CLI's names, explained in words; the view's helper columns never appear
    interactions = next(html for html in validation_pages if "raw_interactions.v1" in html and "before_signup" in html)
    assert "event_timestamp is not before the user&#39;s signup_date" in interactions
    assert "_signup_date" not in interactions and "_dwell_if_click" not in interactions


def test_data_docs_keep_a_bounded_history_of_every_suite(clean_copy):
    for _ in range(3):
        validate_events(make_config(clean_copy, docs_history=2), as_of=AS_OF)
    runs = clean_copy / "reports" / "data_docs" / "runs"
    for suite in ("raw_users.v1", "raw_items.v1", "raw_interactions.v1", "raw_interactions_totals.v1",
                  "raw_interactions_daily.v1"):
        assert len(list((runs / suite).glob("*.json"))) == 2 == len(list((runs / suite).glob("*.html")))
    index = (clean_copy / "reports" / "data_docs" / "index.html").read_text()
    assert index.count('<tr data-stage="validate"') == 10


# ------------------------------------------------------------------------------------ unreadable input


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FEEDSTORE_CONFIG", "FEEDSTORE_DATA_DIR")}
    return subprocess.run([sys.executable, "-m", "feedstore", "--data-dir", str(data_dir), *args,
                           "--as-of", "2026-01-01"] if args and args[0] == "validate" else
                          [sys.executable, "-m", "feedstore", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, env=env, timeout=1200)


def _one_line_error(res, *fragments):
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for f in fragments:
        assert f in lines[0]


def first_part(d: Path) -> Path:
    return sorted((d / "raw" / "interactions").rglob("*.parquet"))[0]


def test_truncated_parquet(clean_copy):
    part = first_part(clean_copy)
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    _one_line_error(cli(clean_copy, "validate"), str(part), "not a readable Parquet file")


def test_missing_column(clean_copy):
    part = first_part(clean_copy)
    _rewrite(part, pq.read_table(part).drop_columns(["dwell_time"]))
    _one_line_error(cli(clean_copy, "validate"), str(part), "missing column 'dwell_time'")


def test_wrong_type_user_id_as_strings(clean_copy):
    part = first_part(clean_copy)
    t = pq.read_table(part)
    t = t.set_column(1, "user_id", pa.array([str(x) for x in t.column("user_id").to_pylist()]))
    _rewrite(part, t)
    _one_line_error(cli(clean_copy, "validate"), str(part), "column 'user_id' has type string, expected int64")


def test_empty_users_table(clean_copy):
    path = clean_copy / "raw" / "users.parquet"
    _rewrite(path, pq.read_table(path).slice(0, 0))
    _one_line_error(cli(clean_copy, "validate"), str(path), "table is empty")


def test_missing_directory(tmp_path):
    _one_line_error(cli(tmp_path / "nothing", "validate"), "raw/interactions: directory not found")


def test_missing_users_file(clean_copy):
    (clean_copy / "raw" / "users.parquet").unlink()
    _one_line_error(cli(clean_copy, "validate"), "users.parquet: file not found")


def test_gate_failure_exit_code_from_cli(clean_copy):
    cfg = make_config(clean_copy)
    write_raw_events(cfg.generation, clean_copy, fault_rate=0.05, progress=False)
    res = cli(clean_copy, "validate", "--start", "2024-02-01", "--end", "2024-02-29")
    assert res.returncode == 4
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("feedstore: error: validation failed")


def test_input_error_from_api():
    with pytest.raises(InputDataError, match="directory not found"):
        validate_events(make_config(Path("/nonexistent/feedstore")), as_of=AS_OF)


def test_validated_ids_are_unique_across_partitions(faulty_run):
    d, _, _ = faulty_run
    validated = read_dir(d / "validated" / "interactions")
    assert validated.interaction_id.is_unique
    assert not validated.duplicated(["user_id", "item_id", "event_timestamp"]).any()
    assert np.isin(validated.user_id, read_dir(d / "validated" / "users.parquet").user_id).all()


def test_chunking_does_not_change_the_result_and_finds_cross_chunk_duplicates(clean_copy, tmp_path):
    # plant an id of 2024-02-03 into 2024-02-25: far apart, so in different chunks when chunks are small
    src = sorted((clean_copy / "raw" / "interactions" / "date=2024-02-03").glob("*.parquet"))[0]
    dst = sorted((clean_copy / "raw" / "interactions" / "date=2024-02-25").glob("*.parquet"))[0]
    planted_id = pq.read_table(src).column("interaction_id")[5].as_py()
    t = pq.read_table(dst)
    ids = t.column("interaction_id").to_pylist()
    ids[7] = planted_id
    _rewrite(dst, t.set_column(0, "interaction_id", pa.array(ids, pa.string())))
    other = tmp_path / "other"
    shutil.copytree(clean_copy / "raw", other / "raw")

    small = validate_events(make_config(clean_copy, chunk_rows=10_000), as_of=AS_OF)
    large = validate_events(make_config(other, chunk_rows=10_000_000), as_of=AS_OF)
    assert small.tables["interactions"].by_reason == large.tables["interactions"].by_reason == {
        "duplicate_interaction_id": 1}
    q = read_dir(clean_copy / "quarantine" / "interactions")
    assert q["date"].astype(str).tolist() == ["2024-02-25"]  # the later occurrence is the duplicate
    a = read_dir(clean_copy / "validated" / "interactions").sort_values("interaction_id").reset_index(drop=True)
    b = read_dir(other / "validated" / "interactions").sort_values("interaction_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    pages = list((clean_copy / "reports" / "data_docs" / "runs" / "raw_interactions.v1").glob("*.html"))
    assert len(pages) >= 3  # one GX validation per chunk
