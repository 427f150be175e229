"""Bulk materialization into Feast's Redis online store, plugged into Feast as its `batch_engine`.

Feast's stock (local) engine turns every row into protobuf objects and sends one redis-py HSET per entity: about
6K entities/s for the 27-feature item view. This engine writes the same bytes - the entity key in Feast's
serialization v3 plus the project, one hash field per feature (murmur3 of `<view>:<feature>`) holding a
serialized `feast.types.Value`, and `_ts:<view>` holding a serialized `google.protobuf.Timestamp` - but builds
them for a whole batch at once with numpy, as ready-made RESP commands streamed over one connection.

Semantics kept from Feast: rows of the view's source with `start <= timestamp <= end`, the latest row per entity
(ties on the timestamp go to the latest created timestamp, as Feast's duckdb offline store orders them); a row
is written only if it is newer than what the key already holds (Feast's Redis writer reads `_ts:<view>` first,
unless `skip_dedup`); `key_ttl_seconds` (EXPIRE); view versioning names. Feast's CLI, registry bookkeeping
(materialization intervals, `serve_features_while_materializing`) stay Feast's: this class only runs the tasks.

Keys that do not exist yet (the batch's one EXISTS says none does: a first materialization) are written as
`RESTORE key <ttl ms> <payload>` with the hash serialized here in Redis' DUMP format (a listpack, RDB type 16,
version 10, CRC-64 computed for all rows at once with numpy; see "DUMP payloads" below): redis-server then
copies one blob instead of inserting 31 fields one by one (~0.10 s of its CPU per 50,000 item hashes against
~0.44 s for HSET). The payload is exactly the listpack HSET would build (the same fields in the same order, the
same encoding: checked by DUMP in the tests), so rows HSET would store differently go to HSET: a value that is a
decimal integer string (Redis keeps it as an integer entry), a value over the server's `hash-max-listpack-value`,
views over `hash-max-listpack-entries` fields or with colliding field hashes. Once per stream, before the first
RESTORE, the server's limits are read (CONFIG GET) and a probe restores one of our payloads under a scratch key
and compares it with an HSET twin (HGETALL in order, OBJECT ENCODING); on any error (older Redis, RESTORE or
CONFIG denied) or difference the whole run uses HSET. A key another writer creates between the EXISTS and the
RESTORE fails with BUSYKEY; those rows are written again the normal way (stored `_ts` check, HSET if newer). One
log line per view says how many keys took each path and why. `restore_new_keys: false` turns RESTORE off.

With the duckdb offline store, the latest-row query runs in DuckDB over the FileSource's Parquet and is streamed
in batches of `batch_rows`, so memory follows the batch, not the entity count. For a source laid out as the
pipeline writes it (`<dir>/date=YYYY-MM-DD/*.parquet`, day D's rows stamped D + 1 day) only the partitions that
can hold the window's rows are read (`_window_files`). With the Spark offline store
(feedstore.plugins.spark_offline_store.SparkPitOfflineStore) it runs inside Spark: Spark reads the Parquet and
picks the latest row per entity (the same order), and every partition of the result is encoded and written by
its Python worker (`mapInArrow`, batches of `batch_rows`), each connecting to Redis with the online store's
connection string; the driver only sums the per-partition counts. So the writes scale with the executors (on a
cluster, the executors need feedstore installed and must reach Redis and the data dir). The first rows of every
view are also encoded by Feast's own code and compared byte for byte before anything is written; on a
difference the view goes to the stock engine.

Views this does not cover go to Feast's stock engine (LocalComputeEngine), with the reason logged: another
online store (SQLite: see bench/RESULTS.md), Redis Cluster or Sentinel, a source that is not a local Parquet
FileSource read by the duckdb or the Spark offline store, field or join-key mappings, views with
transformations, offline writes, or a feature type without a vectorized encoder here.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from feast import FeatureView, FileSource
from feast.data_format import ParquetFormat
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisType, _versioned_fv_name
from feast.repo_config import FeastConfigBaseModel
from feast.value_type import ValueType
from pydantic import StrictBool, StrictInt

from feedstore.core.duck import spilling
from feedstore.core.errors import ServingError
from feedstore.core.io import read_ahead
from feedstore.core.logs import redact
from feedstore.plugins.asof_duckdb import resolve_source_path

log = logging.getLogger(__name__)

ENGINE_TYPE = "feedstore.plugins.fast_materialize.FastMaterializationEngine"

KEY_TYPES = {ValueType.INT64, ValueType.INT32, ValueType.STRING}
VALUE_TYPES = {ValueType.INT64, ValueType.INT32, ValueType.DOUBLE, ValueType.FLOAT, ValueType.BOOL,
               ValueType.UNIX_TIMESTAMP, ValueType.STRING, ValueType.FLOAT_LIST, ValueType.DOUBLE_LIST}

# feast.types.Value field tags: (field number << 3) | wire type, as varint bytes
_TAG = {ValueType.STRING: b"\x12", ValueType.INT32: b"\x18", ValueType.INT64: b"\x20", ValueType.DOUBLE: b"\x29",
        ValueType.FLOAT: b"\x35", ValueType.BOOL: b"\x38", ValueType.UNIX_TIMESTAMP: b"\x40",
        ValueType.DOUBLE_LIST: b"\x7a", ValueType.FLOAT_LIST: b"\x82\x01"}

# KEYS: entity keys; ARGV[1]: the `_ts:<view>` field. Returns [index, stored bytes, ...] for keys that hold one.
_LUA_STORED_TS = b"""local out = {}
for i = 1, #KEYS do
  local v = redis.call('HGET', KEYS[i], ARGV[1])
  if v then out[#out + 1] = i - 1; out[#out + 1] = v end
end
return out"""


class FastMaterializationEngineConfig(FeastConfigBaseModel):
    """`batch_engine:` settings of FastMaterializationEngine in feature_store*.yaml."""

    type: Literal["feedstore.plugins.fast_materialize.FastMaterializationEngine"] = ENGINE_TYPE
    batch_rows: StrictInt = 10_000
    """rows read from DuckDB, encoded and written per batch (memory follows it)"""
    duckdb_memory_limit: str = "2GB"
    """bound for DuckDB's latest-row query (beyond it DuckDB spills to its temp directory)"""
    duckdb_threads: StrictInt | None = None
    verify_rows: StrictInt = 200
    """rows of each view's first batch also encoded by Feast's own code and compared byte for byte (0: off)"""
    restore_new_keys: StrictBool = True
    """write keys that do not exist yet with RESTORE of a client-built hash (listpack DUMP payload) instead of HSET:
    ~4x less redis-server CPU; used only after a probe shows the server restores it exactly as HSET writes it
    (else, and with false, HSET throughout)"""


class _Unsupported(Exception):
    """The fast path does not cover this view (raised before anything is written)."""


class FastMaterializationEngine(LocalComputeEngine):
    """Feast compute engine: vectorized encoding + pipelined RESP writes for Redis, Feast's stock engine otherwise."""

    def __init__(self, *, batch_rows: int = 10_000, duckdb_memory_limit: str = "2GB",
                 duckdb_threads: int | None = None, verify_rows: int = 200, restore_new_keys: bool = True,
                 **kwargs):
        kwargs.pop("type", None)
        super().__init__(**kwargs)
        self.batch_rows = int(batch_rows)
        self.duckdb_memory_limit = duckdb_memory_limit
        self.duckdb_threads = duckdb_threads
        self.verify_rows = int(verify_rows)
        self.restore_new_keys = bool(restore_new_keys)

    def _materialize_one(self, registry, task: MaterializationTask, **kwargs) -> LocalMaterializationJob:
        fv = task.feature_view
        job_id = f"{fv.name}-{task.start_time}-{task.end_time}"
        reason = self.unsupported_reason(task)
        if reason is None:
            try:
                if _on_spark(self.repo_config):
                    self._materialize_spark(task)
                else:
                    self._materialize_redis(task)
                return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
            except _Unsupported as e:
                reason = str(e)
            except Exception as e:  # reported through the job, as Feast's engines do; Feast re-raises it
                return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=e)
        log.info("materialize %s: Feast's stock engine (%s)", fv.name, reason)
        t0 = time.perf_counter()
        job = super()._materialize_one(registry, task, **kwargs)
        log.info("materialize %s: stock engine done in %.1f s (%s)", fv.name, time.perf_counter() - t0,
                 job.status().name)
        return job

    def unsupported_reason(self, task: MaterializationTask) -> str | None:
        """Why the fast path does not apply to this task (None: it does)."""
        fv, cfg = task.feature_view, self.repo_config
        if type(fv) is not FeatureView:
            return f"{type(fv).__name__}: transformations and aggregations stay in the stock engine"
        if not fv.online or fv.offline:
            return "the view is not online-only"
        if not task.only_latest or task.disable_event_timestamp:
            return "only_latest off or disable_event_timestamp on"
        if not isinstance(self.online_store, RedisOnlineStore):
            return f"online store {type(self.online_store).__name__}"
        if cfg.online_store.redis_type != RedisType.redis:
            return f"redis_type {cfg.online_store.redis_type.value}"
        if cfg.entity_key_serialization_version != 3:
            return f"entity_key_serialization_version {cfg.entity_key_serialization_version}"
        if not isinstance(self.offline_store, DuckDBOfflineStore) and not _on_spark(cfg):
            return (f"offline store {type(self.offline_store).__name__} (the fast path reads as the duckdb store "
                    "does, or inside Spark with SparkPitOfflineStore)")
        src = fv.batch_source
        if not isinstance(src, FileSource) or not (isinstance(src.file_format, ParquetFormat) or (
                src.file_format is None and src.path.endswith(".parquet"))):
            return "the source is not a Parquet FileSource"
        if "://" in src.path and not src.path.startswith("file://"):
            return "the source is not on the local file system"
        if src.field_mapping or fv.projection.join_key_map:
            return "field or join-key mapping"
        for col in fv.entity_columns:
            if col.dtype.to_value_type() not in KEY_TYPES:
                return f"join key {col.name} of type {col.dtype}"
        for f in fv.features:
            if f.dtype.to_value_type() not in VALUE_TYPES or getattr(f, "vector_index", False):
                return f"feature {f.name} of type {f.dtype}"
        return None

    # ------------------------------------------------------------------------------------------ Redis path

    def _materialize_redis(self, task: MaterializationTask) -> None:
        fv, cfg = task.feature_view, self.repo_config
        t0 = time.perf_counter()
        layout = _Layout(fv, cfg)
        client = self.online_store._get_client(cfg.online_store)
        ttl = cfg.online_store.key_ttl_seconds
        read = written = 0
        with ExitStack() as stack:
            stream = stack.enter_context(_RedisStream(client, self.restore_new_keys))
            con = stack.enter_context(spilling(self.duckdb_memory_limit, threads=self.duckdb_threads,
                                               prefix="feedstore-materialize-"))
            path = _source_path(fv.batch_source, cfg.repo_path)
            files = _window_files(con, path, _utc(task.start_time))
            reader = con.sql(_latest_rows_sql(fv, path if files is None else files),
                             params={"start": _utc(task.start_time), "end": _utc(task.end_time)}
                             ).to_arrow_reader(self.batch_rows)
            layout.check_schema(reader.schema)
            batches = stack.enter_context(closing(read_ahead(reader, depth=3)))
            for k, batch in enumerate(batches):
                if k == 0 and self.verify_rows:
                    layout.verify(batch.slice(0, self.verify_rows))
                read += batch.num_rows
                written += _write_batch(stream, layout, batch, ttl, cfg.online_store.skip_dedup)
            written += _write_end(stream, layout, ttl, cfg.online_store.skip_dedup)
        log.info("materialize %s: %s", fv.name, stream.describe(fv.name))
        dt = time.perf_counter() - t0
        log.info("materialized %s [%s, %s] with the fast engine: %s entities read, %s written, %s already newer "
                 "online, in %.2f s (%s entities/s)", fv.name, task.start_time.isoformat(), task.end_time.isoformat(),
                 f"{read:,}", f"{written:,}", f"{read - written:,}", dt, f"{read / max(dt, 1e-9):,.0f}")

    def _materialize_spark(self, task: MaterializationTask) -> None:
        """The latest rows computed by Spark; each partition encoded and written to Redis by its Python worker."""
        from functools import partial

        from feedstore.core.spark import get_spark
        from feedstore.plugins.spark_offline_store import latest_rows

        fv, cfg = task.feature_view, self.repo_config
        t0 = time.perf_counter()
        layout = _Layout(fv, cfg)
        spark = get_spark(cfg.offline_store.spark_settings())
        rows, candidates = latest_rows(spark, fv, _utc(task.start_time), _utc(task.end_time))
        # before any write: the column types, and Feast's own bytes for a few rows as the executors will see them
        sample = candidates.limit(max(self.verify_rows, 1)).toArrow()
        layout.check_schema(_plain_types(sample).schema)
        if self.verify_rows and sample.num_rows:
            layout.verify(_plain_types(sample.combine_chunks().to_batches()[0]))
        body = partial(write_partition, layout=layout, online=cfg.online_store, batch_rows=self.batch_rows,
                       restore=self.restore_new_keys)
        try:
            counts = rows.mapInArrow(body, "read long, written long, restored long, hset long, why string").collect()
        except Exception as e:  # py4j wraps the worker's error in pages of JVM text: keep the Python error's line
            line = _last_error(e)
            if re.match(r"(redis\.exceptions\.\w+|\w*ConnectionError|\w*TimeoutError|ConnectionRefusedError)\b", line):
                raise ServingError(redact(f"materialize {fv.name} on Spark: an executor could not write to Redis "
                                          f"({line})")) from None
            raise RuntimeError(f"materialize {fv.name} on Spark: a write task failed: {line}") from None
        read, written = sum(c["read"] for c in counts), sum(c["written"] for c in counts)
        dt = time.perf_counter() - t0
        why = list(dict.fromkeys(w for c in counts for w in (c["why"] or "").split("; ") if w))
        log.info("materialize %s on Spark: %s", fv.name,
                 _write_paths(sum(c["restored"] for c in counts), sum(c["hset"] for c in counts), why))
        log.info("materialized %s [%s, %s] with the fast engine on Spark (%d partitions): %s entities read, %s "
                 "written, %s already newer online, in %.2f s (%s entities/s)", fv.name, task.start_time.isoformat(),
                 task.end_time.isoformat(), len(counts), f"{read:,}", f"{written:,}", f"{read - written:,}", dt,
                 f"{read / max(dt, 1e-9):,.0f}")


SPARK_STORE_TYPE = "feedstore.plugins.spark_offline_store.SparkPitOfflineStore"
_COUNTS = pa.schema([("read", pa.int64()), ("written", pa.int64()), ("restored", pa.int64()), ("hset", pa.int64()),
                     ("why", pa.string())])


def _write_paths(restored: int, hset: int, why: list[str]) -> str:
    """The log's account of how a view's rows were written: new keys restored, rows HSET, and why HSET."""
    return f"{restored:,} new keys with RESTORE, {hset:,} rows with HSET" + (f" ({'; '.join(why)})" if why else "")


def _last_error(e: Exception) -> str:
    """The last `SomeError: message` line of a (Spark-wrapped) traceback, else its first line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception): ", ln)]
    return (errors or lines or [repr(e)])[-1 if errors else 0]


def _on_spark(cfg) -> bool:
    """The offline store is feedstore's Spark store (checked by its yaml type: importing it imports pyspark)."""
    return getattr(cfg.offline_store, "type", None) == SPARK_STORE_TYPE


def _write_batch(stream: _RedisStream, layout: _Layout, batch: pa.RecordBatch, ttl: int | None,
                 skip_dedup: bool, restore: bool = True) -> int:
    """Encode one batch of latest rows and send its writes (rows not newer than the stored `_ts` skipped unless
    `skip_dedup`); returns the number of rows written. While none of the batch's keys exists (EXISTS), the rows
    `restore_mode` allows are sent as RESTOREs, the rest as HSETs (restore False: HSET only)."""
    written = _write_busy(stream, layout, ttl, skip_dedup) if restore else 0
    if batch.num_rows == 0:
        return written
    keys = layout.entity_keys(batch)
    seconds, nanos, ts_value = layout.event_timestamps(batch)
    if not skip_dedup:
        stream.ask_stored(keys, layout.ts_field)  # Redis looks them up while the batch is encoded
    values = layout.values(batch)
    restorable = restored = None
    if restore and not skip_dedup and not stream.any_stored:
        restorable = stream.restore_mode(layout, ts_value, values)
        if restorable is not None:  # built before the EXISTS answer: the usual case is that none exists
            restored = layout.restore_commands(keys, ts_value, values, ttl, restorable)
    write = np.ones(batch.num_rows, dtype=bool) if skip_dedup else stream.newer_than_stored(seconds, nanos)
    if restored is not None and not stream.any_stored:  # EXISTS: none of the batch's keys is there
        rest = ~restorable
        rows = np.flatnonzero(restorable)
        payload = restored + (layout.commands(keys, ts_value, values, ttl).tobytes(rest) if rest.any() else b"")
        stream.send(payload, len(rows) + int(rest.sum()) * (2 if ttl else 1), (batch, rows))
        stream.note(layout.name, len(rows), int(rest.sum()))
        return written + batch.num_rows
    if restore and stream.restore and (skip_dedup or stream.any_stored):
        stream.note(layout.name, 0, 0, "skip_dedup: no stored-key check" if skip_dedup else "keys already stored")
    count = int(write.sum())
    if count:
        commands = layout.commands(keys, ts_value, values, ttl)
        stream.send(commands.tobytes(None if count == batch.num_rows else write), count * (2 if ttl else 1))
    stream.note(layout.name, 0, count)
    return written + count


def _write_busy(stream: _RedisStream, layout: _Layout, ttl: int | None, skip_dedup: bool) -> int:
    """Write again, the normal way (stored-timestamp check, HSET if newer), the rows whose RESTORE found their key
    created meanwhile; returns the change in the written count (they were counted as written)."""
    change = 0
    for batch, rows in stream.take_busy():
        stream.note(layout.name, -len(rows), 0, f"{len(rows):,} keys created by another writer meanwhile (BUSYKEY)")
        change += _write_batch(stream, layout, batch.take(pa.array(rows)), ttl, skip_dedup, restore=False) - len(rows)
    return change


def _write_end(stream: _RedisStream, layout: _Layout, ttl: int | None, skip_dedup: bool) -> int:
    """After the last batch: wait for every reply, write the BUSYKEY rows again; the change in the written count."""
    stream.flush()
    change = _write_busy(stream, layout, ttl, skip_dedup)
    stream.flush()
    return change


def write_partition(batches: Iterator[pa.RecordBatch], *, layout: _Layout, online, batch_rows: int,
                    restore: bool = True) -> Iterator[pa.RecordBatch]:
    """`mapInArrow` body, run by a Spark Python worker over one partition of latest rows: encode and write them to
    Redis (the online store's connection string, parsed by Feast's own code) in batches of `batch_rows`; yield
    one row (read, written, and the write paths: keys restored, rows HSET, why HSET). Connects only if the
    partition has rows."""
    read = written = 0
    client = None
    with ExitStack() as stack:
        for batch in _rebatch(batches, batch_rows):
            if client is None:
                client = RedisOnlineStore()._get_client(online)
                stack.callback(client.close)
                stream = stack.enter_context(_RedisStream(client, restore))
            read += batch.num_rows
            written += _write_batch(stream, layout, _plain_types(batch), online.key_ttl_seconds, online.skip_dedup)
        if client is not None:
            written += _write_end(stream, layout, online.key_ttl_seconds, online.skip_dedup)
    path = stream.paths.get(layout.name, {}) if client is not None else {}
    yield pa.RecordBatch.from_pydict({"read": [read], "written": [written], "restored": [path.get("restored", 0)],
                                      "hset": [path.get("hset", 0)], "why": ["; ".join(path.get("why", []))]},
                                     schema=_COUNTS)


def _rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of about `rows` rows from Spark's smaller Arrow batches (fewer round trips per row)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        if batch.num_rows:
            pending.append(batch)
            have += batch.num_rows
        if have >= rows:
            yield pa.concat_batches(pending)
            pending, have = [], 0
    if pending:
        yield pa.concat_batches(pending)


def _plain_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_plain_type(t.value_type))
    return t


def _plain_types(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """Large string / binary / list columns (Spark's Arrow may use them) as the regular types the encoders read."""
    schema = pa.schema([f.with_type(_plain_type(f.type)) for f in data.schema])
    return data if schema.equals(data.schema) else data.cast(schema)


def _utc(ts):
    """An aware UTC datetime (naive means UTC, as in Feast). Compared with the timestamp column as it is, not cast
    (Feast's duckdb store casts it to a naive UTC timestamp: the same instants in this UTC session), so DuckDB can
    skip Parquet files and row groups by their statistics."""
    from datetime import timezone

    return ts.astimezone(timezone.utc) if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _source_path(src: FileSource, repo_path) -> str:
    """The source's Parquet glob: the registry keeps it relative to the data dir (resolved like the offline store)."""
    return resolve_source_path(src.path.removeprefix("file://"))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_DAY_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})")


def _window_files(con, path: str, start) -> list[str] | None:
    """The Parquet files of a `<dir>/**/*.parquet` source that can hold rows stamped at or after `start`, when
    everything in `<dir>` is a day partition folder `date=YYYY-MM-DD` (None otherwise: read the whole glob).

    The pipeline writes the rows of day D into `date=D/`, stamped D + 1 day 00:00 UTC (ingestion/stats/compute.py,
    "The contract"), so a partition of a day before start - 1 day holds no row of the window; one more day is kept
    as a margin, later days (and days after the window's end) are all kept. DuckDB then opens the footers of the
    window's ~30 files, not of every day's (366 at a year of history: ~0.1 s). The kept partitions' files are
    listed by DuckDB's own glob (`<dir>/date=D/**/*.parquet`), so they are the files read_parquet(glob) reads
    there."""
    from datetime import date, timedelta

    suffix = "/**/*.parquet"
    root = path[:-len(suffix)]
    if not path.endswith(suffix) or any(c in root for c in "*?["):
        return None
    cutoff = (start - timedelta(days=2)).date()
    keep = []
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                day = _DAY_PARTITION.fullmatch(entry.name)
                if not day or not entry.is_dir():
                    return None
                if date.fromisoformat(day.group(1)) >= cutoff:
                    keep.append(f"{root}/{entry.name}{suffix}")
    except (OSError, ValueError):
        return None
    if not keep:
        return None
    files = con.execute(" UNION ALL ".join(["SELECT file FROM glob(?)"] * len(keep)), keep).fetchall()
    return sorted(f for (f,) in files) or None


def _latest_rows_sql(fv: FeatureView, path: str | list[str]) -> str:
    """The latest row per entity with start <= timestamp <= end, as Feast's duckdb store selects it, from a glob
    or a list of files."""
    src = fv.batch_source
    keys = [c.name for c in fv.entity_columns]
    ts, created = src.timestamp_field, src.created_timestamp_column or None
    cols = [*keys, *[f.name for f in fv.features], ts] + ([created] if created and created != ts else [])
    order = f"{_q(ts)} DESC NULLS LAST" + (f", {_q(created)} DESC NULLS LAST" if created else "")
    paths = [path] if isinstance(path, str) else path
    literal = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    return (f"SELECT {', '.join(map(_q, cols))} FROM read_parquet({literal}, hive_partitioning = false) "
            f"WHERE {_q(ts)} >= $start AND {_q(ts)} <= $end "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(map(_q, keys))} ORDER BY {order}) = 1")


# ------------------------------------------------------------------------------------------ byte building


class _Rows:
    """One byte string per row, built left to right from pieces: constants (the same bytes in every row) and ragged
    pieces, a (rows x width) uint8 matrix whose first `length` bytes in a row are the piece's bytes.

    Rows are written into one buffer a piece at a time, each piece for all rows in one numpy scatter of
    `width`-byte items at the rows' running offsets; the bytes of an item past its length are scratch that the next
    piece overwrites. The first piece is written last, so scratch running past a row's end lands in the next row's
    first piece; the few rows whose scratch would reach further get that piece's exact bytes only. No row loop, no
    pass over every byte but the scatters' own."""

    def __init__(self, n: int):
        self.n = n
        self.parts: list[tuple[np.ndarray, np.ndarray | None]] = []  # (matrix, lengths); None: all full width
        self.last_const = b""

    def const(self, data: bytes, merge: bool = True) -> None:
        """The same bytes in every row (merge False: a piece of its own, so `offset` can point at it)."""
        if merge and self.parts and self.parts[-1][1] is None:  # merge adjacent constants
            self.parts.pop()
            data = self.last_const + data
        self.last_const = data
        self.parts.append((np.broadcast_to(np.frombuffer(data, dtype=np.uint8), (self.n, len(data))), None))

    def ragged(self, mat: np.ndarray, lens: np.ndarray) -> None:
        self.parts.append((mat, lens))

    def bulk(self, mat: np.ndarray, lens: np.ndarray) -> None:
        """A RESP bulk string per row: $<length>\\r\\n<bytes>\\r\\n."""
        if len(lens) and lens.min() == lens.max():  # one length (all doubles, say): the prefix is a constant
            self.const(b"$%d\r\n" % lens[0])
        else:
            self.const(b"$")
            self.ragged(*_ascii(lens))
            self.const(b"\r\n")
        self.ragged(mat, lens)
        self.const(b"\r\n")

    def bulk_const(self, data: bytes) -> None:
        """The same RESP bulk string in every row."""
        self.const(b"$%d\r\n%s\r\n" % (len(data), data))

    def lp_entry(self, mat: np.ndarray, lens: np.ndarray) -> None:
        """A listpack string entry per row: encoding + length, the bytes, backlen (see _lp_entry)."""
        if len(lens) and lens.min() == lens.max():  # one length: header and backlen are constants
            k = int(lens[0])
            head = _lp_str_header(k)
            self.const(head)
            self.ragged(mat, lens)
            self.const(_lp_backlen(len(head) + k))
            return
        head, hlens = _lp_str_headers(lens)
        self.ragged(head, hlens)
        self.ragged(mat, lens)
        self.ragged(*_lp_backlens(hlens + lens))

    def offset(self, part: int) -> np.ndarray:
        """Per row, where piece number `part` starts (the lengths of the pieces before it)."""
        out = np.zeros(self.n, dtype=np.int64)
        for mat, lens in self.parts[:part]:
            out += mat.shape[1] if lens is None else lens
        return out

    def tobytes(self, rows: np.ndarray | None = None) -> bytes:
        """All rows (or the selected ones) concatenated."""
        buf, starts, lens = self.tobuffer(rows)
        return buf[starts[0]:starts[-1] + lens[-1]].tobytes() if len(lens) else b""

    def tobuffer(self, rows: np.ndarray | None = None, lead: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All rows (or the selected ones) one after another from buf[lead] on: (buf, row starts, row lengths);
        buf has `lead` bytes of zeros before the first row and room for the widest piece after the last."""
        pieces, lens = self._pieces(rows)
        if not len(lens):
            return np.zeros(lead, dtype=np.uint8), lens, lens
        ends = np.cumsum(lens) + lead
        buf = np.empty(int(ends[-1]) + self._widest(), dtype=np.uint8)
        buf[:lead] = 0
        _write(buf, ends - lens, pieces)
        return buf, ends - lens, lens

    def packed(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows as one left-aligned (matrix, lengths) piece (bytes past a row's length are unspecified)."""
        pieces, lens = self._pieces(None)
        width = max(sum(mat.shape[1] for mat, _ in self.parts), 1)
        buf = np.zeros(self.n * width + self._widest(), dtype=np.uint8)
        _write(buf, np.arange(self.n, dtype=np.int64) * width, pieces)
        return buf[:self.n * width].reshape(self.n, width), lens

    def _widest(self) -> int:
        return max((mat.shape[1] for mat, _ in self.parts), default=0)

    def _pieces(self, rows: np.ndarray | None) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], np.ndarray]:
        """(matrix, lengths) of every piece for the selected rows (a constant stays one broadcast row, its lengths
        None), and the rows' total lengths."""
        m = self.n if rows is None else int(np.count_nonzero(rows))
        pieces, total = [], np.zeros(m, dtype=np.int64)
        for mat, lens in self.parts:
            if lens is not None and rows is not None:
                mat, lens = (mat if mat.strides[0] == 0 else mat[rows]), lens[rows]
            pieces.append((mat, lens))
            total += mat.shape[1] if lens is None else lens
        return pieces, total


def _write(buf: np.ndarray, starts: np.ndarray, pieces: list[tuple[np.ndarray, np.ndarray | None]]) -> None:
    """Write row k's pieces one after another from buf[starts[k]] on (see _Rows); buf has room for the widest
    piece past the last row."""
    (first, head), *rest = pieces
    head = first.shape[1] if head is None else head
    # how far a row's scratch may run: to the end of the next row's first piece (written last)
    limit = np.append(starts[1:] + (head if np.isscalar(head) else head[1:]), len(buf))
    pos = starts + head
    for mat, lens in rest:
        _scatter(buf, pos, mat, lens, limit)
        pos += mat.shape[1] if lens is None else lens
    _scatter(buf, starts, first, None if np.isscalar(head) else head, None)


def _scatter(buf: np.ndarray, pos: np.ndarray, mat: np.ndarray, lens: np.ndarray | None,
             limit: np.ndarray | None) -> None:
    """Row k's item (mat[k]; lens None: full width) at buf[pos[k]:]: the whole `width` bytes where they end before
    limit[k], exactly `lens[k]` bytes elsewhere (limit None: exactly everywhere)."""
    w = mat.shape[1]
    if w == 0 or len(pos) == 0:
        return
    items = np.ndarray((len(buf) - w + 1,), dtype=f"V{w}", buffer=buf, strides=(1,))  # item i = buf[i:i + w]
    one = mat.strides[0] == 0  # the same bytes in every row (a broadcast)
    src = np.ascontiguousarray(mat[:1] if one else mat).view(f"V{w}")[:, 0]
    if lens is None:
        items[pos] = src
        return
    whole = lens == w
    if limit is not None and not whole.all():
        whole = pos + w <= limit
    if whole.all():
        items[pos] = src
        return
    if whole.any():
        items[pos[whole]] = src if one else src[whole]
    rest = ~whole
    sub = np.broadcast_to(mat[:1], (int(rest.sum()), w)) if one else mat[rest]
    keep = np.arange(w) < lens[rest][:, None]
    buf[(pos[rest][:, None] + np.arange(w))[keep]] = sub[keep]


def _pad(flat: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated per-row bytes -> (rows x max length) matrix, each row left-aligned."""
    w = max(int(lens.max()) if len(lens) else 0, 1)
    mat = np.zeros((len(lens), w), dtype=np.uint8)
    mat[np.arange(w) < lens[:, None]] = flat
    return mat


def _varint(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned 64-bit values -> protobuf base-128 varint bytes (matrix, lengths 1..10)."""
    u = values.astype(np.uint64, copy=False)
    lens = np.ones(len(u), dtype=np.int64)
    top = int(u.max()) if len(u) else 0
    for k in range(1, 10):
        if top < 1 << (7 * k):
            break
        lens += u >= np.uint64(1 << (7 * k))
    w = int(lens.max()) if len(u) else 1
    mat = np.empty((len(u), w), dtype=np.uint8)
    for k in range(w):
        byte = ((u >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        mat[:, k] = np.where(k < lens - 1, byte | np.uint8(0x80), byte)
    return mat, lens


def _ascii(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative integers -> decimal ASCII digits (matrix, lengths)."""
    x = values.astype(np.int64, copy=False)
    lens = np.ones(len(x), dtype=np.int64)
    top = int(x.max()) if len(x) else 0
    k = 1
    while 10 ** k <= top:
        lens += x >= 10 ** k
        k += 1
    w = int(lens.max()) if len(x) else 1
    mat = np.empty((len(x), w), dtype=np.uint8)
    for j in range(w):
        power = np.power(10, np.maximum(lens - 1 - j, 0))
        mat[:, j] = (x // power % 10 + 48).astype(np.uint8)
    return mat, lens


def _integer_like(mat: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Rows whose bytes could be a decimal integer string that Redis stores as an integer entry (listpack.c
    lpStringToInt64: 1..20 bytes, an optional '-', digits); a superset of them (leading zeros too): harmless, such
    rows only go to HSET."""
    out = np.zeros(len(lens), dtype=bool)
    if mat.shape[1] == 0:
        return out
    first = mat[:, 0]
    cand = (lens >= 1) & (lens <= 20) & (((first >= 48) & (first <= 57)) | (first == 45))
    if cand.any():
        m = mat[cand][:, :20]
        digit = (m >= 48) & (m <= 57)
        digit[:, 0] |= m[:, 0] == 45
        out[cand] = (digit | (np.arange(m.shape[1]) >= lens[cand][:, None])).all(axis=1)
    return out


def _tagged(tag: bytes, body: tuple[np.ndarray, np.ndarray], valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tag + body where valid, nothing (Feast's empty Value: null) elsewhere."""
    mat, lens = body
    head = np.broadcast_to(np.frombuffer(tag, dtype=np.uint8), (len(lens), len(tag)))
    return np.hstack([head, mat]), np.where(valid, len(tag) + lens, 0)


def _fixed(raw: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    return raw.view(np.uint8).reshape(-1, width), np.full(len(raw), width, dtype=np.int64)


def _const_piece(data: bytes, n: int, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.broadcast_to(np.frombuffer(data, dtype=np.uint8), (n, len(data))), np.where(where, len(data), 0)


def _binary(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string/binary column's bytes (matrix, lengths); nulls are empty."""
    col = col.fill_null("") if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) else col
    lens = pc.binary_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets_type = np.int64 if pa.types.is_large_string(col.type) or pa.types.is_large_binary(col.type) else np.int32
    offsets = np.frombuffer(col.buffers()[1], dtype=offsets_type)[col.offset: col.offset + len(col) + 1]
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8) if col.buffers()[2] is not None else np.zeros(0, np.uint8)
    return _pad(data[int(offsets[0]): int(offsets[-1])], lens), lens


def encode_values(col: pa.Array, vt: ValueType) -> tuple[np.ndarray, np.ndarray]:
    """One column -> serialized feast.types.Value per row (matrix, lengths), exactly as Feast's writer makes them.

    Feast converts with `to_numpy(zero_copy_only=False)` and python_values_to_proto_values; the quirks kept:
    integers of a column with nulls pass through float64; NaN doubles and floats are null; a null timestamp is
    unix_timestamp_val = INT64_MIN (numpy NaT); null elements inside float lists are NaN."""
    n = len(col)
    valid = ~col.is_null().to_numpy(zero_copy_only=False)
    tag = _TAG[vt]
    if vt in (ValueType.INT64, ValueType.INT32):
        v = col.to_numpy(zero_copy_only=False)
        if col.null_count:  # float64 with NaN, as Feast sees it: big values round, >= 2**63 fails as in Feast
            v = np.where(valid, v, 0)
            if (v >= 2.0**63).any():
                raise ValueError(f"Value out of range: {int(v[v >= 2.0**63][0])}")
        v = v.astype(np.int64)
        return _tagged(tag, _varint(v.view(np.uint64)), valid)
    if vt == ValueType.DOUBLE:
        v = col.to_numpy(zero_copy_only=False).astype(np.float64)
        return _tagged(tag, _fixed(v.astype("<f8"), 8), valid & ~np.isnan(v))
    if vt == ValueType.FLOAT:
        v = col.to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(over="ignore"):  # beyond float32: inf, as protobuf's float conversion gives
            single = v.astype("<f4")
        return _tagged(tag, _fixed(single, 4), valid & ~np.isnan(v))
    if vt == ValueType.BOOL:
        v = col.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64)
        return _tagged(tag, _varint(v), valid)
    if vt == ValueType.UNIX_TIMESTAMP:
        seconds = col.to_numpy(zero_copy_only=False).astype("datetime64[s]").astype(np.int64)  # NaT: INT64_MIN
        return _tagged(tag, _varint(seconds.view(np.uint64)), np.ones(n, dtype=bool))
    if vt == ValueType.STRING:
        data, lens = _binary(col)
        r = _Rows(n)
        r.ragged(*_varint(lens.astype(np.uint64)))
        r.ragged(data, lens)
        return _tagged(tag, r.packed(), valid)
    if vt in (ValueType.FLOAT_LIST, ValueType.DOUBLE_LIST):
        size, dtype = (4, "<f4") if vt == ValueType.FLOAT_LIST else (8, "<f8")
        count = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        with np.errstate(over="ignore"):
            flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(dtype)
        nbytes = count * size
        packed = _Rows(n)  # a repeated scalar field, packed: 0x0a <length> <values>, absent when empty
        packed.ragged(*_const_piece(b"\x0a", n, count > 0))
        digits, dlens = _varint(nbytes.astype(np.uint64))
        packed.ragged(digits, np.where(count > 0, dlens, 0))
        packed.ragged(_pad(flat.view(np.uint8), nbytes), nbytes)
        inner, inner_lens = packed.packed()
        r = _Rows(n)
        r.ragged(*_varint(inner_lens.astype(np.uint64)))
        r.ragged(inner, inner_lens)
        return _tagged(tag, r.packed(), valid)
    raise _Unsupported(f"no encoder for {vt}")


# ------------------------------------------------------------------------------------------ DUMP payloads
# A new key's hash as `RESTORE key ttl payload` takes it (Redis >= 7.0, checked against src/listpack.c, src/rdb.c,
# src/cluster.c of 7.0.15): RDB type RDB_TYPE_HASH_LISTPACK (16), the listpack as an RDB string (length: < 64 one
# byte 00xxxxxx, < 16384 two bytes 01xxxxxx xxxxxxxx big-endian, else 0x80 and 4 bytes big-endian), RDB version 10
# (2 bytes LE; newer servers load older versions), CRC-64 of all that (8 bytes LE). The listpack: total bytes (4,
# LE), element count (2, LE), entries, 0xFF; an entry is its encoding + data, then its backlen (the length of
# encoding + data, 7 bits a byte, readable right to left). Strings only: HSET stores a canonical decimal integer
# string as an integer entry, so rows with one go to HSET (_Layout.restorable).

_RDB_TYPE_HASH_LISTPACK = 16
_RDB_FOOTER = b"\xff\x0a\x00"  # the listpack's end byte, then RDB version 10 (Redis 7.0's)
_CRC_POLY = 0x95AC9329AC4BC9B5  # Jones' polynomial 0xad93d23594c935a9, bit-reflected (Redis' crc64)
_CRC_TABLES: list[np.ndarray] = []


def _lp_str_header(k: int) -> bytes:
    """A listpack string entry's encoding byte(s) for a k-byte string (listpack.c lpEncodeString)."""
    if k < 64:
        return bytes([0x80 | k])
    if k < 4096:
        return bytes([0xE0 | k >> 8, k & 0xFF])
    return b"\xf0" + struct.pack("<I", k)


def _lp_backlen(n: int) -> bytes:
    """The backlen of an entry whose encoding + data is n bytes (listpack.c lpEncodeBacklen)."""
    size = 1 if n <= 127 else 2 if n < 16383 else 3 if n < 2097151 else 4 if n < 268435455 else 5
    return bytes([(n >> 7 * (size - 1 - i)) & (0xFF if i == 0 else 0x7F) | (0 if i == 0 else 0x80)
                  for i in range(size)])


def _lp_entry(data: bytes) -> bytes:
    head = _lp_str_header(len(data)) + data
    return head + _lp_backlen(len(head))


def _lp_str_headers(lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_lp_str_header per row (matrix, lengths)."""
    k = lens.astype(np.int64)
    out = np.zeros((len(k), 5), dtype=np.uint8)
    out[:, 0] = np.where(k < 64, 0x80 | k, np.where(k < 4096, 0xE0 | k >> 8, 0xF0)) & 0xFF
    out[:, 1] = k & 0xFF
    out[:, 2:] = (k[:, None] >> np.array([8, 16, 24])) & 0xFF
    return out, np.where(k < 64, 1, np.where(k < 4096, 2, 5))


def _lp_backlens(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_lp_backlen per row (matrix, lengths)."""
    n = n.astype(np.int64)
    size = np.select([n <= 127, n < 16383, n < 2097151, n < 268435455], [1, 2, 3, 4], 5)
    out = np.zeros((len(n), 5), dtype=np.uint8)
    for i in range(5):
        shift = np.maximum(7 * (size - 1 - i), 0)
        byte = (n >> shift) & np.where(i == 0, 0xFF, 0x7F)
        out[:, i] = np.where(i == 0, byte, byte | 0x80) & 0xFF
    return out, size


def _lp_entries(mat: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A listpack string entry per row (encoding, the bytes, backlen) as one (matrix, lengths) piece."""
    n, w = mat.shape
    if n and int(lens.max()) < 64:  # the usual case: one encoding byte 0x80|len, one backlen byte 1 + len
        out = np.empty((n, w + 2), dtype=np.uint8)
        out[:, 0] = 0x80 | lens
        out[:, 1:w + 1] = mat
        out[np.arange(n), lens + 1] = lens + 1
        return out, lens + 2
    r = _Rows(n)
    r.lp_entry(mat, lens)
    return r.packed()


def _rdb_lens(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RDB string lengths (rdb.c rdbSaveLen) per row (matrix, lengths): 1, 2 or 5 bytes."""
    n = n.astype(np.int64)
    out = np.zeros((len(n), 5), dtype=np.uint8)
    small, mid = n < 64, n < 16384
    out[:, 0] = np.where(small, n, np.where(mid, 0x40 | n >> 8, 0x80)) & 0xFF
    out[:, 1] = np.where(mid, n & 0xFF, n >> 24 & 0xFF)
    out[:, 2:] = (n[:, None] >> np.array([16, 8, 0])) & 0xFF
    return out, np.where(small, 1, np.where(mid, 2, 5))


def _crc_tables() -> list[np.ndarray]:
    """Slicing-by-8 tables of Redis' CRC-64 (reflected, init 0, no final xor) merged in pairs: tables[k][v] is the
    CRC of the 2 bytes of v (little-endian) followed by 6 - 2k zero bytes, for the k-th 16 bits of a word (4 x
    65,536 entries, 2 MiB: half the lookups of byte tables)."""
    if not _CRC_TABLES:
        c = np.arange(256, dtype=np.uint64)
        for _ in range(8):
            c = np.where(c & np.uint64(1), (c >> np.uint64(1)) ^ np.uint64(_CRC_POLY), c >> np.uint64(1))
        by_byte = [c]  # by_byte[j][b]: the CRC of byte b followed by j zero bytes
        for _ in range(7):
            t = by_byte[-1]
            by_byte.append((t >> np.uint64(8)) ^ c[(t & np.uint64(0xFF)).astype(np.intp)])
        v = np.arange(1 << 16)
        _CRC_TABLES.extend(by_byte[7 - 2 * k][v & 0xFF] ^ by_byte[6 - 2 * k][v >> 8] for k in range(4))
    return _CRC_TABLES


def _crc64_spans(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Redis' CRC-64 of buf[starts[i]:starts[i] + lens[i]] for every i, all spans in lockstep: each span is copied
    as the W bytes that end where it ends (W: the longest span rounded up to 8; buf must hold W bytes before every
    span's end) into one matrix, the bytes before its start zeroed (a CRC with init 0 is unchanged by leading
    zeros), then slicing-by-8 over the matrix's little-endian uint64 columns: W / 8 steps of 4 lookups in
    16-bit tables over all spans at once. Little-endian machines only (numpy's uint64 view of the bytes)."""
    n = len(lens)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    tables = _crc_tables()
    width = max(-(-int(lens.max()) // 8) * 8, 8)
    at = starts + lens - width
    if at.min() < 0 or int((starts + lens).max()) > len(buf):
        raise ValueError("CRC spans need room before them")
    items = np.ndarray((len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
    spans = items[at].view(np.uint8).reshape(n, width)
    lead = width - lens
    top = int(lead.max())
    if top:
        head = spans[:, :top]
        head[np.arange(top) < lead[:, None]] = 0
    words = np.ascontiguousarray(spans.view("<u8").T)  # word j of every span, contiguous
    crc = np.zeros(n, dtype=np.uint64)
    part = np.empty(n, dtype=np.uint64)
    for x in words:
        x ^= crc
        b = x.view(np.uint16).reshape(n, 4)
        np.take(tables[0], b[:, 0], out=crc)
        for k in range(1, 4):
            np.take(tables[k], b[:, k], out=part)
            crc ^= part
    return crc


def crc64(data: bytes) -> int:
    """Redis' CRC-64 of one byte string (what DUMP payloads end with)."""
    buf = np.frombuffer(b"\0" * 8 + data, dtype=np.uint8)
    return int(_crc64_spans(buf, np.array([8]), np.array([len(data)]))[0])


# ------------------------------------------------------------------------------------------ view layout


class _Layout:
    """What one feature view writes: entity key bytes, hash fields, value encoders."""

    def __init__(self, fv: FeatureView, cfg):
        self.fv, self.cfg, self.name = fv, cfg, fv.name
        name = _versioned_fv_name(fv, cfg)
        self.keys = sorted((c.name, c.dtype.to_value_type()) for c in fv.entity_columns)
        self.features = [(f.name, f.dtype.to_value_type()) for f in fv.features]
        self.ts_field = f"_ts:{name}".encode()
        self.fields = [_mmh3(f"{name}:{f}") for f, _ in self.features]
        self.timestamp = fv.batch_source.timestamp_field
        self.project = cfg.project.encode()

    def __getstate__(self) -> dict:
        """What a Spark worker needs to encode (the view and repo config stay on the driver: `verify` uses them)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("fv", "cfg")}

    def check_schema(self, schema: pa.Schema) -> None:
        """Raise _Unsupported (before anything is written) for column types the encoders do not take."""
        expect = {ValueType.INT64: pa.types.is_integer, ValueType.INT32: pa.types.is_integer,
                  ValueType.DOUBLE: pa.types.is_float64, ValueType.FLOAT: pa.types.is_floating,
                  ValueType.BOOL: pa.types.is_boolean, ValueType.UNIX_TIMESTAMP: pa.types.is_timestamp,
                  ValueType.STRING: pa.types.is_string,
                  ValueType.FLOAT_LIST: lambda t: pa.types.is_list(t) and pa.types.is_floating(t.value_type),
                  ValueType.DOUBLE_LIST: lambda t: pa.types.is_list(t) and pa.types.is_floating(t.value_type)}
        for name, vt in [*self.keys, *self.features]:
            if not expect[vt](schema.field(name).type):
                raise _Unsupported(f"column {name} is {schema.field(name).type} for a {vt.name} feature")
        if not pa.types.is_timestamp(schema.field(self.timestamp).type):
            raise _Unsupported(f"timestamp column {self.timestamp} is {schema.field(self.timestamp).type}")

    def entity_keys(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Feast's serialize_entity_key (v3) + project, per row."""
        n = batch.num_rows
        r = _Rows(n)
        r.const(struct.pack("<I", len(self.keys)))
        for name, _ in self.keys:
            encoded = name.encode("utf8")
            r.const(struct.pack("<II", ValueType.STRING.value, len(encoded)) + encoded)
        for name, vt in self.keys:
            col = batch.column(name)
            if col.null_count:
                raise ValueError(f"{self.name}: {col.null_count} rows with a null join key {name}")
            if vt == ValueType.STRING:
                data, lens = _binary(col)
                head = np.stack([np.full(n, ValueType.STRING.value), lens]).T.astype("<u4")
                r.ragged(*_fixed(np.ascontiguousarray(head), 8))
                r.ragged(data, lens)
            else:
                dtype, width = ("<i8", 8) if vt == ValueType.INT64 else ("<i4", 4)
                r.const(struct.pack("<II", vt.value, width))
                r.ragged(*_fixed(col.to_numpy(zero_copy_only=False).astype(dtype), width))
        r.const(self.project)
        return r.packed()

    def event_timestamps(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Row timestamps as (seconds, nanos) and serialized google.protobuf.Timestamp, as Feast's writer makes
        them (truncated to microseconds, seconds floored)."""
        col = batch.column(self.timestamp)
        us = col.to_numpy(zero_copy_only=False).astype("datetime64[us]").astype(np.int64)
        seconds, micros = np.divmod(us, 1_000_000)
        nanos = micros * 1000
        n = batch.num_rows
        r = _Rows(n)
        r.ragged(*_const_piece(b"\x08", n, seconds != 0))
        digits, dlens = _varint(seconds.view(np.uint64))
        r.ragged(digits, np.where(seconds != 0, dlens, 0))
        r.ragged(*_const_piece(b"\x10", n, nanos != 0))
        digits, dlens = _varint(nanos.astype(np.uint64))
        r.ragged(digits, np.where(nanos != 0, dlens, 0))
        return seconds, nanos, r.packed()

    def values(self, batch: pa.RecordBatch) -> list[tuple[np.ndarray, np.ndarray]]:
        """Serialized Values of every feature, in the view's feature order."""
        return [encode_values(batch.column(name), vt) for name, vt in self.features]

    def commands(self, keys, ts_value, values, ttl: int | None) -> _Rows:
        """RESP per row: HSET key _ts:<view> <ts> <field> <value> ... [EXPIRE key ttl]."""
        r = _Rows(len(keys[1]))
        r.const(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (1 + len(self.features))))
        r.bulk(*keys)
        r.bulk_const(self.ts_field)
        r.bulk(*ts_value)
        for field, value in zip(self.fields, values, strict=True):
            r.bulk_const(field)
            r.bulk(*value)
        if ttl:
            r.const(b"*3\r\n$6\r\nEXPIRE\r\n")
            r.bulk(*keys)
            r.bulk_const(str(int(ttl)).encode())
        return r

    def restore_blocker(self, max_entries: int, max_value: int) -> str | None:
        """Why this view's hashes cannot be RESTOREd as listpacks equal to what HSET makes, under the server's
        hash-max-listpack-entries / -value (None: they can, row by row as `restorable` says)."""
        pairs = 1 + len(self.fields)
        if len(set(self.fields)) < len(self.fields):
            return "two features' hash fields collide (murmur3)"
        if pairs > max_entries or 2 * pairs >= 0xFFFF:
            return f"{pairs} hash fields > hash-max-listpack-entries {max_entries}"
        if max(len(self.ts_field), 4) > max_value:
            return f"field {self.ts_field.decode()} longer than hash-max-listpack-value {max_value}"
        if any(_integer_like(np.frombuffer(f, dtype=np.uint8)[None], np.array([len(f)]))[0] for f in self.fields):
            return "a hash field is a decimal integer string (HSET stores it as an integer)"
        return None

    @staticmethod
    def restorable(ts_value, values, max_value: int) -> np.ndarray:
        """Rows whose RESTORE payload gives what HSET gives: every value at most hash-max-listpack-value bytes
        (HSET turns the hash into a hashtable otherwise, RESTORE would not) and none a decimal integer string
        (HSET would store an integer entry; of Feast's Values only a FLOAT's, tag '5' and 4 digit bytes, can be)."""
        ok = np.ones(len(ts_value[1]), dtype=bool)
        for mat, lens in [ts_value, *values]:
            ok &= lens <= max_value
            ok &= ~_integer_like(mat, lens)
        return ok

    def restore_commands(self, keys, ts_value, values, ttl: int | None, rows: np.ndarray | None = None) -> bytes:
        """RESP per row (or per selected row): RESTORE key <ttl ms or 0> <payload>, the payload the DUMP of the
        hash `commands` would create (see "DUMP payloads" above); its CRC-64 computed in the command buffer."""
        if rows is not None and rows.all():
            rows = None
        if rows is not None:
            rows = np.flatnonzero(rows)

        def sel(piece):
            return piece if rows is None else (piece[0][rows], piece[1][rows])

        keys, ts_value, values = sel(keys), sel(ts_value), [sel(v) for v in values]
        n = len(keys[1])
        if n == 0:
            return b""
        fields = [_lp_entry(self.ts_field), *[_lp_entry(f) for f in self.fields]]
        size = np.full(n, 4 + 2 + sum(map(len, fields)) + 1)  # the listpack: header, field entries, end byte
        entries = []  # (matrix, lengths, one length in every row: header and backlen constants, the usual case)
        for mat, lens in [ts_value, *values]:
            if lens.min() == lens.max():
                entries.append((mat, lens, True))
                size += len(_lp_entry(b"\0" * int(lens[0])))
            else:
                entries.append((*_lp_entries(mat, lens), False))
                size += entries[-1][1]
        rdb_len = _rdb_lens(size)
        payload = 1 + rdb_len[1] + size + 2  # type, length, listpack, RDB version: what the CRC covers
        r = _Rows(n)
        r.const(b"*4\r\n$7\r\nRESTORE\r\n")
        r.bulk(*keys)
        r.bulk_const(b"%d" % (int(ttl) * 1000 if ttl else 0))
        r.const(b"$")
        r.ragged(*_ascii(payload + 8))
        r.const(b"\r\n")
        start = len(r.parts)
        r.const(bytes([_RDB_TYPE_HASH_LISTPACK]), merge=False)
        r.ragged(*rdb_len)
        head = np.empty((n, 6), dtype=np.uint8)
        head[:, :4] = size.astype("<u4").view(np.uint8).reshape(n, 4)
        head[:, 4:] = np.frombuffer(struct.pack("<H", 2 * len(fields)), dtype=np.uint8)
        r.ragged(head, np.full(n, 6))
        for field, (mat, lens, uniform) in zip(fields, entries, strict=True):
            r.const(field)
            if uniform:
                r.lp_entry(mat, lens)
            else:
                r.ragged(mat, lens)
        r.const(_RDB_FOOTER + b"\0" * 8 + b"\r\n")  # the CRC's 8 bytes are written below
        width = -(-int(payload.max()) // 8) * 8
        buf, starts, total = r.tobuffer(lead=width)
        begin = starts + r.offset(start)
        crc = _crc64_spans(buf, begin, payload)
        slots = np.ndarray((len(buf) - 7,), dtype="V8", buffer=buf, strides=(1,))
        slots[begin + payload] = crc.astype("<u8").view("V8")
        return buf[width:int(starts[-1] + total[-1])].tobytes()

    def verify(self, batch: pa.RecordBatch) -> None:
        """Encode these rows with Feast's own code too; raise _Unsupported on any difference in key or bytes."""
        from feast.infra.online_stores.helpers import _redis_key
        from feast.utils import _convert_arrow_to_proto, make_tzaware
        from google.protobuf.timestamp_pb2 import Timestamp

        if batch.num_rows == 0:
            return
        join_keys = {c.name: c.dtype.to_value_type() for c in self.fv.entity_columns}
        feast_rows = _convert_arrow_to_proto(batch, self.fv, join_keys)
        keys, klens = self.entity_keys(batch)
        _, _, (ts, tlens) = self.event_timestamps(batch)
        values = self.values(batch)
        for i, (ek, vals, event_ts, _) in enumerate(feast_rows):  # a few hundred rows, once per view
            stamp = Timestamp()
            stamp.FromDatetime(make_tzaware(event_ts))
            expected = [_redis_key(self.cfg.project, ek, entity_key_serialization_version=3),
                        stamp.SerializeToString(), *[vals[f].SerializeToString() for f, _ in self.features]]
            ours = [keys[i, :klens[i]].tobytes(), ts[i, :tlens[i]].tobytes(),
                    *[m[i, :lens[i]].tobytes() for m, lens in values]]
            if ours != expected:
                names = ["entity key", "_ts", *[f for f, _ in self.features]]
                bad = [nm for nm, a, b in zip(names, ours, expected, strict=True) if a != b]
                raise _Unsupported(f"bytes differ from Feast's encoder in {bad} (row {i})")


# ------------------------------------------------------------------------------------------ Redis I/O


class _RedisStream:
    """Two connections from the online store's redis-py pool: `check` asks for the stored timestamps of a batch's
    keys (sent before the batch is encoded, the reply read after: one EXISTS over the keys while none of the view's
    keys so far existed, as in a first materialization, else a Lua script that reads each key's `_ts`: handing a
    Lua script a batch of keys costs redis-server far more than one EXISTS), `write` streams the prebuilt RESP
    writes from a thread of its own (sending and reading replies wait on the socket without the GIL, so the next
    batch is encoded meanwhile; a batch's replies are read after the next batch is sent).

    Keys that EXISTS found absent are written with RESTORE (`restore_mode`: the hash serialized here, ~4x less
    redis-server CPU than HSET) once a probe showed that this server, as this user, restores our payloads into
    hashes equal to HSET's. A key another writer creates between the EXISTS and the RESTORE fails with BUSYKEY:
    the writer thread notes those rows (one reply per RESTORE, so reply k of a batch is its k-th restored row) and
    `take_busy` hands them back to be written the normal way (stored-timestamp check, HSET)."""

    def __init__(self, client, restore: bool = True):
        self.pool = client.connection_pool
        self.check = self.write = None
        self.queue: queue.Queue = queue.Queue(maxsize=1)  # bounds the encoded batches waiting: memory
        self.error: BaseException | None = None
        self.any_stored = False  # a key of this stream's batches existed: ask the Lua script directly
        self.asked: tuple[bytes, int, bytes] | None = None  # the open ask: keys as RESP bulk strings, count, field
        self.received, self.partial = 0, b""  # replies read on `write`; the bytes of a line not complete yet
        self.pending: collections.deque = collections.deque()  # sent, replies not all read: [start, end, rows, busy]
        self.busy: collections.deque = collections.deque()  # (batch, rows) refused with BUSYKEY, to write again
        self.restore = restore  # False: HSET only (restore_new_keys off)
        self.limits: tuple[int, int] | str | None = None  # hash-max-listpack-entries / -value, or why not
        self.probed: bool | str | None = None  # the probe passed / why it failed / not run yet
        self.paths: dict[str, dict] = {}  # per view: rows restored / HSET, and why HSET
        self.writer = threading.Thread(target=self._write_loop, name="feedstore-redis-writer", daemon=True)

    def __enter__(self) -> _RedisStream:
        self.check = self.pool.get_connection()
        self.write = self.pool.get_connection()
        self.writer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.queue.put(None)
        self.writer.join()
        try:
            if exc_type is None and self.error is not None:
                raise self.error
        finally:
            for conn in (self.check, self.write):
                if exc_type is not None or self.error is not None:
                    conn.disconnect()  # replies may still be in flight: never hand this connection back dirty
                self.pool.release(conn)

    # ------------------------------------------------------------------ write path

    def note(self, view: str, restored: int, hset: int, why: str | None = None) -> None:
        path = self.paths.setdefault(view, {"restored": 0, "hset": 0, "why": []})
        path["restored"] += restored
        path["hset"] += hset
        if why and why not in path["why"]:
            path["why"].append(why)

    def describe(self, view: str) -> str:
        """One line: which write path this view's rows took and why."""
        path = self.paths.get(view, {"restored": 0, "hset": 0, "why": []})
        return _write_paths(path["restored"], path["hset"], path["why"])

    def restore_mode(self, layout: _Layout, ts_value, values) -> np.ndarray | None:
        """Rows of this batch to RESTORE if EXISTS finds none of its keys (None: HSET them all); the first time,
        reads the server's listpack limits and runs the probe."""
        if not self.restore:
            return self._hset(layout, "restore_new_keys off")
        if sys.byteorder != "little":
            return self._hset(layout, "the CRC-64 here reads words little-endian")
        if self.limits is None:
            self.limits = self._listpack_limits()
        if isinstance(self.limits, str):
            return self._hset(layout, self.limits)
        blocker = layout.restore_blocker(*self.limits)
        if blocker:
            return self._hset(layout, blocker)
        rows = layout.restorable(ts_value, values, self.limits[1])
        if not rows.any():
            return self._hset(layout, f"values over hash-max-listpack-value {self.limits[1]} or integer-like")
        if self.probed is None:
            self.probed = self._probe(layout, ts_value, values, int(np.argmax(rows)))
        if self.probed is not True:
            return self._hset(layout, f"the RESTORE probe failed: {self.probed}")
        if not rows.all():
            self.note(layout.name, 0, 0, f"rows with values over hash-max-listpack-value {self.limits[1]} or "
                                         "integer-like")
        return rows

    def _hset(self, layout: _Layout, why: str) -> None:
        self.note(layout.name, 0, 0, why)
        return None

    def _listpack_limits(self) -> tuple[int, int] | str:
        conn = self.pool.get_connection()
        try:
            conn.send_command("CONFIG", "GET", "hash-max-listpack-*")
            reply = conn.read_response()
            conf = {bytes(k).decode(): int(v) for k, v in zip(reply[0::2], reply[1::2], strict=True)}
            return conf["hash-max-listpack-entries"], conf["hash-max-listpack-value"]
        except Exception as e:  # refused (managed Redis, ACL), or a server without these settings
            return f"CONFIG GET hash-max-listpack-* failed: {type(e).__name__}: {e}"
        finally:
            self.pool.release(conn)

    def _probe(self, layout: _Layout, ts_value, values, row: int) -> bool | str:
        """RESTORE one row of ours under a scratch key, HSET it under a twin; True if both give the same fields in
        the same order and the same encoding, else what went wrong. Both scratch keys are deleted."""
        token = os.urandom(8).hex().encode()
        names = [b"feedstore:restore-probe:" + token + suffix for suffix in (b":restore", b":hset")]
        keys = [(np.frombuffer(name, dtype=np.uint8)[None], np.array([len(name)])) for name in names]
        one = [(mat[row:row + 1], lens[row:row + 1]) for mat, lens in [ts_value, *values]]
        commands = [layout.restore_commands(keys[0], one[0], one[1:], None),
                    layout.commands(keys[1], one[0], one[1:], None).tobytes()]
        conn = self.pool.get_connection()
        try:
            conn.send_packed_command(commands)
            replies = [_reply(conn) for _ in commands]
            for name in names:
                conn.send_command("HGETALL", name)
                conn.send_command("OBJECT", "ENCODING", name)
            got = [_reply(conn) for _ in range(4)]
            errors = [r for r in replies + got if isinstance(r, Exception)]
            if errors:
                return f"{type(errors[0]).__name__}: {errors[0]}"
            if got[0] != got[2] or got[1] != got[3]:
                return f"the restored hash differs from HSET's (encoding {got[1]!r} vs {got[3]!r})"
            return True
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        finally:
            try:
                conn.send_command("DEL", *names)
                conn.read_response()
            except Exception:
                conn.disconnect()
            self.pool.release(conn)

    def take_busy(self) -> list[tuple[pa.RecordBatch, np.ndarray]]:
        """Rows whose RESTORE found the key already there (their batch's replies all read), to write again."""
        out = []
        while self.busy:
            out.append(self.busy.popleft())
        if out:
            self.any_stored = True
        return out

    def flush(self) -> None:
        """Wait until every reply so far is read (BUSYKEY rows then all in take_busy); raise the writer's error."""
        done = threading.Event()
        self.send(done, 0)
        done.wait()
        if self.error is not None:
            raise self.error

    # ------------------------------------------------------------------ stored timestamps

    def ask_stored(self, keys, ts_field: bytes) -> None:
        """Send the lookup of these keys' stored `_ts:<view>` (its reply is read by newer_than_stored)."""
        r = _Rows(len(keys[1]))
        r.bulk(*keys)
        self.asked = (r.tobytes(), len(keys[1]), ts_field)
        if self.any_stored:
            self._send_lua()
        else:
            self.check.send_packed_command([b"*%d\r\n$6\r\nEXISTS\r\n" % (1 + len(keys[1])), self.asked[0]])

    def _send_lua(self) -> None:
        keys, n, ts_field = self.asked
        self.check.send_packed_command([b"*%d\r\n$4\r\nEVAL\r\n" % (4 + n), b"$%d\r\n%s\r\n" % (
            len(_LUA_STORED_TS), _LUA_STORED_TS), b"$%d\r\n%d\r\n" % (len(str(n)), n), keys,
            b"$%d\r\n%s\r\n" % (len(ts_field), ts_field)])

    def newer_than_stored(self, seconds: np.ndarray, nanos: np.ndarray) -> np.ndarray:
        """Feast's rule, on the reply to ask_stored: write a row unless its key holds a positive stored timestamp
        >= the row's."""
        reply = self.check.read_response()
        if not self.any_stored:  # the EXISTS count
            if reply == 0:
                return np.ones(len(seconds), dtype=bool)
            self.any_stored = True
            self._send_lua()
            reply = self.check.read_response()
        write = np.ones(len(seconds), dtype=bool)
        if reply:
            idx = np.asarray(reply[0::2], dtype=np.int64)
            stored_s, stored_n = _decode_timestamps(reply[1::2])
            positive = (stored_s > 0) | ((stored_s == 0) & (stored_n > 0))
            not_newer = (seconds[idx] < stored_s) | ((seconds[idx] == stored_s) & (nanos[idx] <= stored_n))
            write[idx[positive & not_newer]] = False
        return write

    # ------------------------------------------------------------------ the writer thread

    def send(self, payload, replies: int, restored: tuple[pa.RecordBatch, np.ndarray] | None = None) -> None:
        """Hand one batch of commands (`replies` replies expected; `restored`: the batch and its rows whose
        RESTOREs come first in `payload`) to the writer thread; raise its error if any."""
        if self.error is not None:
            raise self.error
        self.queue.put((payload, replies, restored))

    def _write_loop(self) -> None:
        """The writer thread: send each batch, then read the replies of the batches before it; after an error, only
        drain the queue (the main thread raises it)."""
        sent = 0  # replies expected for everything sent so far
        while (item := self.queue.get()) is not None:
            payload, replies, restored = item
            if isinstance(payload, threading.Event):  # flush: read every reply so far
                if self.error is None:
                    try:
                        self._read_replies(sent)
                    except BaseException as e:
                        self.error = e
                payload.set()
                continue
            if self.error is not None:
                continue
            try:
                self.pending.append([sent, sent + replies, restored, []])  # before its replies can come
                self.write.send_packed_command([payload])
                self._read_replies(sent)
                sent += replies
            except BaseException as e:  # handed to the main thread
                self.error = e
        if self.error is None:
            try:
                self._read_replies(sent)
            except BaseException as e:
                self.error = e

    def _read_replies(self, upto: int) -> None:
        """Read replies (one line each: integers, +OK or errors) until `upto` have come since the start (more may
        come with them: counted too); BUSYKEY of a RESTORE noted, any other error reply raised."""
        sock = self.write._sock
        while self.received < upto:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection while replies were outstanding")
            seen = self.partial + data
            end = seen.rfind(b"\r\n") + 2  # complete lines: seen[:end]
            if end >= 2 and (seen[:1] == b"-" or seen.find(b"\r\n-", 0, end - 2) >= 0):
                self._errors(seen[:end])
            self.received += seen.count(b"\r\n", 0, end) if end >= 2 else 0
            self.partial = seen[end:] if end >= 2 else seen
            while self.pending and self.pending[0][1] <= self.received:
                _, _, restored, busy = self.pending.popleft()
                if busy:
                    self.busy.append((restored[0], restored[1][np.asarray(busy)]))

    def _errors(self, lines: bytes) -> None:
        """The error replies among these complete lines (the first of them is reply number self.received)."""
        starts = [0] if lines[:1] == b"-" else []
        at = lines.find(b"\r\n-")
        while at >= 0:
            starts.append(at + 2)
            at = lines.find(b"\r\n-", at + 2)
        for at in starts:
            k = self.received + lines.count(b"\r\n", 0, at)
            message = lines[at + 1:lines.find(b"\r\n", at)]
            batch = next((p for p in self.pending if p[0] <= k < p[1]), None)
            restored = batch[2] if batch is not None else None
            if restored is None or k - batch[0] >= len(restored[1]) or not message.startswith(b"BUSYKEY"):
                raise RuntimeError(f"Redis rejected a write: -{message.decode(errors='replace')}")
            batch[3].append(k - batch[0])


def _reply(conn):
    """One reply on a redis-py connection, an error reply returned (not raised) so the replies after it are read."""
    try:
        return conn.read_response()
    except redis.ResponseError as e:
        return e


def _decode_timestamps(raws: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Serialized google.protobuf.Timestamp values -> (seconds, nanos), vectorized."""
    lens = np.fromiter(map(len, raws), dtype=np.int64, count=len(raws))
    buf = np.frombuffer(b"".join(raws) + b"\x00" * 11, dtype=np.uint8)
    pos = np.cumsum(lens) - lens
    end = pos + lens
    out = []
    for tag in (0x08, 0x10):
        here = (pos < end) & (buf[np.minimum(pos, len(buf) - 1)] == tag)
        pos = np.where(here, pos + 1, pos)
        value = np.zeros(len(raws), dtype=np.uint64)
        going = here.copy()
        for k in range(10):
            byte = buf[np.where(going, pos, 0)].astype(np.uint64)
            value |= np.where(going, byte & np.uint64(0x7F), np.uint64(0)) << np.uint64(7 * k)
            pos = np.where(going, pos + 1, pos)
            going &= (byte & np.uint64(0x80)) != 0
        out.append(value.view(np.int64))
    if (pos != end).any():
        raise ValueError("unexpected bytes in a stored _ts timestamp")
    return out[0], out[1]

