"""The mask rule on every backend and strategy, against each reference library's own offsets.

The rule (tokenization/mask.py): a token is supervised when its text overlaps a supervised span;
a zero-width token takes the label of the next token that spells text; BOS/EOS never.
"""
import pytest

from datakit.tokenization import load_tokenizer

# (text, where the supervised span starts): answers that start after a space (Mistral's
# "[/INST] Hello": the first token ▁Hello straddles the span start), with an emoji, digits, CJK
CASES = [
    ("Q: what?\nA: Hello there", "Hello"),
    ("Q: what? A: Hello there", "Hello"),
    ("Q: emoji\nA: 🙂 yes", "🙂"),
    ("Q: emoji A: 🙂🚀 yes", "🙂"),
    ("Q: digits A: 42 apples", "42"),
    ("问：中文\n答：中文回答", "中文回答"),
    ("Hello there", "Hello"),
    ("  Hello there", "Hello"),
    ("Q: é?\nA:\nnew line first", "\nnew"),
]


def _reference(offsets, special, span):
    """The rule as a loop over the reference library's own (start, end) per token."""
    a, b = span
    out = [e > s and s < b and e > a for s, e in offsets]
    for i in range(len(offsets) - 1, -1, -1):
        s, e = offsets[i]
        if s == e and not special[i]:
            nxt = next((j for j in range(i + 1, len(offsets)) if offsets[j][1] > offsets[j][0]), None)
            out[i] = nxt is not None and out[nxt]
    return out


def _hf_reference(path, text, span):
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(path))
    enc = t.encode(text)
    special = [bool(m) for m in enc.special_tokens_mask]
    offsets = [(0, 0) if sp else o for o, sp in zip(enc.offsets, special)]
    return enc.ids, _reference(offsets, special, span)


def _spm_reference(path, text, span):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    proto = sp.encode(text, return_type="proto")
    raw = text.encode("utf-8")
    char = [len(raw[:k].decode("utf-8", errors="ignore")) for k in range(len(raw) + 1)]
    offsets = [(0, 0)] + [(char[p.begin], char[p.end]) for p in proto.pieces]
    special = [True] + [False] * len(proto.pieces)
    return [sp.bos_id()] + [p.id for p in proto.pieces], _reference(offsets, special, span)


@pytest.mark.parametrize("kind", ["byte_level", "llama_hf", "spm"])
@pytest.mark.parametrize("strategy", ["auto", "offsets"])
def test_marks_follow_the_rule_on_every_backend(kind, strategy, hf_tokenizer, llama_hf_tokenizer, spm_model):
    path = {"byte_level": hf_tokenizer / "tokenizer.json", "llama_hf": llama_hf_tokenizer / "tokenizer.json",
            "spm": spm_model}[kind]
    tok = load_tokenizer(str(path))
    texts = [t for t, _ in CASES]
    spans = [[(t.index(s), len(t))] for t, s in CASES]
    enc, sup, bad = tok.encode_with_spans(texts, spans, strategy=strategy)
    assert bad == []
    for i, text in enumerate(texts):
        ids, want = (_spm_reference if kind == "spm" else _hf_reference)(path, text, spans[i][0])
        s, e = enc.starts[i], enc.starts[i + 1]
        assert enc.ids[s:e].tolist() == ids
        assert sup[s:e].tolist() == want, (text, [tok.id_to_piece(x) for x in ids])


@pytest.mark.parametrize("strategy", ["auto", "offsets"])
def test_the_first_answer_token_straddling_the_span_is_supervised(llama_style_tokenizer, strategy):
    """Mistral's "[/INST] Hello": ▁Hello holds the space before the answer and is the answer's first token."""
    tok = load_tokenizer(str(llama_style_tokenizer))
    text = "[INST] Say hi [/INST] The text is"
    enc, sup, bad = tok.encode_with_spans([text], [[(text.index("The"), len(text))]], strategy=strategy)
    pieces = [tok.id_to_piece(i) for i in enc.ids]
    first = pieces.index("▁The")
    assert sup.tolist() == [False] * first + [True] * (len(pieces) - first) and bad == []


def test_the_dummy_prefix_after_a_control_token_is_supervised(spm_model):
    """SentencePiece's bare ▁ before an answer that starts with a digit, once control tokens are parsed."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    answer = "42 apples"
    assert sp.encode(answer, out_type=str)[0] == "▁"  # the fixture splits the dummy prefix off
    tok = load_tokenizer(str(spm_model))
    text = "Q?</s>" + answer
    enc, sup, bad = tok.encode_with_spans([text], [[(text.index(answer), len(text))]], parse_special=True)
    assert enc.ids.tolist() == [sp.bos_id()] + sp.encode("Q?") + [sp.eos_id()] + sp.encode(answer)
    assert sup.tolist() == [False] * (2 + len(sp.encode("Q?"))) + [True] * len(sp.encode(answer))
    assert bad == []
