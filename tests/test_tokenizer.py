"""Tokenizers: ids equal the reference libraries' own, and offsets point at the right text."""
import pytest

from datakit.errors import TokenizerError
from datakit.tokenizer import load_tokenizer

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
