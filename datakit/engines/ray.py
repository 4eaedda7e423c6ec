"""The Ray engine: the recipe's own steps over explicit shards on a Ray cluster.

    read + per-shard steps (workers) -> global steps (dedup by hash partition and band shuffle,
    Ray Data; pretraining pack per source) -> per-shard steps (workers) -> ... -> built rows in
    shard files

A per-shard phase is one Ray task per shard (``ray_run``: why not Ray Data there); a task builds
the recipe's steps once per worker process (the same classes, options and tokenizer as the local engine),
runs them with the local executor on its shard and writes the rows to an Arrow file in the
build's staging folder. Only per-row metadata reaches the driver (see ``ray_rows``): the plan,
the mixing and the split run on it exactly as for a local build, and the split files are then
written by workers (``ray_write``). Row numbers, split groups and counts are those of a local
build, so the rows, their order and the manifest's counts are the same.

The staging folder, the inputs and the tokenizer must be paths that every node sees (a shared
disk); on one machine that is any path.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..columns import row_offsets
from ..counts import Counts
from ..errors import EngineError
from ..progress import Progress
from ..recipe import Recipe
from ..sources import FileInfo
from ..stages import Produced
from ..transforms.base import Step
from .ray_rows import ShardRows
from .ray_run import STAGES, run_tasks
from .ray_tasks import _map_task, _read_task, _stream_task, _warm_task
from .shards import SHARD_BYTES, ShardSpec, number_ranges, plan_shards

SHARDS_PER_WORKER = 4  # a 32 MB corpus on 2 workers: 8 shards of ~4 MB, ~2 s of tokenizing each
INSTALL = "the ray engine needs Ray Data: pip install 'datakit[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise EngineError(INSTALL) from None
    return ray


def _ray_data():
    """Ray Data, for the stages that shuffle (dedup): imported only there, because importing it
    (with pandas) costs ~0.5 s of the driver's start and ~1 s of each worker's (see ``ray_run``)."""
    ray = _ray()
    try:
        import ray.data
    except ImportError:
        raise EngineError(INSTALL) from None
    # importing Ray Data configures its logger (INFO lines on each execution): quiet it again
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    ctx.print_on_execution_start = False
    return ray


@dataclass
class RayEngine:
    """Run a build on Ray: the cluster at ``address`` (or ``RAY_ADDRESS``), else a local one
    started for the build and stopped after it."""

    address: str | None = None
    shard_bytes: int = SHARD_BYTES
    num_cpus: int | None = None
    name: str = "ray"

    def __post_init__(self):
        _ray()  # one line saying what to install, before any work
        if importlib.util.find_spec("pandas") is None:  # Ray Data's own requirement (ray[data])
            raise EngineError(INSTALL)

    def rows(self, folder: Path) -> ShardRows:
        return ShardRows(folder)

    def run(self, recipe: Recipe, steps: list[Step], rows: ShardRows, *, progress: Progress) -> Produced:
        self.connect()
        STAGES.clear()
        return _Build(recipe, steps, rows, progress, self).run()

    def write(self, plan, rows: ShardRows, folder: Path, **options) -> dict[str, dict]:
        from .ray_write import write_splits

        self.connect()
        return write_splits(plan, rows, folder, **options)

    def connect(self):
        """Join the cluster at ``address``/``RAY_ADDRESS``, or start a local one; an existing
        connection is used as it is. ``close`` stops the local Ray that ``connect`` started."""
        ray = _ray()
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            # a worker's error reaches the user as datakit's one line, not as Ray's log of it
            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            try:
                # "local": a new instance; None would join whatever cluster ``ray start`` last
                # recorded on this machine (/tmp/ray/ray_current_cluster), even a stopped one
                ray.init(address=address or "local", num_cpus=None if address else self.num_cpus,
                         include_dashboard=False, log_to_driver=False, configure_logging=False,
                         logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise EngineError(f"cannot reach the Ray cluster at {address}: {e}") from None
            # a Ray instance started here lives as long as the build; a connection to a running
            # cluster stays for this process's later builds (Ray closes it at exit): leaving it
            # costs ~0.4 s, and a later build finds this process's workers already started
            self._started = address is None
        return ray

    def describe(self) -> dict:
        """What the manifest records of the engine: its workers and each stage's times."""
        ray = _ray()
        workers = int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else None
        return {"name": self.name, "workers": workers, "stages": list(STAGES)}

    def close(self) -> None:
        if getattr(self, "_started", False):
            _ray().shutdown()
            self._started = False


def _segments(steps: list[Step]) -> list[tuple[str, int, int]]:
    """The chain cut where a step's ``scope`` is wider than a shard: ("shard", a, b) runs
    steps[a:b] on every shard alone; ("dedup", i, i+1) is a dedup step, run by hash partition and
    band shuffle (``ray_dedup``); ("source", i, i+1) and ("build", i, i+1) run the step over each
    source's rows, or over every row, in build order, in one task."""
    from ..transforms.dedup import Dedup

    out, start = [], 0
    for i, step in enumerate(steps):
        if step.scope == "shard":
            continue
        if step.scope not in ("source", "build"):
            raise EngineError(f"step {type(step).__name__}: scope {step.scope!r} does not run before the split")
        out.append(("shard", start, i))
        # dedup has a distributed form; another step that sees the whole build runs in one task
        out.append(("dedup" if isinstance(step, Dedup) else step.scope, i, i + 1))
        start = i + 1
    out.append(("shard", start, len(steps)))
    return out


class _Build:
    def __init__(self, recipe: Recipe, steps: list[Step], rows: ShardRows, progress: Progress, engine: RayEngine):
        from ..writers.documents import DocumentTap

        # the documents before `pack` (megatron output): the builder's tap is not one of the recipe's
        # steps, which the workers build; the driver runs it over the shard files that hold them (``_tap``)
        self.tap = next(((i, s) for i, s in enumerate(steps) if isinstance(s, DocumentTap)), None)
        self.tap_seconds = 0.0
        steps = [s for s in steps if not isinstance(s, DocumentTap)]
        self.recipe, self.steps, self.rows, self.progress = recipe, steps, rows, progress
        ray = _ray()
        self.cpus = cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # SHARDS_PER_WORKER shards per worker at least: workers take the next shard as they finish,
        # so the tail of the read stage is one small shard, not a quarter of the input
        self.shards, self.paths = plan_shards(recipe, shard_bytes=engine.shard_bytes,
                                              min_shards=SHARDS_PER_WORKER * cpus)
        self.job = {"recipe": recipe, "folder": str(rows.folder), "steps": len(steps),
                    "key": f"{os.getpid()}-{time.time_ns()}"}
        self.seconds = [0.0] * len(steps)
        self.read = 0  # rows read so far, for the progress bar

    def run(self) -> Produced:
        self._warm()
        shards, sha = self._number()
        parts = self._read(shards)
        files = self._files(parts, sha)
        offsets = _offsets([p["records"] for p in parts])
        current = [{"path": p["path"], "shard": p["shard"], "source": p["source"], "offset": int(o),
                    "tokens": p["tokens"]}
                   for p, o in zip(parts, offsets)]
        metas = [p["meta"] for p in parts]
        drops = None
        for kind, a, b in _segments(self.steps)[1:]:
            if kind == "dedup":
                from .ray_dedup import dedup_decisions

                if drops is not None:  # two dedup steps in a row: the first one's decisions first
                    current, metas = self._map(current, a, a, drops=drops)
                drops = dedup_decisions(self, current, [_arrays(m) for m in metas], index=a)
            elif kind in ("source", "build"):
                if drops is not None:
                    current, metas = self._map(current, a, a, drops=drops)
                    drops = None
                if self.tap is not None and self.tap[0] == a:  # the tap sits just before `pack`
                    self._tap(current)
                current, metas = self._in_order(current, a, by_source=kind == "source")
            elif a < b or drops is not None:
                current, metas = self._map(current, a, b, drops=drops)
                drops = None
        self._finish(current, metas)
        counts = Counts()
        counts.add("rows_read", sum(p["records"] for p in parts))
        counts.add("rows_written", self.rows.rows)
        counts.add("tokens_written", self.rows.tokens)
        seconds = list(self.seconds)
        if self.tap is not None:  # one entry per step the engine was given
            seconds.insert(self.tap[0], self.tap_seconds)
        return Produced(files=files, seconds=seconds, counts=counts)

    # -- passes ----------------------------------------------------------------------------------

    def _warm(self) -> None:
        """Start a worker per CPU and build the steps there (importing datakit and loading the
        tokenizer cost ~1 s of a new worker process), while the driver numbers the ranges."""
        ray = _ray()
        task = ray.remote(max_retries=0)(_warm_task)
        self._warming = [task.remote(self.job) for _ in range(self.cpus)]

    def _number(self) -> tuple[list[ShardSpec], dict[str, str]]:
        """Line numbers of the ranges and the sha256 of the files cut in ranges (driver)."""
        t0 = time.perf_counter()
        shards, sha = number_ranges(self.shards)
        if sha:
            STAGES.append({"stage": "lines and hashes (driver)", "tasks": 0,
                           "wall_seconds": round(time.perf_counter() - t0, 3), "task_seconds": None})
        return shards, sha

    def _read(self, shards: list[ShardSpec]) -> list[dict]:
        seg = _segments(self.steps)[0]
        items = [{"spec": s.__dict__, "steps": [seg[1], seg[2]]} for s in shards]
        return run_tasks(items, _read_task, job=self.job, stage="read + steps",
                         on_result=self._tally)

    def _map(self, current: list[dict], a: int, b: int, *, drops=None) -> tuple[list[dict], list]:
        items = [{**c, "steps": [a, b], "drop": (drops or {}).get(c["shard"])} for c in current]
        results = run_tasks(items, _map_task, job=self.job, stage=f"steps {a}-{b}", on_result=self._tally)
        return _next(results)

    def _in_order(self, current: list[dict], i: int, *, by_source: bool) -> tuple[list[dict], list]:
        """steps[i] over the rows of each source (``by_source``: pretraining pack, whose blocks
        never mix sources and are cut in stream order) or of the whole build, in build order: one
        task per stream, reading the shards' files one after the other."""
        streams: dict[int, list[dict]] = {}
        by_source = by_source and all(c["source"] >= 0 for c in current)  # -1: a file of several sources
        for c in current:
            streams.setdefault(c["source"] if by_source else 0, []).append(c)
        items = [{"shard": min(c["shard"] for c in cs), "source": cs[0]["source"] if by_source else -1,
                  "stream": k, "parts": cs, "steps": [i, i + 1]}
                 for k, cs in sorted(streams.items())]
        name = type(self.steps[i]).__name__.lower()
        results = run_tasks(items, _stream_task, job=self.job, stage=name, on_result=self._tally)
        return _next(results)

    def _tap(self, current: list[dict]) -> None:
        """The documents (the rows of the shard files before `pack`) through the builder's tap, in
        build order, as a local build passes them: the megatron writer reads them from its spill
        on the driver (~0.1 s for the bench's 32 MB)."""
        from .ray_tasks import _shard_batches

        t = time.perf_counter()
        tap = self.tap[1]
        for c in current:
            for batch in _shard_batches(c["path"], c["offset"]):
                tap(batch)
        self.tap_seconds = time.perf_counter() - t

    def _tally(self, result: dict) -> None:
        for k, stats in enumerate(result.get("stats", [])):
            if stats:
                self.steps[result["first_step"] + k].stats.merge(stats)
        for k, seconds in enumerate(result.get("seconds", [])):
            self.seconds[result["first_step"] + k] += seconds
        self.progress.advance(result.get("nbytes", 0))
        self.read += result.get("records", 0)
        self.progress.update_counts(read=self.read, tokens=sum(s.stats["tokens_read"] for s in self.steps),
                                    written=result.get("rows", 0))

    def _files(self, parts: list[dict], sha: dict[str, str]) -> list[FileInfo]:
        from ..errors import SourceError

        infos = [FileInfo(path=p) for p in self.paths]
        for p in parts:
            info = infos[p["file"]]
            info.bytes += p["nbytes"]
            info.records += p["records"]
            info.sha256 = sha.get(info.path) or p["sha256"]
        for info in infos:
            if info.records == 0:
                raise SourceError("empty input: no records", file=info.path)
        return infos

    def _finish(self, current: list[dict], metas: list[dict]) -> None:
        keep = [(c, m) for c, m in zip(current, metas) if c["path"]]
        metas = [_arrays(m) for _, m in keep]
        for (c, _), m in zip(keep, metas):
            m["group"] = np.where(m["group"] >= 0, m["group"] + c["offset"], m["group"])
        self.rows.set([c["path"] for c, _ in keep], metas, tokens=sum(c["tokens"] for c in current))
        self._merge_rejects(current)

    def _merge_rejects(self, current) -> None:
        """The rejects files the workers wrote (one per shard and filter), appended byte for byte
        in build order to the filter's rejects file."""
        for k, step in enumerate(self.steps):
            rejects = getattr(step, "rejects", None)
            if rejects is None:
                continue
            names = sorted(Path(self.job["folder"]).glob(f"rejects-{k}-*.jsonl"),
                           key=lambda p: int(p.stem.rsplit("-", 1)[1]))
            out = rejects.file or rejects.open()
            out.flush()
            for name in names:
                with open(name, "rb") as f:
                    shutil.copyfileobj(f, out.buffer)
                name.unlink()


def _offsets(counts: list[int]) -> np.ndarray:
    """Where each shard's rows start in build order."""
    return row_offsets(np.asarray(counts, np.int64))[:-1]


def _next(results: list[dict]) -> tuple[list[dict], list]:
    current = [{"path": r["path"], "shard": r["shard"], "source": r["source"], "offset": r["offset"],
                "tokens": r["tokens"]}
               for r in results]
    return current, [r["meta"] for r in results]


def _arrays(meta: dict) -> dict[str, np.ndarray]:
    from .ray_rows import META

    return {k: np.asarray(meta[k], dtype=t) for k, t in META.items()}


