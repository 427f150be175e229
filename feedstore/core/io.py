"""Atomic file and directory writes: a crash or Ctrl-C never leaves a half-written file for a later stage."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

T = TypeVar("T")

#: Parquet settings shared by every writer: deterministic bytes for the same table.
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "write_statistics": True}


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(table: pa.Table, target: Path) -> None:
    """Write `table` to `target` atomically."""
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, **PARQUET_OPTIONS)


def write_stats_parquet(table: pa.Table, target: Path) -> None:
    """Write `table` to `target` (a staging folder: not atomic) with the statistics' settings: not
    PARQUET_OPTIONS, whose zstd level 3 made `feedstore stats` slower, and no dictionary encoding, which costs more
    write time than the size it saves (bench/RESULTS.md)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target, compression="zstd", use_dictionary=False)


class ParquetWriters:
    """Parquet files written on a small thread pool (encoding and compression release the GIL) with `write`
    (default `write_parquet`), at most 4 files per worker in flight so memory stays bounded however many files
    are written; `rows` counts the rows written per label. `close()` waits for every file and re-raises the first
    error; a `with` block closes it."""

    def __init__(self, workers: int, write: Callable[[pa.Table, Path], None] = write_parquet) -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parquet-writer")
        self._slots = threading.BoundedSemaphore(4 * workers)
        self._futures: list[Future] = []
        self.rows: dict[str, int] = {}

    def write(self, label: str, table: pa.Table, path: Path) -> None:
        self._slots.acquire()
        self.rows[label] = self.rows.get(label, 0) + table.num_rows

        def job() -> None:
            try:
                self._write(table, path)
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(job))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for fut in self._futures:
            fut.result()  # re-raise the first write error

    def __enter__(self) -> ParquetWriters:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # the block's error wins; still wait, so no file is written after the caller cleans up
            self._pool.shutdown(wait=True, cancel_futures=True)


def read_ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """The same items, produced on a thread of their own at most `depth` ahead of the consumer (an item is
    produced once fewer than `depth` are waiting; the one in use does not count). For sources that work without
    the GIL, e.g. DuckDB batches: the next ones are computed while this one is used. The source only ever runs on
    that thread and is closed there (its `close()`, if it has one) when it ends or the consumer closes this
    generator; a source's error is raised to the consumer."""
    ahead: queue.SimpleQueue = queue.SimpleQueue()
    slots = threading.Semaphore(depth)
    stop = threading.Event()
    end = object()

    def run() -> None:
        try:
            source = iter(items)
            while True:
                while not slots.acquire(timeout=0.05):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                item = next(source, end)
                ahead.put((item, None))
                if item is end:
                    return
        except BaseException as e:  # handed to the consumer
            ahead.put((end, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name="feedstore-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ahead.get()
            if error is not None:
                raise error
            if item is end:
                return
            slots.release()  # taken: the thread may produce the next one
            yield item
    finally:
        stop.set()
        thread.join()


def write_json(obj: Any, target: Path) -> None:
    """Write `obj` as indented JSON to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


_ASIDE = ".old-"  # replace_dir renames the old `<name>` to `.<name>.old-<random>` before deleting it


def replace_dir(src: Path | None, target: Path, *, keep_old: bool = False) -> None:
    """Make `target` the directory `src` (or remove it if `src` is None): the old one is renamed aside first and
    deleted last, so `target` is never half-written (src must be on the same filesystem). `keep_old`: leave the
    renamed-aside old folder (hidden) for a later `replace_leftovers` clean-up instead of deleting it now."""
    old = target.with_name(f".{target.name}{_ASIDE}{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    if src is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)
    if not keep_old:
        shutil.rmtree(old, ignore_errors=True)


def replace_leftovers(root: Path) -> list[Path]:
    """The renamed-aside old folders `replace_dir` left among `root`'s children and grandchildren (kept on purpose,
    or by a process killed inside it); remove them only while holding the lock of whatever swaps folders there."""
    return [*root.glob(f".*{_ASIDE}*"), *root.glob(f"*/.*{_ASIDE}*")] if root.is_dir() else []


# ---------------------------------------------------------------------------------------- publishing

#: Test hook: `FEEDSTORE_CRASH_AT=<stage>.publish` makes a stage SIGKILL itself at its publish step (after its new
#: version is complete, before the switch), so tests can prove a killed run leaves the previous outputs intact.
CRASH_ENV = "FEEDSTORE_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process (SIGKILL, no cleanup) if FEEDSTORE_CRASH_AT names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def link_tree(src: Path, dst: Path, skip: Callable[[Path], bool] = lambda rel: False) -> None:
    """Hard-link every file under `src` into `dst` (same relative paths), except those whose relative path (or a
    parent folder's) `skip` accepts. Files are never modified in place (writes are temp-and-rename), so versions can
    share them; a filesystem without hard links gets copies."""
    src = Path(os.path.realpath(src))
    for folder, dirs, files in os.walk(src):
        rel_dir = Path(folder).relative_to(src)
        dirs[:] = [d for d in dirs if not skip(rel_dir / d)]
        for f in files:
            rel = rel_dir / f
            if skip(rel):
                continue
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(Path(folder) / f, target)
            except OSError:
                shutil.copy2(Path(folder) / f, target)


@dataclass(frozen=True)
class Publication:
    """The outputs of one stage, published together, all at once or not at all.

    Each output `<parent>/<name>` is a fixed relative symlink to `.<stage>.versions/current/<name>`; `current` is a
    symlink to one complete version folder. A run builds its version in `.<stage>.versions/<id>.staging`, renames
    it to `<id>`, then switches `current` with one atomic rename: readers (which resolve the path once) see the old
    outputs or the new ones, never a mix. The previous version is kept for readers still on it until the stage's
    next run begins, which renames it at once and removes its files on a background thread while it works (on a
    slow disk unlinking a thousand files takes seconds); it also removes the staging folders of killed runs (it
    holds the stage's lock, so it never removes a live run's staging). Nothing hidden ever appears inside an
    output folder, so a source glob such as Feast's `offline/<view>/**/*.parquet` reads published rows only.
    """

    parent: Path
    stage: str
    outputs: tuple[str, ...]
    hook: str | None = None  # the FEEDSTORE_CRASH_AT name of its publish step (default: `stage`)
    # folders where the stage also swaps directories in place (`replace_dir(..., keep_old=True)`): the next run
    # removes the old folders set aside there on its background thread, with the retired versions
    swaps: tuple[Path, ...] = ()

    @property
    def versions(self) -> Path:
        return self.parent / f".{self.stage}.versions"

    def published(self, name: str) -> Path | None:
        """The folder (or file) currently published as output `name`, resolved; None if there is none."""
        path = self.parent / name
        return Path(os.path.realpath(path)) if path.exists() else None

    def begin(self) -> VersionStage:
        """Lock the stage (a concurrent run of it waits), clean leftovers of killed runs, return a new empty
        version to fill."""
        self.versions.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.versions / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self._clean(keep_previous=True)
            self._link_outputs()
            retired = [*self._retire_old_versions(), *(old for root in self.swaps for old in replace_leftovers(root))]
            vid = f"{time.time_ns():x}-{os.getpid()}"
            path = self.versions / f"{vid}.staging"
            path.mkdir()
        except BaseException:
            os.close(fd)
            raise
        return VersionStage(self, vid, path, fd, _remover(retired))

    def clean_if_idle(self) -> None:
        """Remove what killed runs left (staging versions; the whole versions folder if nothing was ever published),
        unless a run of this stage holds the lock right now."""
        if not self.versions.is_dir():
            return
        fd = os.open(self.versions / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            self._clean(keep_previous=True)
            if self._current() is None and not (self.parent / self.outputs[0]).exists():
                shutil.rmtree(self.versions, ignore_errors=True)
        finally:
            os.close(fd)

    def _current(self) -> str | None:
        link = self.versions / "current"
        return os.readlink(link) if link.is_symlink() else None

    def _clean(self, keep_previous: bool, previous: str | None = None) -> None:
        """Remove staging folders and every version but the current one (and `previous`)."""
        pointer = self.versions / "current"
        if pointer.exists() and not pointer.is_symlink():  # a copy that followed the links: outputs are real folders
            shutil.rmtree(pointer)
        current = self._current()
        for entry in self.versions.iterdir():
            name = entry.name
            if name in (".lock", "current", current) or (keep_previous and not name.endswith((".staging", ".trash"))
                                                         and not name.startswith(".")) or name == previous:
                continue
            _remove(entry)

    def _retire_old_versions(self) -> list[Path]:
        """Rename every version but the current one to `<id>.trash` (removed by the caller, or by the next run's
        clean-up if this process dies first); return the renamed folders."""
        current = self._current()
        retired = []
        for entry in self.versions.iterdir():
            name = entry.name
            if name in (".lock", "current", current) or name.startswith(".") or name.endswith((".staging", ".trash")):
                continue
            trash = entry.with_name(f"{name}.trash")
            os.replace(entry, trash)
            retired.append(trash)
        return retired

    def _link_outputs(self) -> None:
        """Make every output a symlink through `current` (replacing a real folder left by an older layout or a
        copy that followed symlinks)."""
        if self._current() is None:
            return
        for name in self.outputs:
            link = self.parent / name
            want = f"{self.versions.name}/current/{name}"
            if link.is_symlink() and os.readlink(link) == want:
                continue
            if link.exists() and not link.is_symlink():
                os.replace(link, self.versions / f"{name}-{uuid.uuid4().hex[:8]}.trash")
            tmp = self.parent / f".{name}.link-{uuid.uuid4().hex[:8]}"
            os.symlink(want, tmp)
            os.replace(tmp, link)


def _remove(entry: Path) -> None:
    """Remove a file, a symlink (not what it points to) or a folder tree."""
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)


def _remover(entries: list[Path]) -> threading.Thread | None:
    """A started thread removing `entries` (None if there are none)."""
    if not entries:
        return None

    def remove() -> None:
        for entry in entries:
            _remove(entry)

    thread = threading.Thread(target=remove, name="feedstore-retire-versions", daemon=True)
    thread.start()
    return thread


@dataclass
class VersionStage:
    """A version being built (`path`); `publish()` switches to it, `discard()` drops it. Holds the stage lock."""

    publication: Publication
    vid: str
    path: Path
    _fd: int | None
    _removing: threading.Thread | None = None  # removes the versions this run retired when it began

    def publish(self) -> None:
        pub = self.publication
        self._removed()
        crash_point(f"{pub.hook or pub.stage}.publish")
        for name in pub.outputs:  # an output with nothing in it is an empty folder, never a dangling link
            if not (self.path / name).exists():
                (self.path / name).mkdir(parents=True)
        final = pub.versions / self.vid
        os.replace(self.path, final)
        self.path = final
        previous = pub._current()
        tmp = pub.versions / f".current-{self.vid}"
        os.symlink(self.vid, tmp)
        os.replace(tmp, pub.versions / "current")  # the one atomic switch
        pub._link_outputs()
        pub._clean(keep_previous=False, previous=previous)
        self._release()

    def discard(self) -> None:
        """Drop the version (a no-op once published)."""
        self._removed()
        if self._fd is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _removed(self) -> None:
        """Wait until the retired versions are gone (publish's own clean-up must not race the remover)."""
        if self._removing is not None:
            self._removing.join()
            self._removing = None

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
