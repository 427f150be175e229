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

With the duckdb offline store, the latest-row query runs in DuckDB over the FileSource's Parquet and is streamed
in batches of `batch_rows`, so memory follows the batch, not the entity count. With the Spark offline store
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

import logging
import queue
import re
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
from pydantic import StrictInt

from feedstore.core.duck import connect
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


class _Unsupported(Exception):
    """The fast path does not cover this view (raised before anything is written)."""


class FastMaterializationEngine(LocalComputeEngine):
    """Feast compute engine: vectorized encoding + pipelined RESP writes for Redis, Feast's stock engine otherwise."""

    def __init__(self, *, batch_rows: int = 10_000, duckdb_memory_limit: str = "2GB",
                 duckdb_threads: int | None = None, verify_rows: int = 200, **kwargs):
        kwargs.pop("type", None)
        super().__init__(**kwargs)
        self.batch_rows = int(batch_rows)
        self.duckdb_memory_limit = duckdb_memory_limit
        self.duckdb_threads = duckdb_threads
        self.verify_rows = int(verify_rows)

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
            spill = stack.enter_context(tempfile.TemporaryDirectory(prefix="feedstore-materialize-"))
            stream = stack.enter_context(_RedisStream(client))
            con = connect(self.duckdb_threads)
            stack.callback(con.close)
            con.execute(f"SET memory_limit = '{self.duckdb_memory_limit}'")
            con.execute(f"SET temp_directory = '{spill}'")  # a private spill directory, never the current one
            reader = con.sql(_latest_rows_sql(fv, _source_path(fv.batch_source, cfg.repo_path)),
                             params={"start": _utc(task.start_time), "end": _utc(task.end_time)}
                             ).to_arrow_reader(self.batch_rows)
            layout.check_schema(reader.schema)
            batches = stack.enter_context(closing(read_ahead(reader, depth=3)))
            for k, batch in enumerate(batches):
                if k == 0 and self.verify_rows:
                    layout.verify(batch.slice(0, self.verify_rows))
                read += batch.num_rows
                written += _write_batch(stream, layout, batch, ttl, cfg.online_store.skip_dedup)
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
        body = partial(write_partition, layout=layout, online=cfg.online_store, batch_rows=self.batch_rows)
        try:
            counts = rows.mapInArrow(body, "read long, written long").collect()
        except Exception as e:  # py4j wraps the worker's error in pages of JVM text: keep the Python error's line
            line = _last_error(e)
            if re.match(r"(redis\.exceptions\.\w+|\w*ConnectionError|\w*TimeoutError|ConnectionRefusedError)\b", line):
                raise ServingError(redact(f"materialize {fv.name} on Spark: an executor could not write to Redis "
                                          f"({line})")) from None
            raise RuntimeError(f"materialize {fv.name} on Spark: a write task failed: {line}") from None
        read, written = sum(c["read"] for c in counts), sum(c["written"] for c in counts)
        dt = time.perf_counter() - t0
        log.info("materialized %s [%s, %s] with the fast engine on Spark (%d partitions): %s entities read, %s "
                 "written, %s already newer online, in %.2f s (%s entities/s)", fv.name, task.start_time.isoformat(),
                 task.end_time.isoformat(), len(counts), f"{read:,}", f"{written:,}", f"{read - written:,}", dt,
                 f"{read / max(dt, 1e-9):,.0f}")


SPARK_STORE_TYPE = "feedstore.plugins.spark_offline_store.SparkPitOfflineStore"
_COUNTS = pa.schema([("read", pa.int64()), ("written", pa.int64())])


def _last_error(e: Exception) -> str:
    """The last `SomeError: message` line of a (Spark-wrapped) traceback, else its first line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception): ", ln)]
    return (errors or lines or [repr(e)])[-1 if errors else 0]


def _on_spark(cfg) -> bool:
    """The offline store is feedstore's Spark store (checked by its yaml type: importing it imports pyspark)."""
    return getattr(cfg.offline_store, "type", None) == SPARK_STORE_TYPE


def _write_batch(stream: _RedisStream, layout: _Layout, batch: pa.RecordBatch, ttl: int | None,
                 skip_dedup: bool) -> int:
    """Encode one batch of latest rows and send its writes (rows not newer than the stored `_ts` skipped unless
    `skip_dedup`); returns the number of rows written."""
    keys = layout.entity_keys(batch)
    seconds, nanos, ts_value = layout.event_timestamps(batch)
    if not skip_dedup:
        stream.ask_stored(keys, layout.ts_field)  # Redis looks them up while the batch is encoded
    commands = layout.commands(batch, keys, ts_value, ttl)
    write = np.ones(batch.num_rows, dtype=bool) if skip_dedup else stream.newer_than_stored(seconds, nanos)
    count = int(write.sum())
    if count:
        stream.send(commands.tobytes(None if count == batch.num_rows else write), count * (2 if ttl else 1))
    return count


def write_partition(batches: Iterator[pa.RecordBatch], *, layout: _Layout, online, batch_rows: int
                    ) -> Iterator[pa.RecordBatch]:
    """`mapInArrow` body, run by a Spark Python worker over one partition of latest rows: encode and write them to
    Redis (the online store's connection string, parsed by Feast's own code) in batches of `batch_rows`; yield
    one row (read, written). Connects only if the partition has rows."""
    read = written = 0
    client = None
    with ExitStack() as stack:
        for batch in _rebatch(batches, batch_rows):
            if client is None:
                client = RedisOnlineStore()._get_client(online)
                stack.callback(client.close)
                stream = stack.enter_context(_RedisStream(client))
            read += batch.num_rows
            written += _write_batch(stream, layout, _plain_types(batch), online.key_ttl_seconds, online.skip_dedup)
    yield pa.RecordBatch.from_pydict({"read": [read], "written": [written]}, schema=_COUNTS)


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


def _latest_rows_sql(fv: FeatureView, path: str) -> str:
    """The latest row per entity with start <= timestamp <= end, as Feast's duckdb store selects it."""
    src = fv.batch_source
    keys = [c.name for c in fv.entity_columns]
    ts, created = src.timestamp_field, src.created_timestamp_column or None
    cols = [*keys, *[f.name for f in fv.features], ts] + ([created] if created and created != ts else [])
    order = f"{_q(ts)} DESC NULLS LAST" + (f", {_q(created)} DESC NULLS LAST" if created else "")
    literal = "'" + path.replace("'", "''") + "'"
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

    def const(self, data: bytes) -> None:
        if self.parts and self.parts[-1][1] is None:  # merge adjacent constants
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

    def tobytes(self, rows: np.ndarray | None = None) -> bytes:
        """All rows (or the selected ones) concatenated."""
        pieces, lens = self._pieces(rows)
        if not len(lens):
            return b""
        ends = np.cumsum(lens)
        buf = np.empty(int(ends[-1]) + self._widest(), dtype=np.uint8)
        _write(buf, ends - lens, pieces)
        return buf[:int(ends[-1])].tobytes()

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

    def commands(self, batch: pa.RecordBatch, keys, ts_value, ttl: int | None) -> _Rows:
        """RESP per row: HSET key _ts:<view> <ts> <field> <value> ... [EXPIRE key ttl]."""
        r = _Rows(batch.num_rows)
        r.const(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (1 + len(self.features))))
        r.bulk(*keys)
        r.bulk_const(self.ts_field)
        r.bulk(*ts_value)
        for field, value in zip(self.fields, self.values(batch), strict=True):
            r.bulk_const(field)
            r.bulk(*value)
        if ttl:
            r.const(b"*3\r\n$6\r\nEXPIRE\r\n")
            r.bulk(*keys)
            r.bulk_const(str(int(ttl)).encode())
        return r

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
    batch is encoded meanwhile; a batch's replies are read after the next batch is sent)."""

    def __init__(self, client):
        self.pool = client.connection_pool
        self.check = self.write = None
        self.queue: queue.Queue = queue.Queue(maxsize=1)  # bounds the encoded batches waiting: memory
        self.error: BaseException | None = None
        self.any_stored = False  # a key of this stream's batches existed: ask the Lua script directly
        self.asked: tuple[bytes, int, bytes] | None = None  # the open ask: keys as RESP bulk strings, count, field
        self.received, self.tail = 0, b"\r\n"  # replies read on `write`; the last bytes read (a line starts)
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

    def send(self, payload: bytes, replies: int) -> None:
        """Hand one batch of commands (`replies` replies expected) to the writer thread; raise its error if any."""
        if self.error is not None:
            raise self.error
        self.queue.put((payload, replies))

    def _write_loop(self) -> None:
        """The writer thread: send each batch, then read the replies of the batches before it; after an error, only
        drain the queue (the main thread raises it)."""
        sent = 0  # replies expected for everything sent so far
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                self.write.send_packed_command([item[0]])
                self._read_replies(sent)
                sent += item[1]
            except BaseException as e:  # handed to the main thread
                self.error = e
        if self.error is None:
            try:
                self._read_replies(sent)
            except BaseException as e:
                self.error = e

    def _read_replies(self, upto: int) -> None:
        """Read replies (one line each: integers or errors) until `upto` have come since the start (more may come
        with them: counted too); raise on an error reply."""
        sock = self.write._sock
        while self.received < upto:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection while replies were outstanding")
            seen = self.tail + data  # a line split between two reads still counts once
            self.received += seen.count(b"\r\n") - self.tail.count(b"\r\n")
            if b"\r\n-" in seen:
                first = seen.split(b"\r\n-", 1)[1].split(b"\r\n", 1)[0]
                raise RuntimeError(f"Redis rejected a write: -{first.decode(errors='replace')}")
            self.tail = seen[-2:]


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

