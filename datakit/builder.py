"""``build``: a recipe through the stages (``stages.py``) into a staged output folder.

read -> steps -> spill (an engine, ``engines/``) -> plan (``plan.py``) -> write (``writers/``)
-> manifest (``writers/manifest.py``). The output folder appears whole or not at all.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .cache import Cache, parse_size
from .engines import Engine, LocalEngine, make_engine
from .errors import EmptyBuildError, OutputError
from .plan import group_merges, plan_splits
from .progress import Progress
from .recipe import Recipe, from_dict, load_recipe, to_dict
from .sources import input_bytes
from .sources.build import SourceBuild, open_source_builds
from .stages import spill_builds
from .tokenization import Tokenizer, load_tokenizer
from .transforms import Step, opened_steps
from .writers import DOCUMENT_FORMATS, WriteContext, make_writers, staged_output
from .writers.documents import tap_documents, write_documents
from .writers.spill import SpillWriter
from .writers.manifest import assemble, inputs_fingerprint, load, nest_counts, write_manifest
from .writers.target import check_build_paths


@dataclass
class BuildResult:
    path: Path
    manifest: dict
    seconds: float


def run_build(recipe: Recipe | dict | str | Path, *, output: str | Path | None = None, overwrite: bool = False,
              silent: bool = False, engine: Engine | str | None = None, cache: bool = True,
              cache_dir: str | Path | None = None, cache_size: int | str | None = None) -> BuildResult:
    """Build ``recipe`` into its output folder (or ``output``) and return where and what was written.
    ``engine`` is ``"local"`` (the default), ``"ray"`` or an engine object (``engines/``).

    The local engine reuses tokenized sources from the cache (``datakit.cache``) in ``cache_dir``
    (default: the user's cache folder), keeping it under ``cache_size`` bytes; ``cache=False``
    neither reads nor writes it."""
    t0 = time.time()
    if cache and engine in (None, "local"):
        engine = LocalEngine(cache=Cache(cache_dir, max_bytes=None if cache_size is None else parse_size(cache_size)))
    engine = make_engine(engine)
    recipe = _as_recipe(recipe)
    if output is not None and not str(output).strip():
        raise OutputError("output is an empty path; name a folder, or leave it out to use the recipe's output")
    target = Path(output if output is not None else recipe.output)
    protect = check_build_paths(recipe, target, overwrite=overwrite)  # before any work
    # the steps close (a filter's rejects file goes into place) before the output is swapped in
    try:
        # a cluster engine connects first: Ray starts the build's worker processes (~1 s) while this
        # process loads the tokenizer and opens the steps
        getattr(engine, "connect", lambda: None)()
        tokenizer = load_tokenizer(recipe.tokenizer, trust_remote_code=recipe.trust_remote_code)
        built = open_source_builds(recipe, tokenizer_fingerprint=tokenizer.fingerprint,
                                   tokenizer_source=tokenizer.source)
        with staged_output(target, overwrite=overwrite, protect=protect) as folder, \
                opened_steps(recipe, tokenizer) as steps:
            manifest = _build_into(folder, recipe, tokenizer, steps, engine=engine, built=built, silent=silent)
    finally:
        getattr(engine, "close", lambda: None)()  # a cluster the engine started for the build
    return BuildResult(path=target, manifest=manifest, seconds=time.time() - t0)


def _as_recipe(recipe: Recipe | dict | str | Path) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return from_dict(recipe, base_dir=Path.cwd())
    return load_recipe(recipe)


def _build_into(folder: Path, recipe: Recipe, tokenizer: Tokenizer, steps: list[Step], *, engine: Engine,
                built: list[SourceBuild], silent: bool) -> dict:
    """Run the stages into the staging ``folder``; returns the manifest written there. The rows of
    the build sources (``built``) join the engine's in the spill, past every step before it."""
    progress = Progress(total=input_bytes(recipe.sources), silent=silent, sft=recipe.is_sft)
    rows = engine.rows(folder / ".spill")
    split_steps = [s for s in steps if s.scope == "split"]
    row_steps = [s for s in steps if s.scope != "split"]
    documents = None  # the documents before `pack`, for the formats that want them
    if DOCUMENT_FORMATS & set(recipe.output_options.formats):
        documents = SpillWriter(folder / ".documents")
        row_steps = tap_documents(row_steps, documents)
    try:
        produced = engine.run(recipe, row_steps, rows, progress=progress)  # read -> steps -> spill
        if built:
            spill_builds(built, rows, files=produced.files, counts=produced.counts)
    finally:
        rows.close()
        if documents is not None:
            documents.close()
        progress.close()
    counts = produced.counts
    for step in steps:
        counts.merge(step.stats)
    if rows.rows == 0:
        raise EmptyBuildError("the build produced no rows: every document or row was dropped "
                           f"({json.dumps(nest_counts(counts))})")
    plan = plan_splits(recipe, rows, merges=group_merges(steps))
    if "train" in plan.splits and len(plan.splits["train"]) == 0:
        kept = sum(len(idx) for idx in plan.splits.values())
        others = "".join(f", {len(idx)} in {name}" for name, idx in plan.splits.items() if name != "train")
        raise EmptyBuildError(f"the train split has no rows: of {rows.rows} rows, the sources' weight and repeat "
                              f"kept {kept}{others}; raise weight or repeat, or lower split.val_set_size")
    inputs = [{"path": f.path, "bytes": f.bytes, "records": f.records, "sha256": f.sha256} for f in produced.files]
    fingerprint = inputs_fingerprint(recipe=to_dict(recipe), tokenizer=tokenizer.fingerprint, inputs=inputs)
    bar = progress.writing(sum(len(idx) for idx in plan.splits.values()))
    context = WriteContext(fingerprint=fingerprint, sft=recipe.is_sft, options=recipe.output_options,
                           vocab_size=tokenizer.vocab_size, eos_id=tokenizer.eos_id)
    writers = make_writers(recipe.output_options.formats, context=context)
    split_seconds = [0.0] * len(split_steps)
    splits = engine.write(plan, rows, folder, writers=[w for w in writers if not w.documents],
                          split_steps=split_steps, seconds=split_seconds,
                          on_rows=bar.update if bar else (lambda n: None))
    if bar:
        bar.close()
    traced = {name: split.pop("provenance") for name, split in splits.items() if "provenance" in split}
    if documents is not None:
        write_documents(recipe, documents, folder, writers=[w for w in writers if w.documents])
        shutil.rmtree(documents.folder)
    lengths = rows.lengths
    shutil.rmtree(rows.folder)
    manifest = assemble(
        kind="sft" if recipe.is_sft else "pretrain", recipe=to_dict(recipe), tokenizer=tokenizer.describe(),
        inputs=inputs, fingerprint=fingerprint, counts=counts, splits=splits, sources=plan.sources,
        lengths=lengths,
        timings=_timings(recipe, steps, {**dict(zip(row_steps, produced.seconds)),
                                         **dict(zip(split_steps, split_seconds))}))
    if traced:  # where every row came from: provenance/{split}.parquet (writers/provenance.py)
        manifest["provenance"] = traced
    if built:  # the provenance chain: each source build, its fingerprint, its own inputs and source builds
        manifest["source_builds"] = [b.describe() for b in built]
    if produced.cache is not None:
        manifest["cache"] = {"sources": produced.cache}
    # per format: every file it wrote (path, split, rows, bytes) and what it counted
    manifest["formats"] = {w.name: {**dict(sorted(w.stats.items())),
                                    "files": sorted(w.files, key=lambda f: f["path"])} for w in writers}
    if hasattr(engine, "describe"):
        manifest["engine"] = engine.describe()
    write_manifest(folder, manifest)
    return manifest


def _timings(recipe: Recipe, steps: list[Step], seconds: dict[Step, float]) -> dict[str, float]:
    """Seconds spent inside each step (by its recipe name), summed over the threads that ran it."""
    return {cfg.name: seconds[step] for cfg, step in zip(recipe.transforms, steps)}


def build(recipe: Recipe | dict | str | Path, *, output: str | Path | None = None, overwrite: bool = False,
          silent: bool = True):
    """Build ``recipe`` (a YAML path, a parsed dict or a Recipe) and return the ``datasets.DatasetDict``
    of its ``hf`` layout (``run_build`` builds recipes without it).

    Example:
        >>> ds = datakit.build("recipes/pretrain.yaml", overwrite=True)
        >>> ds["train"][0]["input_ids"][:8]
    """
    recipe = _as_recipe(recipe)
    if "hf" not in recipe.output_options.formats:
        raise OutputError("datakit.build returns the hf layout, which output.formats does not list; "
                          "add hf, or call datakit.run_build")
    result = run_build(recipe, output=output, overwrite=overwrite, silent=silent)
    return load(result.path)
