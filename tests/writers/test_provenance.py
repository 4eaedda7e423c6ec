"""Row provenance (``provenance/{split}.parquet``): every output row traced to its input file and
line, checked against the input files read here and re-tokenized with the ``tokenizers`` library."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from datasets import load_from_disk
from tokenizers import Tokenizer as HFTokenizers

from datakit.builder import run_build
from datakit.cli import cli

ROOT = Path(__file__).resolve().parents[2]
ALPACA = json.loads((ROOT / "datakit" / "templates" / "alpaca.json").read_text())
WORDS = "river stone cloud maple quiet lantern harbor copper meadow violet thunder ember".split()


def built(recipe: dict, out: Path, **options) -> dict:
    return run_build(recipe, output=out, overwrite=True, silent=True, **options).manifest


def pieces(build: Path, split: str) -> list[dict]:
    return pq.read_table(build / "provenance" / f"{split}.parquet").to_pylist()


def by_row(build: Path, split: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for p in pieces(build, split):
        out.setdefault(p["row"], []).append(p)
    return out


def jsonl_lines(path: Path) -> dict[int, dict]:
    """The file's records by 1-based line number, read here (blank lines have none)."""
    return {k: json.loads(line) for k, line in enumerate(path.read_text("utf-8").splitlines(), 1) if line.strip()}


@pytest.fixture
def reference(hf_tokenizer):
    tok = HFTokenizers.from_file(str(hf_tokenizer / "tokenizer.json"))
    eos = tok.token_to_id("</s>")
    return tok, eos


@pytest.fixture
def instructions(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(40):
        words = " ".join(rng.choice(WORDS, size=4 + i % 7))
        record = {"instruction": f"Describe {words} number {i}.", "output": f"It is {words}, item {i}."}
        if i % 3 == 0:
            record["input"] = f"context {i}"
        lines.append(json.dumps(record))
        if i % 5 == 0:
            lines.append("")  # blank lines are skipped, but they count in the line numbers
    path = tmp_path / "instructions.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def sft(tokenizer, path: Path, *, transforms=None, val=0.25) -> dict:
    return {"tokenizer": str(tokenizer), "sources": [{"path": str(path), "format": "alpaca"}],
            "transforms": transforms or [{"template": "alpaca"}, {"tokenize": {"cutoff_len": 512}}],
            "split": {"val_set_size": val, "seed": 3}, "output": "unused"}


def alpaca_text(record: dict) -> str:
    prompt = ALPACA["prompt_input"] if record.get("input") else ALPACA["prompt_no_input"]
    return prompt.format(instruction=record["instruction"], input=record.get("input", "")) + record["output"]


def test_instruction_rows_name_their_line(hf_tokenizer, instructions, tmp_path, reference):
    tok, eos = reference
    built(sft(hf_tokenizer, instructions), tmp_path / "b")
    records = jsonl_lines(instructions)
    ds = load_from_disk(str(tmp_path / "b"))
    seen = []
    for split in ("train", "validation"):
        rows = by_row(tmp_path / "b", split)
        assert sorted(rows) == list(range(len(ds[split])))
        for n, row in enumerate(ds[split]):
            (p,) = rows[n]
            assert p["input"] == str(instructions) and p["record"] is None and p["start"] == 0
            expected = tok.encode(alpaca_text(records[p["line"]])).ids + [eos]
            assert row["input_ids"] == expected, (split, n, p["line"])
            seen.append(p["line"])
    assert sorted(seen) == sorted(records)  # every line once


def test_blocks_name_their_document_pieces(hf_tokenizer, tmp_path, reference):
    tok, eos = reference
    rng = np.random.default_rng(1)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 90)))) for _ in range(60)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), "utf-8")
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(path), "format": "text"}],
              "transforms": [{"tokenize": {}}, {"pack": {"block_size": 48, "remainder": "pad"}}],
              "split": {"val_set_size": 0.2, "seed": 2},
              "output": {"path": "unused", "formats": ["hf", "megatron"]}}  # megatron writes documents too
    built(recipe, tmp_path / "p")
    records = jsonl_lines(path)
    ids = {line: tok.encode(r["text"]).ids for line, r in records.items()}
    ids = {line: x + ([eos] if x[-1] != eos else []) for line, x in ids.items()}
    ds = load_from_disk(str(tmp_path / "p"))
    covered = {line: 0 for line in ids}
    for split in ("train", "validation"):
        rows = by_row(tmp_path / "p", split)
        for n, row in enumerate(ds[split]):
            filled = sum(row["attention_mask"])
            starts = [p["start"] for p in rows[n]] + [filled]
            assert starts[0] == 0 and starts == sorted(starts)
            for p, end in zip(rows[n], starts[1:]):
                doc = ids[p["line"]]
                assert row["input_ids"][p["start"]:end] == doc[p["offset"]:p["offset"] + end - p["start"]]
                covered[p["line"]] += end - p["start"]
    assert covered == {line: len(x) for line, x in ids.items()}  # every token of every document, once


def test_packed_rows_name_every_row_in_them(hf_tokenizer, instructions, tmp_path, reference):
    tok, eos = reference
    transforms = [{"template": "alpaca"}, {"tokenize": {"cutoff_len": 384}}, {"pack": {"block_size": 384}}]
    built(sft(hf_tokenizer, instructions, transforms=transforms), tmp_path / "b")
    records = jsonl_lines(instructions)
    ds = load_from_disk(str(tmp_path / "b"))
    lines = []
    for split in ("train", "validation"):
        rows = by_row(tmp_path / "b", split)
        for n, row in enumerate(ds[split]):
            starts = np.cumsum([0] + row["seq_lens"][:-1]).tolist()
            assert [p["start"] for p in rows[n]] == starts
            for p, start, length in zip(rows[n], starts, row["seq_lens"]):
                expected = tok.encode(alpaca_text(records[p["line"]])).ids + [eos]
                assert row["input_ids"][start:start + length] == expected
                lines.append(p["line"])
    assert sorted(lines) == sorted(records)


def test_build_sources_chain_to_their_rows_and_keep_groups(hf_tokenizer, tmp_path):
    """A near-duplicate pair grouped by dedup in the source build stays on one side of every new split."""
    base = "the quick brown fox jumps over the lazy dog near the river bank at dawn every single day"
    records = [{"instruction": base + " again", "output": "yes"}, {"instruction": base + " twice", "output": "yes"}]
    records += [{"instruction": f"unrelated question {i} about {WORDS[i % 12]}", "output": f"no {i}"} for i in range(30)]
    path = tmp_path / "near.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    transforms = [{"dedup": {"mode": "near", "threshold": 0.7, "action": "group"}}, {"template": "alpaca"},
                  {"tokenize": {"cutoff_len": 256}}]
    built(sft(hf_tokenizer, path, transforms=transforms, val=0), tmp_path / "a")
    a = load_from_disk(str(tmp_path / "a"))["train"]
    pair = [n for n, ps in by_row(tmp_path / "a", "train").items() if ps[0]["line"] in (1, 2)]
    for seed in range(8):
        recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(tmp_path / "a"), "format": "build"}],
                  "split": {"val_set_size": 0.5, "seed": seed}, "output": "unused"}
        built(recipe, tmp_path / f"b{seed}")
        b = load_from_disk(str(tmp_path / f"b{seed}"))
        sides = set()
        for split in b:
            for n, ps in by_row(tmp_path / f"b{seed}", split).items():
                (p,) = ps
                assert p["input"] == str(tmp_path / "a" / "train")
                assert b[split][n]["input_ids"] == a[p["record"]]["input_ids"]  # the row it names
                if p["record"] in pair:
                    sides.add(split)
        assert len(sides) == 1


def test_inspect_row_shows_where_it_came_from(hf_tokenizer, instructions, tmp_path):
    built(sft(hf_tokenizer, instructions), tmp_path / "a")
    line = by_row(tmp_path / "a", "train")[4][0]["line"]
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "a"), "--row", "4", "--no-color"])
    assert result.exit_code == 0, result.output
    assert f"from: {instructions}:{line}  [source {instructions}" in result.output
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(tmp_path / "a"), "format": "build",
                                                           "split": "train"}],
              "split": {"val_set_size": 0}, "output": "unused"}
    built(recipe, tmp_path / "b")
    record = by_row(tmp_path / "b", "train")[0][0]["record"]
    line = by_row(tmp_path / "a", "train")[record][0]["line"]
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "b"), "--row", "0", "--turns"])
    assert result.exit_code == 0, result.output
    assert re.search(rf"from: {re.escape(str(tmp_path / 'a' / 'train'))}: row {record} .*\n\s+<- "
                     rf"{re.escape(str(instructions))}:{line}\n", result.output)
    html = tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "b"), "--row", "0", "--html", str(html)])
    assert result.exit_code == 0 and f"{instructions}:{line}" in html.read_text()


def test_cache_hits_record_the_same_provenance(hf_tokenizer, instructions, tmp_path):
    recipe = sft(hf_tokenizer, instructions)
    built(recipe, tmp_path / "cold", cache=False)
    built(recipe, tmp_path / "fill")
    hit = built(recipe, tmp_path / "hit")
    assert [s["hit"] for s in hit["cache"]["sources"]] == [True]
    for split in ("train", "validation"):
        assert pieces(tmp_path / "hit", split) == pieces(tmp_path / "cold", split)
    moved = instructions.rename(tmp_path / "moved.jsonl")
    recipe["sources"][0]["path"] = str(moved)
    assert [s["hit"] for s in built(recipe, tmp_path / "moved")["cache"]["sources"]] == [True]
    assert {p["input"] for p in pieces(tmp_path / "moved", "train")} == {str(moved)}


def test_manifest_names_the_files(hf_tokenizer, instructions, tmp_path):
    manifest = built(sft(hf_tokenizer, instructions), tmp_path / "b")
    assert set(manifest["provenance"]) == set(manifest["splits"]) == {"train", "validation"}
    for split, entry in manifest["splits"].items():
        assert manifest["provenance"][split] == {
            "path": f"provenance/{split}.parquet", "rows": entry["rows"], "pieces": entry["rows"],
            "bytes": (tmp_path / "b" / "provenance" / f"{split}.parquet").stat().st_size}
    assert "provenance" in json.loads((tmp_path / "b" / "manifest.json").read_text())["layout"]
    assert set(load_from_disk(str(tmp_path / "b"))["train"].column_names) == {"input_ids", "attention_mask", "labels"}
