"""Packed instruction rows: unpacking gives back the rows; the layout is the column contract."""
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datakit
from datakit.executor import run_chain
from datakit.recipe import PackOptions
from datakit.transforms import IGNORE_INDEX
from datakit.transforms.pack_rows import PackRows

PAD = 0


@dataclass
class Split:
    """What the writer hands a post-split step: a split's name, its rows and their lengths."""

    name: str
    indices: np.ndarray
    all_lengths: np.ndarray

    @property
    def lengths(self):
        return self.all_lengths[self.indices]


def sft_rows(spec):
    """Rows of distinct ids; a flag per token says whether it is supervised."""
    rows, base = [], 100
    for tokens in spec:
        ids = list(range(base, base + len(tokens)))
        base += len(tokens)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids),
                     "labels": [t if sup else IGNORE_INDEX for t, (_, sup) in zip(ids, tokens)]})
    return rows


def pack_split(rows, indices, block, *, pad=True, chunk=7):
    """Pack ``rows[indices]`` the way the writer runs a post-split step: begin_split, then chunks."""
    step = PackRows(PackOptions(block_size=block, pad_to_block_size=pad), pad_id=PAD)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    split = step.begin_split(Split("train", np.asarray(indices, dtype=np.int64), lengths))
    chosen = [rows[i] for i in split.indices]
    batches = [pa.RecordBatch.from_pylist(chosen[i:i + chunk], schema=ROWS_SCHEMA)
               for i in range(0, len(chosen), chunk)]
    out = list(run_chain(batches, [step]))
    return [r for b in out for r in b.to_pylist()], step.end_split()["packing"], out


ROWS_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("attention_mask", pa.list_(pa.int8())),
                         ("labels", pa.list_(pa.int32()))])


@settings(max_examples=150, deadline=None)
@given(spec=st.lists(st.lists(st.booleans(), min_size=1, max_size=40), min_size=1, max_size=40),
       block=st.integers(40, 120), pad=st.booleans(), chunk=st.integers(1, 50), data=st.data())
def test_unpacking_gives_back_the_rows(spec, block, pad, chunk, data):
    rows = sft_rows([[(0, s) for s in r] for r in spec])
    indices = data.draw(st.permutations(range(len(rows))))
    packs, stats, _ = pack_split(rows, indices, block, pad=pad, chunk=chunk)
    unpacked = []
    for p in packs:
        n = len(p["input_ids"])
        assert n == block if pad else n == sum(p["seq_lens"])
        padding = block - sum(p["seq_lens"])
        assert sum(p["seq_lens"]) + padding == block and padding >= 0
        at = 0
        for length in p["seq_lens"]:
            piece = {k: p[k][at:at + length] for k in ("input_ids", "labels", "attention_mask", "position_ids")}
            assert piece["position_ids"] == list(range(length))
            assert piece["attention_mask"] == [1] * length
            assert piece["labels"][0] == IGNORE_INDEX
            unpacked.append(piece)
            at += length
        tail = slice(at, n)
        assert p["input_ids"][tail] == [PAD] * (n - at) and p["labels"][tail] == [IGNORE_INDEX] * (n - at)
        assert p["attention_mask"][tail] == [0] * (n - at) and p["position_ids"][tail] == list(range(n - at))
    # the multiset of rows comes back; only each row's first label differs (it is masked)
    key = lambda r: (tuple(r["input_ids"]), tuple(r["labels"][1:]))  # noqa: E731
    assert sorted(map(key, unpacked)) == sorted(key(r) for r in rows)
    masked = sum(r["labels"][0] != IGNORE_INDEX for r in rows)
    assert stats == {"block_size": block, "rows_packed": len(rows), "packs": len(packs),
                     "tokens": sum(len(r["input_ids"]) for r in rows),
                     "padding_tokens": len(packs) * block - sum(len(r["input_ids"]) for r in rows),
                     "efficiency": stats["efficiency"], "rows_per_pack": stats["rows_per_pack"],
                     "first_labels_masked": masked}
    assert stats["efficiency"] == pytest.approx(stats["tokens"] / (len(packs) * block), abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(spec=st.lists(st.integers(1, 40), min_size=0, max_size=60), block=st.integers(40, 120),
       pad=st.booleans(), tokens=st.integers(1, 500), data=st.data())
def test_runs_packed_apart_give_the_packs_of_the_whole_split(spec, block, pad, tokens, data):
    """A distributed write cuts a split's packs into runs (``runs``) and packs each run in
    another process (``run``): together they give the packs and figures of the whole split."""
    rows = sft_rows([[(0, k % 3 > 0) for k in range(n)] for n in spec])
    indices = data.draw(st.permutations(range(len(rows))))
    whole, stats, _ = pack_split(rows, indices, block, pad=pad)
    step = PackRows(PackOptions(block_size=block, pad_to_block_size=pad), pad_id=PAD)
    lengths = np.array([len(r["input_ids"]) for r in rows], np.int64)
    split = step.begin_split(Split("train", np.asarray(indices, dtype=np.int64), lengths))
    runs = step.runs(tokens)
    assert runs[0][0] == 0 and runs[-1][1] == len(rows)
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    packs = []
    for a, b, per_pack in runs:
        assert per_pack.sum() == b - a
        part = step.run(per_pack)
        chosen = [rows[i] for i in split.indices[a:b]]
        batches = [pa.RecordBatch.from_pylist(chosen[i:i + 5], schema=ROWS_SCHEMA) for i in range(0, len(chosen), 5)]
        packs += [r for out in run_chain(batches, [part]) for r in out.to_pylist()]
        step.add_run(part.end_split()["packing"])
    assert packs == whole
    assert step.end_split()["packing"] == stats


def test_packs_follow_the_best_fit_plan_whatever_the_chunks():
    rows = sft_rows([[(0, True)] * n for n in (5, 9, 3, 7, 2, 8)])
    by_chunk = [pack_split(rows, range(6), 10, chunk=c)[0] for c in (1, 2, 5, 6)]
    assert all(p == by_chunk[0] for p in by_chunk)
    # 9+(none fits 1), 8+2, 7+3, 5: best fit decreasing by hand
    assert [p["seq_lens"] for p in by_chunk[0]] == [[9], [8, 2], [7, 3], [5]]


def test_packed_columns_have_the_contract_types():
    rows = sft_rows([[(0, True)] * 4, [(0, False), (0, True)]])
    _, _, batches = pack_split(rows, [0, 1], 8)
    types = {f.name: f.type for f in batches[0].schema}
    assert types == {"input_ids": pa.list_(pa.int32()), "attention_mask": pa.list_(pa.int8()),
                     "labels": pa.list_(pa.int32()), "position_ids": pa.list_(pa.int32()),
                     "seq_lens": pa.list_(pa.int32())}


# ---------------------------------------------------------------- builds

def alpaca_rows(n=60):
    words = "the model reads every row once and learns what the answer says".split()
    return [{"instruction": f"Question {i}: say {' '.join(words[:i % 7 + 1])}?", "input": "",
             "output": " ".join(words[k % len(words)] for k in range(3 + (i * 7) % 40))} for i in range(n)]


def sft_recipe(tmp_path, tok, *, pack=None, cutoff=256, overlong="truncate", val=10):
    (tmp_path / "d.json").write_text(json.dumps(alpaca_rows()))
    steps = [{"template": "alpaca"}, {"tokenize": {"cutoff_len": cutoff, "overlong": overlong}}]
    return {"tokenizer": str(tok), "sources": [{"path": "d.json", "format": "alpaca"}],
            "transforms": steps + ([{"pack": pack}] if pack else []),
            "split": {"val_set_size": val, "seed": 3}, "output": "out"}


def unpack(ds):
    """The rows inside every pack of ``ds``, cut by seq_lens."""
    out = []
    for p in ds:
        at = 0
        for n in p["seq_lens"]:
            out.append({k: p[k][at:at + n] for k in ("input_ids", "labels", "position_ids")})
            at += n
    return out


def build(make_recipe, tmp_path, recipe, name):
    return datakit.run_build(make_recipe(recipe, f"{name}.yaml"), output=tmp_path / name, silent=True)


def test_a_packed_build_holds_each_split_of_the_unpacked_build(tmp_path, make_recipe, hf_tokenizer):
    plain = datakit.load(build(make_recipe, tmp_path, sft_recipe(tmp_path, hf_tokenizer), "plain").path)
    result = build(make_recipe, tmp_path, sft_recipe(tmp_path, hf_tokenizer, pack={"block_size": 256}), "packed")
    packed = datakit.load(result.path)
    assert set(packed) == set(plain) == {"train", "validation"}
    for split in ("train", "validation"):
        rows = unpack(packed[split])
        # no pack mixes the splits: each split's packs hold exactly that split's rows
        assert sorted((tuple(r["input_ids"]), tuple(r["labels"][1:])) for r in rows) == \
            sorted((tuple(r["input_ids"]), tuple(r["labels"][1:])) for r in plain[split])
        assert all(r["labels"][0] == IGNORE_INDEX and r["position_ids"] == list(range(len(r["input_ids"])))
                   for r in rows)
        padding = sum(a.count(0) for a in packed[split]["attention_mask"])
        assert result.manifest["splits"][split]["packing"] == {
            "block_size": 256, "rows_packed": len(plain[split]), "packs": len(packed[split]),
            "tokens": sum(map(len, plain[split]["input_ids"])), "padding_tokens": padding,
            "efficiency": round(1 - padding / (256 * len(packed[split])), 6),
            "rows_per_pack": round(len(plain[split]) / len(packed[split]), 3),
            "first_labels_masked": sum(r[0] != IGNORE_INDEX for r in plain[split]["labels"])}
    # no row is lost uncounted: every row tokenize wrote is in a pack
    assert sum(s["packing"]["rows_packed"] for s in result.manifest["splits"].values()) == \
        result.manifest["counts"]["rows_written"]
    features = {k: (type(v).__name__, v.feature.dtype) for k, v in packed["train"].features.items()}
    assert features == {"input_ids": ("List", "int32"), "attention_mask": ("List", "int8"),
                        "labels": ("List", "int32"), "position_ids": ("List", "int32"),
                        "seq_lens": ("List", "int32")}


def test_packed_builds_are_byte_identical(tmp_path, make_recipe, hf_tokenizer):
    r = sft_recipe(tmp_path, hf_tokenizer, pack={"block_size": 128, "strategy": "bfd"})
    a, b = (build(make_recipe, tmp_path, r, name).path for name in ("a", "b"))
    for split in ("train", "validation"):
        f = f"{split}/data-00000-of-00001.arrow"
        assert (a / f).read_bytes() == (b / f).read_bytes()


@pytest.mark.parametrize("overlong, counted", [("truncate", "rows_truncated"), ("drop", "rows_dropped.overlong")])
def test_rows_longer_than_block_size_follow_the_overlong_policy(tmp_path, make_recipe, hf_tokenizer,
                                                                overlong, counted):
    """A row longer than block_size is what a row longer than cutoff_len = block_size would be."""
    block = 128
    short = build(make_recipe, tmp_path, sft_recipe(tmp_path, hf_tokenizer, cutoff=block, overlong=overlong), "short")
    packed = build(make_recipe, tmp_path, sft_recipe(tmp_path, hf_tokenizer, overlong=overlong,
                                                     pack={"block_size": block}), "packed")

    def count(result):
        head, _, tail = counted.partition(".")
        value = result.manifest["counts"][head]
        return value[tail] if tail else value

    assert count(packed) == count(short) > 0
    expected = datakit.load(short.path)
    for split in ("train", "validation"):
        assert sorted(tuple(r["input_ids"]) for r in unpack(datakit.load(packed.path)[split])) == \
            sorted(tuple(r) for r in expected[split]["input_ids"])


def test_unpadded_packs_are_trl_layout(tmp_path, make_recipe, hf_tokenizer):
    out = build(make_recipe, tmp_path, sft_recipe(tmp_path, hf_tokenizer, val=0,
                                                  pack={"block_size": 128, "pad_to_block_size": False}), "p").path
    ds = datakit.load(out)["train"]
    assert all(len(ids) == sum(n) <= 128 for ids, n in zip(ds["input_ids"], ds["seq_lens"]))
    assert all(set(a) == {1} for a in ds["attention_mask"])


def test_trl_padding_free_collator_reads_the_packs_as_written():
    """TRL's padding-free collator builds position_ids from seq_lengths and masks each row's
    first label: on unpadded packs it must give back our position_ids and labels."""
    pytest.importorskip("trl")
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = sft_rows([[(0, k % 3 > 0) for k in range(n)] for n in (5, 9, 3, 7, 2, 8, 4)])
    packs, _, _ = pack_split(rows, range(len(rows)), 12, pad=False)
    examples = [{"input_ids": p["input_ids"], "labels": p["labels"], "seq_lengths": p["seq_lens"]} for p in packs]
    batch = DataCollatorForLanguageModeling(pad_token_id=PAD, padding_free=True)(examples)
    assert batch["position_ids"][0].tolist() == [q for p in packs for q in p["position_ids"]]
    assert batch["labels"][0].tolist() == [lab for p in packs for lab in p["labels"]]
    assert batch["cu_seq_lens_q"].tolist() == [0, *np.cumsum([n for p in packs for n in p["seq_lens"]]).tolist()]
