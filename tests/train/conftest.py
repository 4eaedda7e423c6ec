"""Fixtures for the trainer tests: a tiny random Llama made from a config (no hub), and builds."""
from __future__ import annotations

import json

import pytest

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
RECORDS = [{"instruction": f"Repeat the word number {i}.", "input": "", "output": f"word {i} word {i}"}
           for i in range(24)]


def tiny_llama(path, vocab_size, **overrides):
    """A 2-layer Llama with random weights, saved to ``path`` (float32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=1, eos_token_id=2, pad_token_id=3,
                      initializer_range=0.5, **overrides)  # logits that a frozen lm_head lets LoRA move
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    return path


def build(tmp, recipe: dict, records, name: str):
    import yaml

    import datakit

    source = tmp / f"{name}.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    recipe = dict(recipe)
    fmt = recipe.pop("format")
    recipe.update(sources=[{"path": source.name, "format": fmt}], output=name)
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    datakit.run_build(tmp / f"{name}.yaml", silent=True)
    return tmp / name


@pytest.fixture(scope="session")
def built(tmp_path_factory, hf_tokenizer):
    """An alpaca SFT build (20 train rows, 4 validation rows) and a tiny Llama that fits its tokenizer."""
    pytest.importorskip("torch", reason="the [train] extra is not installed")
    tmp = tmp_path_factory.mktemp("train")
    data = build(tmp, {"tokenizer": str(hf_tokenizer), "format": "alpaca",
                       "transforms": [{"template": "alpaca_short"}, {"tokenize": {"cutoff_len": 64}}],
                       "split": {"val_set_size": 4, "seed": 0}}, RECORDS, "built")
    return data, tiny_llama(tmp / "model", 1000)


@pytest.fixture(scope="session")
def chat_built(tmp_path_factory, hf_tokenizer):
    """A chat build rendered with the recipe's own chat template (not the tokenizer's)."""
    tmp = tmp_path_factory.mktemp("chat")
    rows = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i} {i}"}]}
            for i in range(12)]
    return build(tmp, {"tokenizer": str(hf_tokenizer), "format": "messages", "chat_template": CHAT_TEMPLATE,
                       "transforms": [{"template": "chat"}, {"tokenize": {"cutoff_len": 64}}]}, rows, "chat")


@pytest.fixture(scope="session")
def make_llama():
    return tiny_llama


@pytest.fixture(scope="session")
def chat_template():
    return CHAT_TEMPLATE
