"""MDS shards: byte for byte what streaming's own MDSWriter writes, read back by streaming's
StreamingDataset and by a reader written from the format's description, and SFT rows that
llm-foundry's collator turns back into datakit's input_ids and labels."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakit.columns import IGNORE_INDEX, model_batch
from datakit.writers.mds import MDSWriter, sft_turns

from .mds_spec import read_split
from .references import llmfoundry_collator, streaming_base

EOS = 2


def _rows(rng, n, *, max_len=700, vocab=50_000):
    lengths = rng.integers(1, max_len, size=n)
    return rng.integers(0, vocab, size=int(lengths.sum())).astype(np.int32), lengths


def _split(ids, lengths):
    return np.split(ids, np.cumsum(lengths)[:-1])


def _sft_rows(rng, n, *, cutoff=None):
    """Rows like datakit's: prompt, response (+ EOS), optionally a second exchange, a trailing
    unsupervised EOS, or cut at ``cutoff`` without EOS."""
    ids_rows, label_rows = [], []
    for _ in range(n):
        ids, labels = [], []
        for _turn in range(int(rng.integers(1, 3))):
            prompt = rng.integers(3, 400, size=int(rng.integers(0, 30))).tolist()
            response = rng.integers(3, 400, size=int(rng.integers(1, 30))).tolist() + [EOS]
            ids += prompt + response
            labels += [IGNORE_INDEX] * len(prompt) + response
        if rng.random() < 0.3:
            ids.append(EOS)
            labels.append(IGNORE_INDEX)
        if cutoff is not None and len(ids) > cutoff:
            ids, labels = ids[:cutoff], labels[:cutoff]
        ids_rows.append(ids)
        label_rows.append(labels)
    lengths = np.array([len(r) for r in ids_rows])
    flat = np.array([t for r in ids_rows for t in r], np.int32)
    flat_labels = np.array([t for r in label_rows for t in r], np.int32)
    return model_batch(flat, lengths, labels=flat_labels), ids_rows, label_rows


def _write(root, batches, *, sft, shard_size=1 << 26, split="train"):
    writer = MDSWriter(root, split=split, sft=sft, shard_size=shard_size)
    for batch in batches:
        writer.write(batch)
    return writer, writer.close()


def _streaming():
    base, why = streaming_base()
    if base is None:
        pytest.skip(why)
    return base


@pytest.mark.parametrize("shard_size", [100_000, 1 << 26])
def test_blocks_are_byte_identical_to_streamings_writer(tmp_path, shard_size):
    base = _streaming()
    ids, lengths = _rows(np.random.default_rng(0), 300)
    _write(tmp_path, [model_batch(ids, lengths)], sft=False, shard_size=shard_size)
    with base.MDSWriter(columns={"tokens": "ndarray:int32"}, out=str(tmp_path / "ref"), size_limit=shard_size) as ref:
        for row in _split(ids, lengths):
            ref.write({"tokens": row})
    ours = sorted(p.name for p in (tmp_path / "mds" / "train").iterdir())
    assert ours == sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert len(ours) > (2 if shard_size == 100_000 else 1)
    for name in ours:
        assert (tmp_path / "mds" / "train" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_turns_are_byte_identical_to_streamings_writer(tmp_path):
    base = _streaming()
    batch, ids_rows, label_rows = _sft_rows(np.random.default_rng(1), 200)
    _write(tmp_path, [batch], sft=True, shard_size=20_000)
    with base.MDSWriter(columns={"turns": "json"}, out=str(tmp_path / "ref"), size_limit=20_000) as ref:
        for ids, labels in zip(ids_rows, label_rows):
            turns, _ = sft_turns(np.array(ids), np.array(labels))
            ref.write({"turns": [{"input_ids": c.tolist(), "labels": r.tolist()} for c, r in turns]})
    for path in (tmp_path / "ref").iterdir():
        assert (tmp_path / "mds" / "train" / path.name).read_bytes() == path.read_bytes(), path.name


def test_streaming_dataset_reads_every_block(tmp_path):
    base = _streaming()
    ids, lengths = _rows(np.random.default_rng(2), 500)
    batches = [model_batch(ids[:int(lengths[:200].sum())], lengths[:200]),
               model_batch(ids[int(lengths[:200].sum()):], lengths[200:])]
    _write(tmp_path, batches, sft=False, shard_size=150_000)
    ds = base.StreamingDataset(local=str(tmp_path / "mds"), split="train", shuffle=False, batch_size=1)
    assert len(ds) == 500
    for i, row in enumerate(_split(ids, lengths)):
        sample = ds[i]["tokens"]
        assert sample.dtype == np.int32
        assert np.array_equal(sample, row)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=st.lists(st.integers(1, 70_000), min_size=1, max_size=6), shard_size=st.integers(300, 400_000),
       seed=st.integers(0, 2**32 - 1))
def test_spec_reader_reads_back_every_block(tmp_path_factory, lengths, shard_size, seed):
    root = tmp_path_factory.mktemp("mds")
    lengths = np.array(lengths)
    ids = np.random.default_rng(seed).integers(-2**31, 2**31 - 1, size=int(lengths.sum())).astype(np.int32)
    _, entries = _write(root, [model_batch(ids, lengths)], sft=False, shard_size=shard_size)
    samples = read_split(root / "mds" / "train")
    assert [s["tokens"].tolist() for s in samples] == [r.tolist() for r in _split(ids, lengths)]
    shards = [e for e in entries if e["rows"] is not None]
    assert sum(e["rows"] for e in shards) == len(lengths)
    for e in shards:
        assert e["bytes"] == (root / e["path"]).stat().st_size
        assert e["bytes"] <= shard_size or e["rows"] == 1  # one sample larger than the limit gets its own shard


labels_rows = st.lists(st.tuples(st.integers(0, 999), st.booleans()), min_size=1, max_size=60)


@given(row=labels_rows)
def test_turns_hold_the_row_up_to_its_last_supervised_token(row):
    ids = np.array([t for t, _ in row], np.int32)
    labels = np.array([t if sup else IGNORE_INDEX for t, sup in row], np.int32)
    turns, tail = sft_turns(ids, labels)
    supervised = [i for i, (_, sup) in enumerate(row) if sup]
    if not supervised:
        assert turns == [] and tail == len(row)
        return
    end = supervised[-1] + 1
    assert tail == len(row) - end
    assert np.concatenate([np.concatenate([c, r]) for c, r in turns]).tolist() == ids[:end].tolist()
    rebuilt = np.concatenate([np.concatenate([np.full(len(c), IGNORE_INDEX), r]) for c, r in turns])
    assert rebuilt.tolist() == labels[:end].tolist()
    assert all(len(r) > 0 for _, r in turns) and all(len(c) > 0 for c, _ in turns[1:])


@given(row=labels_rows)
def test_llmfoundry_stitches_the_turns_back_into_the_row(row):
    collator, why = llmfoundry_collator()
    if collator is None:
        pytest.skip(why)
    ids = np.array([t for t, _ in row], np.int32)
    labels = np.array([t if sup else IGNORE_INDEX for t, sup in row], np.int32)
    turns, tail = sft_turns(ids, labels)
    if not turns:
        return
    end = len(row) - tail
    example = [{"input_ids": c.tolist(), "labels": r.tolist()} for c, r in turns]
    got_ids, got_labels = collator.stitch_turns_decoder_only(example, target_prompts="none", target_responses="all")
    assert got_ids == ids[:end].tolist()
    assert got_labels == labels[:end].tolist()


class _PadTokenizer:
    """What the collator uses of a tokenizer: pad (right side), pad and EOS ids."""

    pad_token_id = 0
    eos_token_id = EOS
    padding_side = "right"

    def pad(self, examples, *, padding, max_length, return_tensors):
        import torch

        out = {}
        for key, fill in (("input_ids", self.pad_token_id), ("attention_mask", 0)):
            out[key] = torch.tensor([e[key] + [fill] * (max_length - len(e[key])) for e in examples])
        out["labels"] = torch.tensor([e["labels"] for e in examples])
        return out


def test_llmfoundry_collation_gives_datakits_input_ids_and_labels(tmp_path):
    """Rows cut at cutoff_len carry no EOS, on purpose: llm-foundry appends one to the last
    response, and its own truncation to max_seq_len = cutoff_len removes it again."""
    collator_module, why = llmfoundry_collator()
    if collator_module is None:
        pytest.skip(why)
    base = _streaming()
    cutoff = 48
    batch, ids_rows, label_rows = _sft_rows(np.random.default_rng(3), 120, cutoff=cutoff)
    assert any(len(r) == cutoff and r[-1] != EOS for r in ids_rows)
    writer, _ = _write(tmp_path, [batch], sft=True)
    ds = base.StreamingDataset(local=str(tmp_path / "mds"), split="train", shuffle=False, batch_size=1)
    collate = collator_module.Seq2SeqFinetuningCollator(
        _PadTokenizer(), max_seq_len=cutoff, decoder_only_format=True, target_prompts="none",
        target_responses="all")
    for i, (ids, labels) in enumerate(zip(ids_rows, label_rows)):
        end = max(j for j, lab in enumerate(labels) if lab != IGNORE_INDEX) + 1
        out = collate([ds[i]])
        n = int(out["attention_mask"][0].sum())
        assert out["input_ids"][0, :n].tolist() == ids[:end]
        assert out["labels"][0, :n].tolist() == labels[:end]
        assert (out["labels"][0, n:] == IGNORE_INDEX).all()
    assert writer.stats["unsupervised_tail_tokens"] == sum(
        len(lab) - 1 - max(j for j, x in enumerate(lab) if x != IGNORE_INDEX) for lab in label_rows)


def test_rows_without_supervised_tokens_are_counted_not_written(tmp_path):
    ids = np.arange(10, dtype=np.int32)
    labels = np.full(10, IGNORE_INDEX, np.int32)
    batch = model_batch(np.concatenate([ids, ids]), np.array([10, 10]),
                        labels=np.concatenate([labels, ids]))
    writer, _ = _write(tmp_path, [batch], sft=True)
    assert writer.stats["rows_without_supervised_tokens"] == 1
    (sample,) = read_split(tmp_path / "mds" / "train")
    assert sample == {"turns": [{"input_ids": [], "labels": list(range(10))}]}
    assert json.loads((tmp_path / "mds" / "train" / "index.json").read_text())["shards"][0]["samples"] == 1
