"""Packed batches train exactly like the same rows unpacked: loss and LoRA gradients agree (fp32, CPU)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="the [train] extra is not installed")
pytest.importorskip("peft")

from datakit.errors import TrainError  # noqa: E402
from datakit.train.collator import Collator, PackedCollator, check_packed_attention  # noqa: E402

PAD = 3


def pack(rows: list[dict], block_size: int | None = None) -> dict:
    """One packed row, made by hand following the build contract: rows concatenated, position_ids
    restarting at 0 per row, seq_lens, and the first label of every row set to -100."""
    ids, labels, positions = [], [], []
    for r in rows:
        ids += r["input_ids"]
        labels += [-100] + r["labels"][1:]
        positions += list(range(len(r["input_ids"])))
    pad = (block_size or len(ids)) - len(ids)
    return {"input_ids": ids + [PAD] * pad, "labels": labels + [-100] * pad, "position_ids": positions + [0] * pad,
            "attention_mask": [1] * len(ids) + [0] * pad, "seq_lens": [len(r["input_ids"]) for r in rows]}


def sft_rows(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(6, 20, (1,), generator=g))
        prompt = int(torch.randint(2, length - 2, (1,), generator=g))
        ids = torch.randint(4, 100, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def documents(n: int, seed: int) -> list[dict]:
    """Pretraining documents: every token is a target."""
    return [{"input_ids": r["input_ids"], "labels": list(r["input_ids"])} for r in sft_rows(n, seed)]


def lora_llama(attn: str, vocab_size: int = 100):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      attn_implementation=attn, use_cache=False)
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                             target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; random B gives every LoRA weight a gradient
            torch.nn.init.normal_(p, std=0.5)
    return model.float()


def loss_and_grads(model, batch: dict):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_close(a, b, what):
    rel = ((a - b).norm() / b.norm()).item()
    assert rel < 1e-5, f"{what}: relative difference {rel:.2e}"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("make_rows", [sft_rows, documents], ids=["sft", "pretraining"])
def test_packed_rows_train_like_unpacked_rows(attn, make_rows):
    model = lora_llama(attn)
    rows = make_rows(7, seed=1)
    # three packs of different lengths (the collator pads the batch), one pack padded inside
    packs = [pack(rows[:3]), pack(rows[3:5], block_size=48), pack(rows[5:])]
    packed_loss, packed_grads = loss_and_grads(model, PackedCollator(pad_id=PAD)(packs))
    loss, grads = loss_and_grads(model, Collator(pad_id=PAD)(rows))
    assert_close(packed_loss, loss, "loss")
    assert set(grads) == set(packed_grads) and len(grads) == 2 * 7 * 2
    for name in grads:
        assert_close(packed_grads[name], grads[name], name)
    # the same packs with an attention mask of ones, as a plain collator passes them: rows attend to each other
    leaky = {k: v for k, v in Collator(pad_id=PAD)(packs).items()}
    leaky["position_ids"] = PackedCollator(pad_id=PAD)(packs)["position_ids"]
    with torch.no_grad():
        assert abs(model(**leaky).loss - loss) / loss > 1e-3


def test_packed_rows_leak_with_a_cache():
    """transformers derives the packed mask only without a cache: the model must run with use_cache=False."""
    model = lora_llama("sdpa")
    rows = sft_rows(4, seed=2)
    batch = PackedCollator(pad_id=PAD)([pack(rows)])
    with torch.no_grad():
        cached, isolated = model(**batch, use_cache=True).logits, model(**batch).logits
    assert (cached - isolated).abs().max() > 1e-2


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=4), min_size=1, max_size=4),
       st.booleans())
def test_flash_lengths_match_transformers_own(lengths, use_seq_lens):
    """cu_seq_lens for the varlen kernel equal what transformers derives from the flattened position_ids."""
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    packs = [pack([{"input_ids": [5] * n, "labels": [5] * n} for n in row]) for row in lengths]
    if not use_seq_lens:
        for p in packs:
            del p["seq_lens"]
    batch = PackedCollator(pad_id=PAD, flash=True)(packs)
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    assert batch["cu_seq_lens_q"].tolist() == cu_q.tolist() == batch["cu_seq_lens_k"].tolist()
    assert batch["max_length_q"] == int(max_q) == batch["max_length_k"]
    assert "attention_mask" not in batch


@pytest.mark.parametrize("attn", ["paged|sdpa", "kernels-community/flash-attn"])
def test_attention_that_would_leak_is_refused(attn):
    with pytest.raises(TrainError, match="does not keep packed rows apart"):
        check_packed_attention(attn)


def test_a_packed_build_trains_like_its_unpacked_build(hf_tokenizer, tmp_path_factory):
    """The `pack` step's real output: all packs of a split in one batch against all its rows unpacked."""
    import datakit

    from .conftest import RECORDS, build

    tmp = tmp_path_factory.mktemp("packed")
    recipe = {"tokenizer": str(hf_tokenizer), "format": "alpaca", "split": {"val_set_size": 0, "seed": 0},
              "transforms": [{"template": "alpaca_short"}, {"tokenize": {"cutoff_len": 64}}]}
    plain = datakit.load(build(tmp, recipe, RECORDS, "plain"))["train"]
    recipe["transforms"] = recipe["transforms"] + [{"pack": {"block_size": 96, "strategy": "bfd"}}]
    packed = datakit.load(build(tmp, recipe, RECORDS, "packed"))["train"]
    assert len(packed) < len(plain) and sum(len(p) for p in packed["seq_lens"]) == len(plain)
    model = lora_llama("sdpa", vocab_size=1000)
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in plain]
    loss, grads = loss_and_grads(model, Collator(pad_id=PAD)(rows))
    packed_loss, packed_grads = loss_and_grads(model, PackedCollator(pad_id=PAD)(list(packed)))
    assert_close(packed_loss, loss, "loss")
    for name in grads:
        assert_close(packed_grads[name], grads[name], name)
