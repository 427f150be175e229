"""FastMaterializationEngine against Feast's stock engine: the same bytes in Redis, the same online answers.

Both engines run through Feast's own CLI (`feast apply`, `feast materialize`, `feast materialize-incremental`) on
copies of feature_repo/ that differ only in `batch_engine` (and in registry path and Redis database), over the
pipeline's statistics plus an extra Parquet file per view with edge values (nulls, NaN, -0.0, infinities,
negative ints, item_category -1, empty / null / NaN-holding float lists, timestamps before 1970 and with
sub-second parts, several rows per entity).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from feedstore.core.duck import connect
from feedstore.plugins.fast_materialize import ENGINE_TYPE, encode_values

ROOT = Path(__file__).resolve().parents[2]
FEAST = str(Path(sys.executable).with_name("feast"))
VIEWS = {"user_daily_stats": ["user_id"], "item_daily_stats": ["item_id"],
         "user_item_daily_stats": ["user_id", "item_id"]}
FMT = "%Y-%m-%dT%H:%M:%S"


# ------------------------------------------------------------------------------------------ data


def _edge_rows(view: str, schema: pa.Schema, end: datetime) -> list[dict]:
    """Rows with every edge value the encoders must get right, for entities the pipeline never makes."""
    day = timedelta(days=1)
    rows: list[dict] = []

    def row(ts: datetime, **values) -> dict:
        base = {f.name: None for f in schema}
        base.update(event_timestamp=ts, **values)
        if "date" in base:
            base["date"] = None
        return base

    ints = [n for n in schema.names if schema.field(n).type == pa.int64() and not n.endswith("_id")]
    doubles = [n for n in schema.names if schema.field(n).type == pa.float64()]
    edge_ints = [None, -1, 0, 2**40, -(2**40), 127, 128, 16383, 16384]
    edge_doubles = [None, float("nan"), -0.0, float("inf"), float("-inf"), 1e-300, -2.5, 0.1]
    for k in range(12):
        ts = end - 2 * day + timedelta(microseconds=123_457 * k)  # sub-second stamps
        values = {n: edge_ints[(k + j) % len(edge_ints)] for j, n in enumerate(ints)}
        values.update({n: edge_doubles[(k + j) % len(edge_doubles)] for j, n in enumerate(doubles)})
        if view == "user_daily_stats":
            values["user_id"] = 10**6 + k
            values["user_category_affinity"] = [[], None, [1.0, None, float("nan")], [0.25] * 40, [-0.0, 3.4e38],
                                                [float("inf")]][k % 6]
            values["user_signup_timestamp"] = [None, datetime(1969, 12, 31, 23, 59, 58, 500_000, tzinfo=timezone.utc),
                                               datetime(1970, 1, 1, tzinfo=timezone.utc),
                                               datetime(2024, 2, 3, 4, 5, 6, 789, tzinfo=timezone.utc)][k % 4]
        elif view == "item_daily_stats":
            values["item_id"] = 10**6 + k
            values["item_category"] = [-1, None, 0, 9, -(2**31), 2**31 - 1][k % 6]
            values["item_creation_timestamp"] = [datetime(1960, 5, 5, 0, 0, 0, 1, tzinfo=timezone.utc), None,
                                                 datetime(2024, 1, 1, tzinfo=timezone.utc)][k % 3]
        else:
            values.update(user_id=10**6 + k % 3, item_id=10**6 + k)
        rows.append(row(ts, **values))
        # the same values for other entities 20 days back: in the first window, so the first materialization
        # (RESTORE of new keys) meets every edge value too, long float lists included
        ids = {key: values[key] + 100 for key in ("user_id", "item_id") if key in values}
        rows.append(row(end - 20 * day + timedelta(microseconds=123_457 * k), **{**values, **ids}))
        # an older row of the same entity, and one after the window's end: neither may win
        rows.append(row(ts - 3 * day, **{**values, **{n: 999 for n in ints}}))
        rows.append(row(end + day, **{**values, **{n: 777 for n in ints}}))
    return rows


@pytest.fixture(scope="module")
def edge_data(stats_data, tmp_path_factory) -> tuple[Path, datetime]:
    """The pipeline's statistics plus one edge-value Parquet file per view; returns (data dir, newest stamp)."""
    d = tmp_path_factory.mktemp("fastmat") / "data"
    shutil.copytree(stats_data, d)
    con = connect()
    end = con.execute(f"SELECT max(event_timestamp) FROM read_parquet('{d}/offline/user_daily_stats/**/*.parquet', "
                      "hive_partitioning = false)").fetchone()[0].astimezone(timezone.utc)
    for view in VIEWS:
        files = sorted((d / "offline" / view).rglob("*.parquet"))
        schema = pq.read_schema(files[0]).remove_metadata()
        out = d / "offline" / view / "date=2099-01-01" / "edge.parquet"
        out.parent.mkdir()
        pq.write_table(pa.Table.from_pylist(_edge_rows(view, schema, end), schema=schema), out)
    return d, end


# ------------------------------------------------------------------------------------------ repos and CLI


def _repo(tmp: Path, name: str, data_dir: Path, online: str, fast: bool, extra: str = "") -> tuple[Path, Path]:
    """A copy of feature_repo/ with its own registry, `online` store settings and engine."""
    repo = tmp / f"repo-{name}"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    source = "feature_store.yaml" if online.startswith("redis") else "feature_store.sqlite.yaml"
    text = (ROOT / "feature_repo" / source).read_text()
    assert f"type: {ENGINE_TYPE}" in text  # the shipped yaml plugs the engine in
    text = re.sub(r"registry\.(redis|sqlite)\.db", f"registry.{name}.db", text)
    text = text.replace("online.sqlite.db", f"online.{name}.db")
    text = text.replace("${REDIS_CONNECTION_STRING}", online.removeprefix("redis:"))
    if not fast:
        text = re.sub(r"\nbatch_engine:\n(  .*\n)+", "\n", text)
    else:
        text, n = re.subn(r"(?m)^  batch_rows: \d+$", "  batch_rows: 997", text)  # several batches per view
        assert n == 1, "the shipped yaml sets batch_rows"
    text = text.replace("online_store:\n", f"online_store:\n{extra}", 1) if extra else text
    (repo / "feature_store.yaml").write_text(text)
    return repo, repo / "feature_store.yaml"


def _feast(repo: Path, yaml: Path, data_dir: Path, *args: str) -> str:
    env = {**os.environ, "FEEDSTORE_DATA_DIR": str(data_dir)}
    res = subprocess.run([FEAST, "-c", str(repo), "-f", str(yaml), *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout + res.stderr


def _dump(url: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every key of one Redis database with all its hash fields (HGETALL), whether it has a TTL, and its DUMP
    (the hash's internal encoding and field order too: RESTOREd keys must be what HSET makes)."""
    host, _, rest = url.partition(":")
    port, _, db = rest.partition(",db=")
    client = redis.Redis(host=host, port=int(port), db=int(db))
    keys = sorted(client.scan_iter(count=5000))
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hgetall(k)
        pipe.ttl(k)
        pipe.dump(k)
    replies = pipe.execute()
    return {k: {**replies[3 * i], b"(has ttl)": replies[3 * i + 1] > 0, b"(dump)": replies[3 * i + 2]}
            for i, k in enumerate(keys)}


def _latest_counts(data_dir: Path, start: datetime, end: datetime) -> dict[str, int]:
    con = connect()
    return {view: con.execute(f"SELECT count(DISTINCT ({', '.join(keys)})) FROM read_parquet("
                              f"'{data_dir}/offline/{view}/**/*.parquet', hive_partitioning = false) "
                              "WHERE event_timestamp BETWEEN $s AND $e", {"s": start, "e": end}).fetchone()[0]
            for view, keys in VIEWS.items()}


def _per_view(dump: dict) -> dict[str, int]:
    return {view: sum(1 for fields in dump.values() if f"_ts:{view}".encode() in fields) for view in VIEWS}


@pytest.fixture(scope="module")
def redis_pair(redis_url):
    """Two fresh logical databases of the throwaway Redis (14 and 15: the shared fixture counts up from 1)."""
    if os.environ.get("FEEDSTORE_TEST_REDIS"):
        pytest.skip("needs a throwaway Redis: these tests flush their two databases")
    urls = [f"{redis_url},db=14", f"{redis_url},db=15"]
    host, _, port = redis_url.partition(":")
    for db in (14, 15):
        redis.Redis(host=host, port=int(port), db=db).flushdb()
    return urls


# ------------------------------------------------------------------------------------------ tests


def test_fast_engine_writes_exactly_what_feasts_engine_writes_to_redis(edge_data, redis_pair, tmp_path, monkeypatch):
    from feast import FeatureStore

    data_dir, end = edge_data
    monkeypatch.setenv("FEEDSTORE_DATA_DIR", str(data_dir))
    stock = _repo(tmp_path, "stock", data_dir, "redis:" + redis_pair[0], fast=False)
    fast = _repo(tmp_path, "fast", data_dir, "redis:" + redis_pair[1], fast=True)
    for repo, yaml in (stock, fast):
        _feast(repo, yaml, data_dir, "apply")
    windows = [(end - timedelta(days=30), end - timedelta(days=10)),  # a first load, through Feast's CLI
               (end - timedelta(days=30), end),  # newer rows overwrite
               (end - timedelta(days=40), end - timedelta(days=5))]  # older rows must not overwrite newer ones
    stores = [FeatureStore(repo_path=str(repo), fs_yaml_file=yaml) for repo, yaml in (stock, fast)]
    for k, (start, stop) in enumerate(windows):
        if k == 0:
            logs = {name: _feast(repo, yaml, data_dir, "materialize", start.strftime(FMT), stop.strftime(FMT))
                    for name, (repo, yaml) in (("stock", stock), ("fast", fast))}
            assert "with the fast engine" in logs["fast"] and "fast engine" not in logs["stock"]
            # the log says how many entities each view read and wrote
            assert re.search(r"materialized item_daily_stats .* \d[\d,]* entities read, \d[\d,]* written",
                             logs["fast"])
            # a first materialization into an empty database: new keys are RESTOREd (later windows: HSET)
            for view in VIEWS:
                assert re.search(rf"materialize {view}: [1-9][\d,]* new keys with RESTORE", logs["fast"]), view
        else:
            for store in stores:
                store.materialize(start_date=start, end_date=stop)
        a, b = _dump(redis_pair[0]), _dump(redis_pair[1])
        assert a.keys() == b.keys()
        diff = [key for key in a if a[key] != b[key]]
        assert not diff, f"{len(diff)} keys differ, e.g. {diff[0]!r}: {a[diff[0]]} vs {b[diff[0]]}"
    # every entity of every view is there, edge entities included
    assert _per_view(b) == _latest_counts(data_dir, end - timedelta(days=40), end)
    assert all(n > 100 for n in _per_view(b).values())
    assert sum(1 for key in b if b"\x40\x42\x0f\x00\x00\x00\x00\x00" in key) >= 2  # user / item 1,000,000
    # materialize-incremental through Feast's CLI (it picks up the rows after the last end); bytes stay identical
    for repo, yaml in (stock, fast):
        _feast(repo, yaml, data_dir, "materialize-incremental", (end + timedelta(days=3)).strftime(FMT))
    assert _dump(redis_pair[0]) == _dump(redis_pair[1])
    stores = [FeatureStore(repo_path=str(repo), fs_yaml_file=yaml) for repo, yaml in (stock, fast)]
    for view in VIEWS:  # Feast's registry bookkeeping is the same for both engines
        intervals = [s.get_feature_view(view).materialization_intervals for s in stores]
        assert len(intervals[1]) == len(intervals[0]) > 0
        assert intervals[1][-1][1].timestamp() == (end + timedelta(days=3)).timestamp()
    _same_online_answers(stores, data_dir)


def _same_online_answers(stores, data_dir: Path) -> None:
    """store.get_online_features answers identically for every entity of every view (and an unknown one)."""
    con = connect()
    for view, keys in VIEWS.items():
        rows = con.execute(f"SELECT DISTINCT {', '.join(keys)} FROM read_parquet('{data_dir}/offline/{view}/**/"
                           f"*.parquet', hive_partitioning = false) ORDER BY ALL").fetchall()
        entity_rows = [dict(zip(keys, r, strict=True)) for r in rows] + [{k: 10**9 for k in keys}]
        fv = stores[0].get_feature_view(view)
        refs = [f"{view}:{f.name}" for f in fv.features]
        got = [s.get_online_features(features=refs, entity_rows=entity_rows).to_dict(include_event_timestamps=True)
               for s in stores]
        assert got[0].keys() == got[1].keys()
        for col in got[0]:
            for x, y in zip(got[0][col], got[1][col], strict=True):
                assert _same(x, y), (view, col, x, y)


def _same(x, y) -> bool:
    if isinstance(x, list) or isinstance(y, list):
        return isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and all(
            _same(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return type(x) is type(y) and x == y


def test_fast_engine_key_ttl_and_skip_dedup_match_feast(edge_data, redis_pair, tmp_path, monkeypatch):
    """`key_ttl_seconds` (EXPIRE after each HSET) and `skip_dedup` (no timestamp read) as Feast's writer does them."""
    from feast import FeatureStore

    data_dir, end = edge_data
    monkeypatch.setenv("FEEDSTORE_DATA_DIR", str(data_dir))
    for url in redis_pair:
        host, _, rest = url.partition(":")
        port, _, n = rest.partition(",db=")
        redis.Redis(host=host, port=int(port), db=int(n)).flushdb()
    extra = "  key_ttl_seconds: 86400\n  skip_dedup: true\n"
    repos = [_repo(tmp_path, name, data_dir, "redis:" + url, fast=fast, extra=extra)
             for name, url, fast in (("stock-ttl", redis_pair[0], False), ("fast-ttl", redis_pair[1], True))]
    for repo, yaml in repos:
        _feast(repo, yaml, data_dir, "apply")
    stores = [FeatureStore(repo_path=str(repo), fs_yaml_file=yaml) for repo, yaml in repos]
    for start, stop in [(end - timedelta(days=30), end), (end - timedelta(days=40), end - timedelta(days=5))]:
        for store in stores:
            store.materialize(start_date=start, end_date=stop)
        a, b = _dump(redis_pair[0]), _dump(redis_pair[1])
        assert a == b
    assert all(fields[b"(has ttl)"] for fields in b.values())


def test_latest_rows_read_only_the_windows_day_partitions(edge_data):
    """The latest-row query over the day partitions that can hold the window's rows gives the same rows (every
    column) as over the whole glob, with fewer files opened; a source outside the day-partition layout is read
    whole."""
    from feedstore.plugins.fast_materialize import _latest_rows_sql, _utc, _window_files

    data_dir, end = edge_data
    con = connect()
    for view, keys in VIEWS.items():
        glob = f"{data_dir}/offline/{view}/**/*.parquet"
        files = sorted((data_dir / "offline" / view).rglob("*.parquet"))
        names = pq.read_schema(files[0]).names
        fv = SimpleNamespace(entity_columns=[SimpleNamespace(name=k) for k in keys],
                             features=[SimpleNamespace(name=n) for n in names if n not in [*keys, "event_timestamp"]],
                             batch_source=SimpleNamespace(timestamp_field="event_timestamp",
                                                          created_timestamp_column=None))
        for days in (2, 10, 30, 40):
            params = {"start": _utc(end - timedelta(days=days)), "end": _utc(end)}
            window = _window_files(con, glob, params["start"])
            assert window is not None and 0 < len(window) < len(files)
            whole = con.execute(_latest_rows_sql(fv, glob) + " ORDER BY ALL", params).fetchall()
            pruned = con.execute(_latest_rows_sql(fv, window) + " ORDER BY ALL", params).fetchall()
            assert repr(pruned) == repr(whole) and len(whole) > 10, (view, days)  # repr: NaN equals NaN
    assert _window_files(con, f"{data_dir}/offline/user_daily_stats/*/*.parquet", _utc(end)) is None


def _flush(urls: list[str]) -> None:
    for url in urls:
        host, _, rest = url.partition(":")
        port, _, n = rest.partition(",db=")
        redis.Redis(host=host, port=int(port), db=int(n)).flushdb()


def test_restore_denied_by_acl_falls_back_to_hset(edge_data, redis_pair, redis_url, tmp_path, monkeypatch, caplog):
    """A Redis user without RESTORE (a real ACL user on the throwaway server): the probe fails, every view is
    written with HSET, one log line per view says so and why, and the bytes equal the stock engine's."""
    from feast import FeatureStore

    data_dir, end = edge_data
    monkeypatch.setenv("FEEDSTORE_DATA_DIR", str(data_dir))
    _flush(redis_pair)
    host, _, port = redis_url.partition(":")
    admin = redis.Redis(host=host, port=int(port))
    admin.execute_command("ACL", "SETUSER", "feedstore-norestore", "reset", "on", "nopass", "~*", "+@all", "-restore")
    try:
        repos = [_repo(tmp_path, "stock-acl", data_dir, "redis:" + redis_pair[0], fast=False),
                 _repo(tmp_path, "fast-acl", data_dir, "redis:" + redis_pair[1] + ",username=feedstore-norestore",
                       fast=True)]
        for repo, yaml in repos:
            _feast(repo, yaml, data_dir, "apply")
        stores = [FeatureStore(repo_path=str(repo), fs_yaml_file=yaml) for repo, yaml in repos]
        for store in stores:
            with caplog.at_level("INFO", logger="feedstore.plugins.fast_materialize"):
                store.materialize(start_date=end - timedelta(days=30), end_date=end)
        assert _dump(redis_pair[0]) == _dump(redis_pair[1])
        for view in VIEWS:
            assert re.search(rf"materialize {view}: 0 new keys with RESTORE, [1-9][\d,]* rows with HSET \(the "
                             r"RESTORE probe failed: NoPermissionError", caplog.text), view
        assert "with the fast engine" in caplog.text
    finally:
        admin.execute_command("ACL", "DELUSER", "feedstore-norestore")


def test_keys_created_between_exists_and_restore_follow_feasts_rule(edge_data, redis_pair, tmp_path, monkeypatch,
                                                                    caplog):
    """The BUSYKEY race: the EXISTS check is made to see none of a batch's keys (as if another writer created
    them right after it), so RESTOREs meet existing keys; those rows are written again the normal way: newer rows
    win, older rows do not overwrite. The bytes equal the stock engine's after each window."""
    from feast import FeatureStore

    from feedstore.plugins import fast_materialize as fm

    data_dir, end = edge_data
    monkeypatch.setenv("FEEDSTORE_DATA_DIR", str(data_dir))
    _flush(redis_pair)
    repos = [_repo(tmp_path, name, data_dir, "redis:" + url, fast=fast)
             for name, url, fast in (("stock-busy", redis_pair[0], False), ("fast-busy", redis_pair[1], True))]
    for repo, yaml in repos:
        _feast(repo, yaml, data_dir, "apply")
    stores = [FeatureStore(repo_path=str(repo), fs_yaml_file=yaml) for repo, yaml in repos]
    for store in stores:
        store.materialize(start_date=end - timedelta(days=30), end_date=end - timedelta(days=10))
    assert _dump(redis_pair[0]) == _dump(redis_pair[1])

    real = fm._RedisStream.newer_than_stored

    def blind(self, seconds, nanos):
        if not self.any_stored:
            self.check.read_response()  # the EXISTS count, ignored: the keys "appear" just after it
            return np.ones(len(seconds), dtype=bool)
        return real(self, seconds, nanos)

    monkeypatch.setattr(fm._RedisStream, "newer_than_stored", blind)
    for start, stop in [(end - timedelta(days=30), end), (end - timedelta(days=40), end - timedelta(days=5))]:
        caplog.clear()
        for store in stores:
            with caplog.at_level("INFO", logger="feedstore.plugins.fast_materialize"):
                store.materialize(start_date=start, end_date=stop)
        a, b = _dump(redis_pair[0]), _dump(redis_pair[1])
        assert a.keys() == b.keys()
        diff = [key for key in a if a[key] != b[key]]
        assert not diff, f"{len(diff)} keys differ, e.g. {diff[0]!r}: {a[diff[0]]} vs {b[diff[0]]}"
        for view in VIEWS:
            assert re.search(rf"materialize {view}: .*[1-9][\d,]* keys created by another writer meanwhile "
                             r"\(BUSYKEY\)", caplog.text), view


def test_sqlite_keeps_feasts_stock_path_with_identical_rows(edge_data, tmp_path, monkeypatch, caplog):
    """SQLite has no fast path: the engine hands its views to Feast's stock engine; the rows are the stock rows."""
    from feast import FeatureStore

    data_dir, end = edge_data
    monkeypatch.setenv("FEEDSTORE_DATA_DIR", str(data_dir))
    dbs = {}
    for name, fast in (("stock-sqlite", False), ("fast-sqlite", True)):
        repo, yaml = _repo(tmp_path, name, data_dir, "sqlite", fast=fast)
        _feast(repo, yaml, data_dir, "apply")
        caplog.clear()
        with caplog.at_level("INFO", logger="feedstore.plugins.fast_materialize"):
            FeatureStore(repo_path=str(repo), fs_yaml_file=yaml).materialize(end - timedelta(days=30), end)
        assert ("Feast's stock engine (online store SqliteOnlineStore)" in caplog.text) == fast
        dbs[name] = data_dir / "feast" / f"online.{name}.db"
    tables = {}
    for name, path in dbs.items():
        with sqlite3.connect(path) as db:
            names = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
            tables[name] = {t: db.execute(f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts '
                                          f'FROM "{t}" ORDER BY entity_key, feature_name').fetchall() for t in names}
    assert tables["stock-sqlite"] == tables["fast-sqlite"]
    assert all(len(rows) > 1000 for rows in tables["fast-sqlite"].values())


EDGE_COLUMNS = [
    ("INT64", pa.array([0, 1, -1, 127, 128, 2**53 + 1, -(2**63), None, 300], pa.int64())),
    ("INT64", pa.array([5, 2**40, -7, 2**63 - 1, -(2**63), 2**53 + 1], pa.int64())),
    ("INT32", pa.array([0, -1, 2**31 - 1, -(2**31), None, 9], pa.int32())),
    ("INT32", pa.array([-1, 3], pa.int64())),
    ("DOUBLE", pa.array([0.0, -0.0, float("nan"), None, float("inf"), -1e-310, 1.5], pa.float64())),
    ("FLOAT", pa.array([0.0, float("nan"), None, 1.1, -3.4e38], pa.float32())),
    ("FLOAT", pa.array([1.1, 1e39, None], pa.float64())),
    ("BOOL", pa.array([True, False, None], pa.bool_())),
    ("UNIX_TIMESTAMP", pa.array([-1_500_000, 1_500_000, None, 0, 1_712_000_000_123_456], pa.timestamp("us", "UTC"))),
    ("UNIX_TIMESTAMP", pa.array([None, None], pa.timestamp("us", "UTC"))),
    ("UNIX_TIMESTAMP", pa.array([-1, 10**18 + 7], pa.timestamp("ns"))),
    ("STRING", pa.array(["", "a", None, "é" * 70, "x" * 200], pa.string())),
    ("FLOAT_LIST", pa.array([[], None, [1.0, None, float("nan")], [0.1] * 40, [-0.0]], pa.list_(pa.float32()))),
    ("FLOAT_LIST", pa.array([[0.1, 1e39], None], pa.list_(pa.float64()))),
    ("DOUBLE_LIST", pa.array([[0.1, None], [], None, [float("-inf")] * 20], pa.list_(pa.float64()))),
]


@pytest.mark.parametrize("kind,column", EDGE_COLUMNS, ids=[f"{k}-{c.type}-{i}" for i, (k, c) in
                                                            enumerate(EDGE_COLUMNS)])
def test_each_encoder_gives_feasts_value_bytes(kind, column):
    """encode_values == python_values_to_proto_values(...).SerializeToString() per value, as Feast's writer calls it,
    also on a slice (Arrow offsets) of the column."""
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    vt = ValueType[kind]
    for col in (column, column.slice(1)):
        expected = [v.SerializeToString() for v in python_values_to_proto_values(col.to_numpy(zero_copy_only=False),
                                                                                   vt)]
        mat, lens = encode_values(col, vt)
        assert [mat[i, :lens[i]].tobytes() for i in range(len(col))] == expected
    assert np.all(lens >= 0)
