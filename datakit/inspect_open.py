"""Opening a built folder for ``inspect``: its manifest, its splits (memory-mapped Arrow, or the
Parquet shards of a build written without the hf layout) and the tokenizer the manifest names.

Opening maps the Arrow files without reading them, so showing one row of a million-row build
reads that row only. A tokenizer that cannot be found leaves ids shown as they are.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from .columns import IGNORE_INDEX
from .errors import BuildNotFoundError, DatakitError, InspectError
from .pieces import Piece, pieces
from .writers.manifest import read_manifest


@dataclass
class Build:
    path: Path
    manifest: dict
    splits: dict[str, pa.Table]
    tokenizer: object | None = None
    tokenizer_error: str | None = None
    _byte_level: bool = field(default=False, repr=False)

    def table(self, split: str) -> pa.Table:
        if split not in self.splits:
            raise InspectError(f"{self.path}: no split '{split}' (splits: {', '.join(self.splits)})")
        return self.splits[split]

    def row(self, split: str, index: int) -> dict:
        t = self.table(split)
        if not 0 <= index < t.num_rows:
            raise InspectError(f"{self.path}: row {index} is out of range for split '{split}' "
                               f"({t.num_rows} rows: 0..{t.num_rows - 1})")
        one = t.slice(index, 1)
        return {name: one.column(name)[0].values.to_numpy(zero_copy_only=False) for name in one.column_names}

    def pieces(self, row: dict) -> list[Piece]:
        tok = self.tokenizer
        if tok is None:
            return [Piece(f"#{int(i)}", [k], [int(i)], trained=int(l) != IGNORE_INDEX, padding=not a)
                    for k, (i, l, a) in enumerate(zip(row["input_ids"], row["labels"], row["attention_mask"]))]
        return pieces(row["input_ids"], row["labels"], row["attention_mask"], id_to_piece=tok.id_to_piece,
                      special_ids=tok.special_ids(), byte_level=self._byte_level)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids) if self.tokenizer else " ".join(map(str, ids))


def open_build(path: str | Path, *, load_tokenizer: bool = True) -> Build:
    """Open the build at ``path`` (its Arrow files memory-mapped).

    Raises:
        BuildNotFoundError: ``path`` is not a build, or a file of it is missing, truncated or corrupt.
    """
    p = Path(path)
    if not p.is_dir():
        raise BuildNotFoundError(f"{p}: no such folder" if not p.exists() else f"{p} is a file, not a build folder")
    manifest = read_manifest(p)
    for key in ("tokenizer", "splits", "counts"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise BuildNotFoundError(f"{p / 'manifest.json'}: '{key}' is not an object; the build is damaged, "
                                     f"rebuild it")
    if not (p / "dataset_dict.json").exists() and (p / "parquet").is_dir():  # output.formats without hf
        splits = {name: _read_parquet_split(p / "parquet" / str(name)) for name in manifest.get("splits", {})}
    elif not (p / "dataset_dict.json").exists() and "hf" not in manifest.get("formats", {"hf": {}}):
        raise DatakitError(f"{p} holds {', '.join(manifest['formats'])}; datakit inspect reads the hf or "
                           f"parquet layout (add one to output.formats)")
    else:
        splits = {name: _read_split(p, name) for name in _json_file(p / "dataset_dict.json", "splits")}
    build = Build(p, manifest, splits)
    if load_tokenizer:
        _attach_tokenizer(build)
    return build


def _json_file(path: Path, key: str):
    """``key`` of the JSON object in ``path``, or one line saying what is wrong with the file."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BuildNotFoundError(f"{path}: missing; {path.parent} is not a complete build") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BuildNotFoundError(f"{path}: not valid JSON ({e}); the build is damaged, rebuild it") from None
    if not isinstance(data, dict) or key not in data:
        raise BuildNotFoundError(f"{path}: no '{key}' key; the build is damaged, rebuild it")
    return data[key]


def _read_split(folder: Path, name: str) -> pa.Table:
    tables = []
    for entry in _json_file(folder / str(name) / "state.json", "_data_files"):
        file = folder / str(name) / str(entry.get("filename") if isinstance(entry, dict) else entry)
        try:
            tables.append(pa.ipc.open_stream(pa.memory_map(str(file))).read_all())
        except FileNotFoundError:
            raise BuildNotFoundError(f"{file}: missing; the build is damaged, rebuild it") from None
        except (pa.ArrowInvalid, OSError) as e:
            raise BuildNotFoundError(f"{file}: not a readable Arrow stream (truncated or corrupt: "
                               f"{str(e).splitlines()[0]}); rebuild it") from None
    if not tables:
        raise BuildNotFoundError(f"{folder / str(name) / 'state.json'}: lists no data files; rebuild the build")
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _read_parquet_split(folder: Path) -> pa.Table:
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise DatakitError(f"{folder}: no Parquet files; the build is damaged, rebuild it")
    return pa.concat_tables([pq.read_table(f) for f in files])


def _attach_tokenizer(build: Build) -> None:
    from .tokenization import HFTokenizer, load_tokenizer

    info = build.manifest.get("tokenizer")
    source = info.get("source") if isinstance(info, dict) else None
    if not isinstance(source, str):
        build.tokenizer_error = "the manifest names no tokenizer"
        return
    try:
        build.tokenizer = load_tokenizer(source, trust_remote_code=False)  # a manifest never runs code
    except DatakitError as e:
        build.tokenizer_error = str(e)
        return
    if isinstance(build.tokenizer, HFTokenizer):
        data = json.loads(build.tokenizer.backend.to_str())
        kinds = json.dumps([data.get("decoder"), data.get("pre_tokenizer")])
        build._byte_level = '"ByteLevel"' in kinds
    fp = build.manifest["tokenizer"].get("fingerprint")
    if fp and build.tokenizer.fingerprint != fp:
        build.tokenizer_error = (f"tokenizer files at {source} changed since the build (fingerprint differs); "
                                 f"pieces may not match the ids")
