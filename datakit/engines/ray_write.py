"""The write stage on Ray: workers gather a split's rows from the shard files and write them.

A split of the ``hf`` layout is cut into parts of about ``PART_TOKENS`` tokens, each written by
one task with the ``hf`` writer's own sink (into ``.parts/K/``); the driver then moves the parts
into place as ``data-0000K-of-0000M.arrow`` and lists them in the split's ``state.json``, the way
``datasets.save_to_disk`` lays out a sharded split. Post-split steps (best-fit packing sees a
whole split) and the other formats are written by ``stages.write`` from the same shard files.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..writers.arrow import ArrowWriter

PART_TOKENS = 256 << 20  # ~1.5 GB of int32 ids + labels + mask per part file (hf's 500 MB shards hold ~40 M tokens)


def write_splits(plan, rows, folder: Path, *, writers, split_steps=(), seconds=None,
                 on_rows=lambda n: None) -> dict[str, dict]:
    from ..stages import write

    if split_steps or [type(w) for w in writers] != [ArrowWriter]:
        return write(plan, rows, folder, writers=writers, split_steps=split_steps, seconds=seconds, on_rows=on_rows)
    from .ray_run import run_tasks

    writer = writers[0]
    items = []
    for name, indices in plan.splits.items():
        parts = _parts(rows.lengths[indices], PART_TOKENS)
        for k, (a, b) in enumerate(parts):
            items.append({"split": name, "part": k, "of": len(parts), "a": int(a), "b": int(b)})
    job = {"rows": rows, "splits": plan.splits, "writer": writer, "folder": str(folder)}
    results = run_tasks(items, _write_task, job=job, stage="write", on_result=lambda r: on_rows(r["rows"]))
    written: dict[str, dict] = {}
    for name in plan.splits:
        mine = [r for r in results if r["split"] == name]
        _assemble(folder, name, mine)
        written[name] = {"rows": sum(r["rows"] for r in mine), "tokens": sum(r["tokens"] for r in mine)}
    shutil.rmtree(folder / ".parts", ignore_errors=True)
    rows.release()
    writer.finish(folder, list(plan.splits))
    return written


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
    from ..stages import TAKE_ROWS
    from ..transforms.pack_rows import with_seq_lens

    rows = job["rows"]
    indices = job["splits"][item["split"]][item["a"]:item["b"]]
    part = Path(job["folder"]) / ".parts" / f"{item['split']}-{item['part']:05d}"
    shutil.rmtree(part, ignore_errors=True)  # a task run again after its worker died starts over
    sink = job["writer"].open(part, item["split"])
    tokens = 0
    for start in range(0, len(indices), TAKE_ROWS):
        batch = with_seq_lens(rows.gather(indices[start:start + TAKE_ROWS]))
        sink.write(batch)
        tokens += len(batch.column("input_ids").values)
    sink.close()
    return {**item, "rows": int(len(indices)), "tokens": int(tokens), "folder": str(part / item["split"])}


def _assemble(folder: Path, split: str, parts: list[dict]) -> None:
    """Move the parts of ``split`` into its folder and list them in its ``state.json``."""
    parts = sorted(parts, key=lambda r: r["part"])
    target = folder / split
    target.mkdir(parents=True)
    names = []
    for r in parts:
        src = Path(r["folder"])
        (data,) = json.loads((src / "state.json").read_text())["_data_files"]
        name = f"data-{r['part']:05d}-of-{r['of']:05d}.arrow"
        (src / data["filename"]).rename(target / name)
        names.append({"filename": name})
    first = Path(parts[0]["folder"])
    shutil.copyfile(first / "dataset_info.json", target / "dataset_info.json")
    state = json.loads((first / "state.json").read_text())
    state["_data_files"] = names
    (target / "state.json").write_text(json.dumps(state, indent=2))
