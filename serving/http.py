"""The HTTP feature server for ranking: FastAPI + uvicorn + orjson on the `OnlineRanker` fast path.

Endpoints (README "The HTTP feature server"):

* ``POST /get-online-features``: Feast's JSON contract (request and response shape of `feast serve`), so Feast
  clients work unchanged. Entity rows need ``user_id``, ``item_id``, ``request_ts`` (epoch seconds or ISO 8601)
  and ``device``; ``feature_service`` must be the served service, or ``features`` a list of its
  ``view:feature`` references.
* ``POST /rank``: one user, N candidates, the request context -> one row per candidate with every feature of the
  service, missing flags and feature ages (the document `feedstore lookup` prints; lookup.schema.json).
* ``GET /health`` (the process is up) and ``GET /ready`` (registry loaded and the online store reachable).

Intended difference from Feast's online path (the same as `get_ranking_features` and training sets): a feature
row older than its view's ttl *at the request time* is served as missing; a missing or expired row's features are
null with status ``NOT_FOUND`` and event timestamp 1970-01-01 (Feast's Redis store says ``PRESENT`` with a null
for an absent key, and serves expired rows).
Features come in the service's declared order (Feast's own order depends on PYTHONHASHSEED).

Errors: 4xx with ``{"detail": "<one line>"}`` for bad requests (unknown feature service 404, malformed body or ids
422, too many candidates 413); 503 with a one-line reason when Redis cannot be reached. The Redis password
never appears in logs or answers.

Handlers are ``async`` and call the ranker directly: one request at a time per worker process, no thread hop
(the work is a Redis round trip plus numpy, mostly under the GIL); scale with ``--workers``.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response

from feedstore.core.config import PipelineConfig
from feedstore.core.contracts import DEVICES
from feedstore.core.errors import FeedstoreError, ServingError
from feedstore.core.feast_repo import feature_store, redact
from feedstore.core.spec import FEATURE_SERVICE, FEATURE_SPEC
from feedstore.serving.ranking import AGE_COLUMNS, FLAG_COLUMNS, entity_rows_features, lookup_document
from feedstore.serving.request import RankingContext

log = logging.getLogger(__name__)

#: Environment variable carrying the server settings to every uvicorn worker process (JSON).
ENV_SERVER = "FEEDSTORE_SERVER_SETTINGS"
DEFAULT_MAX_CANDIDATES = 1000
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH_TS = "1970-01-01T00:00:00Z"  # Feast's event timestamp of a value without a row


class RequestError(Exception):
    """A bad request: answered with `status` and a one-line `detail`."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


class FeatureServer:
    """What the endpoints share: the FeatureStore (registry), the service's layout, the online store's client."""

    def __init__(self, cfg: PipelineConfig, online_store: str, max_candidates: int = DEFAULT_MAX_CANDIDATES):
        self.cfg, self.online_store, self.max_candidates = cfg, online_store, max_candidates
        self.store = feature_store(cfg, online_store)  # fails (ServingError) without registry or Redis
        service = self.store.get_feature_service(FEATURE_SERVICE)  # the registry is loaded from here on
        self.view_of = {f.name: p.name for p in service.feature_view_projections for f in p.features}
        self.columns = FEATURE_SPEC.service_columns()
        self.dtypes = {c.name: c.dtype for c in self.columns}
        self.row_views = {v.name for v in FEATURE_SPEC.views}
        self.client = None
        if online_store == "redis":
            from feedstore.serving.ranking import ranker

            self.client = ranker(self.store).client
            kwargs = self.client.connection_pool.connection_kwargs  # a down Redis answers 503 quickly, never hangs
            kwargs["socket_connect_timeout"] = kwargs.get("socket_connect_timeout") or 1.0
            kwargs["socket_timeout"] = kwargs.get("socket_timeout") or 2.0
        self.where = redact(os.environ.get("REDIS_CONNECTION_STRING", "")) if online_store == "redis" else "sqlite"
        self.read(np.array([0]), np.array([0]), np.array([0]), ["mobile"])  # warm up: decoders, UDFs, imports

    def ready(self) -> str | None:
        """None when ready (registry loaded, online store reachable), else a one-line reason."""
        if self.client is None:
            return None
        try:
            self.client.ping()
        except Exception as e:  # noqa: BLE001 - any failure to reach Redis means not ready
            return f"online store unreachable: Redis at {self.where} ({type(e).__name__})"
        return None

    def read(self, user_ids, item_ids, request_ns, devices) -> dict[str, Any]:
        """Typed, ordered feature columns; a Redis failure becomes a ServingError naming the host, not the password."""
        try:
            return entity_rows_features(self.store, user_ids, item_ids, request_ns, devices)
        except Exception as e:
            import redis

            if isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)):
                raise ServingError(f"online store unreachable: Redis at {self.where} ({type(e).__name__})") from None
            raise

    # ------------------------------------------------------------------ Feast's /get-online-features
    def get_online_features(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("entities"), dict):
            raise RequestError(422, "body must be a JSON object with 'entities': {name: [values]}")
        names = self._requested_features(body)
        full = bool(body.get("full_feature_names", False))
        entities = body["entities"]
        missing = [k for k in ("user_id", "item_id", "request_ts", "device") if k not in entities]
        if missing:
            raise RequestError(422, f"entities lack {missing}: rows need user_id, item_id, request_ts, device")
        lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in entities.items()}
        n = lengths["item_id"]
        if any(length != n for length in lengths.values()):
            raise RequestError(422, f"every entity must be a list of the same length, got {lengths}")
        self._check_count(n)
        users = _ids(entities["user_id"], "user_id")
        items = _ids(entities["item_id"], "item_id")
        request_ns = np.array([_timestamp_ns(t) for t in entities["request_ts"]], dtype=np.int64)
        devices = [_device(d) for d in entities["device"]]
        cols = self.read(users, items, request_ns, devices)
        out_names = ["user_id", "item_id"]
        results = [_key_vector(users), _key_vector(items)]
        stamps = {}
        for view in self.row_views:
            age = cols[f"{view}_age_seconds"]
            # the row's event timestamp where it is served (Feast's event_timestamps), else the epoch
            stamps[view] = _rfc3339(np.where(np.isnan(age), np.nan, request_ns / 1e9 - age))
        for name in names:
            view = self.view_of[name]
            values = _feast_values(cols[name], self.dtypes[name])
            if view in self.row_views:
                missing_row = cols[_flag_of(view)]
                status = np.where(missing_row, "NOT_FOUND", "PRESENT")
                ts = stamps[view]
            else:
                status = np.full(n, "PRESENT", dtype=object)
                ts = [_EPOCH_TS] * n
            results.append({"values": values, "statuses": status.tolist(), "event_timestamps": ts})
            out_names.append(f"{view}__{name}" if full else name)
        return {"metadata": {"feature_names": out_names}, "results": results}

    def _requested_features(self, body: dict) -> list[str]:
        service, refs = body.get("feature_service"), body.get("features") or []
        if service is not None:
            if service != FEATURE_SERVICE:
                raise RequestError(404, f"unknown feature service {str(service)[:80]!r}; this server serves "
                                        f"{FEATURE_SERVICE!r}")
            return [c.name for c in self.columns]
        if not refs or not isinstance(refs, list):
            raise RequestError(422, "give 'feature_service' or a non-empty list 'features' of 'view:feature'")
        names = []
        for ref in refs:
            view, _, name = str(ref).partition(":")
            if self.view_of.get(name) != view:
                raise RequestError(404, f"unknown feature {str(ref)[:120]!r}; this server serves the features of "
                                        f"{FEATURE_SERVICE!r}")
            names.append(name)
        return names

    # ------------------------------------------------------------------ /rank
    def rank(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError(422, "body must be a JSON object: {user_id, item_ids, request_ts?, device?}")
        service = body.get("feature_service", FEATURE_SERVICE)
        if service != FEATURE_SERVICE:
            raise RequestError(404, f"unknown feature service {str(service)[:80]!r}; this server serves "
                                    f"{FEATURE_SERVICE!r}")
        if "user_id" not in body or "item_ids" not in body:
            raise RequestError(422, "user_id and item_ids are required")
        user = _ids([body["user_id"]], "user_id")[0]
        if not isinstance(body["item_ids"], list):
            raise RequestError(422, "item_ids must be a list of integers")
        self._check_count(len(body["item_ids"]))
        items = _ids(body["item_ids"], "item_ids")
        at = body.get("request_ts")
        request_ns = _timestamp_ns(at) if at is not None else pd.Timestamp(datetime.now(timezone.utc)).value
        ctx = RankingContext(pd.Timestamp(request_ns, tz="UTC").to_pydatetime(), _device(body.get("device", "mobile")))
        n = len(items)
        cols = self.read(np.full(n, user, dtype=np.int64), items, np.full(n, request_ns, dtype=np.int64),
                         [ctx.device] * n)
        return lookup_document(cols, int(user), ctx, self.online_store)

    def _check_count(self, n: int) -> None:
        if n == 0:
            raise RequestError(422, "no entity rows / candidates given")
        if n > self.max_candidates:
            raise RequestError(413, f"{n} rows exceed the server's cap of {self.max_candidates} "
                                    "(feedstore serve --max-candidates)")


def _flag_of(view: str) -> str:
    return FLAG_COLUMNS[AGE_COLUMNS.index(f"{view}_age_seconds")]


def _ids(values: Any, name: str) -> np.ndarray:
    """Integer ids (int64 range; JSON integers only: no floats, strings or booleans), else a 422."""
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        bad = next((v for v in values if type(v) is not int), values) if isinstance(values, list) else values
        raise RequestError(422, f"{name} must be integers, got {orjson.dumps(bad).decode()[:80]}")
    if values and (min(values) < _INT64[0] or max(values) > _INT64[1]):
        raise RequestError(422, f"{name} out of the int64 range")
    return np.asarray(values, dtype=np.int64)


def _timestamp_ns(t: Any) -> int:
    """A request time: epoch seconds (int or float) or an ISO 8601 string (UTC if it has no offset)."""
    try:
        if type(t) in (int, float):
            return int(round(t * 1_000_000)) * 1000
        if isinstance(t, str):
            ts = pd.Timestamp(t)
            return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).value
    except (ValueError, OverflowError):
        pass
    raise RequestError(422, f"request_ts must be epoch seconds or an ISO 8601 time, got "
                            f"{orjson.dumps(t, default=str).decode()[:60]}")


def _device(d: Any) -> str:
    if d not in DEVICES:
        got = orjson.dumps(d, default=str).decode()[:40]
        raise RequestError(422, f"device must be one of {list(DEVICES)}, got {got}")
    return d


def _key_vector(ids: np.ndarray) -> dict[str, list]:
    n = len(ids)
    return {"values": ids.tolist(), "statuses": ["PRESENT"] * n, "event_timestamps": [_EPOCH_TS] * n}


def _rfc3339(seconds: np.ndarray) -> list[str]:
    """Event timestamps as Feast writes them (RFC 3339, `Z`, whole seconds here); NaN -> the epoch."""
    ns = np.where(np.isnan(seconds), 0, np.round(seconds)).astype(np.int64)
    return [t + "Z" for t in np.datetime_as_string(ns.astype("datetime64[s]"), unit="s").tolist()]


def _feast_values(col: Any, dtype: str) -> list:
    """Values as Feast's server writes them: ints as ints, UnixTimestamp as epoch seconds, missing as null."""
    if dtype == "timestamp":
        idx = pd.DatetimeIndex(col)
        out = (idx.as_unit("ns").asi8 // 10**9).tolist()
        for i in np.flatnonzero(idx.isna()):
            out[i] = None
        return out
    from feedstore.serving.ranking import json_values

    return json_values(col)


# ---------------------------------------------------------------------------------------------- the app


def create_app(cfg: PipelineConfig, online_store: str | None = None, max_candidates: int = DEFAULT_MAX_CANDIDATES):
    """The ASGI app. The FeatureStore and the ranker are built at start-up (lifespan): a missing registry or an
    unreachable Redis stops the server with a one-line error before it listens."""
    online_store = online_store or cfg.serving.online_store
    state: dict[str, FeatureServer] = {}

    @asynccontextmanager
    async def lifespan(app):
        state["server"] = FeatureServer(cfg, online_store, max_candidates)
        log.info("feature server ready: %s on %s, max %d candidates", FEATURE_SERVICE, state["server"].where,
                 max_candidates)
        yield
        state.clear()

    app = FastAPI(title="feedstore feature server", lifespan=lifespan, docs_url=None, redoc_url=None)

    def answer(status: int, content: Any) -> Response:
        return Response(orjson.dumps(content), status_code=status, media_type="application/json")

    async def handle(request: Request, method) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as e:
            return answer(422, {"detail": f"body is not valid JSON ({str(e).splitlines()[0][:80]})"})
        try:
            return answer(200, method(body))
        except RequestError as e:
            return answer(e.status, {"detail": e.detail})
        except ServingError as e:
            log.warning("%s", e)
            return answer(503, {"detail": str(e)})
        except FeedstoreError as e:
            return answer(422, {"detail": str(e)})

    @app.post("/get-online-features")
    async def get_online_features(request: Request) -> Response:
        return await handle(request, state["server"].get_online_features)

    @app.post("/rank")
    async def rank(request: Request) -> Response:
        return await handle(request, state["server"].rank)

    @app.get("/health")
    async def health() -> Response:
        return answer(200, {"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        server = state.get("server")
        reason = "registry not loaded" if server is None else server.ready()
        if reason:
            return answer(503, {"status": "unavailable", "detail": reason})
        return answer(200, {"status": "ready", "feature_service": FEATURE_SERVICE, "online_store": online_store})

    return app


def app_from_environment():
    """The app factory uvicorn workers call (`feedstore serve`): settings come from ENV_SERVER."""
    settings = orjson.loads(os.environ[ENV_SERVER])
    from feedstore.core.logs import configure_logging

    cfg = PipelineConfig.model_validate(settings["config"])
    configure_logging(cfg.log_level)
    return create_app(cfg, settings["online_store"], settings["max_candidates"])


def serve(cfg: PipelineConfig, online_store: str | None = None, host: str = "127.0.0.1", port: int = 6567,
          workers: int = 1, max_candidates: int = DEFAULT_MAX_CANDIDATES) -> None:
    """Stage `serve`: run the feature server with uvicorn until interrupted. Checks the registry and Redis first,
    so a server that cannot serve fails with one line (exit 5) instead of starting."""
    import uvicorn

    online_store = online_store or cfg.serving.online_store
    feature_store(cfg, online_store)  # registry present, Redis reachable (one-line ServingError otherwise)
    os.environ[ENV_SERVER] = orjson.dumps({"config": cfg.model_dump(mode="json"), "online_store": online_store,
                                           "max_candidates": max_candidates}).decode()
    log.info("serving %s on http://%s:%d with %d worker(s), online store %s", FEATURE_SERVICE, host, port, workers,
             online_store)
    # a worker loads the registry, builds the ranker and warms it up before it is ready: far more than uvicorn's
    # default 5 s health-check timeout on a busy machine (it would kill and respawn workers forever)
    uvicorn.run("feedstore.serving.http:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, timeout_worker_healthcheck=120)
