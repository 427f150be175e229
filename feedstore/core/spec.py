"""The feature spec: one declarative definition of every feature, from which everything else is derived.

Per feature view it states the entity keys, the source, the per-(entity, day) partial aggregates ("tiles":
integer sums over a day's events, under a filter), the windows, the features built from the tiles (counts,
means, Beta-smoothed rates, log popularity, a Laplace-smoothed category distribution), static attributes of the
entity, which rows are written (change points + heartbeat, or active days), the ttl rule and the value served for
a missing entity. From it are derived, never restated:

* the statistics computation on every engine (`feedstore.ingestion.stats`),
* the Feast `FeatureView` schemas and ttls (`feature_repo/feature_views.py`), the on-demand views' schemas and the
  feature service's order (`feature_repo/`),
* the GX gate on the statistics (`feedstore.ingestion.stats.gate`: nested windows, bounded tiles such as
  likes <= clicks <= impressions, rates in (0, 1), distributions that sum to 1, ...),
* the cold-start defaults (`defaults()`) and the README's feature table (`markdown_table()`, a test keeps the
  README equal to it).

Adding a window is a one-line change (`windows=`); adding an aggregation is one `Tile` and one `Feature`.
This module is declarative and import-light (the Feast repository imports it): no I/O, no compute libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

#: The lifetime window (everything before the snapshot).
LIFETIME = None

Dtype = Literal["int64", "int32", "float64", "float32_list", "timestamp"]


@dataclass(frozen=True)
class Tile:
    """A per-(entity, day) partial aggregate: the integer sum of `sql` over the day's events (SQL over the
    validated interactions joined with the item's `category`). Integer sums make every window exact and
    independent of summation order on every engine.

    `bounded_by`: another tile this one never exceeds (likes <= clicks <= impressions), checked by the gate.
    `per_category`: one sum per item category (`<name>_<k>`), for category distributions.
    """

    name: str
    sql: str
    description: str
    bounded_by: str | None = None
    per_category: bool = False


FeatureKind = Literal["count", "mean", "beta_rate", "log1p", "distribution"]


@dataclass(frozen=True)
class Feature:
    """A family of output columns computed from tile sums over each window of the view.

    kinds:
    * ``count``: the sum of tile `of`;
    * ``mean``: sum(`of`) / (`divisor` * max(sum(`per`), 1)), 0 when `per` is 0 (e.g. mean dwell in seconds);
    * ``beta_rate``: (sum(`of`) + a) / (sum(`per`) + a + b), a Beta(a, b) prior with mean `prior_mean` and
      strength a + b = `prior_strength` pseudo-events (smoothed CTR);
    * ``log1p``: ln(1 + sum(`of`)) (log popularity);
    * ``distribution``: per category k, (sum(`of`_k) + `pseudo`) / (sum(`per`) + `pseudo` * C), Laplace-smoothed,
      over the single window `window` (category affinity), as float32.
    `name` is the column stem: `<prefix>_<name>_<window>` (or `<prefix>_<name>` for a view without window
    suffixes, or exactly `name` for a distribution).
    """

    name: str
    kind: FeatureKind
    of: str
    description: str
    per: str | None = None
    divisor: float = 1.0
    prior_mean: float | None = None
    prior_strength: float | None = None
    pseudo: float | None = None
    window: int | None = None  # distribution only

    @property
    def dtype(self) -> Dtype:
        return {"count": "int64", "distribution": "float32_list"}.get(self.kind, "float64")  # type: ignore[return-value]

    def default(self) -> Any:
        """What a missing entity is served: 0 for counts, means and log popularity; the prior mean for a rate;
        none for a distribution (its on-demand consumer has its own default)."""
        if self.kind == "count":
            return 0
        if self.kind == "beta_rate":
            return self.prior_mean
        if self.kind == "distribution":
            return None
        return 0.0


@dataclass(frozen=True)
class Attribute:
    """A static attribute of the entity, copied from its validated table onto every row.

    `transform`: ``second`` truncates a timestamp to whole seconds (Feast keeps UnixTimestamp features at second
    resolution online; milliseconds offline would be training/serving skew). `category_range`: the gate checks
    0 <= value < categories. `born`: the entity exists from this moment (no row before it; rows stamped after it).
    """

    name: str
    column: str
    dtype: Dtype
    description: str
    default: Any = None
    transform: Literal["second"] | None = None
    category_range: bool = False
    born: bool = False


@dataclass(frozen=True)
class Column:
    """One output column of a view or on-demand view: its name, type, meaning and cold-start default."""

    name: str
    dtype: Dtype
    description: str
    default: Any = None


RowPolicy = Literal["change_points", "active_days"]


@dataclass(frozen=True)
class ViewSpec:
    """One feature view: entity keys, source, tiles, windows, features, attributes, rows and ttl.

    Rows (`rows`):
    * ``change_points``: a row for day D (stamped D + 1 day 00:00 UTC, aggregating events strictly before it) on
      every day a value can change (activity, or activity leaving a window), on the day the entity appears
      (or the pipeline's first day), and every `heartbeat_days` days; ttl = heartbeat + 1 day, so a
      point-in-time join always reaches the current row and values are never stale;
    * ``active_days``: a row only on days the entity had activity (lifetime windows only); ttl = `ttl_days`,
      after which the history counts as absent.
    """

    name: str
    entity: str
    keys: tuple[str, ...]
    prefix: str
    description: str
    tiles: tuple[Tile, ...]
    features: tuple[Feature, ...]
    windows: tuple[int | None, ...] = (1, 7, 30, LIFETIME)
    attributes: tuple[Attribute, ...] = ()
    rows: RowPolicy = "change_points"
    heartbeat_days: int | None = 28
    ttl_days: int | None = None
    entity_table: str | None = None  # "users" | "items": where attributes and the birth time come from
    window_suffix: bool = True
    source: str = "validated_interactions"  # the events its tiles sum, by name (`Catalog.source` resolves it)

    def __post_init__(self) -> None:
        tiles = {t.name for t in self.tiles}
        for f in self.features:
            for ref in (f.of, f.per):
                if ref is not None and ref not in tiles:
                    raise ValueError(f"{self.name}.{f.name}: unknown tile {ref!r}")
        for t in self.tiles:
            if t.bounded_by is not None and t.bounded_by not in tiles:
                raise ValueError(f"{self.name}.{t.name}: bounded_by unknown tile {t.bounded_by!r}")
        if any(w is not None and w <= 0 for w in self.windows) or len(set(self.windows)) != len(self.windows):
            raise ValueError(f"{self.name}: windows must be distinct positive day counts (or LIFETIME)")
        if self.rows == "active_days" and self.windows != (LIFETIME,):
            raise ValueError(f"{self.name}: active-days views keep lifetime values only")
        if self.rows == "change_points" and not self.heartbeat_days:
            raise ValueError(f"{self.name}: change-point views need heartbeat_days")

    # ---- derived
    @property
    def ttl(self) -> timedelta:
        """Heartbeat + 1 day for change-point views (always reaches the current row), else `ttl_days`."""
        if self.rows == "change_points":
            return timedelta(days=self.heartbeat_days + 1)  # type: ignore[operator]
        return timedelta(days=self.ttl_days or 0)

    @property
    def summary(self) -> str:
        """The description with what the spec says of the view's windows and rows (Feast shows it)."""
        rows = (f"a row when a value changes and at least every {self.heartbeat_days} days"
                if self.rows == "change_points" else "a row on each day the key was active")
        return (f"{self.description} Windows: {' / '.join(self.window_label(w) for w in self.sorted_windows)}; "
                f"{rows}; ttl {self.ttl.days} days.")

    @property
    def sorted_windows(self) -> tuple[int | None, ...]:
        """Windows shortest first, lifetime last (nested: each contains the previous)."""
        return tuple(sorted(w for w in self.windows if w is not None)) + ((LIFETIME,) if LIFETIME in self.windows
                                                                               else ())

    @property
    def window_shifts(self) -> tuple[int, ...]:
        """Every finite window length the computation must track (feature windows and distribution windows)."""
        return tuple(sorted({*(w for w in self.windows if w is not None),
                             *(f.window for f in self.features if f.kind == "distribution" and f.window)}))

    def window_label(self, window: int | None) -> str:
        return "lifetime" if window is None else f"{window}d"

    def column_name(self, feature: Feature, window: int | None) -> str:
        if feature.kind == "distribution":
            return feature.name
        if not self.window_suffix:
            return f"{self.prefix}_{feature.name}"
        return f"{self.prefix}_{feature.name}_{self.window_label(window)}"

    def windowed(self) -> list[tuple[Feature, int | None, str]]:
        """(feature, window, column) of every windowed output column, in output order (by window, then feature)."""
        return [(f, w, self.column_name(f, w)) for w in self.sorted_windows for f in self.features
                if f.kind != "distribution"]

    def distributions(self) -> list[Feature]:
        return [f for f in self.features if f.kind == "distribution"]

    def columns(self) -> list[Column]:
        """Every feature column of the view, in output order: windowed features, distributions, attributes."""
        out = [Column(col, f.dtype, f"{f.description}, {self.window_label(w)}", f.default())
               for f, w, col in self.windowed()]
        out += [Column(f.name, f.dtype, f.description, f.default()) for f in self.distributions()]
        out += [Column(a.name, a.dtype, a.description, a.default) for a in self.attributes]
        return out

    def tile(self, name: str) -> Tile:
        return next(t for t in self.tiles if t.name == name)

    def born(self) -> Attribute | None:
        return next((a for a in self.attributes if a.born), None)


@dataclass(frozen=True)
class OnDemandSpec:
    """The outputs of an on-demand feature view (its UDF lives in feature_repo/on_demand_features.py)."""

    name: str
    outputs: tuple[Column, ...]
    description: str


@dataclass(frozen=True)
class FeatureSpec:
    """Every feature view, on-demand view and the versioned feature service (in its declared column order)."""

    views: tuple[ViewSpec, ...]
    on_demand: tuple[OnDemandSpec, ...]
    service: str
    service_order: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [v.name for v in self.views] + [o.name for o in self.on_demand]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate view names in {names}")
        order = self.service_order or tuple(names)
        if sorted(order) != sorted(names):
            raise ValueError(f"service_order {order} must list every view once: {names}")
        object.__setattr__(self, "service_order", order)
        columns = [c.name for v in self.views for c in v.columns()]
        columns += [c.name for o in self.on_demand for c in o.outputs]
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique across views: {dupes}")
        if len({v.source for v in self.views}) > 1:
            raise ValueError(f"every view reads one source (the engines load its events once for all views): "
                             f"{sorted({v.source for v in self.views})}")

    @property
    def source(self) -> str:
        """The source every view's tiles read (`ViewSpec.source`)."""
        return self.views[0].source

    def view(self, name: str) -> ViewSpec:
        return next(v for v in self.views if v.name == name)

    def on_demand_view(self, name: str) -> OnDemandSpec:
        return next(o for o in self.on_demand if o.name == name)

    def sparse_columns(self) -> list[str]:
        """Features whose null means "never happened" rather than a broken join: those of active-days views (a key
        has rows only once it was active, so a first exposure has none)."""
        return [c.name for v in self.views if v.rows == "active_days" for c in v.columns()]

    def service_columns(self) -> list[Column]:
        """Every column of the feature service, in its declared order (the training splits' feature order)."""
        out: list[Column] = []
        for name in self.service_order:
            if any(v.name == name for v in self.views):
                out += self.view(name).columns()
            else:
                out += list(self.on_demand_view(name).outputs)
        return out

    def with_view(self, view: ViewSpec) -> FeatureSpec:
        """A copy with `view` replacing the view of the same name (for experiments and tests)."""
        return replace(self, views=tuple(view if v.name == view.name else v for v in self.views))


def defaults(spec: FeatureSpec, categories: int) -> dict[str, Any]:
    """Values served for a missing entity (cold start): counts 0, smoothed rates the prior mean, means and log
    popularity 0, `item_category` -1, the on-demand affinity for the item 1/C; ages, timestamps and distributions
    stay missing (null / NaN)."""
    out: dict[str, Any] = {}
    for col in spec.service_columns():
        default = col.default
        if default == "uniform":
            default = 1.0 / categories
        if default is not None:
            out[col.name] = default
    return out


# ------------------------------------------------------------------------------------------ the spec

_COUNTS = (
    Tile("impressions", "1", "impressions"),
    Tile("clicks", "click", "clicks", bounded_by="impressions"),
    Tile("likes", '"like"', "likes", bounded_by="clicks"),
    Tile("shares", "share", "shares", bounded_by="clicks"),
    # dwell in integer milliseconds: sums are exact and independent of summation order on every engine
    Tile("dwell_ms", "CASE WHEN click = 1 THEN CAST(round(dwell_time * 1000) AS BIGINT) ELSE 0 END",
         "dwell of clicks, ms"),
)
_CTR_PRIOR = {"prior_mean": 0.1, "prior_strength": 20.0}
_AFFINITY_WINDOW = 30  # days of clicks behind the category affinity


def _engagement(extra: tuple[Feature, ...] = ()) -> tuple[Feature, ...]:
    return (
        Feature("impressions", "count", "impressions", "impressions"),
        Feature("clicks", "count", "clicks", "clicks"),
        Feature("likes", "count", "likes", "likes"),
        Feature("shares", "count", "shares", "shares"),
        Feature("dwell_mean", "mean", "dwell_ms", "mean dwell (s) of clicks", per="clicks", divisor=1000.0),
        Feature("ctr_smoothed", "beta_rate", "clicks", "(clicks + a) / (impressions + a + b), Beta prior with mean "
                "{prior_mean:g} and strength {prior_strength:g}".format(**_CTR_PRIOR), per="impressions",
                **_CTR_PRIOR),
        *extra,
    )


USER_DAILY_STATS = ViewSpec(
    name="user_daily_stats",
    entity="user",
    keys=("user_id",),
    prefix="user",
    description="User engagement as of the end of each day.",
    tiles=(*_COUNTS, Tile("category_clicks", "click", "clicks per item category", per_category=True)),
    features=(*_engagement(),
              Feature("user_category_affinity", "distribution", "category_clicks",
                      "share of the user's clicks per category (Laplace-smoothed), index = category",
                      per="clicks", pseudo=1.0, window=_AFFINITY_WINDOW)),
    attributes=(Attribute("user_signup_timestamp", "signup_date", "timestamp", "when the user signed up",
                          transform="second", born=True),),
    entity_table="users",
)

ITEM_DAILY_STATS = ViewSpec(
    name="item_daily_stats",
    entity="item",
    keys=("item_id",),
    prefix="item",
    description="Item engagement and popularity as of the end of each day.",
    tiles=_COUNTS,
    features=_engagement((Feature("log_popularity", "log1p", "impressions", "ln(1 + impressions)"),)),
    attributes=(Attribute("item_category", "category", "int32", "content category", default=-1,
                          category_range=True),
                Attribute("item_creation_timestamp", "creation_date", "timestamp", "when the item was published",
                          transform="second", born=True)),
    entity_table="items",
)

USER_ITEM_DAILY_STATS = ViewSpec(
    name="user_item_daily_stats",
    entity="user_item",
    keys=("user_id", "item_id"),
    prefix="user_item",
    description="Previous exposure of a user to an item (the seed's user_item_previous_interactions).",
    tiles=(_COUNTS[0], _COUNTS[1]),
    features=(Feature("impressions", "count", "impressions", "times this user was shown this item"),
              Feature("clicks", "count", "clicks", "times this user clicked this item")),
    windows=(LIFETIME,),
    rows="active_days",
    heartbeat_days=None,
    ttl_days=30,
    window_suffix=False,
)

REQUEST_CONTEXT = OnDemandSpec(
    name="request_context",
    description="Context of the ranking request: hour_of_day (UTC 0-23), day_of_week (0 = Monday), is_weekend, "
    "device_mobile / device_desktop / device_tablet (one-hot).",
    outputs=(Column("hour_of_day", "int64", "UTC hour of the request, 0-23"),
             Column("day_of_week", "int64", "0 = Monday"),
             Column("is_weekend", "int64", "1 on Saturday and Sunday"),
             Column("device_mobile", "int64", "device one-hot"),
             Column("device_desktop", "int64", "device one-hot"),
             Column("device_tablet", "int64", "device one-hot")),
)

USER_ITEM_CONTEXT = OnDemandSpec(
    name="user_item_context",
    description="Computed at request time: user_days_since_signup and item_age_days (from stored timestamps, exact "
    f"at any moment), user_category_affinity_for_item (the user's {_AFFINITY_WINDOW}-day click share in the candidate "
    "item's category). NaN where the user or item is unknown (cold start), in training sets and online alike.",
    outputs=(Column("user_days_since_signup", "float64", "days since the user signed up"),
             Column("item_age_days", "float64", "days since the item was published"),
             Column("user_category_affinity_for_item", "float64",
                    f"the user's {_AFFINITY_WINDOW}-day click share in the item's category", default="uniform")),
)

FEATURE_SPEC = FeatureSpec(
    views=(USER_DAILY_STATS, ITEM_DAILY_STATS, USER_ITEM_DAILY_STATS),
    on_demand=(REQUEST_CONTEXT, USER_ITEM_CONTEXT),
    service="feed_ranking_v1",
)

#: The versioned feature service both the ranker and the training-set builder use (the spec's).
FEATURE_SERVICE = FEATURE_SPEC.service


def markdown_table(spec: FeatureSpec = FEATURE_SPEC) -> str:
    """The README's feature table, generated from the spec (a test keeps the README equal to it)."""
    lines = ["| view | key | rows, ttl | windows | features (`*` = one column per window) |", "|---|---|---|---|---|"]
    for v in spec.views:
        rows = (f"change points + heartbeat {v.heartbeat_days} d, ttl {v.ttl.days} d" if v.rows == "change_points"
                else f"active days only, ttl {v.ttl.days} d")
        windows = " / ".join(v.window_label(w) for w in v.sorted_windows)
        stems = {f.name: (f"{v.prefix}_{f.name}_*" if v.window_suffix else v.column_name(f, None)) for f in v.features}
        parts = [f"`{stems[f.name]}`: {f.description}" for f in v.features if f.kind != "distribution"]
        parts += [f"`{f.name}`: {f.description}, over {f.window} days" for f in v.distributions()]
        parts += [f"`{a.name}`: {a.description}" for a in v.attributes]
        lines.append(f"| `{v.name}` | {', '.join(v.keys)} | {rows} | {windows} | {'; '.join(parts)} |")
    for o in spec.on_demand:
        lines.append(f"| `{o.name}` (on demand) | request | computed per request | | "
                     + "; ".join(f"`{c.name}`: {c.description}" for c in o.outputs) + " |")
    return "\n".join(lines)
