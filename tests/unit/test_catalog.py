from __future__ import annotations

import dataclasses

import pytest

from feedstore.core.catalog import Catalog
from feedstore.core.spec import FEATURE_SPEC, FeatureSpec


def test_a_staged_version_has_the_data_dirs_layout(tmp_path):
    """What a stage writes into its version folder lands, once published, at the catalog's path."""
    cat = Catalog(tmp_path)
    version = cat.publication("stats").begin()
    try:
        staged = Catalog.staged(version.path)
        for name in ("raw_users", "raw_items", "raw_interactions", "faults", "validated_users", "validated_items",
                     "validated_interactions", "quarantined_interactions", "offline"):
            assert getattr(staged, name).relative_to(version.path) == getattr(cat, name).relative_to(cat.root)
        assert staged.validated_table("users") == staged.validated_users
        assert staged.quarantined_table("items").relative_to(version.path).as_posix() == "quarantine/items.parquet"
        assert staged.tiles("v").relative_to(version.path) == cat.tiles("v").relative_to(cat.root)
        assert staged.tile_state("v").relative_to(version.path).as_posix() == "intermediate/state/v.parquet"
    finally:
        version.discard()


def test_relative_view_glob_is_what_the_feast_registry_stores():
    assert str(Catalog.relative().view_glob("user_daily_stats")) == "offline/user_daily_stats/**/*.parquet"


def test_published_version_pins_the_current_offline_version(tmp_path):
    cat = Catalog(tmp_path)
    assert cat.published_version("offline").offline == cat.offline  # nothing published: the data dir itself
    version = cat.publication("stats").begin()
    (version.path / "offline" / "v").mkdir(parents=True)
    version.publish()
    pinned = cat.published_version("offline")
    assert pinned.offline == cat.offline.resolve() != cat.offline
    assert pinned.view_glob("v") == cat.offline.resolve() / "v" / "**" / "*.parquet"


def test_a_views_source_resolves_through_the_catalog(tmp_path):
    cat = Catalog(tmp_path)
    assert cat.source(FEATURE_SPEC.source) == cat.validated_interactions
    with pytest.raises(ValueError, match="unknown feature source"):
        cat.source("nope")


def test_views_of_one_spec_share_one_source():
    view = dataclasses.replace(FEATURE_SPEC.views[0], source="other")
    with pytest.raises(ValueError, match="one source"):
        FeatureSpec(views=(view, *FEATURE_SPEC.views[1:]), on_demand=FEATURE_SPEC.on_demand,
                    service=FEATURE_SPEC.service)


def test_day_partitions_lists_partition_folders_in_day_order(tmp_path):
    for name in ("date=2024-03-02", "date=2024-03-01", ".date=2024-03-03.old-x", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "date=2024-03-04").write_text("a file, not a partition")
    parts = Catalog.day_partitions(tmp_path)
    assert list(parts) == ["2024-03-01", "2024-03-02"]
    assert parts["2024-03-01"] == tmp_path / "date=2024-03-01"
    assert Catalog.partition_day(tmp_path / "date=2024-03-02" / "part-0.parquet") == "2024-03-02"
    assert Catalog.day_partitions(tmp_path / "missing") == {}
