"""Tokenizing rows only as far as cutoff_len keeps them (tokenization/prefix.py) changes nothing:
the ids are the first ids of the whole text, and an SFT build is identical with and without it."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datakit
from datakit.tokenization import load_tokenizer
from datakit.tokenization.hf import HFTokenizer
from datakit.tokenization.prefix import PrefixEncoder

from .conftest import llama_style_corpus

# words the fixtures know, and characters they do not (byte fallback), spaces in runs, newlines,
# Metaspace's own ▁, CJK and emoji
PIECES = ["the", " the", " model", "data", " token", "s", ",", ".", " ", "  ", "   ", "\n", "\n\n", "▁", " ▁x",
          "中", "文", "字", "😀", "é", "ß", "\t", "12", " 345", "a", " b", "ab", " a b", "-", "'s"]
TEXTS = st.lists(st.sampled_from(PIECES), min_size=0, max_size=80).map("".join)


def _with_post_processor(folder, tmp_path, kind: str):
    """The fixture's tokenizer.json with a post-processor adding BOS, or BOS and EOS."""
    data = json.loads((folder / "tokenizer.json").read_text("utf-8"))
    single = [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]
    specials = {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
    if kind == "bos+eos":
        single.append({"SpecialToken": {"id": "</s>", "type_id": 0}})
        specials["</s>"] = {"id": "</s>", "ids": [2], "tokens": ["</s>"]}
    data["post_processor"] = {"type": "TemplateProcessing", "single": single, "pair": single + single[1:],
                              "special_tokens": specials}
    out = tmp_path / kind
    out.mkdir(exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return out / "tokenizer.json"


def _check_prefixes(tok, texts, need, special=True):
    n_pre, n_post = tok.added_around(special)
    prefix = tok._prefix_encoder()
    rows, ends = prefix.encode(texts, need, add_special_tokens=special, n_pre=n_pre, n_post=n_post)
    for text, ids, end in zip(texts, rows, ends):
        whole = tok.backend.encode(text, add_special_tokens=special).ids
        body = ids[:len(ids) - n_post]
        assert body == whole[:len(body)], (text, end)
        assert ids[len(ids) - n_post:] == whole[len(whole) - n_post:]
        if end < len(text):
            assert len(ids) - n_pre - n_post >= need
            # a cut is a barrier: the part tokenized alone gives exactly those ids
            assert tok.backend.encode(text[:end], add_special_tokens=special).ids == ids
        else:
            assert ids == whole


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=6), need=st.integers(1, 40),
       post=st.sampled_from(["none", "bos", "bos+eos"]))
def test_prefix_ids_are_the_first_ids_of_the_whole_text(llama_hf_tokenizer, tmp_path, texts, need, post):
    path = llama_hf_tokenizer if post == "none" else _with_post_processor(llama_hf_tokenizer, tmp_path, post)
    tok = load_tokenizer(str(path))
    assert tok._prefix_encoder() is not None
    _check_prefixes(tok, texts, need)
    _check_prefixes(tok, texts, need, special=False)


def _crossing_tokenizer():
    """A Metaspace BPE whose merges do cross a space: (a, ▁b) makes 'a▁b', so 'a b' is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    chars = ["▁", "a", "b", "c", "x"]
    vocab = {c: i for i, c in enumerate(chars)}
    merges = [("▁", "b"), ("a", "▁b"), ("▁", "a"), ("▁a", "▁b"), ("x", "x")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    return HFTokenizer(backend, source="crossing", config={}, files=[])


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.lists(st.sampled_from(["a", "b", "c", "x", " ", " b", "a b", "  "]), max_size=60)
                      .map("".join), min_size=1, max_size=5), need=st.integers(1, 20))
def test_a_merge_across_a_space_is_never_cut(texts, need):
    tok = _crossing_tokenizer()
    prefix = tok._prefix_encoder()
    assert {"a▁", "▁▁"} & prefix.crossing == {"a▁"}  # ("▁a", "▁b") ends in a, ("a", "▁b") too
    _check_prefixes(tok, texts, need)


def test_tokenizers_it_cannot_vouch_for_are_tokenized_whole(hf_tokenizer, llama_hf_tokenizer, tmp_path):
    assert load_tokenizer(str(hf_tokenizer))._prefix_encoder() is None  # byte-level pre-tokenizer
    data = json.loads((llama_hf_tokenizer / "tokenizer.json").read_text("utf-8"))
    for change in ({"dropout": 0.1}, {"ignore_merges": True}):
        bad = dict(data, model=dict(data["model"], **change))
        p = tmp_path / f"{next(iter(change))}.json"
        p.write_text(json.dumps(bad), encoding="utf-8")
        assert PrefixEncoder.for_backend(load_tokenizer(str(p)).backend) is None, change
    spaced = dict(data, added_tokens=data["added_tokens"] + [
        {"id": len(data["model"]["vocab"]), "content": "<a b>", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}])
    p = tmp_path / "spaced.json"
    p.write_text(json.dumps(spaced), encoding="utf-8")
    assert load_tokenizer(str(p))._prefix_encoder() is None


def _sft(make_recipe, tok, records, cutoff, overlong):
    src = make_recipe({"x": 1}, "probe.yaml").parent / "rows.json"
    src.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    recipe = {"tokenizer": str(tok), "sources": [{"path": str(src), "format": "alpaca"}],
              "transforms": [{"template": "alpaca"},
                             {"tokenize": {"cutoff_len": cutoff, "overlong": overlong}}],
              "split": {"val_set_size": 0, "shuffle": False}, "output": "out"}
    result = datakit.run_build(make_recipe(recipe), overwrite=True, silent=True)
    ds = datakit.load(result.path)["train"]
    counts = dict(result.manifest["counts"])
    return [list(x) for x in ds["input_ids"]], [list(x) for x in ds["labels"]], counts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.fixed_dictionaries(
           {"instruction": TEXTS, "input": TEXTS, "output": TEXTS},
           optional={"history": st.lists(st.tuples(TEXTS, TEXTS).map(list), max_size=3)}),  # several spans a row
       min_size=1, max_size=12),
       cutoff=st.integers(8, 120), overlong=st.sampled_from(["truncate", "drop"]))
def test_an_sft_build_is_the_same_with_and_without_cutting(make_recipe, llama_hf_tokenizer, monkeypatch,
                                                          records, cutoff, overlong):
    for r in records:
        r["output"] += " end"  # every row has something to train
    try:
        cut = _sft(make_recipe, llama_hf_tokenizer, records, cutoff, overlong)
    except datakit.DatakitError as e:
        assert "no rows" in str(e)
        cut = None
    with monkeypatch.context() as m:
        m.setattr(HFTokenizer, "_prefix_encoder", lambda self, **kw: None)
        try:
            whole = _sft(make_recipe, llama_hf_tokenizer, records, cutoff, overlong)
        except datakit.DatakitError as e:
            assert "no rows" in str(e)
            whole = None
    assert cut == whole


def test_long_rows_of_a_llama_style_tokenizer_are_cut_and_unchanged(llama_style_tokenizer):
    """A tokenizer trained with Llama 2's settings, on rows of English, code and CJK text."""
    tok = load_tokenizer(str(llama_style_tokenizer))
    corpus = llama_style_corpus()
    texts = [f"{corpus[i]}\n\n{corpus[(i * 7) % len(corpus)]}\n\n{corpus[(i * 13) % len(corpus)]}"
             for i in range(len(corpus))]
    prefix = tok._prefix_encoder()
    assert prefix is not None and "a▁" not in prefix.crossing and "▁▁" in prefix.crossing
    rows_, ends = prefix.encode(texts, 24, add_special_tokens=True, n_pre=0, n_post=0)
    assert sum(e < len(t) for t, e in zip(texts, ends)) > len(texts) // 2  # most rows are cut...
    _check_prefixes(tok, texts, 24)  # ...and every one is exact


@pytest.mark.parametrize("cutoff", [40, 90, 200])
def test_a_chat_build_with_a_plain_text_template_is_the_same_with_and_without_cutting(
        make_recipe, llama_hf_tokenizer, monkeypatch, cutoff):
    """Chat markers that are plain text (no added tokens) let long conversations be cut too."""
    words = ["the model", "data tokens", "中文 字", "emoji 😀 here", "a b  c", "end."]
    convs = [{"messages": [{"role": r, "content": " ".join(words[(i + k) % len(words)] for k in range(j + 3))}
                           for j, r in enumerate(["user", "assistant"] * (i % 4 + 1))]} for i in range(12)]
    src = make_recipe({"x": 1}, "probe.yaml").parent / "chat.jsonl"
    src.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in convs), encoding="utf-8")
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    recipe = {"tokenizer": str(llama_hf_tokenizer), "sources": [{"path": str(src), "format": "messages"}],
              "chat_template": template, "transforms": [{"template": "chat"}, {"tokenize": {"cutoff_len": cutoff}}],
              "split": {"val_set_size": 0, "shuffle": False}, "output": "out"}

    _same_with_and_without_cutting(make_recipe(recipe), monkeypatch)


def _same_with_and_without_cutting(recipe, monkeypatch) -> None:
    """A build cut at cutoff_len has the ids, labels and counts of one that tokenizes whole texts."""
    def build():
        result = datakit.run_build(recipe, overwrite=True, silent=True)
        ds = datakit.load(result.path)["train"]
        return [list(x) for x in ds["input_ids"]], [list(x) for x in ds["labels"]], result.manifest["counts"]

    cut = build()
    with monkeypatch.context() as m:
        m.setattr(HFTokenizer, "_prefix_encoder", lambda self, **kw: None)
        whole = build()
    assert cut == whole
    assert cut[2]["rows_truncated"] > 0


def _with_chat_tokens(folder, tmp_path):
    """The fixture's tokenizer.json with ChatML's markup as added special tokens."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|im_start|>", "<|im_end|>")])
    out = tmp_path / "chat_tok"
    out.mkdir(exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return out


MARKUP = st.lists(st.one_of(TEXTS, st.sampled_from(["<|im_start|>user\n", "<|im_end|>\n", "<|im_start|>",
                                                     "<|im_end|>"])), min_size=0, max_size=12).map("".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(MARKUP, min_size=1, max_size=6), need=st.integers(1, 40))
def test_rows_with_added_tokens_are_cut_before_one_and_unchanged(llama_hf_tokenizer, tmp_path, texts, need):
    """Added tokens split the text before BPE sees it: the start of one is always an exact cut."""
    tok = load_tokenizer(str(_with_chat_tokens(llama_hf_tokenizer, tmp_path) / "tokenizer.json"))
    assert tok._prefix_encoder() is not None
    _check_prefixes(tok, texts, need)
    _check_prefixes(tok, texts, need, special=False)


@pytest.mark.parametrize("cutoff", [40, 200])
def test_a_chatml_build_is_the_same_with_and_without_cutting(make_recipe, llama_hf_tokenizer, tmp_path, monkeypatch,
                                                             cutoff):
    words = ["the model", "data tokens", "中文 字", "emoji 😀 here", "a b  c", "end."]
    convs = [{"messages": [{"role": r, "content": " ".join(words[(i + k) % len(words)] for k in range(j + 3))}
                           for j, r in enumerate(["user", "assistant"] * (i % 4 + 1))]} for i in range(12)]
    src = tmp_path / "chat.jsonl"
    src.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in convs), encoding="utf-8")
    template = ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    recipe = {"tokenizer": str(_with_chat_tokens(llama_hf_tokenizer, tmp_path) / "tokenizer.json"),
              "sources": [{"path": str(src), "format": "messages"}], "chat_template": template,
              "transforms": [{"template": "chat"}, {"tokenize": {"cutoff_len": cutoff}}],
              "split": {"val_set_size": 0, "shuffle": False}, "output": str(tmp_path / "out")}

    _same_with_and_without_cutting(make_recipe(recipe), monkeypatch)
