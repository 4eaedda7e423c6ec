"""The Ray engine gives the local engine's build: the same rows in the same order, the same counts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import datakit
from datakit.builder import run_build
from datakit.cli import cli
from datakit.engines import make_engine
from datakit.errors import DatakitError, SourceError
from datakit.recipe import from_dict

ROOT = Path(__file__).resolve().parents[2]
ray = pytest.importorskip("ray", reason="the ray engine's tests need Ray Data (pip install 'datakit[ray]')")


def example(name: str, tmp_path: Path) -> dict:
    """An example recipe with its paths made absolute and its side files kept in ``tmp_path``."""
    data = yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())
    base = ROOT / "recipes"
    data["tokenizer"] = str((base / data["tokenizer"]).resolve())
    for src in data["sources"]:
        src["path"] = str((base / src["path"]).resolve())
    for step in data["transforms"]:
        if "filter" in step and "rejects" in step["filter"]:
            step["filter"]["rejects"] = str(tmp_path / f"{name}-rejects.jsonl")
    return data


def rows_of(path: Path) -> dict:
    ds = datakit.load(path)
    return {split: {c: ds[split][c] for c in ds[split].column_names} for split in ds}


def provenance_of(build: Path) -> dict:
    """Each split's provenance file as rows (``writers/provenance.py``)."""
    import pyarrow.parquet as pq

    return {p.stem: pq.read_table(p).to_pylist() for p in sorted((build / "provenance").glob("*.parquet"))}


def same_build(a: Path, b: Path) -> None:
    """The same rows in the same order, the same counts, and where every row came from."""
    assert rows_of(a) == rows_of(b)
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    for key in ("counts", "splits", "sources", "inputs", "inputs_fingerprint", "lengths"):
        assert ma[key] == mb[key], key
    assert provenance_of(a) == provenance_of(b)
    assert sorted(ma.get("provenance", {})) == sorted(mb.get("provenance", {})) == sorted(ma["splits"])
    for split, entry in ma["provenance"].items():
        assert {k: v for k, v in entry.items() if k != "bytes"} == \
            {k: v for k, v in mb["provenance"][split].items() if k != "bytes"}


@pytest.mark.parametrize("name", ["pretrain", "alpaca", "chat", "mix", "alpaca+pack", "mix+group", "pretrain+isolate"])
def test_example_recipes_build_as_locally(cluster, tmp_path, name):
    name, _, variant = name.partition("+")
    data = example(name, tmp_path)
    if variant == "pack":  # instruction rows packed best-fit after the split
        data["transforms"].append({"pack": {"block_size": 512, "strategy": "bfd"}})
    if variant == "isolate":  # position_ids and seq_lens per document inside each block
        data["transforms"][1]["pack"]["isolate_documents"] = True
    if variant == "group":  # near duplicates kept, in the split group of what they duplicate
        data["transforms"][0]["dedup"]["action"] = "group"
    recipe = from_dict(data, base_dir=tmp_path)
    run_build(recipe, output=tmp_path / "local", silent=True)
    rejects = sorted(tmp_path.glob("*-rejects.jsonl"))
    local_rejects = [p.read_bytes() for p in rejects]
    # byte ranges of ~1 KB: the JSON Lines inputs are read by several tasks
    run_build(recipe, output=tmp_path / "ray", silent=True, engine=make_engine("ray", shard_bytes=1024))
    same_build(tmp_path / "local", tmp_path / "ray")
    assert [p.read_bytes() for p in rejects] == local_rejects


def _parquet_rows(build: Path) -> dict:
    import pyarrow.parquet as pq

    return {split.name: [row for f in sorted(split.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]
            for split in sorted((build / "parquet").iterdir())}


def _mds_rows(build: Path) -> dict:
    from tests.writers.mds_spec import read_split

    def plain(sample):
        return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in sample.items()}

    return {split.name: [plain(s) for s in read_split(split)] for split in sorted((build / "mds").iterdir())}


@pytest.mark.parametrize("name, formats, pad", [("pretrain", ["hf", "parquet", "mds", "megatron"], True),
                                                ("pretrain+isolate", ["hf", "megatron"], True),
                                                ("alpaca", ["hf", "parquet", "mds"], True),
                                                ("alpaca_packed", ["hf", "parquet"], True),
                                                ("alpaca_packed", ["hf"], False)])
def test_formats_and_packs_written_by_workers_as_locally(cluster, tmp_path, monkeypatch, name, formats, pad):
    """Workers write parts of every split (hf, parquet, mds; instruction rows packed best-fit from
    a plan made on the driver); the parts hold the local build's rows in its order."""
    from datakit.engines import ray_write

    name, _, variant = name.partition("+")
    data = example(name, tmp_path)
    if variant == "isolate":
        data["transforms"][1]["pack"]["isolate_documents"] = True
    data["output"] = {"path": str(tmp_path / "out"), "formats": formats, "parquet": {"shard_size": "16KB"}}
    if not pad:  # packs of their tokens only (TRL's padding-free layout)
        data["transforms"][-1]["pack"]["pad_to_block_size"] = False
    recipe = from_dict(data, base_dir=tmp_path)
    run_build(recipe, output=tmp_path / "local", silent=True)
    monkeypatch.setattr(ray_write, "PART_TOKENS", 1000)  # several parts per split
    run_build(recipe, output=tmp_path / "ray", silent=True, engine=make_engine("ray", shard_bytes=1024))
    same_build(tmp_path / "local", tmp_path / "ray")
    assert len(list((tmp_path / "ray" / "train").glob("data-*.arrow"))) > 1
    if "parquet" in formats:
        assert _parquet_rows(tmp_path / "ray") == _parquet_rows(tmp_path / "local")
    if "mds" in formats:
        assert _mds_rows(tmp_path / "ray") == _mds_rows(tmp_path / "local")
    if "megatron" in formats:  # the documents before pack, split as locally: the same .bin/.idx bytes
        megatron = sorted((tmp_path / "local" / "megatron").iterdir())
        assert megatron and [p.name for p in megatron] == sorted(p.name for p in (tmp_path / "ray" / "megatron").iterdir())
        assert all(p.read_bytes() == (tmp_path / "ray" / "megatron" / p.name).read_bytes() for p in megatron)
    local, remote = (json.loads((tmp_path / b / "manifest.json").read_text()) for b in ("local", "ray"))
    for fmt in formats:
        counts = {k: v for k, v in remote["formats"][fmt].items() if k != "files"}
        assert counts == {k: v for k, v in local["formats"][fmt].items() if k != "files"}
        files = remote["formats"][fmt]["files"]
        assert all((tmp_path / "ray" / f["path"]).stat().st_size == f["bytes"] for f in files)
        for split in local["splits"]:  # the files of a split hold its rows (mds: its samples)
            per_format = [f["rows"] for f in files if f["split"] == split and f["rows"] is not None]
            assert sum(per_format) == sum(f["rows"] for f in local["formats"][fmt]["files"]
                                          if f["split"] == split and f["rows"] is not None)
    assert not any(p.name == ".parts" for p in (tmp_path / "ray").rglob("*"))


def _jsonl(path: Path, n: int, *, bad: int | None = None) -> None:
    with open(path, "w") as f:
        for i in range(1, n + 1):
            f.write("{not json\n" if i == bad else json.dumps(
                {"instruction": f"Say {i} in words, please.", "input": "", "output": f"{i} is a number."}) + "\n")


def _sft(tmp_path: Path, data: Path, **split) -> dict:
    return {"tokenizer": str(ROOT / "examples" / "tokenizer"), "sources": [{"path": str(data), "format": "alpaca"}],
            "transforms": [{"dedup": {"mode": "exact"}}, {"template": "alpaca"}, {"tokenize": {"cutoff_len": 256}}],
            "split": {"val_set_size": 0.1, "seed": 7, **split}, "output": str(tmp_path / "out")}


def test_an_error_on_a_worker_is_the_local_line(cluster, tmp_path):
    data = tmp_path / "rows.jsonl"
    _jsonl(data, 400, bad=333)
    recipe = from_dict(_sft(tmp_path, data), base_dir=tmp_path)
    with pytest.raises(SourceError) as local:
        run_build(recipe, output=tmp_path / "a", silent=True)
    with pytest.raises(SourceError) as remote:
        run_build(recipe, output=tmp_path / "b", silent=True, engine=make_engine("ray", shard_bytes=2048))
    assert str(remote.value) == str(local.value)
    assert f"{data}:333:" in str(remote.value)
    assert not (tmp_path / "b").exists()


def test_split_files_written_by_several_workers(cluster, tmp_path, monkeypatch):
    from datakit.engines import ray_write

    data = tmp_path / "rows.jsonl"
    _jsonl(data, 3000)
    with open(data, "a") as f:  # exact duplicates, found across shards by the hash partition
        for i in (5, 1500, 2999):
            f.write(json.dumps({"instruction": f"Say {i} in words, please.", "input": "",
                                "output": f"{i} is a number."}) + "\n")
    recipe = from_dict(_sft(tmp_path, data), base_dir=tmp_path)
    run_build(recipe, output=tmp_path / "local", silent=True)
    monkeypatch.setattr(ray_write, "PART_TOKENS", 20_000)
    run_build(recipe, output=tmp_path / "ray", silent=True, engine=make_engine("ray", shard_bytes=16_384))
    same_build(tmp_path / "local", tmp_path / "ray")
    files = sorted(p.name for p in (tmp_path / "ray" / "train").glob("data-*.arrow"))
    assert len(files) > 1 and files[-1].endswith(f"-of-{len(files):05d}.arrow")
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["counts"]["rows_dropped"]["exact_duplicate"] == 3


def test_build_sources_as_locally(cluster, hf_tokenizer, tmp_path):
    """A build as a source (format: build) beside a JSON Lines source cut in ranges: the driver
    adds the build's rows after the workers' ones, held-out rows stay in validation."""
    data = tmp_path / "rows.jsonl"
    _jsonl(data, 300)
    first = _sft(tmp_path, data)
    first["tokenizer"] = str(hf_tokenizer)
    run_build(from_dict(first, base_dir=tmp_path), output=tmp_path / "a", silent=True)
    recipe = {**first, "sources": [{"path": str(tmp_path / "a"), "format": "build"},
                                   {"path": str(data), "format": "alpaca"}]}
    recipe = from_dict(recipe, base_dir=tmp_path)
    run_build(recipe, output=tmp_path / "local", silent=True)
    run_build(recipe, output=tmp_path / "ray", silent=True, engine=make_engine("ray", shard_bytes=4096))
    same_build(tmp_path / "local", tmp_path / "ray")
    alone = from_dict({**first, "sources": [{"path": str(tmp_path / "a"), "format": "build"}], "transforms": []},
                      base_dir=tmp_path)
    run_build(alone, output=tmp_path / "local-alone", silent=True)
    run_build(alone, output=tmp_path / "ray-alone", silent=True, engine=make_engine("ray"))
    same_build(tmp_path / "local-alone", tmp_path / "ray-alone")


def test_without_ray_one_line_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and (name == "ray" or name.startswith("ray.")):
            raise ImportError(f"No module named {name!r}")
        return real(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(DatakitError, match=r"pip install 'datakit\[ray\]'"):
        make_engine("ray")
    result = CliRunner().invoke(cli, ["build", str(ROOT / "recipes" / "alpaca.yaml"), "-o", str(tmp_path / "o"),
                                      "--engine", "ray", "--silent"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: the ray engine needs Ray Data: pip install 'datakit[ray]'"]
    assert not (tmp_path / "o").exists()
