"""Text from the data is text: special-token strings become control tokens only in the template's
markup, on every backend (tokenization/markup.py)."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datakit
from datakit.tokenization import load_tokenizer

DOC = "A document that mentions </s> and <s> and <|im_end|> as text.\n<s>Hello"


def _hf_path(kind, hf_tokenizer, llama_hf_tokenizer):
    return {"byte_level": hf_tokenizer, "llama_hf": llama_hf_tokenizer}[kind]


@pytest.mark.parametrize("kind", ["byte_level", "llama_hf"])
def test_hf_documents_are_ordinary_text(kind, hf_tokenizer, llama_hf_tokenizer):
    """transformers' split_special_tokens=True is the reference for ordinary text; its default parses."""
    from transformers import AutoTokenizer

    path = _hf_path(kind, hf_tokenizer, llama_hf_tokenizer)
    ref = AutoTokenizer.from_pretrained(str(path))
    tok = load_tokenizer(str(path))
    for special in (True, False):
        plain = tok.encode([DOC], add_special_tokens=special).row(0).tolist()
        assert plain == ref(DOC, add_special_tokens=special, split_special_tokens=True)["input_ids"]
        assert tok.eos_id not in plain[:-1]
        parsed = tok.encode([DOC], add_special_tokens=special, parse_special=True).row(0).tolist()
        assert parsed == ref(DOC, add_special_tokens=special)["input_ids"]
        assert tok.eos_id in parsed


def test_sentencepiece_documents_are_ordinary_text(spm_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    tok = load_tokenizer(str(spm_model))
    assert tok.encode([DOC]).row(0).tolist() == [sp.bos_id()] + sp.encode(DOC)
    # parsed: the parts between control strings are encoded alone, as SentencePiece's own parsing would
    parsed = tok.encode([DOC], parse_special=True).row(0).tolist()
    assert parsed.count(sp.eos_id()) == 1 and parsed.count(sp.bos_id()) == 3


MARKUP = ["<|im_start|>user\n", "<|im_end|>\n", "<s>", "</s>", "<|im_start|>assistant\n"]
WORDS = ["hi", " there", "  ", "\n", "中文", "🙂", "the model", " <", "|>", "a b"]


@st.composite
def conversations(draw):
    """A text of markup and data pieces, and the data ranges; data may hold special-token strings."""
    text, data = "", []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            text += draw(st.sampled_from(MARKUP))
        else:
            words = draw(st.lists(st.sampled_from(WORDS + ["<|im_end|>", "</s>", "<s>"]), min_size=1, max_size=5))
            data.append((len(text), len(text) + len("".join(words))))
            text += "".join(words)
    return text, data


def _rust(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path / "tokenizer.json"))


@pytest.fixture(scope="module")
def stripping_tokenizer(hf_tokenizer, tmp_path_factory):
    """The byte-level fixture with <|im_end|> taking the white space on its left and right."""
    data = json.loads((hf_tokenizer / "tokenizer.json").read_text("utf-8"))
    for t in data["added_tokens"]:
        if t["content"] == "<|im_end|>":
            t["lstrip"] = t["rstrip"] = True
    out = tmp_path_factory.mktemp("stripping")
    (out / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv=conversations(), special=st.booleans(), kind=st.sampled_from(["byte_level", "llama_hf", "stripping"]))
def test_pieces_split_at_markup_equal_the_tokenizers_own_split(hf_tokenizer, llama_hf_tokenizer,
                                                               stripping_tokenizer, conv, special, kind):
    """Encoding piece by piece between markup tokens is what the tokenizer does with its added
    tokens: on a text whose data holds no special-token string, the ids are the tokenizer's own."""
    path = stripping_tokenizer if kind == "stripping" else _hf_path(kind, hf_tokenizer, llama_hf_tokenizer)
    tok = load_tokenizer(str(path))
    text, _ = conv
    pieces = tok._ordinary()[1]
    n_pre, n_post = tok.added_around(special)
    ids, _ = pieces.encode(text, [], special=special, n_pre=n_pre, n_post=n_post)
    assert ids == _rust(path).encode(text, add_special_tokens=special).ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conv=conversations(), kind=st.sampled_from(["byte_level", "llama_hf", "spm"]),
       strategy=st.sampled_from(["auto", "offsets"]))
def test_special_strings_in_the_data_are_text(hf_tokenizer, llama_hf_tokenizer, spm_model, conv, kind, strategy):
    """Every control id comes from the markup; the data's special-token strings spell as text."""
    path = spm_model if kind == "spm" else _hf_path(kind, hf_tokenizer, llama_hf_tokenizer)
    tok = load_tokenizer(str(path))
    text, data = conv
    enc, sup, bad = tok.encode_with_spans([text], [data], add_special_tokens=False, parse_special=True,
                                          data=[data], strategy=strategy)
    assert bad == []
    special = tok.special_ids()
    markup_specials = sum(text.count(m) for m in ("<|im_start|>", "<|im_end|>", "<s>", "</s>")
                          if tok.encode([m], add_special_tokens=False, parse_special=True).ids.tolist()
                          and tok.encode([m], add_special_tokens=False, parse_special=True).ids[0] in special)
    in_data = sum(text[a:b].count(m) for a, b in data for m in ("<|im_start|>", "<|im_end|>", "<s>", "</s>")
                  if tok.encode([m], add_special_tokens=False, parse_special=True).ids[0] in special)
    assert sum(int(i) in special for i in enc.ids) == markup_specials - in_data
    # the data parts are supervised in full: their special strings are supervised text, not markup
    if kind != "spm":  # the fixture's SentencePiece model normalizes, so its text is checked by ids only
        pieces = tok.decode([i for i, s in zip(enc.ids, sup) if s])
        assert all(text[a:b].strip() in pieces for a, b in data)


def test_a_pretraining_document_keeps_its_own_eos(make_recipe, llama_hf_tokenizer, tmp_path):
    """A document holding the EOS string still gets its EOS from pack: the string is text."""
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"text": "first part </s> second part"}) + "\n"
                   + json.dumps({"text": "<s>Hello again"}) + "\n", encoding="utf-8")
    recipe = {"tokenizer": str(llama_hf_tokenizer), "sources": [{"path": str(src), "format": "text"}],
              "transforms": [{"tokenize": {}}, {"pack": {"block_size": 4096, "remainder": "keep"}}],
              "split": {"val_set_size": 0, "shuffle": False}, "output": str(tmp_path / "out")}
    tok = load_tokenizer(str(llama_hf_tokenizer))
    bos = tok.added_around(True)[0]  # BOS the tokenizer adds per document (none for this fixture's tokenizer.json)
    for parse in (False, True):
        recipe["transforms"][0] = {"tokenize": {"parse_special_tokens": parse}}
        result = datakit.run_build(make_recipe(recipe), overwrite=True, silent=True)
        ids = [i for row in datakit.load(result.path)["train"]["input_ids"] for i in row]
        if parse:  # the first document's EOS string is an EOS; the second's BOS string a BOS
            assert ids.count(tok.eos_id) == 3 and ids.count(tok.bos_id) == 2 * bos + 1
        else:
            assert ids.count(tok.eos_id) == 2 and ids.count(tok.bos_id) == 2 * bos
            assert ids == [i for t in ("first part </s> second part", "<s>Hello again")
                           for i in tok.encode([t]).row(0).tolist() + [tok.eos_id]]


@pytest.mark.parametrize("parse", [False, True])
def test_a_message_holding_an_end_of_turn_string_does_not_end_its_turn(make_recipe, hf_tokenizer, tmp_path, parse):
    src = tmp_path / "chat.jsonl"
    conv = {"messages": [{"role": "user", "content": "Please repeat <|im_end|> back"},
                         {"role": "assistant", "content": "Here: <|im_end|> done"}]}
    src.write_text(json.dumps(conv) + "\n", encoding="utf-8")
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(src), "format": "messages"}],
              "transforms": [{"template": "chat"}, {"tokenize": {"parse_special_tokens": parse}}],
              "split": {"val_set_size": 0, "shuffle": False}, "output": str(tmp_path / "out")}
    result = datakit.run_build(make_recipe(recipe), overwrite=True, silent=True)
    row = datakit.load(result.path)["train"][0]
    tok = load_tokenizer(str(hf_tokenizer))
    end = tok.encode(["<|im_end|>"], add_special_tokens=False, parse_special=True).ids.tolist()
    assert len(end) == 1
    assert row["input_ids"].count(end[0]) == (4 if parse else 2)  # one per turn, plus the data's when parsed
    supervised = tok.decode([i for i, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
    assert "Here: <|im_end|> done" in supervised


_PIECES = st.sampled_from(["a", "b", "<", "|", ">", "/", "s", "<|im_end|>", "<s>", "</s>", "<|im_start|>"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(_PIECES, max_size=8).map("".join), st.lists(st.integers(0, 60), max_size=6)),
                max_size=6))
def test_rows_with_data_specials_tests_every_match_against_every_range(rows):
    """The batch-at-once search names the rows a match-by-match, range-by-range search names."""
    from datakit.tokenization.markup import rows_with_data_specials, special_pattern

    pattern = special_pattern(["<|im_start|>", "<|im_end|>", "<s>", "</s>"])
    texts = [text for text, _ in rows]
    data = []
    for text, cuts in rows:
        cuts = sorted(min(c, len(text)) for c in cuts)
        data.append([(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)])
    want = [r for r, (text, ranges) in enumerate(zip(texts, data))  # a character in both
            if any(set(range(*m.span())) & set(range(a, b)) for m in pattern.finditer(text) for a, b in ranges)]
    assert rows_with_data_specials(texts, pattern, data) == want
