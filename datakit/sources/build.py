"""``format: build``: a datakit build folder (or one split of it) as a source of tokenized rows.

A build source is neither read as text nor tokenized: its rows (``input_ids``, ``attention_mask``,
``labels``) go straight into the new build's spill, and are mixed (``weight``, ``repeat``) and
split with the rows of the other sources. What makes that safe is checked before any work
(``open_source_builds``), from the manifests:

- the tokenizer: the source build's tokenizer fingerprint (a hash of its files) must be the
  recipe tokenizer's, so every id means the same token;
- packed builds are refused: a pack's first labels are set to -100 and its padding is not a row,
  so the rows cannot be taken back out exactly; build the source without ``pack`` and pack in the
  recipe that reads it (``pack`` runs after the split);
- pretraining blocks must have the recipe's ``block_size`` when text sources are packed beside
  them; instruction rows must fit the recipe's ``pack.block_size``.

Splits stay leak-free: a row from a split other than ``train`` is held out (``_held``), and the
plan puts it, and every row of its split group, in the new validation split. Rows keep their split
group from the source build's provenance files (``provenance/{split}.parquet``) when it has them,
so copies and near-duplicates grouped there stay together here; identical rows of different
sources share a group anyway (the plan groups by content).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..columns import MODEL_COLUMNS, numeric_array
from ..errors import SourceError
from ..recipe import Recipe, SourceConfig

CHUNK_ROWS = 1024  # rows per batch read from a source build (a few MB of ids)
TRAIN = "train"  # the split whose rows the new plan may place anywhere; others are held out


@dataclass
class SourceBuild:
    """One ``format: build`` source, opened: its manifest and the splits it gives."""

    index: int
    config: SourceConfig
    path: Path
    manifest: dict
    splits: dict[str, pa.Table] = field(repr=False)
    groups: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.splits.values())

    def where(self, split: str) -> str:
        """The name its rows' provenance gives the split: ``build/a/train`` (``: row N`` follows)."""
        return str(self.path / split)

    def sha256(self, split: str) -> str:
        """What names a split's content in the new manifest's inputs: a build is deterministic, so its
        inputs fingerprint and the split name stand for its rows (hashing GBs of ids would cost
        what the cache saves)."""
        return hashlib.sha256(f"{self.manifest.get('inputs_fingerprint')}:{split}".encode()).hexdigest()

    def describe(self) -> dict:
        """Its entry in the new manifest's ``source_builds``: the provenance chain."""
        m = self.manifest
        return {"source": self.index, "name": self.config.label, "path": str(self.path), "kind": m.get("kind"),
                "splits": {name: t.num_rows for name, t in self.splits.items()},
                "inputs_fingerprint": m.get("inputs_fingerprint"), "datakit_version": m.get("datakit_version"),
                "tokenizer": {k: m.get("tokenizer", {}).get(k) for k in ("source", "fingerprint")},
                "inputs": [{"path": f.get("path"), "sha256": f.get("sha256")} for f in m.get("inputs", [])],
                "source_builds": m.get("source_builds", [])}


def open_source_builds(recipe: Recipe, *, tokenizer_fingerprint: str, tokenizer_source: str) -> list[SourceBuild]:
    """Open every ``format: build`` source of ``recipe`` (memory-mapped) and check that it can be
    mixed into it. Raises SourceError (one line, naming the source and what disagrees)."""
    from ..inspect_open import open_build

    opened = []
    for i, cfg in enumerate(recipe.sources):
        if not cfg.is_build:
            continue
        path = Path(cfg.path)
        build = open_build(path, load_tokenizer=False)
        splits = build.splits
        if cfg.split is not None:
            if cfg.split not in splits:
                raise SourceError(f"has no split {cfg.split!r} (splits: {', '.join(splits)})", file=cfg.path)
            splits = {cfg.split: splits[cfg.split]}
        source = SourceBuild(i, cfg, path, build.manifest, splits)
        _check(source, recipe, fingerprint=tokenizer_fingerprint, tokenizer=tokenizer_source)
        source.groups = {name: _groups(path, name, t.num_rows) for name, t in splits.items()}
        opened.append(source)
    return opened


def _check(source: SourceBuild, recipe: Recipe, *, fingerprint: str, tokenizer: str) -> None:
    where = f"sources[{source.index}] ({source.path})"
    theirs = source.manifest.get("tokenizer", {})
    if theirs.get("fingerprint") != fingerprint:
        raise SourceError(f"{where}: was tokenized by {theirs.get('source')} (fingerprint "
                          f"{str(theirs.get('fingerprint'))[:12]}), the recipe's tokenizer is {tokenizer} "
                          f"({fingerprint[:12]}); a build source must use the recipe's tokenizer")
    for name, table in source.splits.items():
        if "seq_lens" in table.column_names or "position_ids" in table.column_names:
            raise SourceError(f"{where}: split {name} holds packed rows (seq_lens); a build source must be "
                              f"unpacked: build it without `pack`, and pack in this recipe (after the split)")
        missing = [c for c in MODEL_COLUMNS if c not in table.column_names]
        if missing:
            raise SourceError(f"{where}: split {name} lacks the column(s) {', '.join(missing)}")
    pack = recipe.step("pack")
    if pack is None:
        return
    longest = source.manifest.get("lengths", {}).get("max", 0)
    if recipe.is_sft and longest > pack.block_size:
        raise SourceError(f"{where}: has rows of up to {longest} tokens, more than pack.block_size "
                          f"{pack.block_size}; a pack holds whole rows (build the source with cutoff_len "
                          f"<= {pack.block_size})")
    if not recipe.is_sft and any(not s.is_build for s in recipe.sources):
        theirs_block = _block_size(source.manifest)
        if theirs_block is not None and theirs_block != pack.block_size:
            raise SourceError(f"{where}: holds blocks of {theirs_block} tokens, this recipe packs its text "
                              f"sources into blocks of {pack.block_size}; use one block_size")


def _block_size(manifest: dict) -> int | None:
    for step in manifest.get("recipe", {}).get("transforms", []):
        if "pack" in step:
            return (step["pack"] or {}).get("block_size")
    return None


def _groups(path: Path, split: str, n_rows: int) -> np.ndarray | None:
    """The split groups the source build's plan gave its rows (its provenance file), or None."""
    from ..writers.provenance import read_groups

    return read_groups(path, split, n_rows)


def read_builds(sources: list[SourceBuild], *, first_row: int) -> Iterator[pa.RecordBatch]:
    """The rows of every source build, with the provenance columns: ``_where`` (``build/a/train:
    row N``), ``_source``, ``_group`` (numbered from ``first_row``, so no group of another source
    is reused; rows that shared a group in the source build share one here) and ``_held`` (1:
    the row was held out of training in its source build)."""
    for source in sources:
        base = first_row
        for name, table in source.splits.items():
            groups = source.groups.get(name)
            if groups is None:
                groups = np.arange(table.num_rows, dtype=np.int64)
            dense = _dense(groups)
            held = np.int8(name != TRAIN)
            for start in range(0, table.num_rows, CHUNK_ROWS):
                chunk = table.slice(start, CHUNK_ROWS)
                n = chunk.num_rows
                where = pa.array([f"{source.where(name)}: row {r}" for r in range(start, start + n)], pa.string())
                cols = {c: chunk.column(c).combine_chunks().cast(pa.list_(t)) for c, t in MODEL_COLUMNS.items()}
                cols.update({
                    "_where": where,
                    "_source": numeric_array(np.full(n, source.index, np.int32), pa.int32()),
                    "_group": numeric_array(base + dense[start:start + n], pa.int64()),
                    "_held": pa.array(np.full(n, held, np.int8), pa.int8())})
                yield pa.RecordBatch.from_pydict(cols)
            base += int(dense.max()) + 1 if len(dense) else 0
        first_row = base


def _dense(groups: np.ndarray) -> np.ndarray:
    """Group ids renumbered 0, 1, ... in order of first appearance."""
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


__all__ = ["SourceBuild", "open_source_builds", "read_builds"]
