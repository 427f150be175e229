from __future__ import annotations

import pyarrow as pa
import pytest

from feedstore.core.io import atomic_path, staged_dir, write_parquet


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_existing_file(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pa.table({"a": [1]}), target)
    write_parquet(pa.table({"a": [2, 3]}), target)
    assert pa.parquet.read_table(target).num_rows == 2
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_staged_dir_keeps_old_directory_on_failure(tmp_path):
    target = tmp_path / "interactions"
    target.mkdir()
    (target / "old.parquet").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_dir(target) as stage:
        (stage / "new.parquet").write_text("new")
        raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["old.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interactions"]


def test_staged_dir_swaps_whole_directory(tmp_path):
    target = tmp_path / "interactions"
    target.mkdir()
    (target / "old.parquet").write_text("old")
    with staged_dir(target) as stage:
        (stage / "new.parquet").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interactions"]
