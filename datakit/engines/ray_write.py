"""The write stage on Ray: workers gather a split's rows from the shard files and write them.

Each split is cut into parts of about ``PART_TOKENS`` tokens (smaller when the build is small,
so that every worker gets a part); one task per part gathers its rows, runs them through the
post-split steps and writes them with every format's own sink into ``.parts/{split}-{K}/``. The driver then moves the parts into place (``ray_formats``): for ``hf``
as ``data-0000K-of-0000M.arrow`` listed in the split's ``state.json`` (the sharded
``datasets.save_to_disk`` layout), for ``parquet`` and ``mds`` as the shards of one numbering
with the format's index. Best-fit packing (``pack`` of instruction rows) is planned on the driver
from the row lengths alone (``PackRows.begin_split``) and cut into runs of whole packs, which the
workers lay out (``PackRows.run``); the manifest gets the same packing figures as locally.

What cannot be cut this way (a post-split step without runs, a format without part assembly) is
written by ``stages.write`` on the driver, from the same shard files.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np

from .ray_formats import ASSEMBLE

PART_TOKENS = 256 << 20  # ~1.5 GB of int32 ids + labels + mask per part file (hf's 500 MB shards hold ~40 M tokens)


def write_splits(plan, rows, folder: Path, *, writers, split_steps=(), seconds=None,
                 on_rows=lambda n: None, provenance: bool = True) -> dict[str, dict]:
    from ..stages import SplitRows, write

    if not all(w.name in ASSEMBLE for w in writers) or not all(hasattr(s, "runs") for s in split_steps):
        return write(plan, rows, folder, writers=writers, split_steps=split_steps, seconds=seconds, on_rows=on_rows,
                     provenance=provenance)
    from .ray import _ray
    from .ray_run import run_tasks

    # every worker writes: a build smaller than a part per worker is cut in parts of 1/workers of
    # it (the bench's 8 M tokens: the train split's part took 0.46 s on one worker, the other idle)
    ray = _ray()
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    total = sum(int(rows.lengths[idx].sum()) for idx in plan.splits.values())
    part_tokens = max(1, min(PART_TOKENS, -(-total // workers)))
    items, orders, planned, per_row = [], {}, {}, {}
    for name, indices in plan.splits.items():
        split = SplitRows(name, indices, rows)
        # a packer per split: its plan and figures are that split's (the write tasks run later)
        planned[name] = [copy.deepcopy(step) for step in split_steps]
        for step in planned[name]:
            split = step.begin_split(split)
        orders[name] = split.indices
        if split_steps:
            (step,) = planned[name]  # one post-split step: instruction pack (a recipe has one pack)
            parts = [(a, b, packs.tolist()) for a, b, packs in step.runs(part_tokens)]
            per_row[name] = np.concatenate([np.asarray(p, np.int64) for _, _, p in parts])  # built rows per pack
        else:
            parts = [(a, b, None) for a, b in _parts(split.lengths, part_tokens)]
            per_row[name] = np.ones(len(split.indices), np.int64)
        for k, (a, b, packs) in enumerate(parts):
            items.append({"split": name, "part": k, "of": len(parts), "a": int(a), "b": int(b), "packs": packs})
    job = {"rows": rows, "splits": orders, "writers": writers, "steps": list(split_steps), "folder": str(folder)}
    results = run_tasks(items, _write_task, job=job, stage="write", on_result=lambda r: on_rows(r["rows"]))
    written: dict[str, dict] = {}
    for name in plan.splits:
        mine = sorted((r for r in results if r["split"] == name), key=lambda r: r["part"])
        traced = _provenance(folder, name, plan, rows, orders[name], per_row[name]) if provenance else None
        for writer in writers:
            parts = [Path(r["folder"]) for r in mine]
            writer.files.extend(ASSEMBLE[writer.name](folder, name, parts, [r["files"][writer.name] for r in mine]))
            for r in mine:
                writer.stats.update(r["stats"][writer.name])
        written[name] = {"rows": sum(r["rows"] for r in mine), "tokens": sum(r["tokens"] for r in mine)}
        if traced is not None:
            written[name]["provenance"] = traced
        for step, mine_step in zip(split_steps, planned[name]):
            for r in mine:
                mine_step.add_run(r["packing"])
            written[name].update(mine_step.end_split())
            step.stats.merge(mine_step.stats)
        for r in mine:
            for k, s in enumerate(r["seconds"]):
                if seconds is not None:
                    seconds[k] += s
    shutil.rmtree(folder / ".parts", ignore_errors=True)
    rows.release()
    for writer in writers:
        writer.finish(folder, list(plan.splits))
    return written


def _provenance(folder: Path, name: str, plan, rows, order: np.ndarray, per_row: np.ndarray) -> dict | None:
    """The split's provenance file, written on the driver from the metadata (``writers/provenance.py``):
    output row k is made of the next ``per_row[k]`` built rows of ``order``, as the workers wrote it."""
    from ..stages import TAKE_ROWS, _provenance as sink

    traced = sink(folder, name, plan, rows)
    if traced is None:
        return None
    ends = np.cumsum(per_row)
    for k in range(0, len(per_row), TAKE_ROWS):
        a = int(ends[k - 1]) if k else 0
        traced.add(order[a:int(ends[min(k + TAKE_ROWS, len(per_row)) - 1])], per_row[k:k + TAKE_ROWS])
    return traced.close()


def _parts(lengths: np.ndarray, tokens: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of about ``tokens`` tokens each (at least one, possibly empty)."""
    if len(lengths) == 0:
        return [(0, 0)]
    ends = np.cumsum(lengths)
    n = max(1, int(np.ceil(ends[-1] / tokens)))
    cuts = np.searchsorted(ends, [ends[-1] * j / n for j in range(1, n)], side="left") + 1
    bounds = [0, *sorted(set(int(c) for c in cuts if 0 < c < len(lengths))), len(lengths)]
    return list(zip(bounds[:-1], bounds[1:]))


def _write_task(item: dict, job: dict) -> dict:
    from ..executor import run_chain
    from ..stages import TAKE_ROWS
    from ..transforms.pack_rows import with_seq_lens

    rows = job["rows"]
    indices = job["splits"][item["split"]][item["a"]:item["b"]]
    part = Path(job["folder"]) / ".parts" / f"{item['split']}-{item['part']:05d}"
    shutil.rmtree(part, ignore_errors=True)  # a task run again after its worker died starts over
    part.mkdir(parents=True)
    writers = job["writers"]  # this task's own copies: their files and stats are this part's
    for w in writers:
        w.files.clear()
        w.stats.clear()
    sinks = [w.open(part, item["split"]) for w in writers]
    chain = [step.run(np.asarray(item["packs"], np.int64)) for step in job["steps"]]
    gathered = (with_seq_lens(rows.gather(indices[s:s + TAKE_ROWS])) for s in range(0, len(indices), TAKE_ROWS))
    seconds = [0.0] * len(chain)
    n_rows = tokens = 0
    for batch in run_chain(gathered, chain, seconds=seconds, threads=False) if chain else gathered:
        for sink in sinks:
            sink.write(batch)
        n_rows += batch.num_rows
        tokens += len(batch.column("input_ids").values)
    for sink in sinks:
        sink.close()
    return {**item, "packs": None, "rows": int(n_rows), "tokens": int(tokens), "folder": str(part),
            "files": {w.name: list(w.files) for w in writers}, "stats": {w.name: dict(w.stats) for w in writers},
            "seconds": seconds, "packing": chain[0].end_split()["packing"] if chain else None}
