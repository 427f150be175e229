"""Feast from the pipeline: apply, materialize, online lookups for ranking, and the training/serving skew check.

Reads `feature_repo/` (definitions and feature_store*.yaml), never `ingestion/`. Feast settings come only from
the yaml files; this module sets the two environment variables they expand (FEEDSTORE_DATA_DIR and, for Redis,
REDIS_CONNECTION_STRING) and picks which file to use.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from feedstore.config import DEVICES, PipelineConfig
from feedstore.errors import FeedstoreError

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent / "feature_repo"
YAML_FILES = {"redis": REPO_DIR / "feature_store.yaml", "sqlite": REPO_DIR / "feature_store.sqlite.yaml"}
FEATURE_SERVICE = "feed_ranking_v1"
DEFAULT_REDIS = "localhost:6379"
TS_SUFFIX = "__ts"

#: Columns that tell whether an entity exists online (never null for a materialized entity).
USER_SENTINEL = "user_signup_timestamp"
ITEM_SENTINEL = "item_creation_timestamp"
PAIR_SENTINEL = "user_item_impressions"


class ServingError(FeedstoreError):
    """The online store or the feature repository cannot serve (unreachable, not applied, not materialized)."""

    exit_code = 5


def feast_environment(cfg: PipelineConfig, online_store: str) -> dict[str, str]:
    """Set (and return) the variables feature_store*.yaml expand; Redis defaults to localhost:6379."""
    if online_store not in YAML_FILES:
        raise FeedstoreError(f"unknown online store {online_store!r}; expected one of {sorted(YAML_FILES)}")
    os.environ["FEEDSTORE_DATA_DIR"] = str(Path(cfg.data_dir).resolve())
    if online_store == "redis":
        os.environ.setdefault("REDIS_CONNECTION_STRING", DEFAULT_REDIS)
        check_redis(os.environ["REDIS_CONNECTION_STRING"])
    return {k: os.environ[k] for k in ("FEEDSTORE_DATA_DIR", "REDIS_CONNECTION_STRING") if k in os.environ}


def check_redis(connection_string: str, timeout: float = 2.0) -> None:
    """Fail fast with one line if Redis is unreachable (instead of hanging inside Feast)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    parts = connection_string.split(",")
    host, _, port = parts[0].rpartition(":")
    options = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    try:
        client = redis.Redis(host=host or "localhost", port=int(port or 6379), db=int(options.get("db", 0)),
                             password=options.get("password"),
                             ssl=options.get("ssl", "false").lower() == "true", socket_connect_timeout=timeout,
                             socket_timeout=timeout, retry=Retry(NoBackoff(), 0))  # redis-py retries 3x by default
        client.ping()
    except (redis.exceptions.RedisError, OSError, ValueError) as e:
        raise ServingError(f"cannot reach Redis at {connection_string} ({e}); start one "
                           "(`docker compose up -d redis` or `redis-server`) or set REDIS_CONNECTION_STRING") from None


def feature_store(cfg: PipelineConfig, online_store: str):
    """A FeatureStore on feature_repo/ with the chosen feature_store*.yaml."""
    feast_environment(cfg, online_store)
    from feast import FeatureStore

    registry = Path(cfg.data_dir).resolve() / "feast" / f"registry.{online_store}.db"
    if not registry.exists():
        raise ServingError(f"{registry}: no Feast registry; run `feedstore apply --online-store {online_store}` first")
    return FeatureStore(repo_path=str(REPO_DIR), fs_yaml_file=YAML_FILES[online_store])


def apply_definitions(cfg: PipelineConfig, online_store: str) -> None:
    """`feast apply` on feature_repo/ with the chosen yaml (run as Feast's own CLI, exactly as the README shows)."""
    env = {**os.environ, **feast_environment(cfg, online_store)}
    (Path(cfg.data_dir).resolve() / "feast").mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("feast")), "-c", str(REPO_DIR), "-f", str(YAML_FILES[online_store]),
           "apply"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        last = [line for line in (res.stderr or res.stdout).strip().splitlines() if line.strip()][-1:]
        raise FeedstoreError(f"feast apply failed: {last[0] if last else 'exit code ' + str(res.returncode)}")
    changes = [line for line in res.stdout.splitlines() if line.startswith(("Created", "Updated", "Deleted"))]
    log.info("feast apply (%s) in %.1f s: %s", online_store, time.perf_counter() - t0,
             "; ".join(changes) if changes else "no changes")


def latest_snapshot(cfg: PipelineConfig) -> datetime:
    """The newest snapshot stamp in the offline user statistics (the default materialization end)."""
    import duckdb

    glob = Path(cfg.data_dir).resolve() / "offline" / "user_daily_stats" / "**" / "*.parquet"
    try:
        ts = duckdb.execute(f"SELECT max(event_timestamp) FROM read_parquet('{glob}', hive_partitioning = false)"
                        ).fetchone()[0]
    except duckdb.Error:
        ts = None
    if ts is None:
        raise ServingError(f"{glob.parent.parent}: no offline statistics; run `feedstore stats` first")
    return ts.astimezone(timezone.utc)


@dataclass(frozen=True)
class MaterializeResult:
    end: datetime
    entities: dict[str, int]
    seconds: dict[str, float]


def materialize_online(cfg: PipelineConfig, online_store: str, end: datetime | None = None,
                       force: bool = False) -> MaterializeResult:
    """Load the latest row of every entity into the online store: each view over [end - its ttl, end].

    A backfill never rolls the online store back: if the registry records a materialization newer than `end`,
    nothing is written (online stores overwrite whatever they are given, so an older day would leave a mix of
    times online) unless `force`."""
    store = feature_store(cfg, online_store)
    end = end or latest_snapshot(cfg)
    newest = latest_materialized(store)
    if newest is not None and end < newest and not force:
        log.warning("online store already reflects %s, later than %s: not materializing (a backfill must not roll "
                    "it back; use --force to do so anyway)", newest.isoformat(), end.isoformat())
        return MaterializeResult(end, {}, {})
    entities, seconds = {}, {}
    for fv in sorted(store.list_feature_views(), key=lambda v: v.name):
        t0 = time.perf_counter()
        store.materialize(start_date=end - fv.ttl, end_date=end, feature_views=[fv.name])
        seconds[fv.name] = time.perf_counter() - t0
        entities[fv.name] = _count_latest(cfg, fv.name, end - fv.ttl, end)
        log.info("materialized %s: %s entities in %.1f s (%s/s) into %s", fv.name, f"{entities[fv.name]:,}",
                 seconds[fv.name], f"{entities[fv.name] / max(seconds[fv.name], 1e-9):,.0f}", online_store)
    return MaterializeResult(end, entities, seconds)


def _count_latest(cfg: PipelineConfig, view: str, start: datetime, end: datetime) -> int:
    import duckdb

    keys = "user_id, item_id" if view == "user_item_daily_stats" else ("user_id" if view.startswith("user") else
                                                                         "item_id")
    glob = Path(cfg.data_dir).resolve() / "offline" / view / "**" / "*.parquet"
    return duckdb.execute(f"SELECT count(DISTINCT ({keys})) FROM read_parquet('{glob}', hive_partitioning = false) "
                          "WHERE event_timestamp BETWEEN $s AND $e", {"s": start, "e": end}).fetchone()[0]


# ------------------------------------------------------------------------------------------ online lookup


@dataclass(frozen=True)
class RankingContext:
    """What a ranker knows about the request."""

    request_ts: datetime
    device: str = "mobile"

    def __post_init__(self):
        if self.device not in DEVICES:
            raise FeedstoreError(f"device must be one of {list(DEVICES)}, got {self.device!r}")
        if self.request_ts.tzinfo is None:
            object.__setattr__(self, "request_ts", self.request_ts.replace(tzinfo=timezone.utc))


def defaults(cfg: PipelineConfig) -> dict[str, Any]:
    """Values a missing entity gets in `get_ranking_features` (documented in the README):
    counts 0, smoothed CTRs the prior mean, dwell and log-popularity 0, affinity uniform; ages stay NaN."""
    f = cfg.features
    out: dict[str, Any] = {}
    for prefix in ("user", "item"):
        for w in [*(f"{d}d" for d in f.windows_days), "lifetime"]:
            for m in ("impressions", "clicks", "likes", "shares"):
                out[f"{prefix}_{m}_{w}"] = 0
            out[f"{prefix}_dwell_mean_{w}"] = 0.0
            out[f"{prefix}_ctr_smoothed_{w}"] = f.ctr_prior_mean
            if prefix == "item":
                out[f"item_log_popularity_{w}"] = 0.0
    out.update(user_item_impressions=0, user_item_clicks=0, item_category=-1,
               user_category_affinity_for_item=1.0 / cfg.generation.preferences.categories)
    return out


_RANKERS: dict[int, OnlineRanker] = {}


def get_ranking_features(store, user_id: int, item_ids: list[int], context: RankingContext,
                         fill: dict[str, Any] | None = None, fast: bool = True) -> pd.DataFrame:
    """Every feature of feed_ranking_v1 for one user and N candidates, one row per candidate in the given order.

    Adds `user_missing` / `item_missing` / `user_item_missing` (cold start: Feast's Redis store reports absent
    keys as present with nulls, so absence is detected from sentinel columns that are never null for a
    materialized entity) and `<view>_age_seconds` (how old each feature row is). A row older than its view's
    ttl at the request time counts as missing, as in training sets. With `fill`, missing values take those
    defaults. On Redis (and `fast`), reads go through `OnlineRanker`; otherwise through Feast's
    `get_online_features`; tests check that both give the same frame.
    """
    if fast and store.config.online_store.type == "redis":
        ranker = _RANKERS.get(id(store))
        if ranker is None:
            ranker = _RANKERS[id(store)] = OnlineRanker(store)
        out = ranker.get(user_id, item_ids, context)
    else:
        out = _feast_ranking_features(store, user_id, item_ids, context)
    if fill:
        with pd.option_context("future.no_silent_downcasting", True):
            out = out.fillna({k: v for k, v in fill.items() if k in out.columns}).infer_objects()
    return out


def _feast_ranking_features(store, user_id: int, item_ids: list[int], context: RankingContext) -> pd.DataFrame:
    rows = [{"user_id": int(user_id), "item_id": int(i), "request_ts": context.request_ts, "device": context.device}
            for i in item_ids]
    service = store.get_feature_service(FEATURE_SERVICE)
    resp = store.get_online_features(features=service, entity_rows=rows).to_dict(include_event_timestamps=True)
    now = context.request_ts.timestamp()
    out = pd.DataFrame({k: v for k, v in resp.items() if not k.endswith(TS_SUFFIX)})
    by_view = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
    any_stale = False
    for view, sentinel in (("user_daily_stats", USER_SENTINEL), ("item_daily_stats", ITEM_SENTINEL),
                           ("user_item_daily_stats", PAIR_SENTINEL)):
        ts = np.asarray(resp.get(sentinel + TS_SUFFIX, [0] * len(rows)), dtype=np.float64)
        age = np.where(out[sentinel].isna() | (ts <= 0), np.nan, now - ts)
        stale = ~((age >= 0) & (age <= store.get_feature_view(view).ttl.total_seconds()))
        if stale.any():  # outside the view's ttl at the request time: missing, as in training sets
            out.loc[stale, by_view[view]] = None
            any_stale = True
        out[f"{view}_age_seconds"] = np.where(stale, np.nan, age)
    if any_stale:  # on-demand outputs must follow their (now missing) inputs
        odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
        request = {"request_ts": [context.request_ts] * len(rows), "device": [context.device] * len(rows)}
        for name in [n for n in by_view if n in odfvs]:
            result = odfvs[name].feature_transformation.udf(
                {**{c: out[c].tolist() for c in out.columns}, **request})
            for feature in by_view[name]:
                out[feature] = np.asarray(result[feature], dtype=np.float64)
    out["user_missing"] = out[USER_SENTINEL].isna()
    out["item_missing"] = out[ITEM_SENTINEL].isna()
    out["user_item_missing"] = out[PAIR_SENTINEL].isna()
    return out


class OnlineRanker:
    """Fast online reads of a feature service from Feast's Redis store, for rankers with a latency budget.

    Reads exactly what Feast's `get_online_features` reads (same keys, same hash fields, Feast's own value
    encoding) with one redis-py pipeline per request, and runs the feature service's on-demand views with their
    own UDFs. What makes it fast: feature lists, key layouts and UDFs are resolved from the registry once;
    entity keys are built from Feast's byte layout (checked against Feast's serializer at start-up); and each
    column is decoded with numpy in one go (every stored value is a protobuf `Value` holding a single field)
    instead of one protobuf object per value. Unlike Feast's online path, a row older than its view's ttl *at
    the request time* is treated as missing, which is what training sets see. Tests assert equality with
    `store.get_online_features`.
    """

    def __init__(self, store, service_name: str = FEATURE_SERVICE):
        from feast.infra.online_stores.redis import RedisOnlineStore

        online = store._get_provider().online_store
        if not isinstance(online, RedisOnlineStore):
            raise ServingError("OnlineRanker needs the Redis online store (use get_ranking_features for others)")
        self._config = store.config
        self.client = online._get_client(store.config.online_store)
        service = store.get_feature_service(service_name)
        self.views, self.odfvs = [], []
        odfv_names = {v.name for v in store.list_on_demand_feature_views()}
        for proj in service.feature_view_projections:
            if proj.name in odfv_names:
                odfv = store.get_on_demand_feature_view(proj.name)
                self.odfvs.append((odfv.feature_transformation.udf, [f.name for f in proj.features]))
                continue
            fv = store.get_feature_view(proj.name)
            names = [f.name for f in proj.features]
            _, fields = online._generate_hset_keys_for_features(fv, list(names))
            dtypes = {f.name: str(f.dtype) for f in fv.features}
            keys = tuple(c.name for c in fv.entity_columns)
            kinds = [_kind(dtypes[n]) for n in names]
            by_kind: dict[str, list[int]] = {}
            for j, kind in enumerate(kinds):
                by_kind.setdefault(kind, []).append(j)
            self.views.append({"name": fv.name, "features": names, "fields": fields, "keys": keys,
                               "kinds": kinds, "by_kind": by_kind, "ttl": fv.ttl.total_seconds(),
                               "key_builder": self._key_builder(keys)})

    def _key_builder(self, names: tuple[str, ...]):
        """bytes for an int64 entity key, as Feast's serialize_entity_key (v3) + project; verified once."""
        import struct

        from feast.infra.online_stores.helpers import _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.value_type import ValueType

        order = sorted(range(len(names)), key=lambda k: names[k])
        head = struct.pack("<I", len(names)) + b"".join(
            struct.pack("<II", ValueType.STRING.value, len(names[k].encode())) + names[k].encode() for k in order)
        tail = self._config.project.encode()
        prefix = struct.pack("<II", ValueType.INT64.value, 8)

        def build(values: tuple[int, ...]) -> bytes:
            return head + b"".join(prefix + struct.pack("<q", values[k]) for k in order) + tail

        def feast_build(values: tuple[int, ...]) -> bytes:
            ek = EntityKey(join_keys=list(names), entity_values=[Value(int64_val=v) for v in values])
            return _redis_key(self._config.project, ek, self._config.entity_key_serialization_version)

        probe = tuple(range(7, 7 + len(names)))
        return build if build(probe) == feast_build(probe) else feast_build

    def get(self, user_id: int, item_ids: list[int], context: RankingContext) -> pd.DataFrame:
        """Every feature of the service, one row per candidate in the given order, plus missing flags and ages."""
        n = len(item_ids)
        user_id = int(user_id)
        item_ids = [int(i) for i in item_ids]
        counts = []
        with self.client.pipeline(transaction=False) as pipe:
            for v in self.views:
                build, names = v["key_builder"], v["keys"]
                if names == ("user_id",):
                    rows = [(user_id,)]
                elif names == ("item_id",):
                    rows = [(i,) for i in item_ids]
                else:
                    rows = [tuple(user_id if k == "user_id" else i for k in names) for i in item_ids]
                counts.append(len(rows))
                for r in rows:
                    pipe.hmget(build(r), v["fields"])
            replies = pipe.execute()
        now = context.request_ts.timestamp()
        out: dict[str, Any] = {"user_id": np.full(n, user_id, dtype=np.int64),
                               "item_id": np.asarray(item_ids, dtype=np.int64)}
        pos = 0
        for v, count in zip(self.views, counts, strict=True):
            block = replies[pos: pos + count]
            pos += count
            stamp = _decode(v["name"], [r[-1] for r in block], "ts_proto")
            age = now - stamp
            live = (age <= v["ttl"]) & (age >= 0)  # NaN (no row) compares False: missing
            take = np.zeros(n, dtype=np.int64) if count == 1 else np.arange(n)
            rows = [r if ok else None for r, ok in zip(block, live, strict=True)]
            for kind, idx in v["by_kind"].items():  # one vectorized decode per kind, not per feature
                flat = [r[j] if r is not None else None for r in rows for j in idx]
                decoded = _decode(kind, flat, kind)
                if isinstance(decoded, np.ndarray):
                    matrix = decoded.reshape(count, len(idx))[take]
                    for c, j in enumerate(idx):
                        col = matrix[:, c]
                        if kind == "int":  # nullable integers, like the values Feast returns
                            missing = np.isnan(col)
                            col = pd.arrays.IntegerArray(np.where(missing, 0, col).astype(np.int64), missing)
                        out[v["features"][j]] = col
                else:
                    for c, j in enumerate(idx):
                        out[v["features"][j]] = [decoded[t * len(idx) + c] for t in take]
            out[f"{v['name']}_age_seconds"] = np.where(live, age, np.nan)[take]
        for name in [k for k, kind in _timestamp_columns(self.views)]:
            out[name] = _seconds_to_datetime(out[name])
        # the UDFs get what the offline store gives them: datetime columns (not lists of datetime objects, which
        # pandas parses one by one) and list features converted by the same `udf_input`
        inputs = {**out, **{k: _udf_input(v) for k, v in out.items() if isinstance(v, list)},
                  "request_ts": pd.Series(pd.DatetimeIndex([context.request_ts] * n).tz_convert("UTC")),
                  "device": [context.device] * n}
        for udf, names in self.odfvs:
            result = udf(inputs)
            for name in names:
                out[name] = np.asarray(result[name], dtype=np.float64)
        for flag, sentinel in (("user_missing", USER_SENTINEL), ("item_missing", ITEM_SENTINEL),
                               ("user_item_missing", PAIR_SENTINEL)):
            out[flag] = pd.isna(out[sentinel])
        return pd.DataFrame(out)


def _seconds_to_datetime(seconds: np.ndarray) -> pd.DatetimeIndex:
    """Epoch seconds (NaN = missing) as UTC nanosecond datetimes: pd.to_datetime(unit="s", utc=True), without its
    per-call cache of unique values (0.6 ms for 100 values)."""
    missing = np.isnan(seconds)
    ns = np.where(missing, 0, np.round(seconds * 1e9)).astype(np.int64)
    ns[missing] = np.iinfo(np.int64).min  # NaT
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")


def _udf_input(values: list) -> Any:
    """A list-valued feature for the UDFs, converted as the offline store converts it (`udf_input`)."""
    from feedstore.offline_store import udf_input

    try:
        return udf_input(pa.array(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # values Arrow cannot type: the UDF gets them as they are
        return values


def _kind(dtype: str) -> str:
    if dtype in ("Int64", "Int32"):
        return "int"
    if dtype == "Float64":
        return "double"
    if dtype == "UnixTimestamp":
        return "ts"
    return "proto"  # lists and anything else: protobuf per value


def _timestamp_columns(views: list[dict]) -> list[tuple[str, str]]:
    return [(n, k) for v in views for n, k in zip(v["features"], v["kinds"], strict=True) if k == "ts"]


# Value proto field tags (field number << 3 | wire type): int32_val 3, int64_val 4 (varint), double_val 5 (fixed64),
# unix_timestamp_val 8 (varint); a google.protobuf.Timestamp's `seconds` is field 1 (varint).
_TAGS = {"int": (0x18, 0x20), "ts": (0x40,), "double": (0x29,)}


def _decode(name: str, raws: list, kind: str):
    """One column of Redis replies -> float64 array (NaN = missing) or a list for other kinds."""
    n = len(raws)
    present = [i for i, r in enumerate(raws) if r]
    out = np.full(n, np.nan)
    if not present:
        return out if kind != "proto" else [None] * n
    chunks = [raws[i] for i in present]
    if kind == "ts_proto":  # the row's event timestamp: Timestamp{seconds, nanos}
        from google.protobuf.timestamp_pb2 import Timestamp

        for i, c in zip(present, chunks, strict=True):
            t = Timestamp.FromString(c)
            out[i] = t.seconds + t.nanos / 1e9
        return out
    if kind == "proto":
        from feast.protos.feast.types.Value_pb2 import Value

        values: list = [None] * n
        for i, c in zip(present, chunks, strict=True):
            v = Value.FromString(c)
            which = v.WhichOneof("val")
            x = getattr(v, which) if which else None
            values[i] = list(x.val) if which and which.endswith("_list_val") else x
        return values
    lengths = np.array(list(map(len, chunks)), dtype=np.int64)
    buf = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    first = buf[starts]
    tags = _TAGS[kind]
    if not ((first == tags[0]) | (first == tags[-1])).all():
        return _decode(name, raws, "proto")  # an encoding this decoder does not expect: the safe path
    if kind == "double":
        if not (lengths == 9).all():
            return _decode(name, raws, "proto")
        out[present] = buf.reshape(-1, 9)[:, 1:].copy().view("<f8").ravel()
        return out
    acc = np.zeros(len(chunks), dtype=np.uint64)
    for k in range(10):  # varint: 7 bits per byte, little-endian groups
        has = lengths > 1 + k
        if not has.any():
            break
        byte = buf[np.where(has, starts + 1 + k, 0)].astype(np.uint64)
        acc |= np.where(has, byte & np.uint64(0x7F), np.uint64(0)) << np.uint64(7 * k)
    out[present] = acc.view(np.int64).astype(np.float64)
    return out


def lookup(cfg: PipelineConfig, online_store: str, user_id: int, item_ids: list[int], device: str,
           at: datetime | None) -> dict[str, Any]:
    """JSON-ready lookup result for the CLI."""
    store = feature_store(cfg, online_store)
    ctx = RankingContext(request_ts=at or datetime.now(timezone.utc), device=device)
    df = get_ranking_features(store, user_id, item_ids, ctx)
    features = [c for c in df.columns if c not in {"user_id", "item_id", "user_missing", "item_missing",
                                                   "user_item_missing"} and not c.endswith("_age_seconds")]
    candidates = []
    for rec in df.to_dict(orient="records"):
        candidates.append({
            "item_id": rec["item_id"],
            "features": {k: _plain(rec[k]) for k in features},
            "missing": {"user": bool(rec["user_missing"]), "item": bool(rec["item_missing"]),
                        "user_item": bool(rec["user_item_missing"])},
            "feature_age_seconds": {v: _plain(rec[f"{v}_age_seconds"]) for v in
                                    ("user_daily_stats", "item_daily_stats", "user_item_daily_stats")},
        })
    return {"user_id": user_id, "request_ts": ctx.request_ts.isoformat(), "device": device,
            "feature_service": FEATURE_SERVICE, "online_store": online_store,
            "missing_user": bool(df["user_missing"].all()) if len(df) else None,
            "missing_items": [int(i) for i, m in zip(df["item_id"], df["item_missing"], strict=True) if m],
            "candidates": candidates}


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (datetime, pd.Timestamp)):
        return v.isoformat()
    if isinstance(v, (list, np.ndarray)):
        return [_plain(x) for x in v]
    if v is pd.NaT or v is None:
        return None
    return v


# ------------------------------------------------------------------------------------------ skew check


@dataclass(frozen=True)
class SkewReport:
    end: datetime
    rows: int
    features: int
    mismatches: list[dict[str, Any]]


def check_skew(cfg: PipelineConfig, online_store: str, sample: int = 200, end: datetime | None = None,
               seed: int = 0) -> SkewReport:
    """Online values must equal get_historical_features at the materialization end, for sampled entities
    (default: the newest materialization recorded in the registry)."""
    import duckdb

    store = feature_store(cfg, online_store)
    end = end or latest_materialized(store) or latest_snapshot(cfg)
    base = Path(cfg.data_dir).resolve() / "offline"
    pairs = duckdb.execute(f"""
        SELECT user_id, item_id FROM read_parquet('{base}/user_item_daily_stats/**/*.parquet',
                                                  hive_partitioning = false)
        WHERE event_timestamp BETWEEN $s AND $e ORDER BY hash(user_id, item_id, {seed}) LIMIT {sample // 2}""",
                           {"s": end - timedelta(days=30), "e": end}).fetchall()
    users = [r[0] for r in duckdb.execute(f"SELECT DISTINCT user_id FROM read_parquet('{base}/user_daily_stats/**/"
                                      f"*.parquet', hive_partitioning = false) ORDER BY hash(user_id, {seed}) "
                                      f"LIMIT {sample}").fetchall()]
    items = [r[0] for r in duckdb.execute(f"SELECT DISTINCT item_id FROM read_parquet('{base}/item_daily_stats/**/"
                                      f"*.parquet', hive_partitioning = false) ORDER BY hash(item_id, {seed}) "
                                      f"LIMIT {sample}").fetchall()]
    rng = np.random.default_rng(seed)
    mixed = list(zip(rng.choice(users, sample - len(pairs)), rng.choice(items, sample - len(pairs)), strict=True))
    entity_pairs = [(int(u), int(i)) for u, i in [*pairs, *mixed]]
    devices = [DEVICES[k % len(DEVICES)] for k in range(len(entity_pairs))]
    entity_df = pd.DataFrame({"user_id": [u for u, _ in entity_pairs], "item_id": [i for _, i in entity_pairs],
                              "event_timestamp": end, "request_ts": end, "device": devices,
                              "row": np.arange(len(entity_pairs))})
    service = store.get_feature_service(FEATURE_SERVICE)
    offline = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    offline = offline.sort_values("row").reset_index(drop=True)  # the offline store may reorder rows
    online = store.get_online_features(
        features=service,
        entity_rows=[{"user_id": u, "item_id": i, "request_ts": end, "device": d}
                     for (u, i), d in zip(entity_pairs, devices, strict=True)]).to_df()  # input order
    if len(offline) != len(online):
        raise ServingError(f"skew check: {len(online)} online rows but {len(offline)} offline rows")
    names = [c for c in online.columns if c in offline.columns and c not in ("request_ts", "event_timestamp")]
    mismatches = []
    for name in names:
        for pos in range(len(online)):
            a, b = online.at[pos, name], offline.at[pos, name]
            if not _same(a, b):
                mismatches.append({"user_id": int(online.at[pos, "user_id"]), "item_id": int(online.at[pos, "item_id"]),
                                   "feature": name, "online": _plain(a), "offline": _plain(b)})
    log.info("skew check at %s: %d entity rows x %d features, %d mismatches", end.isoformat(), len(online),
             len(names), len(mismatches))
    return SkewReport(end, len(online), len(names), mismatches)


def latest_materialized(store) -> datetime | None:
    """The end of the newest materialization Feast recorded: the moment the online store reflects. (A backfill
    that materializes an older day does not roll newer online rows back, so the check must use this, not the
    day being processed.)"""
    ends = [end for fv in store.list_feature_views() for _, end in (fv.materialization_intervals or [])]
    return max(ends).astimezone(timezone.utc) if ends else None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, np.ndarray)) or isinstance(b, (list, np.ndarray)):
        if a is None or b is None or (not isinstance(a, (list, np.ndarray))) or (not isinstance(b, (list, np.ndarray))):
            return _is_null(a) and _is_null(b)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if _is_null(a) or _is_null(b):
        return _is_null(a) and _is_null(b)
    if isinstance(a, (datetime, pd.Timestamp)) or isinstance(b, (datetime, pd.Timestamp)):
        return pd.Timestamp(a) == pd.Timestamp(b)
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        return bool(np.isclose(float(a), float(b), rtol=1e-6, atol=1e-9))
    return a == b


def _is_null(v: Any) -> bool:
    if v is None or v is pd.NaT:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
