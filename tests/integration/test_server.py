"""The HTTP feature server (`feedstore serve`) for real: uvicorn, Redis, Feast; one feature order, one set of types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import requests

from feedstore.core.feast_repo import feature_store
from feedstore.core.spec import FEATURE_SPEC
from feedstore.serving.ranking import (
    SCHEMA_PATH,
    entity_rows_features,
    frame_columns,
    get_ranking_features,
    lookup_schema,
)
from feedstore.serving.request import RankingContext
from tests.conftest import _free_port, redis_server_binary
from tests.integration.test_feast import served  # noqa: F401 (the module fixture: data applied + materialized)

SERVICE_COLUMNS = [c.name for c in FEATURE_SPEC.service_columns()]
SCHEMA = json.loads(SCHEMA_PATH.read_text())


@contextmanager
def feature_server(data_dir: Path, redis: str, store: str = "redis", *extra: str):
    """`feedstore serve` in a subprocess on a free port; yields its base URL once /ready answers 200."""
    port = _free_port()
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data_dir), "REDIS_CONNECTION_STRING": redis}
    env.pop("FEEDSTORE_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "feedstore", "serve", "--online-store", store, "--port", str(port),
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if requests.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError("feedstore serve did not become ready: " + proc.stderr.read()[-2000:])
            time.sleep(0.3)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(served, redis_db):  # noqa: F811
    d, cfg, results = served
    with feature_server(d, redis_db, "redis", "--max-candidates", "300") as (url, _):
        yield url, cfg, results


def _missing(v) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v))


def _epoch(t) -> float | None:
    if _missing(t):
        return None
    return t.timestamp() if isinstance(t, datetime) else float(t)


def _same(x, y, where) -> None:
    """A served JSON value equals the expected Python value: same missingness, ints stay ints, floats exact."""
    if isinstance(x, list) or isinstance(y, list):
        assert x is not None and y is not None, where
        np.testing.assert_allclose(x, y, rtol=1e-7, err_msg=str(where))
    elif _missing(x) or _missing(y):
        assert _missing(x) and _missing(y), (where, x, y)
    elif isinstance(y, str):
        assert x == y, (where, x, y)
    else:
        if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
            assert type(x) is int, (where, x, y)  # integers stay integers
        assert x == pytest.approx(y, rel=1e-12, abs=1e-9), (where, x, y)


@pytest.mark.parametrize("hours_after", [7, 24 * 40])
def test_get_online_features_equals_feast(server, hours_after):
    """Every value of /get-online-features equals store.get_online_features for the same rows (several users,
    unknown users and items, repeated rows), with the one documented difference: a row older than its view's
    ttl at the request time is missing (Feast's online path would serve it)."""
    url, cfg, results = server
    store = feature_store(cfg, "redis")
    at = results["redis"].end + timedelta(hours=hours_after)
    rng = np.random.default_rng(hours_after)
    users = [int(u) for u in rng.integers(0, 400, 30)] + [10**9, 10**9, 3]
    items = [int(i) for i in rng.choice(1500, 30, replace=False)] + [10**9, 3, 10**9]
    devices = [["mobile", "desktop", "tablet"][k % 3] for k in range(len(items))]
    body = {"feature_service": "feed_ranking_v1",
            "entities": {"user_id": users, "item_id": items, "request_ts": [at.timestamp()] * len(items),
                         "device": devices}}
    r = requests.post(f"{url}/get-online-features", json=body, timeout=60)
    assert r.status_code == 200, r.text[:500]
    got = r.json()
    names = got["metadata"]["feature_names"]
    assert names == ["user_id", "item_id", *SERVICE_COLUMNS]  # the declared order, not Feast's set order
    assert all(set(res) == {"values", "statuses", "event_timestamps"} for res in got["results"])
    served_values = {n: res["values"] for n, res in zip(names, got["results"], strict=True)}
    statuses = {n: res["statuses"] for n, res in zip(names, got["results"], strict=True)}

    feast = store.get_online_features(
        features=store.get_feature_service("feed_ranking_v1"),
        entity_rows={"user_id": users, "item_id": items, "request_ts": [at] * len(items), "device": devices},
    ).to_dict(include_event_timestamps=True)
    service = store.get_feature_service("feed_ranking_v1")
    view_of = {f.name: p.name for p in service.feature_view_projections for f in p.features}
    ttl = {v.name: v.ttl for v in store.list_feature_views()}
    sentinel = {"user_daily_stats": "user_signup_timestamp", "item_daily_stats": "item_creation_timestamp",
                "user_item_daily_stats": "user_item_impressions"}
    live = {}
    for view, col in sentinel.items():
        live[view] = [not _missing(v) and _epoch(ts) is not None and 0 <= at.timestamp() - _epoch(ts)
                      <= ttl[view].total_seconds() for v, ts in zip(feast[col], feast[f"{col}__ts"], strict=True)]
        stamps = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_epoch(ts))) if ok else "1970-01-01T00:00:00Z"
                  for ts, ok in zip(feast[f"{col}__ts"], live[view], strict=True)]
        assert got["results"][names.index(col)]["event_timestamps"] == stamps, view
    # on-demand outputs of rows with an expired input: Feast computed them from the expired row; compare those
    # with Feast's own UDFs run on the ttl-masked inputs (the slow path of get_ranking_features)
    slow = entity_rows_features(store, np.array(users), np.array(items),
                                np.full(len(items), pd.Timestamp(at).value), devices, fast=False)
    request_outputs = {c.name for c in FEATURE_SPEC.on_demand_view("request_context").outputs}
    checked_stale = 0
    for name in SERVICE_COLUMNS:
        view = view_of[name]
        for k in range(len(items)):
            where = (name, k, users[k], items[k])
            if view in live:
                expected = feast[name][k] if live[view][k] else None
                if isinstance(expected, datetime):
                    expected = int(expected.timestamp())  # UnixTimestamp: epoch seconds, as feast serve writes it
                checked_stale += (not _missing(feast[name][k])) and not live[view][k]
                assert statuses[name][k] == ("PRESENT" if live[view][k] else "NOT_FOUND"), where
            elif name in request_outputs or (live["user_daily_stats"][k] and live["item_daily_stats"][k]):
                expected = feast[name][k]
            else:
                expected = float(slow[name][k])
            _same(served_values[name][k], expected, where)
    assert served_values["user_id"] == users and served_values["item_id"] == items
    if hours_after > 24 * 30:
        assert checked_stale > 0  # Feast served expired rows that the server reports missing
        assert all(v is None for v in served_values["user_clicks_7d"])


def test_get_online_features_with_feature_refs_and_full_names(server):
    url, _, results = server
    at = int(results["redis"].end.timestamp()) + 3600
    body = {"features": ["item_daily_stats:item_clicks_7d", "request_context:hour_of_day"],
            "full_feature_names": True,
            "entities": {"user_id": [1, 1], "item_id": [1, 2], "request_ts": [at, at], "device": ["mobile"] * 2}}
    r = requests.post(f"{url}/get-online-features", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["metadata"]["feature_names"] == ["user_id", "item_id", "item_daily_stats__item_clicks_7d",
                                                "request_context__hour_of_day"]
    assert out["results"][3]["values"] == [1, 1]


def test_rank_equals_get_ranking_features_and_matches_the_schema(server):
    url, cfg, results = server
    store = feature_store(cfg, "redis")
    at = results["redis"].end + timedelta(hours=9)
    items = list(range(0, 60)) + [10**9, 5]
    r = requests.post(f"{url}/rank", json={"user_id": 7, "item_ids": items, "request_ts": at.isoformat(),
                                           "device": "desktop"}, timeout=30)
    assert r.status_code == 200, r.text[:500]
    doc = r.json()
    jsonschema.validate(doc, SCHEMA)
    assert [c["item_id"] for c in doc["candidates"]] == items
    assert doc["missing_items"] == [10**9]
    assert list(doc["candidates"][0]["features"]) == SERVICE_COLUMNS
    frame = get_ranking_features(store, 7, items, RankingContext(at, "desktop"), fast=False)
    for k, cand in enumerate(doc["candidates"]):
        for name in SERVICE_COLUMNS:
            x, y = cand["features"][name], frame[name].iloc[k]
            if isinstance(y, pd.Timestamp):
                y = y.strftime("%Y-%m-%dT%H:%M:%SZ")
            elif isinstance(y, (np.integer, np.floating)):
                y = y.item()
            elif y is pd.NA:
                y = None
            _same(x, y, (name, k))
        assert cand["missing"]["item"] == bool(frame.item_missing.iloc[k])
    unknown = doc["candidates"][-2]["features"]
    assert unknown["item_impressions_7d"] is None and isinstance(doc["candidates"][0]["features"]["user_clicks_7d"],
                                                                 int)


def test_bad_requests_are_clear_4xx(server):
    url, _, _ = server
    ok_entities = {"user_id": [1], "item_id": [1], "request_ts": [1e9], "device": ["mobile"]}
    cases = [
        ("/get-online-features", {"feature_service": "feed_ranking_v2", "entities": ok_entities}, 404, "unknown"),
        ("/get-online-features", {"features": ["nope:x"], "entities": ok_entities}, 404, "unknown feature"),
        ("/get-online-features", {"feature_service": "feed_ranking_v1", "entities": {"user_id": [1]}}, 422, "lack"),
        ("/get-online-features", {"feature_service": "feed_ranking_v1",
                                  "entities": {**ok_entities, "item_id": ["a"]}}, 422, "item_id must be integers"),
        ("/rank", {"user_id": 1, "item_ids": [1, True]}, 422, "item_ids must be integers"),
        ("/rank", {"user_id": 1.5, "item_ids": [1]}, 422, "user_id must be integers"),
        ("/rank", {"user_id": 1, "item_ids": [2**63]}, 422, "int64"),
        ("/rank", {"user_id": 1, "item_ids": list(range(301))}, 413, "cap of 300"),
        ("/rank", {"user_id": 1, "item_ids": []}, 422, "no entity rows"),
        ("/rank", {"user_id": 1, "item_ids": [1], "device": "tv"}, 422, "device"),
        ("/rank", {"user_id": 1, "item_ids": [1], "request_ts": "soon"}, 422, "request_ts"),
        ("/rank", {"user_id": 1, "item_ids": [1], "feature_service": "x"}, 404, "unknown feature service"),
    ]
    for path, body, status, text in cases:
        r = requests.post(f"{url}{path}", json=body, timeout=30)
        assert r.status_code == status, (path, body, r.text)
        detail = r.json()["detail"]
        assert text in detail and "\n" not in detail, (path, detail)
    r = requests.post(f"{url}/rank", data=b"{not json", timeout=30)
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{url}/ready", timeout=10).json()["status"] == "ready"


def test_redis_down_is_503_with_one_line_and_no_password(served, tmp_path):  # noqa: F811
    """The server's own password-protected Redis goes away: /rank and /ready answer 503 with one line naming the
    host, never the password; /health stays 200 (the process is alive)."""
    d, _, _ = served
    port, secret = _free_port(), "s3cret-pw"
    redis_proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", secret],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with feature_server(d, f"127.0.0.1:{port},password={secret}") as (url, proc):
            ok = requests.post(f"{url}/rank", json={"user_id": 1, "item_ids": [1, 2]}, timeout=30)
            assert ok.status_code == 200 and ok.json()["missing_user"] is True  # an empty store: all missing
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
            t0 = time.time()
            r = requests.post(f"{url}/rank", json={"user_id": 1, "item_ids": [1, 2]}, timeout=30)
            assert r.status_code == 503, r.text
            detail = r.json()["detail"]
            assert detail.startswith(f"online store unreachable: Redis at 127.0.0.1:{port},password=***")
            assert secret not in detail and "\n" not in detail
            assert time.time() - t0 < 15
            ready = requests.get(f"{url}/ready", timeout=30)
            assert ready.status_code == 503 and secret not in ready.text
            assert requests.get(f"{url}/health", timeout=10).status_code == 200
            proc.terminate()
            _, err = proc.communicate(timeout=30)
            assert secret not in err
    finally:
        if redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


def test_serve_without_redis_fails_with_one_line(served):  # noqa: F811
    d, _, _ = served
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(d),
           "REDIS_CONNECTION_STRING": f"127.0.0.1:{_free_port()},password=hunter2"}
    res = subprocess.run([sys.executable, "-m", "feedstore", "serve", "--online-store", "redis", "--port",
                          str(_free_port())], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 5 and "Traceback" not in res.stderr and "hunter2" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("feedstore: error: cannot reach Redis")


def test_sqlite_server_goes_through_feast(served):  # noqa: F811
    d, _, results = served
    with feature_server(d, "unused:1", "sqlite") as (url, _):
        at = results["sqlite"].end.isoformat()
        r = requests.post(f"{url}/rank", json={"user_id": 1, "item_ids": [1, 2, 10**9], "request_ts": at}, timeout=60)
        assert r.status_code == 200, r.text[:500]
        doc = r.json()
        jsonschema.validate(doc, SCHEMA)
        assert doc["online_store"] == "sqlite" and doc["missing_items"] == [10**9]
        g = requests.post(f"{url}/get-online-features", json={
            "feature_service": "feed_ranking_v1",
            "entities": {"user_id": [1], "item_id": [1], "request_ts": [at], "device": ["tablet"]}}, timeout=60)
        assert g.status_code == 200 and g.json()["metadata"]["feature_names"][2:] == SERVICE_COLUMNS


# ------------------------------------------------------------------ item 3: one feature order, one set of types


def test_schema_file_is_generated_from_the_spec():
    assert SCHEMA == lookup_schema(), "run: python -c 'from feedstore.serving.ranking import *; ...' (see docstring)"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("store_name", ["sqlite", "redis"])
def test_frames_keep_the_declared_order_and_integer_types(served, store_name):  # noqa: F811
    _, cfg, results = served
    store = feature_store(cfg, store_name)
    frame = get_ranking_features(store, 1, [1, 10**9, 2], RankingContext(results[store_name].end))
    assert list(frame.columns) == frame_columns()
    assert frame.columns[2:2 + len(SERVICE_COLUMNS)].tolist() == SERVICE_COLUMNS
    for col in FEATURE_SPEC.service_columns():
        if col.dtype in ("int64", "int32"):
            assert str(frame[col.name].dtype) == "Int64", (col.name, frame[col.name].dtype)
    assert frame.item_clicks_7d.isna().tolist() == [False, True, False]


def test_cli_lookup_order_types_and_schema_independent_of_hash_seed(served):  # noqa: F811
    """Two processes with different PYTHONHASHSEED print the same document (Feast groups features in sets):
    features in the declared order, counts as integers although one candidate is unknown, schema-valid."""
    d, _, results = served
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "FEEDSTORE_DATA_DIR": str(d), "PYTHONHASHSEED": seed}
        env.pop("FEEDSTORE_CONFIG", None)
        res = subprocess.run([sys.executable, "-m", "feedstore", "--log-level", "WARNING", "lookup", "--user", "1",
                              "--items", "1,999999999,2", "--at", results["sqlite"].end.strftime("%Y-%m-%dT%H:%M:%S"),
                              "--online-store", "sqlite"], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outputs.append(res.stdout)
    assert outputs[0] == outputs[1]
    doc = json.loads(outputs[0])
    jsonschema.validate(doc, SCHEMA)
    first = doc["candidates"][0]["features"]
    assert list(first) == SERVICE_COLUMNS
    assert doc["candidates"][1]["features"]["item_clicks_7d"] is None
    for col in FEATURE_SPEC.service_columns():
        if col.dtype == "int64" and first[col.name] is not None:
            assert type(first[col.name]) is int, col.name
    assert '"user_clicks_7d": 0.0' not in outputs[0] and '"hour_of_day": 0.0' not in outputs[0]
