"""A Llama-style tokenizer made here: SentencePiece BPE trained with Llama 2's settings (byte
fallback, split digits, whitespace-only pieces, no whitespace clean-up, identity normalization)
and converted by transformers' LlamaTokenizer into a tokenizer.json, the way Llama's was made."""
from __future__ import annotations

import json
import shutil

import pytest

from ..conftest import EXAMPLES, _example_texts


def llama_style_corpus() -> list[str]:
    """The example texts, some with indented code-like runs of spaces, and CJK lines."""
    texts = _example_texts()
    rows = json.loads((EXAMPLES / "data" / "alpaca_sample.json").read_text("utf-8"))
    code = ["def f(x):\n    return x  +  1\n\n    # done", "for i in range(10):\n        print(i)  "]
    cjk = ["中文文本，没有空格。日本語も。", "模型学习数据。训练的时候需要很多文本。", "数据集 12345 个样本"]
    return texts + [r["output"] for r in rows] + code * 20 + cjk * 20


@pytest.fixture(scope="session")
def llama_style_tokenizer(tmp_path_factory):
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    work = tmp_path_factory.mktemp("llama_style")
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in llama_style_corpus()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(work / "tokenizer"), vocab_size=700, model_type="bpe",
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", character_coverage=0.99, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2)
    src = work / "src"
    src.mkdir()
    shutil.copy(work / "tokenizer.model", src / "tokenizer.model")
    LlamaTokenizer.from_pretrained(str(src)).save_pretrained(str(work / "hf"))
    (work / "hf" / "tokenizer.model").unlink(missing_ok=True)
    return work / "hf" / "tokenizer.json"


ADDED = ["<|im_start|>", "<|im_end|>", "<extra>"]  # two special added tokens, one ordinary


def with_added(path, *, bos: bool):
    """The tokenizer.json at ``path`` with ``ADDED`` (and a post-processor adding BOS)."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.add_special_tokens([AddedToken(ADDED[0], special=True, normalized=False),
                            AddedToken(ADDED[1], special=True, normalized=False)])
    tok.add_tokens([AddedToken(ADDED[2], special=False, normalized=False)])
    if bos:
        from tokenizers.processors import TemplateProcessing

        tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok
