"""The fast engine's row assembly (feedstore.plugins.fast_materialize._Rows) against plain Python concatenation, on
random pieces: constants, ragged pieces far wider than most of their rows (so scratch runs past a row's end and
the exact-bytes path is taken), broadcast pieces with per-row lengths, empty rows, row selections. Needs Feast
installed (the module imports it), no service."""

from __future__ import annotations

import numpy as np
import pytest

from feedstore.plugins.fast_materialize import _Rows


def _random_rows(rng: np.random.Generator, n: int) -> tuple[_Rows, list[bytes]]:
    rows, expected = _Rows(n), [b""] * n
    for _ in range(int(rng.integers(1, 12))):
        kind = rng.choice(["const", "ragged", "broadcast", "bulk"])
        if kind == "const":
            data = rng.integers(0, 256, int(rng.integers(0, 6)), dtype=np.uint8).tobytes()
            rows.const(data)
            expected = [e + data for e in expected]
            continue
        w = int(rng.choice([1, 3, 9, 40]))
        lens = rng.integers(0, w + 1, n).astype(np.int64)
        if kind == "broadcast":
            one = rng.integers(0, 256, w, dtype=np.uint8)
            mat = np.broadcast_to(one, (n, w))
        else:
            mat = rng.integers(0, 256, (n, w), dtype=np.uint8)
        if kind == "bulk":
            rows.bulk(mat, lens)
            expected = [e + b"$%d\r\n" % k + mat[i, :k].tobytes() + b"\r\n"
                        for i, (e, k) in enumerate(zip(expected, lens, strict=True))]
        else:
            rows.ragged(mat, lens)
            expected = [e + mat[i, :k].tobytes() for i, (e, k) in enumerate(zip(expected, lens, strict=True))]
    return rows, expected


@pytest.mark.parametrize("seed", range(40))
def test_rows_equal_plain_concatenation(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([0, 1, 2, 7, 50]))
    rows, expected = _random_rows(rng, n)
    assert rows.tobytes() == b"".join(expected)
    pick = rng.random(n) < 0.5
    assert rows.tobytes(pick) == b"".join(e for e, p in zip(expected, pick, strict=True) if p)
    mat, lens = rows.packed()
    assert [mat[i, :lens[i]].tobytes() for i in range(n)] == expected
