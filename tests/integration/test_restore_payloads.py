"""The fast engine's RESTORE write path (feedstore.plugins.fast_materialize) against a real, throwaway
redis-server: Redis' CRC-64, DUMP payloads of every length class that Redis accepts and restores into exactly the
hash HSET builds (same fields in the same order, same encoding, byte-identical DUMP), the rows that must go to
HSET (integer-looking values), and key TTLs.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import redis

from feedstore.plugins import fast_materialize as fm
from tests.conftest import start_redis_server

POLY = 0x95AC9329AC4BC9B5  # reflected 0xad93d23594c935a9


def _crc_bitwise(data: bytes) -> int:
    """Redis' crc64 the slow way, bit by bit (no tables): the reference."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLY if crc & 1 else crc >> 1
    return crc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A throwaway redis-server of our own (the tests change its CONFIG): a redis.Redis client on it."""
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis-restore"))
    host, _, port = url.partition(":")
    client = redis.Redis(host=host, port=int(port))
    client.config_set("rdbcompression", "no")  # DUMP then gives the listpack bytes as they are
    yield client
    client.close()
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def db(server):
    server.flushall()
    server.config_set("hash-max-listpack-value", "64")
    server.config_set("hash-max-listpack-entries", "128")
    return server


def _layout(features: dict[str, object]) -> fm._Layout:
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Int64
    from feast.value_type import ValueType

    src = FileSource(path="/nonexistent/v.parquet", timestamp_field="event_timestamp")
    entity = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    schema = [Field(name="item_id", dtype=Int64), *[Field(name=n, dtype=t) for n, t in features.items()]]
    fv = FeatureView(name="restore_view", entities=[entity], source=src, online=True, schema=schema)
    cfg = SimpleNamespace(project="restore_test", registry=SimpleNamespace(enable_online_feature_view_versioning=False))
    return fm._Layout(fv, cfg)


def _batch(ids, **columns) -> pa.RecordBatch:
    n = len(ids)
    ts = pa.array(np.datetime64("2026-01-02T03:04:05.123456") + np.arange(n).astype("timedelta64[s]"),
                  pa.timestamp("us", "UTC"))
    return pa.RecordBatch.from_pydict({"item_id": pa.array(ids, pa.int64()), **columns, "event_timestamp": ts})


def _keys(prefix: bytes, n: int):
    names = [prefix + b"%d" % i for i in range(n)]
    width = max(map(len, names))
    mat = np.zeros((n, width), dtype=np.uint8)
    for i, name in enumerate(names):
        mat[i, :len(name)] = np.frombuffer(name, dtype=np.uint8)
    return names, (mat, np.array([len(x) for x in names]))


def _send(client: redis.Redis, payload: bytes, replies: int) -> list:
    conn = client.connection_pool.get_connection()
    try:
        conn.send_packed_command([payload])
        out = []
        for _ in range(replies):
            try:
                out.append(conn.read_response())
            except redis.ResponseError as e:
                out.append(e)
        return out
    finally:
        client.connection_pool.release(conn)


def _raw_hgetall(client: redis.Redis, key: bytes) -> list[bytes]:
    """HGETALL as Redis sends it (field order kept)."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command("HGETALL", key)
        return conn.read_response()
    finally:
        client.connection_pool.release(conn)


# ------------------------------------------------------------------------------------------ CRC-64


def test_crc64_check_value_and_bitwise_reference():
    assert fm.crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    rng = np.random.default_rng(7)
    spans = [rng.integers(0, 256, int(k), dtype=np.uint8).tobytes() for k in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65,
                                                                                  200, 561, 1000]]
    for data in spans:
        assert fm.crc64(data) == _crc_bitwise(data)
    # all spans in one lockstep call, of lengths far apart (so the masking of leading bytes is exercised)
    buf = b"\xaa" * 1024 + b"".join(spans)
    ends = np.cumsum([len(s) for s in spans]) + 1024
    crc = fm._crc64_spans(np.frombuffer(buf, dtype=np.uint8), ends - [len(s) for s in spans],
                          np.array([len(s) for s in spans]))
    assert [int(c) for c in crc] == [_crc_bitwise(s) for s in spans]


# ------------------------------------------------------------------------------------------ payloads


STRING_LENGTHS = [0, 1, 60, 61, 62, 63, 64, 65, 124, 125, 126, 127, 128, 4092, 4093, 4094, 4095, 4096, 4097,
                  16370, 16378, 16379, 16380, 16381, 16383, 16384, 16390, 20000]


def test_restored_hashes_equal_hsets_across_length_classes(db):
    """Strings whose Value bytes (2-3 bytes longer) cross the listpack string encodings (64, 4096 bytes), the
    backlen sizes (128, 16383) and, with the whole listpack, the RDB length classes (64, 16384): every payload is
    accepted, and gives the HSET twin's fields in order, its encoding and its DUMP byte for byte."""
    from feast.types import Float64, Int64, String

    db.config_set("hash-max-listpack-value", "100000")  # long strings stay listpacks (else they go to HSET)
    layout = _layout({"s": String, "d": Float64, "i": Int64, "t": String})
    n = len(STRING_LENGTHS)
    rng = np.random.default_rng(3)
    batch = _batch(list(range(n)), s=pa.array(["x" * k for k in STRING_LENGTHS]),
                   d=pa.array(rng.normal(size=n)), i=pa.array(rng.integers(-2**40, 2**40, n)),
                   t=pa.array([None if k % 3 else "é" * (k % 50) for k in range(n)]))
    _, _, ts_value = layout.event_timestamps(batch)
    values = layout.values(batch)
    assert layout.restorable(ts_value, values, 100000).all()
    rnames, rkeys = _keys(b"r:", n)
    hnames, hkeys = _keys(b"h:", n)
    assert _send(db, layout.restore_commands(rkeys, ts_value, values, None), n) == [b"OK"] * n
    assert _send(db, layout.commands(hkeys, ts_value, values, None).tobytes(), n) == [1 + 4] * n
    for r, h in zip(rnames, hnames, strict=True):
        assert _raw_hgetall(db, r) == _raw_hgetall(db, h)
        assert db.object("encoding", r) == db.object("encoding", h) == b"listpack"
        assert db.dump(r) == db.dump(h)
    # a one-feature view: listpacks under 64 bytes (an RDB length of one byte) and just over
    small = _layout({"s": String})
    batch = _batch(list(range(30)), s=pa.array(["w" * k for k in range(30)]))
    _, _, ts_value = small.event_timestamps(batch)
    snames, skeys = _keys(b"rs:", 30)
    tnames, tkeys = _keys(b"hs:", 30)
    assert _send(db, small.restore_commands(skeys, ts_value, small.values(batch), None), 30) == [b"OK"] * 30
    _send(db, small.commands(tkeys, ts_value, small.values(batch), None).tobytes(), 30)
    for r, h in zip(snames, tnames, strict=True):
        assert db.dump(r) == db.dump(h)
    # the listpacks really are of every length class (RDB length 1, 2 and 5 bytes)
    sizes = {db.dump(r)[1] >> 6 for r in rnames + snames}
    assert sizes == {0, 1, 2}


def test_a_subset_of_rows_and_random_rows(db):
    """Random string lengths under the default limits, a row selection: every restored key equals its HSET twin."""
    from feast.types import Float64, String

    layout = _layout({"a": String, "b": Float64, "c": String})
    rng = np.random.default_rng(11)
    n = 500
    batch = _batch(list(range(n)), a=pa.array(["y" * int(k) for k in rng.integers(0, 62, n)]),
                   b=pa.array(np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))),
                   c=pa.array([None if k < 5 else "z" * int(k) for k in rng.integers(0, 40, n)]))
    _, _, ts_value = layout.event_timestamps(batch)
    values = layout.values(batch)
    rows = rng.random(n) < 0.7
    rnames, rkeys = _keys(b"r:", n)
    hnames, hkeys = _keys(b"h:", n)
    assert _send(db, layout.restore_commands(rkeys, ts_value, values, None, rows), int(rows.sum())) == [b"OK"] * int(
        rows.sum())
    _send(db, layout.commands(hkeys, ts_value, values, None).tobytes(), n)
    for k in range(n):
        if rows[k]:
            assert db.dump(rnames[k]) == db.dump(hnames[k])
        else:
            assert not db.exists(rnames[k])


# ------------------------------------------------------------------------------------------ the write path


def _stream_write(client: redis.Redis, layout, batch, ttl=None, restore=True):
    with fm._RedisStream(client, restore) as stream:
        written = fm._write_batch(stream, layout, batch, ttl, False)
        written += fm._write_end(stream, layout, ttl, False)
    return stream, written


def _feast_bytes(layout, batch) -> list[dict[bytes, bytes]]:
    """What Feast's writer puts in each row's hash (its own encoders)."""
    from feast.type_map import python_values_to_proto_values
    from google.protobuf.timestamp_pb2 import Timestamp

    rows = [{} for _ in range(batch.num_rows)]
    for i, ts in enumerate(batch.column("event_timestamp").to_pylist()):
        stamp = Timestamp()
        stamp.FromDatetime(ts)
        rows[i][layout.ts_field] = stamp.SerializeToString()
    for field, (name, vt) in zip(layout.fields, layout.features, strict=True):
        protos = python_values_to_proto_values(batch.column(name).to_numpy(zero_copy_only=False), vt)
        for i, proto in enumerate(protos):
            rows[i][field] = proto.SerializeToString()
    return rows


def test_integer_looking_float_goes_to_hset_with_feasts_bytes(db):
    """A FLOAT whose Value bytes are '5' + 4 ASCII digits is a decimal integer string to Redis (HSET stores an
    integer entry): that row is written with HSET, the others restored; all hashes hold Feast's bytes, and each
    DUMPs exactly as a plain HSET of Feast's bytes does."""
    from feast.types import Float32

    digits = float(np.frombuffer(b"1234", dtype="<f4")[0])
    layout = _layout({"f": Float32, "g": Float32})
    batch = _batch([1, 2, 3], f=pa.array([0.5, digits, None], pa.float32()), g=pa.array([1.5, 2.5, digits / 2],
                                                                                         pa.float32()))
    stream, written = _stream_write(db, layout, batch)
    assert written == 3
    assert stream.paths["restore_view"]["restored"] == 2 and stream.paths["restore_view"]["hset"] == 1
    keys, klens = layout.entity_keys(batch)
    for i, expected in enumerate(_feast_bytes(layout, batch)):
        key = keys[i, :klens[i]].tobytes()
        assert db.hgetall(key) == expected
        db.hset(b"twin", mapping=expected)
        assert db.dump(key) == db.dump(b"twin")
        db.delete(b"twin")


def test_restore_ttl_matches_hset_and_expire(db, server):
    """key_ttl_seconds: RESTORE's relative TTL (ms) leaves the PTTL that HSET + EXPIRE leave (within a second)."""
    from feast.types import Float64

    layout = _layout({"d": Float64})
    batch = _batch(list(range(50)), d=pa.array(np.arange(50.0)))
    stream, _ = _stream_write(db, layout, batch, ttl=86_400)
    assert stream.paths["restore_view"]["restored"] == 50
    restored = [db.pttl(k) for k in db.keys()]
    db.flushall()
    stream, _ = _stream_write(db, layout, batch, ttl=86_400, restore=False)
    assert stream.paths["restore_view"]["hset"] == 50
    hset = [db.pttl(k) for k in db.keys()]
    assert len(restored) == len(hset) == 50
    assert max(abs(a - b) for a in restored for b in hset) < 1000
    assert min(restored) > 86_399_000 - 5_000


def test_listpack_limits_and_colliding_fields_send_rows_to_hset(db):
    """Rows with a value longer than hash-max-listpack-value are HSET (they become hashtables as HSET makes
    them); a view with more fields than hash-max-listpack-entries, or two features on one hash field, is HSET
    throughout."""
    from feast.types import String

    layout = _layout({"s": String})
    batch = _batch([1, 2], s=pa.array(["short", "x" * 100]))
    stream, _ = _stream_write(db, layout, batch)
    assert stream.paths["restore_view"]["restored"] == 1 and stream.paths["restore_view"]["hset"] == 1
    keys, klens = layout.entity_keys(batch)
    assert [db.object("encoding", keys[i, :klens[i]].tobytes()) for i in range(2)] == [b"listpack", b"hashtable"]
    db.flushall()
    db.config_set("hash-max-listpack-entries", "1")
    stream, _ = _stream_write(db, layout, batch)
    assert stream.paths["restore_view"]["restored"] == 0
    assert "hash-max-listpack-entries 1" in stream.describe("restore_view")
    layout.fields.append(layout.fields[0])  # as if two features' murmur3 fields collided
    assert "collide" in layout.restore_blocker(128, 64)
    layout.fields.pop()
    assert layout.restore_blocker(128, 64) is None
