"""Stock chat templates, as their models ship them, against transformers' assistant mask.

tests/assets/chat_templates/NAME.jinja are byte-identical copies of the templates in the models'
own repositories (see tests/assets/chat_templates/README.md). NAME.generation.jinja is the same
template with ``{% generation %}`` markers around what the model must learn (the turn's text and
its end-of-turn token, as TRL's training templates place them). The reference is
``apply_chat_template(..., return_assistant_tokens_mask=True)`` on the marked copy, after checking
that it renders exactly the stock text. datakit gets the stock template, with no markers.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from datakit.errors import TemplateError
from datakit.recipe import TokenizeOptions
from datakit.tokenization import load_tokenizer
from datakit.transforms.template import ChatStep
from datakit.transforms.tokenize_sft import TokenizeSFT

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "chat_templates"
IGNORE = -100

# family: (template, bos, eos, added tokens (special), added tokens (not special), tokenizer kind)
FAMILIES = {
    "llama3_1": ("<|begin_of_text|>", "<|eot_id|>", ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                     "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"], [], "byte"),
    "qwen2_5": (None, "<|im_end|>", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], ["<tool_call>", "</tool_call>"],
                "byte"),
    "qwen3": (None, "<|im_end|>", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
              ["<tool_call>", "</tool_call>", "<think>", "</think>"], "byte"),
    "deepseek_r1_distill": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                            ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"],
                            ["<think>", "</think>"], "byte"),
    "gemma": ("<bos>", "<eos>", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], [], "metaspace"),
    "gemma3": ("<bos>", "<eos>", ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], [], "metaspace"),
    "phi3": ("<s>", "<|endoftext|>", ["<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
             [], "metaspace"),
    "phi3_5": ("<s>", "<|endoftext|>", ["<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>",
                                        "<|end|>"], [], "metaspace"),
    "mistral_v3": ("<s>", "</s>", ["<s>", "</s>", "[INST]", "[/INST]"], [], "metaspace"),
    "mistral_v7_tekken": ("<s>", "</s>", ["<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"],
                          [], "byte"),
    "smollm2": ("<|im_start|>", "<|im_end|>", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], [], "byte"),
}
NO_SYSTEM = {"gemma"}  # Gemma 2 raises on a system message

SYSTEM = {"role": "system", "content": "You answer briefly. 你是一个乐于助人的助手。"}
CONVERSATIONS = [
    [SYSTEM, {"role": "user", "content": "  What is 2+2?  "}, {"role": "assistant", "content": "4, of course.  "},
     {"role": "user", "content": "日本の首都は？"}, {"role": "assistant", "content": "\n東京です。🙂\n"}],
    [{"role": "user", "content": "Give me a number."}, {"role": "assistant", "content": "42 is the answer"}],
    [{"role": "user", "content": "Smile!"}, {"role": "assistant", "content": "😀 done"},
     {"role": "user", "content": "中文？"}, {"role": "assistant", "content": "你好，世界"}],
    [SYSTEM, {"role": "user", "content": "Two lines?"}, {"role": "assistant", "content": " first\nsecond "}],
]
REASONING = [  # Qwen3 and DeepSeek-R1: reasoning in the content, and (Qwen3) in reasoning_content
    [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "<think>\nBecause.\n</think>\n\nIt is."},
     {"role": "user", "content": "再说一遍"}, {"role": "assistant", "content": "<think>\n想一想 🤔\n</think>\n\n好的。"}],
    [SYSTEM, {"role": "user", "content": "Plan?"}, {"role": "assistant", "content": "First, rest.",
                                                     "reasoning_content": "The user is tired."}],
]


def _train_bpe(kind: str, texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "byte":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece-like: ▁ for spaces, a dummy prefix, byte fallback (Llama 2, Mistral v3, Gemma)
        tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        alphabet = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>"] + alphabet * (kind != "byte"),
                                  initial_alphabet=alphabet if kind == "byte" else [], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


@pytest.fixture(scope="session")
def family_tokenizer(tmp_path_factory):
    """A small BPE per family, with the family's markup as added tokens, saved as an HF folder."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import _example_texts

    texts = _example_texts() + [m["content"] for c in CONVERSATIONS + REASONING for m in c]
    base = {kind: _train_bpe(kind, texts).to_str() for kind in ("byte", "metaspace")}
    made = {}

    def make(family: str) -> Path:
        if family not in made:
            bos, eos, special, plain, kind = FAMILIES[family]
            tok = Tokenizer.from_str(base[kind])
            tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
            tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
            out = tmp_path_factory.mktemp(family)
            PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos).save_pretrained(str(out))
            made[family] = out
        return made[family]
    return make


def conversations(family: str) -> list[list[dict]]:
    convs = CONVERSATIONS + (REASONING if family in ("qwen3", "deepseek_r1_distill") else [])
    if family in NO_SYSTEM:
        convs = [[m for m in c if m["role"] != "system"] for c in convs]
    return convs


def datakit_rows(folder: Path, template: str, convs: list[list[dict]], **options):
    tok = load_tokenizer(str(folder))
    step = ChatStep(template, tokenizer=tok, origin="test")
    batch = pa.RecordBatch.from_arrays(
        [pa.array(convs), pa.array([f"c.jsonl:{i + 1}" for i in range(len(convs))]),
         pa.array([0] * len(convs), pa.int32()), pa.array(range(len(convs)), pa.int64())],
        names=["messages", "_where", "_source", "_group"])
    tokenize = TokenizeSFT(TokenizeOptions(**options), tokenizer=tok, chat=True)
    out = tokenize(step(batch)[0])[0]
    return out.column("input_ids").to_pylist(), out.column("labels").to_pylist(), tokenize.stats


def reference_rows(folder: Path, family: str, convs: list[list[dict]]):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(folder))
    stock = (ASSETS / f"{family}.jinja").read_text("utf-8")
    marked = (ASSETS / f"{family}.generation.jinja").read_text("utf-8")
    ids, labels = [], []
    for conv in convs:
        assert hf.apply_chat_template(conv, chat_template=marked, tokenize=False) == \
            hf.apply_chat_template(conv, chat_template=stock, tokenize=False)
        out = hf.apply_chat_template(conv, chat_template=marked, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        ids.append(list(out["input_ids"]))
        labels.append([i if m else IGNORE for i, m in zip(out["input_ids"], out["assistant_masks"])])
    return ids, labels


@pytest.fixture
def fixed_date(monkeypatch):
    """transformers' strftime_now prints today; datakit prints 1970-01-01 (a build never depends
    on the day it runs). The reference gets the same day."""
    import datetime

    from transformers.utils import chat_template_utils

    class Day(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(1970, 1, 1)
    monkeypatch.setattr(chat_template_utils, "datetime", Day)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_stock_template_matches_transformers_assistant_mask(family_tokenizer, family, fixed_date):
    folder = family_tokenizer(family)
    convs = conversations(family)
    ids, labels, _ = datakit_rows(folder, (ASSETS / f"{family}.jinja").read_text("utf-8"), convs)
    ref_ids, ref_labels = reference_rows(folder, family, convs)
    for k in range(len(convs)):
        assert ids[k] == ref_ids[k], f"{family} conversation {k}: ids"
        assert labels[k] == ref_labels[k], f"{family} conversation {k}: labels"


@pytest.mark.parametrize("family, mismatched", [
    ("qwen2_5", 0), ("llama3_1", 0), ("smollm2", 0), ("phi3_5", 0), ("gemma3", 0),
    # DeepSeek-R1 prompts with "<｜Assistant｜><think>\n", which its rendered turns lack: every row.
    ("deepseek_r1_distill", 6),
    # Mistral v3 puts the system prompt into the last user message only when it is the last message:
    # the two rows with a system prompt train without it, and inference feeds it.
    ("mistral_v3", 2),
])
def test_rows_whose_prompt_differs_from_inference_are_counted(family_tokenizer, family, mismatched):
    convs = conversations(family)
    _, _, stats = datakit_rows(family_tokenizer(family), (ASSETS / f"{family}.jinja").read_text("utf-8"), convs)
    assert stats["rows_inference_mismatch"] == mismatched
    if mismatched:
        with pytest.raises(TemplateError, match=r"c.jsonl:\d+: the ids before the last assistant turn differ"):
            datakit_rows(family_tokenizer(family), (ASSETS / f"{family}.jinja").read_text("utf-8"), convs,
                         inference_mismatch="error")


def test_a_build_reads_reasoning_content_from_the_data(family_tokenizer, make_recipe, write_jsonl, fixed_date):
    """End to end: `reasoning_content` (or `reasoning`/`thinking`) in a JSONL file reaches the template."""
    import datakit

    convs = REASONING + [[{"role": "user", "content": "Hm?"},
                          {"role": "assistant", "content": "Yes.", "thinking": "Short."}]]
    data = write_jsonl("r.jsonl", [{"messages": c} for c in convs])
    folder = family_tokenizer("qwen3")
    recipe = make_recipe({"tokenizer": str(folder), "chat_template": str(ASSETS / "qwen3.jinja"),
                          "sources": [{"path": str(data), "format": "messages"}],
                          "transforms": [{"template": "chat"}, {"tokenize": {}}],
                          "split": {"val_set_size": 0, "shuffle": False}, "output": str(data.parent / "out")})
    built = datakit.build(recipe, overwrite=True)["train"]
    ref_ids, ref_labels = reference_rows(folder, "qwen3", convs)
    assert sorted(zip(built["input_ids"], built["labels"])) == sorted(zip(ref_ids, ref_labels))
    from transformers import AutoTokenizer

    text = AutoTokenizer.from_pretrained(str(folder)).decode(ref_ids[-1])
    assert "<think>\nShort.\n</think>\n\nYes." in text  # the last turn renders its reasoning
