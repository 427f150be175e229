from __future__ import annotations

import time

import pyarrow as pa
import pytest

from feedstore.core.io import atomic_path, replace_dir, replace_leftovers, write_parquet


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


def test_replace_dir_swaps_whole_directory_and_removes(tmp_path):
    target = tmp_path / "tiles"
    target.mkdir()
    (target / "old.parquet").write_text("old")
    new = tmp_path / ".staged"
    new.mkdir()
    (new / "new.parquet").write_text("new")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["new.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles"]  # nothing hidden left behind
    replace_dir(None, target)
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_a_killed_replace_dir_are_found(tmp_path):
    """What replace_dir leaves when killed between its renames (the old folder, renamed aside), one and two levels
    down, is found; nothing else is."""
    old = tmp_path / "tiles" / "view" / ".date=2024-01-01.old-1a2b3c4d"
    old.mkdir(parents=True)
    (tmp_path / "tiles" / ".view.old-5e6f7a8b").mkdir()
    (tmp_path / "tiles" / "view" / "date=2024-01-01").mkdir()
    assert sorted(str(p.relative_to(tmp_path)) for p in replace_leftovers(tmp_path / "tiles")) == [
        "tiles/.view.old-5e6f7a8b", "tiles/view/.date=2024-01-01.old-1a2b3c4d"]


def test_old_folders_kept_by_replace_dir_go_when_the_next_run_of_the_stage_begins(tmp_path):
    from feedstore.core.io import Publication

    tiles = tmp_path / "tiles" / "view" / "date=2024-01-01"
    tiles.mkdir(parents=True)
    (tiles / "part-0.parquet").write_text("old")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "part-0.parquet").write_text("new")
    replace_dir(staged, tiles, keep_old=True)
    assert (tiles / "part-0.parquet").read_text() == "new"
    kept = replace_leftovers(tmp_path / "tiles")
    assert len(kept) == 1 and (kept[0] / "part-0.parquet").read_text() == "old"
    version = Publication(tmp_path, "stats", ("offline",), swaps=(tmp_path / "tiles",)).begin()
    version._removing.join()
    assert replace_leftovers(tmp_path / "tiles") == [] and (tiles / "part-0.parquet").read_text() == "new"
    version.discard()


# ------------------------------------------------------------------------------------------ Publication

def _publish(pub, files: dict[str, str]) -> None:
    version = pub.begin()
    for rel, text in files.items():
        (version.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (version.path / rel).write_text(text)
    version.publish()


def _read(root) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_publication_switches_every_output_at_once(tmp_path):
    from feedstore.core.io import Publication

    pub = Publication(tmp_path, "validate", ("validated", "quarantine"))
    _publish(pub, {"validated/a.parquet": "1", "quarantine/q.parquet": "1"})
    _publish(pub, {"validated/a.parquet": "2", "quarantine/q.parquet": "2"})
    assert _read(tmp_path / "validated") == {"a.parquet": "2"} and _read(tmp_path / "quarantine") == {"q.parquet": "2"}
    assert (tmp_path / "validated").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".validate.versions", "quarantine", "validated"]
    versions = [p for p in (tmp_path / ".validate.versions").iterdir() if p.name not in (".lock", "current")]
    assert len(versions) == 2  # the published one and the previous one (readers may still be on it)


def test_publication_abandoned_run_changes_nothing_and_is_cleaned_next_time(tmp_path):
    from feedstore.core.io import Publication

    pub = Publication(tmp_path, "stats", ("offline",))
    _publish(pub, {"offline/v/date=2024-01-01/part-0.parquet": "old"})
    killed = pub.begin()  # a run killed before its switch: no publish, no discard, lock released by the OS
    (killed.path / "offline" / "v").mkdir(parents=True)
    (killed.path / "offline" / "v" / "x.parquet").write_text("new")
    killed._release()
    assert _read(tmp_path / "offline") == {"v/date=2024-01-01/part-0.parquet": "old"}
    assert not [p for p in (tmp_path / "offline").rglob("*") if p.name.startswith(".")]
    _publish(pub, {"offline/v/date=2024-01-02/part-0.parquet": "next"})
    assert not [p for p in (tmp_path / ".stats.versions").iterdir() if p.name.endswith(".staging")]


def test_publication_replaces_a_real_folder_left_by_a_copy(tmp_path):
    from feedstore.core.io import Publication

    (tmp_path / "offline" / "v").mkdir(parents=True)
    (tmp_path / "offline" / "v" / "old.parquet").write_text("legacy")
    pub = Publication(tmp_path, "stats", ("offline",))
    version = pub.begin()
    from feedstore.core.io import link_tree

    link_tree(pub.published("offline"), version.path / "offline")
    version.publish()
    assert (tmp_path / "offline").is_symlink()
    assert _read(tmp_path / "offline") == {"v/old.parquet": "legacy"}


def test_link_tree_skips_and_shares_files(tmp_path):
    from feedstore.core.io import link_tree

    src = tmp_path / "src"
    (src / "date=1").mkdir(parents=True)
    (src / "date=2").mkdir()
    (src / "date=1" / "a").write_text("1")
    (src / "date=2" / "b").write_text("2")
    link_tree(src, tmp_path / "dst", skip=lambda rel: rel.parts[0] == "date=2")
    assert _read(tmp_path / "dst") == {"date=1/a": "1"}
    assert (tmp_path / "dst" / "date=1" / "a").stat().st_ino == (src / "date=1" / "a").stat().st_ino


def test_publication_survives_a_copy_that_followed_the_links(tmp_path):
    import shutil

    from feedstore.core.io import Publication

    src = tmp_path / "a"
    _publish(Publication(src, "stats", ("offline",)), {"offline/v/x.parquet": "1"})
    shutil.copytree(src, tmp_path / "b")  # symlinks=False: real folders everywhere, `current` too
    pub = Publication(tmp_path / "b", "stats", ("offline",))
    _publish(pub, {"offline/v/y.parquet": "2"})
    assert (tmp_path / "b" / "offline").is_symlink() and _read(tmp_path / "b" / "offline") == {"v/y.parquet": "2"}
    assert _read(src / "offline") == {"v/x.parquet": "1"}


def test_clean_if_idle_removes_a_never_published_killed_run(tmp_path):
    from feedstore.core.io import Publication

    pub = Publication(tmp_path, "fp-x", ("fp-x",))
    killed = pub.begin()
    killed._release()
    pub.clean_if_idle()
    assert list(tmp_path.iterdir()) == []


def test_publication_retires_the_version_before_the_previous_one_when_a_run_begins(tmp_path):
    from feedstore.core.io import Publication

    pub = Publication(tmp_path, "validate", ("validated",))
    _publish(pub, {"validated/a.parquet": "1"})
    _publish(pub, {"validated/a.parquet": "2"})
    first, second = sorted(p.name for p in pub.versions.iterdir() if p.name not in (".lock", "current"))
    version = pub.begin()  # the third run: the first version goes, the published second one stays readable
    assert not (pub.versions / first).exists()
    assert _read(tmp_path / "validated") == {"a.parquet": "2"}
    (version.path / "validated").mkdir()
    (version.path / "validated" / "a.parquet").write_text("3")
    version.publish()
    assert _read(tmp_path / "validated") == {"a.parquet": "3"}
    left = sorted(p.name for p in pub.versions.iterdir() if p.name not in (".lock", "current"))
    assert left == sorted([second, version.vid])  # nothing retired is left behind, the previous one is kept
    killed = pub.begin()  # a run that dies after retiring: the next run removes what it renamed
    killed._removing.join()
    killed._release()
    left = sorted(p.name for p in pub.versions.iterdir() if p.name not in (".lock", "current"))
    assert left == sorted([version.vid, killed.path.name])
    _publish(pub, {"validated/a.parquet": "4"})
    assert _read(tmp_path / "validated") == {"a.parquet": "4"}
    assert not [p for p in pub.versions.iterdir() if p.name.endswith((".trash", ".staging"))]


def test_read_ahead_yields_in_order_stays_within_depth_and_closes_the_source_on_its_thread():
    import threading

    from feedstore.core.io import read_ahead

    produced, closed_on = [], []

    def source():
        try:
            for i in range(6):
                produced.append(i)
                yield i
        finally:
            closed_on.append(threading.current_thread().name)

    batches = read_ahead(source(), depth=2)
    assert next(batches) == 0
    deadline = time.monotonic() + 30
    while len(produced) < 3 and time.monotonic() < deadline:  # the thread runs ahead ...
        time.sleep(0.01)
    time.sleep(0.2)
    assert produced == [0, 1, 2]  # ... but only as far as `depth`
    assert next(batches) == 1
    batches.close()  # the consumer stops early: the source is closed, on the producing thread
    assert closed_on == ["feedstore-read-ahead"]
    assert list(read_ahead(iter(range(5)))) == [0, 1, 2, 3, 4]


def test_read_ahead_raises_the_sources_error_to_the_consumer():
    from feedstore.core.io import read_ahead

    def source():
        yield 1
        raise ValueError("bad batch")

    batches = read_ahead(source())
    assert next(batches) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(batches)
