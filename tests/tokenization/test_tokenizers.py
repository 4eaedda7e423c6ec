"""Tokenizers: ids equal the reference libraries' own, and offsets point at the right text."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.errors import TokenizerError
from datakit.tokenization import load_tokenizer

TEXTS = [
    "Hello world.",
    "Runs  of   spaces,\ttabs\t\tand\nnew\n\nlines   ",
    "中文文本，没有空格。日本語も。",
    "Emoji 🙂🚀 and accents: é ü ß",
    " leading space and trailing ",
    "",
]


def test_sentencepiece_ids_are_sentencepieces_own(spm_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    tok = load_tokenizer(str(spm_model))
    enc = tok.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        assert enc.row(i).tolist() == [sp.bos_id()] + sp.encode(text)
    plain = tok.encode(TEXTS, add_special_tokens=False)
    assert [plain.row(i).tolist() for i in range(len(TEXTS))] == [sp.encode(t) for t in TEXTS]
    assert (tok.bos_id, tok.eos_id) == (1, 2)


def test_hf_folder_ids_equal_autotokenizer(hf_tokenizer):
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    tok = load_tokenizer(str(hf_tokenizer))
    for special in (True, False):
        enc = tok.encode(TEXTS, add_special_tokens=special)
        for i, text in enumerate(TEXTS):
            assert enc.row(i).tolist() == ref(text, add_special_tokens=special)["input_ids"]
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (ref.bos_token_id, ref.eos_token_id, ref.pad_token_id)
    assert tok.chat_template == ref.chat_template
    # the tokenizer.json file alone loads too
    assert load_tokenizer(str(hf_tokenizer / "tokenizer.json")).encode(TEXTS).ids.tolist() == tok.encode(TEXTS).ids.tolist()


@pytest.mark.parametrize("kind", ["hf", "spm"])
def test_offsets_cover_the_text_each_token_came_from(kind, hf_tokenizer, spm_model):
    tok = load_tokenizer(str(hf_tokenizer if kind == "hf" else spm_model))
    enc = tok.encode_with_offsets(TEXTS, add_special_tokens=True)
    starts = enc.starts
    for i, text in enumerate(TEXTS):
        ids = enc.ids[starts[i]:starts[i + 1]]
        offs = enc.offsets[starts[i]:starts[i + 1]]
        assert ids.tolist() == tok.encode([text]).row(0).tolist()
        assert offs[0].tolist() == [0, 0]  # BOS covers no text
        # tokens advance through the text and together cover every non-space character
        covered = set()
        last_start = 0
        for s, e in offs[1:].tolist():
            assert 0 <= s <= e <= len(text) and s >= last_start
            last_start = s
            covered.update(range(s, e))
        assert {i for i, ch in enumerate(text) if not ch.isspace()} <= covered


def test_spm_parses_control_tokens_only_when_asked(spm_model):
    tok = load_tokenizer(str(spm_model))
    enc = tok.encode_with_offsets(["Hi</s>"], add_special_tokens=False, parse_special=True)
    assert enc.ids.tolist()[-1] == tok.eos_id
    assert enc.offsets.tolist()[-1] == [2, 6]
    assert tok.eos_id not in tok.encode(["Hi</s>"], add_special_tokens=False).ids.tolist()


@pytest.mark.parametrize("spec, message", [
    ("missing/tokenizer.model", "tokenizer not found"),
    ("./nowhere", "tokenizer not found"),
])
def test_missing_tokenizer_is_a_clear_error(spec, message):
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(spec)


def test_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        load_tokenizer(str(bad))


def _texts_and_spans(draw_texts):
    spans = []
    for t in draw_texts:
        a = len(t) // 3
        spans.append([(a, len(t))] if t else [])
    return spans


pieces_st = st.lists(st.sampled_from(["a", "b", " ", "  ", "\n", "é", "中", "🙂", "<|im_end|>", "the", "\t", "Ab"]),
                     max_size=15).map("".join)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(pieces_st, min_size=1, max_size=6), special=st.booleans())
def test_fast_span_marks_equal_the_offset_tracking_ones(hf_tokenizer, texts, special):
    """The spelled-bytes path (encode_batch_fast) and the offset-tracking path mark the same tokens."""
    tok = load_tokenizer(str(hf_tokenizer))
    assert tok.surfaces() is not None
    spans = _texts_and_spans(texts)
    fast_enc, fast_sup, fast_bad = tok.encode_with_spans(texts, spans, add_special_tokens=special)
    slow_enc, slow_sup, slow_bad = tok.encode_with_spans(texts, spans, add_special_tokens=special,
                                                          strategy="offsets")
    assert fast_enc.ids.tolist() == slow_enc.ids.tolist()
    assert fast_sup.tolist() == slow_sup.tolist()
    assert fast_bad == slow_bad == []


def test_a_normalizing_tokenizer_takes_the_offset_tracking_path(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    t = Tokenizer(models.BPE(unk_token="[UNK]"))
    t.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(["Hello World hello world ﬁne fine"] * 20,
                          trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "</s>"], show_progress=False))
    t.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert tok.surfaces() is None
    text = "Say: HELLO ﬁne world"
    enc, sup, bad = tok.encode_with_spans([text], [[(5, len(text))]])
    encoding = t.encode(text)
    expected = [s >= 5 and e <= len(text) and e > s for s, e in encoding.offsets]
    assert sup.tolist() == expected and bad == []


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(pieces_st, min_size=1, max_size=6), special=st.booleans())
def test_sentencepiece_fast_marks_equal_the_proto_ones(spm_model, texts, special):
    """Batched ids + spelled bytes mark the same tokens as SentencePiece's per-row offset protos."""
    tok = load_tokenizer(str(spm_model))
    texts = [t.replace("<|im_end|>", "") for t in texts]  # control-token text takes the proto path anyway
    spans = _texts_and_spans(texts)
    fast = tok.encode_with_spans(texts, spans, add_special_tokens=special)
    proto = tok.encode_with_spans(texts, spans, add_special_tokens=special, strategy="offsets")
    assert fast[0].ids.tolist() == proto[0].ids.tolist()
    assert fast[1].tolist() == proto[1].tolist()
    assert fast[2] == proto[2] == []


def test_fast_marks_with_a_post_processor_that_appends_eos(hf_tokenizer, tmp_path):
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import processors

    rust = RustTokenizer.from_file(str(hf_tokenizer / "tokenizer.json"))
    rust.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", rust.token_to_id("<s>")), ("</s>", rust.token_to_id("</s>"))])
    rust.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert tok.added_around(True) == (1, 1)
    texts = ["Hello world 中文 🙂", "", "  spaced\tout  "]
    spans = _texts_and_spans(texts)
    fast = tok.encode_with_spans(texts, spans, strategy="spelled")
    slow = tok.encode_with_spans(texts, spans, strategy="offsets")
    assert tok.surfaces().byte_offsets(fast[0].ids, fast[0].lengths, [t.encode() for t in texts],
                                        n_pre=1, n_post=1) is not None  # the spelled path was taken
    assert fast[0].ids.tolist() == slow[0].ids.tolist() and fast[1].tolist() == slow[1].tolist()
    assert fast[2] == slow[2] == []
