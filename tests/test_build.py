"""End-to-end pretraining builds checked against independent references."""
import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datakit
from datakit.errors import OutputError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (ROOT / "examples" / "data" / "corpus.txt").read_text("utf-8")


def recipe(tok, src, *, block=32, eos="per_document", remainder="drop", val=0, shuffle=True, seed=7, **source):
    return {"tokenizer": str(tok), "sources": [{"path": str(src), **source}],
            "transforms": [{"tokenize": {}}, {"pack": {"block_size": block, "eos": eos, "remainder": remainder}}],
            "split": {"val_set_size": val, "seed": seed, "shuffle": shuffle}, "output": "out"}


def rows(path, split="train"):
    return col(datakit.load(path)[split], "input_ids")


def col(ds, name):
    return [list(x) for x in ds[name]]


def test_per_block_on_one_file_is_the_classic_splitter(tmp_path, make_recipe, hf_tokenizer):
    from transformers import AutoTokenizer

    src = tmp_path / "book.txt"
    src.write_text(CORPUS, encoding="utf-8")
    out = datakit.run_build(make_recipe(recipe(hf_tokenizer, src, block=64, eos="per_block", shuffle=False)),
                            silent=True).path
    # The reference splitter: tokenize the whole file, pieces of block-1 + EOS, short tail dropped.
    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    ids = tok.encode(CORPUS)
    blocks = [ids[i:i + 63] + [tok.eos_token_id] for i in range(0, len(ids), 63)]
    if len(blocks[-1]) < 64:
        blocks.pop()
    assert rows(out) == blocks
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["tokens_dropped"]["remainder"] == len(ids) % 63


@pytest.mark.parametrize("remainder", ["drop", "pad", "keep"])
def test_per_document_with_sentencepiece_is_the_document_stream(tmp_path, make_recipe, spm_model, remainder):
    import sentencepiece as spm

    docs = ["Runs  of   spaces\tand tabs.", "中文文本，没有空格。", "Emoji 🙂🚀 end", "Plain words here."] * 5
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"body": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    out = datakit.run_build(make_recipe(recipe(spm_model, src, block=16, remainder=remainder, shuffle=False,
                                               columns={"text": "body"})), silent=True).path
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    stream = [t for d in docs for t in [sp.bos_id()] + sp.encode(d) + [sp.eos_id()]]
    expected = [stream[i:i + 16] for i in range(0, len(stream), 16)]
    tail = expected.pop() if len(expected[-1]) < 16 else None
    if tail and remainder == "pad":
        expected.append(tail + [sp.eos_id()] * (16 - len(tail)))  # no pad id: EOS pads, masked
    elif tail and remainder == "keep":
        expected.append(tail)
    got = datakit.load(out)["train"]
    assert col(got, "input_ids") == expected
    m = json.loads((out / "manifest.json").read_text())
    c = m["counts"]
    assert c["tokens_read"] + c["eos_added"] == c["tokens_written"] + sum(c["tokens_dropped"].values())
    assert c["tokens_dropped"].get("remainder", 0) == (len(tail) if tail and remainder == "drop" else 0)


def test_sources_of_every_kind_give_the_same_documents(tmp_path, make_recipe, hf_tokenizer):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    from datasets import Dataset

    docs = [p for p in CORPUS.split("\n\n") if p.strip()]
    table = pa.table({"text": docs})
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:5]))
    (tmp_path / "mix" / "b.json").write_text(json.dumps([{"text": d} for d in docs[5:10]]))
    pq.write_table(table.slice(10, 4), tmp_path / "mix" / "c.parquet")
    pcsv.write_csv(table.slice(14), tmp_path / "mix" / "d.csv")
    Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "hfds"))
    sep = tmp_path / "sep.txt"
    sep.write_text("\n\n".join(docs) + "\n")
    outs = []
    for i, (src, extra) in enumerate([(tmp_path / "mix", {}), (str(tmp_path / "mix") + "/*", {}),
                                      (tmp_path / "hfds", {}), (sep, {"document_separator": "\n\n"})]):
        r = recipe(hf_tokenizer, src, block=16, remainder="keep", shuffle=False, **extra)
        r["output"] = f"out{i}"
        outs.append(rows(datakit.run_build(make_recipe(r, f"r{i}.yaml"), silent=True).path))
    assert outs[0] == outs[1] == outs[2]
    # the separated text file: same documents up to the trailing newline of the last one
    assert outs[3][:-1] == outs[0][:-1]


def test_split_is_deterministic_and_byte_identical(tmp_path, make_recipe, hf_tokenizer):
    src = tmp_path / "c.txt"
    src.write_text(CORPUS)
    r = recipe(hf_tokenizer, src, block=16, val=0.2, document_separator="\n\n")
    a = datakit.run_build(make_recipe(r), output=tmp_path / "a", silent=True).path
    b = datakit.run_build(make_recipe(r), output=tmp_path / "b", silent=True).path
    for split in ("train", "validation"):
        fa = (a / split / "data-00000-of-00001.arrow").read_bytes()
        assert fa == (b / split / "data-00000-of-00001.arrow").read_bytes()
    ds = datakit.load(a)
    n = len(ds["train"]) + len(ds["validation"])
    assert len(ds["validation"]) == -(-n // 5)
    unshuffled = datakit.run_build(make_recipe({**r, "split": {"val_set_size": 0.2, "shuffle": False}}),
                                   output=tmp_path / "c", silent=True).path
    ordered = datakit.load(unshuffled)
    all_rows = col(ordered["train"], "input_ids") + col(ordered["validation"], "input_ids")
    assert sorted(map(tuple, col(ds["train"], "input_ids") + col(ds["validation"], "input_ids"))) == sorted(map(tuple, all_rows))
    assert col(ds["train"], "input_ids") != col(ordered["train"], "input_ids")
    # shuffle: false keeps input order, so the stream reads back in order
    flat = [t for row in all_rows for t in row]
    assert flat == [t for row in rows(unshuffled) + rows(unshuffled, "validation") for t in row]


@pytest.mark.parametrize("held", [0, 100])
def test_rows_spilled_to_files_give_the_same_build(tmp_path, make_recipe, hf_tokenizer, monkeypatch, held):
    """Small builds stay in memory; past IN_MEMORY bytes rows go to files (from the first batch
    on, or after some were held) and are read back row by row. Every way gives the same bytes."""
    from datakit.writers import spill as arrow

    src = tmp_path / "c.txt"
    src.write_text(CORPUS * 3)
    r = recipe(hf_tokenizer, src, block=16, val=0.2, document_separator="\n\n")
    a = datakit.run_build(make_recipe(r), output=tmp_path / "a", silent=True).path
    monkeypatch.setattr(arrow, "IN_MEMORY", held)
    spilled = []
    monkeypatch.setattr(arrow.SpillWriter, "_spill", lambda self, f=arrow.SpillWriter._spill: (spilled.append(1), f(self)))
    b = datakit.run_build(make_recipe(r), output=tmp_path / "b", silent=True).path
    assert spilled
    for split in ("train", "validation"):
        assert (a / split / "data-00000-of-00001.arrow").read_bytes() == (b / split / "data-00000-of-00001.arrow").read_bytes()


def test_val_zero_gives_only_train_with_contract_features(tmp_path, make_recipe, hf_tokenizer):
    src = tmp_path / "c.txt"
    src.write_text(CORPUS)
    out = datakit.run_build(make_recipe(recipe(hf_tokenizer, src)), silent=True).path
    ds = datakit.load(out)
    assert list(ds) == ["train"]
    f = ds["train"].features
    assert (f["input_ids"].feature.dtype, f["attention_mask"].feature.dtype, f["labels"].feature.dtype) == (
        "int32", "int8", "int32")
    from datasets import load_from_disk

    assert load_from_disk(str(out))["train"][0]["input_ids"] == ds["train"][0]["input_ids"]


def test_existing_output_needs_overwrite_and_survives_a_failed_build(tmp_path, make_recipe, hf_tokenizer):
    src = tmp_path / "c.txt"
    src.write_text(CORPUS)
    path = make_recipe(recipe(hf_tokenizer, src))
    out = datakit.run_build(path, silent=True).path
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OutputError, match="overwrite=True"):
        datakit.run_build(path, silent=True)
    src.write_bytes(b"ok\n\xff\xfe broken")
    with pytest.raises(datakit.SourceError, match="invalid UTF-8"):
        datakit.run_build(path, overwrite=True, silent=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=60),
                     min_size=1, max_size=20),
       block=st.integers(2, 24), eos=st.sampled_from(["per_document", "per_block"]),
       remainder=st.sampled_from(["drop", "pad", "keep"]))
def test_no_build_loses_a_token_it_does_not_count(tmp_path_factory, hf_tokenizer, docs, block, eos, remainder):
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("prop")
    src = tmp / "d.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    r = recipe(hf_tokenizer, src, block=block, eos=eos, remainder=remainder, shuffle=False)
    import yaml

    (tmp / "r.yaml").write_text(yaml.safe_dump(r))
    try:
        out = datakit.run_build(tmp / "r.yaml", silent=True).path
    except datakit.DatakitError as e:
        assert "no rows" in str(e)
        return
    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    stream = [t for d in docs for t in tok(d)["input_ids"]]
    ds = datakit.load(out)["train"]
    written = [t for row, att in zip(col(ds, "input_ids"), col(ds, "attention_mask")) for t, a in zip(row, att) if a]
    c = json.loads((out / "manifest.json").read_text())["counts"]
    assert c["tokens_read"] == len(stream)
    assert len(stream) + c["eos_added"] == len(written) + c["tokens_dropped"].get("remainder", 0)


def test_pack_without_an_eos_token_is_an_error(tmp_path, make_recipe):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    t = Tokenizer(models.BPE(unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(["plain words only"] * 5, trainers.BpeTrainer(vocab_size=40, special_tokens=["[UNK]"],
                                                                      show_progress=False))
    t.save(str(tmp_path / "tokenizer.json"))
    src = tmp_path / "c.txt"
    src.write_text("plain words")
    with pytest.raises(datakit.TokenizerError, match="has no EOS token, which `pack`"):
        datakit.run_build(make_recipe(recipe(tmp_path / "tokenizer.json", src)), silent=True)


def test_sft_builds_are_byte_identical(tmp_path, make_recipe, hf_tokenizer):
    rows = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(30)]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    r = {"tokenizer": str(hf_tokenizer), "sources": [{"path": "d.json", "format": "alpaca"}],
         "transforms": [{"template": "alpaca"}, {"tokenize": {"cutoff_len": 256}}],
         "split": {"val_set_size": 5, "seed": 9}, "output": "out"}
    a = datakit.run_build(make_recipe(r), output=tmp_path / "a", silent=True).path
    b = datakit.run_build(make_recipe(r), output=tmp_path / "b", silent=True).path
    for split in ("train", "validation"):
        f = f"{split}/data-00000-of-00001.arrow"
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_build_from_python_with_a_dict(tmp_path, hf_tokenizer):
    src = tmp_path / "c.txt"
    src.write_text(CORPUS)
    ds = datakit.build(recipe(hf_tokenizer, src, block=16, val=2), output=tmp_path / "from-dict")
    assert set(ds) == {"train", "validation"} and len(ds["validation"]) == 2
    assert all(len(r) == 16 for r in col(ds["train"], "input_ids"))
