"""Parts of a split written by several workers, moved into one output layout per format.

Each write task wrote its part of a split with the format's own sink into a folder of its own
(``.parts/{split}-{K}``); ``ASSEMBLE[format](folder, split, parts, files)`` moves the parts' files
into the build folder in part order, numbers them as one split and writes the format's index.
``files[k]`` is what part ``k``'s writer recorded (``FileEntry``, relative to the part folder);
the result is the split's entries relative to the build folder. Only renames and small index
files: no row is read again.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..writers.files import FileEntry, file_entry


def _data_files(files: list[FileEntry], suffix: str) -> list[FileEntry]:
    return [f for f in files if f["path"].endswith(suffix)]


def assemble_hf(folder: Path, split: str, parts: list[Path], files: list[list[FileEntry]]) -> list[FileEntry]:
    """``{split}/data-0000K-of-0000M.arrow``, one per part, listed in the split's ``state.json``
    as ``datasets.save_to_disk`` lists a sharded split."""
    target = folder / split
    target.mkdir(parents=True)
    names, entries = [], []
    for k, (part, recorded) in enumerate(zip(parts, files)):
        (data,) = _data_files(recorded, ".arrow")
        name = f"data-{k:05d}-of-{len(parts):05d}.arrow"
        (part / data["path"]).rename(target / name)
        names.append({"filename": name})
        entries.append(file_entry(target / name, root=folder, format="hf", split=split, rows=data["rows"]))
    shutil.copyfile(parts[0] / split / "dataset_info.json", target / "dataset_info.json")
    state = json.loads((parts[0] / split / "state.json").read_text())
    state["_data_files"] = names
    (target / "state.json").write_text(json.dumps(state, indent=2))
    return entries + [file_entry(target / n, root=folder, format="hf", split=split, rows=None)
                      for n in ("dataset_info.json", "state.json")]


def assemble_parquet(folder: Path, split: str, parts: list[Path], files: list[list[FileEntry]]) -> list[FileEntry]:
    """``parquet/{split}/{split}-0000K-of-0000N.parquet`` numbered across the parts (a part's
    empty shard is dropped unless the split has no rows at all) and the split's ``_manifest.json``."""
    from ..writers.parquet import SHARD_MANIFEST

    shards = [(part, f) for part, recorded in zip(parts, files) for f in _data_files(recorded, ".parquet")]
    if any(f["rows"] for _, f in shards):
        shards = [(part, f) for part, f in shards if f["rows"]]
    else:
        shards = shards[:1]
    target = folder / "parquet" / split
    target.mkdir(parents=True)
    entries = []
    for k, (part, f) in enumerate(shards):
        final = target / f"{split}-{k:05d}-of-{len(shards):05d}.parquet"
        (part / f["path"]).rename(final)
        entries.append(file_entry(final, root=folder, format="parquet", split=split, rows=f["rows"]))
    manifest = json.loads((parts[0] / "parquet" / split / SHARD_MANIFEST).read_text())
    manifest["rows"] = sum(e["rows"] for e in entries)
    manifest["files"] = [{"path": Path(e["path"]).name, "rows": e["rows"], "bytes": e["bytes"]} for e in entries]
    if any(f["rows"] for f in entries):  # the schema of a part with rows (an empty part has the default)
        first = next(part for part, f in zip(parts, files) if any(e["rows"] for e in _data_files(f, ".parquet")))
        manifest["schema"] = json.loads((first / "parquet" / split / SHARD_MANIFEST).read_text())["schema"]
    (target / SHARD_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return entries + [file_entry(target / SHARD_MANIFEST, root=folder, format="parquet", split=split, rows=None)]


def assemble_mds(folder: Path, split: str, parts: list[Path], files: list[list[FileEntry]]) -> list[FileEntry]:
    """``mds/{split}/shard.0000K.mds`` numbered across the parts and one ``index.json`` listing them."""
    target = folder / "mds" / split
    target.mkdir(parents=True)
    shards, entries = [], []
    for part in parts:
        for shard in json.loads((part / "mds" / split / "index.json").read_text())["shards"]:
            name = f"shard.{len(shards):05d}.mds"
            (part / "mds" / split / shard["raw_data"]["basename"]).rename(target / name)
            shard["raw_data"]["basename"] = name
            shards.append(shard)
            entries.append(file_entry(target / name, root=folder, format="mds", split=split, rows=shard["samples"]))
    (target / "index.json").write_text(json.dumps({"version": 2, "shards": shards}, sort_keys=True))
    return entries + [file_entry(target / "index.json", root=folder, format="mds", split=split, rows=None)]


ASSEMBLE = {"hf": assemble_hf, "parquet": assemble_parquet, "mds": assemble_mds}
