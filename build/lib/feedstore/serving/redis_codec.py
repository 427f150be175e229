"""Decoding Feast's Redis values (protobuf Value bytes) for a whole column at once with numpy."""

from __future__ import annotations

import numpy as np

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
