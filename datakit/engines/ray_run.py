"""Running a stage's tasks on Ray, and a worker's errors brought back as datakit's own.

A stage is a list of small items and a function ``fn(item, job) -> dict``, run as one Ray task
per item. A ``DatakitError`` (bad input) travels back as data, because Ray keeps an exception's
message but not its cause, and is raised on the driver with the same one line a local build
prints.
"""
from __future__ import annotations

import time

from ..errors import DatakitError


def _ray():
    from .ray import _ray as ray

    return ray()


def ray_error(e: BaseException) -> BaseException:
    """The DatakitError a worker raised, out of Ray's wrappers (so it prints as one line), or ``e``."""
    seen = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, DatakitError):
            return x
        stack += [getattr(x, "cause", None), x.__cause__, x.__context__]
    return e


STAGES: list[dict] = []  # per Ray stage of the latest build: wall seconds, task seconds, tasks


def run_tasks(items: list[dict], fn, *, job: dict, stage: str, on_result=lambda r: None) -> list[dict]:
    """``fn(item, job) -> dict`` for every item, one item per Ray task; the results in item order.

    Every task is submitted at once and Ray's scheduler hands the next one to a worker as it
    finishes one; a worker that dies is replaced and its task run again (Ray's retries). Plain
    tasks, not a Ray Data ``map_batches``: a task reads its shard and writes its rows to a file of
    its own and returns only metadata, so no data moves between tasks for Ray Data to stream, and
    Ray Data cost the 32 MB bench ~2.5 s of its ~11 s on 2 workers: importing it in each new worker
    process (with pandas: warm-up 0.3 s -> 1.3-1.9 s), ~1.4 s between the workers being ready and
    its first task, and 0.15-0.35 s between one task and the next on a worker, against ~0.01 s."""
    ray = _ray()
    if not items:
        return []
    t0 = time.perf_counter()
    out, busy, cpu = [], 0.0, 0.0
    try:
        for result in _tasks(ray, items, fn, job):
            if "error" in result:
                raise _unpack_error(result["error"])
            busy += result.pop("task_seconds")
            cpu += result.pop("cpu_seconds")
            on_result(result)
            out.append(result)
    except DatakitError:
        raise
    except Exception as e:
        raise _lost(ray, e, stage) or ray_error(e) from None
    STAGES.append({"stage": stage, "tasks": len(items), "wall_seconds": round(time.perf_counter() - t0, 3),
                   "task_seconds": round(busy, 3), "cpu_seconds": round(cpu, 3)})
    return sorted(out, key=lambda r: r["item"])


def _call(fn, item: dict, k: int, job: dict) -> dict:
    t, cpu = time.perf_counter(), time.process_time()
    try:
        result = fn(item, job)
    except DatakitError as e:  # bad input: the driver raises it again (a Ray retry would fail alike)
        return {"error": _pack_error(e), "item": k}
    return {**result, "item": k, "task_seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - cpu}


RETRIES = 3  # runs of a task again after its worker process or node died


def _tasks(ray, items, fn, job):
    task = ray.remote(max_retries=RETRIES)(_call)
    job_ref = ray.put(job)
    pending = [task.remote(fn, it, k, job_ref) for k, it in enumerate(items)]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:  # a failed stage leaves no task of its running on the cluster
        for ref in pending:
            ray.cancel(ref, force=True)


def _lost(ray, e: BaseException, stage: str) -> DatakitError | None:
    """A task lost past its retries (its worker or node kept dying) as one line; a task that raised
    (a bug in a step) is not lost and keeps its traceback."""
    from ray.exceptions import RayError, RayTaskError

    from ..errors import EngineError

    if not isinstance(e, RayError) or isinstance(e, RayTaskError):
        return None
    what = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return EngineError(f"the Ray cluster lost a task of the {stage} stage after {RETRIES} retries "
                       f"({type(e).__name__}: {what})")


def _pack_error(e: DatakitError) -> dict:
    """A worker's error as data: Ray does not carry an exception's cause across processes."""
    state = {k: v for k, v in vars(e).items() if isinstance(v, (str, int, float, list, type(None)))}
    return {"module": type(e).__module__, "type": type(e).__qualname__, "message": str(e), "state": state}


def _unpack_error(payload: dict) -> DatakitError:
    import importlib

    cls = getattr(importlib.import_module(payload["module"]), payload["type"], DatakitError)
    if not (isinstance(cls, type) and issubclass(cls, DatakitError)):
        cls = DatakitError
    error = cls.__new__(cls)
    Exception.__init__(error, payload["message"])
    vars(error).update(payload["state"])
    return error
