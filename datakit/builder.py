"""``build``: recipe -> sources -> steps -> spill -> split -> save_to_disk folder + manifest.json."""
from __future__ import annotations

import gc
import json
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .errors import DatakitError
from .executor import run_chain
from .mixing import mix, split_groups
from .progress import Progress
from .recipe import Recipe, from_dict, load_recipe, to_dict
from .sources import FileInfo, expand, read_source
from .split import split_indices
from .tokenization import load_tokenizer
from .transforms import make_steps
from .writers import SpillWriter, staged_output, write_dataset_dict, write_split
from .writers.atomic import MANIFEST


@dataclass
class BuildResult:
    path: Path
    manifest: dict
    seconds: float


def _nest(counts: Counter) -> dict:
    out: dict = {}
    for key in sorted(counts):
        value = int(counts[key])
        if "." in key:
            head, tail = key.split(".", 1)
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    for key in ("tokens_dropped", "rows_dropped"):
        out.setdefault(key, {})
    return out


def _input_bytes(recipe: Recipe) -> int:
    total = 0
    for s in recipe.sources:
        for p in expand(s.path):
            total += p.stat().st_size if p.is_file() else sum(
                f.stat().st_size for f in p.rglob("*.arrow"))
    return total


def run_build(recipe: Recipe | dict | str | Path, *, output: str | Path | None = None, overwrite: bool = False,
              silent: bool = False) -> BuildResult:
    """Build ``recipe`` into its output folder (or ``output``) and return where and what was written."""
    with _no_cyclic_gc():
        return _build(recipe, output=output, overwrite=overwrite, silent=silent)


@contextmanager
def _no_cyclic_gc():
    """A build makes millions of short-lived lists and dicts and almost no reference cycles (a
    few hundred objects a build), so Python's cyclic collector, which runs every 700 new
    containers and rescans the live ones, only costs time (~4% of a build). It is off while the
    build runs and back on, as it was, afterwards; reference counting frees everything else."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build(recipe, *, output, overwrite, silent) -> BuildResult:
    t0 = time.time()
    if isinstance(recipe, dict):
        recipe = from_dict(recipe, base_dir=Path.cwd())
    elif not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    target = Path(output or recipe.output)
    tokenizer = load_tokenizer(recipe.tokenizer)
    steps = make_steps(recipe, tokenizer)
    progress = Progress(total=_input_bytes(recipe), silent=silent, sft=recipe.is_sft)
    files: list[FileInfo] = []
    try:
        result = _run(recipe, target, steps, tokenizer, progress, files, overwrite=overwrite)
    except BaseException:
        _close(steps, ok=False)
        raise
    _close(steps, ok=True)
    return BuildResult(path=target, manifest=result, seconds=time.time() - t0)


def _close(steps, *, ok: bool) -> None:
    for step in steps:
        if hasattr(step, "close"):
            step.close(ok=ok)


def _run(recipe, target, steps, tokenizer, progress, files, *, overwrite) -> dict:
    with staged_output(target, overwrite=overwrite) as stage:
        spill = SpillWriter(stage / ".spill")
        try:
            def batches():
                first_row = 0
                for i, src in enumerate(recipe.sources):
                    for batch in read_source(src, files=files, index=i, first_row=first_row,
                                             on_bytes=progress.advance):
                        first_row += batch.num_rows
                        yield batch

            split_at = next((i for i, c in enumerate(recipe.transforms) if c.name == "tokenize"), None)
            for out in run_chain(batches(), steps, split_at=split_at):
                spill.write(out)
                progress.update_counts(steps, rows=spill.rows)
        finally:
            spill.close()
            progress.close()
        counts = Counter()
        for step in steps:
            counts.update(step.stats)
        if spill.rows == 0:
            raise DatakitError("the build produced no rows: every document or row was dropped "
                               f"({json.dumps(_nest(counts))})")
        manifest = _manifest(recipe, tokenizer, files, counts)
        splits, per_source = _plan_splits(recipe, spill)
        manifest["sources"] = per_source
        bar = progress.writing(sum(len(idx) for idx in splits.values()))
        for name, idx in splits.items():
            manifest["splits"][name] = write_split(spill, idx, stage / name,
                                                   fingerprint=manifest["inputs_fingerprint"],
                                                   on_rows=bar.update if bar else (lambda n: None))
        spill.release()
        if bar:
            bar.close()
        write_dataset_dict(stage, list(splits))
        lengths = spill.lengths
        shutil.rmtree(spill.folder)
        manifest["lengths"] = {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 2),
                               "max": int(lengths.max())}
        # seconds spent inside each step, summed over the threads that ran it
        manifest["timings"] = {cfg.name: round(getattr(s, "seconds", 0.0), 3)
                               for cfg, s in zip(recipe.transforms, steps)}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _plan_splits(recipe: Recipe, spill) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Mix the sources (weights, repeats), then split by group; returns spill rows per split and
    what each source contributed."""
    source = spill.meta("source")
    rows = mix(recipe.sources, source, seed=recipe.split.seed)
    groups = split_groups(spill.meta("group"), spill.meta("hash"))[rows]
    splits = {name: rows[idx] for name, idx in split_indices(len(rows), recipe.split, groups=groups).items()}
    lengths = spill.lengths
    per_source = []
    for i, src in enumerate(recipe.sources):
        built = source == i
        entry = {"name": src.label, "rows_built": int(built.sum()), "rows": 0, "tokens": 0}
        for name, idx in splits.items():
            mine = idx[source[idx] == i]
            entry[f"{name}_rows"] = int(len(mine))
            entry["rows"] += int(len(mine))
            entry["tokens"] += int(lengths[mine].sum())
        per_source.append(entry)
    return splits, per_source


def _manifest(recipe: Recipe, tokenizer, files: list[FileInfo], counts: Counter) -> dict:
    import hashlib

    inputs = [{"path": f.path, "bytes": f.bytes, "records": f.records, "sha256": f.sha256} for f in files]
    h = hashlib.sha256(tokenizer.fingerprint.encode())
    for f in inputs:
        h.update(f["sha256"].encode())
    h.update(json.dumps(to_dict(recipe), sort_keys=True, default=str).encode())
    return {
        "datakit_version": __version__,
        "kind": "sft" if recipe.is_sft else "pretrain",
        "recipe": to_dict(recipe),
        "tokenizer": tokenizer.describe(),
        "inputs": inputs,
        "inputs_fingerprint": h.hexdigest(),
        "counts": _nest(counts),
        "splits": {},
    }


def build(recipe: Recipe | dict | str | Path, *, output: str | Path | None = None, overwrite: bool = False,
          silent: bool = True):
    """Build ``recipe`` (a YAML path, a parsed dict or a Recipe) and return the ``datasets.DatasetDict``.

    Example:
        >>> ds = datakit.build("recipes/pretrain.yaml", overwrite=True)
        >>> ds["train"][0]["input_ids"][:8]
    """
    result = run_build(recipe, output=output, overwrite=overwrite, silent=silent)
    return load(result.path)


def load(path: str | Path):
    """Open a built folder as a ``datasets.DatasetDict`` (memory-mapped)."""
    from datasets import load_from_disk

    p = Path(path)
    if not (p / MANIFEST).is_file():
        raise DatakitError(f"{p} is not a datakit build (no {MANIFEST})")
    return load_from_disk(str(p))


def read_manifest(path: str | Path) -> dict:
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise DatakitError(f"{path} is not a datakit build (no {MANIFEST})")
    return json.loads(p.read_text("utf-8"))
