"""The intermediates of the incremental statistics: per-(entity, day) tiles and the lifetime state.

* **Tiles** (`Catalog.tiles(view)/date=D/part-<token>.parquet`): the spec's `Tile` sums of one day, one row per
  entity (per key of the view) active that day: the keys, then every tile column (plain tiles, then per-category
  ones), all int64. A day without activity has no partition. The file name's token changes on every write.
* **State** (`Catalog.tile_state(view)`): each entity's lifetime sums of the plain tiles as of the newest processed
  day (`as_of`), with, in its Parquet metadata, `as_of`, the spec fingerprint and the token of every tile partition
  it includes. A state whose tokens differ from the tile partitions on disk (a crash between two publish steps, a
  hand edit) or whose fingerprint differs from the spec's (a new tile) is not trusted: the next run rebuilds the
  intermediates from the validated events once.
* **Pair state** (active-days views, one row per pair ever seen: too big to read and rewrite every day): log-structured.
  An immutable base snapshot `Catalog.tile_bases(view)/base-<token>.parquet` holds the lifetime sums as of a base
  day c (the tiles of days <= c); the state file has no rows and names the base and c. Lifetime sums as of s are
  the base plus the stored tiles of days c + 1 .. s. A run reads from the base only the keys active in the days it
  writes (a semi-join in DuckDB); it writes a new base (compaction) only when the tiles after c span the spec's
  longest window, or when late data changed a tile the base includes. A new base gets a new name and is moved in
  before the state that names it; a state naming a base that is not there is not trusted.

Window sums for day D are sums of the tiles of days D - w + 1 .. D; lifetime sums are the state minus the tiles
after the wanted day; so a day costs its own events plus the tiles its windows reach, never the whole history.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feedstore.core.catalog import PARTITION, Catalog
from feedstore.core.spec import ViewSpec

EPOCH = date(1970, 1, 1)
_META = b"feedstore.tiles"


def day_str(day: int) -> str:
    return (EPOCH + timedelta(days=day)).isoformat()


def day_no(day: str | date) -> int:
    return ((date.fromisoformat(day) if isinstance(day, str) else day) - EPOCH).days


def tile_names(view: ViewSpec, categories: int) -> list[str]:
    """Every tile column of a view, in storage order: plain tiles, then one column per category of each
    per-category tile (the order `compute._tile_sums` computes them in)."""
    names = [t.name for t in view.tiles if not t.per_category]
    for t in (t for t in view.tiles if t.per_category):
        names += [f"{t.name}_{k}" for k in range(categories)]
    return names


def lifetime_names(view: ViewSpec) -> list[str]:
    """The columns the lifetime window keeps (the plain tiles)."""
    return [t.name for t in view.tiles if not t.per_category]


def fingerprint(view: ViewSpec, categories: int) -> str:
    """What the stored tiles depend on: the view's keys, tiles (names and SQL) and the category count."""
    doc = [view.keys, [(t.name, t.sql, t.per_category) for t in view.tiles], categories]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def tile_file(root: Path, day: int, token: str) -> Path:
    return root / Catalog.partition(day_str(day)) / f"part-{token}.parquet"


def listing(root: Path) -> dict[int, Path]:
    """The tile partitions on disk: {day number: file}."""
    out: dict[int, Path] = {}
    if root.is_dir():
        for part in root.glob(f"{PARTITION}=*/part-*.parquet"):
            out[day_no(Catalog.partition_day(part))] = part
    return out


def token_of(path: Path) -> str:
    return path.stem.removeprefix("part-")


@dataclass
class State:
    """Lifetime sums per key as of `as_of` (a day number), and the tiles they were built from."""

    as_of: int
    keys: dict[str, np.ndarray]
    values: np.ndarray  # (lifetime columns, keys) int64
    tokens: dict[int, str] = field(default_factory=dict)
    spec: str = ""
    base: str | None = None  # active-days views: the base snapshot's file name (the sums live there, not in keys)
    base_as_of: int | None = None  # ... and its day c: the base includes the tiles of days <= c

    @classmethod
    def of_base(cls, view: ViewSpec, as_of: int, base: str, base_as_of: int) -> State:
        """An active-days view's state: no rows, the sums are the base plus the tiles of base_as_of + 1 .. as_of."""
        return cls(as_of, {k: np.zeros(0, np.int64) for k in view.keys},
                   np.zeros((len(lifetime_names(view)), 0), np.int64), base=base, base_as_of=base_as_of)

    def to_table(self, view: ViewSpec) -> pa.Table:
        table = pa.table({**{k: pa.array(self.keys[k], pa.int64()) for k in view.keys},
                          **{n: pa.array(v, pa.int64()) for n, v in zip(lifetime_names(view), self.values,
                                                                         strict=True)}})
        meta = {"as_of": day_str(self.as_of), "spec": self.spec,
                "tiles": {day_str(d): t for d, t in sorted(self.tokens.items())}}
        if self.base is not None:
            meta["base"] = {"file": self.base, "as_of": day_str(self.base_as_of)}  # type: ignore[arg-type]
        return table.replace_schema_metadata({_META: json.dumps(meta).encode()})


def write_state(state: State, view: ViewSpec, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(state.to_table(view), path, compression="zstd")


def read_state(path: Path, view: ViewSpec) -> State | None:
    """The stored state, or None if there is none (or it is unreadable)."""
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[_META])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None
    names = lifetime_names(view)
    if table.column_names != [*view.keys, *names]:
        return None
    values = (np.stack([table.column(n).to_numpy() for n in names]) if names
              else np.zeros((0, table.num_rows), np.int64))
    base = meta.get("base")
    return State(day_no(meta["as_of"]), {k: table.column(k).to_numpy() for k in view.keys}, values.astype(np.int64),
                 {day_no(d): t for d, t in meta["tiles"].items()}, meta["spec"],
                 base["file"] if base else None, day_no(base["as_of"]) if base else None)


def new_base_name() -> str:
    return f"base-{new_token()}.parquet"


def prune_bases(bases: Path, state: Path) -> None:
    """Remove every base snapshot under `bases` that the state at `state` does not name (replaced by a compaction,
    or left by a run killed between publish steps)."""
    if not bases.is_dir():
        return
    keep = None
    try:
        meta = json.loads(pq.read_schema(state).metadata[_META])
        keep = (meta.get("base") or {}).get("file")
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        pass
    for f in bases.glob("base-*.parquet"):
        if f.name != keep:
            f.unlink(missing_ok=True)


def read_tiles(path: Path, keys: tuple[str, ...], names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One tile partition: its keys and its (tile columns, rows) int64 values."""
    table = pq.read_table(path)
    if table.column_names != [*keys, *names]:
        raise ValueError(f"{path}: columns {table.column_names} differ from {[*keys, *names]}")
    return ({k: table.column(k).to_numpy() for k in keys},
            np.stack([table.column(n).to_numpy() for n in names]).astype(np.int64))


def tiles_table(keys: dict[str, np.ndarray], names: list[str], values: np.ndarray) -> pa.Table:
    return pa.table({**{k: pa.array(v, pa.int64()) for k, v in keys.items()},
                     **{n: pa.array(v, pa.int64()) for n, v in zip(names, values, strict=True)}})
