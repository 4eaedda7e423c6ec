"""Pack against plain-Python references of the two EOS policies, for any batching, and of the
document pieces that isolate_documents marks."""
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.executor import run_chain
from datakit.recipe import PackOptions
from datakit.transforms import IGNORE_INDEX, Pack

EOS, PAD = 2, 0
CORPUS = (Path(__file__).resolve().parents[2] / "examples" / "data" / "corpus.txt").read_text("utf-8")
docs_st = st.lists(st.lists(st.integers(3, 50), max_size=40), min_size=1, max_size=12)


def reference(docs, block, eos_mode, remainder):
    """The semantics written out: per_document = [d1, EOS, d2, EOS, ...] cut into block;
    per_block = stream cut into block-1 pieces, each + EOS. Returns (blocks, dropped)."""
    if eos_mode == "per_document":
        stream = [t for d in docs for t in d + [EOS]]
        pieces = [stream[i:i + block] for i in range(0, len(stream), block)]
        tail = pieces.pop() if pieces and len(pieces[-1]) < block else None
    else:
        stream = [t for d in docs for t in d]
        pieces = [stream[i:i + block - 1] + [EOS] for i in range(0, len(stream), block - 1)]
        tail = pieces.pop() if pieces and len(pieces[-1]) < block else None
    dropped = 0
    if tail is not None:
        if remainder == "drop":
            dropped = len(tail) - (1 if eos_mode == "per_block" else 0)
        elif remainder == "pad":
            pieces.append(tail + [PAD] * (block - len(tail)))
        else:
            pieces.append(tail)
    return pieces, dropped


def batches_of(docs, cuts):
    bounds = sorted({0, len(docs), *[c % (len(docs) + 1) for c in cuts]})
    for a, b in zip(bounds, bounds[1:]):
        part = docs[a:b]
        yield pa.RecordBatch.from_pydict({"input_ids": pa.array(part, pa.list_(pa.int32()))})


def run(docs, block, eos_mode, remainder, cuts=()):
    pack = Pack(PackOptions(block_size=block, eos=eos_mode, remainder=remainder), eos_id=EOS, pad_id=PAD)
    rows = []
    for out in run_chain(batches_of(docs, cuts), [pack]):
        rows += out.to_pylist()
    return rows, pack.stats


@settings(max_examples=300, deadline=None)
@given(docs=docs_st, block=st.integers(2, 17), eos_mode=st.sampled_from(["per_document", "per_block"]),
       remainder=st.sampled_from(["drop", "pad", "keep"]), cuts=st.lists(st.integers(0, 20), max_size=4))
def test_blocks_equal_the_reference_for_any_batching(docs, block, eos_mode, remainder, cuts):
    rows, stats = run(docs, block, eos_mode, remainder, cuts)
    expected, dropped = reference(docs, block, eos_mode, remainder)
    assert [r["input_ids"] for r in rows] == expected
    assert stats["tokens_dropped.remainder"] == dropped
    for r in rows:
        assert len(r["input_ids"]) == len(r["labels"]) == len(r["attention_mask"])
        for tok, lab, att in zip(r["input_ids"], r["labels"], r["attention_mask"]):
            assert (lab, att) == ((tok, 1) if att else (IGNORE_INDEX, 0))
        if remainder != "keep":
            assert len(r["input_ids"]) == block
        if eos_mode == "per_block":
            real = [t for t, a in zip(r["input_ids"], r["attention_mask"]) if a]
            assert real[-1] == EOS


@settings(max_examples=300, deadline=None)
@given(docs=docs_st, block=st.integers(2, 17), eos_mode=st.sampled_from(["per_document", "per_block"]),
       remainder=st.sampled_from(["drop", "pad", "keep"]))
def test_no_token_is_lost_without_being_counted(docs, block, eos_mode, remainder):
    rows, stats = run(docs, block, eos_mode, remainder)
    written = [t for r in rows for t, a in zip(r["input_ids"], r["attention_mask"]) if a]
    # Removing the inserted EOS (documents here never contain it) gives back the document stream,
    # except for a dropped tail, and every token of that tail is counted.
    stream = [t for d in docs for t in d]
    recovered = [t for t in written if t != EOS]
    assert recovered == stream[:len(recovered)]
    assert len(stream) - len(recovered) <= stats["tokens_dropped.remainder"]
    if remainder != "drop":
        assert recovered == stream and stats["tokens_dropped.remainder"] == 0
    assert len(stream) + stats["eos_added"] == len(written) + stats["tokens_dropped.remainder"]
    assert stats["padding_tokens"] == sum(1 for r in rows for a in r["attention_mask"] if not a)


def test_a_document_that_ends_in_eos_gets_no_second_one():
    rows, stats = run([[5, 6, EOS], [7]], 3, "per_document", "keep")
    assert [r["input_ids"] for r in rows] == [[5, 6, EOS], [7, EOS]]
    assert stats["eos_added"] == 1


@pytest.mark.parametrize("remainder, expected", [
    ("drop", [[5, 6, 7, EOS]]), ("pad", [[5, 6, 7, EOS], [8, EOS, PAD, PAD]]), ("keep", [[5, 6, 7, EOS], [8, EOS]]),
])
def test_per_block_remainder_policies(remainder, expected):
    rows, _ = run([[5, 6, 7, 8]], 4, "per_block", remainder)
    assert [r["input_ids"] for r in rows] == expected


def test_output_types_are_the_contract():
    pack = Pack(PackOptions(block_size=4), eos_id=EOS)
    out = pack(pa.RecordBatch.from_pydict({"input_ids": pa.array([[3, 4, 5, 6]], pa.list_(pa.int32()))}))[0]
    assert out.schema.field("input_ids").type == pa.list_(pa.int32())
    assert out.schema.field("attention_mask").type == pa.list_(pa.int8())
    assert out.schema.field("labels").type == pa.list_(pa.int32())
    assert np.array_equal(out.column("input_ids").values.to_numpy(), [3, 4, 5, 6])


# ---------------------------------------------------------------- isolate_documents (text)

def run_isolated(docs, block, eos_mode, remainder, cuts=(), isolate=True):
    opts = PackOptions(block_size=block, eos=eos_mode, remainder=remainder, isolate_documents=isolate)
    pack = Pack(opts, eos_id=EOS, pad_id=PAD)
    batches = list(run_chain(batches_of(docs, cuts), [pack]))
    return batches, pack.stats


def reference_pieces(docs, block, eos_mode):
    """Per block, the lengths of the document pieces in it: the stream of (token, starts a
    document) pairs cut like ``reference`` cuts the tokens; a block's first token starts a piece."""
    if eos_mode == "per_document":
        stream = [k == 0 for d in docs for k in range(len(d) + 1)]
        blocks = [stream[i:i + block] for i in range(0, len(stream), block)]
    else:
        stream = [k == 0 for d in docs for k in range(len(d))]
        blocks = [stream[i:i + block - 1] + [False] for i in range(0, len(stream), block - 1)]
    out = []
    for flags in blocks:
        flags = [True] + flags[1:]
        at = [i for i, f in enumerate(flags) if f] + [len(flags)]
        out.append([b - a for a, b in zip(at, at[1:])])
    return out


@settings(max_examples=200, deadline=None)
@given(docs=docs_st, block=st.integers(2, 17), eos_mode=st.sampled_from(["per_document", "per_block"]),
       remainder=st.sampled_from(["drop", "pad", "keep"]), cuts=st.lists(st.integers(0, 20), max_size=4))
def test_isolated_blocks_restart_positions_at_every_document(docs, block, eos_mode, remainder, cuts):
    batches, stats = run_isolated(docs, block, eos_mode, remainder, cuts)
    rows = [r for b in batches for r in b.to_pylist()]
    plain, _ = run(docs, block, eos_mode, remainder)
    # the tokens and the attention are those of the plain blocks
    assert [r["input_ids"] for r in rows] == [r["input_ids"] for r in plain]
    assert [r["attention_mask"] for r in rows] == [r["attention_mask"] for r in plain]
    expected = reference_pieces(docs, block, eos_mode)[:len(rows)]
    assert [r["seq_lens"] for r in rows] == expected
    for r, p in zip(rows, plain):
        n_pad = len(r["input_ids"]) - sum(r["seq_lens"])
        assert n_pad == r["attention_mask"].count(0)
        assert r["position_ids"] == [k for n in r["seq_lens"] for k in range(n)] + list(range(n_pad))
        firsts = set(np.cumsum([0] + r["seq_lens"][:-1]).tolist())
        assert r["labels"] == [IGNORE_INDEX if i in firsts else lab for i, lab in enumerate(p["labels"])]
    assert stats["first_labels_masked"] == sum(len(r["seq_lens"]) for r in rows)


def test_without_isolation_nothing_changes():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    batches, _ = run_isolated(docs, 4, "per_document", "pad", isolate=False)
    assert batches[0].schema.names == ["input_ids", "attention_mask", "labels"]
    plain = Pack(PackOptions(block_size=4, remainder="pad"), eos_id=EOS, pad_id=PAD)
    expected = list(run_chain(batches_of(docs, ()), [plain]))
    assert all(a.equals(b) for a, b in zip(batches, expected)) and len(batches) == len(expected)


def test_an_isolated_build_only_adds_positions_and_masks_first_labels(tmp_path, make_recipe, hf_tokenizer):
    import datakit
    from datakit.tokenization import load_tokenizer

    eos = load_tokenizer(str(hf_tokenizer)).eos_id
    src = tmp_path / "c.txt"
    src.write_text(CORPUS)
    plain = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(src), "document_separator": "\n\n"}],
             "transforms": [{"tokenize": {}}, {"pack": {"block_size": 48, "remainder": "pad"}}],
             "split": {"val_set_size": 0.2}, "output": "out"}
    isolated = {**plain, "transforms": [{"tokenize": {}}, {"pack": {"block_size": 48, "remainder": "pad",
                                                                     "isolate_documents": True}}]}
    a = datakit.load(datakit.run_build(make_recipe(plain, "a.yaml"), output=tmp_path / "a", silent=True).path)
    b = datakit.load(datakit.run_build(make_recipe(isolated, "b.yaml"), output=tmp_path / "b", silent=True).path)
    assert a["train"].column_names == ["input_ids", "attention_mask", "labels"]
    for split in ("train", "validation"):
        assert a[split]["input_ids"] == b[split]["input_ids"]
        assert a[split]["attention_mask"] == b[split]["attention_mask"]
        for ids, att, labels, pos, seq_lens in zip(*(b[split][c] for c in b[split].column_names)):
            assert sum(seq_lens) == sum(att) and pos[:sum(att)] == [k for n in seq_lens for k in range(n)]
            # a piece starts after EOS or at the block's start: that is where documents begin
            starts = [k for k in range(sum(att)) if pos[k] == 0]
            assert all(k == 0 or ids[k - 1] == eos for k in starts)
            assert [lab for k, lab in enumerate(labels) if k in starts] == [IGNORE_INDEX] * len(starts)
