"""Deduplication across shards on Ray, with the decisions of the local ``dedup`` step.

1. Keys (workers, per shard): each row's content digest, and in near mode its shingle set and
   MinHash band keys (``transforms.near``), kept in a file beside the shard.
2. Exact duplicates: a hash partition by digest (Ray Data ``groupby``); within a digest the row
   that comes first in build order is the original.
3. Near candidates: a shuffle by band key (Ray Data ``groupby``); rows that share a band key are
   candidate pairs. Each pair is decided on the workers by its true Jaccard on the shingle sets.
4. The decision (driver): the confirmed pairs are replayed in build order, as the local step meets
   the rows: a row is a near duplicate when it matches an earlier row that was kept
   (``action: group``: it joins the groups of every earlier row it matches).

What reaches the driver: the duplicates (a row number and its original), the candidate pairs
(16 bytes each) and the confirmed ones. The driver holds 9 bytes per row for the replay (a group
and a flag): about 9 MB per million rows, plus the pairs.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..columns import row_offsets

CHECK_PAIRS = 200_000  # candidate pairs decided per task


def dedup_decisions(build, current: list[dict], metas: list[dict], *, index: int) -> dict[int, dict]:
    """What the dedup step at ``steps[index]`` does to each shard's rows: ``{shard: {"rows": [...]}}``
    (rows to drop) or ``{"regroup": {row: group}}`` (``action: group``). Its counts go into the
    driver's step, as the local step would have counted them."""
    import time

    from .ray import _ray_data
    from .ray_run import STAGES, run_tasks

    ray = _ray_data()
    t0 = time.perf_counter()
    step = build.steps[index]
    counts = [len(m["lengths"]) for m in metas]
    bases = row_offsets(np.asarray(counts, np.int64))
    groups = np.concatenate([np.where(np.asarray(m["group"], np.int64) >= 0,
                                      np.asarray(m["group"], np.int64) + c["offset"], -1)
                             for c, m in zip(current, metas)]) if metas else np.zeros(0, np.int64)
    job = {**build.job, "index": index}
    items = [{"path": c["path"], "shard": c["shard"], "offset": c["offset"], "base": int(b)}
             for c, b in zip(current, bases[:-1])]
    keyed = ray.data.from_items([{"item": i} for i in range(len(items))], override_num_blocks=max(1, len(items)))
    digests = keyed.map_batches(_keys, batch_size=1, batch_format="pyarrow",
                                fn_kwargs={"items": items, "job": job}).materialize()
    # one partition per worker: Ray Data's default (200 for a hash shuffle) costs more in task
    # start-ups than the few MB of keys take to move
    parts = max(1, int(ray.cluster_resources().get("CPU", 1)))
    dups = digests.groupby("digest", num_partitions=parts).map_groups(_later_copies, batch_format="pyarrow").to_arrow_refs()
    exact_of = _collect(ray, dups, "row", "first")
    near = step.near is not None
    edges = np.zeros((0, 2), np.int64)
    if near and bases[-1]:
        skip = set(exact_of)
        bands = keyed.map_batches(_band_rows, batch_size=1, batch_format="pyarrow",
                                  fn_kwargs={"items": items, "job": job, "skip": sorted(skip)})
        pairs = bands.groupby("band", num_partitions=parts).map_groups(_pairs, batch_format="pyarrow").to_arrow_refs()
        cand = _collect_pairs(ray, pairs)
        step.near.pairs_checked += len(cand)
        chunks = [{"pairs": cand[a:a + CHECK_PAIRS].tolist()} for a in range(0, len(cand), CHECK_PAIRS)]
        shingle_files = {c["shard"]: _shingle_file(build.job["folder"], index, c["shard"]) for c in current}
        found = run_tasks(chunks, _check, stage="near pairs", job={"bases": bases.tolist(), "shards": [c["shard"] for c in current],
                                                "files": shingle_files, "threshold": step.near.threshold})
        edges = np.array([e for r in found for e in r["edges"]], np.int64).reshape(-1, 2)
    STAGES.append({"stage": "dedup (keys, partition, band shuffle, checks)", "tasks": len(items),
                   "wall_seconds": round(time.perf_counter() - t0, 3), "task_seconds": None})
    drop, out = _replay(step, exact_of, edges, groups)
    return _per_shard(step, drop, out, groups, current, bases)


def _collect(ray, refs, a: str, b: str) -> dict[int, int]:
    out = {}
    for table in ray.get(refs):
        for x, y in zip(table.column(a).to_pylist(), table.column(b).to_pylist()):
            out[int(x)] = int(y)
    return out


def _collect_pairs(ray, refs) -> np.ndarray:
    parts = [np.stack([t.column("i").to_numpy(), t.column("j").to_numpy()], axis=1) for t in ray.get(refs)
             if t.num_rows]
    if not parts:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(parts).astype(np.int64)
    return np.unique(pairs, axis=0)


def _replay(step, exact_of: dict[int, int], edges: np.ndarray, groups: np.ndarray):
    """The local step's decisions, from the duplicates and the confirmed pairs, in build order."""
    n = len(groups)
    out = groups.copy()
    is_exact = np.zeros(n, bool)
    is_near = np.zeros(n, bool)
    for row in exact_of:
        is_exact[row] = True
    preds = defaultdict(list)
    for i, j in edges.tolist():
        preds[j].append(i)
    near = step.near
    keep_all = near is not None and near.keep_all
    events = sorted(set(preds) | set(exact_of))
    for j in events:
        if is_exact[j]:
            first = exact_of[j]
            out[j] = near.merges.find(int(out[first])) if keep_all else out[first]
            continue
        hits = [int(out[i]) for i in sorted(preds[j]) if keep_all or not is_near[i]]
        if hits:
            is_near[j] = True
            if keep_all:
                out[j] = near.merges.join(hits)
    counted = "rows_grouped" if step.group else "rows_dropped"
    step.stats.add(counted, int(is_exact.sum()), reason="exact_duplicate")
    step.stats.add(counted, int(is_near.sum()), reason="near_duplicate")
    return is_exact | is_near, out


def _per_shard(step, drop: np.ndarray, out: np.ndarray, groups: np.ndarray, current, bases) -> dict[int, dict]:
    decisions = {}
    for c, a, b in zip(current, bases[:-1], bases[1:]):
        if step.group:
            changed = np.flatnonzero(out[a:b] != groups[a:b])
            if len(changed):
                decisions[c["shard"]] = {"regroup": {int(k): int(out[a + k]) for k in changed}}
        else:
            rows = np.flatnonzero(drop[a:b])
            if len(rows):
                decisions[c["shard"]] = {"rows": rows.tolist()}
    return decisions


def _shingle_file(folder: str, index: int, shard: int) -> str:
    return str(Path(folder) / f"dedup{index}-{shard:05d}.npz")


def _texts_of(item: dict, job: dict):
    from ..transforms.dedup import row_texts
    from .ray_tasks import _shard_batches, _worker_steps

    step = _worker_steps(job)[job["index"]]
    texts = []
    for batch in _shard_batches(item["path"], item["offset"]):
        texts += row_texts(batch, step.fields)
    return step, texts


def _keys(batch: pa.Table, *, items, job) -> pa.Table:
    """(digest, row) of every row of a shard; in near mode its shingle sets and band keys go to a file."""
    from ..transforms.near import band_keys, shingle_sets

    item = items[batch.column("item")[0].as_py()]
    step, texts = _texts_of(item, job)
    digests = [d.hex() for d in step._digests(texts)]
    if step.near is not None:
        from rensa import RMinHash

        from ..transforms.near import _SEED

        flat, offsets = shingle_sets(texts, step.near.ngram)
        matrix = RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets.astype(np.uint64), step.near.num_perm,
                                                               _SEED)
        keys = band_keys(np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(texts), -1),
                         step.near.bands, step.near.rows)
        np.savez(_shingle_file(job["folder"], job["index"], item["shard"]), flat=flat, offsets=offsets, keys=keys)
    rows = np.arange(item["base"], item["base"] + len(texts), dtype=np.int64)
    return pa.table({"digest": pa.array(digests, pa.string()), "row": pa.array(rows, pa.int64())})


def _later_copies(group: pa.Table) -> pa.Table:
    rows = np.sort(group.column("row").to_numpy())
    return pa.table({"row": pa.array(rows[1:], pa.int64()), "first": pa.array(np.full(len(rows) - 1, rows[0]),
                                                                                pa.int64())})


def _band_rows(batch: pa.Table, *, items, job, skip) -> pa.Table:
    """(band key, row) for every band of every row that is not an exact duplicate."""
    item = items[batch.column("item")[0].as_py()]
    data = np.load(_shingle_file(job["folder"], job["index"], item["shard"]))
    keys = data["keys"]
    rows = np.arange(item["base"], item["base"] + len(keys), dtype=np.int64)
    keep = ~np.isin(rows, np.asarray(skip, np.int64))
    keys, rows = keys[keep], rows[keep]
    return pa.table({"band": pa.array(keys.ravel(), pa.uint64()),
                     "row": pa.array(np.repeat(rows, keys.shape[1] if keys.ndim == 2 else 0), pa.int64())})


def _pairs(group: pa.Table) -> pa.Table:
    rows = np.unique(group.column("row").to_numpy())
    i, j = np.triu_indices(len(rows), k=1)
    return pa.table({"i": pa.array(rows[i], pa.int64()), "j": pa.array(rows[j], pa.int64())})


_SHINGLES: dict[str, tuple] = {}


def _check(item: dict, job: dict) -> dict:
    """The candidate pairs of ``item`` whose true Jaccard reaches the threshold."""
    from ..transforms.near import jaccard

    bases = np.asarray(job["bases"], np.int64)
    shards = job["shards"]

    def sets(row: int) -> np.ndarray:
        k = int(np.searchsorted(bases, row, side="right") - 1)
        path = job["files"][shards[k]]
        if path not in _SHINGLES:
            _SHINGLES.clear() if len(_SHINGLES) > 64 else None
            data = np.load(path)
            _SHINGLES[path] = (data["flat"], data["offsets"])
        flat, offsets = _SHINGLES[path]
        local = row - bases[k]
        return flat[offsets[local]:offsets[local + 1]]

    edges = [[i, j] for i, j in item["pairs"] if jaccard(sets(i), sets(j)) >= job["threshold"]]
    return {"edges": edges}
