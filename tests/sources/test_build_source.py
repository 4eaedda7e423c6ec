"""``format: build``: a build folder as a source. Its rows come back byte for byte (read with
``datasets``), are mixed and split like any source's, never leak a held-out row into train, and
are never tokenized again."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from datasets import load_from_disk
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.builder import run_build
from datakit.cli import cli
from datakit.errors import RecipeError, SourceError
from datakit.recipe import from_dict
from datakit.tokenization.hf import HFTokenizer

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT / "examples" / "data" / "alpaca_sample.json"
CORPUS = ROOT / "examples" / "data" / "corpus.txt"
TEMPLATE = [{"template": "alpaca"}, {"tokenize": {"cutoff_len": 256}}]


def sft_recipe(tokenizer, sources: list[dict], *, val=0.2, seed=1, transforms=TEMPLATE, **more) -> dict:
    return {"tokenizer": str(tokenizer), "sources": sources, "transforms": transforms,
            "split": {"val_set_size": val, "seed": seed}, "output": "unused", **more}


def built(recipe: dict, out: Path, **options) -> dict:
    return run_build(recipe, output=out, overwrite=True, silent=True, **options).manifest


def rows(folder: Path, split: str) -> list[tuple]:
    """The rows of a split as read by ``datasets`` (the library trainers use), as hashable tuples."""
    ds = load_from_disk(str(folder))[split]
    return [(tuple(r["input_ids"]), tuple(r["attention_mask"]), tuple(r["labels"])) for r in ds]


def alpaca_records(n: int, *, prefix: str = "q") -> list[dict]:
    return [{"instruction": f"{prefix} {i}: say something about item {i}", "input": "",
             "output": f"answer number {i} is here"} for i in range(n)]


@pytest.fixture
def source_a(hf_tokenizer, tmp_path) -> Path:
    """An instruction build with train and validation splits."""
    built(sft_recipe(hf_tokenizer, [{"path": str(ALPACA), "format": "alpaca"}]), tmp_path / "a")
    return tmp_path / "a"


def test_rows_come_back_byte_for_byte(hf_tokenizer, source_a, tmp_path):
    recipe = sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build", "split": "train"}],
                        val=0, transforms=[])
    manifest = built(recipe, tmp_path / "b")
    assert rows(tmp_path / "b", "train") and Counter(rows(tmp_path / "b", "train")) == Counter(rows(source_a, "train"))
    assert list(load_from_disk(str(tmp_path / "b"))) == ["train"]
    ds = load_from_disk(str(tmp_path / "b"))["train"]
    assert ds.features["input_ids"].feature.dtype == "int32" and ds.features["labels"].feature.dtype == "int32"
    assert manifest["kind"] == "sft" and "tokens_read" not in manifest["counts"]
    labels = [x for row in ds["labels"] for x in row]  # counted as tokenize counts its rows
    assert manifest["counts"]["supervised_tokens"] == sum(x != -100 for x in labels) > 0
    assert manifest["counts"]["prompt_tokens"] == sum(x == -100 for x in labels)


def test_validation_rows_stay_in_validation(hf_tokenizer, source_a, tmp_path):
    """Without a split key every split is read; the source's validation rows are never trained on,
    even when this recipe asks for no validation of its own."""
    recipe = sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build"}], val=0, transforms=[])
    built(recipe, tmp_path / "b")
    assert Counter(rows(tmp_path / "b", "validation")) == Counter(rows(source_a, "validation"))
    assert Counter(rows(tmp_path / "b", "train")) == Counter(rows(source_a, "train"))
    recipe["split"] = {"val_set_size": 0.5, "seed": 9}
    built(recipe, tmp_path / "c")
    val, train = Counter(rows(tmp_path / "c", "validation")), Counter(rows(tmp_path / "c", "train"))
    assert not set(val) & set(train)
    assert all(val[r] >= 1 for r in rows(source_a, "validation"))
    assert sum(val.values()) >= 10  # half of the 20 rows, the held-out ones among them


@pytest.mark.parametrize("repeat", [1, 2, 2.5])
def test_repeat_counts(hf_tokenizer, source_a, tmp_path, repeat):
    recipe = sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build", "split": "train",
                                        "repeat": repeat}], val=0, transforms=[])
    built(recipe, tmp_path / "b")
    original = Counter(rows(source_a, "train"))
    got = Counter(rows(tmp_path / "b", "train"))
    n = sum(original.values())
    assert sum(got.values()) == round(n * repeat)
    assert set(got) == set(original)
    assert all(int(repeat) * original[r] <= got[r] <= int(np.ceil(repeat)) * original[r] for r in original)


def test_weights_share_the_rows(hf_tokenizer, tmp_path, write_jsonl):
    a = write_jsonl("a.jsonl", alpaca_records(30, prefix="a"))
    b = write_jsonl("b.jsonl", alpaca_records(10, prefix="b"))
    built(sft_recipe(hf_tokenizer, [{"path": str(a), "format": "alpaca"}], val=0), tmp_path / "ba")
    built(sft_recipe(hf_tokenizer, [{"path": str(b), "format": "alpaca"}], val=0), tmp_path / "bb")
    recipe = sft_recipe(hf_tokenizer, [{"path": str(tmp_path / "ba"), "format": "build", "weight": 1},
                                       {"path": str(tmp_path / "bb"), "format": "build", "weight": 3}],
                        val=0, transforms=[])
    manifest = built(recipe, tmp_path / "mix")
    assert [s["rows"] for s in manifest["sources"]] == [10, 30]  # 40 rows split 1:3
    got = Counter(rows(tmp_path / "mix", "train"))
    from_b = Counter(rows(tmp_path / "bb", "train"))
    assert all(got[r] == 3 * from_b[r] for r in from_b)


def test_mixed_with_a_text_source_tokenizes_only_it(hf_tokenizer, source_a, tmp_path, monkeypatch):
    alone = built(sft_recipe(hf_tokenizer, [{"path": str(ALPACA), "format": "alpaca"}]), tmp_path / "alone",
                  cache=False)
    calls = []
    encode_with_spans = HFTokenizer.encode_with_spans
    monkeypatch.setattr(HFTokenizer, "encode_with_spans", lambda self, texts, *a, **kw: calls.append(len(texts))
                        or encode_with_spans(self, texts, *a, **kw))
    recipe = sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build"},
                                       {"path": str(ALPACA), "format": "alpaca"}])
    manifest = built(recipe, tmp_path / "mixed", cache=False)
    assert sum(calls) == 20  # the alpaca file's rows, not the build's
    assert manifest["counts"]["tokens_read"] == alone["counts"]["tokens_read"]
    assert manifest["counts"]["rows_read"] == 40
    calls.clear()
    first = built(recipe, tmp_path / "cached")
    again = built(recipe, tmp_path / "again")
    # only the text source is cached (source_a's build stored it), and the cache leaves nothing to tokenize
    assert [s["hit"] for s in first["cache"]["sources"]] == [s["hit"] for s in again["cache"]["sources"]] == [True]
    assert [s["source"] for s in again["cache"]["sources"]] == [str(ALPACA)]
    assert sum(calls) == 0
    for out in ("cached", "again"):
        assert Counter(rows(tmp_path / out, "train")) == Counter(rows(tmp_path / "mixed", "train"))


def test_duplicates_across_sources_never_straddle(hf_tokenizer, tmp_path, write_jsonl):
    common = alpaca_records(12, prefix="common")
    a = write_jsonl("a.jsonl", common + alpaca_records(20, prefix="a"))
    b = write_jsonl("b.jsonl", alpaca_records(20, prefix="b") + common)
    built(sft_recipe(hf_tokenizer, [{"path": str(a), "format": "alpaca"}], val=0.3, seed=4), tmp_path / "ba")
    built(sft_recipe(hf_tokenizer, [{"path": str(b), "format": "alpaca"}], val=0.3, seed=5), tmp_path / "bb")
    for seed in range(4):
        recipe = sft_recipe(hf_tokenizer, [{"path": str(tmp_path / "ba"), "format": "build"},
                                           {"path": str(tmp_path / "bb"), "format": "build", "repeat": 2}],
                            val=0.25, seed=seed, transforms=[])
        built(recipe, tmp_path / f"mix{seed}")
        train, val = set(rows(tmp_path / f"mix{seed}", "train")), set(rows(tmp_path / f"mix{seed}", "validation"))
        assert not train & val
        assert set(rows(tmp_path / "ba", "validation")) | set(rows(tmp_path / "bb", "validation")) <= val


def test_tokenizer_mismatch_is_one_line(hf_tokenizer, spm_model, source_a, tmp_path, make_recipe):
    recipe = sft_recipe(spm_model, [{"path": str(source_a), "format": "build"},
                                    {"path": str(ALPACA), "format": "alpaca"}], output=str(tmp_path / "out"))
    result = CliRunner().invoke(cli, ["build", str(make_recipe(recipe)), "--silent"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert str(source_a) in lines[0] and "tokenizer.json" in lines[0] and str(spm_model) in lines[0]
    assert not (tmp_path / "out").exists()


def test_source_builds_must_agree(hf_tokenizer, spm_model, source_a, tmp_path):
    built(sft_recipe(spm_model, [{"path": str(ALPACA), "format": "alpaca"}]), tmp_path / "spm")
    recipe = sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build"},
                                       {"path": str(tmp_path / "spm"), "format": "build"}], transforms=[])
    with pytest.raises(SourceError, match=r"sources\[1\].*tok\.model.*recipe's tokenizer"):
        built(recipe, tmp_path / "out")


def test_packed_builds_are_refused(hf_tokenizer, tmp_path):
    packed = sft_recipe(hf_tokenizer, [{"path": str(ALPACA), "format": "alpaca"}],
                        transforms=TEMPLATE + [{"pack": {"block_size": 256}}])
    built(packed, tmp_path / "packed")
    recipe = sft_recipe(hf_tokenizer, [{"path": str(tmp_path / "packed"), "format": "build"}], transforms=[])
    with pytest.raises(SourceError, match="packed rows.*build it without `pack`"):
        built(recipe, tmp_path / "out")


def test_an_unpacked_build_packs_in_the_new_recipe(hf_tokenizer, source_a, tmp_path):
    recipe = sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build", "split": "train"}], val=0,
                        transforms=[{"pack": {"block_size": 256}}])
    manifest = built(recipe, tmp_path / "b")
    ds = load_from_disk(str(tmp_path / "b"))["train"]
    assert manifest["splits"]["train"]["packing"]["rows_packed"] == len(rows(source_a, "train"))
    unpacked = Counter()
    for r in ds:
        start = 0
        for n in r["seq_lens"]:
            unpacked[tuple(r["input_ids"][start:start + n])] += 1
            start += n
    assert unpacked == Counter(ids for ids, _, _ in rows(source_a, "train"))
    recipe["transforms"] = [{"pack": {"block_size": 16}}]
    with pytest.raises(SourceError, match="more than pack.block_size 16"):
        built(recipe, tmp_path / "c")


def test_pretraining_builds_remix_blocks(hf_tokenizer, tmp_path):
    text = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(CORPUS), "format": "text",
                                                          "document_separator": "\n\n"}],
            "transforms": [{"tokenize": {}}, {"pack": {"block_size": 64}}], "split": {"val_set_size": 0.1},
            "output": "unused"}
    built(text, tmp_path / "p")
    mixed = {**text, "sources": text["sources"] + [{"path": str(tmp_path / "p"), "format": "build", "split": "train"}],
             "split": {"val_set_size": 0}}
    built(mixed, tmp_path / "m")
    blocks = Counter(rows(tmp_path / "m", "train"))
    assert all(blocks[r] >= 1 for r in rows(tmp_path / "p", "train"))
    mixed["transforms"] = [{"tokenize": {}}, {"pack": {"block_size": 32}}]
    with pytest.raises(SourceError, match="blocks of 64 tokens.*blocks of 32"):
        built(mixed, tmp_path / "m2")


def test_manifest_chains_provenance(hf_tokenizer, source_a, tmp_path):
    first = built(sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build"}], transforms=[]),
                  tmp_path / "b")
    second = built(sft_recipe(hf_tokenizer, [{"path": str(tmp_path / "b"), "format": "build", "split": "train",
                                              "name": "remix"}], transforms=[], val=0), tmp_path / "c")
    a = json.loads((source_a / "manifest.json").read_text())
    chain = second["source_builds"][0]
    assert chain["path"] == str(tmp_path / "b") and chain["name"] == "remix" and chain["splits"] == {
        "train": first["splits"]["train"]["rows"]}
    assert chain["inputs_fingerprint"] == first["inputs_fingerprint"]
    inner = chain["source_builds"][0]
    assert inner["path"] == str(source_a) and inner["inputs_fingerprint"] == a["inputs_fingerprint"]
    assert inner["inputs"] == [{"path": i["path"], "sha256": i["sha256"]} for i in a["inputs"]]
    assert second["inputs"][0]["path"] == str(tmp_path / "b" / "train")


@pytest.mark.parametrize("change, message", [
    ({"transforms": [{"template": "alpaca"}]}, r"transforms\[0\].template: it reads text"),
    ({"sources": [{"path": "SRC", "format": "build", "columns": {"a": "b"}}]}, "already"),
    ({"sources": [{"path": str(ALPACA), "format": "alpaca", "split": "train"}]}, "only applies to format build"),
    ({"sources": [{"path": "nowhere", "format": "build"}]}, r"sources\[0\].path: .*not a datakit build"),
])
def test_recipe_problems(hf_tokenizer, source_a, change, message):
    data = sft_recipe(hf_tokenizer, [{"path": str(source_a), "format": "build"}], transforms=[])
    data.update(yaml.safe_load(json.dumps(change).replace("SRC", str(source_a))))
    with pytest.raises(RecipeError, match=message):
        from_dict(data)


def test_a_split_folder_names_its_build(hf_tokenizer, source_a, tmp_path):
    recipe = sft_recipe(hf_tokenizer, [{"path": str(source_a / "train"), "format": "build"}], transforms=[])
    with pytest.raises((SourceError, RecipeError), match=r"split: train"):
        built(recipe, tmp_path / "out")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=2, max_size=40), st.data())
def test_plan_keeps_held_groups_in_validation(groups, data):
    """The split with held-out rows: every held row and every row of its group is in validation,
    no group is in both splits, and validation holds at least what val_set_size asks."""
    from datakit.errors import SplitError
    from datakit.recipe import SplitConfig
    from datakit.split import split_indices

    groups = np.array(groups)
    n = len(groups)
    held = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    val = data.draw(st.integers(0, n - 1))
    config = SplitConfig(val_set_size=val, seed=data.draw(st.integers(0, 5)))
    try:
        out = split_indices(n, config, groups=groups, held=held)
    except SplitError:  # train would be empty: without a val_set_size, only when every group is held
        assert val > 0 or set(groups) == set(groups[held])
        return
    train, valid = out["train"], out.get("validation", np.zeros(0, np.int64))
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(n))
    assert not set(groups[train]) & set(groups[valid])
    assert set(np.flatnonzero(held)) <= set(valid.tolist())
    assert len(valid) >= min(val, n) or len(train) == 0
