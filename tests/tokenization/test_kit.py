"""kitoken as the encoder of a Hugging Face tokenizer (tokenization/kit.py): the backend's own ids,
builds identical to the backend's, and a difference stops the build."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

import datakit
from datakit.errors import TokenizerError
from datakit.tokenization import load_tokenizer
from datakit.tokenization.kit import ENGINE_ENV, KitEncoder

from .conftest import ADDED, with_added

pytest.importorskip("kitoken")

PIECES = ["the", " the", " model", "s", ".", " ", "  ", "   ", "\n", "\n\n", "\t", "▁", "▁▁", " ▁x", "中", "文",
          "😀", "é", "12", " 345", "a", " b", "<s>", "</s>", *ADDED, " <|im_end|>", "<|im_start|> ", "\u00a0"]
TEXTS = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def _folder(tmp_path, tokenizer_json, *, bos: bool):
    """A copy of the fixture's tokenizer.json with added tokens (and a post-processor adding BOS)."""
    tok = with_added(tokenizer_json, bos=bos)
    out = tmp_path / f"tok_{bos}"
    out.mkdir(exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return out


@pytest.fixture(scope="module", params=[False, True], ids=["no-bos", "bos"])
def llama_style_folder(request, llama_style_tokenizer, tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("kit"), llama_style_tokenizer, bos=request.param)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=12), special=st.booleans())
def test_kitoken_gives_the_backends_ids(llama_style_folder, texts, special):
    tok = load_tokenizer(str(llama_style_folder))
    kit = tok._kit()
    assert kit is not None  # a Llama-style BPE with byte fallback: kitoken is used
    want = [e.ids for e in tok.backend.encode_batch_fast(texts, add_special_tokens=special)]
    assert kit.ids(texts, add_special_tokens=special) == want


def test_the_environment_turns_it_off(llama_style_folder, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "tokenizers")
    assert load_tokenizer(str(llama_style_folder))._kit() is None


def test_byte_level_bpe_gives_the_backends_ids_or_keeps_the_backend(hf_tokenizer):
    tok = load_tokenizer(str(hf_tokenizer))
    kit = KitEncoder.for_backend(tok.backend, n_pre=0, n_post=0)
    texts = ["Hello world", "  two  spaces", "中文 😀", "<|im_start|>user\nhi<|im_end|>\n", ""]
    if kit is not None:
        assert kit.ids(texts, add_special_tokens=False) == \
            [e.ids for e in tok.backend.encode_batch_fast(texts, add_special_tokens=False)]


def _chat_project(tmp_path, folder, write_jsonl, make_recipe, *, output: str):
    rng = np.random.default_rng(0)
    words = ["the", "model", "中文", "😀", "data", "  spaced", "é", "<|im_end|>", "tokens", "\n"]
    sources = []
    for k in range(3):  # three sources: the tokenizing threads end source by source
        rows = [{"messages": [{"role": "user", "content": " ".join(rng.choice(words, 8))},
                              {"role": "assistant", "content": " ".join(rng.choice(words, 12))}]}
                for _ in range(40)]
        sources.append({"path": str(write_jsonl(f"c{k}.jsonl", rows)), "format": "messages"})
    template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}")
    return make_recipe({"tokenizer": str(folder), "chat_template": template, "sources": sources,
                        "transforms": [{"template": "chat"}, {"tokenize": {"cutoff_len": 64}}],
                        "split": {"val_set_size": 10, "seed": 1}, "output": str(tmp_path / output)},
                       name=f"{output}.yaml")


def test_a_build_with_kitoken_is_the_build_with_tokenizers(llama_style_folder, tmp_path, write_jsonl, make_recipe,
                                                           monkeypatch):
    recipe = _chat_project(tmp_path, llama_style_folder, write_jsonl, make_recipe, output="kit")
    datakit.run_build(recipe, silent=True, cache=False)
    monkeypatch.setenv(ENGINE_ENV, "tokenizers")
    recipe = _chat_project(tmp_path, llama_style_folder, write_jsonl, make_recipe, output="plain")
    datakit.run_build(recipe, silent=True, cache=False)
    a, b = datakit.load(tmp_path / "kit"), datakit.load(tmp_path / "plain")
    for split in ("train", "validation"):
        assert a[split]["input_ids"] == b[split]["input_ids"] and a[split]["labels"] == b[split]["labels"]


def test_a_difference_on_the_sampled_rows_stops_the_build(llama_style_folder, tmp_path, write_jsonl, make_recipe,
                                                          monkeypatch):
    encode = KitEncoder._encode

    def wrong(self, texts):
        rows = encode(self, texts)
        return [r[:-1] + [r[-1] + 1] if r else r for r in rows]

    monkeypatch.setattr(KitEncoder, "_encode", wrong)
    assert load_tokenizer(str(llama_style_folder))._kit() is None  # the probe refuses it
    monkeypatch.setattr(KitEncoder, "agrees", lambda self, texts: True)  # past the probe: the sample
    recipe = _chat_project(tmp_path, llama_style_folder, write_jsonl, make_recipe, output="bad")
    with pytest.raises(TokenizerError, match="kitoken and tokenizers give different ids"):
        datakit.run_build(recipe, silent=True, cache=False)
    assert not (tmp_path / "bad").exists()


def test_special_token_strings_read_as_text_keep_the_backend(llama_style_folder):
    """kitoken reads a special-token string as text differently (" <|im_end|>": ▁ then < against ▁<):
    an ordinary copy of the backend is never given to it."""
    tok = load_tokenizer(str(llama_style_folder))
    ordinary = Tokenizer.from_str(tok.backend.to_str())
    ordinary.encode_special_tokens = True
    assert KitEncoder.for_backend(ordinary, n_pre=0, n_post=0) is None
    enc = tok.encode([" <|im_end|> x"], add_special_tokens=False)
    assert enc.ids.tolist() == ordinary.encode(" <|im_end|> x", add_special_tokens=False).ids
