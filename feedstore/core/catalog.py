"""The catalog of every path under the data dir: stages name what they read and write here, never build paths
as strings of their own. `Catalog(data_dir)` resolves the root once (absolute), so a relative data dir, a
changed working directory or a copied data dir all read their own files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from feedstore.core.io import Publication

#: What each stage publishes as one unit (see `feedstore.core.io.Publication`): outputs under the data dir.
STAGE_OUTPUTS = {"generate": ("raw",), "validate": ("validated", "quarantine"), "stats": ("offline",)}

#: The offline feature tables (one hive-partitioned Parquet dataset each, `date=YYYY-MM-DD/`).
PARTITION = "date"


_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_version(version: str) -> str:
    """A training-set version is one folder name under training/: letters, digits, `.`, `_`, `-` (no path)."""
    from feedstore.core.errors import ConfigError

    if not _VERSION.fullmatch(version or "") or ".." in version:
        raise ConfigError(f"training-set version {version!r}: use letters, digits, '.', '_' and '-' only "
                          "(a folder name under training/, not a path)")
    return version


def _table_file(table: str) -> str:
    return table if table == "interactions" else f"{table}.parquet"


@dataclass(frozen=True)
class Catalog:
    """Paths of one data dir."""

    root: Path

    def __post_init__(self) -> None:
        from feedstore.core.errors import ConfigError

        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"data dir {self.root} is not a directory")

    @staticmethod
    def staged(version: Path) -> Catalog:
        """The same layout inside a stage's version folder (`Publication.begin().path`): a version mirrors the data
        dir (`raw/`; `validated/`, `quarantine/`; `offline/`, `intermediate/`), so a run stages each output at the
        path it is published under."""
        return Catalog(version)

    @staticmethod
    def relative() -> Catalog:
        """The layout relative to the data dir, for paths stored without one (the Feast registry's source paths,
        which the offline store resolves against FEEDSTORE_DATA_DIR when it reads)."""
        cat = object.__new__(Catalog)
        object.__setattr__(cat, "root", Path())
        return cat

    def published_version(self, output: str) -> Catalog:
        """The layout of the version folder that output `output` (e.g. "offline") is published from right now, its
        symlink resolved once as readers do: several reads through it see that one version even if the stage
        publishes meanwhile (a data dir without versions is its own version)."""
        return Catalog((self.root / output).resolve().parent)

    def publication(self, stage: str) -> Publication:
        """How a stage's outputs are published together (versions, one atomic switch); stats also swaps its tile
        partitions in place."""
        return Publication(self.root, stage, STAGE_OUTPUTS[stage], swaps=(self.tile_store,) if stage == "stats" else ())

    def training_publication(self, version: str) -> Publication:
        return Publication(self.training, check_version(version), (version,), hook="training-set")

    # ---- raw (generate)
    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def raw_users(self) -> Path:
        return self.raw / "users.parquet"

    @property
    def raw_items(self) -> Path:
        return self.raw / "items.parquet"

    @property
    def raw_interactions(self) -> Path:
        return self.raw / "interactions"

    @property
    def faults(self) -> Path:
        return self.raw / "faults.json"

    @property
    def raw_generation(self) -> Path:
        """The generation settings the raw data was made with (`run --skip-generate` takes the raw data as it is)."""
        return self.raw / "generation.json"

    # ---- validated and quarantined (validate)
    @property
    def validated(self) -> Path:
        return self.root / "validated"

    @property
    def validated_users(self) -> Path:
        return self.validated / "users.parquet"

    @property
    def validated_items(self) -> Path:
        return self.validated / "items.parquet"

    @property
    def validated_interactions(self) -> Path:
        return self.validated_table("interactions")

    def validated_table(self, table: str) -> Path:
        """A validated table by name: `users` and `items` (one Parquet file each), `interactions` (`date=` folders)."""
        return self.validated / _table_file(table)

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def quarantined_table(self, table: str) -> Path:
        """A table's quarantined rows, laid out as `validated_table`."""
        return self.quarantine / _table_file(table)

    @property
    def quarantined_interactions(self) -> Path:
        return self.quarantined_table("interactions")

    # ---- the sources feature views read (`ViewSpec.source`)
    def source(self, name: str) -> Path:
        """The data a feature view computes from, by its spec name (`ViewSpec.source`)."""
        sources = {"validated_interactions": self.validated_interactions}
        if name not in sources:
            raise ValueError(f"unknown feature source {name!r} (known: {', '.join(sorted(sources))})")
        return sources[name]

    # ---- offline feature tables (stats)
    @property
    def offline(self) -> Path:
        return self.root / "offline"

    def view(self, name: str) -> Path:
        """The offline table of one feature view."""
        return self.offline / name

    def view_glob(self, name: str) -> Path:
        """Every Parquet file of one feature view (what Feast's FileSource and DuckDB read)."""
        return Catalog.parquet_glob(self.view(name))

    @staticmethod
    def parquet_glob(dataset: Path) -> Path:
        """Every Parquet file of a partitioned dataset (its `date=` folders), as DuckDB and Feast read it."""
        return dataset / "**" / "*.parquet"

    @staticmethod
    def partition(day: str) -> str:
        """The partition folder name of a day (YYYY-MM-DD)."""
        return f"{PARTITION}={day}"

    @staticmethod
    def is_partition(path: Path) -> bool:
        """Whether `path` is named like a day partition folder (`date=...`; the day itself is not checked)."""
        return path.name.startswith(f"{PARTITION}=")

    @staticmethod
    def partition_day(path: Path) -> str:
        """The day (as written, YYYY-MM-DD) of a partition folder, or of a file directly inside one."""
        folder = path if Catalog.is_partition(path) else path.parent
        return folder.name.removeprefix(f"{PARTITION}=")

    @staticmethod
    def day_partitions(folder: Path) -> dict[str, Path]:
        """The day partition folders directly under `folder`, {day: folder} in day order (empty if none)."""
        if not folder.is_dir():
            return {}
        return dict(sorted((Catalog.partition_day(p), p) for p in folder.iterdir()
                           if p.is_dir() and Catalog.is_partition(p)))

    # ---- intermediates of the incremental statistics (stats): per-(entity, day) tiles and the lifetime state
    @property
    def intermediate(self) -> Path:
        return self.root / "intermediate"

    @property
    def tile_store(self) -> Path:
        """Every view's tiles (`tiles(view)`)."""
        return self.intermediate / "tiles"

    def tiles(self, view: str) -> Path:
        """One view's tiles: the spec's per-(entity, day) sums, one `date=YYYY-MM-DD/` partition per processed day."""
        return self.tile_store / view

    def tile_state(self, view: str) -> Path:
        """One view's lifetime sums per entity as of the newest processed day (one Parquet file; for an active-days
        view, no rows: it names the base snapshot and the tiles after it that hold the sums)."""
        return self.intermediate / "state" / f"{view}.parquet"

    def tile_bases(self, view: str) -> Path:
        """One active-days view's base snapshots (`base-<token>.parquet`, immutable): lifetime sums per key as of a
        base day; its state names the one it builds on."""
        return self.intermediate / "state" / view

    @property
    def stats_changes(self) -> Path:
        """The log of snapshot days each `stats` run rewrote (materialization reads it to catch up on late data)."""
        return self.intermediate / "changes.json"

    # ---- training sets
    @property
    def training(self) -> Path:
        return self.root / "training"

    def training_set(self, version: str) -> Path:
        return self.training / check_version(version)

    def published_training_set(self, version: str | None = None) -> Path:
        """A published training set's folder (one with a manifest): `version`, or the newest one."""
        from feedstore.core.errors import InputDataError

        if version:
            path = self.training_set(version)
        else:
            versions = sorted((p for p in self.training.glob("*") if (p / "manifest.json").exists()),
                              key=lambda p: p.stat().st_mtime)
            path = versions[-1] if versions else self.training
        if not (path / "manifest.json").exists():
            raise InputDataError(f"{path}: no training set there (run `feedstore training-set` first)")
        return path

    # ---- reports
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def realism_report(self) -> Path:
        return self.reports / "realism.json"

    @property
    def validation_reports(self) -> Path:
        return self.reports / "validation"

    @property
    def data_docs(self) -> Path:
        return self.reports / "data_docs"

    @property
    def data_docs_index(self) -> Path:
        return self.data_docs / "index.html"

    # ---- Feast
    @property
    def feast(self) -> Path:
        return self.root / "feast"

    def registry(self, online_store: str) -> Path:
        return self.feast / f"registry.{online_store}.db"

    def changes_materialized(self, online_store: str) -> Path:
        """How far one online store has caught up with the statistics' change log (`stats_changes`)."""
        return self.feast / f"changes_materialized.{online_store}.json"
