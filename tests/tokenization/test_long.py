"""Long documents are tokenized in pieces (tokenization/long.py) with exactly the whole text's ids."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datakit.tokenization.long as long_mod
from datakit.tokenization import load_tokenizer

from .conftest import llama_style_corpus

PIECES = ["the", " the", " model", "data", " token", "s", ",", ".", " ", "  ", "\n", "\n\n", "▁", "中", "文",
          "😀", "é", "\t", "12", " 345", "a", " b", "ab", " a b", "-", "'s", "Ab", " Cd", "'ll"]
TEXTS = st.lists(st.sampled_from(PIECES), min_size=0, max_size=120).map("".join)


@pytest.fixture(scope="module")
def llama3_style(hf_tokenizer, tmp_path_factory):
    """The byte-level fixture behind Llama 3's split pattern and a byte-level step without regex."""
    data = json.loads((hf_tokenizer / "tokenizer.json").read_text("utf-8"))
    pattern = sorted(long_mod._SPLIT_PATTERNS, key=len)[-1]
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    out = tmp_path_factory.mktemp("llama3_style") / "tokenizer.json"
    out.write_text(json.dumps(data), encoding="utf-8")
    return out


def _paths(kind, hf_tokenizer, llama_hf_tokenizer, llama_style_tokenizer, llama3_style):
    return {"metaspace": llama_hf_tokenizer, "llama_style": llama_style_tokenizer, "byte_level": hf_tokenizer,
            "llama3_style": llama3_style, "sentencepiece": llama_style_tokenizer.parent.parent / "tokenizer.model"}[kind]


def _whole(tok, texts, special):
    if tok.kind == "sentencepiece":
        return [([tok.bos_id] if special else []) + tok.sp.encode(t) for t in texts]
    return [e.ids for e in tok.backend.encode_batch_fast(texts, add_special_tokens=special)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=4), special=st.booleans(),
       kind=st.sampled_from(["metaspace", "llama_style", "byte_level", "llama3_style", "sentencepiece"]))
def test_pieces_give_the_whole_texts_ids(hf_tokenizer, llama_hf_tokenizer, llama_style_tokenizer, llama3_style,
                                         monkeypatch, texts, special, kind):
    monkeypatch.setattr(long_mod, "PIECE", 7)  # cut every few characters
    monkeypatch.setattr(long_mod, "GROUP", 3)
    import datakit.tokenization.hf as hf
    import datakit.tokenization.spm as spm

    monkeypatch.setattr(hf, "LONG", 10)
    monkeypatch.setattr(spm, "LONG", 10)
    tok = load_tokenizer(str(_paths(kind, hf_tokenizer, llama_hf_tokenizer, llama_style_tokenizer, llama3_style)))
    assert tok._long_encoder() is not None  # each of these can be cut
    enc = tok.encode(texts, add_special_tokens=special)
    assert [enc.row(i).tolist() for i in range(len(texts))] == _whole(tok, texts, special)


@pytest.mark.parametrize("kind", ["llama_style", "sentencepiece"])
def test_a_document_of_megabytes_in_pieces(llama_style_tokenizer, kind):
    corpus = llama_style_corpus()
    text = "\n\n".join(corpus[i % len(corpus)] for i in range(30000))[:2_000_000]
    path = llama_style_tokenizer if kind == "llama_style" else llama_style_tokenizer.parent.parent / "tokenizer.model"
    tok = load_tokenizer(str(path))
    assert len(text) > 1_500_000 and tok._long_encoder() is not None and len(tok._long_encoder().cuts(text)) > 50
    enc = tok.encode([text, "short"])
    assert np.array_equal(enc.ids, np.concatenate([np.asarray(r) for r in _whole(tok, [text, "short"], True)]))


def test_a_text_holding_an_added_token_string_stays_whole(llama_hf_tokenizer, monkeypatch):
    import datakit.tokenization.hf as hf

    monkeypatch.setattr(hf, "LONG", 10)
    tok = load_tokenizer(str(llama_hf_tokenizer))
    assert tok._long_encoder().cuts("some text </s> and more text after it") is None
