"""generate_events: plan the (day, block) tasks, run them on worker processes, publish raw/ atomically, then
measure the realism report on what was written."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedstore.core.catalog import Catalog
from feedstore.core.config import GenerationConfig, PipelineConfig
from feedstore.core.contracts import ITEMS_SCHEMA, USERS_SCHEMA
from feedstore.core.io import link_tree, write_json, write_parquet
from feedstore.ingestion.generate import faults as faults_mod
from feedstore.ingestion.generate.events import _DEVICE_LABELS, block_sizes, block_table, build_world, generate_block
from feedstore.ingestion.generate.world import _SEGMENTS, _STREAM_FAULTS, US_PER_DAY, World, _rng

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BlockTask:
    day: int
    block: int
    n: int
    first_seq: int


_WORKER: dict = {}


@dataclass(frozen=True)
class BlockResult:
    rows_by_date: dict[str, int]
    faults: dict[str, int]
    rows: int


def _init_worker(cfg: GenerationConfig, fault_rate: float, out_dir: str) -> None:
    _WORKER["world"] = build_world(cfg)
    _WORKER["fault_rate"] = fault_rate
    _WORKER["out_dir"] = Path(out_dir)


def _run_task(task: BlockTask) -> BlockResult:
    world: World = _WORKER["world"]
    return _write_block(world, task, _WORKER["fault_rate"], _WORKER["out_dir"])


def _write_block(world: World, task: BlockTask, fault_rate: float, out_dir: Path) -> BlockResult:
    cols = generate_block(world, task.day, task.block, task.n, task.first_seq)
    counts: dict[str, int] = {}
    user_null = item_null = None
    if fault_rate > 0 and task.n:
        frng = _rng(world.cfg.seed, _STREAM_FAULTS, task.day, task.block)
        counts, user_null, item_null = faults_mod.inject(world, cols, fault_rate, frng)
    table = block_table(cols, user_null, item_null)
    event_day = cols["ts"] // US_PER_DAY
    days = np.unique(event_day)
    rows_by_date: dict[str, int] = {}
    for d in days:
        part = table if len(days) == 1 else table.filter(pa.array(event_day == d))
        date = str(np.datetime64(int(d), "D"))
        write_parquet(part, out_dir / Catalog.partition(date) / f"part-{task.day:05d}-{task.block:03d}.parquet")
        rows_by_date[date] = part.num_rows
    return BlockResult(rows_by_date=rows_by_date, faults=counts, rows=table.num_rows)


def users_table(world: World) -> pa.Table:
    n = world.n_users
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            pa.array(world.signup_us, pa.int64()).cast(USERS_SCHEMA.field("signup_date").type),
            pa.array(_SEGMENTS[world.segment].tolist(), pa.string()),
            pa.array(world.preferred_category, pa.int32()),
            pc.take(_DEVICE_LABELS, pa.array(world.device_pref.astype(np.int8))),
            pa.array(world.activity),
            pa.array(world.propensity),
        ],
        schema=USERS_SCHEMA,
    )


def items_table(world: World) -> pa.Table:
    n = world.n_items
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(n, dtype=np.int64)),
            pa.array(world.category, pa.int32()),
            pa.array(world.creation_us, pa.int64()).cast(ITEMS_SCHEMA.field("creation_date").type),
            pa.array(world.quality),
            pa.array(world.popularity),
        ],
        schema=ITEMS_SCHEMA,
    )


@dataclass(frozen=True)
class GenerateSummary:
    users: int
    items: int
    interactions: int
    rows_by_date: dict[str, int]
    faults: dict[str, int]
    seconds: float
    out_dir: Path


def plan_tasks(world: World) -> list[BlockTask]:
    tasks, seq = [], 0
    for day, n_day in enumerate(world.day_counts.tolist()):
        for block, n in enumerate(block_sizes(n_day, world.cfg.block_events)):
            tasks.append(BlockTask(day=day, block=block, n=n, first_seq=seq))
            seq += n
    return tasks


def write_raw_events(
    cfg: GenerationConfig,
    data_dir: Path,
    *,
    fault_rate: float = 0.0,
    workers: int = 1,
    progress: bool = True,
    days: list | None = None,
) -> GenerateSummary:
    """Generate users, items and interactions under `<data_dir>/raw/`, replacing what was there atomically.

    With `days` (dates), only those days' partitions are (re)written, byte-identical to what a full run writes
    for them (each day has its own random stream); other partitions are left alone. That is how the daily DAG
    "ingests" one day.
    """
    if not 0.0 <= fault_rate <= 0.5:
        raise ValueError(f"fault rate must be in [0, 0.5], got {fault_rate}")
    t0 = time.perf_counter()
    world = build_world(cfg)
    tasks = [t for t in plan_tasks(world) if t.n > 0]
    if days is not None:
        wanted = {(d - cfg.start).days for d in days}
        outside = [d for d in days if not 0 <= (d - cfg.start).days < cfg.n_days]
        if outside:
            raise ValueError(f"days {outside} are outside the configured range {cfg.start}..{cfg.end}")
        tasks = [t for t in tasks if t.day in wanted]
    log.info(
        "generating %s interactions for %s users / %s items over %s days (%s blocks, %s worker%s, seed %s)",
        f"{cfg.interactions:,}", f"{cfg.users:,}", f"{cfg.items:,}", cfg.n_days, len(tasks), workers,
        "" if workers == 1 else "s", cfg.seed,
    )
    raw = Catalog(data_dir).raw
    rows_by_date: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    version = Catalog(data_dir).publication("generate").begin()  # raw/ is published whole, in one atomic switch
    try:
        staged = Catalog.staged(version.path)
        out, stage = staged.raw, staged.raw_interactions
        stage.mkdir(parents=True)
        results = _run_tasks(cfg, world, tasks, fault_rate, stage, workers, progress)
        for res in results:
            rows_by_date.update(res.rows_by_date)
            faults.update(res.faults)
        write_parquet(users_table(world), staged.raw_users)
        write_parquet(items_table(world), staged.raw_items)
        fault_doc = {
            "rate": fault_rate,
            "seed": cfg.seed,
            "total": int(sum(faults.values())),
            "counts": {k: int(faults.get(k, 0)) for k in faults_mod.KINDS},
        }
        write_json(fault_doc, staged.faults)
        current = version.publication.published("raw")
        if days is not None and current is not None:  # keep every other day's partition
            regenerated = {Catalog.partition(d.isoformat()) for d in days}
            link_tree(current, out, skip=lambda rel: rel.parts[0] != "interactions" or (
                len(rel.parts) >= 2 and rel.parts[1] in regenerated))
        # how this raw data was made; after a partial generation (`days`), narrowed to the days it now holds
        present = list(Catalog.day_partitions(stage))
        record = cfg if days is None or not present else GenerationConfig.model_validate(
            {**cfg.model_dump(mode="json"), "start": present[0], "end": present[-1]})
        write_json(record.model_dump(mode="json"), staged.raw_generation)
        version.publish()
    except BaseException:
        version.discard()
        raise
    total = int(sum(rows_by_date.values()))
    seconds = time.perf_counter() - t0
    log.info(
        "wrote %s interactions in %d date partitions to %s (%.2f s, %s events/s)",
        f"{total:,}", len(rows_by_date), Catalog(data_dir).raw_interactions, seconds,
        f"{total / max(seconds, 1e-9):,.0f}",
    )
    log.info("wrote %s and %s", Catalog(data_dir).raw_users, Catalog(data_dir).raw_items)
    if fault_rate:
        log.info("injected %s faulty rows (rate %.4f), counts per kind in %s",
                 f"{fault_doc['total']:,}", fault_rate, Catalog(data_dir).faults)
    return GenerateSummary(
        users=world.n_users, items=world.n_items, interactions=total, rows_by_date=dict(sorted(rows_by_date.items())),
        faults=dict(fault_doc["counts"]), seconds=seconds, out_dir=raw,
    )


def recorded_generation(data_dir: Path) -> GenerationConfig | None:
    """The generation settings `generate` recorded with the raw data under `data_dir` (raw/generation.json), or
    None where there is no such record (raw data from elsewhere, or from before the record existed)."""
    import json

    path = Catalog(data_dir).raw_generation
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        from feedstore.core.errors import InputDataError

        raise InputDataError(f"{path}: unreadable generation record ({e})") from None
    try:
        return GenerationConfig.model_validate(doc)
    except ValueError as e:
        from feedstore.core.errors import InputDataError

        first = str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else str(e)
        raise InputDataError(f"{path}: not a generation record ({first.strip()})") from None


def _run_tasks(cfg, world, tasks, fault_rate, stage, workers, progress):
    from feedstore.core.progress import Progress

    # a bar on a terminal (unless progress=False), else a progress line in the log every few seconds
    bar = Progress(sum(t.n for t in tasks), "generate", unit="events", bar=None if progress else False, logger=log)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                res = _write_block(world, task, fault_rate, stage)
                bar.update(task.n)
                yield res
            return
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(cfg, fault_rate, str(stage))) as pool:
            chunksize = max(1, len(tasks) // (8 * workers))
            for task, res in zip(tasks, pool.map(_run_task, tasks, chunksize=chunksize), strict=True):
                bar.update(task.n)
                yield res
    finally:
        bar.close()


#: Below this many events a process pool costs more than it saves (output is identical either way).
_PARALLEL_THRESHOLD = 200_000


def default_workers(interactions: int) -> int:
    """Worker processes for generation: all cores (at most 8) for large runs, 1 for small ones."""
    if interactions < _PARALLEL_THRESHOLD:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class GenerateResult:
    interactions: int
    faults: dict[str, int]
    realism_passed: int | None
    realism_failed: int | None


def generate_events(cfg: PipelineConfig, *, fault_rate: float = 0.0, workers: int | None = None, report: bool = True,
                    progress: bool = True, days: list | None = None) -> GenerateResult:
    """Stage `generate`: write `<data_dir>/raw/` (users, items, interactions, faults.json, generation.json) and the
    realism report.
    With `days`, only those days' partitions (what the daily DAG does)."""
    from feedstore.ingestion.generate.realism import write_report

    gen = cfg.generation
    summary = write_raw_events(gen, cfg.data_dir, fault_rate=fault_rate,
                               workers=workers or default_workers(gen.interactions), progress=progress, days=days)
    passed = failed = None
    if report:
        doc = write_report(cfg.data_dir, gen)
        passed, failed = doc["passed"], doc["failed"]
        if failed:
            log.warning("%d realism check(s) missed their target (see the table above)", failed)
    return GenerateResult(summary.interactions, summary.faults, passed, failed)
